//! The official SDK client, on both protocol revisions, sees the tools, prompts and resources
//! of a stdio and an HTTP upstream merged under `<upstream>__<name>`, and each call, progress
//! included, reaches the upstream it names.

mod common;

use common::gateway::Gateway;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn both_revisions_see_one_merged_catalog_and_calls_reach_the_named_upstream() {
    let gateway = Gateway::start("").await;
    for revision in ["legacy", "2026-07-28"] {
        let mut client = gateway.client("alpha", "alice", revision).await;
        let expected_version = if revision == "legacy" {
            "2025-11-25"
        } else {
            "2026-07-28"
        };
        assert_eq!(client.hello["version"], expected_version, "{revision}");

        let tools = client.tools().await;
        for upstream in ["local", "web"] {
            for tool in ["echo", "whoami", "slow", "delete_everything"] {
                let name = format!("{upstream}__{tool}");
                assert!(
                    tools.contains(&name),
                    "{revision}: {name} missing from {tools:?}"
                );
            }
        }
        assert!(
            tools
                .iter()
                .all(|t| t.starts_with("local__") || t.starts_with("web__"))
        );

        for upstream in ["local", "web"] {
            let answer = client
                .call(&format!("{upstream}__echo"), json!({ "text": "ping" }))
                .await;
            assert_eq!(
                answer["result"]["text"],
                format!("{upstream}:ping"),
                "{revision}: {answer}"
            );
            let who = client.call(&format!("{upstream}__whoami"), json!({})).await;
            let who: serde_json::Value =
                serde_json::from_str(who["result"]["text"].as_str().unwrap()).unwrap();
            assert_eq!(who["name"], upstream);
        }

        let slow = client
            .send(json!({ "op": "call", "name": "web__slow", "args": { "steps": 3, "ms": 30 }, "progress": true }))
            .await;
        assert_eq!(slow["result"]["text"], "done after 3", "{slow}");
        // Progress reaches the caller, in order (the last may lose the race with the response,
        // which MCP allows).
        let progress = slow["progress"].as_array().unwrap();
        assert!(
            progress.len() >= 2 && [json!(1), json!(2), json!(3)].starts_with(progress),
            "{revision}: {slow}"
        );

        let prompts = client.send(json!({ "op": "prompts" })).await;
        assert_eq!(
            prompts["prompts"],
            json!(["local__greet", "web__greet"]),
            "{prompts}"
        );
        let prompt = client
            .send(json!({ "op": "prompt", "name": "local__greet", "args": { "who": "bob" } }))
            .await;
        assert_eq!(prompt["text"], "local greets bob", "{prompt}");
        let resources = client.send(json!({ "op": "resources" })).await;
        assert_eq!(
            resources["resources"],
            json!([
                { "name": "local__notes", "uri": "mem://local/notes" },
                { "name": "web__notes", "uri": "mem://web/notes" },
            ]),
            "{resources}"
        );
        let read = client
            .send(json!({ "op": "read", "uri": "mem://web/notes" }))
            .await;
        assert_eq!(read["text"], "notes of web", "{read}");
        client.close().await;
    }
    // Every request is audited, prompts and resources with the upstream that served them.
    let audit = gateway.audit();
    for (method, name, upstream) in [
        ("prompts/get", "local__greet", "local"),
        ("resources/read", "mem://web/notes", "web"),
        ("tools/call", "web__slow", "web"),
    ] {
        assert!(
            audit
                .iter()
                .any(|l| l["method"] == method && l["tool"] == name && l["upstream"] == upstream),
            "no audit line for {method} {name}: {audit:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_callers_progress_and_answers_never_cross() {
    let gateway = Gateway::start("").await;
    let mut alice = gateway.client("alpha", "alice", "legacy").await;
    let mut bob = gateway.client("beta", "bob", "2026-07-28").await;
    // The SDK numbers its requests and progress tokens from 0 in each client, so the two
    // callers' ids collide at the gateway; each must still get only its own answers.
    let call = |steps: u64| json!({ "op": "call", "name": "local__slow", "args": { "steps": steps, "ms": 20 }, "progress": true });
    let (a, b) = tokio::join!(alice.send(call(4)), bob.send(call(6)));
    assert_eq!(a["result"]["text"], "done after 4", "{a}");
    assert_eq!(b["result"]["text"], "done after 6", "{b}");
    // Each sees its own progress, in order: alice never sees bob's 5 or 6. (MCP lets a
    // notification that loses the race with the response be dropped; the gateway waits a
    // moment for it, so normally every one arrives.)
    for (answer, steps) in [(&a, 4), (&b, 6)] {
        let seen: Vec<u64> = answer["progress"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (1..=steps).collect();
        assert!(
            seen.len() + 1 >= expected.len() && expected.starts_with(&seen),
            "{steps} steps, progress {seen:?}"
        );
    }
    alice.close().await;
    bob.close().await;
}
