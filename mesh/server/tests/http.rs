//! The HTTP side: health, readiness, metrics, and graceful shutdown.

mod common;

use std::time::Duration;

use common::{TestMesh, new_id};
use serde_json::json;

#[tokio::test]
async fn health_readiness_and_metrics_are_served_on_the_mesh_port() {
    let mesh = TestMesh::start().await;
    let http = reqwest::Client::new();
    for (path, body) in [("/healthz", "ok"), ("/readyz", "ok")] {
        let response = http
            .get(format!("{}{path}", mesh.http()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), body);
    }
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let _bob = mesh.connect("alpha", "bob", &[]).await;
    alice
        .send(json!({ "id": new_id(), "to": "bob", "text": "count me" }))
        .await;
    alice
        .send(json!({ "id": new_id(), "to": "nobody", "text": "and me" }))
        .await;
    let _ = mesh.try_connect("garbage").await;

    let metrics = http
        .get(format!("{}/metrics", mesh.http()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "nsh_mesh_connections 2",
        r#"nsh_mesh_messages_total{outcome="delivered"} 1"#,
        r#"nsh_mesh_messages_total{outcome="recipient_offline"} 1"#,
        r#"nsh_mesh_refused_connections_total{reason="invalid"} 1"#,
        "nsh_mesh_send_seconds_count 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing `{line}` in\n{metrics}"
        );
    }
}

#[tokio::test]
async fn shutdown_disconnects_clients_and_returns() {
    let mesh = TestMesh::start().await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let url = mesh.http();
    mesh.shutdown().await;
    tokio::time::timeout(Duration::from_secs(5), alice.client.closed())
        .await
        .expect("client disconnected by shutdown");
    // Nothing listens any more.
    assert!(reqwest::get(format!("{url}/healthz")).await.is_err());
}
