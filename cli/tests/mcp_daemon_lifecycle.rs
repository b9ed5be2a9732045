//! A shared server's life: idle stop, persistent until stopped, restart after a crash, clients
//! and daemons killed outright; and no process left behind by any of it.

mod common;

use std::time::Duration;

use common::daemon::{Shared, alive, eventually, text};
use serde_json::{Value, json};

fn pid_of(answer: &Value) -> u64 {
    serde_json::from_str::<Value>(text(answer)).unwrap()["pid"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn an_idle_daemon_stops_and_its_server_with_it() {
    let shared = Shared::new();
    let mut client = shared.client(&["--idle-timeout", "1s"]).await;
    let server = pid_of(&client.call(json!(1), "whoami", json!({})).await) as u32;
    assert_eq!(shared.list().len(), 1);
    assert!(client.close().await.success());
    shared
        .assert_no_processes_left(Duration::from_secs(6))
        .await;
    assert!(!alive(server));
    assert!(shared.list().is_empty());
    // The next client starts a new one.
    let mut again = shared.client(&["--idle-timeout", "1s"]).await;
    assert_ne!(
        pid_of(&again.call(json!(1), "whoami", json!({})).await) as u32,
        server
    );
    again.close().await;
    shared
        .assert_no_processes_left(Duration::from_secs(6))
        .await;
}

#[tokio::test]
async fn a_persistent_daemon_outlives_its_clients_until_stopped() {
    let shared = Shared::new();
    let client = shared.client(&["--persistent"]).await;
    client.close().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let daemons = shared.list();
    assert_eq!(daemons.len(), 1, "{daemons:#?}");
    assert_eq!(daemons[0]["clients"], 0);
    assert_eq!(daemons[0]["persistent"], true);
    assert!(
        daemons[0]["memoryBytes"].as_u64().unwrap() > 10 * 1024 * 1024,
        "daemon + node"
    );
    let name = daemons[0]["name"].as_str().unwrap().to_owned();
    let server = daemons[0]["serverPid"].as_u64().unwrap() as u32;
    let table = shared.nsh(&["mcp", "daemon", "list"]);
    let table = String::from_utf8_lossy(&table.stdout);
    for column in [
        "NAME",
        "CLIENTS",
        "UPTIME",
        "MEMORY",
        "persistent",
        &name,
        &server.to_string(),
    ] {
        assert!(table.contains(column), "{column} in\n{table}");
    }

    let unknown = shared.stop("no-such-server");
    assert!(!unknown.status.success());
    let why = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        why.contains("no daemon is called no-such-server") && why.contains(&name),
        "{why}"
    );

    // A client still connected when the daemon stops sees its server go: output closed, and
    // its bridge exits with an error.
    let mut connected = shared.client(&["--persistent"]).await;
    let stopped = shared.stop(&name);
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(!alive(server), "stop returns once the server is gone");
    assert_eq!(connected.recv().await, None);
    assert!(!connected.close().await.success());
    shared
        .assert_no_processes_left(Duration::from_secs(2))
        .await;
    assert!(shared.list().is_empty());
}

#[tokio::test]
async fn a_crashed_server_is_restarted_and_every_client_hears_its_tools_may_have_changed() {
    let shared = Shared::new();
    let mut a = shared.client(&["--idle-timeout", "1s"]).await;
    let mut b = shared.client(&["--idle-timeout", "1s"]).await;
    let before = pid_of(&a.call(json!(1), "whoami", json!({})).await);
    b.send(&common::daemon::call(
        json!(5),
        "slow",
        json!({"steps": 100, "ms": 100}),
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(text(&a.call(json!(2), "crash", json!({})).await), "bye");

    // b's call in flight fails at once, with a reason, rather than hanging.
    let (failed, _) = b.response().await;
    assert_eq!(failed["id"], 5);
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("exited") && message.contains("restarting"),
        "{failed}"
    );

    // After the restart both hear list_changed, and calls work against the new process.
    for client in [&mut a, &mut b] {
        let note = client.recv().await.unwrap();
        assert_eq!(note["method"], "notifications/tools/list_changed", "{note}");
    }
    let after = pid_of(&a.call(json!(3), "whoami", json!({})).await);
    assert_ne!(before, after);
    assert_eq!(shared.instances().len(), 2);
    assert_eq!(shared.list()[0]["restarts"], 1);
    assert!(!alive(before as u32));

    a.close().await;
    b.close().await;
    shared
        .assert_no_processes_left(Duration::from_secs(6))
        .await;
}

#[tokio::test]
async fn a_client_killed_mid_call_leaves_nothing_behind() {
    let shared = Shared::new();
    let mut doomed = shared.client(&["--idle-timeout", "1s"]).await;
    let mut survivor = shared.client(&["--idle-timeout", "1s"]).await;
    doomed
        .send(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "slow", "arguments": {"steps": 100, "ms": 50}, "_meta": {"progressToken": 1}}}),
        )
        .await;
    assert_eq!(
        doomed.recv().await.unwrap()["method"],
        "notifications/progress"
    );
    doomed.child.start_kill().unwrap();
    let _ = doomed.child.wait().await;

    // The server was told to stop the call, and the daemon keeps nothing of the client.
    let mut cancelled = 0;
    for attempt in 0..60 {
        let stats = survivor.call(json!(attempt), "stats", json!({})).await;
        cancelled = serde_json::from_str::<Value>(text(&stats)).unwrap()["cancelled"]
            .as_u64()
            .unwrap();
        if cancelled == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cancelled, 1);
    let daemon = &shared.list()[0];
    assert_eq!(daemon["clients"], 1);
    assert_eq!(daemon["inFlight"], 0);

    survivor.close().await;
    shared
        .assert_no_processes_left(Duration::from_secs(6))
        .await;
}

#[tokio::test]
async fn a_daemon_killed_outright_takes_its_server_with_it() {
    let shared = Shared::new();
    let mut client = shared.client(&["--persistent"]).await;
    let server = pid_of(&client.call(json!(1), "whoami", json!({})).await) as u32;
    let daemon = shared.list()[0]["pid"].as_u64().unwrap() as u32;
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &daemon.to_string()])
            .status()
            .unwrap()
            .success()
    );
    // The kernel's parent-death signal: no orphaned server.
    eventually(
        Duration::from_secs(3),
        "the server dies with its daemon",
        || !alive(server),
    )
    .await;
    // The bridge notices and exits with an error rather than hanging its client.
    assert_eq!(client.recv().await, None);
    let status = client.close().await;
    assert!(!status.success());

    // The next client finds the dead daemon's socket, and starts a new one past it.
    let mut next = shared.client(&["--persistent"]).await;
    assert_ne!(
        pid_of(&next.call(json!(1), "whoami", json!({})).await) as u32,
        server
    );
    next.close().await;
    let name = shared.list()[0]["name"].as_str().unwrap().to_owned();
    assert!(shared.stop(&name).status.success());
    shared
        .assert_no_processes_left(Duration::from_secs(3))
        .await;
}

#[tokio::test]
async fn two_first_starts_at_once_end_with_one_daemon() {
    let shared = Shared::new();
    for round in 0..3 {
        let clients = futures_util::future::join_all(
            (0..2).map(|_| shared.client(&["--idle-timeout", "1s"])),
        )
        .await;
        assert_eq!(shared.list().len(), 1, "round {round}");
        assert_eq!(
            shared.instances().len(),
            round + 1,
            "round {round}: one new server"
        );
        for client in clients {
            client.close().await;
        }
        shared
            .assert_no_processes_left(Duration::from_secs(6))
            .await;
    }
    // Whatever ran, nothing of it runs now, and the folder holds no live socket.
    assert!(shared.list().is_empty());
    assert!(!shared.logs().contains("panicked"), "{}", shared.logs());
}

#[tokio::test]
async fn a_server_that_cannot_start_is_an_error_at_once_not_a_hang() {
    let shared = Shared::new();
    let args: Vec<String> = [
        "mcp",
        "run-once",
        "--idle-timeout",
        "1s",
        "--",
        "/nonexistent/mcp-server",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut client = common::daemon::Bridge::spawn(shared.command(&args));
    let started = std::time::Instant::now();
    client
        .send(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}),
        )
        .await;
    let (answer, _) = client.response().await;
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("/nonexistent/mcp-server") && message.contains("cannot start"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    client.close().await;
}
