//! `nsh mesh client --listen`: the sidecar form. It holds the mesh connection and the inbox on
//! its own; agent sessions come and go over streamable HTTP and find the mail that arrived
//! between them.

mod common;

use std::process::Command;
use std::time::Duration;

use nsh_testenv::process::ManagedProcess;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_sidecar_keeps_the_mesh_and_the_inbox_between_agent_sessions() {
    let mesh = common::MeshProcess::start().await;
    let mut sidecar = Command::new(common::nsh_path());
    sidecar
        .args(common::client_args(
            &mesh.url(),
            &mesh.token_file("alice", &["ops"]),
            &mesh.path("inbox"),
        ))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    let log = mesh.path("sidecar.log");
    let _sidecar = ManagedProcess::spawn("mesh-client sidecar", sidecar, &log).unwrap();
    let admin = nsh_testenv::logged_addr(&log, "admin endpoints listening", "admin", WAIT)
        .await
        .port();
    let port = nsh_testenv::logged_addr(&log, "serving MCP over HTTP", "mcp", WAIT)
        .await
        .port();
    // Probes go to the admin listener (in a pod: the pod IP), MCP stays on its own.
    let ready = nsh_testenv::wait_for("the sidecar's /readyz", WAIT, || async move {
        Ok(common::http_get(admin, "/readyz").filter(|(code, _)| *code == 200))
    })
    .await;
    assert_eq!(ready.1, "ok", "ready means connected to the mesh");
    assert_eq!(common::http_get(port, "/readyz").map(|r| r.0), Some(404));

    let url = format!("http://127.0.0.1:{port}/mcp");
    let first = common::mcp_http_client(&url).await;
    let (failed, joined) = common::call(&first, "mesh_group_join", json!({ "group": "ops" })).await;
    assert!(!failed, "{joined}");
    first.cancel().await.unwrap();

    // No agent session is open: a message still lands, acked by the sidecar.
    let bob = common::mcp_client(
        &common::client_args(
            &mesh.url(),
            &mesh.token_file("bob", &["ops"]),
            &mesh.path("bob-inbox"),
        ),
        &mesh.path("bob.log"),
    )
    .await;
    // bob's mesh-client connects in the background: join once it is up.
    nsh_testenv::wait_for("bob to join ops", WAIT, || async {
        let (failed, value) =
            common::call(&bob, "mesh_group_join", json!({ "group": "ops" })).await;
        Ok((!failed).then_some(value))
    })
    .await;
    let (failed, sent) = common::call(
        &bob,
        "mesh_send",
        json!({ "group": "ops", "text": "while you were away" }),
    )
    .await;
    assert!(!failed, "{sent}");
    assert_eq!(sent["delivered_to"], json!(["alice"]));

    let second = common::mcp_http_client(&url).await;
    let (_, inbox) = common::call(&second, "mesh_inbox", json!({})).await;
    assert_eq!(inbox["messages"][0]["text"], "while you were away");
    let (_, presence) = common::call(&second, "mesh_presence", json!({})).await;
    assert_eq!(
        presence["you"]["groups"],
        json!(["ops"]),
        "the group outlived the first session"
    );
    second.cancel().await.unwrap();
    bob.cancel().await.unwrap();
}
