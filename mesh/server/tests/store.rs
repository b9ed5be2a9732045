//! The message store against a real redis-server, below the Socket.io layer: what two replicas
//! writing the same keys at once can do to a recipient's cursor and to a message id's record,
//! and what an append publishes.

use std::time::Duration;

use futures_util::StreamExt as _;
use nsh_mesh_server::store::{Appended, DedupRecord, Publish, Store, StoreConfig};
use nsh_mesh_transport::wire::{Envelope, MessageKind};
use nsh_testenv::RedisServer;

fn store(redis: &RedisServer) -> Store {
    Store::new(StoreConfig {
        url: redis.url(),
        retention: Duration::from_secs(3600),
        max_len: 1000,
    })
    .unwrap()
}

fn envelope(id: &str) -> Envelope {
    Envelope {
        id: id.to_owned(),
        kind: MessageKind::Direct,
        from: "alice".to_owned(),
        to: Some("bob".to_owned()),
        group: None,
        text: format!("text of {id}"),
        metadata: None,
        timestamp: "2026-12-04T00:00:00Z".to_owned(),
        ttl: None,
    }
}

async fn append(store: &Store, id: &str, record: Option<&DedupRecord>) -> Appended {
    store
        .append_direct("alpha", "bob", &envelope(id), record, None)
        .await
        .unwrap()
}

fn entry(appended: Appended) -> String {
    match appended {
        Appended::Entry(entry) => entry,
        other => panic!("expected a new entry, got {other:?}"),
    }
}

fn ids(inbox: &nsh_mesh_server::store::Inbox) -> Vec<&str> {
    inbox
        .messages
        .iter()
        .map(|m| m.envelope.id.as_str())
        .collect()
}

/// Replica B's deliverer acked further than replica A's knew: A's late write of an older ack
/// does not move the cursor back, and A reads on after the newer one.
#[tokio::test]
async fn the_cursor_never_moves_back_when_two_deliverers_race() {
    let redis = RedisServer::start().unwrap();
    let (a, b) = (store(&redis), store(&redis));
    let mut entries = vec![];
    for id in ["m1", "m2", "m3", "m4"] {
        entries.push(entry(append(&a, id, None).await));
    }

    let mut a_cursor = None;
    let read = a
        .advance_and_read("alpha", "bob", &mut a_cursor, None, None, 64)
        .await
        .unwrap();
    assert_eq!(ids(&read), ["m1", "m2", "m3", "m4"]);

    b.mark_delivered("alpha", "bob", &entries[2]).await.unwrap();
    let read = a
        .advance_and_read("alpha", "bob", &mut a_cursor, Some(&entries[0]), None, 64)
        .await
        .unwrap();
    assert_eq!(ids(&read), ["m4"], "m2 and m3 were acked through B");
    assert!(read.skipped_acked);
    assert_eq!(a_cursor.as_deref(), Some(entries[2].as_str()));

    // A fresh reader (a reconnect anywhere) starts after B's ack, not A's.
    let read = b
        .advance_and_read("alpha", "bob", &mut None, None, None, 64)
        .await
        .unwrap();
    assert_eq!(ids(&read), ["m4"]);
    assert!(!read.skipped_acked, "it starts at the stored cursor");
}

/// A deliverer reads on after what it handed over while their acks are out; the cursor it
/// records is still only what was acked, so a reconnect gets the rest again.
#[tokio::test]
async fn reads_go_on_after_what_was_sent_and_the_cursor_stays_at_what_was_acked() {
    let redis = RedisServer::start().unwrap();
    let a = store(&redis);
    let mut entries = vec![];
    for id in ["m1", "m2", "m3", "m4"] {
        entries.push(entry(append(&a, id, None).await));
    }

    let mut cursor = None;
    let read = a
        .advance_and_read("alpha", "bob", &mut cursor, None, Some(&entries[1]), 64)
        .await
        .unwrap();
    assert_eq!(
        ids(&read),
        ["m3", "m4"],
        "m1 and m2 were handed over already"
    );
    assert!(!read.skipped_acked);
    assert_eq!(cursor.as_deref(), Some("0-0"), "nothing acked yet");

    let read = a
        .advance_and_read(
            "alpha",
            "bob",
            &mut cursor,
            Some(&entries[0]),
            Some(&entries[3]),
            64,
        )
        .await
        .unwrap();
    assert!(ids(&read).is_empty(), "everything was handed over");
    assert_eq!(cursor.as_deref(), Some(entries[0].as_str()));

    let read = a
        .advance_and_read("alpha", "bob", &mut None, None, None, 64)
        .await
        .unwrap();
    assert_eq!(ids(&read), ["m2", "m3", "m4"], "only m1 was acked");
}

/// A message id kept once through one replica is not kept again through another: the second
/// append answers with the record and leaves the streams as they were.
#[tokio::test]
async fn a_repeated_id_is_answered_from_its_record_and_not_kept_twice() {
    let redis = RedisServer::start().unwrap();
    let (a, b) = (store(&redis), store(&redis));
    let record = |id: &str| DedupRecord {
        key: format!("nsh:alpha:seen:alice:{id}"),
        value: "done",
        lifetime: Duration::from_secs(60),
    };
    entry(append(&a, "once", Some(&record("once"))).await);
    assert_eq!(
        append(&b, "once", Some(&record("once"))).await,
        Appended::AlreadyRecorded("done".to_owned())
    );
    entry(append(&b, "next", Some(&record("next"))).await);

    let read = b
        .advance_and_read("alpha", "bob", &mut None, None, None, 64)
        .await
        .unwrap();
    assert_eq!(ids(&read), ["once", "next"]);
    let history = a
        .history(
            "alpha",
            &nsh_mesh_server::store::Conversation::Direct("alice".into(), "bob".into()),
            64,
            None,
        )
        .await
        .unwrap();
    let kept: Vec<&str> = history.iter().map(|m| m.envelope.id.as_str()).collect();
    assert_eq!(kept, ["once", "next"]);
}

/// An append lists its streams for the retention sweep once, not with every message, and
/// lists them again after a sweep: a list Redis lost is written again within a sweep's period.
#[tokio::test]
async fn streams_are_listed_for_the_sweep_once_and_again_after_each_sweep() {
    let redis = RedisServer::start().unwrap();
    let store = store(&redis);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let listed = async |conn: &mut redis::aio::MultiplexedConnection| {
        let mut keys: Vec<String> = redis::cmd("SMEMBERS")
            .arg("nsh:streams")
            .query_async(conn)
            .await
            .unwrap();
        keys.sort();
        keys
    };
    let both = ["nsh:alpha:dm:alice:bob", "nsh:alpha:inbox:bob"];

    entry(append(&store, "first", None).await);
    assert_eq!(listed(&mut conn).await, both);
    // Redis loses the list (a restart without persistence, a flush): not written again at once.
    let _: () = redis::cmd("DEL")
        .arg("nsh:streams")
        .query_async(&mut conn)
        .await
        .unwrap();
    entry(append(&store, "second", None).await);
    assert!(listed(&mut conn).await.is_empty());
    // After a sweep, the next append lists its streams again.
    store.sweep().await.unwrap();
    entry(append(&store, "third", None).await);
    assert_eq!(listed(&mut conn).await, both);
}

/// The wake-up for a recipient's deliverer on another replica is published by the append that
/// stores its message (in its transaction), and an append given none publishes nothing.
#[tokio::test]
async fn an_append_publishes_the_wake_up_it_is_given_and_no_other() {
    let redis = RedisServer::start().unwrap();
    let store = store(&redis);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut subscriber = client.get_async_pubsub().await.unwrap();
    subscriber.subscribe("replica-b").await.unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    let wake = Publish {
        channel: "replica-b".to_owned(),
        payload: b"wake bob".to_vec(),
    };
    let appended = store
        .append_direct("alpha", "bob", &envelope("m1"), None, Some(&wake))
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(10), subscriber.on_message().next())
        .await
        .expect("the wake-up was published")
        .unwrap();
    assert_eq!(heard.get_payload_bytes(), b"wake bob");
    let mut cursor = None;
    let inbox = store
        .advance_and_read("alpha", "bob", &mut cursor, None, None, 64)
        .await
        .unwrap();
    assert_eq!(ids(&inbox), ["m1"]);
    assert_eq!(Appended::Entry(inbox.messages[0].entry.clone()), appended);

    // Without a wake-up, nothing is published.
    entry(append(&store, "m2", None).await);
    let published: i64 = redis::cmd("PUBLISH")
        .arg("replica-b")
        .arg("marker")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(published, 1, "the subscriber still listens");
    let next = subscriber.on_message().next().await.unwrap();
    assert_eq!(
        next.get_payload_bytes(),
        b"marker",
        "no publish for m2 came before it"
    );
}
