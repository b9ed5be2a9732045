//! A connected mesh agent for tests: collects what it receives (acking messages, unless told
//! not to) and sends with acks. Used by the mesh server's tests and the CLI's replica tests.

use std::time::Duration;

use nsh_mesh_transport::client::{Client, ClientConfig, ClientError, Incoming};
use nsh_mesh_transport::wire::{Envelope, PresenceChange, SendAck, event};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A connected test agent: messages it receives are acked (unless silent) and collected.
#[derive(Debug)]
pub struct Agent {
    pub client: Client,
    messages: mpsc::UnboundedReceiver<Envelope>,
    presence: mpsc::UnboundedReceiver<PresenceChange>,
}

impl Agent {
    /// Connects to any mesh server at `url` (ours or the Node one).
    pub async fn connect(url: &str, token: &str) -> Result<Self, ClientError> {
        let config = ClientConfig {
            ack_timeout: Duration::from_secs(10),
            ..ClientConfig::new(url).with_token(token)
        };
        let (client, incoming) = Client::connect(config).await?;
        Ok(Self::new(client, incoming, true))
    }

    /// Wraps a connected client; `acks: false` receives messages without ever acking them.
    pub fn new(
        client: Client,
        mut incoming: mpsc::UnboundedReceiver<Incoming>,
        acks: bool,
    ) -> Self {
        let (messages_tx, messages) = mpsc::unbounded_channel();
        let (presence_tx, presence) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(mut event) = incoming.recv().await {
                match event.event.as_str() {
                    event::MESSAGE => {
                        if acks {
                            event.ack(vec![json!({ "ok": true })]);
                        }
                        let _ = messages_tx.send(event.parse::<Envelope>().expect("envelope"));
                    }
                    event::PRESENCE => {
                        let _ = presence_tx
                            .send(event.parse::<PresenceChange>().expect("presence change"));
                    }
                    _ => {}
                }
            }
        });
        Self {
            client,
            messages,
            presence,
        }
    }

    pub async fn send(&self, payload: Value) -> SendAck {
        self.client.request(event::MESSAGE, &payload).await.unwrap()
    }

    pub async fn call(&self, event: &str, payload: Value) -> Value {
        self.client.request(event, &payload).await.unwrap()
    }

    /// The next message received (and acked), or `None` once the connection is gone and every
    /// message it received was taken.
    pub async fn recv_message(&mut self) -> Option<Envelope> {
        self.messages.recv().await
    }

    pub async fn next_message(&mut self) -> Envelope {
        tokio::time::timeout(Duration::from_secs(5), self.messages.recv())
            .await
            .expect("a message within 5 s")
            .unwrap()
    }

    /// No message arrives within `wait`.
    pub async fn assert_no_message(&mut self, wait: Duration) {
        if let Ok(Some(message)) = tokio::time::timeout(wait, self.messages.recv()).await {
            panic!("unexpected message {message:?}");
        }
    }

    /// The next presence change, if one comes within `wait`.
    pub async fn presence_within(&mut self, wait: Duration) -> Option<PresenceChange> {
        tokio::time::timeout(wait, self.presence.recv())
            .await
            .ok()
            .flatten()
    }

    pub async fn next_presence(&mut self) -> PresenceChange {
        tokio::time::timeout(Duration::from_secs(5), self.presence.recv())
            .await
            .expect("a presence change within 5 s")
            .unwrap()
    }

    pub async fn assert_no_presence(&mut self, wait: Duration) {
        if let Ok(Some(change)) = tokio::time::timeout(wait, self.presence.recv()).await {
            panic!("unexpected presence change {change:?}");
        }
    }
}

/// A fresh message id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
