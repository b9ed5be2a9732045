//! `nsh agent launch` as a user runs it: layered files in a project and a home folder, the
//! command it prints or runs, and the MCP config and settings it hands to `claude`, checked
//! against Claude Code's formats with a JSON Schema validator (Python `jsonschema`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Workspace {
    root: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        for dir in ["home/.config/nsh", "project/src"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        // The token the agent settings name (`tokenFile: alice.jwt`, beside the settings).
        std::fs::write(root.path().join("home/.config/nsh/alice.jwt"), "a.b.c").unwrap();
        Self { root }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    fn write(&self, relative: &str, text: &str) {
        std::fs::write(self.path(relative), text).unwrap();
    }

    /// `nsh <args>` run from `project/src`, with this workspace's home.
    fn nsh(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nsh"))
            .args(args)
            .current_dir(self.path("project/src"))
            .env("HOME", self.path("home"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_STATE_HOME")
            .output()
            .unwrap()
    }
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Validates `document` against a fixture schema with the official Python `jsonschema`.
fn validate(schema: &str, document: &str) {
    let python = nsh_testenv::peers::python().unwrap();
    let schema = nsh_testenv::repo_root()
        .join("cli/tests/fixtures")
        .join(schema);
    let mut child = Command::new(python)
        .arg(nsh_testenv::peers::interop_dir().join("validate_json.py"))
        .arg(&schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(document.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{} does not conform to {}:\n{}",
        document,
        schema.display(),
        String::from_utf8_lossy(&output.stdout)
    );
}

const PROJECT: &str = "model: sonnet\nmcp:\n  presets: [github]\n  servers:\n    docs:\n      url: https://docs.example/mcp\n";

#[test]
fn team_member_runs_claude_with_a_config_claude_code_accepts() {
    let ws = Workspace::new();
    ws.write("project/.agent.yaml", PROJECT);
    // The user's file points `command` at a stand-in for claude that records what it got.
    let fake = ws.path("fake-claude");
    ws.write(
        "fake-claude",
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {0}/argv\nenv > {0}/env\n",
            ws.root.path().display()
        ),
    );
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ws.write(
        "home/.config/nsh/agent.yaml",
        &format!(
            "command: {}\nmesh:\n  tokenFile: alice.jwt\nenv:\n  NSH_TEST_MARK: from-user\n",
            fake.display()
        ),
    );
    let output = ws.nsh(&[
        "agent",
        "launch",
        "--profile",
        "team-member",
        "--",
        "-p",
        "hello world",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let argv: Vec<String> = std::fs::read_to_string(ws.path("argv"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(argv[0], "--mcp-config");
    assert_eq!(argv[2], "--settings");
    let at = |flag: &str| argv[argv.iter().position(|a| a == flag).unwrap() + 1].clone();
    assert_eq!(at("--model"), "sonnet");
    assert!(at("--append-system-prompt").contains("nsh mesh"));
    assert_eq!(&argv[argv.len() - 2..], ["-p", "hello world"]);
    assert!(
        std::fs::read_to_string(ws.path("env"))
            .unwrap()
            .contains("NSH_TEST_MARK=from-user")
    );

    let mcp = std::fs::read_to_string(&argv[1]).unwrap();
    validate("claude-code-mcp-config.schema.json", &mcp);
    let mcp: serde_json::Value = serde_json::from_str(&mcp).unwrap();
    let names: Vec<&String> = mcp["mcpServers"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["docs", "filesystem", "git", "github", "mesh"]);
    assert_eq!(
        mcp["mcpServers"]["mesh"]["command"],
        env!("CARGO_BIN_EXE_nsh")
    );
    assert_eq!(
        mcp["mcpServers"]["filesystem"]["args"][2],
        ws.path("project").display().to_string()
    );
    let settings = std::fs::read_to_string(&argv[3]).unwrap();
    validate("claude-code-hooks-settings.schema.json", &settings);
    assert!(settings.contains("mesh hook UserPromptSubmit"));
    // The hooks deliver this agent's mail only: the token file names the team and the agent.
    let mesh_args: Vec<&str> = mcp["mcpServers"]["mesh"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let token_file = mesh_args[mesh_args.iter().position(|a| *a == "--token-file").unwrap() + 1];
    assert_eq!(
        token_file,
        ws.path("home/.config/nsh/alice.jwt").display().to_string(),
        "a relative tokenFile is under the settings file's folder"
    );
    assert!(
        settings.contains(&format!(
            "mesh hook UserPromptSubmit --token-file {token_file}"
        )),
        "{settings}"
    );
}

#[test]
fn dry_run_prints_the_quoted_command_and_the_files_without_writing_them() {
    let ws = Workspace::new();
    ws.write("project/.agent.yaml", PROJECT);
    let out = stdout(&ws.nsh(&[
        "agent",
        "launch",
        "--dry-run",
        "--model",
        "opus",
        "--",
        "-p",
        "it's done",
    ]));
    let command = out.lines().last().unwrap();
    assert!(command.starts_with("claude --mcp-config "), "{command}");
    assert!(command.contains("--model opus"), "{command}");
    assert!(
        command.ends_with(r#"-p "it's done""#) || command.ends_with(r"-p 'it'\''s done'"),
        "{command}"
    );
    let mcp_line = out
        .lines()
        .find(|l| l.starts_with("# MCP servers (--mcp-config): "))
        .unwrap();
    let path = mcp_line.rsplit(": ").next().unwrap();
    assert!(command.contains(path));
    assert!(!Path::new(path).exists(), "a dry run writes nothing");
    assert!(out.contains("\"mcpServers\""));
    // solo-developer has no hooks: no settings file.
    assert!(!command.contains("--settings"));
}

#[test]
fn explain_says_where_each_value_came_from() {
    let ws = Workspace::new();
    ws.write("project/.agent.yaml", PROJECT);
    ws.write("home/.config/nsh/agent.yaml", "model: opus\n");
    let out = stdout(&ws.nsh(&["agent", "config", "--explain"]));
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap()
            .to_owned()
    };
    assert!(
        out.lines()
            .next()
            .unwrap()
            .starts_with("profile = \"solo-developer\""),
        "{out}"
    );
    assert!(line("model = \"opus\"").ends_with(&format!(
        "# {}",
        ws.path("home/.config/nsh/agent.yaml").display()
    )));
    assert!(
        line("mcp.presets[2] = \"github\"")
            .ends_with(&format!("# {}", ws.path("project/.agent.yaml").display()))
    );
    assert!(line("command = \"claude\"").ends_with("# built-in defaults"));
}

#[test]
fn bad_settings_fail_with_the_file_line_and_key() {
    let ws = Workspace::new();
    ws.write(
        "project/.agent.yaml",
        "model: opus\nmcp:\n  preset: [github]\n",
    );
    let output = ws.nsh(&["agent", "launch", "--dry-run"]);
    assert!(!output.status.success());
    let err = String::from_utf8(output.stderr).unwrap();
    assert!(
        err.contains(&format!(
            "{}: error: line 3 column 3: unknown field `preset`",
            ws.path("project/.agent.yaml").display()
        )),
        "{err}"
    );

    ws.write("project/.agent.yaml", "mcp:\n  presets: [gopher]\n");
    let err = String::from_utf8(ws.nsh(&["agent", "launch", "--dry-run"]).stderr).unwrap();
    assert!(err.contains("there is no preset `gopher`"), "{err}");

    ws.write("project/.agent.yaml", "");
    let err = String::from_utf8(
        ws.nsh(&["agent", "launch", "--dry-run", "--profile", "team-member"])
            .stderr,
    )
    .unwrap();
    assert!(
        err.contains("the `mesh` preset needs `mesh.tokenFile`"),
        "{err}"
    );

    ws.write(
        "home/.config/nsh/agent.yaml",
        "command: /nonexistent/claude\n",
    );
    let err = String::from_utf8(ws.nsh(&["agent", "launch"]).stderr).unwrap();
    assert!(
        err.contains("`/nonexistent/claude` is not on PATH"),
        "{err}"
    );
}

#[test]
fn the_published_schema_matches_the_code() {
    let ws = Workspace::new();
    let generated = stdout(&ws.nsh(&["agent", "schema"]));
    let committed = nsh_testenv::repo_root().join("docs/agent-config.schema.json");
    assert_eq!(
        std::fs::read_to_string(&committed).unwrap_or_default(),
        generated,
        "docs/agent-config.schema.json is stale: run `nsh agent schema > docs/agent-config.schema.json`"
    );
}

#[test]
fn the_team_member_dry_run_prints_an_mcp_config_claude_code_accepts() {
    let ws = Workspace::new();
    ws.write(
        "home/.config/nsh/agent.yaml",
        "mesh:\n  tokenFile: alice.jwt\n",
    );
    let out = stdout(&ws.nsh(&["agent", "launch", "--profile", "team-member", "--dry-run"]));
    // Each generated file is printed after a `# purpose: path` line.
    let block = |title: &str| {
        out.lines()
            .skip_while(|l| !l.starts_with(title))
            .skip(1)
            .take_while(|l| !l.starts_with('#') && !l.starts_with("claude "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    validate(
        "claude-code-mcp-config.schema.json",
        &block("# MCP servers (--mcp-config): "),
    );
    validate(
        "claude-code-hooks-settings.schema.json",
        &block("# Claude Code settings with the mesh hooks (--settings): "),
    );
    let command = out.lines().last().unwrap();
    assert!(
        command.contains("--settings ") && command.contains("--append-system-prompt "),
        "{command}"
    );
}

#[test]
fn with_mcp_share_shareable_presets_run_through_the_mcp_daemon() {
    let ws = Workspace::new();
    ws.write(
        "home/.config/nsh/agent.yaml",
        "mesh:\n  tokenFile: alice.jwt\nmcp:\n  share: true\n",
    );
    let out = stdout(&ws.nsh(&["agent", "launch", "--profile", "team-member", "--dry-run"]));
    let config: serde_json::Value = serde_json::from_str(
        &out.lines()
            .skip_while(|l| !l.starts_with("# MCP servers (--mcp-config): "))
            .skip(1)
            .take_while(|l| !l.starts_with('#') && !l.starts_with("claude "))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let servers = &config["mcpServers"];
    let nsh = env!("CARGO_BIN_EXE_nsh");
    for shared in ["filesystem", "git"] {
        assert_eq!(servers[shared]["command"], nsh, "{shared}: {config}");
        let args: Vec<&str> = servers[shared]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[..3], ["mcp", "run-once", "--"], "{shared}: {args:?}");
    }
    // The mesh client is this agent's own: never shared.
    assert_eq!(servers["mesh"]["args"][0], "mesh", "{config}");
}
