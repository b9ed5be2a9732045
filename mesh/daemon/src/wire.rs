//! The first line on a daemon's socket says who is calling: a bridge (then MCP's own
//! newline-delimited JSON-RPC follows), or `nsh mcp daemon list|stop`.

use serde::{Deserialize, Serialize};

/// Bumped when bridge and daemon stop understanding each other; a bridge refuses another.
pub const PROTOCOL: u32 = 1;

/// The caller's first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "nsh", rename_all = "camelCase")]
pub enum Hello {
    /// A `run-once` bridge. With `fds`, one byte carrying its stdin and stdout (`SCM_RIGHTS`)
    /// follows the welcome and the daemon talks to the MCP client directly; without, MCP
    /// follows on this socket.
    Bridge {
        protocol: u32,
        #[serde(default)]
        fds: bool,
    },
    /// `nsh mcp daemon list`: answer one [`Status`] line.
    Status,
    /// `nsh mcp daemon stop`: answer one [`Status`] line, then stop.
    Stop,
}

/// The byte a daemon sends a bridge that passed its stdio when that client is done: the bridge
/// exits 0 on it, and with an error if the connection ends without it (the daemon died).
pub const GOODBYE: u8 = b'.';

/// The daemon's answer to a bridge, before any MCP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    pub protocol: u32,
    pub pid: u32,
    pub name: String,
}

/// What `nsh mcp daemon list` shows of one daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub name: String,
    pub key: String,
    pub pid: u32,
    /// The server's process, when it runs.
    pub server_pid: Option<u32>,
    pub clients: usize,
    pub in_flight: usize,
    /// Times the server was started again after exiting.
    pub restarts: u32,
    pub uptime_secs: u64,
    /// Resident memory of the daemon, the server and everything in the server's group.
    pub memory_bytes: u64,
    pub persistent: bool,
    /// `None` when persistent.
    pub idle_timeout_secs: Option<u64>,
    pub command: Vec<String>,
    pub cwd: String,
}
