//! The mesh from a terminal against a real server: `nsh mesh send|inbox|presence`, and
//! `nsh mesh token --out|decode`.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use nsh_testenv::process::ManagedProcess;

fn nsh(mesh: &common::MeshProcess, args: &[&str], token: &Path) -> Output {
    Command::new(common::nsh_path())
        .args(args)
        .args(["--server", &mesh.url(), "--token-file"])
        .arg(token)
        .env_remove("NSH_MESH_SERVER")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn send_presence_and_inbox_work_from_a_terminal() {
    let mesh = common::MeshProcess::start().await;
    let alice = mesh.token_file("alice", &["ops"]);
    let bob = mesh.token_file("bob", &[]);
    let inbox = mesh.path("inbox");

    let offline = nsh(&mesh, &["mesh", "send", "--to", "bob", "hi"], &alice);
    assert!(!offline.status.success());
    let err = text(&offline.stderr);
    assert!(err.contains("error: recipient_offline: "), "{err}");

    let forbidden = nsh(&mesh, &["mesh", "send", "--group", "ops", "hi"], &bob);
    assert!(!forbidden.status.success());
    assert!(
        text(&forbidden.stderr)
            .contains("forbidden: this agent's token does not allow group `ops`"),
        "{}",
        text(&forbidden.stderr)
    );

    // bob follows its inbox: connected, it is online and receives. Killed on drop, a failed
    // assertion included; its stdout and stderr go to one log.
    let mut follow = Command::new(common::nsh_path());
    follow
        .args([
            "mesh",
            "inbox",
            "--follow",
            "--server",
            &mesh.url(),
            "--token-file",
        ])
        .arg(&bob)
        .arg("--inbox-dir")
        .arg(&inbox);
    let log = mesh.path("follow.log");
    let follow = ManagedProcess::spawn("nsh mesh inbox --follow", follow, &log).unwrap();
    let said = |needle: &'static str| {
        let log = log.clone();
        nsh_testenv::wait_for(needle, Duration::from_secs(20), move || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move { Ok(text.contains(needle).then_some(text)) }
        })
    };
    said("following the inbox").await;
    let presence = nsh(&mesh, &["mesh", "presence", "-o", "json"], &alice);
    assert!(presence.status.success(), "{}", text(&presence.stderr));
    let list: serde_json::Value = serde_json::from_slice(&presence.stdout).unwrap();
    let online: Vec<&str> = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["online"] == true)
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert!(online.contains(&"bob"), "{list}");
    let table = nsh(&mesh, &["mesh", "presence"], &alice);
    assert!(
        text(&table.stdout).contains("bob"),
        "{}",
        text(&table.stdout)
    );

    for message in ["first", "second\u{1b}[31m"] {
        let sent = nsh(&mesh, &["mesh", "send", "--to", "bob", message], &alice);
        assert!(sent.status.success(), "{}", text(&sent.stderr));
        assert!(text(&sent.stdout).starts_with("delivered (id "));
    }
    said("alice -> bob: first\n").await;
    let lines = said("alice -> bob: second").await;
    assert!(
        lines.contains("alice -> bob: second\\u{1b}[31m"),
        "a sender's control characters are shown escaped: {lines:?}"
    );
    drop(follow);

    // The follower stored them: `nsh mesh inbox` shows them unread until --mark-read.
    let unread = |extra: &[&str]| {
        let mut args = vec!["mesh", "inbox", "--inbox-dir", inbox.to_str().unwrap()];
        args.extend_from_slice(extra);
        nsh(&mesh, &args, &bob)
    };
    let shown = unread(&["-o", "json"]);
    assert_eq!(
        text(&shown.stdout).lines().count(),
        2,
        "{}",
        text(&shown.stdout)
    );
    let marked = unread(&["--mark-read"]);
    assert_eq!(text(&marked.stdout).lines().count(), 2);
    let after = unread(&[]);
    assert!(
        text(&after.stdout).contains("no unread messages for alpha/bob"),
        "{}",
        text(&after.stdout)
    );
}

#[test]
fn tokens_are_written_private_and_never_over_a_file_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("alpha");
    let run = |args: &[&str]| {
        Command::new(common::nsh_path())
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    assert!(run(&["mesh", "keygen", "--out", "alpha"]).status.success());
    let mint = [
        "mesh",
        "token",
        "--team",
        "alpha",
        "--agent",
        "a",
        "--key-file",
        "alpha",
    ];
    let first = run(&[&mint[..], &["--out", "a.jwt"]].concat());
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(first.stdout.is_empty(), "the token goes to the file only");
    let path = dir.path().join("a.jwt");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let written = std::fs::read(&path).unwrap();

    let again = run(&[&mint[..], &["--out", "a.jwt"]].concat());
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("pass --force"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read(&path).unwrap(), written, "left as it was");
    let forced = run(&[&mint[..], &["--out", "a.jwt", "--force"]].concat());
    assert!(forced.status.success());
    assert_ne!(std::fs::read(&path).unwrap(), written, "a new token");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let decoded = run(&[
        "mesh",
        "token",
        "decode",
        "--token-file",
        "a.jwt",
        "--key-file",
        "alpha",
    ]);
    let shown = text(&decoded.stdout);
    assert!(
        shown.contains("team:      alpha") && shown.contains("signature: valid"),
        "{shown}"
    );

    // A key file named other than the team: the server would refuse the token; say so.
    std::fs::copy(&key, dir.path().join("alpha.key")).unwrap();
    let renamed = run(&[
        "mesh",
        "token",
        "--team",
        "alpha",
        "--agent",
        "a",
        "--key-file",
        "alpha.key",
    ]);
    assert!(renamed.status.success());
    assert!(
        text(&renamed.stderr)
            .contains("warning: --key-file is named `alpha.key` but --team is `alpha`"),
        "{}",
        text(&renamed.stderr)
    );
    let matching = run(&mint);
    assert!(
        !text(&matching.stderr).contains("warning"),
        "{}",
        text(&matching.stderr)
    );
}
