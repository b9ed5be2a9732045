//! Both halves speak real Socket.io: the official clients (npm `socket.io-client`, PyPI
//! `python-socketio`) against our server, and our Rust client against the official Node server.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Agent, TestMesh, interop_script, key_text, new_id, run_to_success, token_for};
use nsh_mesh_transport::client::ClientError;
use nsh_mesh_transport::wire::{MessageKind, SendStatus, event};
use nsh_testenv::peers;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Runs an interop script against `url` with the scenario's tokens; returns its stdout.
async fn run_scenario(
    program: std::path::PathBuf,
    script: &str,
    url: &str,
    extra_env: &[(&str, &str)],
) -> String {
    let mut command = interop_script(program, script, url);
    command
        .env("TOKEN_ALICE", token_for("alpha", "alice", &["ops"]))
        .env("TOKEN_BOB", token_for("alpha", "bob", &["ops"]))
        .env("TOKEN_BAD", token_for("gamma", "eve", &[]));
    for (key, value) in extra_env {
        command.env(key, value);
    }
    run_to_success(command, Duration::from_secs(90), script)
        .await
        .0
}

#[tokio::test]
async fn the_official_node_client_over_polling_and_upgrade() {
    let mesh = TestMesh::start().await;
    let out = run_scenario(peers::node().unwrap(), "node-client.mjs", &mesh.url, &[]).await;
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok - ")).count(),
        9,
        "{out}"
    );
}

#[tokio::test]
async fn the_official_node_client_over_websocket_only() {
    let mesh = TestMesh::start().await;
    let out = run_scenario(
        peers::node().unwrap(),
        "node-client.mjs",
        &mesh.url,
        &[("TRANSPORTS", "websocket")],
    )
    .await;
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok - ")).count(),
        9,
        "{out}"
    );
}

#[tokio::test]
async fn python_socketio() {
    let mesh = TestMesh::start().await;
    let out = run_scenario(peers::python().unwrap(), "python_client.py", &mesh.url, &[]).await;
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok - ")).count(),
        8,
        "{out}"
    );
}

#[tokio::test]
async fn our_rust_client_against_the_official_node_server() {
    let keys = tempfile::tempdir().unwrap();
    std::fs::write(keys.path().join("alpha"), key_text("alpha")).unwrap();
    let mut server = tokio::process::Command::new(peers::node().unwrap())
        .arg(peers::interop_dir().join("node-server.mjs"))
        .arg("--team-keys-dir")
        .arg(keys.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = format!(
        "ws://127.0.0.1:{}",
        port.strip_prefix("listening ").expect("`listening PORT`")
    );

    match Agent::connect(&url, &token_for("gamma", "eve", &[])).await {
        Err(ClientError::Refused(message)) => {
            assert!(message.starts_with("unauthorized: "), "{message}");
        }
        other => panic!("bad token not refused: {:?}", other.map(|_| ())),
    }
    let alice = Agent::connect(&url, &token_for("alpha", "alice", &["ops"]))
        .await
        .unwrap();
    let mut bob = Agent::connect(&url, &token_for("alpha", "bob", &["ops"]))
        .await
        .unwrap();

    let presence = alice.call(event::PRESENCE, json!({})).await;
    assert_eq!(
        presence["agents"].as_array().unwrap().len(),
        2,
        "{presence}"
    );

    let id = new_id();
    let ack = alice
        .send(json!({ "id": id, "to": "bob", "text": "hello node" }))
        .await;
    assert_eq!(ack.status, Some(SendStatus::Delivered), "{ack:?}");
    let envelope = bob.next_message().await;
    assert_eq!(
        (
            envelope.from.as_str(),
            envelope.kind,
            envelope.text.as_str()
        ),
        ("alice", MessageKind::Direct, "hello node")
    );
    assert_eq!(
        alice
            .send(json!({ "id": id, "to": "bob", "text": "hello node" }))
            .await
            .status,
        Some(SendStatus::Duplicate)
    );

    for agent in [&alice, &bob] {
        assert_eq!(
            agent
                .call(event::GROUP_JOIN, json!({ "group": "ops" }))
                .await["ok"],
            true
        );
    }
    let mut alice = alice;
    let group = bob
        .send(json!({ "id": new_id(), "group": "ops", "text": "ops update" }))
        .await;
    assert_eq!(
        group.delivered_to.as_deref(),
        Some(&["alice".to_owned()][..]),
        "{group:?}"
    );
    assert_eq!(alice.next_message().await.group.as_deref(), Some("ops"));

    // The Node server pings; our client answers, so the connection outlives a ping interval
    // only if pongs work. (Node's default interval is 25 s; we check the session is live now.)
    assert!(alice.client.is_connected() && bob.client.is_connected());
    server.kill().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), alice.client.closed())
        .await
        .expect("client noticed the server went away");
}
