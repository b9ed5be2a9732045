//! The mesh from a terminal, without an MCP client: `nsh mesh send`, `nsh mesh presence` and
//! `nsh mesh inbox --follow`. Sends and presence are one short connection each; following an
//! inbox is the mesh-client's link with no MCP side, storing every message in the same inbox
//! file before acking it, so nothing a terminal saw is lost to the agent later.

use nsh_mesh_transport::client::{Client, ClientConfig, ClientError};
use nsh_mesh_transport::wire::{
    Envelope, GroupAck, GroupRequest, PresenceChange, PresenceList, SendAck, SendRequest, Target,
    WireError, event,
};
use tokio::sync::mpsc;

use crate::inbox::{Inbox, InboxEntry};
use crate::link::{ConnectionState, Events, Identity, Link, TokenProblem, TokenSource};
use crate::{Store, StoreMessageError};

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error(transparent)]
    Token(#[from] TokenProblem),
    #[error("--server: {0}")]
    Connect(ClientError),
    #[error("the mesh did not answer: {0}")]
    Request(ClientError),
    /// The mesh's own answer: its code (`recipient_offline`, `forbidden`, …) and message.
    #[error("{}: {}", .0.code.as_str(), .0.message)]
    Refused(WireError),
    #[error(transparent)]
    Inbox(#[from] StoreMessageError),
}

/// One connection as the token's agent; the caller disconnects.
async fn connect(server: &str, token: &TokenSource) -> Result<Client, TerminalError> {
    // A bad --server is reported before anything about the token.
    nsh_mesh_transport::client::websocket_url(server).map_err(TerminalError::Connect)?;
    let (token, _) = token.load()?;
    let (client, _events) = Client::connect(ClientConfig::new(server).with_token(token))
        .await
        .map_err(TerminalError::Connect)?;
    Ok(client)
}

/// Sends `text` to `target` as the token's agent and returns the mesh's ack. A group is joined
/// first (the token must allow it), as the mesh only takes group messages from members.
pub async fn send(
    server: &str,
    token: &TokenSource,
    target: Target,
    text: String,
) -> Result<SendAck, TerminalError> {
    let (to, group) = match target {
        Target::Agent(agent) => (Some(agent), None),
        Target::Group(group) => (None, Some(group)),
    };
    let request = SendRequest {
        id: uuid::Uuid::new_v4().to_string(),
        to,
        group,
        text,
        metadata: None,
        ttl: None,
    };
    request.validate().map_err(TerminalError::Refused)?;
    let client = connect(server, token).await?;
    let result = async {
        if let Some(group) = &request.group {
            let joined: GroupAck = client
                .request(
                    event::GROUP_JOIN,
                    &GroupRequest {
                        group: group.clone(),
                    },
                )
                .await
                .map_err(TerminalError::Request)?;
            if let Some(error) = joined.error {
                return Err(TerminalError::Refused(error));
            }
        }
        let ack: SendAck = client
            .request(event::MESSAGE, &request)
            .await
            .map_err(TerminalError::Request)?;
        match ack.error {
            Some(error) => Err(TerminalError::Refused(error)),
            None => Ok(ack),
        }
    }
    .await;
    client.disconnect().await;
    result
}

/// Who on the token's team is online.
pub async fn presence(server: &str, token: &TokenSource) -> Result<PresenceList, TerminalError> {
    let client = connect(server, token).await?;
    let list = client
        .request::<_, PresenceList>(event::PRESENCE, &serde_json::json!({}))
        .await
        .map_err(TerminalError::Request);
    client.disconnect().await;
    list
}

/// Stays connected as the token's agent: every message is stored in `inbox` (once), acked,
/// then handed to `received`. Connection changes go to `states`. Ends when the returned link
/// is dropped.
pub async fn follow(
    server: String,
    token: TokenSource,
    inbox: Inbox,
    received: mpsc::UnboundedSender<InboxEntry>,
    states: mpsc::UnboundedSender<ConnectionState>,
) -> Result<Link, TerminalError> {
    let identity = Identity {
        team: inbox.team().to_owned(),
        agent: inbox.agent().to_owned(),
    };
    let follower = Follower {
        store: Store::open(inbox).await?,
        received,
        states,
    };
    Ok(Link::start(server, token, identity, follower))
}

struct Follower {
    store: Store,
    received: mpsc::UnboundedSender<InboxEntry>,
    states: mpsc::UnboundedSender<ConnectionState>,
}

impl Events for Follower {
    async fn message(&self, envelope: Envelope) -> Result<(), StoreMessageError> {
        if let Some(entry) = self.store.keep(envelope).await? {
            let _ = self.received.send(entry);
        }
        Ok(())
    }

    fn presence(&self, _change: PresenceChange) {}

    fn state(&self, state: &ConnectionState) {
        let _ = self.states.send(state.clone());
    }
}
