//! Persistence (Redis Streams, real redis-server): offline delivery in order and once,
//! hand-over while earlier acks are out and again after a missed ack, messages that survive a
//! server restart, Redis going away and coming back, and history with
//! paging, permissions and TTL.

mod common;

use std::time::Duration;

use common::{Agent, TestMesh, new_id, token_for};
use nsh_mesh_transport::client::{Client, ClientConfig, Incoming};
use nsh_mesh_transport::wire;
use nsh_testenv::RedisServer;
use serde_json::{Value, json};

async fn send_to(from: &Agent, to: &str, text: &str) -> Value {
    serde_json::to_value(
        from.send(json!({ "id": new_id(), "to": to, "text": text }))
            .await,
    )
    .unwrap()
}

/// Polls `/readyz` until its body passes `want`; returns the body.
async fn readyz_until(mesh: &TestMesh, what: &str, want: impl Fn(&str) -> bool) -> String {
    nsh_testenv::wait_for(
        &format!("/readyz {what}"),
        Duration::from_secs(15),
        || async {
            let body = reqwest::get(format!("{}/readyz", mesh.http()))
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            Ok(want(&body).then_some(body))
        },
    )
    .await
}

#[tokio::test]
async fn an_offline_agent_gets_everything_once_in_order_when_it_connects() {
    let redis = RedisServer::start().unwrap();
    let mesh = TestMesh::with_store(&redis.url()).await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    for i in 0..5 {
        let ack = send_to(&alice, "bob", &format!("m{i}")).await;
        assert_eq!(ack["status"], "stored", "{ack}");
    }
    let mut bob = mesh.connect("alpha", "bob", &[]).await;
    for i in 0..5 {
        assert_eq!(bob.next_message().await.text, format!("m{i}"));
    }
    bob.assert_no_message(Duration::from_millis(500)).await;
    // Online now: a new message is delivered (after the stored ones), not just stored.
    let ack = send_to(&alice, "bob", "live").await;
    assert_eq!(ack["status"], "delivered", "{ack}");
    assert_eq!(bob.next_message().await.text, "live");
    // A reconnect resumes after what was acked: nothing again.
    bob.client.disconnect().await;
    let mut bob = mesh.connect("alpha", "bob", &[]).await;
    bob.assert_no_message(Duration::from_millis(700)).await;
    mesh.shutdown().await;
}

/// More expired mail than the deliverer reads at a time, then a message that is still good:
/// the expired ones are never delivered, the good one is, and the cursor ends after it.
#[tokio::test]
async fn expired_mail_is_stepped_over_and_what_follows_it_is_delivered() {
    let redis = RedisServer::start().unwrap();
    let mesh = TestMesh::with_store(&redis.url()).await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    for i in 0..70 {
        let ack = alice
            .send(json!({ "id": new_id(), "to": "bob", "text": format!("stale {i}"), "ttl": 1 }))
            .await;
        assert_eq!(serde_json::to_value(ack).unwrap()["status"], "stored");
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(send_to(&alice, "bob", "fresh").await["status"], "stored");

    let mut bob = mesh.connect("alpha", "bob", &[]).await;
    assert_eq!(bob.next_message().await.text, "fresh");
    bob.assert_no_message(Duration::from_millis(500)).await;
    bob.client.disconnect().await;
    let mut bob = mesh.connect("alpha", "bob", &[]).await;
    bob.assert_no_message(Duration::from_millis(700)).await;
    mesh.shutdown().await;
}

/// Bob's own client, acking only what the test says: the next message event received.
async fn next_message_event(
    incoming: &mut tokio::sync::mpsc::UnboundedReceiver<Incoming>,
) -> (Incoming, String) {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), incoming.recv())
            .await
            .expect("a message within 5 s")
            .expect("connection open");
        if event.event == wire::event::MESSAGE {
            let text = event.parse::<wire::Envelope>().unwrap().text;
            return (event, text);
        }
    }
}

async fn connect_acking_by_hand(
    mesh: &TestMesh,
    agent: &str,
) -> (Client, tokio::sync::mpsc::UnboundedReceiver<Incoming>) {
    Client::connect(ClientConfig::new(&mesh.url).with_token(token_for("alpha", agent, &[])))
        .await
        .unwrap()
}

/// While the recipient has not yet acked one message, the next is handed over anyway (in
/// order behind it), and each sender hears `delivered` once its own was acked.
#[tokio::test]
async fn a_message_is_handed_over_while_an_earlier_ack_is_still_out() {
    let redis = RedisServer::start().unwrap();
    let mesh = TestMesh::with_store(&redis.url()).await;
    let alice = std::sync::Arc::new(mesh.connect("alpha", "alice", &[]).await);
    let (_bob, mut incoming) = connect_acking_by_hand(&mesh, "bob").await;

    let first = tokio::spawn({
        let alice = alice.clone();
        async move { send_to(&alice, "bob", "first").await }
    });
    let (mut first_event, text) = next_message_event(&mut incoming).await;
    assert_eq!(text, "first");
    let second = tokio::spawn({
        let alice = alice.clone();
        async move { send_to(&alice, "bob", "second").await }
    });
    let (mut second_event, text) = next_message_event(&mut incoming).await;
    assert_eq!(text, "second", "handed over before the first was acked");
    assert!(
        !first.is_finished(),
        "the first is not delivered until acked"
    );

    first_event.ack(vec![json!({ "ok": true })]);
    assert_eq!(first.await.unwrap()["status"], "delivered");
    second_event.ack(vec![json!({ "ok": true })]);
    assert_eq!(second.await.unwrap()["status"], "delivered");
    mesh.shutdown().await;
}

/// A message the recipient never acks is handed over again after the ack timeout, with
/// everything that was sent after it, in order; what it acked before is not.
#[tokio::test]
async fn an_unacked_message_is_handed_over_again_with_what_followed_it() {
    let redis = RedisServer::start().unwrap();
    let mesh = TestMesh::configured(|config| {
        config.limits.ack_timeout = Duration::from_millis(300);
        config.store = Some(common::store_config(&redis.url()));
    })
    .await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    for i in 0..4 {
        assert_eq!(
            send_to(&alice, "bob", &format!("m{i}")).await["status"],
            "stored"
        );
    }
    let (bob, mut incoming) = connect_acking_by_hand(&mesh, "bob").await;
    let mut seen = vec![];
    let mut dropped_once = false;
    while seen.len() < 7 {
        let (mut event, text) = next_message_event(&mut incoming).await;
        if text == "m1" && !dropped_once {
            dropped_once = true;
        } else {
            event.ack(vec![json!({ "ok": true })]);
        }
        seen.push(text);
    }
    assert_eq!(seen, ["m0", "m1", "m2", "m3", "m1", "m2", "m3"]);
    let quiet = tokio::time::timeout(
        Duration::from_millis(1500),
        next_message_event(&mut incoming),
    )
    .await;
    assert!(quiet.is_err(), "nothing more: {quiet:?}");

    // Everything was acked by now: a reconnect gets nothing.
    bob.disconnect().await;
    let mut bob = mesh.connect("alpha", "bob", &[]).await;
    bob.assert_no_message(Duration::from_millis(700)).await;
    mesh.shutdown().await;
}

#[tokio::test]
async fn stored_messages_survive_a_server_restart() {
    let redis = RedisServer::start().unwrap();
    let first = TestMesh::with_store(&redis.url()).await;
    let alice = first.connect("alpha", "alice", &[]).await;
    for text in ["one", "two", "three"] {
        assert_eq!(send_to(&alice, "bob", text).await["status"], "stored");
    }
    first.shutdown().await;

    let second = TestMesh::with_store(&redis.url()).await;
    let mut bob = second.connect("alpha", "bob", &[]).await;
    for text in ["one", "two", "three"] {
        assert_eq!(bob.next_message().await.text, text);
    }
    second.shutdown().await;
}

#[tokio::test]
async fn redis_going_away_degrades_then_recovers_without_losing_what_was_stored() {
    let mut redis = RedisServer::start_durable().unwrap();
    let mesh = TestMesh::with_store(&redis.url()).await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let mut bob = mesh.connect("alpha", "bob", &[]).await;
    assert_eq!(
        send_to(&alice, "carol", "kept before").await["status"],
        "stored"
    );

    redis.stop();
    // Live traffic keeps working; what would need the store gets a clear error, fast.
    let started = std::time::Instant::now();
    let ack = send_to(&alice, "bob", "live while down").await;
    assert_eq!(ack["status"], "delivered", "{ack}");
    assert_eq!(bob.next_message().await.text, "live while down");
    let ack = send_to(&alice, "carol", "lost?").await;
    assert_eq!(ack["error"]["code"], "unavailable", "{ack}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no hang: {:?}",
        started.elapsed()
    );
    let degraded = readyz_until(&mesh, "degraded", |body| body.starts_with("degraded:")).await;
    assert!(degraded.contains("Redis"), "{degraded}");

    redis.start_again().unwrap();
    readyz_until(&mesh, "ok again", |body| body == "ok").await;
    assert_eq!(
        send_to(&alice, "carol", "kept after").await["status"],
        "stored"
    );
    let mut carol = mesh.connect("alpha", "carol", &[]).await;
    assert_eq!(carol.next_message().await.text, "kept before");
    assert_eq!(carol.next_message().await.text, "kept after");
    carol.assert_no_message(Duration::from_millis(500)).await;
    mesh.shutdown().await;
}

#[tokio::test]
async fn history_pages_back_respects_permissions_and_drops_expired_messages() {
    let redis = RedisServer::start().unwrap();
    let mesh = TestMesh::with_store(&redis.url()).await;
    let alice = mesh.connect("alpha", "alice", &["ops"]).await;
    let bob = mesh.connect("alpha", "bob", &["ops"]).await;
    for agent in [&alice, &bob] {
        agent.call("group:join", json!({ "group": "ops" })).await;
    }
    for i in 0..5 {
        alice
            .send(json!({ "id": new_id(), "group": "ops", "text": format!("g{i}") }))
            .await;
    }
    // A message whose ttl runs out is never returned.
    alice
        .send(json!({ "id": new_id(), "to": "bob", "text": "short-lived", "ttl": 1 }))
        .await;
    alice
        .send(json!({ "id": new_id(), "to": "bob", "text": "durable" }))
        .await;

    let page = bob
        .call("history", json!({ "group": "ops", "limit": 3 }))
        .await;
    let texts = |page: &Value| -> Vec<String> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        texts(&page),
        ["g2", "g3", "g4"],
        "the newest 3, oldest first"
    );
    let oldest = page["messages"][0]["seq"].as_str().unwrap().to_owned();
    let before = bob
        .call(
            "history",
            json!({ "group": "ops", "limit": 3, "before": oldest }),
        )
        .await;
    assert_eq!(texts(&before), ["g0", "g1"]);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let direct = bob.call("history", json!({ "with": "alice" })).await;
    assert_eq!(texts(&direct), ["durable"]);

    // Only what the caller may see: another team, a group its token does not allow.
    let mallory = Agent::connect(&mesh.url, &token_for("beta", "mallory", &["*"]))
        .await
        .unwrap();
    let theirs = mallory.call("history", json!({ "with": "alice" })).await;
    assert_eq!(
        texts(&theirs),
        Vec::<String>::new(),
        "team beta sees nothing of alpha"
    );
    let carol = mesh.connect("alpha", "carol", &["dev"]).await;
    let refused = carol.call("history", json!({ "group": "ops" })).await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    let bad = carol
        .call("history", json!({ "group": "ops", "with": "bob" }))
        .await;
    assert_eq!(bad["error"]["code"], "invalid", "{bad}");
    mesh.shutdown().await;
}

#[tokio::test]
async fn without_persistence_history_says_why() {
    let mesh = TestMesh::start().await;
    let alice = mesh.connect("alpha", "alice", &["ops"]).await;
    let answer = alice.call("history", json!({ "group": "ops" })).await;
    assert_eq!(answer["error"]["code"], "unavailable");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--persistence")
    );
    mesh.shutdown().await;
}
