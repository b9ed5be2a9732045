//! Presence: the list, and the broadcasts when an agent's first connection opens and its last
//! one closes.

mod common;

use std::time::Duration;

use common::TestMesh;
use nsh_mesh_transport::wire::{PresenceList, event};
use serde_json::json;

#[tokio::test]
async fn presence_lists_the_team_with_groups_and_since() {
    let mesh = TestMesh::start().await;
    let alice = mesh.connect("alpha", "alice", &["*"]).await;
    let _bob = mesh.connect("alpha", "bob", &[]).await;
    alice
        .call(event::GROUP_JOIN, json!({ "group": "ops" }))
        .await;
    let list: PresenceList = alice
        .client
        .request(event::PRESENCE, &json!({}))
        .await
        .unwrap();
    let ids: Vec<&str> = list.agents.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["alice", "bob"]);
    assert_eq!(list.agents[0].groups, ["ops"]);
    assert!(
        list.agents
            .iter()
            .all(|a| a.online && a.since.ends_with('Z'))
    );
}

#[tokio::test]
async fn online_and_offline_are_broadcast_once_per_agent_not_per_connection() {
    let mesh = TestMesh::start().await;
    let mut watcher = mesh.connect("alpha", "watcher", &[]).await;

    let first = mesh.connect("alpha", "bob", &[]).await;
    let change = watcher.next_presence().await;
    assert_eq!((change.agent.as_str(), change.online), ("bob", true));

    // A second connection of the same agent is not news, and neither is closing one of two.
    let second = mesh.connect("alpha", "bob", &[]).await;
    first.client.disconnect().await;
    watcher.assert_no_presence(Duration::from_millis(300)).await;

    second.client.disconnect().await;
    let change = watcher.next_presence().await;
    assert_eq!((change.agent.as_str(), change.online), ("bob", false));
}

#[tokio::test]
async fn a_dropped_connection_counts_as_offline() {
    let mesh = TestMesh::start().await;
    let mut watcher = mesh.connect("alpha", "watcher", &[]).await;
    let carol = mesh.connect("alpha", "carol", &[]).await;
    assert!(watcher.next_presence().await.online);
    // Drop without a goodbye: the socket closes under the server.
    drop(carol);
    let change = watcher.next_presence().await;
    assert_eq!((change.agent.as_str(), change.online), ("carol", false));
}

#[tokio::test]
async fn connections_dropped_at_once_never_leak_slots_or_presence() {
    let limits = nsh_mesh_server::Limits {
        max_connections_per_agent: 2,
        // This test is about slots, not about the connect rate (tests/hardening.rs).
        connect_rate: nsh_mesh_server::RateLimit {
            per_second: 1000.0,
            burst: 1000,
        },
        ..Default::default()
    };
    let mesh = TestMesh::with_limits(limits).await;
    // Connect and drop at once, many times: any leaked reservation would lock the agent out
    // (limit 2) or leave it listed online.
    for _ in 0..30 {
        drop(mesh.connect("alpha", "flaky", &[]).await);
    }
    let watcher = mesh.connect("alpha", "watcher", &[]).await;
    for _ in 0..50 {
        let list: PresenceList = watcher
            .client
            .request(event::PRESENCE, &json!({}))
            .await
            .unwrap();
        if list.agents.iter().all(|a| a.id != "flaky") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list: PresenceList = watcher
        .client
        .request(event::PRESENCE, &json!({}))
        .await
        .unwrap();
    assert!(list.agents.iter().all(|a| a.id != "flaky"), "{list:?}");
    let _one = mesh.connect("alpha", "flaky", &[]).await;
    let _two = mesh.connect("alpha", "flaky", &[]).await;
}
