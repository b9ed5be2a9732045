//! `nsh up` as a newcomer meets it: every command it prints runs as printed, and two agents
//! exchange a message with them; a busy port names the flag that picks another.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nsh() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nsh"));
    // A newcomer's shell: no nsh configuration in the environment.
    for var in ["NSH_MESH_SERVER", "NSH_MESH_TOKEN_FILE", "NSH_MESH_TOKEN"] {
        command.env_remove(var);
    }
    command
}

/// Starts `nsh up` and reads its output up to the last hint; returns it with the printed lines.
fn up(data: &std::path::Path) -> (Killed, Vec<String>) {
    let mut child = nsh()
        .args(["up", "--mesh-port", "0", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        let last = line.starts_with("an agent's MCP client runs:");
        lines.push(line);
        if last {
            break;
        }
    }
    (Killed(child), lines)
}

fn sh(line: &str) -> std::process::Output {
    let mut command = Command::new("sh");
    command.args(["-c", line]);
    for var in ["NSH_MESH_SERVER", "NSH_MESH_TOKEN_FILE", "NSH_MESH_TOKEN"] {
        command.env_remove(var);
    }
    command.output().unwrap()
}

#[test]
fn every_printed_command_works_as_printed() {
    let data = tempfile::tempdir().unwrap();
    let (_up, lines) = up(data.path());
    let text = lines.join("\n");
    let try_it = lines.iter().position(|l| l.starts_with("try it:")).unwrap();
    let commands: Vec<&str> = lines[try_it..]
        .iter()
        .filter_map(|l| l.strip_prefix("  "))
        .collect();
    assert_eq!(commands.len(), 4, "two tokens, follow, send:\n{text}");
    assert!(
        !text.contains("NAME"),
        "no placeholders to fill in:\n{text}"
    );

    for token in &commands[..2] {
        let out = sh(token);
        assert!(
            out.status.success(),
            "{token}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The tokens allow groups (a token without them cannot join any).
    let alice = data.path().join("tokens/alice.jwt");
    let decoded = nsh()
        .args(["mesh", "token", "decode", "--token-file"])
        .arg(&alice)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&decoded.stdout).contains("groups:    *"));
    // Printed twice (nsh up run again): the same lines work again.
    assert!(sh(commands[0]).status.success());

    let mut follow = Command::new("sh")
        .args(["-c", &format!("exec {}", commands[2])])
        .env_remove("NSH_MESH_SERVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut follow_err = BufReader::new(follow.stderr.take().unwrap());
    let mut said = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !said.contains("following the inbox") {
        assert!(Instant::now() < deadline, "follow never connected: {said}");
        let mut line = String::new();
        if follow_err.read_line(&mut line).unwrap() == 0 {
            panic!("follow exited: {said}");
        }
        said.push_str(&line);
    }
    assert!(
        !said.contains('\u{1b}'),
        "no colour codes into a pipe: {said:?}"
    );
    let follow_out = follow.stdout.take().unwrap();
    let follow = Killed(follow);

    let sent = sh(commands[3]);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(String::from_utf8_lossy(&sent.stdout).starts_with("delivered"));
    let mut line = String::new();
    BufReader::new(follow_out).read_line(&mut line).unwrap();
    assert!(line.contains("alice -> bob: hello from alice"), "{line}");
    drop(follow);
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
