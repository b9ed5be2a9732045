//! Tool pinning: when an upstream changes a tool it offered (a "rug pull"), the gateway hides
//! it, audits `tool_changed` and counts it, until `nsh gateway pins approve` accepts the new
//! definition.

mod common;

use std::process::Command;
use std::time::Duration;

use common::gateway::Gateway;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_pinned_tool_is_hidden_until_approved() {
    let gateway = Gateway::start("pinTools: true\n").await;
    let mut client = gateway.client("alpha", "alice", "legacy").await;
    assert!(client.tools().await.contains(&"web__echo".to_owned()));
    let pinned = gateway.audit();
    assert!(
        pinned
            .iter()
            .any(|l| l["event"] == "tool_pinned" && l["tool"] == "web__echo"),
        "{pinned:?}"
    );

    let changed = client.call("web__rug_pull", json!({})).await;
    assert_eq!(changed["result"]["text"], "changed", "{changed}");
    let gw = gateway.path("audit.jsonl");
    nsh_testenv::wait_for(
        "tool_changed in the audit log",
        Duration::from_secs(15),
        || {
            let text = std::fs::read_to_string(&gw).unwrap_or_default();
            async move { Ok(text.contains("\"tool_changed\"").then_some(())) }
        },
    )
    .await;
    assert!(!client.tools().await.contains(&"web__echo".to_owned()));
    let refused = client.call("web__echo", json!({ "text": "x" })).await;
    assert_eq!(
        refused["error"]["message"], "tool `web__echo` not found",
        "{refused}"
    );
    assert!(
        gateway
            .metrics()
            .contains("nsh_gateway_tools_changed_total{tool=\"web__echo\"} 1"),
        "{}",
        gateway.metrics()
    );
    let status = gateway.status();
    let hash = status["hidden_changed"]["web__echo"]
        .as_str()
        .unwrap_or_default();
    assert!(hash.starts_with("sha256:"), "{status}");

    let config = gateway.path("gateway.yaml");
    let list = Command::new(common::nsh_path())
        .args(["gateway", "pins", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{listed}{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let echo_row = listed
        .lines()
        .find(|l| l.contains("web__echo"))
        .unwrap_or_default();
    assert!(echo_row.contains("CHANGED"), "{listed}");

    let approve = Command::new(common::nsh_path())
        .args(["gateway", "pins", "approve", "--config"])
        .arg(&config)
        .arg("web__echo")
        .output()
        .unwrap();
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    let mut back = false;
    for _ in 0..100 {
        if client.tools().await.contains(&"web__echo".to_owned()) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the approved tool did not return:\n{}", gateway.log());
    let answer = client.call("web__echo", json!({ "text": "ok" })).await;
    assert_eq!(answer["result"]["text"], "web:ok", "{answer}");
    client.close().await;
}
