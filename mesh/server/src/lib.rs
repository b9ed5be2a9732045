//! The nsh-mesh server: Socket.io (socketioxide) messaging between the agents of a team.
//!
//! [`Server::bind`] then [`Server::run`]; the wire contract is in `nsh-mesh-transport` and
//! `docs/mesh-protocol.md`. Layers: [`config`] and [`keys`] (input), [`registry`] and [`dedup`]
//! (pure state), [`store`] (Redis Streams, when persistence is on) and `durable` (in-order
//! delivery of stored messages), `cluster` and `pubsub` (several replicas over Redis),
//! `rooms`, `session` and `emit` (what all of those use to reach sockets), `routing` (where a
//! message goes), `handlers` (thin Socket.io event handlers), `app` (HTTP, admin endpoints,
//! shutdown). Dependencies point down this list; `scripts/check-architecture.py` holds
//! every crate to no module cycles.
#![forbid(unsafe_code)]

mod app;
mod args;
mod cluster;
pub mod config;
pub mod dedup;
mod durable;
mod emit;
mod gate;
mod handlers;
mod maps;
pub use nsh_mesh_transport::keys;
mod metrics;
mod presence;
mod pubsub;
pub mod registry;
mod revocation;
mod rooms;
mod routing;
mod session;
pub mod store;

use std::sync::Arc;

pub use app::{Server, ServerError};
pub use cluster::ClusterError;
pub use config::{HttpLimits, Limits, RateLimit, ServerConfig};

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Mesh {
    limits: Limits,
    keys: Arc<keys::KeyDir>,
    registry: registry::Registry,
    dedup: dedup::Dedup,
    /// Events per agent, keyed by [`session::Session::key`].
    limiter: governor::DefaultKeyedRateLimiter<Arc<str>>,
    /// Connects per agent (`team/agent`).
    connect_limiter: governor::DefaultKeyedRateLimiter<String>,
    presence: presence::PresenceThrottle,
    metrics: metrics::Metrics,
    /// The message store, when persistence is on.
    store: Option<store::Store>,
    deliverers: durable::Deliverers,
    /// This replica's id in the cluster directory (random per process).
    node: String,
    /// The other replicas, when several share a Redis (`--redis`).
    cluster: Option<Arc<cluster::Cluster>>,
}
