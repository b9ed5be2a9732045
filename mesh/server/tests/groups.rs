//! group:join, group:leave, group:list and group:members, and the token's `groups` claim.

mod common;

use common::TestMesh;
use nsh_mesh_transport::wire::event;
use serde_json::json;

#[tokio::test]
async fn join_leave_list_and_members() {
    let mesh = TestMesh::start().await;
    let ann = mesh.connect("alpha", "ann", &["ops", "dev"]).await;
    let ben = mesh.connect("alpha", "ben", &["*"]).await;

    assert_eq!(
        ann.call(event::GROUP_JOIN, json!({ "group": "ops" })).await,
        json!({ "ok": true, "group": "ops", "members": ["ann"] })
    );
    assert_eq!(
        ben.call(event::GROUP_JOIN, json!({ "group": "ops" })).await["members"],
        json!(["ann", "ben"])
    );
    ben.call(event::GROUP_JOIN, json!({ "group": "dev" })).await;

    assert_eq!(
        ann.call(event::GROUP_LIST, json!({})).await,
        json!({ "groups": [{ "name": "dev", "members": 1 }, { "name": "ops", "members": 2 }] })
    );
    assert_eq!(
        ann.call(event::GROUP_MEMBERS, json!({ "group": "ops" }))
            .await["members"],
        json!(["ann", "ben"])
    );

    assert_eq!(
        ann.call(event::GROUP_LEAVE, json!({ "group": "ops" }))
            .await,
        json!({ "ok": true, "group": "ops", "members": ["ben"] })
    );
    // Leaving twice is harmless.
    assert_eq!(
        ann.call(event::GROUP_LEAVE, json!({ "group": "ops" }))
            .await["ok"],
        true
    );
    assert_eq!(
        ann.call(event::GROUP_MEMBERS, json!({ "group": "nobody-here" }))
            .await["members"],
        json!([])
    );
}

#[tokio::test]
async fn joining_a_group_the_token_does_not_allow_is_forbidden() {
    let mesh = TestMesh::start().await;
    let ann = mesh.connect("alpha", "ann", &["ops"]).await;
    let refused = ann
        .call(event::GROUP_JOIN, json!({ "group": "finance" }))
        .await;
    assert_eq!(refused["ok"], false);
    assert_eq!(refused["group"], "finance");
    assert_eq!(refused["error"]["code"], "forbidden");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("groups"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_new_connection_of_a_member_receives_group_messages_too() {
    let mesh = TestMesh::start().await;
    let ann = mesh.connect("alpha", "ann", &["*"]).await;
    let ben = mesh.connect("alpha", "ben", &["*"]).await;
    ann.call(event::GROUP_JOIN, json!({ "group": "ops" })).await;
    ben.call(event::GROUP_JOIN, json!({ "group": "ops" })).await;
    let mut ben_again = mesh.connect("alpha", "ben", &["*"]).await;
    let ack = ann
        .send(json!({ "id": common::new_id(), "group": "ops", "text": "all of you" }))
        .await;
    assert!(ack.ok, "{ack:?}");
    assert_eq!(ben_again.next_message().await.text, "all of you");
}
