//! The mesh goes away mid-session: the mesh-client says so, reconnects by itself with backoff
//! when it returns, re-joins its groups, and keeps working.

mod common;

use std::time::Duration;

use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_restarted_mesh_is_rejoined_with_groups_and_traffic_resumes() {
    let mut mesh = common::MeshProcess::start().await;
    let inbox = mesh.path("inbox");
    let alice = common::mcp_client(
        &common::client_args(&mesh.url(), &mesh.token_file("alice", &["ops"]), &inbox),
        &mesh.path("alice.log"),
    )
    .await;
    let bob = common::mcp_client(
        &common::client_args(&mesh.url(), &mesh.token_file("bob", &["ops"]), &inbox),
        &mesh.path("bob.log"),
    )
    .await;
    for agent in [&alice, &bob] {
        nsh_testenv::wait_for("the client to join ops", WAIT, || async move {
            let (failed, value) =
                common::call(agent, "mesh_group_join", json!({ "group": "ops" })).await;
            Ok((!failed).then_some(value))
        })
        .await;
    }

    mesh.kill();
    let down = nsh_testenv::wait_for("alice to notice the mesh is gone", WAIT, || async {
        let (_, presence) = common::call(&alice, "mesh_presence", json!({})).await;
        Ok((presence["connection"]["state"] == "disconnected").then_some(presence))
    })
    .await;
    assert!(down["connection"]["reason"].is_string(), "{down}");
    assert!(down["connection"]["retry_in_ms"].is_u64(), "{down}");
    let (failed, error) =
        common::call(&alice, "mesh_send", json!({ "to": "bob", "text": "lost?" })).await;
    assert!(failed);
    assert_eq!(error["error"]["code"], "not_connected", "{error}");

    mesh.start_again().await;
    // Both reconnect (backoff is capped at 10 s) and re-join ops without being asked.
    let members = nsh_testenv::wait_for("both agents back in ops", WAIT, || async {
        let (failed, value) =
            common::call(&alice, "mesh_group_members", json!({ "group": "ops" })).await;
        Ok((!failed && value["members"] == json!(["alice", "bob"])).then_some(value))
    })
    .await;
    assert_eq!(members["ok"], true);
    let (_, presence) = common::call(&alice, "mesh_presence", json!({})).await;
    assert_eq!(presence["connection"]["state"], "connected");
    assert!(
        presence["connection"]["attempt"].as_u64().unwrap() > 1,
        "{presence}"
    );
    assert_eq!(presence["you"]["groups"], json!(["ops"]));

    let (failed, sent) = common::call(
        &alice,
        "mesh_send",
        json!({ "group": "ops", "text": "back" }),
    )
    .await;
    assert!(!failed, "{sent}");
    assert_eq!(sent["delivered_to"], json!(["bob"]));
    let (_, inbox) = common::call(&bob, "mesh_inbox", json!({})).await;
    assert_eq!(inbox["messages"][0]["text"], "back");
    assert!(
        std::fs::read_to_string(mesh.path("alice.log"))
            .unwrap()
            .contains("re-joined group"),
        "the log says what happened"
    );
    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
}
