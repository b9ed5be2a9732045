//! Operator metrics: reconciles, failures and durations per kind.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Kind = Vec<(&'static str, &'static str)>;

#[derive(Debug, Clone)]
pub struct Metrics {
    reconciles: Family<Kind, Counter>,
    failures: Family<Kind, Counter>,
    seconds: Family<Kind, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            failures: Family::default(),
            // 1 ms .. ~33 s.
            seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
        }
    }
}

impl Metrics {
    /// Registers the metrics in `registry` (the admin server's).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "nsh_operator_reconciles",
            "Reconciles by kind",
            self.reconciles.clone(),
        );
        registry.register(
            "nsh_operator_reconcile_failures",
            "Failed reconciles by kind",
            self.failures.clone(),
        );
        registry.register(
            "nsh_operator_reconcile_seconds",
            "Reconcile duration by kind",
            self.seconds.clone(),
        );
    }

    pub fn observe(&self, kind: &'static str, seconds: f64, failed: bool) {
        let labels = vec![("kind", kind)];
        self.reconciles.get_or_create(&labels).inc();
        self.seconds.get_or_create(&labels).observe(seconds);
        if failed {
            self.failures.get_or_create(&labels).inc();
        }
    }

    /// Reconciles of `kind` so far (for tests and status).
    pub fn reconciles(&self, kind: &'static str) -> u64 {
        self.reconciles.get_or_create(&vec![("kind", kind)]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_reconciles_are_encoded() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.observe("Team", 0.01, false);
        metrics.observe("Team", 0.02, true);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"nsh_operator_reconciles_total{kind="Team"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"nsh_operator_reconcile_failures_total{kind="Team"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"nsh_operator_reconcile_seconds_count{kind="Team"} 2"#),
            "{text}"
        );
        assert_eq!(metrics.reconciles("Team"), 2);
    }
}
