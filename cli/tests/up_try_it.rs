//! `nsh up` as a newcomer meets it: every command it prints runs as printed, and two agents
//! exchange a message with them; a busy port names the flag that picks another.

mod common;

use std::process::Command;
use std::time::Duration;

use nsh_testenv::process::ManagedProcess;

fn nsh() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nsh"));
    // A newcomer's shell: no nsh configuration in the environment.
    for var in ["NSH_MESH_SERVER", "NSH_MESH_TOKEN_FILE", "NSH_MESH_TOKEN"] {
        command.env_remove(var);
    }
    command
}

/// Starts `nsh up` and reads its output up to the running line.
fn up(data: &std::path::Path) -> (common::up::Up, Vec<String>) {
    let mut command = nsh();
    command
        .args([
            "up",
            "--mesh-port",
            "0",
            "--gateway-port",
            "0",
            "--data-dir",
        ])
        .arg(data)
        // No npx or uvx: no gateway upstream to start, this test is about the mesh lines.
        .env("PATH", data);
    let (up, _, lines) = common::up::start(command);
    (up, lines)
}

fn sh(line: &str) -> std::process::Output {
    let mut command = Command::new("sh");
    command.args(["-c", line]);
    for var in ["NSH_MESH_SERVER", "NSH_MESH_TOKEN_FILE", "NSH_MESH_TOKEN"] {
        command.env_remove(var);
    }
    command.output().unwrap()
}

#[tokio::test]
async fn every_printed_command_works_as_printed() {
    let data = tempfile::tempdir().unwrap();
    let (_up, lines) = up(data.path());
    let text = lines.join("\n");
    let try_it = lines
        .iter()
        .position(|l| l.starts_with("try it from a terminal:"))
        .unwrap();
    let commands: Vec<&str> = lines[try_it..]
        .iter()
        .filter_map(|l| l.strip_prefix("  "))
        .collect();
    assert_eq!(commands.len(), 2, "follow, send:\n{text}");
    assert!(
        !text.contains("NAME"),
        "no placeholders to fill in:\n{text}"
    );
    // nsh up minted the tokens, which allow groups (a token without them cannot join any).
    let alice = data.path().join("tokens/alice.jwt");
    let decoded = nsh()
        .args(["mesh", "token", "decode", "--token-file"])
        .arg(&alice)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&decoded.stdout).contains("groups:    *"));

    // Killed on drop, a failed assertion included; its stdout and stderr go to one log.
    let mut follow = Command::new("sh");
    follow
        .args(["-c", &format!("exec {}", commands[0])])
        .env_remove("NSH_MESH_SERVER");
    let log = data.path().join("follow.log");
    let _follow = ManagedProcess::spawn("nsh mesh inbox --follow", follow, &log).unwrap();
    let said = |needle: &'static str| {
        let log = log.clone();
        nsh_testenv::wait_for(needle, Duration::from_secs(20), move || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move { Ok(text.contains(needle).then_some(text)) }
        })
    };
    let connected = said("following the inbox").await;
    assert!(
        !connected.contains('\u{1b}'),
        "no colour codes into a file: {connected:?}"
    );

    let sent = sh(commands[1]);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(String::from_utf8_lossy(&sent.stdout).starts_with("delivered"));
    said("alice -> bob: hello from alice").await;
}

#[test]
fn a_busy_port_names_the_flag_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let data = tempfile::tempdir().unwrap();
    let out = nsh()
        .args(["up", "--mesh-port", &port, "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("pick another with --mesh-port"), "{err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
}
