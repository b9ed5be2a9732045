//! The Unix socket front: bridges (`nsh mcp run-once`) and `nsh mcp daemon list|stop`.
//!
//! A bridge whose stdin and stdout are pipes or sockets (what MCP clients give their servers)
//! hands them to the daemon (`SCM_RIGHTS`), and the daemon talks to the MCP client directly:
//! no copy through the bridge, which only waits for the daemon's goodbye. Other stdio (a
//! terminal, a file) is relayed by the bridge over the socket itself.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::time::Duration;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use serde_json::Value;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader, BufWriter,
};
use tokio::net::{UnixListener, UnixStream};

use crate::hub::Hub;
use crate::mux::ClientId;
use crate::upstream::MAX_LINE;
use crate::wire::{GOODBYE, Hello, PROTOCOL, Welcome};

/// A caller has this long to say who it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

type Reader = Pin<Box<dyn AsyncRead + Send>>;
type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// Accepts connections until the listener fails; only the daemon's own user gets in.
pub async fn serve(listener: UnixListener, hub: Hub, name: String) {
    let me = rustix::process::getuid().as_raw();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(%err, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The socket is 0600 in a 0700 folder; the peer's uid is checked all the same.
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == me => {}
            Ok(cred) => {
                tracing::warn!(uid = cred.uid(), "refused a connection from another user");
                continue;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot tell who connected; refused");
                continue;
            }
        }
        tokio::spawn(connection(stream, hub.clone(), name.clone()));
    }
}

/// The first line, read without reading past it (what follows may carry descriptors).
async fn read_hello(stream: &UnixStream) -> Option<Hello> {
    let mut line = Vec::new();
    let read = async {
        loop {
            stream.readable().await.ok()?;
            let mut byte = [0u8; 1];
            match stream.try_read(&mut byte) {
                Ok(0) => return None,
                Ok(_) if byte[0] == b'\n' => return Some(()),
                Ok(_) if line.len() > 4096 => return None,
                Ok(_) => line.push(byte[0]),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
    };
    tokio::time::timeout(HELLO_TIMEOUT, read).await.ok()??;
    serde_json::from_slice(&line).ok()
}

async fn connection(mut stream: UnixStream, hub: Hub, name: String) {
    let fds = match read_hello(&stream).await {
        Some(Hello::Bridge { protocol, fds }) if protocol == PROTOCOL => fds,
        Some(Hello::Bridge { protocol, .. }) => {
            tracing::warn!(
                protocol,
                ours = PROTOCOL,
                "a bridge of another nsh version; refused"
            );
            return;
        }
        Some(hello @ (Hello::Status | Hello::Stop)) => {
            if let Some(status) = hub.status().await {
                let _ = write_line(
                    &mut stream,
                    &serde_json::to_value(status).unwrap_or_default(),
                )
                .await;
            }
            if hello == Hello::Stop {
                tracing::info!("stopping, as asked");
                hub.stop();
            }
            return;
        }
        None => return,
    };
    // Joined before the welcome: a bridge that got one is counted, so no idle stop can race it.
    let Ok((client, outbound)) = hub.join().await else {
        return;
    };
    let welcome = Welcome {
        protocol: PROTOCOL,
        pid: std::process::id(),
        name,
    };
    if write_line(
        &mut stream,
        &serde_json::to_value(welcome).unwrap_or_default(),
    )
    .await
    .is_err()
    {
        hub.leave(client);
        return;
    }
    if !fds {
        let (read, write) = stream.into_split();
        let _ = serve_client(
            client,
            &hub,
            Box::pin(read),
            Box::pin(write),
            outbound,
            None,
        )
        .await;
        return;
    }
    match receive_stdio(&stream).await {
        Ok((read, write)) => {
            let ended = serve_client(client, &hub, read, write, outbound, Some(&stream)).await;
            // The bridge exits 0 only on this; a daemon that stops or dies ends it with an error,
            // so its MCP client sees the server go.
            if ended == Ended::ClientDone {
                let _ = stream.write_all(&[GOODBYE]).await;
            }
        }
        Err(err) => {
            tracing::warn!(%err, "a bridge's stdio did not arrive");
            hub.leave(client);
        }
    }
}

/// Received descriptors are close-on-exec at once, so the server the daemon starts never
/// inherits a client's pipes. (Elsewhere than Linux, `reader`/`writer` set it just after.)
#[cfg(target_os = "linux")]
const RECV_FLAGS: RecvFlags = RecvFlags::CMSG_CLOEXEC;
#[cfg(not(target_os = "linux"))]
const RECV_FLAGS: RecvFlags = RecvFlags::empty();

/// The bridge's stdin and stdout, as async reader and writer.
async fn receive_stdio(stream: &UnixStream) -> std::io::Result<(Reader, Writer)> {
    let mut fds: Vec<OwnedFd> = Vec::new();
    let received = async {
        loop {
            stream.readable().await?;
            let attempt = stream.try_io(tokio::io::Interest::READABLE, || {
                let mut byte = [0u8; 1];
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let got = rustix::net::recvmsg(
                    stream,
                    &mut [IoSliceMut::new(&mut byte)],
                    &mut control,
                    RECV_FLAGS,
                )?;
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(passed) = message {
                        fds.extend(passed);
                    }
                }
                Ok(got.bytes)
            });
            match attempt {
                Ok(0) => return Err(std::io::Error::other("the bridge closed")),
                Ok(_) => return Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
    };
    tokio::time::timeout(HELLO_TIMEOUT, received)
        .await
        .map_err(|_| std::io::Error::other("no descriptors within the hello timeout"))??;
    let mut fds = fds.into_iter();
    let (Some(input), Some(output)) = (fds.next(), fds.next()) else {
        return Err(std::io::Error::other(
            "the bridge sent fewer than two descriptors",
        ));
    };
    Ok((reader(input)?, writer(output)?))
}

fn is_socket(fd: &OwnedFd) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|stat| {
        rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Socket
    })
}

fn reader(fd: OwnedFd) -> std::io::Result<Reader> {
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    if is_socket(&fd) {
        let stream = std::os::unix::net::UnixStream::from(fd);
        stream.set_nonblocking(true)?;
        return Ok(Box::pin(UnixStream::from_std(stream)?));
    }
    Ok(Box::pin(tokio::net::unix::pipe::Receiver::from_owned_fd(
        fd,
    )?))
}

fn writer(fd: OwnedFd) -> std::io::Result<Writer> {
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    if is_socket(&fd) {
        let stream = std::os::unix::net::UnixStream::from(fd);
        stream.set_nonblocking(true)?;
        return Ok(Box::pin(UnixStream::from_std(stream)?));
    }
    Ok(Box::pin(tokio::net::unix::pipe::Sender::from_owned_fd(fd)?))
}

/// One client's messages in and out until its input ends or its bridge goes away.
async fn serve_client(
    client: ClientId,
    hub: &Hub,
    read: Reader,
    write: Writer,
    mut outbound: tokio::sync::mpsc::UnboundedReceiver<Value>,
    bridge: Option<&UnixStream>,
) -> Ended {
    let mut writer = BufWriter::with_capacity(64 * 1024, write);
    let writing = async move {
        while let Some(message) = outbound.recv().await {
            if write_buffered(&mut writer, &message).await.is_err() {
                return;
            }
            // Everything already waiting goes out in one write.
            while let Ok(message) = outbound.try_recv() {
                if write_buffered(&mut writer, &message).await.is_err() {
                    return;
                }
            }
            if writer.flush().await.is_err() {
                return;
            }
        }
    };
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let reading = async {
        let mut line = Vec::with_capacity(4096);
        loop {
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) if line.len() > MAX_LINE => return,
                Ok(_) => {
                    if line.last() != Some(&b'\n') {
                        continue;
                    }
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        match serde_json::from_slice::<Value>(&line) {
                            Ok(message) => hub.send(client, message),
                            // Not an object: the mux answers with a parse error, to this client.
                            Err(_) => hub.send(client, Value::Null),
                        }
                    }
                    line.clear();
                }
            }
        }
    };
    let bridge_gone = async {
        match bridge {
            Some(bridge) => {
                // The bridge sends nothing more; readable means it closed (or was killed).
                let _ = bridge.readable().await;
                let mut probe = [0u8; 1];
                loop {
                    match bridge.try_read(&mut probe) {
                        Ok(_) => return,
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                            let _ = bridge.readable().await;
                        }
                        Err(_) => return,
                    }
                }
            }
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        () = reading => Ended::ClientDone,
        () = bridge_gone => Ended::BridgeGone,
        () = writing => Ended::DaemonStopping,
    };
    hub.leave(client);
    ended
}

/// Why a client's session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The MCP client closed its input: done.
    ClientDone,
    /// The bridge process went away (killed by its client, usually).
    BridgeGone,
    /// The daemon is stopping (its hub let go of the client).
    DaemonStopping,
}

async fn write_buffered(
    writer: &mut (impl AsyncWrite + Unpin),
    message: &Value,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(message)?;
    bytes.push(b'\n');
    writer.write_all(&bytes).await
}

async fn write_line(
    writer: &mut (impl AsyncWrite + Unpin),
    message: &Value,
) -> std::io::Result<()> {
    write_buffered(writer, message).await?;
    writer.flush().await
}
