//! Per-team and per-agent policy: a denied tool is absent from `tools/list` and calling it
//! answers exactly as a tool that does not exist, on both protocol revisions; each request is
//! audited with arguments redacted; the per-agent rate limit answers with a retry hint; a new
//! config applies without a restart, and a bad one leaves the old one in force.

mod common;

use std::time::Duration;

use common::gateway::Gateway;
use serde_json::json;

const POLICY: &str = "toolPolicy:
  deny: ['*__delete_*']
  rules:
  - teams: [beta]
    allow: ['web__*']
  - agents: [bob]
    deny: [local__echo]
";

#[tokio::test(flavor = "multi_thread")]
async fn a_hidden_tool_is_indistinguishable_from_an_unknown_one_on_both_revisions() {
    let gateway = Gateway::start(POLICY).await;
    for revision in ["legacy", "2026-07-28"] {
        // alice (alpha): everything but the global deny.
        let mut alice = gateway.client("alpha", "alice", revision).await;
        let tools = alice.tools().await;
        assert!(tools.contains(&"local__echo".to_owned()), "{tools:?}");
        assert!(
            !tools.iter().any(|t| t.contains("delete_")),
            "{revision}: {tools:?}"
        );
        // bob (alpha): also not local__echo.
        let mut bob = gateway.client("alpha", "bob", revision).await;
        let tools = bob.tools().await;
        assert!(
            !tools.contains(&"local__echo".to_owned()),
            "{revision}: {tools:?}"
        );
        assert!(
            tools.contains(&"web__echo".to_owned()),
            "{revision}: {tools:?}"
        );
        // carol (beta): only web tools.
        let mut carol = gateway.client("beta", "carol", revision).await;
        let tools = carol.tools().await;
        assert!(
            !tools.is_empty() && tools.iter().all(|t| t.starts_with("web__")),
            "{revision}: {tools:?}"
        );

        // Refused calls answer word for word as a tool that does not exist.
        let unknown = alice.call("local__no_such_tool", json!({})).await;
        let shape = |answer: &serde_json::Value, name: &str| {
            let text = answer["error"]["message"]
                .as_str()
                .unwrap()
                .replace(name, "NAME");
            (
                text,
                answer["error"]["code"].clone(),
                answer["error"]["data"].clone(),
            )
        };
        let reference = shape(&unknown, "local__no_such_tool");
        assert!(unknown["error"].is_object(), "{unknown}");
        for (client, tool) in [
            (&mut alice, "web__delete_everything"),
            (&mut bob, "local__echo"),
            (&mut carol, "local__whoami"),
        ] {
            let refused = client.call(tool, json!({ "text": "x" })).await;
            assert_eq!(
                shape(&refused, tool),
                reference,
                "{revision}: {tool}: {refused}"
            );
        }
        // What the policy allows still works.
        let ok = carol.call("web__echo", json!({ "text": "hi" })).await;
        assert_eq!(ok["result"]["text"], "web:hi", "{ok}");
        for client in [alice, bob, carol] {
            client.close().await;
        }
    }
    // The audit log tells refusals apart, though the callers cannot.
    let audit = gateway.audit();
    let decision = |agent: &str, tool: &str| {
        audit
            .iter()
            .filter(|l| l["agent"] == agent && l["tool"] == tool)
            .map(|l| l["decision"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(decision("bob", "local__echo"), ["denied", "denied"]);
    assert_eq!(
        decision("alice", "local__no_such_tool"),
        ["unknown", "unknown"]
    );
    assert_eq!(decision("carol", "web__echo"), ["allowed", "allowed"]);
    let line = audit
        .iter()
        .find(|l| {
            l["agent"] == "carol" && l["decision"] == "allowed" && l["method"] == "tools/call"
        })
        .unwrap();
    for field in [
        "time",
        "team",
        "session",
        "upstream",
        "latency_ms",
        "result_bytes",
    ] {
        assert!(!line[field].is_null(), "audit line lacks {field}: {line}");
    }
    assert!(
        gateway.metrics().contains("decision=\"denied\""),
        "{}",
        gateway.metrics()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn arguments_are_audited_with_secrets_redacted() {
    let gateway = Gateway::start("").await;
    let mut alice = gateway.client("alpha", "alice", "legacy").await;
    // The echo tool takes `text`; extra arguments are still forwarded and audited.
    let answer = alice
        .call(
            "local__echo",
            json!({ "text": "visible", "api_token": "s3cret", "nested": { "Password": "p" } }),
        )
        .await;
    assert_eq!(answer["result"]["text"], "local:visible", "{answer}");
    let audit = gateway.audit();
    let line = audit.iter().find(|l| l["tool"] == "local__echo").unwrap();
    assert_eq!(
        line["arguments"],
        json!({ "text": "visible", "api_token": "[redacted]", "nested": { "Password": "[redacted]" } })
    );
    let raw = std::fs::read_to_string(gateway.path("audit.jsonl")).unwrap();
    assert!(!raw.contains("s3cret"), "a secret reached the audit log");
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_answers_with_a_retry_hint_per_agent() {
    let gateway = Gateway::start("rateLimit: { rate: 1/m, burst: 3 }\n").await;
    let mut alice = gateway.client("alpha", "alice", "legacy").await;
    for _ in 0..3 {
        let ok = alice.call("web__echo", json!({ "text": "x" })).await;
        assert_eq!(ok["result"]["text"], "web:x", "{ok}");
    }
    let limited = alice.call("web__echo", json!({ "text": "x" })).await;
    let message = limited["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("rate limit") && message.contains("retry in"),
        "{limited}"
    );
    assert!(
        limited["error"]["data"]["retryAfterMs"].as_u64().unwrap() > 1000,
        "{limited}"
    );
    // Another agent has its own bucket.
    let mut bob = gateway.client("alpha", "bob", "legacy").await;
    let ok = bob.call("web__echo", json!({ "text": "y" })).await;
    assert_eq!(ok["result"]["text"], "web:y", "{ok}");
    assert!(
        gateway
            .audit()
            .iter()
            .any(|l| l["decision"] == "rate_limited" && l["agent"] == "alice")
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_policy_applies_live_and_a_bad_file_leaves_the_old_one() {
    let gateway = Gateway::start("").await;
    let mut alice = gateway.client("alpha", "alice", "legacy").await;
    assert!(alice.tools().await.contains(&"web__echo".to_owned()));
    let before = alice.list_changed().await;

    gateway.write_config("toolPolicy: { deny: [web__echo] }\n");
    nsh_testenv::wait_for("the new policy", Duration::from_secs(15), || {
        let log = gateway.log();
        async move { Ok(log.contains("config reloaded").then_some(())) }
    })
    .await;
    assert!(!alice.tools().await.contains(&"web__echo".to_owned()));
    assert!(
        alice.list_changed().await > before,
        "callers are told their list changed"
    );

    // A misspelt key is refused by name and the deny stays in force.
    gateway.write_config("toolPolicy: { deny: [web__echo] }\ntoolpolicy: {}\n");
    nsh_testenv::wait_for("the refusal", Duration::from_secs(15), || {
        let log = gateway.log();
        async move { Ok(log.contains("config refused").then_some(log)) }
    })
    .await;
    let log = gateway.log();
    assert!(
        log.contains("toolpolicy"),
        "the refusal names the field:\n{log}"
    );
    assert!(!alice.tools().await.contains(&"web__echo".to_owned()));
    let refused = alice.call("web__echo", json!({ "text": "x" })).await;
    assert!(refused["error"].is_object(), "{refused}");
    assert!(
        gateway
            .metrics()
            .contains("nsh_gateway_config_reload_failures_total 1"),
        "{}",
        gateway.metrics()
    );
    alice.close().await;
}
