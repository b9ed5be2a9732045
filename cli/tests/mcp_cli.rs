//! `nsh mcp install|list-installed|doctor|uninstall` as a user runs them, with a fixture home:
//! doctor checks real MCP servers (the official TypeScript SDK over stdio and streamable HTTP,
//! and this project's `nsh mesh client`) and names what is wrong with broken ones.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use nsh_testenv::process::ManagedProcess;
use serde_json::Value;

struct Home {
    root: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        for dir in ["home", "project", "daemons"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        std::fs::set_permissions(
            root.path().join("daemons"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        Self { root }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    fn nsh(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nsh"))
            .args(args)
            .current_dir(self.path("project"))
            .env("HOME", self.path("home"))
            .env_remove("XDG_STATE_HOME")
            .env_remove("NSH_BACKUP_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("CODEX_HOME")
            .env("NSH_MCP_RUNTIME_DIR", self.path("daemons"))
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.nsh(args);
        assert!(
            output.status.success(),
            "nsh {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

fn echo_server() -> String {
    nsh_testenv::peers::interop_dir()
        .join("mcp-echo-server.mjs")
        .display()
        .to_string()
}

fn by_server(report: &Value, name: &str) -> Value {
    report
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["server"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

#[tokio::test]
async fn doctor_checks_real_servers_and_names_what_is_broken() {
    let home = Home::new();
    let node = nsh_testenv::peers::node().unwrap().display().to_string();
    let server = echo_server();

    // The SDK's server over streamable HTTP.
    // Port 0: the server picks one and says which.
    let mut http = Command::new(&node);
    http.arg(&server).arg("--http").arg("0");
    let log = home.path("http.log");
    let _http = ManagedProcess::spawn("mcp echo over http", http, &log).unwrap();
    let port = nsh_testenv::logged_addr(&log, "listening", "addr", Duration::from_secs(15))
        .await
        .port();

    // The mesh preset needs a token: the user's agent settings point at one.
    std::fs::create_dir_all(home.path("home/.config/nsh")).unwrap();
    home.ok(&[
        "mesh",
        "keygen",
        "--out",
        home.path("alpha.key").to_str().unwrap(),
    ]);
    let token = home.ok(&[
        "mesh",
        "token",
        "--team",
        "alpha",
        "--agent",
        "alice",
        "--key-file",
        home.path("alpha.key").to_str().unwrap(),
    ]);
    std::fs::write(home.path("alice.jwt"), token).unwrap();
    std::fs::write(
        home.path("home/.config/nsh/agent.yaml"),
        format!(
            "mesh:\n  tokenFile: {}\n  server: ws://127.0.0.1:1\n",
            home.path("alice.jwt").display()
        ),
    )
    .unwrap();

    let url = format!("http://127.0.0.1:{port}/mcp");
    let said = home.ok(&[
        "mcp",
        "install",
        "echo",
        "--client",
        "cursor",
        "--command",
        &node,
        "--",
        &server,
    ]);
    assert!(said.contains("installed `echo` in Cursor (user)"), "{said}");
    home.ok(&[
        "mcp",
        "install",
        "echo-http",
        "--client",
        "vscode",
        "--url",
        &url,
    ]);
    home.ok(&["mcp", "install", "mesh", "--client", "codex"]);
    home.ok(&[
        "mcp",
        "install",
        "missing",
        "--client",
        "gemini",
        "--command",
        "/nonexistent/mcp-server",
    ]);
    home.ok(&[
        "mcp",
        "install",
        "crashy",
        "--client",
        "claude-code",
        "--scope",
        "project",
        "--command",
        "sh",
        "--",
        "-c",
        "echo boom >&2; exit 3",
    ]);
    // Nobody listens on port 1: the cause is named, not rmcp's wrapper types.
    home.ok(&[
        "mcp",
        "install",
        "refused",
        "--client",
        "cursor",
        "--url",
        "http://127.0.0.1:1/mcp",
    ]);
    home.ok(&[
        "mcp",
        "install",
        "hangs",
        "--client",
        "windsurf",
        "--command",
        "sleep",
        "--",
        "30",
    ]);

    let listed: Value =
        serde_json::from_str(&home.ok(&["mcp", "list-installed", "--json"])).unwrap();
    let names: Vec<&str> = listed["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for name in ["echo", "echo-http", "mesh", "missing", "crashy", "hangs"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let table = home.ok(&["mcp", "list-installed"]);
    assert!(
        table.contains("CLIENT") && table.contains("echo-http") && table.contains(&url),
        "{table}"
    );

    let output = home.nsh(&["mcp", "doctor", "--json", "--timeout", "5s"]);
    assert!(!output.status.success(), "broken servers make doctor fail");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let healthy = |name: &str, detail: &str| {
        let row = by_server(&report, name);
        assert_eq!(row["ok"], true, "{row}");
        assert!(row["detail"].as_str().unwrap().contains(detail), "{row}");
    };
    healthy("echo", "interop-echo 1.0.0: 1 tool");
    healthy("echo-http", "interop-echo 1.0.0: 1 tool");
    healthy("mesh", "nsh-mesh");
    let failed = |name: &str, detail: &str| {
        let row = by_server(&report, name);
        assert_eq!(row["ok"], false, "{row}");
        assert!(row["detail"].as_str().unwrap().contains(detail), "{row}");
    };
    failed("missing", "command not found: `/nonexistent/mcp-server`");
    failed(
        "crashy",
        "exited before completing the MCP handshake; stderr: boom",
    );
    failed("hangs", "no answer to initialize/tools/list within 5s");
    failed("refused", "Connection refused");
    let refused = by_server(&report, "refused")["detail"].to_string();
    assert!(!refused.contains("rmcp::"), "no Rust type names: {refused}");
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("Connection refused"),
        "said in the report only, not again in the log: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A config file that does not parse is reported, not skipped.
    std::fs::write(home.path("home/.gemini/settings.json"), "{ oops").unwrap();
    let report: Value = serde_json::from_slice(
        &home
            .nsh(&["mcp", "doctor", "--json", "--client", "gemini"])
            .stdout,
    )
    .unwrap();
    assert!(
        report[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("config file:"),
        "{report}"
    );
}

#[test]
fn install_and_uninstall_keep_the_rest_of_the_file_and_back_it_up() {
    let home = Home::new();
    let settings = home.path("home/.gemini/settings.json");
    std::fs::create_dir_all(settings.parent().unwrap()).unwrap();
    let original = "{\n  \"theme\": \"GitHub\",\n  \"mcpServers\": {}\n}\n";
    std::fs::write(&settings, original).unwrap();
    let said = home.ok(&[
        "mcp",
        "install",
        "tool",
        "--client",
        "gemini",
        "--command",
        "npx",
        "--env",
        "K=V",
        "--",
        "-y",
        "some-server",
    ]);
    assert!(said.contains("previous file saved to"), "{said}");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    assert_eq!(written["theme"], "GitHub");
    assert_eq!(written["mcpServers"]["tool"]["env"]["K"], "V");
    assert_eq!(written["mcpServers"]["tool"]["args"][1], "some-server");
    let said = home.ok(&["mcp", "uninstall", "tool", "--client", "gemini"]);
    assert!(
        said.contains("removed `tool` from Gemini CLI (user)"),
        "{said}"
    );
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), original);
    let backups = |dir: &str| {
        std::fs::read_dir(home.path(dir)).map_or(0, |entries| {
            entries
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    let name = name.to_string_lossy();
                    name.starts_with("settings.json.") && name.ends_with(".bak")
                })
                .count()
        })
    };
    assert_eq!(
        backups("home/.local/state/nsh/backups"),
        2,
        "one backup per edit, in the one backups folder"
    );
    assert_eq!(backups("home/.gemini"), 0, "none beside the file");

    // An entry of that name with other settings is not replaced without --force.
    let install = |command: &str, extra: &[&str]| {
        let mut args = vec![
            "mcp",
            "install",
            "tool",
            "--client",
            "gemini",
            "--command",
            command,
        ];
        args.extend_from_slice(extra);
        home.nsh(&args)
    };
    assert!(install("first", &[]).status.success());
    let installed = std::fs::read_to_string(&settings).unwrap();
    let refused = install("second", &[]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("`tool` is already in")
            && err.contains("-      \"command\": \"first\"")
            && err.contains("+      \"command\": \"second\"")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), installed);
    let dry = install("second", &["--force", "--dry-run"]);
    assert!(dry.status.success());
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(
        said.contains("+      \"command\": \"second\"") && said.contains("--dry-run"),
        "{said}"
    );
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), installed);
    assert!(install("second", &["--force"]).status.success());
    assert!(
        std::fs::read_to_string(&settings)
            .unwrap()
            .contains("\"second\"")
    );

    let output = home.nsh(&["mcp", "install", "x", "--client", "emacs"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("[possible values: claude-code,"));
    let output = home.nsh(&["mcp", "install", "nope", "--client", "cursor"]);
    let err = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        err.contains("there is no preset `nope`") && err.contains("--command"),
        "{err}"
    );
    assert!(
        !Path::new(&home.path("home/.cursor/mcp.json")).exists(),
        "nothing written on error"
    );
}

#[test]
fn install_shared_writes_a_config_that_runs_the_server_through_the_daemon() {
    let home = Home::new();
    let node = nsh_testenv::peers::node().unwrap().display().to_string();
    let server = echo_server();
    home.ok(&[
        "mcp",
        "install",
        "echo",
        "--client",
        "cursor",
        "--shared",
        "--command",
        &node,
        "--",
        &server,
    ]);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(home.path("home/.cursor/mcp.json")).unwrap())
            .unwrap();
    let entry = &config["mcpServers"]["echo"];
    assert_eq!(entry["command"], env!("CARGO_BIN_EXE_nsh"), "{entry}");
    assert_eq!(
        entry["args"],
        serde_json::json!(["mcp", "run-once", "--", node, server]),
        "{entry}"
    );

    // The client's view: doctor runs the config's command, which reaches a daemon-run server.
    let report: Value =
        serde_json::from_str(&home.ok(&["mcp", "doctor", "--client", "cursor", "--json"])).unwrap();
    assert_eq!(by_server(&report, "echo")["ok"], true, "{report}");
    let daemons: Value =
        serde_json::from_str(&home.ok(&["mcp", "daemon", "list", "--json"])).unwrap();
    assert_eq!(daemons.as_array().unwrap().len(), 1, "{daemons}");
    let name = daemons[0]["name"].as_str().unwrap();
    assert_eq!(name, "mcp-echo-server");
    home.ok(&["mcp", "daemon", "stop", name]);

    let refused = home.nsh(&[
        "mcp",
        "install",
        "web",
        "--client",
        "cursor",
        "--shared",
        "--url",
        "http://127.0.0.1:1/mcp",
    ]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("--shared applies to stdio servers"), "{why}");
}
