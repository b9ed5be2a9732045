//! The agent's side of nsh-mesh.
//!
//! `nsh mesh client` ([`serve`]) is an MCP stdio server: it holds one Socket.io connection to
//! the mesh ([`link`]), stores every incoming message in the agent's inbox file ([`inbox`])
//! before acking it, pushes it into the conversation ([`push`]) and offers the mesh as MCP
//! tools and resources ([`mcp`]). `nsh mesh hook` ([`hooks`]) injects the same inbox into
//! Claude Code through its hooks, installed by [`hook_install`].
#![forbid(unsafe_code)]

pub mod hook_install;
pub mod hooks;
pub mod inbox;
pub mod link;
pub mod mcp;
pub mod push;

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use nsh_mesh_transport::wire::{Envelope, PresenceChange};
use rmcp::ServiceExt as _;

use crate::inbox::{Inbox, InboxEntry, InboxError};
use crate::link::{ConnectionState, Events, Link, TokenProblem, TokenSource};
use crate::mcp::{Identity, MeshMcp};
use crate::push::{Notifier, PRESENCE_URI, PushMode};

/// Settings of `nsh mesh client`.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub server: String,
    pub token: TokenSource,
    pub inbox_dir: PathBuf,
    pub push: PushMode,
    /// Messages waiting to be pushed while the MCP side is busy; older ones are evicted.
    pub push_buffer: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Token(#[from] TokenProblem),
    #[error("--server: {0}")]
    Server(nsh_mesh_transport::client::ClientError),
    #[error(transparent)]
    Inbox(#[from] InboxError),
    #[error("MCP session failed: {0}")]
    Mcp(String),
}

/// How many recent message ids are remembered to drop a message the mesh sends twice.
const SEEN_IDS: usize = 4096;

/// Stores incoming messages (dropping repeats), then queues them for push.
#[derive(Debug)]
struct Receiver {
    inbox: Inbox,
    notifier: Arc<Notifier>,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// Records `id`; false when it was already there.
    fn insert(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back(id.to_owned());
        if self.order.len() > SEEN_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }
}

impl Events for Receiver {
    async fn message(&self, envelope: Envelope) -> Result<(), String> {
        if !self.seen.lock().expect("seen lock").insert(&envelope.id) {
            tracing::debug!(id = %envelope.id, "dropping a message already received");
            return Ok(());
        }
        let entry = InboxEntry::received_now(envelope);
        let inbox = self.inbox.clone();
        let stored = entry.clone();
        let result = tokio::task::spawn_blocking(move || inbox.append(&stored))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(why) = result {
            // Not stored: forget the id so a retry of the same message is accepted.
            self.seen
                .lock()
                .expect("seen lock")
                .ids
                .remove(&entry.message.id);
            return Err(why);
        }
        tracing::info!(id = %entry.message.id, from = %entry.message.from, "message received");
        self.notifier.message_stored(entry);
        Ok(())
    }

    fn presence(&self, change: PresenceChange) {
        tracing::debug!(agent = %change.agent, online = change.online, "presence changed");
        self.notifier.resource_changed(PRESENCE_URI);
    }

    fn state(&self, _state: &ConnectionState) {
        self.notifier.resource_changed(PRESENCE_URI);
    }
}

/// Runs `nsh mesh client` on stdin/stdout until the MCP client closes the session.
pub async fn serve(options: ClientOptions) -> Result<(), ServeError> {
    let (_, claims) = options.token.load()?;
    nsh_mesh_transport::client::websocket_url(&options.server).map_err(ServeError::Server)?;
    let inbox = Inbox::open(&options.inbox_dir, &claims.sub)?;
    let notifier = Notifier::new(inbox.clone(), options.push, options.push_buffer);
    let mut seen = Seen::default();
    let recent = {
        let inbox = inbox.clone();
        tokio::task::spawn_blocking(move || inbox.recent_ids(SEEN_IDS))
            .await
            .map_err(|e| ServeError::Mcp(e.to_string()))??
    };
    for id in &recent {
        seen.insert(id);
    }
    let receiver = Receiver {
        inbox: inbox.clone(),
        notifier: notifier.clone(),
        seen: Mutex::new(seen),
    };
    tracing::info!(
        agent = %claims.sub,
        team = %claims.team,
        server = %options.server,
        inbox = %inbox.log_path().display(),
        "mesh-client starting"
    );
    let link = Link::start(options.server, options.token, claims.sub.clone(), receiver);
    let identity = Identity {
        agent: claims.sub,
        team: claims.team,
    };
    let service = MeshMcp::new(link, inbox, identity, notifier)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| ServeError::Mcp(e.to_string()))?;
    service
        .waiting()
        .await
        .map_err(|e| ServeError::Mcp(e.to_string()))?;
    tracing::info!("MCP session closed; mesh-client exiting");
    Ok(())
}
