//! `nsh mesh hook <event>` as Claude Code runs it: recorded hook inputs on stdin, the exact JSON
//! on stdout, a cursor so nothing is injected twice, and a killed hook re-delivers.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nsh_mesh_client::inbox::{Inbox, InboxEntry};
use nsh_mesh_transport::wire::{Envelope, MessageKind};
use serde_json::Value;

fn fixture(name: &str) -> String {
    let path = nsh_testenv::repo_root()
        .join("cli/tests/fixtures/claude-hooks")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

fn message(id: usize, text: &str) -> InboxEntry {
    InboxEntry::received_now(Envelope {
        id: format!("m{id}"),
        kind: MessageKind::Direct,
        from: "bob".into(),
        to: Some("alice".into()),
        group: None,
        text: text.into(),
        metadata: None,
        timestamp: nsh_mesh_transport::wire::now_rfc3339(),
        ttl: None,
    })
}

/// Runs the hook with `input` on stdin; returns stdout (empty when there was nothing to say).
fn hook(dir: &Path, event: &str, input: &str, extra: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nsh"));
    command
        .args(["mesh", "hook", event, "--inbox-dir"])
        .arg(dir)
        .args(extra);
    let output = nsh_testenv::process::output_with_stdin(command, input.as_bytes()).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn each_event_prints_what_claude_code_expects_and_delivers_once() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Inbox::open(dir.path(), "local", "alice").unwrap();
    for (event, fixture_name) in [
        ("SessionStart", "SessionStart.json"),
        ("UserPromptSubmit", "UserPromptSubmit.json"),
        ("PostToolUse", "PostToolUse.json"),
    ] {
        inbox
            .append(&message(0, &format!("news for {event}")))
            .unwrap();
        // Same id each time would be one message; give each event its own.
        let input = fixture(fixture_name);
        let printed: Value = serde_json::from_str(&hook(dir.path(), event, &input, &[])).unwrap();
        let output = &printed["hookSpecificOutput"];
        assert_eq!(output["hookEventName"], event);
        let context = output["additionalContext"].as_str().unwrap();
        assert!(
            context.contains(r#"{"from":"bob","to":"you","id":"m0","#)
                && context.contains(&format!(r#""text":"news for {event}"}}"#)),
            "{context}"
        );
        assert_eq!(
            printed.as_object().unwrap().len(),
            1,
            "nothing but hookSpecificOutput"
        );
        // Delivered: the next hook has nothing to add and prints nothing at all.
        assert_eq!(hook(dir.path(), event, &input, &[]), "");
        // The cursor moved past everything.
        std::fs::remove_file(inbox.log_path()).unwrap();
        std::fs::remove_file(dir.path().join("local/alice.cursor")).unwrap();
    }

    inbox.append(&message(1, "before you stop")).unwrap();
    assert_eq!(
        hook(dir.path(), "Stop", &fixture("Stop-active.json"), &[]),
        "",
        "never block twice"
    );
    let printed: Value =
        serde_json::from_str(&hook(dir.path(), "Stop", &fixture("Stop.json"), &[])).unwrap();
    assert_eq!(printed["decision"], "block");
    assert!(
        printed["reason"]
            .as_str()
            .unwrap()
            .contains("before you stop")
    );
    assert_eq!(hook(dir.path(), "Stop", &fixture("Stop.json"), &[]), "");
}

#[test]
fn injections_are_capped_and_say_how_many_remain() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Inbox::open(dir.path(), "local", "alice").unwrap();
    for id in 0..5 {
        inbox.append(&message(id, "x")).unwrap();
    }
    let input = fixture("UserPromptSubmit.json");
    let first: Value = serde_json::from_str(&hook(
        dir.path(),
        "UserPromptSubmit",
        &input,
        &["--max-messages", "2"],
    ))
    .unwrap();
    let context = first["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(
        context.contains(r#""id":"m0""#)
            && context.contains(r#""id":"m1""#)
            && !context.contains(r#""id":"m2""#)
    );
    assert!(context.contains("(3 more unread"), "{context}");
    let rest: Value = serde_json::from_str(&hook(
        dir.path(),
        "UserPromptSubmit",
        &input,
        &["--max-messages", "10"],
    ))
    .unwrap();
    let context = rest["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(
        context.contains(r#""id":"m2""#)
            && context.contains(r#""id":"m4""#)
            && !context.contains(r#""id":"m0""#)
    );
    assert!(!context.contains("more unread"));
}

#[test]
fn a_hook_killed_before_claude_code_read_it_delivers_again() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Inbox::open(dir.path(), "local", "alice").unwrap();
    // More than a pipe holds (64 KiB), so the hook blocks writing until it is killed.
    let text = "y".repeat(1024);
    for id in 0..200 {
        inbox.append(&message(id, &text)).unwrap();
    }
    let huge = ["--max-messages", "1000", "--max-chars", "100000000"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_nsh"))
        .args(["mesh", "hook", "PostToolUse", "--inbox-dir"])
        .arg(dir.path())
        .args(huge)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(fixture("PostToolUse.json").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the hook is blocked on its full stdout"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let printed: Value = serde_json::from_str(&hook(
        dir.path(),
        "PostToolUse",
        &fixture("PostToolUse.json"),
        &huge,
    ))
    .unwrap();
    let context = printed["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert_eq!(
        context
            .matches(r#"{"from":"bob","to":"you","id":"m"#)
            .count(),
        200,
        "every message, once"
    );
    assert_eq!(
        hook(
            dir.path(),
            "PostToolUse",
            &fixture("PostToolUse.json"),
            &huge
        ),
        ""
    );
}

#[test]
fn hook_install_edits_the_user_settings_once_and_uninstall_restores_them() {
    let home = tempfile::tempdir().unwrap();
    let settings = home.path().join(".claude/settings.json");
    std::fs::create_dir_all(settings.parent().unwrap()).unwrap();
    let original =
        "{\n  \"theme\": \"dark\",\n  \"permissions\": { \"allow\": [\"Bash(ls)\"] }\n}\n";
    std::fs::write(&settings, original).unwrap();
    let nsh = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nsh"))
            .args(["mesh", "hook"])
            .args(args)
            .env("HOME", home.path())
            .env_remove("XDG_STATE_HOME")
            .env_remove("NSH_BACKUP_DIR")
            .output()
            .unwrap()
    };
    let install = || nsh(&["install", "--team", "local", "--agent", "alice"]);

    let unnamed = nsh(&["install"]);
    assert!(!unnamed.status.success());
    assert!(
        String::from_utf8_lossy(&unnamed.stderr).contains("--token-file FILE"),
        "{}",
        String::from_utf8_lossy(&unnamed.stderr)
    );

    let first = install();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let said = String::from_utf8(first.stdout).unwrap();
    assert!(
        said.contains("installed the nsh-mesh hooks") && said.contains("saved to"),
        "{said}"
    );
    let text = std::fs::read_to_string(&settings).unwrap();
    assert!(
        text.contains(r#""permissions": { "allow": ["Bash(ls)"] }"#),
        "the file's own layout is kept: {text}"
    );
    let written: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(written["theme"], "dark");
    let command = written["hooks"]["Stop"][0]["hooks"][0]["command"]
        .as_str()
        .unwrap();
    assert!(
        command.ends_with("nsh mesh hook Stop --team local --agent alice"),
        "{command}"
    );
    assert!(
        Path::new(command.split(' ').next().unwrap()).is_absolute(),
        "{command}"
    );
    let again = String::from_utf8(install().stdout).unwrap();
    assert!(again.contains("already"), "{again}");
    // The backup went to the one backups folder, not beside the settings.
    assert_eq!(
        std::fs::read_dir(settings.parent().unwrap())
            .unwrap()
            .count(),
        1
    );
    assert!(home.path().join(".local/state/nsh/backups").is_dir());

    let removed = nsh(&["uninstall"]);
    assert!(removed.status.success());
    assert!(String::from_utf8_lossy(&removed.stdout).contains("removed the nsh-mesh hooks"));
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), original);
}

#[test]
fn project_hooks_run_nsh_from_path_and_name_no_machine_of_ours() {
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_nsh"))
        .args([
            "mesh",
            "hook",
            "install",
            "--scope",
            "project",
            "--project-dir",
        ])
        .arg(project.path())
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8(output.stdout).unwrap();
    assert!(said.contains("NSH_MESH_TEAM"), "{said}");
    let text = std::fs::read_to_string(project.path().join(".claude/settings.json")).unwrap();
    let written: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        written["hooks"]["Stop"][0]["hooks"][0]["command"],
        "nsh mesh hook Stop"
    );
    assert!(!text.contains(env!("CARGO_BIN_EXE_nsh")), "{text}");
}
