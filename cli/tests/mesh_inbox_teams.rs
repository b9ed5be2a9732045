//! Two teams with an agent of the same name, one inbox folder: each agent sees its own team's
//! mail only, through the mesh client's `mesh_inbox` and through the hooks.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

const OTHER_TEAM: &str = "local";

/// Runs `nsh mesh hook PostToolUse` over `inbox` with `extra` flags: (success, stdout, stderr).
fn post_tool_use(inbox: &Path, extra: &[&str]) -> (bool, String, String) {
    let input = std::fs::read_to_string(
        nsh_testenv::repo_root().join("cli/tests/fixtures/claude-hooks/PostToolUse.json"),
    )
    .unwrap();
    let mut command = Command::new(common::nsh_path());
    command
        .args(["mesh", "hook", "PostToolUse", "--inbox-dir"])
        .arg(inbox)
        .args(extra)
        .env_remove("NSH_MESH_TEAM")
        .env_remove("NSH_MESH_AGENT");
    let output = nsh_testenv::process::output_with_stdin(command, input.as_bytes()).unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

async fn unread_texts(client: &common::McpClient) -> Vec<String> {
    let (failed, inbox) = common::call(client, "mesh_inbox", json!({})).await;
    assert!(!failed, "{inbox}");
    inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_team_reads_only_its_own_mail_from_a_shared_inbox_folder() {
    let mesh = common::MeshProcess::start_with_teams(&[OTHER_TEAM]).await;
    let inbox = mesh.path("inbox");
    let token_file = |team: &str, agent: &str| {
        let path = mesh.path(&format!("{team}-{agent}.jwt"));
        std::fs::write(&path, mesh.team_token(team, agent, &[], 3600)).unwrap();
        path
    };
    let client = |team: &str, agent: &str| {
        let args = common::client_args(&mesh.url(), &token_file(team, agent), &inbox);
        let log = mesh.path(&format!("{team}-{agent}.log"));
        async move { common::mcp_client(&args, &log).await }
    };
    let bob_alpha = client(common::TEAM, "bob").await;
    let bob_local = client(OTHER_TEAM, "bob").await;
    let carol = client(common::TEAM, "carol").await;
    let alice = client(OTHER_TEAM, "alice").await;

    for (sender, text) in [(&carol, "alpha news"), (&alice, "local news")] {
        let (failed, sent) =
            common::call(sender, "mesh_send", json!({ "to": "bob", "text": text })).await;
        assert!(!failed, "{sent}");
    }
    // Both were acked once stored: each in its own team's inbox.
    assert!(inbox.join(common::TEAM).join("bob.jsonl").is_file());
    assert!(inbox.join(OTHER_TEAM).join("bob.jsonl").is_file());

    // A hook that is not told whose mail it delivers refuses to mix the two.
    let (ok, out, err) = post_tool_use(&inbox, &[]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("alpha/bob") && err.contains("local/bob") && err.contains("--token-file"),
        "{err}"
    );
    assert_eq!(
        err.matches("error:").count(),
        1,
        "the error is printed once: {err}"
    );

    // Told by flags, or by the agent's token file: that agent's mail only.
    let (ok, out, err) = post_tool_use(&inbox, &["--team", common::TEAM, "--agent", "bob"]);
    assert!(ok, "{err}");
    let context: Value = serde_json::from_str(&out).unwrap();
    let context = context["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(
        context.contains("alpha news") && !context.contains("local news"),
        "{context}"
    );
    let local_token = mesh.path(&format!("{OTHER_TEAM}-bob.jwt"));
    let (ok, out, err) = post_tool_use(&inbox, &["--token-file", &local_token.to_string_lossy()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("local news") && !out.contains("alpha news"),
        "{out}"
    );
    // Delivered by the hooks: the mesh clients' inboxes agree, team by team.
    assert!(unread_texts(&bob_alpha).await.is_empty());
    assert!(unread_texts(&bob_local).await.is_empty());

    // And `mesh_inbox` reads its own team's mail only.
    for (sender, text) in [(&carol, "alpha again"), (&alice, "local again")] {
        let (failed, sent) =
            common::call(sender, "mesh_send", json!({ "to": "bob", "text": text })).await;
        assert!(!failed, "{sent}");
    }
    assert_eq!(unread_texts(&bob_alpha).await, ["alpha again"]);
    assert_eq!(unread_texts(&bob_local).await, ["local again"]);

    // A token of the other team's `bob` is not taken: its mail would land in this inbox.
    let other = mesh.path(&format!("{OTHER_TEAM}-bob.jwt"));
    let (failed, refused) = common::call(
        &bob_alpha,
        "mesh_connect",
        json!({ "token_file": other.to_string_lossy() }),
    )
    .await;
    assert!(failed, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`local/bob`") && message.contains("serves `alpha/bob`"),
        "{refused}"
    );
    // The token file itself rewritten for the other team: the client does not reconnect as it.
    let own = mesh.path(&format!("{}-bob.jwt", common::TEAM));
    std::fs::copy(&other, &own).unwrap();
    let (_, state) = common::call(&bob_alpha, "mesh_connect", json!({})).await;
    assert!(
        state.to_string().contains("serves `alpha/bob`"),
        "reconnecting re-reads the file and refuses it: {state}"
    );

    for client in [bob_alpha, bob_local, carol, alice] {
        client.cancel().await.unwrap();
    }
}
