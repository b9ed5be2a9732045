//! Only a token minted for this gateway's audience, by a team it serves, gets in: 401 with
//! `WWW-Authenticate: Bearer` otherwise, 403 for a team it does not serve. The caller's token
//! never reaches an upstream.

mod common;

use common::gateway::{AUDIENCE, Driver, Gateway};

fn post(port: u16, token: Option<&str>) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "POST /mcp HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let code = answer.split(' ').nth(1).unwrap().parse().unwrap();
    (code, answer)
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_without_this_audience_or_from_other_teams_are_refused() {
    let gateway = Gateway::start("").await;
    let (code, answer) = post(gateway.port, None);
    assert_eq!(code, 401, "{answer}");
    assert!(
        answer.to_lowercase().contains("www-authenticate: bearer"),
        "{answer}"
    );

    let mesh_only = gateway.token("alpha", "alice", &[]);
    let (code, answer) = post(gateway.port, Some(&mesh_only));
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("not for `nsh-gateway/test`"), "{answer}");

    let other_gateway = gateway.token("alpha", "alice", &["nsh-gateway/other"]);
    assert_eq!(post(gateway.port, Some(&other_gateway)).0, 401);

    // gamma has a key here but is not among the gateway's teams.
    let wrong_team = gateway.token("gamma", "eve", &[AUDIENCE]);
    let (code, answer) = post(gateway.port, Some(&wrong_team));
    assert_eq!(code, 403, "{answer}");
    assert!(answer.contains("team `gamma` may not call"), "{answer}");

    let garbage = post(gateway.port, Some("not-a-jwt"));
    assert_eq!(garbage.0, 401, "{}", garbage.1);

    // The SDK client sees the refusal as an HTTP 401, not a hang.
    let refused = Driver::start(&gateway.url(), &mesh_only, "legacy").await;
    assert_eq!(refused.hello["connected"], false, "{}", refused.hello);
    assert_eq!(
        refused.hello["error"]["data"]["status"], 401,
        "{}",
        refused.hello
    );

    // A token for both the mesh and this gateway works.
    let both = gateway.client("alpha", "alice", "legacy").await;
    both.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstreams_get_their_configured_headers_and_never_the_callers_token() {
    let gateway = Gateway::start_with_env(
        "",
        &[("TEST_UPSTREAM_KEY", "k-123")],
        "  headers: [ { name: X-Api-Key, value: 'key ${TEST_UPSTREAM_KEY}' } ]\n",
    )
    .await;
    let mut alice = gateway.client("alpha", "alice", "legacy").await;
    let seen = alice.call("web__seen_headers", serde_json::json!({})).await;
    let seen: serde_json::Value =
        serde_json::from_str(seen["result"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(seen["x-api-key"], "key k-123", "{seen}");
    assert!(
        seen["authorization"].is_null(),
        "the caller's token went upstream: {seen}"
    );
    alice.close().await;
}
