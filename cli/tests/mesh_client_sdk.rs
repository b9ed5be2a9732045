//! The official MCP TypeScript SDK drives three `nsh mesh client` processes against a real
//! `nsh mesh server`: tools, a direct and a group message, and each way a message reaches an
//! agent (mesh_inbox, the resource update, the Claude Code channel event, logging).

mod common;

use std::process::Command;

use serde_json::Value;

#[tokio::test]
async fn the_official_sdk_sends_and_receives_through_mesh_clients() {
    let mesh = common::MeshProcess::start().await;
    let inbox = mesh.path("inbox");
    let node = nsh_testenv::peers::node().unwrap();
    let output = Command::new(node)
        .current_dir(nsh_testenv::peers::interop_dir())
        .arg("mcp-clients.mjs")
        .arg(common::nsh_path())
        .arg(mesh.url())
        .arg(&inbox)
        .arg(mesh.token_file("alice", &["ops"]))
        .arg(mesh.token_file("bob", &["ops"]))
        .arg(mesh.token_file("carol", &["*"]))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        mesh.log()
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();

    // The handshake: server info, the capabilities Claude Code and others look for.
    assert_eq!(report["server"]["name"], "nsh-mesh");
    assert_eq!(
        report["capabilities"]["experimental"]["claude/channel"],
        serde_json::json!({})
    );
    assert_eq!(report["capabilities"]["resources"]["subscribe"], true);
    assert!(
        report["instructions"]
            .as_str()
            .unwrap()
            .contains("mesh_send")
    );
    assert_eq!(
        report["tools"],
        serde_json::json!([
            "mesh_connect",
            "mesh_group_join",
            "mesh_group_leave",
            "mesh_group_list",
            "mesh_group_members",
            "mesh_history",
            "mesh_inbox",
            "mesh_presence",
            "mesh_send"
        ])
    );
    let send_schema = &report["toolSchemas"]["mesh_send"];
    assert_eq!(send_schema["required"], serde_json::json!(["text"]));
    assert!(send_schema["properties"]["to"]["description"].is_string());
    assert_eq!(
        report["resources"],
        serde_json::json!(["mesh://inbox", "mesh://presence"])
    );
    assert_eq!(report["presence"]["you"]["agent"], "alice");
    assert_eq!(report["presence"]["connection"]["state"], "connected");
    assert_eq!(
        report["members"]["members"],
        serde_json::json!(["alice", "bob", "carol"])
    );

    // Direct message: delivered (bob's client stored it), then seen every way.
    assert_eq!(report["direct"]["status"], "delivered");
    let direct_id = report["direct"]["id"].clone();
    assert_eq!(report["bobLogging"]["data"]["message"]["id"], direct_id);
    assert_eq!(report["bobResource"]["messages"][0]["id"], direct_id);
    let taken = &report["bobInbox"]["messages"][0];
    assert_eq!(
        (&taken["from"], &taken["text"], &taken["metadata"]["pr"]),
        (&"alice".into(), &"hello bob".into(), &42.into())
    );
    assert_eq!(
        report["bobInboxAgain"]["messages"],
        serde_json::json!([]),
        "marked read"
    );

    // Group message: both members stored it; carol (claude/channel) got a channel event.
    assert_eq!(report["group"]["status"], "delivered");
    let mut delivered: Vec<&str> = report["group"]["delivered_to"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    delivered.sort_unstable();
    assert_eq!(delivered, ["bob", "carol"]);
    let channel = &report["carolChannel"];
    assert!(
        channel["content"]
            .as_str()
            .unwrap()
            .contains("standup in 5")
    );
    assert_eq!(channel["meta"]["from"], "alice");
    assert_eq!(channel["meta"]["group"], "ops");
    assert_eq!(channel["meta"]["message_id"], report["group"]["id"]);
    assert_eq!(
        report["carolLogging"], 0,
        "channel clients get channel events only"
    );
    assert_eq!(
        report["bobGroupInbox"]["messages"][0]["text"],
        "standup in 5"
    );

    // The inbox files: one JSON line per message, and the trigger files were touched.
    let team = inbox.join(common::TEAM);
    let bob_lines = std::fs::read_to_string(team.join("bob.jsonl")).unwrap();
    assert_eq!(bob_lines.lines().count(), 2);
    assert!(team.join("bob.trigger").exists() && team.join("carol.trigger").exists());

    // Errors: tool errors with the mesh's code, the field, and a hint.
    for (case, code, needle) in [
        ("offline", "recipient_offline", "nobody"),
        ("badArgs", "invalid", "text: invalid type"),
        ("bothTargets", "invalid", "to/group"),
        ("forbidden", "forbidden", "secret"),
        ("history", "unavailable", "keeps no history"),
        ("badLimit", "invalid", "limit"),
    ] {
        let result = &report[case];
        assert_eq!(result["isError"], true, "{case}: {result}");
        let error = &result["value"]["error"];
        assert_eq!(error["code"], code, "{case}: {result}");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{case}: {result}"
        );
        assert!(
            !error["hint"].as_str().unwrap().is_empty(),
            "{case}: {result}"
        );
    }
    // The hints say what is really the matter.
    let hint = |case: &str| {
        report[case]["value"]["error"]["hint"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let forbidden = hint("forbidden");
    assert!(
        forbidden.contains("token does not list this group")
            && !forbidden.contains("mesh_group_join first"),
        "{forbidden}"
    );
    let history = hint("history");
    assert!(
        history.contains("persistence is off") && !history.contains("retry"),
        "{history}"
    );
}
