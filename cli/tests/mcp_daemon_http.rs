//! `nsh mcp daemon serve`: the shared server with a streamable HTTP front (what an McpGateway
//! pod's `command` upstream containers run), driven by the official TypeScript SDK client.

mod common;

use std::process::Command;
use std::time::Duration;

use common::daemon::{Shared, alive, eventually};
use common::gateway::{Driver, interop, node};
use nsh_testenv::process::ManagedProcess;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn sdk_clients_over_http_share_one_server_run_by_the_daemon() {
    let shared = Shared::new();
    let mut command = Command::new(common::nsh_path());
    command
        .args([
            "mcp",
            "daemon",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--name",
        ])
        .arg(&shared.marker)
        .arg("--")
        .arg(node())
        .arg(interop("gateway-upstream.mjs"))
        .arg(&shared.marker)
        .env("NSH_MCP_RUNTIME_DIR", shared.runtime())
        .env("INSTANCE_LOG", shared.instance_log());
    let log = shared.runtime().join("serve.out");
    let mut serve = ManagedProcess::spawn("nsh mcp daemon serve", command, &log).unwrap();
    let addr = nsh_testenv::logged_addr(
        &log,
        "shared MCP server listening",
        "mcp",
        Duration::from_secs(30),
    )
    .await;
    let url = format!("http://{addr}/mcp");

    let mut one = Driver::start(&url, "", "legacy").await;
    let mut two = Driver::start(&url, "", "2026-07-28").await;
    assert_eq!(one.hello["connected"], true, "{}", one.hello);
    assert_eq!(two.hello["connected"], true, "{}", two.hello);
    for client in [&mut one, &mut two] {
        let mut ready = false;
        for _ in 0..100 {
            if client.tools().await.contains(&"echo".to_owned()) {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "the server's tools, by their own names");
    }
    let echo = one.call("echo", json!({"text": "hi"})).await;
    assert_eq!(echo["result"]["text"], format!("{}:hi", shared.marker));
    let slow = two
        .send(
            json!({"op": "call", "name": "slow", "args": {"steps": 3, "ms": 30}, "progress": true}),
        )
        .await;
    assert_eq!(slow["result"]["text"], "done after 3", "{slow}");

    // One server, under an MCP daemon (supervised, killed with it).
    assert_eq!(shared.instances().len(), 1);
    let daemons = shared.list();
    assert_eq!(daemons.len(), 1, "{daemons:#?}");
    let server = daemons[0]["serverPid"].as_u64().unwrap() as u32;
    let whoami = one.call("whoami", json!({})).await;
    let who: Value = serde_json::from_str(whoami["result"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(who["pid"], server);

    one.close().await;
    two.close().await;
    // The front stops; its daemon lets the server go after its idle timeout.
    serve.kill();
    eventually(
        Duration::from_secs(10),
        "the server stops after the front",
        || !alive(server),
    )
    .await;
    shared
        .assert_no_processes_left(Duration::from_secs(5))
        .await;
}
