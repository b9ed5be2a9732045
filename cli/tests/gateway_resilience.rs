//! An upstream that crashes, goes away or never answers takes nothing else down: a stdio
//! upstream is restarted by its MCP daemon; an HTTP upstream's tools leave the catalog with
//! `list_changed` and return when it recovers; a caller's cancellation reaches the upstream.

mod common;

use std::time::Duration;

use common::gateway::{Gateway, HttpUpstream};
use serde_json::{Value, json};

async fn pid_of(client: &mut common::gateway::Driver, tool: &str) -> u64 {
    let who = client.call(tool, json!({})).await;
    let who: Value = serde_json::from_str(who["result"]["text"].as_str().unwrap_or("{}")).unwrap();
    who["pid"].as_u64().unwrap_or(0)
}

/// A stdio upstream runs under its MCP daemon (`nsh mcp run-once`), which restarts it: the
/// gateway's bridge stays connected, so the tools never leave the catalog; callers' calls reach
/// the new process.
#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_stdio_upstream_is_restarted_and_callers_are_told() {
    let gateway = Gateway::start("").await;
    for revision in ["legacy", "2026-07-28"] {
        let mut client = gateway.client("alpha", "alice", revision).await;
        let first = pid_of(&mut client, "local__whoami").await;
        let bye = client.call("local__crash", json!({})).await;
        assert_eq!(bye["result"]["text"], "bye", "{bye}");
        let mut second = 0;
        for _ in 0..200 {
            second = pid_of(&mut client, "local__whoami").await;
            if second != 0 && second != first {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            second != 0 && second != first,
            "{revision}: local never came back: {}",
            gateway.log()
        );
        assert!(client.tools().await.contains(&"local__echo".to_owned()));
        // The other upstream never noticed.
        let web = client.call("web__echo", json!({ "text": "still" })).await;
        assert_eq!(web["result"]["text"], "web:still", "{web}");
        client.close().await;
    }
    let daemon_logs: String = std::fs::read_dir(gateway.path("daemons"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert_eq!(
        daemon_logs.matches("the MCP server exited").count(),
        2,
        "{daemon_logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_upstream_that_goes_away_leaves_and_comes_back() {
    let mut gateway = Gateway::start("").await;
    let mut client = gateway.client("alpha", "alice", "legacy").await;
    let port = gateway.web.as_ref().unwrap().port;
    gateway.web.take().unwrap().process.kill();

    // Its calls fail at once, with the upstream named; the gateway stays up.
    let failed = client.call("web__echo", json!({ "text": "x" })).await;
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("web"),
        "{failed}"
    );
    let gw = gateway.port;
    nsh_testenv::wait_for("web's tools to leave", Duration::from_secs(20), || {
        let status = common::http_get(gw, "/status")
            .map(|(_, b)| b)
            .unwrap_or_default();
        async move { Ok(status.contains("\"down\":[\"web\"]").then_some(())) }
    })
    .await;
    let tools = client.tools().await;
    assert!(
        tools.iter().all(|t| !t.starts_with("web__")) && tools.contains(&"local__echo".to_owned()),
        "{tools:?}"
    );
    // Still serving the rest: ready, degraded, naming the upstream.
    let ready = nsh_testenv::wait_for("/readyz to say degraded", Duration::from_secs(5), || {
        let ready = common::http_get(gw, "/readyz");
        async move { Ok(ready.filter(|(_, body)| body.contains("degraded"))) }
    })
    .await;
    assert_eq!(ready.0, 200);
    assert!(ready.1.contains("web"), "{}", ready.1);

    gateway.web = Some(HttpUpstream::start(gateway.dir.path(), "web", port).await);
    nsh_testenv::wait_for("web's tools to return", Duration::from_secs(40), || {
        let status = common::http_get(gw, "/status")
            .map(|(_, b)| b)
            .unwrap_or_default();
        async move { Ok(status.contains("\"down\":[]").then_some(())) }
    })
    .await;
    let back = client.call("web__echo", json!({ "text": "back" })).await;
    assert_eq!(back["result"]["text"], "web:back", "{back}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_never_answers_stalls_nobody() {
    // Accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    let stuck = format!(
        "- name: stuck\n  url: http://127.0.0.1:{silent_port}/mcp\n  required: false\n  listTimeout: 1s\n"
    );
    let gateway = Gateway::start_with_env("", &[], &stuck).await;
    let mut client = gateway.client("alpha", "alice", "2026-07-28").await;
    let tools = client.tools().await;
    assert!(
        tools.contains(&"local__echo".to_owned()) && tools.contains(&"web__echo".to_owned()),
        "{tools:?}"
    );
    assert!(!tools.iter().any(|t| t.starts_with("stuck__")));
    let status = gateway.status();
    assert_eq!(
        status["waiting"],
        json!([]),
        "stuck is not required: {status}"
    );
    assert_eq!(status["down"], json!(["stuck"]), "{status}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callers_cancellation_reaches_the_upstream() {
    let gateway = Gateway::start("").await;
    for (revision, upstream) in [("legacy", "local"), ("2026-07-28", "web")] {
        let mut client = gateway.client("alpha", "alice", revision).await;
        let cancelled = client
            .send(json!({ "op": "call", "name": format!("{upstream}__slow"), "args": { "steps": 100, "ms": 50 }, "cancelAfterMs": 300 }))
            .await;
        assert!(cancelled["error"].is_object(), "{revision}: {cancelled}");
        let mut seen = 0;
        for _ in 0..50 {
            let stats = client.call(&format!("{upstream}__stats"), json!({})).await;
            let stats: Value =
                serde_json::from_str(stats["result"]["text"].as_str().unwrap()).unwrap();
            seen = stats["cancelled"].as_u64().unwrap();
            if seen > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, 1, "{revision}: the upstream saw no cancellation");
        client.close().await;
    }
}
