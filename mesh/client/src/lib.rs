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
pub mod terminal;

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use nsh_mesh_transport::wire::{Envelope, PresenceChange};
use rmcp::ServiceExt as _;

use crate::inbox::{Inbox, InboxEntry, InboxError, InboxLimits};
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
    /// How large the inbox file may grow.
    pub inbox_limits: InboxLimits,
    pub mcp: McpTransport,
}

/// How the MCP client reaches the mesh-client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpTransport {
    /// Started by the MCP client, speaking on stdin/stdout.
    Stdio,
    /// A long-running sidecar: streamable HTTP at `http://LISTEN/mcp`, plus `/healthz`,
    /// `/readyz` (ready once connected to the mesh) and `/metrics`. The connection to the mesh
    /// and the inbox outlive the agent's sessions.
    Http {
        listen: SocketAddr,
        /// Where the admin endpoints go, when not beside `/mcp` (a pod probes them on its IP
        /// while MCP stays on loopback).
        admin: Option<SocketAddr>,
    },
}

/// Why an incoming message was not stored (and so not acked: the sender may retry).
#[derive(Debug, thiserror::Error)]
pub enum StoreMessageError {
    #[error(transparent)]
    Inbox(InboxError),
    #[error("the inbox write was interrupted: {0}")]
    Interrupted(#[source] tokio::task::JoinError),
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Token(#[from] TokenProblem),
    #[error("--server: {0}")]
    Server(nsh_mesh_transport::client::ClientError),
    #[error(transparent)]
    Inbox(#[from] InboxError),
    #[error("MCP session could not start: {0}")]
    McpStart(#[source] Box<rmcp::service::ServerInitializeError>),
    #[error("MCP session failed: {0}")]
    McpSession(#[source] tokio::task::JoinError),
    #[error("reading the inbox was interrupted: {0}")]
    Interrupted(#[source] tokio::task::JoinError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How many recent message ids are remembered to drop a message the mesh sends twice.
const SEEN_IDS: usize = 4096;

/// The inbox behind a link: stores each incoming message once (the mesh may send one again
/// after a reconnect), before it is acked. Shared by the MCP client and `inbox --follow`.
#[derive(Debug)]
pub(crate) struct Store {
    inbox: Inbox,
    seen: Mutex<Seen>,
}

impl Store {
    /// Remembers the ids already in `inbox`'s tail, so a repeat after a restart is dropped.
    pub(crate) async fn open(inbox: Inbox) -> Result<Self, StoreMessageError> {
        let recent = {
            let inbox = inbox.clone();
            tokio::task::spawn_blocking(move || inbox.recent_ids(SEEN_IDS))
                .await
                .map_err(StoreMessageError::Interrupted)?
                .map_err(StoreMessageError::Inbox)?
        };
        let mut seen = Seen::default();
        for id in &recent {
            seen.insert(id);
        }
        Ok(Self {
            inbox,
            seen: Mutex::new(seen),
        })
    }

    /// Appends `envelope` to the inbox; `None` when it was already there. Returns once it is
    /// on disk, so the caller may ack it.
    pub(crate) async fn keep(
        &self,
        envelope: Envelope,
    ) -> Result<Option<InboxEntry>, StoreMessageError> {
        if !self.seen.lock().expect("seen lock").insert(&envelope.id) {
            tracing::debug!(id = %envelope.id, "dropping a message already received");
            return Ok(None);
        }
        let entry = InboxEntry::received_now(envelope);
        let inbox = self.inbox.clone();
        let stored = entry.clone();
        let result = tokio::task::spawn_blocking(move || inbox.append(&stored))
            .await
            .map_err(StoreMessageError::Interrupted)
            .and_then(|r| r.map_err(StoreMessageError::Inbox));
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
        Ok(Some(entry))
    }
}

/// Stores incoming messages (dropping repeats), then queues them for push.
#[derive(Debug)]
struct Receiver {
    store: Store,
    notifier: Arc<Notifier>,
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
    async fn message(&self, envelope: Envelope) -> Result<(), StoreMessageError> {
        if let Some(entry) = self.store.keep(envelope).await? {
            self.notifier.message_stored(entry);
        }
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

/// Runs `nsh mesh client`: on stdin/stdout until the MCP client closes the session, or as an
/// HTTP sidecar until `shutdown` resolves.
pub async fn serve(
    options: ClientOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (_, claims) = options.token.load()?;
    nsh_mesh_transport::client::websocket_url(&options.server).map_err(ServeError::Server)?;
    let inbox = Inbox::open(&options.inbox_dir, &claims.team, &claims.sub)?
        .with_limits(options.inbox_limits);
    let notifier = Notifier::new(inbox.clone(), options.push, options.push_buffer);
    let store = Store::open(inbox.clone()).await.map_err(|e| match e {
        StoreMessageError::Inbox(e) => ServeError::Inbox(e),
        StoreMessageError::Interrupted(e) => ServeError::Interrupted(e),
    })?;
    let receiver = Receiver {
        store,
        notifier: notifier.clone(),
    };
    tracing::info!(
        agent = %claims.sub,
        team = %claims.team,
        server = %options.server,
        inbox = %inbox.log_path().display(),
        "mesh-client starting"
    );
    let identity = Identity::of(&claims);
    let link = Link::start(options.server, options.token, identity.clone(), receiver);
    let mcp = MeshMcp::new(link.clone(), inbox, identity, notifier);
    match options.mcp {
        McpTransport::Stdio => {
            let service = mcp
                .serve(rmcp::transport::stdio())
                .await
                .map_err(|e| ServeError::McpStart(Box::new(e)))?;
            service.waiting().await.map_err(ServeError::McpSession)?;
            tracing::info!("MCP session closed; mesh-client exiting");
            Ok(())
        }
        McpTransport::Http { listen, admin } => {
            serve_http(listen, admin, mcp, &link, shutdown).await
        }
    }
}

/// Serves MCP over streamable HTTP at `/mcp`, every session sharing one mesh connection and
/// inbox, beside the admin endpoints.
async fn serve_http(
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    mcp: MeshMcp,
    link: &Link,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let readiness = nsh_admin::ReadinessHandle::new("connecting to the mesh");
    tokio::spawn(follow_connection(link.watch_state(), readiness.clone()));
    let mut config = StreamableHttpServerConfig::default();
    // Sessions, so pushed messages reach an agent over its open event stream.
    config.legacy_session_mode = true;
    let service = StreamableHttpService::new(
        move || Ok(mcp.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let registry = Arc::new(prometheus_client::registry::Registry::default());
    let admin_routes = nsh_admin::router(registry, readiness);
    let mut router = axum::Router::new().nest_service("/mcp", service);
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    match admin {
        None => router = router.merge(admin_routes),
        Some(admin_addr) => {
            let listener = tokio::net::TcpListener::bind(admin_addr)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: admin_addr,
                    source,
                })?;
            let bound = listener.local_addr().unwrap_or(admin_addr);
            tracing::info!(admin = %bound, "admin endpoints listening");
            tokio::spawn(async move {
                let stopped = async {
                    let _ = admin_stopped.await;
                };
                if let Err(err) = axum::serve(listener, admin_routes)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::warn!(%err, "admin endpoints stopped");
                }
            });
        }
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(mcp = %format!("http://{local}/mcp"), "mesh-client serving MCP over HTTP");
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServeError::Listen { addr, source });
    let _ = stop_admin.send(());
    served
}

/// `/readyz`: ready once connected to the mesh; degraded (still serving) while it is away.
async fn follow_connection(
    mut states: tokio::sync::watch::Receiver<ConnectionState>,
    readiness: nsh_admin::ReadinessHandle,
) {
    let mut connected_once = false;
    loop {
        let state = states.borrow_and_update().clone();
        readiness.set(match &state {
            ConnectionState::Connected { .. } => {
                connected_once = true;
                nsh_admin::Readiness::Ready
            }
            other if connected_once => nsh_admin::Readiness::Degraded(link::describe(other)),
            other => nsh_admin::Readiness::NotReady(link::describe(other)),
        });
        if states.changed().await.is_err() {
            return;
        }
    }
}
