//! `NSH_*` environment variables: the names the operator writes into pod specs and `nsh`'s
//! clap arguments read (`#[arg(env = ...)]`).

/// `text` or `json` logs, for every verb.
pub const LOG_FORMAT: &str = "NSH_LOG_FORMAT";
/// Tracing filter (`info`, `nsh_mesh_server=debug`, ...).
pub const LOG: &str = "NSH_LOG";

/// `nsh mesh server`.
pub mod mesh_server {
    pub const LISTEN: &str = "NSH_MESH_LISTEN";
    pub const TEAM_KEYS_DIR: &str = "NSH_MESH_TEAM_KEYS_DIR";
    pub const RATE_LIMIT: &str = "NSH_MESH_RATE_LIMIT";
    pub const BURST: &str = "NSH_MESH_BURST";
    pub const REDIS: &str = "NSH_MESH_REDIS";
    pub const PERSISTENCE: &str = "NSH_MESH_PERSISTENCE";
    pub const RETENTION: &str = "NSH_MESH_RETENTION";
    pub const MAX_LEN: &str = "NSH_MESH_MAX_LEN";
    pub const MAX_TOKEN_TTL: &str = "NSH_MESH_MAX_TOKEN_TTL";
    pub const MAX_HTTP_CONNECTIONS: &str = "NSH_MESH_MAX_HTTP_CONNECTIONS";
    pub const WEBSOCKET_ONLY: &str = "NSH_MESH_WEBSOCKET_ONLY";
    pub const ADMIN_LISTEN: &str = "NSH_MESH_ADMIN_LISTEN";
    pub const WORKER_THREADS: &str = "NSH_MESH_WORKER_THREADS";
    pub const BATCH_WAIT: &str = "NSH_MESH_BATCH_WAIT";
    pub const BATCH_AFTER: &str = "NSH_MESH_BATCH_AFTER";
}

/// `nsh mesh client` and `nsh mesh hook`.
pub mod mesh_client {
    pub const SERVER: &str = "NSH_MESH_SERVER";
    pub const TOKEN_FILE: &str = "NSH_MESH_TOKEN_FILE";
    pub const TOKEN: &str = "NSH_MESH_TOKEN";
    pub const INBOX_DIR: &str = "NSH_MESH_INBOX_DIR";
    pub const LISTEN: &str = "NSH_MESH_CLIENT_LISTEN";
    /// The agent whose inbox the hooks read.
    pub const AGENT: &str = "NSH_MESH_AGENT";
    /// The team of that agent.
    pub const TEAM: &str = "NSH_MESH_TEAM";
}
