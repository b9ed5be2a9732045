//! Many clients, one server: `nsh mcp run-once` bridges to a shared stdio MCP server written
//! with the official TypeScript SDK; each client gets only its own answers, progress and
//! server requests, whatever ids they all choose.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::daemon::{Bridge, Shared, call, text};
use common::gateway::{Driver, interop, node};
use serde_json::{Value, json};

/// A small deterministic generator: the schedule is random but the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_clients_share_one_server_and_each_gets_only_its_own_answers() {
    let shared = Shared::new();
    // Ten first starts at once: the lock leaves one daemon and one server.
    let mut clients: Vec<Bridge> =
        futures_util::future::join_all((0..10).map(|_| shared.client(&["--persistent"]))).await;
    assert_eq!(shared.instances().len(), 1, "one server for ten clients");
    let daemons = shared.list();
    assert_eq!(daemons.len(), 1, "{daemons:#?}");
    assert_eq!(daemons[0]["clients"], 10);

    // Thousands of calls: every client sends bursts with the same small set of ids (numbers
    // and strings) as every other client, and each answer must carry the caller's own token.
    let tasks = clients
        .drain(..)
        .enumerate()
        .map(|(n, mut client)| async move {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
            let mut answered = 0;
            for burst in 0..75 {
                let mut sent: HashMap<String, String> = HashMap::new();
                for slot in 0..4u64 {
                    let id = if rng.next().is_multiple_of(2) {
                        json!(slot)
                    } else {
                        json!(slot.to_string())
                    };
                    let token = format!("client{n}-burst{burst}-slot{slot}-{}", rng.next() % 1000);
                    sent.insert(id.to_string(), token.clone());
                    client
                        .send(&call(id, "echo", json!({ "text": token })))
                        .await;
                }
                for _ in 0..4 {
                    let (answer, notes) = client.response().await;
                    assert!(
                        notes.is_empty(),
                        "client {n} got notifications it did not ask for: {notes:?}"
                    );
                    let token = sent.remove(&answer["id"].to_string()).unwrap_or_else(|| {
                        panic!("client {n} got an answer to an id it has not in flight: {answer}")
                    });
                    let expected = format!("{}:{token}", shared_marker_of(&answer));
                    assert_eq!(
                        text(&answer),
                        expected,
                        "client {n} got someone else's answer"
                    );
                    answered += 1;
                }
            }
            (client, answered)
        });
    let results = futures_util::future::join_all(tasks).await;
    let total: usize = results.iter().map(|(_, answered)| answered).sum();
    assert_eq!(total, 3000);
    let mut clients: Vec<Bridge> = results.into_iter().map(|(client, _)| client).collect();

    // Every client talked to the same process.
    let mut pids = Vec::new();
    for client in &mut clients {
        let answer = client.call(json!(1), "whoami", json!({})).await;
        let who: Value = serde_json::from_str(text(&answer)).unwrap();
        pids.push(who["pid"].as_u64().unwrap());
    }
    pids.dedup();
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert_eq!(shared.instances().len(), 1);

    for client in clients {
        assert!(client.close().await.success());
    }
    let stopped = shared.stop(shared.list()[0]["name"].as_str().unwrap());
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    shared
        .assert_no_processes_left(Duration::from_secs(5))
        .await;
}

/// The echo tool answers `<server name>:<text>`; the server name is the test's marker.
fn shared_marker_of(answer: &Value) -> &str {
    text(answer).split(':').next().unwrap()
}

#[tokio::test]
async fn progress_and_cancellation_reach_only_the_client_that_asked() {
    let shared = Shared::new();
    let mut a = shared.client(&["--idle-timeout", "1s"]).await;
    let mut b = shared.client(&["--idle-timeout", "1s"]).await;
    // Same id, same progress token, from both.
    let slow = |steps: u64| {
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "slow", "arguments": {"steps": steps, "ms": 60}, "_meta": {"progressToken": "p"}}})
    };
    a.send(&slow(40)).await;
    b.send(&slow(5)).await;
    let first = a.recv().await.unwrap();
    assert_eq!(first["method"], "notifications/progress");
    assert_eq!(first["params"]["progressToken"], "p");
    a.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7, "reason": "test"}}))
        .await;

    let (answer, notes) = b.response().await;
    assert_eq!(text(&answer), "done after 5");
    assert_eq!(answer["id"], 7);
    let progress: Vec<u64> = notes
        .iter()
        .map(|n| {
            assert_eq!(n["params"]["progressToken"], "p", "{n}");
            n["params"]["progress"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        progress,
        vec![1, 2, 3, 4, 5],
        "all of b's progress, in order, before its answer"
    );

    // a's call stopped at the server; a hears nothing more of it.
    let stats = b.call(json!(8), "stats", json!({})).await;
    let mut cancelled = serde_json::from_str::<Value>(text(&stats)).unwrap()["cancelled"].clone();
    for _ in 0..40 {
        if cancelled == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stats = b.call(json!(9), "stats", json!({})).await;
        cancelled = serde_json::from_str::<Value>(text(&stats)).unwrap()["cancelled"].clone();
    }
    assert_eq!(cancelled, 1, "the server saw a's cancellation");
    let late = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            match a.recv().await {
                Some(m) if m.get("method").is_some() => continue, // progress already in flight
                other => return other,
            }
        }
    })
    .await;
    assert!(late.is_err(), "a got an answer after cancelling: {late:?}");

    a.close().await;
    b.close().await;
    shared
        .assert_no_processes_left(Duration::from_secs(8))
        .await;
}

#[tokio::test]
async fn the_sdk_example_server_is_shared_and_reports_progress_to_each_caller() {
    let shared = Shared::new();
    let example = interop(
        "node_modules/@modelcontextprotocol/sdk/dist/esm/examples/server/progressExample.js",
    );
    let args: Vec<String> = vec![
        "mcp".into(),
        "run-once".into(),
        "--name".into(),
        shared.marker.clone(),
        "--idle-timeout".into(),
        "1s".into(),
        "--".into(),
        node().to_string_lossy().into_owned(),
        example.to_string_lossy().into_owned(),
    ];
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = Bridge::spawn(shared.command(&args));
        client.initialize(json!({})).await;
        clients.push(client);
    }
    for (n, client) in clients.iter_mut().enumerate() {
        client
            .send(
                &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "count", "arguments": {"n": 3 + n}, "_meta": {"progressToken": 1}}}),
            )
            .await;
    }
    for (n, client) in clients.iter_mut().enumerate() {
        let (answer, notes) = client.response().await;
        assert_eq!(text(&answer), format!("Counted to {}", 3 + n));
        assert_eq!(notes.len(), 3 + n, "client {n}: {notes:#?}");
        assert!(notes.iter().all(|n| n["params"]["progressToken"] == 1));
    }
    let daemons = shared.list();
    assert_eq!(daemons.len(), 1);
    assert_eq!(daemons[0]["name"], shared.marker.as_str());
    let server_pid = daemons[0]["serverPid"].as_u64().unwrap() as u32;
    assert!(
        std::fs::read_to_string(format!("/proc/{server_pid}/cmdline"))
            .unwrap()
            .contains("progressExample.js")
    );
    for client in clients {
        client.close().await;
    }
    shared
        .assert_no_processes_left(Duration::from_secs(8))
        .await;
    common::daemon::eventually(Duration::from_secs(5), "the example server stops", || {
        !common::daemon::alive(server_pid)
    })
    .await;
}

#[tokio::test]
async fn official_sdk_clients_share_a_server_and_its_requests_reach_the_caller() {
    let shared = Shared::new();
    let mut command = vec![common::nsh_path().to_string_lossy().into_owned()];
    command.extend(shared.run_once_args(&["--idle-timeout", "1s"]));
    let command = serde_json::to_string(&command).unwrap();
    let env = |label: &str| {
        vec![
            ("MCP_DRIVER_COMMAND".to_owned(), command.clone()),
            ("MCP_DRIVER_LABEL".to_owned(), label.to_owned()),
            (
                "NSH_MCP_RUNTIME_DIR".to_owned(),
                shared.runtime().to_string_lossy().into_owned(),
            ),
            (
                "INSTANCE_LOG".to_owned(),
                shared.instance_log().to_string_lossy().into_owned(),
            ),
        ]
    };
    let mut one = Driver::start_with_env("stdio", "-", "legacy", &env("one")).await;
    let mut two = Driver::start_with_env("stdio", "-", "legacy", &env("two")).await;
    assert_eq!(one.hello["connected"], true, "{}", one.hello);
    assert_eq!(two.hello["connected"], true, "{}", two.hello);
    assert!(one.tools().await.contains(&"ask_client".to_owned()));

    // The server asks its caller to sample: each client answers its own call.
    assert_eq!(
        one.call("ask_client", json!({})).await["result"]["text"],
        "sampled by one"
    );
    assert_eq!(
        two.call("ask_client", json!({})).await["result"]["text"],
        "sampled by two"
    );

    let answer = one
        .send(
            json!({"op": "call", "name": "slow", "args": {"steps": 3, "ms": 30}, "progress": true}),
        )
        .await;
    assert_eq!(answer["result"]["text"], "done after 3");
    assert!(
        !answer["progress"].as_array().unwrap().is_empty(),
        "{answer}"
    );
    assert_eq!(shared.instances().len(), 1);

    one.close().await;
    two.close().await;
    shared
        .assert_no_processes_left(Duration::from_secs(8))
        .await;
}

/// stdout a file (as a terminal or a redirect would be): the bridge cannot hand it over and
/// relays both ways itself; the client sees no difference.
#[tokio::test]
async fn a_client_whose_stdio_cannot_be_handed_over_is_relayed() {
    let shared = Shared::new();
    let out_path = shared.runtime().join("relayed.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut command = shared.command(&shared.run_once_args(&["--idle-timeout", "1s"]));
    command
        .stdin(std::process::Stdio::piped())
        .stdout(out)
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = [
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        call(json!("r"), "echo", json!({"text": "relayed"})),
    ];
    for line in lines {
        tokio::io::AsyncWriteExt::write_all(&mut stdin, format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }
    let expected = format!("{}:relayed", shared.marker);
    common::daemon::eventually(Duration::from_secs(20), "the relayed answer", || {
        std::fs::read_to_string(&out_path)
            .unwrap_or_default()
            .contains(&expected)
    })
    .await;
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    shared
        .assert_no_processes_left(Duration::from_secs(6))
        .await;
}
