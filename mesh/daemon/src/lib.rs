//! The MCP daemon: one stdio MCP server shared by many MCP clients.
//!
//! Layers, outside in: [`bridge`] (the `nsh mcp run-once` process an MCP client runs) and
//! [`control`] (`list`, `stop`) reach a daemon over its Unix socket; [`daemon`] owns the socket,
//! the lock and the state file; [`socket`] and [`http`] are the fronts; [`hub`] is the one task
//! that owns the state; [`mux`] is the pure multiplexing logic; [`upstream`] runs the server.
#![forbid(unsafe_code)]

pub mod bridge;
pub mod control;
pub mod daemon;
pub mod hub;
pub mod identity;
pub mod mux;
pub mod procfs;
pub mod socket;
pub mod upstream;
pub mod wire;

pub use hub::Lifetime;
pub use identity::{Identity, ServerSpec};
pub use upstream::Launch;
