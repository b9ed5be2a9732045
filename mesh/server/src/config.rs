//! Server settings, with the defaults documented in `docs/mesh-server.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// One file per team, named after it; the trimmed bytes are the team's HMAC key.
    pub team_keys_dir: PathBuf,
    /// How often the key directory is re-read.
    pub key_reload_interval: Duration,
    pub limits: Limits,
    /// Persistence: every message is kept in Redis Streams before it is acked.
    pub store: Option<crate::store::StoreConfig>,
    /// Redis through which several replicas form one mesh (`--redis`).
    pub cluster_url: Option<String>,
    /// The HTTP front: connection cap, header deadline, new Engine.IO sessions.
    pub http: HttpLimits,
    /// A separate listener for `/healthz`, `/readyz` and `/metrics` (they stay on `listen` too),
    /// so probes and scrapes are answered while the main listener is at its connection cap.
    pub admin_listen: Option<SocketAddr>,
    /// 0: connections run on the caller's runtime. N: each connection is pinned, round robin,
    /// to one of N single-threaded runtimes, the caller's (best a single-threaded one too) and
    /// N - 1 more threads (`nsh mesh server --worker-threads`; `nsh_admin::shards` says why).
    pub pinned_threads: usize,
    /// How the pinned threads sleep when out of work (`--batch-wait`); the caller's runtime
    /// should park the same way (`nsh_admin::shards::Batching::before_park`).
    pub batching: nsh_admin::shards::Batching,
}

/// What an unauthenticated peer can make the server hold.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpLimits {
    /// Connections open at once and how long a request's headers may take.
    pub serve: nsh_admin::serve::ServeLimits,
    /// How long an Engine.IO session may go without connecting to the namespace (that is,
    /// without a valid token) before it is closed.
    pub connect_timeout: Duration,
    /// New Engine.IO sessions one client address may open per `connect_timeout`.
    pub new_sessions_per_peer: u32,
    /// New Engine.IO sessions all clients together may open per `connect_timeout`.
    pub new_sessions: u32,
    /// Refuse HTTP long-polling: WebSocket only (what nsh's own clients use).
    pub websocket_only: bool,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            serve: nsh_admin::serve::ServeLimits::default(),
            connect_timeout: Duration::from_secs(10),
            new_sessions_per_peer: 500,
            new_sessions: 5_000,
            websocket_only: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub rate: RateLimit,
    /// Largest `message` payload, as JSON bytes.
    pub max_message_bytes: usize,
    pub max_groups_per_agent: usize,
    pub max_connections_per_agent: usize,
    /// How long a recipient's client has to ack a message before `recipient_offline`.
    pub ack_timeout: Duration,
    pub dedup_ids_per_sender: usize,
    pub dedup_window: Duration,
    /// Longest token lifetime accepted (`exp` this far ahead at most).
    pub max_token_ttl: Duration,
    /// Connections one agent may open: a sustained rate and a burst.
    pub connect_rate: RateLimit,
    /// Presence of one agent is announced at most once per this interval; changes in between
    /// are folded into one announcement at its end (a flapping agent cannot flood its team).
    pub presence_interval: Duration,
    /// Presence is broadcast only while a team has at most this many agents online: every
    /// change goes to every member, so a larger team's connect storm would cost N² frames and
    /// the memory of their queues. Larger teams ask with the `presence` event instead.
    pub presence_max_team: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate: RateLimit {
                per_second: 50.0,
                burst: 100,
            },
            max_message_bytes: nsh_mesh_transport::wire::DEFAULT_MAX_MESSAGE_BYTES,
            max_groups_per_agent: 32,
            max_connections_per_agent: 8,
            ack_timeout: Duration::from_secs(5),
            dedup_ids_per_sender: 1024,
            dedup_window: Duration::from_secs(600),
            max_token_ttl: nsh_mesh_transport::token::MAX_TTL,
            connect_rate: RateLimit {
                per_second: 1.0,
                burst: 20,
            },
            presence_interval: Duration::from_secs(1),
            presence_max_team: 1_000,
        }
    }
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, team_keys_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            team_keys_dir: team_keys_dir.into(),
            key_reload_interval: Duration::from_secs(2),
            limits: Limits::default(),
            store: None,
            cluster_url: None,
            http: HttpLimits::default(),
            admin_listen: None,
            pinned_threads: 0,
            batching: nsh_admin::shards::Batching::OFF,
        }
    }
}

/// Events per agent: a sustained rate and a burst (token bucket).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}
