//! Team isolation: an agent never sees, reaches or lists anything of another team.

mod common;

use common::{TestMesh, new_id};
use nsh_mesh_transport::wire::{ErrorCode, event};
use serde_json::json;

#[tokio::test]
async fn teams_cannot_reach_or_see_each_other() {
    let mesh = TestMesh::start().await;
    let red = mesh.connect("alpha", "red", &["*"]).await;
    let mut blue = mesh.connect("beta", "blue", &["*"]).await;
    // Same agent id in both teams: still two different agents.
    let mut twin = mesh.connect("beta", "red", &["*"]).await;
    red.call(event::GROUP_JOIN, json!({ "group": "ops" })).await;
    blue.call(event::GROUP_JOIN, json!({ "group": "ops" }))
        .await;

    let ack = red
        .send(json!({ "id": new_id(), "to": "blue", "text": "hello other team" }))
        .await;
    assert_eq!(ack.error.map(|e| e.code), Some(ErrorCode::RecipientOffline));
    let ack = red
        .send(json!({ "id": new_id(), "group": "ops", "text": "to my ops only" }))
        .await;
    assert_eq!(
        ack.error.map(|e| e.code),
        Some(ErrorCode::RecipientOffline),
        "alpha's ops has no other member"
    );
    blue.assert_no_message(std::time::Duration::from_millis(300))
        .await;
    twin.assert_no_message(std::time::Duration::from_millis(10))
        .await;

    let presence = red.call(event::PRESENCE, json!({})).await;
    assert_eq!(
        presence["agents"].as_array().unwrap().len(),
        1,
        "{presence}"
    );
    assert_eq!(
        red.call(event::GROUP_MEMBERS, json!({ "group": "ops" }))
            .await["members"],
        json!(["red"])
    );
    assert_eq!(
        blue.call(event::GROUP_LIST, json!({})).await,
        json!({ "groups": [{ "name": "ops", "members": 1 }] })
    );
    // beta's presence broadcasts were not seen by alpha: red only ever heard of nobody.
    drop(twin);
    blue.next_presence().await;
}
