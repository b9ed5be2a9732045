//! The `nsh` binary as a user meets it.

use assert_cmd::Command;
use predicates::prelude::*;

fn nsh() -> Command {
    Command::cargo_bin("nsh").expect("the nsh binary is built by cargo test")
}

#[test]
fn version_prints_the_crate_version() {
    nsh().arg("--version").assert().success().stdout(
        predicate::str::is_match(format!(
            r"^nsh {} \(commit [0-9a-f]{{12}}\)\n$",
            regex_escape(env!("CARGO_PKG_VERSION"))
        ))
        .unwrap(),
    );
    // `nsh version` says the same.
    let flag = nsh().arg("--version").output().unwrap().stdout;
    nsh()
        .arg("version")
        .assert()
        .success()
        .stdout(String::from_utf8(flag).unwrap());
}

fn regex_escape(text: &str) -> String {
    text.replace('.', r"\.")
}

#[test]
fn completion_scripts_name_the_commands() {
    for (shell, marker) in [
        ("bash", "_nsh()"),
        ("zsh", "#compdef nsh"),
        ("fish", "complete -c nsh"),
    ] {
        let output = nsh().args(["completion", shell]).assert().success();
        let script = String::from_utf8(output.get_output().stdout.clone()).unwrap();
        assert!(
            script.contains(marker),
            "{shell}: {}",
            &script[..200.min(script.len())]
        );
        assert!(
            script.contains("list-installed"),
            "{shell} completes the verbs"
        );
    }
}

#[test]
fn agent_launch_takes_claude_codes_spelling_of_permission_modes() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [
        "acceptEdits",
        "accept-edits",
        "bypassPermissions",
        "dontAsk",
    ] {
        let output = nsh()
            .args(["agent", "launch", "--dry-run", "--permission-mode", mode])
            .env("HOME", dir.path())
            .env_remove("XDG_CONFIG_HOME")
            .current_dir(dir.path())
            .assert()
            .success();
        let said = String::from_utf8(output.get_output().stdout.clone()).unwrap();
        let expected = match mode {
            "accept-edits" => "acceptEdits",
            other => other,
        };
        assert!(
            said.contains(&format!("--permission-mode {expected}")),
            "{said}"
        );
    }
}

#[test]
fn help_lists_every_command() {
    let output = nsh()
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let help = String::from_utf8(output).unwrap();
    let shown = |name: &str| {
        help.lines()
            .any(|l| l.trim_start().starts_with(&format!("{name} ")))
    };
    for command in [
        "up", "down", "mesh", "gateway", "mcp", "agent", "operator", "cluster",
    ] {
        assert!(shown(command), "`{command}` missing:\n{help}");
    }
}

#[test]
fn up_dry_run_prints_the_plan_and_is_honest_about_missing_parts() {
    // No npx or uvx on PATH: the plan says which presets are left out and why.
    let bare = tempfile::tempdir().unwrap();
    nsh()
        .args([
            "up",
            "--bind",
            "127.0.0.1",
            "--dry-run",
            "--agents",
            "ann,ben,cy",
        ])
        .env("PATH", bare.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("mesh-server  127.0.0.1:3456"))
        .stdout(predicate::str::contains(
            "mcp-gateway  not started           no preset below can run here",
        ))
        .stdout(predicate::str::contains(
            "(preset memory left out: `npx` is not on PATH; install it and run nsh up again)",
        ))
        .stdout(predicate::str::contains("mcp-daemon"))
        .stdout(predicate::str::contains(
            "agents of team local: ann, ben, cy",
        ))
        .stdout(predicate::str::contains("nothing was started"));
}

#[test]
fn up_refuses_a_bad_agent_name_naming_the_flag() {
    nsh()
        .args(["up", "--dry-run", "--agents", "alice,Bad Name"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--agents: `Bad Name`"));
}

#[test]
fn bad_bind_address_names_the_flag() {
    nsh()
        .args(["up", "--bind", "not-an-ip"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--bind"));
}

/// Runs `nsh args` with `stdin`; its stderr.
fn failing(args: &[&str], stdin: &str) -> String {
    let output = nsh().args(args).write_stdin(stdin).assert().failure();
    String::from_utf8(output.get_output().stderr.clone()).unwrap()
}

/// One `error:` line, and no part of it said twice (a cause already quoted by its error).
fn said_once(err: &str) {
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    let line = errors[0];
    for part in line.split(": ").filter(|p| p.len() > 12) {
        assert_eq!(line.matches(part).count(), 1, "`{part}` said twice: {line}");
    }
}

#[test]
fn errors_are_printed_once_with_their_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(path("garbage.jwt"), "garbage").unwrap();
    std::fs::write(path("expired.jwt"), alice_token(3 * 3600)).unwrap();

    let missing = failing(&["mesh", "client", "--token-file", &path("none.jwt")], "");
    said_once(&missing);
    assert!(missing.contains("No such file"), "{missing}");
    let malformed = failing(
        &["mesh", "client", "--token-file", &path("garbage.jwt")],
        "",
    );
    said_once(&malformed);
    assert!(malformed.contains("nsh mesh token"), "{malformed}");
    let old = failing(
        &["mesh", "client", "--token-file", &path("expired.jwt")],
        "",
    );
    said_once(&old);
    assert!(old.contains("expired"), "{old}");
    let hook = failing(
        &[
            "mesh",
            "hook",
            "Stop",
            "--team",
            "t",
            "--agent",
            "a",
            "--inbox-dir",
            &path("in"),
        ],
        "not json",
    );
    said_once(&hook);
    assert!(hook.contains("not the JSON Claude Code sends"), "{hook}");
    let scheme = failing(
        &[
            "mesh",
            "send",
            "--to",
            "b",
            "x",
            "--token-file",
            &path("expired.jwt"),
            "--server",
            "ftp://x",
        ],
        "",
    );
    said_once(&scheme);
    assert!(
        scheme.contains("ws://HOST:PORT or http://HOST:PORT"),
        "every accepted scheme: {scheme}"
    );
}

/// Runs `nsh args` under a pseudo-terminal (util-linux `script`), with `env` set; its output.
fn on_a_terminal(args: &str, env: &[(&str, &str)]) -> String {
    let nsh = env!("CARGO_BIN_EXE_nsh");
    let output = std::process::Command::new("script")
        .args(["-qec", &format!("{nsh} {args}"), "/dev/null"])
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn logs_are_coloured_only_on_a_terminal_without_no_color() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("util-linux `script` is needed to give nsh a terminal");
    }
    let dir = tempfile::tempdir().unwrap();
    // A command that logs at info: a key written.
    let key = |name: &str| format!("mesh keygen --out {}", dir.path().join(name).display());
    let coloured = on_a_terminal(&key("a"), &[]);
    assert!(coloured.contains("team key written"), "{coloured}");
    assert!(
        coloured.contains('\u{1b}'),
        "a terminal gets colour: {coloured:?}"
    );
    let plain = on_a_terminal(&key("b"), &[("NO_COLOR", "1")]);
    assert!(plain.contains("team key written"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "NO_COLOR: {plain:?}");
    let piped = nsh()
        .args(["mesh", "keygen", "--out"])
        .arg(dir.path().join("c"))
        .output()
        .unwrap();
    let piped = String::from_utf8(piped.stderr).unwrap();
    assert!(
        piped.contains("team key written") && !piped.contains('\u{1b}'),
        "{piped:?}"
    );
}

#[test]
fn the_mesh_client_run_by_hand_says_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let token = alice_token(0);
    let file = dir.path().join("alice.jwt");
    std::fs::write(&file, token).unwrap();
    // On a terminal it would wait for an MCP client forever: `timeout` ends it.
    let said = on_a_terminal(
        &format!(
            "--version >/dev/null; timeout 2 {} mesh client --server ws://127.0.0.1:1 --token-file {} --inbox-dir {}",
            env!("CARGO_BIN_EXE_nsh"),
            file.display(),
            dir.path().join("inbox").display()
        ),
        &[],
    );
    assert!(
        said.contains("is an MCP stdio server") && said.contains("nsh mesh send"),
        "{said}"
    );
}

#[test]
fn tables_fit_the_terminal() {
    let home = tempfile::tempdir().unwrap();
    let long = "x".repeat(150);
    std::fs::create_dir_all(home.path().join(".cursor")).unwrap();
    std::fs::write(
        home.path().join(".cursor/mcp.json"),
        format!(r#"{{"mcpServers": {{"wide": {{"command": "/opt/{long}/server", "args": ["{long}"]}}}}}}"#),
    )
    .unwrap();
    let said = on_a_terminal(
        &format!(
            "--version >/dev/null; stty cols 80; {} mcp list-installed --client cursor",
            env!("CARGO_BIN_EXE_nsh")
        ),
        &[("HOME", home.path().to_str().unwrap())],
    );
    assert!(said.contains("wide"), "{said}");
    for line in said.lines() {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}",
            line.chars().count()
        );
    }
}

/// A token for `alice` of team `alpha`, valid for an hour from `age_secs` ago (older than an
/// hour: expired), signed with a key of its own.
fn alice_token(age_secs: u64) -> String {
    use nsh_mesh_transport::token::{self, TeamKey, TokenRequest};
    let key = TeamKey::from_file_contents(TeamKey::generate_text().as_bytes()).unwrap();
    let request = TokenRequest {
        team: "alpha",
        agent: "alice",
        groups: &[],
        ttl: std::time::Duration::from_secs(3600),
        audiences: &[],
    };
    token::mint(&request, &key, token::now_unix() - age_secs).unwrap()
}
