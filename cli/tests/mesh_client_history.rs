//! With a persistent mesh (`--redis --persistence`, real redis-server), the mesh-client gets
//! mail sent while it was not running, and `mesh_history` reads a conversation back.

mod common;

use std::time::Duration;

use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn mail_waits_for_an_agent_that_is_not_running_and_history_reads_it_back() {
    let redis = nsh_testenv::RedisServer::start().unwrap();
    let mesh = common::MeshProcess::start_with(&["--redis", &redis.url(), "--persistence"]).await;
    let inbox = mesh.path("inbox");
    let alice = common::mcp_client(
        &common::client_args(&mesh.url(), &mesh.token_file("alice", &[]), &inbox),
        &mesh.path("alice.log"),
    )
    .await;
    let sent = nsh_testenv::wait_for("alice's message to be stored", WAIT, || async {
        let (failed, sent) = common::call(
            &alice,
            "mesh_send",
            json!({ "to": "bob", "text": "while you were out" }),
        )
        .await;
        Ok((!failed).then_some(sent))
    })
    .await;
    assert_eq!(sent["status"], "stored", "bob is not running: kept for him");

    let bob = common::mcp_client(
        &common::client_args(&mesh.url(), &mesh.token_file("bob", &[]), &inbox),
        &mesh.path("bob.log"),
    )
    .await;
    let mail = nsh_testenv::wait_for("bob's stored mail", WAIT, || async {
        let (_, inbox) = common::call(&bob, "mesh_inbox", json!({})).await;
        Ok(inbox["messages"]
            .as_array()
            .filter(|m| !m.is_empty())
            .cloned())
    })
    .await;
    assert_eq!(mail[0]["text"], "while you were out");

    let (failed, history) = common::call(&bob, "mesh_history", json!({ "with": "alice" })).await;
    assert!(!failed, "{history}");
    assert_eq!(history["messages"][0]["text"], "while you were out");
    assert!(history["messages"][0]["seq"].is_string());
    let (failed, error) = common::call(
        &bob,
        "mesh_history",
        json!({ "group": "ops", "with": "alice" }),
    )
    .await;
    assert!(failed);
    assert_eq!(error["error"]["code"], "invalid", "{error}");
    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
}
