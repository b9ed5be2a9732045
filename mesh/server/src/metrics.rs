//! Prometheus metrics of the mesh server.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

fn outcome(outcome: &'static str) -> Labels {
    vec![("outcome", outcome)]
}

#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) connections: Gauge,
    messages: Family<Labels, Counter>,
    /// `messages` of the outcomes nearly every message has, looked up once.
    delivered: Counter,
    duplicate: Counter,
    refused_connections: Family<Labels, Counter>,
    pub(crate) send_seconds: Histogram,
}

impl Metrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let messages = Family::<Labels, Counter>::default();
        let delivered = messages.get_or_create(&outcome("delivered")).clone();
        let duplicate = messages.get_or_create(&outcome("duplicate")).clone();
        let metrics = Self {
            connections: Gauge::default(),
            delivered,
            duplicate,
            messages,
            refused_connections: Family::default(),
            // 100 µs .. ~3.3 s: relays are sub-millisecond, timeouts are seconds.
            send_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
            ),
        };
        registry.register(
            "nsh_mesh_connections",
            "Open Socket.io connections",
            metrics.connections.clone(),
        );
        registry.register(
            "nsh_mesh_messages",
            "Messages by outcome (status or error code)",
            metrics.messages.clone(),
        );
        registry.register(
            "nsh_mesh_refused_connections",
            "Handshakes refused, by reason",
            metrics.refused_connections.clone(),
        );
        registry.register(
            "nsh_mesh_send_seconds",
            "Time from receiving a message to acking it (includes the recipient's ack)",
            metrics.send_seconds.clone(),
        );
        metrics
    }

    pub(crate) fn message(&self, outcome: &'static str) {
        match outcome {
            "delivered" => self.delivered.inc(),
            "duplicate" => self.duplicate.inc(),
            other => self.messages.get_or_create(&self::outcome(other)).inc(),
        };
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused_connections
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }
}
