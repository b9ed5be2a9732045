//! The nsh-mesh server: Socket.io (socketioxide) messaging between the agents of a team.
//!
//! [`Server::bind`] then [`Server::run`]; the wire contract is in `nsh-mesh-transport` and
//! `docs/mesh-protocol.md`. Layers: [`config`] and [`keys`] (input), [`registry`] and [`dedup`]
//! (pure state), [`store`] (Redis Streams, when persistence is on) and `durable` (in-order
//! delivery of stored messages), `handlers` (Socket.io events), `app` (HTTP, admin endpoints,
//! shutdown).
#![forbid(unsafe_code)]

mod app;
pub mod config;
pub mod dedup;
mod durable;
mod handlers;
pub mod keys;
mod metrics;
pub mod registry;
pub mod store;

use std::sync::Arc;

pub use app::{Server, ServerError};
pub use config::{Limits, RateLimit, ServerConfig};

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Mesh {
    limits: Limits,
    keys: Arc<keys::KeyDir>,
    registry: registry::Registry,
    dedup: dedup::Dedup,
    limiter: governor::DefaultKeyedRateLimiter<String>,
    metrics: metrics::Metrics,
    /// The message store, when persistence is on.
    store: Option<store::Store>,
    deliverers: durable::Deliverers,
}
