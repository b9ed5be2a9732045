//! Connections pinned to several single-threaded runtimes (`pinned_threads`, what
//! `nsh mesh server` runs with): messages, groups and presence cross between connections on
//! different threads, and the threads stop with the server.

mod common;

use std::time::Duration;

use common::{TestMesh, new_id};
use nsh_mesh_transport::wire::{SendStatus, event};
use serde_json::json;

/// The names of this process's threads (from /proc), to see the shard threads come and go.
fn shard_threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with("shard-"))
        .collect();
    names.sort();
    names
}

/// The shard threads once `done` holds of them, or as they are at the deadline.
async fn threads_within(wait: Duration, done: impl Fn(&Vec<String>) -> bool) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let names = shard_threads();
        if done(&names) || tokio::time::Instant::now() >= deadline {
            return names;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// A single-threaded test runtime, as `nsh mesh server` runs: it is shard 0.
#[tokio::test]
async fn agents_on_different_threads_message_each_other_and_the_threads_stop_with_the_server() {
    // Batching after every message, so each shard thread also takes the path that waits.
    let mesh = TestMesh::configured(|config| {
        config.pinned_threads = 3;
        config.batching = nsh_admin::shards::Batching {
            wait: Duration::from_micros(200),
            min_messages: 1,
        };
    })
    .await;
    // A new thread names itself once it runs.
    assert_eq!(
        threads_within(Duration::from_secs(5), |names| names.len() == 2).await,
        ["shard-1", "shard-2"]
    );

    // Six agents, spread round robin over the three runtimes.
    let names = ["ann", "ben", "cat", "dan", "eve", "fay"];
    let mut agents = Vec::new();
    for name in names {
        agents.push(mesh.connect("alpha", name, &["all"]).await);
    }

    // Every agent sends to every other: whichever threads the two are on, it is delivered.
    for (from, sender) in names.iter().zip(&agents) {
        for to in names.iter().filter(|to| *to != from) {
            let ack = sender
                .send(json!({ "id": new_id(), "to": to, "text": format!("{from} to {to}") }))
                .await;
            assert_eq!(
                ack.status,
                Some(SendStatus::Delivered),
                "{from} -> {to}: {ack:?}"
            );
        }
    }
    for (to, receiver) in names.iter().zip(agents.iter_mut()) {
        let mut got: Vec<String> = Vec::new();
        for _ in 0..names.len() - 1 {
            got.push(receiver.next_message().await.text);
        }
        got.sort();
        let mut expected: Vec<String> = names
            .iter()
            .filter(|from| *from != to)
            .map(|from| format!("{from} to {to}"))
            .collect();
        expected.sort();
        assert_eq!(got, expected, "what {to} received");
    }

    // A group message reaches the five others and names them all.
    for agent in &agents {
        let joined = agent
            .call(event::GROUP_JOIN, json!({ "group": "all" }))
            .await;
        assert_eq!(joined["ok"], true, "{joined}");
    }
    let ack = agents[0]
        .send(json!({ "id": new_id(), "group": "all", "text": "standup" }))
        .await;
    assert_eq!(ack.status, Some(SendStatus::Delivered), "{ack:?}");
    assert_eq!(
        ack.delivered_to.as_deref(),
        Some(&["ben", "cat", "dan", "eve", "fay"].map(str::to_owned)[..])
    );

    // Presence is one view, whichever thread answers it.
    let presence = agents[4].call(event::PRESENCE, json!({})).await;
    let mut online: Vec<&str> = presence["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    online.sort_unstable();
    assert_eq!(online, names);

    drop(agents);
    mesh.shutdown().await;
    // The server is gone, and with it its threads.
    assert_eq!(
        threads_within(Duration::from_secs(5), Vec::is_empty).await,
        Vec::<String>::new()
    );
}
