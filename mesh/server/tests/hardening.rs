//! The mesh under attack, against the real server: unauthenticated sessions and idle HTTP
//! connections are bounded, tokens are re-checked while sockets live, token lifetimes are
//! bounded, unknown events are answered and rate-limited, and reconnect churn cannot flood a
//! team with presence.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{TestMesh, key_text, new_id, token_for};
use nsh_mesh_server::{HttpLimits, Limits, RateLimit};
use nsh_mesh_transport::token::{self, TeamKey};
use serde_json::{Value, json};

/// A raw HTTP/1.0 GET; the status code and body (None: the connection was closed or refused).
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

fn addr_of(mesh: &TestMesh) -> String {
    mesh.url.trim_start_matches("ws://").to_owned()
}

/// Opens an Engine.IO polling session (no token yet); its `sid`, or the refusal's status.
fn open_polling_session(addr: &str) -> Result<String, u16> {
    let (status, body) = get(addr, "/socket.io/?EIO=4&transport=polling").ok_or(0u16)?;
    if status != 200 {
        return Err(status);
    }
    let open: Value = serde_json::from_str(body.trim_start_matches('0')).map_err(|_| 1u16)?;
    Ok(open["sid"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn unauthenticated_polling_sessions_are_bounded_per_address_and_time_out() {
    let mesh = TestMesh::configured(|config| {
        config.http = HttpLimits {
            connect_timeout: Duration::from_secs(1),
            new_sessions_per_peer: 20,
            ..HttpLimits::default()
        };
    })
    .await;
    let addr = addr_of(&mesh);
    let results = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            (0..60)
                .map(|_| open_polling_session(&addr))
                .collect::<Vec<_>>()
        }
    })
    .await
    .unwrap();
    let opened: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let refused = results.iter().filter(|r| *r == &Err(429)).count();
    // 20 at once, plus what the bucket refilled while the loop ran (20 per second).
    assert!(
        (20..=40).contains(&opened.len()),
        "{} sessions opened from one address",
        opened.len()
    );
    assert_eq!(opened.len() + refused, 60, "{results:?}");

    // A session that never connects with a token is closed after the connect timeout.
    let sid = opened[0].clone();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (status, _) = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            get(
                &addr,
                &format!("/socket.io/?EIO=4&transport=polling&sid={sid}"),
            )
            .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(
        status, 400,
        "an unauthenticated session outlived the connect timeout"
    );

    // The server keeps serving agents meanwhile.
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let mut bob = mesh.connect("alpha", "bob", &[]).await;
    let ack = alice
        .send(json!({ "id": new_id(), "to": "bob", "text": "still here" }))
        .await;
    assert_eq!(serde_json::to_value(ack).unwrap()["status"], "delivered");
    assert_eq!(bob.next_message().await.text, "still here");
}

#[tokio::test]
async fn websocket_only_refuses_polling_and_serves_websockets() {
    let mesh = TestMesh::configured(|config| config.http.websocket_only = true).await;
    let addr = addr_of(&mesh);
    let refused = tokio::task::spawn_blocking(move || open_polling_session(&addr))
        .await
        .unwrap();
    assert_eq!(refused, Err(400));
    let _alice = mesh.connect("alpha", "alice", &[]).await;
}

#[tokio::test]
async fn silent_connections_are_closed_and_health_answers_at_the_connection_cap() {
    let mesh = TestMesh::configured(|config| {
        config.http.serve.max_connections = 50;
        config.http.serve.header_read_timeout = Duration::from_millis(500);
        config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = addr_of(&mesh);
    let admin = mesh.admin.unwrap().to_string();
    let outcome = tokio::task::spawn_blocking(move || {
        // Fill the cap with silent connections.
        let silent: Vec<TcpStream> = (0..50)
            .map(|_| TcpStream::connect(&addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let main_at_cap = get(&addr, "/healthz");
        let admin_at_cap = get(&admin, "/healthz");
        // The header deadline frees them all.
        let started = Instant::now();
        for mut stream in silent {
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        }
        let freed_after = started.elapsed();
        (
            main_at_cap,
            admin_at_cap,
            freed_after,
            get(&addr, "/healthz"),
        )
    })
    .await
    .unwrap();
    let (main_at_cap, admin_at_cap, freed_after, main_after) = outcome;
    assert_eq!(main_at_cap, None, "the main listener is at its cap");
    assert_eq!(
        admin_at_cap.map(|(s, _)| s),
        Some(200),
        "the admin listener still answers"
    );
    assert!(
        freed_after < Duration::from_secs(3),
        "silent connections lived {freed_after:?}"
    );
    assert_eq!(main_after.map(|(s, _)| s), Some(200));
}

#[tokio::test]
async fn a_changed_or_removed_team_key_disconnects_that_teams_sockets_only() {
    let mesh = TestMesh::start().await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let beta = mesh.connect("beta", "bea", &[]).await;
    std::fs::write(
        mesh.keys.path().join("alpha"),
        "alpha-rotated-key-0123456789",
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), alice.client.closed())
        .await
        .expect("alice's socket outlived her team's old key");
    // The old token no longer connects; beta's socket is untouched.
    assert!(
        mesh.try_connect(&token_for("alpha", "alice", &[]))
            .await
            .is_err()
    );
    assert!(beta.client.is_connected());
    std::fs::remove_file(mesh.keys.path().join("beta")).unwrap();
    tokio::time::timeout(Duration::from_secs(5), beta.client.closed())
        .await
        .expect("a socket outlived its team's removed key");
}

#[tokio::test]
async fn a_socket_is_disconnected_when_its_token_expires() {
    let mesh = TestMesh::start().await;
    let key = TeamKey::from_file_contents(key_text("alpha").as_bytes()).unwrap();
    // Accepted now (expired 29 s ago, inside the 30 s leeway), out of it within two seconds.
    let now = token::now_unix();
    let request = token::TokenRequest {
        team: "alpha",
        agent: "alice",
        groups: &[],
        ttl: Duration::from_secs(71),
        audiences: &[],
    };
    let expiring = token::mint(&request, &key, now - 100).unwrap();
    let alice = mesh.try_connect(&expiring).await.unwrap();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(6), alice.client.closed())
        .await
        .expect("a socket kept working after its token expired");
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn tokens_that_live_too_long_or_start_later_are_refused_with_the_reason() {
    let mesh = TestMesh::configured(|config| {
        config.limits.max_token_ttl = Duration::from_secs(3600);
    })
    .await;
    let sign = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header {
                kid: Some("alpha".into()),
                ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
            },
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key_text("alpha").trim().as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let now = token::now_unix();
    let base = json!({ "sub": "alice", "team": "alpha", "iss": "nsh-mesh", "aud": "nsh-mesh",
        "iat": now, "exp": now + 60, "jti": "j" });
    let with = |patch: Value| {
        let mut claims = base.clone();
        claims
            .as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        sign(claims)
    };
    for (token, expected) in [
        (with(json!({ "exp": u64::MAX })), "lives too long"),
        (with(json!({ "exp": now + 7200 })), "--max-token-ttl"),
        (with(json!({ "nbf": now + 600 })), "not valid yet"),
        (with(json!({ "iat": now + 600 })), "issued in the future"),
    ] {
        let err = mesh.try_connect(&token).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{expected}: {err}");
    }
    // An audience array naming the mesh is accepted.
    assert!(
        mesh.try_connect(&with(json!({ "aud": ["nsh-gateway/tools", "nsh-mesh"] })))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn unknown_events_are_answered_invalid_and_count_against_the_rate_limit() {
    let limits = Limits {
        rate: RateLimit {
            per_second: 1.0,
            burst: 5,
        },
        ..Limits::default()
    };
    let mesh = TestMesh::with_limits(limits).await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let answer = alice.call("no-such-event\u{2028}x", json!({})).await;
    assert_eq!(answer["error"]["code"], "invalid", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("unknown event") && !message.contains('\u{2028}'),
        "the raw name is not echoed: {message}"
    );
    for _ in 0..4 {
        alice.call("no-such-event", json!({})).await;
    }
    let limited = alice.call("no-such-event", json!({})).await;
    assert_eq!(limited["error"]["code"], "rate_limited", "{limited}");
    // A bad history position is the caller's mistake, not an outage.
    let mesh = TestMesh::start().await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let history = alice
        .call("history", json!({ "with": "bob", "before": "$" }))
        .await;
    assert_eq!(history["error"]["code"], "invalid", "{history}");
}

#[tokio::test]
async fn reconnect_churn_is_rate_limited_and_presence_is_coalesced() {
    let mesh = TestMesh::start().await;
    let mut watcher = mesh.connect("alpha", "watcher", &[]).await;
    let mut refused = 0;
    let mut last_error = String::new();
    for _ in 0..40 {
        match mesh.try_connect(&token_for("alpha", "flappy", &[])).await {
            Ok(agent) => agent.client.disconnect().await,
            Err(err) => {
                refused += 1;
                last_error = err.to_string();
            }
        }
    }
    assert!(refused >= 15, "only {refused} of 40 rapid connects refused");
    assert!(last_error.contains("connects too often"), "{last_error}");
    // Let the trailing announcement land, then count what the watcher saw.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut frames = 0;
    let mut last = None;
    while let Some(change) = watcher.presence_within(Duration::from_millis(200)).await {
        frames += 1;
        last = Some(change);
    }
    assert!(
        frames <= 6,
        "{frames} presence frames for one flapping agent"
    );
    assert_eq!(
        last.map(|c| c.online),
        Some(false),
        "the final state is offline"
    );
}

#[tokio::test]
async fn presence_is_not_broadcast_in_teams_above_the_limit() {
    let limits = Limits {
        presence_max_team: 3,
        ..Limits::default()
    };
    let mesh = TestMesh::with_limits(limits).await;
    let mut watcher = mesh.connect("alpha", "watcher", &[]).await;
    let _two = mesh.connect("alpha", "two", &[]).await;
    assert_eq!(watcher.next_presence().await.agent, "two");
    let _three = mesh.connect("alpha", "three", &[]).await;
    assert_eq!(watcher.next_presence().await.agent, "three");
    // A fourth online agent is over the limit: no broadcast, but `presence` still lists it.
    let _four = mesh.connect("alpha", "four", &[]).await;
    watcher.assert_no_presence(Duration::from_millis(500)).await;
    let list = watcher.call("presence", json!({})).await;
    assert_eq!(list["agents"].as_array().unwrap().len(), 4, "{list}");
}

/// The soak found it: a resend that arrived while the first send of its id was still waiting
/// for the recipient was answered `duplicate` (ok), and when the first then failed the client
/// held an ack for a message nobody got.
#[tokio::test]
async fn a_resend_during_the_first_attempt_is_told_to_retry_not_acked() {
    let limits = Limits {
        ack_timeout: Duration::from_millis(1_500),
        ..Limits::default()
    };
    let mesh = TestMesh::with_limits(limits).await;
    let alice = mesh.connect("alpha", "alice", &[]).await;
    let _bob = mesh.connect_silent("alpha", "bob").await;
    let id = new_id();
    let payload = json!({ "id": id, "to": "bob", "text": "never acked" });
    let first = alice.client.request::<_, Value>("message", &payload);
    let resend = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        alice.client.request::<_, Value>("message", &payload).await
    };
    let (first, resend) = tokio::join!(first, resend);
    let (first, resend) = (first.unwrap(), resend.unwrap());
    assert_eq!(first["error"]["code"], "recipient_offline", "{first}");
    assert_eq!(
        resend["ok"], false,
        "a resend in flight was acked: {resend}"
    );
    assert_eq!(resend["error"]["code"], "unavailable", "{resend}");
    assert!(
        resend["error"]["message"]
            .as_str()
            .unwrap()
            .contains("in progress"),
        "{resend}"
    );
    // After the failure, the same id is tried for real again.
    let again: Value = alice.client.request("message", &payload).await.unwrap();
    assert_eq!(again["error"]["code"], "recipient_offline", "{again}");
}
