//! Every way a handshake is refused, each with its own `unauthorized:` reason, and team keys
//! that change while the server runs.

mod common;

use std::time::Duration;

use common::{TestMesh, key_text, token_for};
use nsh_mesh_transport::client::ClientError;
use nsh_mesh_transport::token::{self, TeamKey, TokenRequest};

async fn refusal(mesh: &TestMesh, token: &str) -> String {
    match mesh.try_connect(token).await {
        Err(ClientError::Refused(message)) => message,
        Err(other) => panic!("expected a connect_error, got {other}"),
        Ok(_) => panic!("token was accepted"),
    }
}

fn mint(team: &str, key: &str, ttl_secs: u64, now: u64) -> String {
    let key = TeamKey::from_file_contents(key.as_bytes()).unwrap();
    token::mint(
        &TokenRequest {
            team,
            agent: "a1",
            groups: &[],
            ttl: Duration::from_secs(ttl_secs),
            audiences: &[],
        },
        &key,
        now,
    )
    .unwrap()
}

#[tokio::test]
async fn each_refusal_says_why_after_the_unauthorized_prefix() {
    let mesh = TestMesh::start().await;
    let now = token::now_unix();
    let cases = [
        (String::new(), "missing token"),
        ("garbage".to_owned(), "malformed token"),
        (
            mint("alpha", &key_text("alpha"), 60, now - 3600),
            "token expired",
        ),
        (mint("alpha", &key_text("beta"), 60, now), "bad signature"),
        (
            mint("gamma", &key_text("gamma"), 60, now),
            "unknown team `gamma`",
        ),
    ];
    for (token, reason) in cases {
        let message = refusal(&mesh, &token).await;
        assert!(message.starts_with("unauthorized:"), "{message}");
        assert!(
            message.contains(reason),
            "expected `{reason}` in `{message}`"
        );
    }
}

#[tokio::test]
async fn a_handshake_without_auth_is_refused_as_missing() {
    let mesh = TestMesh::start().await;
    let config = nsh_mesh_transport::client::ClientConfig::new(&mesh.url);
    match nsh_mesh_transport::client::Client::connect(config).await {
        Err(ClientError::Refused(message)) => assert!(
            message.starts_with("unauthorized: missing token"),
            "{message}"
        ),
        other => panic!("expected refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn keys_added_changed_and_removed_apply_while_running() {
    let mesh = TestMesh::start().await;
    let gamma_key = "gamma-key-0123456789abcdef";
    let token = mint("gamma", gamma_key, 600, token::now_unix());
    assert!(refusal(&mesh, &token).await.contains("unknown team"));

    std::fs::write(mesh.keys.path().join("gamma"), gamma_key).unwrap();
    nsh_testenv_free_wait(|| async { mesh.try_connect(&token).await.is_ok() }).await;

    // Rotated: the old token no longer verifies.
    std::fs::write(
        mesh.keys.path().join("gamma"),
        "gamma-rotated-key-0123456789",
    )
    .unwrap();
    nsh_testenv_free_wait(|| async { matches!(mesh.try_connect(&token).await, Err(ClientError::Refused(m)) if m.contains("bad signature")) }).await;

    std::fs::remove_file(mesh.keys.path().join("gamma")).unwrap();
    nsh_testenv_free_wait(|| async { matches!(mesh.try_connect(&token).await, Err(ClientError::Refused(m)) if m.contains("unknown team")) }).await;

    // Existing teams were untouched throughout.
    mesh.try_connect(&token_for("alpha", "a1", &[]))
        .await
        .unwrap();
}

/// Polls `check` for up to 5 s (the server re-reads keys every 100 ms in tests).
async fn nsh_testenv_free_wait<F, Fut>(check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..50 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not met within 5 s");
}
