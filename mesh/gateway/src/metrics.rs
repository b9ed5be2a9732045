//! Prometheus metrics of the gateway.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub upstream: String,
    pub tool: String,
    pub decision: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ToolLabels {
    pub tool: String,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<UpstreamLabels, Histogram>,
    pub upstream_up: Family<UpstreamLabels, Gauge>,
    pub tools_changed: Family<ToolLabels, Counter>,
    pub reload_failures: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            // 50 µs .. ~1.6 s for tool calls through the gateway.
            latency: Family::new_with_constructor(|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.00005, 2.0, 16,
                ))
            }),
            upstream_up: Family::default(),
            tools_changed: Family::default(),
            reload_failures: Counter::default(),
        };
        registry.register(
            "nsh_gateway_requests",
            "Requests by method, upstream, tool and decision",
            metrics.requests.clone(),
        );
        registry.register(
            "nsh_gateway_call_seconds",
            "Tool call latency through the gateway, by upstream",
            metrics.latency.clone(),
        );
        registry.register(
            "nsh_gateway_upstream_up",
            "1 while the upstream is connected and listed",
            metrics.upstream_up.clone(),
        );
        registry.register(
            "nsh_gateway_tools_changed",
            "Pinned tools an upstream changed (hidden until approved)",
            metrics.tools_changed.clone(),
        );
        registry.register(
            "nsh_gateway_config_reload_failures",
            "Config reloads refused (the previous config stays in force)",
            metrics.reload_failures.clone(),
        );
        metrics
    }
}
