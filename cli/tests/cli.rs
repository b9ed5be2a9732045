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
fn help_lists_up_and_hides_groups_without_verbs() {
    let output = nsh()
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let help = String::from_utf8(output).unwrap();
    assert!(help.contains("up "), "{help}");
    // No group has verbs yet in this build; none may be advertised.
    for group in ["mesh", "gateway", "mcp", "agent", "operator", "cluster"] {
        assert!(
            !help
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{group} "))),
            "`{group}` has no verbs yet but is shown:\n{help}"
        );
    }
}

#[test]
fn up_prints_the_plan_and_is_honest_about_missing_parts() {
    nsh()
        .args(["up", "--bind", "127.0.0.1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("mesh-server"))
        .stdout(predicate::str::contains("127.0.0.1:3456"))
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
