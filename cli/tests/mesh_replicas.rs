//! Several `nsh mesh server` processes on one real Redis (`--redis`) form one mesh: direct and
//! group messages with acks, presence and groups whichever replica each agent is on, dedup
//! across replicas, a replica killed with SIGKILL, and persistence across replicas.

mod common;

use std::time::Duration;

use common::MeshProcess;
use nsh_testenv::RedisServer;
use nsh_testenv::mesh_agent::{Agent, new_id};
use serde_json::{Value, json};

async fn replicas(redis: &RedisServer, count: usize, extra: &[&str]) -> Vec<MeshProcess> {
    let url = redis.url();
    let mut flags = vec!["--redis", url.as_str(), "--ack-timeout", "3s"];
    flags.extend_from_slice(extra);
    let first = MeshProcess::start_with(&flags).await;
    let mut all = vec![];
    for _ in 1..count {
        all.push(MeshProcess::replica_of(&first, &flags).await);
    }
    all.insert(0, first);
    all
}

async fn agent(on: &MeshProcess, name: &str, groups: &[&str]) -> Agent {
    Agent::connect(&on.url(), &on.token(name, groups, 3600))
        .await
        .unwrap()
}

async fn send(from: &Agent, payload: Value) -> Value {
    serde_json::to_value(from.send(payload).await).unwrap()
}

/// Waits until `agent`'s view of the team (through its own replica) passes `want`.
async fn until_seen(agent: &Agent, event: &str, payload: Value, want: impl Fn(&Value) -> bool) {
    nsh_testenv::wait_for(
        &format!("`{event}` {payload} to settle across replicas"),
        Duration::from_secs(10),
        || async {
            let answer = agent.call(event, payload.clone()).await;
            Ok(want(&answer).then_some(()))
        },
    )
    .await;
}

/// Joins every one of `members` to `group` through its own replica, then waits until the
/// first sees the group's members as `expected` (sorted names).
async fn join_everyone(members: &[&Agent], group: &str, expected: &[&str]) {
    for member in members {
        let joined = member.call("group:join", json!({ "group": group })).await;
        assert_eq!(joined["ok"], true, "{joined}");
    }
    until_seen(
        members[0],
        "group:members",
        json!({ "group": group }),
        |m| names(m, "members") == expected,
    )
    .await;
}

/// Sends `payload` from `from` and checks it is answered as a duplicate.
async fn assert_duplicate(from: &Agent, payload: Value) {
    let ack = send(from, payload).await;
    assert_eq!(ack["status"], "duplicate", "{ack}");
}

fn names(list: &Value, key: &str) -> Vec<String> {
    let mut names: Vec<String> = list[key]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|v| v.get("id").unwrap_or(v).as_str().unwrap_or("").to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn agents_on_different_replicas_exchange_direct_and_group_messages_with_acks() {
    let redis = RedisServer::start().unwrap();
    let mesh = replicas(&redis, 3, &[]).await;
    let alice = agent(&mesh[0], "alice", &["ops"]).await;
    let mut bob = agent(&mesh[1], "bob", &["ops"]).await;
    let mut carol = agent(&mesh[2], "carol", &["ops"]).await;

    // Presence: every replica lists the whole team.
    until_seen(&carol, "presence", json!({}), |p| {
        names(p, "agents") == ["alice", "bob", "carol"]
    })
    .await;

    // Direct, replica 0 -> replica 1: delivered means bob's client acked it.
    let id = new_id();
    let ack = send(&alice, json!({ "id": id, "to": "bob", "text": "hi bob" })).await;
    assert_eq!(ack["status"], "delivered", "{ack}");
    let got = bob.next_message().await;
    assert_eq!((got.text.as_str(), got.from.as_str()), ("hi bob", "alice"));

    // Groups: joins through three replicas, one membership list.
    join_everyone(&[&alice, &bob, &carol], "ops", &["alice", "bob", "carol"]).await;
    let listed = bob.call("group:list", json!({})).await;
    assert_eq!(listed["groups"], json!([{ "name": "ops", "members": 3 }]));
    let ack = send(
        &alice,
        json!({ "id": new_id(), "group": "ops", "text": "standup" }),
    )
    .await;
    assert_eq!(ack["status"], "delivered", "{ack}");
    assert_eq!(ack["delivered_to"], json!(["bob", "carol"]), "{ack}");
    assert_eq!(bob.next_message().await.text, "standup");
    assert_eq!(carol.next_message().await.text, "standup");

    // Leaving through one replica is seen by the others.
    carol.call("group:leave", json!({ "group": "ops" })).await;
    until_seen(&bob, "group:members", json!({ "group": "ops" }), |m| {
        names(m, "members") == ["alice", "bob"]
    })
    .await;
    send(
        &alice,
        json!({ "id": new_id(), "group": "ops", "text": "after" }),
    )
    .await;
    assert_eq!(bob.next_message().await.text, "after");
    carol.assert_no_message(Duration::from_millis(500)).await;

    // A retry through another replica (the client reconnected elsewhere) is still a duplicate.
    let alice_again = agent(&mesh[2], "alice", &["ops"]).await;
    assert_duplicate(
        &alice_again,
        json!({ "id": id, "to": "bob", "text": "hi bob" }),
    )
    .await;
    bob.assert_no_message(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_replica_killed_with_sigkill_takes_its_agents_offline_and_the_rest_carry_on() {
    let redis = RedisServer::start().unwrap();
    let mut mesh = replicas(&redis, 3, &[]).await;
    let mut alice = agent(&mesh[0], "alice", &[]).await;
    let mut bob = agent(&mesh[1], "bob", &[]).await;
    let _carol = agent(&mesh[2], "carol", &[]).await;
    until_seen(&alice, "presence", json!({}), |p| {
        names(p, "agents") == ["alice", "bob", "carol"]
    })
    .await;
    // Alice hears the others come online, wherever they connected.
    let mut online = vec![];
    while let Some(change) = alice.presence_within(Duration::from_secs(2)).await {
        online.push((change.agent, change.online));
    }
    online.sort();
    assert_eq!(
        online,
        [("bob".to_owned(), true), ("carol".to_owned(), true)]
    );

    mesh[2].kill();
    // No goodbye came from the dead replica: its heartbeat expires and a survivor reaps it.
    let change = alice
        .presence_within(Duration::from_secs(20))
        .await
        .expect("carol announced offline after her replica died");
    assert_eq!((change.agent.as_str(), change.online), ("carol", false));
    until_seen(&bob, "presence", json!({}), |p| {
        names(p, "agents") == ["alice", "bob"]
    })
    .await;
    let ack = send(
        &alice,
        json!({ "id": new_id(), "to": "carol", "text": "there?" }),
    )
    .await;
    assert_eq!(ack["error"]["code"], "recipient_offline", "{ack}");
    let ack = send(
        &alice,
        json!({ "id": new_id(), "to": "bob", "text": "still here" }),
    )
    .await;
    assert_eq!(ack["status"], "delivered", "{ack}");
    assert_eq!(bob.next_message().await.text, "still here");

    // Carol reconnects to a surviving replica: online again, reachable again.
    let mut carol = agent(&mesh[1], "carol", &[]).await;
    let change = alice.presence_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!((change.agent.as_str(), change.online), ("carol", true));
    let ack = send(
        &alice,
        json!({ "id": new_id(), "to": "carol", "text": "welcome back" }),
    )
    .await;
    assert_eq!(ack["status"], "delivered", "{ack}");
    assert_eq!(carol.next_message().await.text, "welcome back");
}

#[tokio::test]
async fn stored_mail_crosses_replicas_in_order_and_survives_restarting_them_all() {
    let redis = RedisServer::start().unwrap();
    let mut mesh = replicas(&redis, 2, &["--persistence"]).await;
    let alice = agent(&mesh[0], "alice", &[]).await;
    for i in 0..5 {
        let ack = send(
            &alice,
            json!({ "id": new_id(), "to": "bob", "text": format!("m{i}") }),
        )
        .await;
        assert_eq!(ack["status"], "stored", "{ack}");
    }
    // Bob comes up on the other replica: everything, once, in order.
    let mut bob = agent(&mesh[1], "bob", &[]).await;
    for i in 0..5 {
        assert_eq!(bob.next_message().await.text, format!("m{i}"));
    }
    bob.assert_no_message(Duration::from_millis(500)).await;
    // Online on replica 1: a send through replica 0 is delivered (acked by bob's client there).
    let ack = send(
        &alice,
        json!({ "id": new_id(), "to": "bob", "text": "live" }),
    )
    .await;
    assert_eq!(ack["status"], "delivered", "{ack}");
    assert_eq!(bob.next_message().await.text, "live");
    drop(bob);

    // Mail for dave, then every replica restarts.
    for text in ["one", "two"] {
        let ack = send(
            &alice,
            json!({ "id": new_id(), "to": "dave", "text": text }),
        )
        .await;
        assert_eq!(ack["status"], "stored", "{ack}");
    }
    drop(alice);
    for replica in &mut mesh {
        replica.kill();
    }
    for replica in &mut mesh {
        replica.start_again().await;
    }
    let mut dave = agent(&mesh[1], "dave", &[]).await;
    assert_eq!(dave.next_message().await.text, "one");
    assert_eq!(dave.next_message().await.text, "two");
    dave.assert_no_message(Duration::from_millis(500)).await;
    // Bob acked everything before: nothing again, whichever replica he returns to.
    let mut bob = agent(&mesh[0], "bob", &[]).await;
    bob.assert_no_message(Duration::from_millis(700)).await;
}

#[tokio::test]
async fn redis_going_away_keeps_each_replica_serving_its_own_agents_and_they_rejoin_after() {
    let mut redis = RedisServer::start_durable().unwrap();
    let mesh = replicas(&redis, 2, &[]).await;
    let alice = agent(&mesh[0], "alice", &[]).await;
    let mut bob = agent(&mesh[0], "bob", &[]).await;
    let mut carol = agent(&mesh[1], "carol", &[]).await;
    until_seen(&alice, "presence", json!({}), |p| {
        names(p, "agents") == ["alice", "bob", "carol"]
    })
    .await;

    redis.stop();
    let started = std::time::Instant::now();
    // Same replica: delivered as before.
    let ack = send(
        &alice,
        json!({ "id": new_id(), "to": "bob", "text": "local" }),
    )
    .await;
    assert_eq!(ack["status"], "delivered", "{ack}");
    assert_eq!(bob.next_message().await.text, "local");
    // Across replicas: a clear answer, not a hang.
    let ack = send(
        &alice,
        json!({ "id": new_id(), "to": "carol", "text": "far" }),
    )
    .await;
    assert_eq!(ack["error"]["code"], "unavailable", "{ack}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let port = mesh[0].port;
    let degraded = nsh_testenv::wait_for("/readyz degraded", Duration::from_secs(15), || async {
        let answer = common::http_get(port, "/readyz");
        Ok(answer.filter(|(_, body)| body.starts_with("degraded:")))
    })
    .await;
    assert_eq!(
        degraded.0, 200,
        "degraded still takes traffic: {degraded:?}"
    );

    redis.start_again().unwrap();
    nsh_testenv::wait_for("/readyz ok again", Duration::from_secs(15), || async {
        Ok(common::http_get(port, "/readyz").filter(|(_, body)| body == "ok"))
    })
    .await;
    // The replicas find each other again (re-subscribed, snapshots re-sent).
    nsh_testenv::wait_for(
        "cross-replica delivery again",
        Duration::from_secs(20),
        || async {
            let ack = send(
                &alice,
                json!({ "id": new_id(), "to": "carol", "text": "back" }),
            )
            .await;
            Ok((ack["status"] == "delivered").then_some(()))
        },
    )
    .await;
    assert_eq!(carol.next_message().await.text, "back");
}

/// What users run (`--redis … --persistence`): every send is recorded once in the replicas'
/// shared dedup, so a live delivery is never called a duplicate of itself. One replica and two,
/// direct and group.
#[tokio::test]
async fn with_redis_and_persistence_direct_and_group_messages_are_delivered_live() {
    for count in [1, 2] {
        let redis = RedisServer::start().unwrap();
        let mesh = replicas(&redis, count, &["--persistence"]).await;
        let alice = agent(&mesh[0], "alice", &["ops"]).await;
        let mut bob = agent(&mesh[count - 1], "bob", &["ops"]).await;
        join_everyone(&[&alice, &bob], "ops", &["alice", "bob"]).await;

        for round in 0..3 {
            let text = format!("group {round} on {count} replica(s)");
            let ack = send(
                &alice,
                json!({ "id": new_id(), "group": "ops", "text": text }),
            )
            .await;
            assert_eq!(ack["status"], "delivered", "{count} replica(s): {ack}");
            assert_eq!(ack["delivered_to"], json!(["bob"]), "{ack}");
            assert_eq!(bob.next_message().await.text, text);

            let text = format!("direct {round} on {count} replica(s)");
            let ack = send(&alice, json!({ "id": new_id(), "to": "bob", "text": text })).await;
            assert_eq!(ack["status"], "delivered", "{count} replica(s): {ack}");
            assert_eq!(bob.next_message().await.text, text);
        }
        // A retry of a delivered group message is the one thing that is a duplicate.
        let id = new_id();
        let first = send(&alice, json!({ "id": id, "group": "ops", "text": "once" })).await;
        assert_eq!(first["status"], "delivered", "{first}");
        let retry = send(&alice, json!({ "id": id, "group": "ops", "text": "once" })).await;
        assert_eq!(retry["status"], "duplicate", "{retry}");
        assert_eq!(bob.next_message().await.text, "once");
        bob.assert_no_message(Duration::from_millis(500)).await;
    }
}

/// With persistence the message id's record is written with the message: a retry through
/// another replica (the client reconnected elsewhere) is a duplicate and is not kept twice,
/// whether the first send was stored for an offline agent or delivered to a group.
#[tokio::test]
async fn with_persistence_a_retry_through_another_replica_is_a_duplicate_kept_once() {
    let redis = RedisServer::start().unwrap();
    let mesh = replicas(&redis, 2, &["--persistence"]).await;
    let alice = agent(&mesh[0], "alice", &["ops"]).await;
    let mut bob = agent(&mesh[1], "bob", &["ops"]).await;
    join_everyone(&[&alice, &bob], "ops", &["alice", "bob"]).await;

    let direct = new_id();
    let first = send(
        &alice,
        json!({ "id": direct, "to": "dave", "text": "for dave" }),
    )
    .await;
    assert_eq!(first["status"], "stored", "{first}");
    let group = new_id();
    let first = send(
        &alice,
        json!({ "id": group, "group": "ops", "text": "for ops" }),
    )
    .await;
    assert_eq!(first["status"], "delivered", "{first}");
    assert_eq!(bob.next_message().await.text, "for ops");

    let alice_again = agent(&mesh[1], "alice", &["ops"]).await;
    assert_duplicate(
        &alice_again,
        json!({ "id": direct, "to": "dave", "text": "for dave" }),
    )
    .await;
    assert_duplicate(
        &alice_again,
        json!({ "id": group, "group": "ops", "text": "for ops" }),
    )
    .await;
    bob.assert_no_message(Duration::from_millis(500)).await;

    // Kept once: dave gets it once, and the group's history holds it once.
    let mut dave = agent(&mesh[0], "dave", &[]).await;
    assert_eq!(dave.next_message().await.text, "for dave");
    dave.assert_no_message(Duration::from_millis(500)).await;
    let history = bob.call("history", json!({ "group": "ops" })).await;
    let kept: Vec<&Value> = history["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{history}"))
        .iter()
        .filter(|m| m["id"] == group)
        .collect();
    assert_eq!(kept.len(), 1, "{history}");
}
