//! A Socket.io v5 client over WebSocket (Engine.IO v4, JSON packets, namespace `/`).
//!
//! Unlike most small clients it answers acks the server asks for: the mesh counts a message as
//! `delivered` only when the recipient's client acks it. Reconnecting is the caller's job (the
//! mesh-client does it with backoff); a [`Client`] is one connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::socketio::{Frame, Packet, decode_frame, encode_frame};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port` or `http://host:port`; the path defaults to `/socket.io/`.
    pub url: String,
    /// Handshake auth payload, e.g. `{ "token": "<JWT>" }`.
    pub auth: Option<Value>,
    pub connect_timeout: Duration,
    pub ack_timeout: Duration,
}

impl ClientConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            auth: None,
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
        }
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.auth = Some(serde_json::json!({ "token": token.into() }));
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad server URL `{url}`: {why}")]
    Url { url: String, why: String },
    #[error("could not reach {url}: {source}")]
    Connect {
        url: String,
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    #[error("no answer from {url} within {after:?}")]
    ConnectTimeout { url: String, after: Duration },
    /// The server refused the Socket.io connection (`connect_error`); the text is its message.
    #[error("{0}")]
    Refused(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("connection closed")]
    Closed,
    #[error("no ack for `{event}` within {after:?}")]
    AckTimeout { event: String, after: Duration },
    #[error("the ack for `{event}` did not match the expected shape: {why}")]
    BadAck { event: String, why: String },
}

/// An event the server sent; answer with [`Incoming::ack`] when `wants_ack()`.
#[derive(Debug)]
pub struct Incoming {
    pub event: String,
    pub args: Vec<Value>,
    /// Weak, so an unanswered event does not keep the connection open.
    reply: Option<(u64, mpsc::WeakUnboundedSender<Outgoing>)>,
}

impl Incoming {
    pub fn wants_ack(&self) -> bool {
        self.reply.is_some()
    }

    /// Sends the ack; a no-op when the server asked for none or the connection is gone.
    pub fn ack(&mut self, args: Vec<Value>) {
        let Some((id, weak)) = self.reply.take() else {
            return;
        };
        if let Some(outgoing) = weak.upgrade() {
            let _ = outgoing.send(Outgoing::Frame(encode_frame(&Frame::Message(
                Packet::Ack { id, data: args },
            ))));
        }
    }

    /// The first argument parsed as `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(self.args.first().cloned().unwrap_or(Value::Null))
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<Value>>>>>;

/// One Socket.io connection. Cheap to clone; the connection closes when every clone is dropped,
/// on [`Client::disconnect`], or when the server goes away.
#[derive(Debug, Clone)]
pub struct Client {
    outgoing: mpsc::UnboundedSender<Outgoing>,
    pending: Pending,
    next_ack: Arc<AtomicU64>,
    connected: watch::Receiver<bool>,
    sid: Arc<str>,
    ack_timeout: Duration,
}

impl Client {
    /// Opens the WebSocket, completes the Socket.io handshake with `config.auth`, and returns the
    /// client plus the stream of server events. A refused handshake is [`ClientError::Refused`].
    pub async fn connect(
        config: ClientConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Incoming>), ClientError> {
        let url = websocket_url(&config.url)?;
        let after = config.connect_timeout;
        match tokio::time::timeout(after, Self::handshake(url.clone(), config)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::ConnectTimeout { url, after }),
        }
    }

    async fn handshake(
        url: String,
        config: ClientConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Incoming>), ClientError> {
        // disable_nagle: each small frame (an ack, a message) goes out at once.
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
            .await
            .map_err(|source| ClientError::Connect {
                url: url.clone(),
                source: Box::new(source),
            })?;

        let heartbeat = match next_frame(&mut ws).await? {
            Frame::Open(open) => {
                let ms = |key: &str, default: u64| {
                    open.get(key).and_then(Value::as_u64).unwrap_or(default)
                };
                Duration::from_millis(ms("pingInterval", 25_000) + ms("pingTimeout", 20_000))
            }
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected the engine.io open packet, got {other:?}"
                )));
            }
        };
        send_frame(
            &mut ws,
            &Frame::Message(Packet::Connect(config.auth.clone())),
        )
        .await?;
        let sid = loop {
            match next_frame(&mut ws).await? {
                Frame::Message(Packet::Connect(reply)) => {
                    break reply
                        .as_ref()
                        .and_then(|r| r.get("sid"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                }
                Frame::Message(Packet::ConnectError(error)) => {
                    let message = error
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    return Err(ClientError::Refused(
                        message.unwrap_or_else(|| error.to_string()),
                    ));
                }
                Frame::Ping => send_frame(&mut ws, &Frame::Pong).await?,
                Frame::Noop => {}
                other => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected {other:?} during handshake"
                    )));
                }
            }
        };

        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let (connected_tx, connected) = watch::channel(true);
        let pending: Pending = Arc::default();
        let connection = Connection {
            acks: outgoing.downgrade(),
            incoming: incoming_tx,
            pending: pending.clone(),
            heartbeat,
        };
        tokio::spawn(async move {
            let reason = connection.run(ws, outgoing_rx).await;
            tracing::debug!(%reason, "socket.io connection ended");
            let _ = connected_tx.send(false);
        });
        let client = Self {
            outgoing,
            pending,
            next_ack: Arc::new(AtomicU64::new(0)),
            connected,
            sid: sid.into(),
            ack_timeout: config.ack_timeout,
        };
        Ok((client, incoming))
    }

    /// The Socket.io session id the server assigned.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Resolves once the connection has ended.
    pub async fn closed(&self) {
        let mut connected = self.connected.clone();
        let _ = connected.wait_for(|up| !up).await;
    }

    /// Emits `event` with `args`, without asking for an ack.
    pub fn emit(&self, event: &str, args: Vec<Value>) -> Result<(), ClientError> {
        self.send(Packet::Event {
            ack: None,
            data: event_data(event, args),
        })
    }

    /// Emits `event` and waits for the server's ack arguments.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        args: Vec<Value>,
    ) -> Result<Vec<Value>, ClientError> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending acks lock")
            .insert(id, tx);
        if let Err(err) = self.send(Packet::Event {
            ack: Some(id),
            data: event_data(event, args),
        }) {
            self.pending.lock().expect("pending acks lock").remove(&id);
            return Err(err);
        }
        match tokio::time::timeout(self.ack_timeout, rx).await {
            Ok(Ok(args)) => Ok(args),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                self.pending.lock().expect("pending acks lock").remove(&id);
                Err(ClientError::AckTimeout {
                    event: event.to_owned(),
                    after: self.ack_timeout,
                })
            }
        }
    }

    /// Emits `event` with one argument and parses the first ack argument as `R`.
    pub async fn request<T: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        event: &str,
        payload: &T,
    ) -> Result<R, ClientError> {
        let value = serde_json::to_value(payload)
            .map_err(|e| ClientError::Protocol(format!("cannot encode `{event}` payload: {e}")))?;
        let args = self.emit_with_ack(event, vec![value]).await?;
        let first = args.into_iter().next().unwrap_or(Value::Null);
        serde_json::from_value(first.clone()).map_err(|e| ClientError::BadAck {
            event: event.to_owned(),
            why: format!("{e}; got {first}"),
        })
    }

    /// Says goodbye (Socket.io disconnect, Engine.IO close) and ends the connection.
    pub async fn disconnect(&self) {
        let _ = self.send(Packet::Disconnect);
        let _ = self.outgoing.send(Outgoing::Goodbye);
        self.closed().await;
    }

    fn send(&self, packet: Packet) -> Result<(), ClientError> {
        if !self.is_connected() {
            return Err(ClientError::Closed);
        }
        self.outgoing
            .send(Outgoing::Frame(encode_frame(&Frame::Message(packet))))
            .map_err(|_| ClientError::Closed)
    }
}

fn event_data(event: &str, args: Vec<Value>) -> Vec<Value> {
    let mut data = Vec::with_capacity(args.len() + 1);
    data.push(Value::from(event));
    data.extend(args);
    data
}

type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the client half hands the connection task.
#[derive(Debug)]
enum Outgoing {
    /// An encoded Engine.IO frame.
    Frame(String),
    /// Close the session (Engine.IO close, then the WebSocket close handshake).
    Goodbye,
}

struct Connection {
    acks: mpsc::WeakUnboundedSender<Outgoing>,
    incoming: mpsc::UnboundedSender<Incoming>,
    pending: Pending,
    /// Longest silence from the server (ping interval + ping timeout) before giving up.
    heartbeat: Duration,
}

impl Connection {
    async fn run(
        self,
        mut ws: WebSocket,
        mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    ) -> String {
        let reason = loop {
            tokio::select! {
                received = tokio::time::timeout(self.heartbeat, ws.next()) => match received {
                    Err(_) => break format!("no ping from the server for {:?}", self.heartbeat),
                    Ok(None) => break "server closed the connection".to_owned(),
                    Ok(Some(Err(err))) => break format!("websocket error: {err}"),
                    Ok(Some(Ok(Message::Text(text)))) => match self.handle(text.as_str()) {
                        Err(reason) => break reason,
                        Ok(Some(reply)) => {
                            if let Err(err) = ws.send(Message::text(reply)).await {
                                break format!("send failed: {err}");
                            }
                        }
                        Ok(None) => {}
                    },
                    Ok(Some(Ok(Message::Close(_)))) => break "server sent close".to_owned(),
                    Ok(Some(Ok(_))) => {}
                },
                frame = outgoing.recv() => match frame {
                    Some(Outgoing::Frame(text)) => {
                        if let Err(err) = ws.send(Message::text(text)).await {
                            break format!("send failed: {err}");
                        }
                    }
                    Some(Outgoing::Goodbye) => {
                        let _ = ws.send(Message::text(encode_frame(&Frame::Close))).await;
                        let _ = ws.close(None).await;
                        break "client disconnected".to_owned();
                    }
                    None => {
                        let _ = ws.close(None).await;
                        break "client dropped".to_owned();
                    }
                },
            }
        };
        // Fail every pending ack now rather than at its timeout.
        self.pending.lock().expect("pending acks lock").clear();
        reason
    }

    /// Handles one frame: `Ok(Some(frame))` is an immediate reply (a pong), `Err` ends the
    /// connection with that reason.
    fn handle(&self, text: &str) -> Result<Option<String>, String> {
        let frame = match decode_frame(text) {
            Ok(frame) => frame,
            Err(err) => {
                tracing::warn!(%err, "ignoring undecodable frame");
                return Ok(None);
            }
        };
        match frame {
            Frame::Ping => return Ok(Some(encode_frame(&Frame::Pong))),
            Frame::Close => return Err("server closed the session".into()),
            Frame::Message(Packet::Disconnect) => {
                return Err("server disconnected the socket".into());
            }
            Frame::Message(Packet::Ack { id, data }) => {
                if let Some(waiter) = self.pending.lock().expect("pending acks lock").remove(&id) {
                    let _ = waiter.send(data);
                }
            }
            Frame::Message(Packet::Event { ack, mut data }) => {
                let Some(Value::String(event)) = (!data.is_empty()).then(|| data.remove(0)) else {
                    tracing::warn!("ignoring event without a name");
                    return Ok(None);
                };
                let reply = ack.map(|id| (id, self.acks.clone()));
                // A closed receiver means nobody listens; acks are then never sent, as intended.
                let _ = self.incoming.send(Incoming {
                    event,
                    args: data,
                    reply,
                });
            }
            Frame::Open(_) | Frame::Pong | Frame::Noop | Frame::Message(_) => {}
        }
        Ok(None)
    }
}

async fn next_frame(ws: &mut WebSocket) -> Result<Frame, ClientError> {
    loop {
        match ws.next().await {
            None => return Err(ClientError::Closed),
            Some(Err(err)) => return Err(ClientError::Protocol(err.to_string())),
            Some(Ok(Message::Text(text))) => {
                return decode_frame(text.as_str())
                    .map_err(|e| ClientError::Protocol(e.to_string()));
            }
            Some(Ok(Message::Close(_))) => return Err(ClientError::Closed),
            Some(Ok(_)) => {}
        }
    }
}

async fn send_frame(ws: &mut WebSocket, frame: &Frame) -> Result<(), ClientError> {
    ws.send(Message::text(encode_frame(frame)))
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))
}

/// `ws://host:port[/path]` -> `ws://host:port/socket.io/?EIO=4&transport=websocket`.
pub fn websocket_url(input: &str) -> Result<String, ClientError> {
    let bad = |why: &str| ClientError::Url {
        url: input.to_owned(),
        why: why.to_owned(),
    };
    let mut url = url::Url::parse(input).map_err(|e| bad(&e.to_string()))?;
    let scheme = match url.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => {
            return Err(bad(
                "TLS (wss://) is not supported by this client yet; use ws:// (e.g. through `kubectl port-forward`)",
            ));
        }
        _ => {
            return Err(bad(
                "accepted schemes: ws://HOST:PORT or http://HOST:PORT (wss:// and https:// are not supported yet)",
            ));
        }
    };
    url.set_scheme(scheme)
        .map_err(|()| bad("cannot use the ws scheme"))?;
    if url.host_str().is_none() {
        return Err(bad("no host"));
    }
    if url.path().is_empty() || url.path() == "/" {
        url.set_path("/socket.io/");
    }
    url.query_pairs_mut()
        .append_pair("EIO", "4")
        .append_pair("transport", "websocket");
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_socket_io_path_and_query() {
        assert_eq!(
            websocket_url("ws://127.0.0.1:3456").unwrap(),
            "ws://127.0.0.1:3456/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            websocket_url("http://mesh:80/custom/").unwrap(),
            "ws://mesh/custom/?EIO=4&transport=websocket"
        );
        let err = websocket_url("wss://mesh").unwrap_err().to_string();
        assert!(err.contains("port-forward"), "{err}");
        assert!(websocket_url("mesh:3456").is_err());
    }
}
