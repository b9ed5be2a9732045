//! The Unix socket front: bridges (`nsh mcp run-once`) and `nsh mcp daemon list|stop`.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, BufWriter};
use tokio::net::{UnixListener, UnixStream};

use crate::hub::Hub;
use crate::upstream::MAX_LINE;
use crate::wire::{Hello, PROTOCOL, Welcome};

/// A caller has this long to say who it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

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

async fn connection(stream: UnixStream, hub: Hub, name: String) {
    let (read, write) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut writer = BufWriter::with_capacity(64 * 1024, write);
    let mut line = Vec::new();
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, reader.read_until(b'\n', &mut line)).await
    {
        Ok(Ok(n)) if n > 0 => serde_json::from_slice::<Hello>(&line).ok(),
        _ => None,
    };
    match hello {
        Some(Hello::Bridge { protocol }) if protocol == PROTOCOL => {}
        Some(Hello::Bridge { protocol }) => {
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
                    &mut writer,
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
    }
    // Joined before the welcome: a bridge that got one is counted, so no idle stop can race it.
    let Ok((client, mut outbound)) = hub.join().await else {
        return;
    };
    let welcome = Welcome {
        protocol: PROTOCOL,
        pid: std::process::id(),
        name,
    };
    if write_line(
        &mut writer,
        &serde_json::to_value(welcome).unwrap_or_default(),
    )
    .await
    .is_err()
    {
        hub.leave(client);
        return;
    }
    let writing = tokio::spawn(async move {
        while let Some(message) = outbound.recv().await {
            if write_line_buffered(&mut writer, &message).await.is_err() {
                return;
            }
            // Everything already waiting goes out in one write.
            while let Ok(message) = outbound.try_recv() {
                if write_line_buffered(&mut writer, &message).await.is_err() {
                    return;
                }
            }
            if writer.flush().await.is_err() {
                return;
            }
        }
    });
    line.clear();
    loop {
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) if line.len() > MAX_LINE => break,
            Ok(_) => {
                if line.last() != Some(&b'\n') {
                    continue;
                }
                if !line.iter().all(u8::is_ascii_whitespace) {
                    match serde_json::from_slice::<Value>(&line) {
                        Ok(message) => hub.send(client, message),
                        Err(err) => {
                            tracing::debug!(%err, "a client sent a line that is not JSON");
                            // Not an object: the mux answers with a parse error, to this client only.
                            hub.send(client, Value::Null);
                        }
                    }
                }
                line.clear();
            }
        }
    }
    hub.leave(client);
    writing.abort();
}

async fn write_line_buffered(
    writer: &mut BufWriter<tokio::net::unix::OwnedWriteHalf>,
    message: &Value,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(message)?;
    bytes.push(b'\n');
    writer.write_all(&bytes).await
}

async fn write_line(
    writer: &mut BufWriter<tokio::net::unix::OwnedWriteHalf>,
    message: &Value,
) -> std::io::Result<()> {
    write_line_buffered(writer, message).await?;
    writer.flush().await
}
