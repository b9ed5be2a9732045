//! Direct and group messages with delivery acks, offline recipients, and dedup.

mod common;

use std::time::Duration;

use common::{TestMesh, new_id};
use nsh_mesh_transport::wire::{ErrorCode, MessageKind, SendStatus, event};
use serde_json::json;

#[tokio::test]
async fn a_direct_message_is_delivered_with_server_set_sender_and_time() {
    let mesh = TestMesh::start().await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let mut bob = mesh.connect("alpha", "bob", &[]).await;
    let id = new_id();

    // The client claims to be someone else and sets a time: both are ignored.
    let ack = alice
        .send(json!({ "id": id, "to": "bob", "text": "hi bob", "metadata": { "k": 1 }, "from": "mallory", "timestamp": "1999" }))
        .await;
    assert!(ack.ok, "{ack:?}");
    assert_eq!(
        (ack.id.as_str(), ack.status),
        (id.as_str(), Some(SendStatus::Delivered))
    );

    let envelope = bob.next_message().await;
    assert_eq!(envelope.id, id);
    assert_eq!(envelope.kind, MessageKind::Direct);
    assert_eq!(
        (envelope.from.as_str(), envelope.to.as_deref()),
        ("alice", Some("bob"))
    );
    assert_eq!(envelope.text, "hi bob");
    assert_eq!(envelope.metadata, Some(json!({ "k": 1 })));
    assert!(
        envelope.timestamp.starts_with("20") && envelope.timestamp.ends_with('Z'),
        "{}",
        envelope.timestamp
    );
}

#[tokio::test]
async fn a_group_message_reaches_every_other_member_and_names_who_acked() {
    let mesh = TestMesh::start().await;
    let mut agents = Vec::new();
    for name in ["ann", "ben", "cat"] {
        let agent = mesh.connect("alpha", name, &["ops"]).await;
        let joined = agent
            .call(event::GROUP_JOIN, json!({ "group": "ops" }))
            .await;
        assert_eq!(joined["ok"], true, "{joined}");
        agents.push(agent);
    }
    let ack = agents[0]
        .send(json!({ "id": new_id(), "group": "ops", "text": "standup" }))
        .await;
    assert_eq!(ack.status, Some(SendStatus::Delivered), "{ack:?}");
    assert_eq!(
        ack.delivered_to.as_deref(),
        Some(&["ben".to_owned(), "cat".to_owned()][..])
    );
    for agent in &mut agents[1..] {
        let envelope = agent.next_message().await;
        assert_eq!(
            (
                envelope.kind,
                envelope.group.as_deref(),
                envelope.from.as_str()
            ),
            (MessageKind::Group, Some("ops"), "ann")
        );
    }
    // The sender does not get its own group message back.
    agents[0]
        .assert_no_message(Duration::from_millis(200))
        .await;
}

#[tokio::test]
async fn sending_to_a_group_requires_membership() {
    let mesh = TestMesh::start().await;
    let outsider = mesh.connect("alpha", "out", &["ops"]).await;
    let ack = outsider
        .send(json!({ "id": new_id(), "group": "ops", "text": "x" }))
        .await;
    assert_eq!(ack.error.map(|e| e.code), Some(ErrorCode::Forbidden));
}

#[tokio::test]
async fn an_absent_recipient_is_reported_offline() {
    let mesh = TestMesh::start().await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let ack = alice
        .send(json!({ "id": new_id(), "to": "nobody", "text": "hello?" }))
        .await;
    assert!(!ack.ok);
    let error = ack.error.unwrap();
    assert_eq!(error.code, ErrorCode::RecipientOffline);
    assert!(error.message.contains("nobody"), "{}", error.message);
}

#[tokio::test]
async fn a_recipient_that_never_acks_is_reported_offline_after_the_timeout() {
    let limits = nsh_mesh_server::Limits {
        ack_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let mesh = TestMesh::with_limits(limits).await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let mut mute = mesh.connect_silent("alpha", "mute").await;
    let ack = alice
        .send(json!({ "id": new_id(), "to": "mute", "text": "are you there" }))
        .await;
    assert_eq!(ack.error.map(|e| e.code), Some(ErrorCode::RecipientOffline));
    // It did arrive; it just was not acknowledged.
    assert_eq!(mute.next_message().await.text, "are you there");
}

#[tokio::test]
async fn a_resent_id_is_a_duplicate_and_is_not_delivered_twice() {
    let mesh = TestMesh::start().await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let mut bob = mesh.connect("alpha", "bob", &[]).await;
    let message = json!({ "id": new_id(), "to": "bob", "text": "once" });
    assert_eq!(
        alice.send(message.clone()).await.status,
        Some(SendStatus::Delivered)
    );
    let again = alice.send(message.clone()).await;
    assert_eq!(
        (again.ok, again.status),
        (true, Some(SendStatus::Duplicate))
    );
    assert_eq!(bob.next_message().await.text, "once");
    bob.assert_no_message(Duration::from_millis(300)).await;

    // Dedup is per sender: another agent may use the same id.
    let carol = mesh.connect("alpha", "carol", &[]).await;
    assert_eq!(
        carol.send(message).await.status,
        Some(SendStatus::Delivered)
    );
}

#[tokio::test]
async fn a_failed_send_can_be_retried_with_the_same_id() {
    let mesh = TestMesh::start().await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let message = json!({ "id": new_id(), "to": "late", "text": "retry me" });
    assert_eq!(
        alice.send(message.clone()).await.error.map(|e| e.code),
        Some(ErrorCode::RecipientOffline)
    );
    let mut late = mesh.connect("alpha", "late", &[]).await;
    assert_eq!(
        alice.send(message).await.status,
        Some(SendStatus::Delivered)
    );
    assert_eq!(late.next_message().await.text, "retry me");
}

#[tokio::test]
async fn every_connection_of_a_recipient_gets_the_message() {
    let mesh = TestMesh::start().await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let mut bob_laptop = mesh.connect("alpha", "bob", &[]).await;
    let mut bob_pod = mesh.connect("alpha", "bob", &[]).await;
    assert_eq!(
        alice
            .send(json!({ "id": new_id(), "to": "bob", "text": "both" }))
            .await
            .status,
        Some(SendStatus::Delivered)
    );
    assert_eq!(bob_laptop.next_message().await.text, "both");
    assert_eq!(bob_pod.next_message().await.text, "both");
}
