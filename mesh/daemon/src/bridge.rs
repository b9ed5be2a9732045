//! `nsh mcp run-once`: the thin stdio bridge an MCP client runs. It finds the daemon for its
//! server (starting it when there is none, under a lock so two racing bridges end with one
//! daemon), then copies bytes both ways. Plain threads and blocking I/O: a bridge is one per
//! MCP client, so it should cost a few hundred KiB, not a runtime.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::identity::DaemonFiles;
use crate::wire::{GOODBYE, Hello, PROTOCOL, Welcome};

/// How long a new daemon has to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// A daemon's log past this size is set aside when the next daemon for its server starts.
const LOG_LIMIT: u64 = 4 * 1024 * 1024;
/// A bridge that reached a daemon as it stopped tries again (a new daemon, then).
const ATTEMPTS: u32 = 5;

/// Why the bridge could not connect, or lost its daemon.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(
        "{path} is not a socket of yours with mode 0600 (owner {owner}, mode {mode:o}); remove it"
    )]
    NotYours {
        path: PathBuf,
        owner: u32,
        mode: u32,
    },
    #[error("cannot start the daemon ({command}): {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error(
        "the daemon did not open {socket} within {START_TIMEOUT:?}; its log {log} ends:\n{tail}"
    )]
    NoDaemon {
        socket: PathBuf,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "the daemon speaks bridge protocol {theirs}, this nsh {PROTOCOL}: stop it with `nsh mcp daemon stop {name}`"
    )]
    Protocol { theirs: u32, name: String },
    #[error("the daemon closed the connection (stopped, or crashed: see {log})")]
    Lost { log: PathBuf },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BridgeError {
    let what = what.into();
    move |source| BridgeError::Io { what, source }
}

/// Connects stdin and stdout to the daemon, starting it with `host` if it is not running.
/// Returns when the MCP client closes stdin and the daemon has let go of this client.
pub fn run(files: &DaemonFiles, host: &mut Command) -> Result<(), BridgeError> {
    let mut attempt = 0;
    let pass = stdio_passable();
    let (stream, _welcome) = loop {
        attempt += 1;
        let stream = connect_or_start(files, host)?;
        match handshake(stream, pass)? {
            Some(connected) => break connected,
            None if attempt < ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(50 * u64::from(attempt)));
            }
            None => {
                return Err(BridgeError::Lost {
                    log: files.log.clone(),
                });
            }
        }
    };
    if pass {
        hand_over(stream, files)
    } else {
        pump(stream, files)
    }
}

/// Pipes and sockets (what MCP clients give a server) can be handed to the daemon; a terminal
/// or a file is relayed instead (the daemon would have to make it non-blocking, which would
/// leak into the shell that owns the terminal).
fn stdio_passable() -> bool {
    use std::os::fd::AsFd as _;
    let passable = |fd: std::os::fd::BorrowedFd<'_>| {
        rustix::fs::fstat(fd).is_ok_and(|stat| {
            matches!(
                rustix::fs::FileType::from_raw_mode(stat.st_mode),
                rustix::fs::FileType::Fifo | rustix::fs::FileType::Socket
            )
        })
    };
    passable(std::io::stdin().as_fd()) && passable(std::io::stdout().as_fd())
}

/// Sends stdin and stdout to the daemon, then waits until it is done with them.
fn hand_over(mut stream: UnixStream, files: &DaemonFiles) -> Result<(), BridgeError> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::os::fd::AsFd as _;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let fds = [stdin.as_fd(), stdout.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        &stream,
        &[std::io::IoSlice::new(b"F")],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(|err| BridgeError::Io {
        what: "handing stdio to the daemon".into(),
        source: err.into(),
    })?;
    let lost = BridgeError::Lost {
        log: files.log.clone(),
    };
    // Nothing is left to do but wait for the goodbye, and a shell waits in a tenth of this
    // process's memory (one bridge per MCP client adds up). Same pid, same exit statuses; if
    // there is no /bin/sh, this process waits instead.
    if let Ok(socket) = stream.try_clone() {
        let err = Command::new("/bin/sh")
            .arg0("nsh-mcp-bridge")
            .args(["-c", WAIT_FOR_GOODBYE, "nsh-mcp-bridge"])
            // Still says what it bridges, in `ps` (and to the tests that look for it there).
            .args(std::env::args_os().skip(1))
            .env("NSH_BRIDGE_LOST", format!("error: {lost}"))
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(socket)))
            .stdout(Stdio::null())
            .exec();
        tracing::debug!(%err, "waiting in this process");
    }
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(1) if byte[0] == GOODBYE => Ok(()),
        _ => Err(lost),
    }
}

/// Reads the socket (its stdin) to the end: the goodbye byte means the client is done (exit 0);
/// an end without it means the daemon died. `read` keeps a last line without a newline.
const WAIT_FOR_GOODBYE: &str =
    r#"IFS= read -r said; [ "$said" = . ] && exit 0; printf '%s\n' "$NSH_BRIDGE_LOST" >&2; exit 1"#;

/// Connects, as [`run`] does, and says hello as `hello`; for `list` and `stop`. `None` when no
/// daemon answers.
pub fn ask(files: &DaemonFiles, hello: &Hello) -> Option<crate::wire::Status> {
    let mut stream = connect(&files.socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    send_line(&mut stream, hello).ok()?;
    let line = read_line(&mut stream).ok()??;
    serde_json::from_slice(&line).ok()
}

fn connect(socket: &Path) -> Result<UnixStream, BridgeError> {
    let meta = std::fs::symlink_metadata(socket).map_err(io(format!("{}", socket.display())))?;
    let me = rustix::process::getuid().as_raw();
    let mode = meta.permissions().mode() & 0o777;
    if meta.uid() != me || mode & 0o077 != 0 {
        return Err(BridgeError::NotYours {
            path: socket.to_owned(),
            owner: meta.uid(),
            mode,
        });
    }
    UnixStream::connect(socket).map_err(io(format!("connecting to {}", socket.display())))
}

fn connect_or_start(files: &DaemonFiles, host: &mut Command) -> Result<UnixStream, BridgeError> {
    match connect(&files.socket) {
        Ok(stream) => return Ok(stream),
        Err(err @ BridgeError::NotYours { .. }) => return Err(err),
        Err(_) => {}
    }
    // One starter at a time; whoever waited here finds the daemon the first one started.
    let start_lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&files.start_lock)
        .map_err(io(format!("opening {}", files.start_lock.display())))?;
    start_lock
        .lock()
        .map_err(io(format!("locking {}", files.start_lock.display())))?;
    if let Ok(stream) = connect(&files.socket) {
        return Ok(stream);
    }
    // One previous log is kept: a server that restarts often would otherwise grow it forever.
    if std::fs::metadata(&files.log).is_ok_and(|m| m.len() > LOG_LIMIT) {
        let _ = std::fs::rename(&files.log, files.log.with_extension("log.old"));
    }
    let log = File::options()
        .create(true)
        .append(true)
        .open(&files.log)
        .map_err(io(format!("opening {}", files.log.display())))?;
    let mut daemon = host
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|source| BridgeError::Spawn {
            command: format!("{:?}", host.get_program()),
            source,
        })?;
    let deadline = Instant::now() + START_TIMEOUT;
    let mut exited: Option<Instant> = None;
    while Instant::now() < deadline {
        if let Ok(stream) = connect(&files.socket) {
            // The daemon outlives this bridge; its exit is reaped by init.
            return Ok(stream);
        }
        match exited {
            // It may have lost a race to a daemon that is opening its socket: wait a little.
            None if matches!(daemon.try_wait(), Ok(Some(_))) => exited = Some(Instant::now()),
            Some(at) if at.elapsed() > Duration::from_secs(1) => break,
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(BridgeError::NoDaemon {
        socket: files.socket.clone(),
        log: files.log.clone(),
        tail: tail(&files.log),
    })
}

/// `None`: the daemon closed before welcoming us (it was stopping); try again.
fn handshake(
    mut stream: UnixStream,
    fds: bool,
) -> Result<Option<(UnixStream, Welcome)>, BridgeError> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io("configuring the socket"))?;
    if send_line(
        &mut stream,
        &Hello::Bridge {
            protocol: PROTOCOL,
            fds,
        },
    )
    .is_err()
    {
        return Ok(None);
    }
    let Ok(Some(line)) = read_line(&mut stream) else {
        return Ok(None);
    };
    let welcome: Welcome = match serde_json::from_slice(&line) {
        Ok(welcome) => welcome,
        Err(_) => return Ok(None),
    };
    if welcome.protocol != PROTOCOL {
        return Err(BridgeError::Protocol {
            theirs: welcome.protocol,
            name: welcome.name,
        });
    }
    stream
        .set_read_timeout(None)
        .map_err(io("configuring the socket"))?;
    Ok(Some((stream, welcome)))
}

fn send_line<T: serde::Serialize>(stream: &mut UnixStream, value: &T) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(value)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)
}

/// One line, read a byte at a time so nothing after it is taken from the stream.
fn read_line(stream: &mut UnixStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte)? {
            0 => return Ok(None),
            _ if byte[0] == b'\n' => return Ok(Some(line)),
            _ if line.len() > 64 * 1024 => return Ok(None),
            _ => line.push(byte[0]),
        }
    }
}

fn pump(stream: UnixStream, files: &DaemonFiles) -> Result<(), BridgeError> {
    let mut to_daemon = stream.try_clone().map_err(io("cloning the socket"))?;
    let (stdin_done_tx, stdin_done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = relay(&mut std::io::stdin().lock(), &mut to_daemon);
        // The client is done: the daemon lets go of us, then closes its side.
        let _ = to_daemon.shutdown(std::net::Shutdown::Write);
        let _ = stdin_done_tx.send(());
    });
    let mut from_daemon = stream;
    let copied = relay(&mut from_daemon, &mut std::io::stdout().lock());
    match (copied, stdin_done.recv_timeout(Duration::from_millis(200))) {
        // The client closed stdin and the daemon closed after it: the normal end.
        (Ok(_), Ok(())) => Ok(()),
        _ => Err(BridgeError::Lost {
            log: files.log.clone(),
        }),
    }
}

/// Copies until end of input, passing on each read as it comes. Not `std::io::copy`: between a
/// pipe and a socket it uses `splice`, which holds a partial message back until more arrives.
fn relay(from: &mut impl std::io::Read, to: &mut impl std::io::Write) -> std::io::Result<u64> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        to.write_all(&buffer[..n])?;
        to.flush()?;
        total += n as u64;
    }
}

/// The last lines of a log, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shell that waits in a bridge's place, given what a daemon sends.
    fn wait_with(sent: &[u8]) -> std::process::Output {
        let (mut daemon, bridge) = UnixStream::pair().unwrap();
        daemon.write_all(sent).unwrap();
        drop(daemon);
        Command::new("/bin/sh")
            .args(["-c", WAIT_FOR_GOODBYE, "nsh-mcp-bridge"])
            .env("NSH_BRIDGE_LOST", "error: lost")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(bridge)))
            .output()
            .unwrap()
    }

    #[test]
    fn the_waiting_shell_exits_0_on_goodbye_and_1_with_the_message_otherwise() {
        assert!(wait_with(&[GOODBYE]).status.success());
        for ended in [&b""[..], b"x"] {
            let out = wait_with(ended);
            assert_eq!(out.status.code(), Some(1));
            assert_eq!(String::from_utf8_lossy(&out.stderr), "error: lost\n");
        }
    }
}
