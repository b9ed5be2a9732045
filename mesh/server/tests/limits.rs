//! Rate limits, size limits, group and connection limits, and malformed input of every event:
//! each answers a clear error and the connection stays.

mod common;

use common::{TestMesh, new_id, token_for};
use nsh_mesh_server::{Limits, RateLimit};
use nsh_mesh_transport::client::ClientError;
use nsh_mesh_transport::wire::{ErrorCode, SendStatus, event};
use serde_json::{Value, json};

#[tokio::test]
async fn over_the_rate_answers_rate_limited_and_the_connection_stays() {
    let limits = Limits {
        rate: RateLimit {
            per_second: 1.0,
            burst: 3,
        },
        ..Default::default()
    };
    let mesh = TestMesh::with_limits(limits).await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let _bob = mesh.connect("alpha", "bob", &[]).await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        let ack = alice
            .send(json!({ "id": new_id(), "to": "bob", "text": "spam" }))
            .await;
        codes.push(ack.error.map(|e| e.code));
    }
    assert_eq!(&codes[..3], &[None, None, None], "the burst passes");
    assert_eq!(codes[3], Some(ErrorCode::RateLimited));
    assert!(alice.client.is_connected());
    // Other events are limited too, with the same error shape.
    let presence = alice.call(event::PRESENCE, json!({})).await;
    assert_eq!(presence["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn an_oversized_message_is_too_large() {
    let limits = Limits {
        max_message_bytes: 1024,
        ..Default::default()
    };
    let mesh = TestMesh::with_limits(limits).await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let _bob = mesh.connect("alpha", "bob", &[]).await;
    let id = new_id();
    let ack = alice
        .send(json!({ "id": id, "to": "bob", "text": "x".repeat(2000) }))
        .await;
    assert_eq!((ack.ok, ack.id.as_str()), (false, id.as_str()));
    assert_eq!(ack.error.unwrap().code, ErrorCode::TooLarge);
    assert_eq!(
        alice
            .send(json!({ "id": new_id(), "to": "bob", "text": "small" }))
            .await
            .status,
        Some(SendStatus::Delivered)
    );
}

#[tokio::test]
async fn the_group_limit_is_enforced() {
    let mesh = TestMesh::with_limits(Limits {
        max_groups_per_agent: 2,
        ..Default::default()
    })
    .await;
    let ann = mesh.connect("alpha", "ann", &["*"]).await;
    for group in ["g1", "g2"] {
        assert_eq!(
            ann.call(event::GROUP_JOIN, json!({ "group": group })).await["ok"],
            true
        );
    }
    let third = ann.call(event::GROUP_JOIN, json!({ "group": "g3" })).await;
    assert_eq!(third["error"]["code"], "forbidden");
    assert!(
        third["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 groups"),
        "{third}"
    );
}

#[tokio::test]
async fn the_connection_limit_refuses_the_extra_connection() {
    let mesh = TestMesh::with_limits(Limits {
        max_connections_per_agent: 2,
        ..Default::default()
    })
    .await;
    let _one = mesh.connect("alpha", "ann", &[]).await;
    let _two = mesh.connect("alpha", "ann", &[]).await;
    match mesh.try_connect(&token_for("alpha", "ann", &[])).await {
        Err(ClientError::Refused(message)) => {
            assert!(message.contains("2 connections"), "{message}");
        }
        other => panic!("third connection was not refused: {:?}", other.map(|_| ())),
    }
    // Another agent is unaffected.
    mesh.connect("alpha", "ben", &[]).await;
}

#[tokio::test]
async fn malformed_input_of_every_event_answers_invalid_naming_the_field() {
    let mesh = TestMesh::start().await;
    let alice = mesh.connect("alpha", "alice", &["*"]).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            event::MESSAGE,
            json!({ "to": "bob", "text": "no id" }),
            "id",
        ),
        (
            event::MESSAGE,
            json!({ "id": "1", "to": "bob", "text": ["not", "text"] }),
            "text",
        ),
        (
            event::MESSAGE,
            json!({ "id": "1", "text": "nowhere" }),
            "to/group",
        ),
        (
            event::MESSAGE,
            json!({ "id": "1", "to": "bob", "text": "x", "ttl": "soon" }),
            "ttl",
        ),
        (event::MESSAGE, json!("a string"), "invalid type"),
        (
            event::MESSAGE,
            json!({ "id": "has space", "to": "bob", "text": "x" }),
            "id",
        ),
        (event::GROUP_JOIN, json!({}), "group"),
        (event::GROUP_JOIN, json!({ "group": 7 }), "group"),
        (event::GROUP_JOIN, json!({ "group": "bad:name" }), "group"),
        (event::GROUP_LEAVE, json!({ "grp": "ops" }), "group"),
        (event::GROUP_MEMBERS, json!(null), "invalid type"),
    ];
    for (name, payload, field) in cases {
        let answer = alice.call(name, payload.clone()).await;
        assert_eq!(answer["ok"], false, "{name} {payload}: {answer}");
        assert_eq!(
            answer["error"]["code"], "invalid",
            "{name} {payload}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "{name} {payload}: `{message}` does not name `{field}`"
        );
        // A refused request is still matched to its id, however far it got to be read.
        assert_eq!(answer["id"], payload["id"], "{name} {payload}: {answer}");
    }
    // An event with no payload at all is answered too.
    let answer = alice
        .client
        .emit_with_ack(event::MESSAGE, vec![])
        .await
        .unwrap();
    assert_eq!(answer[0]["error"]["code"], "invalid");
    let message = answer[0]["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("payload: missing"), "{message}");
    // Arguments after the payload are ignored: the first one is the request.
    let answer = alice
        .client
        .emit_with_ack(
            event::GROUP_JOIN,
            vec![
                json!({ "group": "ops" }),
                json!("extra"),
                json!({ "more": 1 }),
            ],
        )
        .await
        .unwrap();
    assert_eq!(answer[0]["ok"], true, "{answer:?}");
    let members = alice
        .call(event::GROUP_MEMBERS, json!({ "group": "ops" }))
        .await;
    assert_eq!(members["members"], json!(["alice"]), "{members}");
    // Unknown events are ignored, and after all that the connection still works.
    alice.client.emit("no-such-event", vec![json!({})]).unwrap();
    assert!(alice.client.is_connected());
    let presence = alice.call(event::PRESENCE, json!({})).await;
    assert_eq!(presence["agents"][0]["id"], "alice");
}

/// A frame whose JSON breaks after the event's name: the name routes it and the handler, which
/// reads the rest, answers `invalid`; the connection stays. (Raw frames: our client only writes
/// valid JSON.)
#[tokio::test]
async fn json_broken_after_the_event_name_answers_invalid() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let mesh = TestMesh::start().await;
    let url = format!("{}/socket.io/?EIO=4&transport=websocket", mesh.url);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // The text frame (an Engine.IO message `4` and a Socket.io packet) that starts with `prefix`.
    async fn frame_starting<S>(ws: &mut S, prefix: &str) -> String
    where
        S: futures_util::Stream<Item = tokio_tungstenite::tungstenite::Result<Message>> + Unpin,
    {
        loop {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
                .await
                .unwrap_or_else(|_| panic!("no frame starting with `{prefix}` in 10 s"))
                .unwrap_or_else(|| panic!("closed before a frame starting with `{prefix}`"))
                .unwrap();
            if let Message::Text(text) = frame
                && let Some(rest) = text.as_str().strip_prefix(prefix)
            {
                break rest.to_owned();
            }
        }
    }
    frame_starting(&mut ws, "0").await;
    let token = token_for("alpha", "alice", &[]);
    let connect = format!("40{}", json!({ "token": token }));
    ws.send(Message::text(connect)).await.unwrap();
    frame_starting(&mut ws, "40").await;

    for (ack, broken) in [
        (1, r#"["message",{"id":"m1","to":"#),
        (2, r#"["message",{"id":"m1","to":"bob","text":"x"]"#),
        (3, r#"["group:join",{"group":}]"#),
    ] {
        ws.send(Message::text(format!("42{ack}{broken}")))
            .await
            .unwrap();
        let answer: Value =
            serde_json::from_str(&frame_starting(&mut ws, &format!("43{ack}")).await).unwrap();
        assert_eq!(answer[0]["error"]["code"], "invalid", "{broken}: {answer}");
        let message = answer[0]["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("payload: "), "{broken}: {message}");
    }
    // Still connected: a valid request is answered.
    ws.send(Message::text(r#"424["presence",{}]"#))
        .await
        .unwrap();
    let presence: Value = serde_json::from_str(&frame_starting(&mut ws, "434").await).unwrap();
    assert_eq!(presence[0]["agents"][0]["id"], "alice", "{presence}");
}
