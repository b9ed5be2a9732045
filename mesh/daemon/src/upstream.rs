//! The one server process: started, watched, restarted with backoff, and never left behind.
//!
//! It runs in its own process group, so stopping the daemon stops everything the server
//! started. When the daemon is killed outright, the kernel kills the server too: the
//! `nsh mcp daemon exec` helper sets a parent-death signal on itself and then becomes the
//! server (the signal survives `exec`), and the server's own children see their input close.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use backon::BackoffBuilder as _;
use rustix::process::{Pid, Signal};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::identity::ServerSpec;

/// A server that ran this long without exiting restarts from the shortest backoff again.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// How long a stopping server gets after its input closes, then after SIGTERM.
const GRACE: Duration = Duration::from_secs(2);
/// A line longer than this from the server is not MCP; the server is restarted.
pub const MAX_LINE: usize = 64 * 1024 * 1024;

/// How to start the server.
#[derive(Debug, Clone)]
pub struct Launch {
    pub spec: ServerSpec,
    /// The `nsh` binary, to start the server through `nsh mcp daemon exec` (the parent-death
    /// signal); `None` starts it directly (tests of the library alone).
    pub helper: Option<PathBuf>,
}

/// What the server did.
#[derive(Debug)]
pub enum Event {
    Started { pid: u32 },
    Message(Value),
    Exited { why: String },
}

/// Runs the server until `stop` fires, restarting it when it exits. Messages for it arrive on
/// `input`; what it says and does goes to `events`.
pub async fn supervise(
    launch: Launch,
    mut input: mpsc::UnboundedReceiver<Vec<u8>>,
    events: mpsc::UnboundedSender<Event>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = restart_backoff();
    loop {
        let started = Instant::now();
        let outcome = match spawn(&launch) {
            Ok(child) => run(child, &mut input, &events, &mut stop).await,
            Err(err) => Outcome::Exited(format!("cannot start `{}`: {err}", launch.spec.command)),
        };
        match outcome {
            Outcome::Stopped => return,
            Outcome::Exited(why) => {
                tracing::warn!(%why, "the MCP server exited");
                if events.send(Event::Exited { why }).is_err() {
                    return;
                }
            }
        }
        if started.elapsed() > HEALTHY_AFTER {
            backoff = restart_backoff();
        }
        let wait = backoff.next().unwrap_or(Duration::from_secs(30));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stopped(&mut stop) => return,
        }
        // Whatever was sent to the dead server is void (its senders got errors already).
        while input.try_recv().is_ok() {}
    }
}

/// Resolves once the daemon says stop (or is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// How long to wait before each restart of a server that keeps exiting: 200 ms doubling to
/// 30 s, with jitter. The gateway's upstream supervisors use it too.
pub fn restart_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

enum Outcome {
    Stopped,
    Exited(String),
}

fn spawn(launch: &Launch) -> std::io::Result<Child> {
    let spec = &launch.spec;
    // Through the helper, a missing command would only show as the helper's exit status.
    if launch.helper.is_some() && !findable(&spec.command, &spec.cwd) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such program (nor on PATH)",
        ));
    }
    let mut command = match &launch.helper {
        Some(nsh) => {
            let mut command = Command::new(nsh);
            command
                .args(["mcp", "daemon", "exec", "--parent"])
                .arg(std::process::id().to_string())
                .arg("--")
                .arg(&spec.command);
            command
        }
        None => Command::new(&spec.command),
    };
    command
        .args(&spec.args)
        .envs(&spec.env)
        .current_dir(&spec.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    command.spawn()
}

/// Whether `command` names an executable file, as `exec` would find it: a path (relative to
/// the server's folder), or a name on `PATH`.
fn findable(command: &str, cwd: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |path: &std::path::Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        return executable(&cwd.join(command));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(command))))
}

async fn run(
    mut child: Child,
    input: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    events: &mpsc::UnboundedSender<Event>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Outcome {
    let pid = child.id().unwrap_or_default();
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Outcome::Exited("no pipes to the server".into());
    };
    tracing::info!(pid, "MCP server started");
    let _ = events.send(Event::Started { pid });
    let mut lines = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::with_capacity(4096);
    let outcome = loop {
        tokio::select! {
            read = lines.read_until(b'\n', &mut line) => match read {
                Ok(0) => break Outcome::Exited(exit_reason(&mut child).await),
                Ok(_) if line.len() > MAX_LINE => {
                    break Outcome::Exited(format!("it wrote a line over {MAX_LINE} bytes"));
                }
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        match serde_json::from_slice::<Value>(&line) {
                            Ok(message) => { let _ = events.send(Event::Message(message)); }
                            // Servers that log to stdout break MCP; skip the line, say so once per line.
                            Err(err) => tracing::warn!(%err, line = %String::from_utf8_lossy(&line[..line.len().min(200)]), "the MCP server wrote a line that is not JSON-RPC"),
                        }
                        line.clear();
                    }
                }
                Err(err) => break Outcome::Exited(format!("reading its output: {err}")),
            },
            message = input.recv() => match message {
                Some(bytes) => {
                    if let Err(err) = stdin.write_all(&bytes).await {
                        break Outcome::Exited(format!("writing to it: {err}"));
                    }
                }
                None => break Outcome::Stopped,
            },
            () = stopped(stop) => break Outcome::Stopped,
        }
    };
    drop(stdin);
    if matches!(outcome, Outcome::Stopped) {
        stop_group(&mut child, pid).await;
    } else {
        // The server is gone or broken; whatever it left in its group goes with it.
        kill_group(pid, Signal::KILL);
        let _ = child.wait().await;
    }
    outcome
}

async fn exit_reason(child: &mut Child) -> String {
    match tokio::time::timeout(GRACE, child.wait()).await {
        Ok(Ok(status)) => status.to_string(),
        Ok(Err(err)) => format!("cannot tell how: {err}"),
        Err(_) => "it closed its output".to_owned(),
    }
}

/// Input closed (done above), then SIGTERM to the group, then SIGKILL.
async fn stop_group(child: &mut Child, pid: u32) {
    if tokio::time::timeout(GRACE, child.wait()).await.is_ok() {
        kill_group(pid, Signal::KILL);
        return;
    }
    kill_group(pid, Signal::TERM);
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        kill_group(pid, Signal::KILL);
        let _ = child.wait().await;
    }
    kill_group(pid, Signal::KILL);
}

fn kill_group(pid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        // ESRCH (nothing left in the group) is the usual, good outcome.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// `nsh mcp daemon exec --parent PID -- COMMAND…`: arm the parent-death signal, then become
/// the server. Returns only on failure.
pub fn exec_with_parent_death(parent: u32, command: &str, args: &[String]) -> std::io::Error {
    // Linux only; elsewhere a killed daemon's server sees its input close, and most exit on that.
    #[cfg(target_os = "linux")]
    if let Err(err) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        return err.into();
    }
    // The daemon may have died before the signal was armed: then nobody would deliver it.
    if rustix::process::getppid()
        .map(Pid::as_raw_nonzero)
        .map(|p| p.get() as u32)
        != Some(parent)
    {
        return std::io::Error::other("the daemon that started this server is gone");
    }
    std::process::Command::new(command).args(args).exec()
}

/// Detach from the caller's session and terminal (the daemon does this first).
pub fn new_session() -> std::io::Result<()> {
    rustix::process::setsid().map(drop).map_err(Into::into)
}
