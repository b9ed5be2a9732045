//! The `nsh` binary as a user meets it.

use assert_cmd::Command;
use predicates::prelude::*;

fn nsh() -> Command {
    Command::cargo_bin("nsh").expect("the nsh binary is built by cargo test")
}

#[test]
fn version_prints_the_crate_version() {
    nsh()
        .arg("--version")
        .assert()
        .success()
        .stdout(format!("nsh {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_lists_commands_and_hides_groups_without_verbs() {
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
    for command in ["up", "mesh", "gateway", "mcp", "agent", "operator"] {
        assert!(shown(command), "`{command}` missing:\n{help}");
    }
    // Groups with no verbs yet in this build must not be advertised.
    assert!(
        !shown("cluster"),
        "`cluster` has no verbs yet but is shown:\n{help}"
    );
}

#[test]
fn up_dry_run_prints_the_plan_and_is_honest_about_missing_parts() {
    nsh()
        .args(["up", "--bind", "127.0.0.1", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains("mesh-server  127.0.0.1:3456"))
        .stdout(predicate::str::contains(
            "mcp-daemon: each shared MCP server's first client starts one: nsh mcp run-once",
        ))
        .stdout(predicate::str::contains("not in this build").not())
        .stdout(predicate::str::contains(
            "mcp-gateway: start it by hand: nsh gateway run --config FILE",
        ))
        .stdout(predicate::str::contains("nothing was started"));
}

#[test]
fn bad_bind_address_names_the_flag() {
    nsh()
        .args(["up", "--bind", "not-an-ip"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--bind"));
}
