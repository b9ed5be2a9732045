//! Admin endpoints shared by every nsh server process (mesh, gateway, daemon, operator):
//!
//! - `/healthz` (alias `/livez`, `/live`): the process runs; 200 `ok`.
//! - `/readyz` (alias `/ready`): 200 `ok`, 200 `degraded: WHY` (serving, with a part down), or
//!   503 `not ready: WHY` (starting, draining).
//! - `/metrics`: the Prometheus registry in OpenMetrics text.
//!
//! [`serve`] is the HTTP/1 accept loop every nsh server listens with (connection cap, header
//! deadline, graceful drain); [`shards`] are the single-threaded runtimes it can pin
//! connections to.
#![forbid(unsafe_code)]

pub mod serve;
pub mod shards;

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

/// What `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Serving, but something it depends on is down.
    Degraded(String),
    NotReady(String),
}

/// A shared, cheap-to-clone handle the server flips as its state changes.
#[derive(Debug, Clone)]
pub struct ReadinessHandle(Arc<RwLock<Readiness>>);

impl ReadinessHandle {
    /// Starts not ready, with `why`.
    pub fn new(why: impl Into<String>) -> Self {
        Self(Arc::new(RwLock::new(Readiness::NotReady(why.into()))))
    }

    pub fn set(&self, readiness: Readiness) {
        *self.0.write().expect("readiness lock") = readiness;
    }

    pub fn get(&self) -> Readiness {
        self.0.read().expect("readiness lock").clone()
    }
}

/// Routes for the admin endpoints; merge them into a server's router or serve them alone.
pub fn router<S: Clone + Send + Sync + 'static>(
    registry: Arc<Registry>,
    readiness: ReadinessHandle,
) -> Router<S> {
    let live = get(|| async { "ok" });
    let ready = get(move || {
        let readiness = readiness.clone();
        async move {
            match readiness.get() {
                Readiness::Ready => (StatusCode::OK, "ok".to_owned()),
                Readiness::Degraded(why) => (StatusCode::OK, format!("degraded: {why}")),
                Readiness::NotReady(why) => {
                    (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}"))
                }
            }
        }
    });
    let metrics = get(move || {
        let registry = registry.clone();
        async move { encode_metrics(&registry) }
    });
    Router::new()
        .route("/healthz", live.clone())
        .route("/livez", live.clone())
        .route("/live", live)
        .route("/readyz", ready.clone())
        .route("/ready", ready)
        .route("/metrics", metrics)
}

fn encode_metrics(registry: &Registry) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {err}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt as _;

    use super::*;

    async fn get_path(app: &Router, path: &str) -> (StatusCode, String) {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readiness_follows_the_handle_and_metrics_are_served() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("nsh_test_events", "Events seen", counter.clone());
        counter.inc();
        let readiness = ReadinessHandle::new("starting");
        let app: Router = router(Arc::new(registry), readiness.clone());

        assert_eq!(
            get_path(&app, "/healthz").await,
            (StatusCode::OK, "ok".into())
        );
        assert_eq!(
            get_path(&app, "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: starting".into()
            )
        );
        readiness.set(Readiness::Degraded("redis down".into()));
        assert_eq!(
            get_path(&app, "/ready").await,
            (StatusCode::OK, "degraded: redis down".into())
        );
        readiness.set(Readiness::Ready);
        assert_eq!(
            get_path(&app, "/readyz").await,
            (StatusCode::OK, "ok".into())
        );

        let (status, metrics) = get_path(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(metrics.contains("nsh_test_events_total 1"), "{metrics}");
    }
}
