//! `nsh up` runs the whole local stack: two agents started from its printed lines (a stand-in
//! for `claude` that drives the printed MCP config with the official MCP SDK client) exchange a
//! message, see it through the hooks, and share one MCP server through the local gateway; Ctrl-C
//! leaves no process behind. `--detach` and `nsh down`, and keys kept across runs.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nsh_testenv::repo_root;

/// Killed however the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A temporary home, a `claude` stand-in on PATH, the interop folder (where the presets' npm
/// packages are installed) as the project folder.
struct Machine {
    home: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    project: PathBuf,
}

impl Machine {
    fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        let bin = home.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let standin = repo_root().join("mesh/interop/claude-standin.mjs");
        let claude = bin.join("claude");
        std::fs::write(
            &claude,
            format!("#!/bin/sh\nexec node {} \"$@\"\n", standin.display()),
        )
        .unwrap();
        std::fs::set_permissions(&claude, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        Self {
            data: home.path().join("data"),
            bin,
            project: repo_root().join("mesh/interop"),
            home,
        }
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        let path = std::env::var("PATH").unwrap_or_default();
        command
            .current_dir(&self.project)
            .env("HOME", self.home.path())
            .env("PATH", format!("{}:{path}", self.bin.display()))
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("NSH_MCP_RUNTIME_DIR");
        for var in ["NSH_MESH_SERVER", "NSH_MESH_TOKEN_FILE", "NSH_MESH_TOKEN"] {
            command.env_remove(var);
        }
        command
    }

    fn nsh(&self) -> Command {
        self.command(env!("CARGO_BIN_EXE_nsh"))
    }
}

/// Starts `nsh up` and reads its output up to the running line.
fn up(machine: &Machine, extra: &[&str]) -> (common::up::Up, BufReader<ChildStdout>, Vec<String>) {
    let mut command = machine.nsh();
    command
        .args([
            "up",
            "--mesh-port",
            "0",
            "--gateway-port",
            "0",
            "--data-dir",
        ])
        .arg(&machine.data)
        .args(extra);
    common::up::start(command)
}

/// One agent session: the printed line, run as printed.
struct Session {
    _child: Killed,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Session {
    fn start(machine: &Machine, line: &str) -> (Self, serde_json::Value) {
        let mut child = machine
            .command("sh")
            .args(["-c", line])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut session = Self {
            _child: Killed(child),
            stdin,
            stdout,
        };
        let ready = session.read();
        (session, ready)
    }

    fn read(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn ask(&mut self, command: serde_json::Value) -> serde_json::Value {
        writeln!(self.stdin, "{command}").unwrap();
        self.read()
    }

    fn call(&mut self, server: &str, name: &str, args: serde_json::Value) -> String {
        let answer = self.ask(serde_json::json!({
            "op": "call", "server": server, "name": name, "args": args
        }));
        assert_eq!(answer["ok"], true, "{server} {name}: {answer}");
        answer["text"].as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the gateway lists `tool` (its upstreams start after it listens).
    fn wait_for_tool(&mut self, tool: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let answer = self.ask(serde_json::json!({ "op": "tools" }));
            let tools = answer["servers"]["nsh-gateway"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if tools.iter().any(|t| t == tool) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway never listed {tool}: {answer}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Processes that belong to the stack in `data`: their command line or environment names it.
fn stack_processes(data: &Path) -> Vec<String> {
    let needle = data.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let read = |what: &str| {
            std::fs::read(entry.path().join(what))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default()
        };
        let (cmdline, environ) = (read("cmdline"), read("environ"));
        // A zombie has neither; it holds nothing.
        if cmdline.contains(&needle) || environ.contains(&needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

#[test]
fn two_agents_from_the_printed_lines_talk_and_share_the_gateway_and_ctrl_c_stops_everything() {
    let machine = Machine::new();
    let (mut up, mut up_out, lines) = up(&machine, &[]);
    let text = lines.join("\n");
    let launches: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| l.contains(" agent launch --config "))
        .collect();
    assert_eq!(launches.len(), 2, "one line per agent:\n{text}");
    assert!(text.contains("mcp-gateway  127.0.0.1:"), "{text}");
    assert!(!text.contains(":0 "), "the real ports are shown:\n{text}");

    let (mut alice, ready) = Session::start(&machine, launches[0]);
    let mesh_tools = &ready["servers"]["mesh"];
    assert!(
        mesh_tools
            .as_array()
            .is_some_and(|t| t.iter().any(|n| n == "mesh_send")),
        "alice's mesh tools: {ready}"
    );
    let (mut bob, _) = Session::start(&machine, launches[1]);

    // A message through the mesh, seen by bob's hook as Claude Code would show it.
    let sent = alice.call(
        "mesh",
        "mesh_send",
        serde_json::json!({ "to": "bob", "text": "hello from alice" }),
    );
    assert!(sent.contains("delivered"), "{sent}");
    let hook = bob.ask(serde_json::json!({ "op": "hook", "event": "UserPromptSubmit" }));
    assert!(
        hook.to_string().contains("hello from alice"),
        "bob's UserPromptSubmit hook shows the message: {hook}"
    );

    // A tool call through the local gateway, to the one memory server both agents share.
    alice.wait_for_tool("memory__create_entities");
    bob.wait_for_tool("memory__read_graph");
    alice.call(
        "nsh-gateway",
        "memory__create_entities",
        serde_json::json!({ "entities": [
            { "name": "nsh-up-test", "entityType": "test", "observations": ["written by alice"] }
        ]}),
    );
    let graph = bob.call("nsh-gateway", "memory__read_graph", serde_json::json!({}));
    assert!(
        graph.contains("written by alice"),
        "bob reads alice's entity: {graph}"
    );
    // The gateway's stdio upstreams run under the stack's own MCP daemons.
    let daemons = machine
        .nsh()
        .args(["mcp", "daemon", "list", "-o", "json"])
        .env("NSH_MCP_RUNTIME_DIR", machine.data.join("run/mcp"))
        .output()
        .unwrap();
    let daemons = String::from_utf8_lossy(&daemons.stdout);
    assert!(daemons.contains("server-memory"), "{daemons}");
    drop((alice, bob));

    // Ctrl-C: everything stops, nothing of the stack is left.
    let pid = rustix::process::Pid::from_raw(up.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while up.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "nsh up did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up.0.wait().unwrap().success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut up_out, &mut rest).unwrap();
    assert!(rest.contains("nsh up stopped"), "{rest}");
    let left = stack_processes(&machine.data);
    assert!(left.is_empty(), "processes left after Ctrl-C: {left:#?}");
}

#[test]
fn detach_then_down_and_keys_kept_until_reset() {
    let machine = Machine::new();
    // No launcher on PATH: no upstream to start, this test is about the stack's lifetime.
    let bare = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        machine
            .nsh()
            .args(args)
            .args(["--data-dir"])
            .arg(&machine.data)
            .env("PATH", bare.path())
            .output()
            .unwrap()
    };
    let started = run(&["up", "--detach", "--mesh-port", "0", "--gateway-port", "0"]);
    let out = String::from_utf8_lossy(&started.stdout);
    assert!(
        started.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&started.stderr)
    );
    assert!(out.contains("stop it with: "), "{out}");
    assert!(out.contains(" down --data-dir "), "{out}");
    assert!(
        out.contains("preset memory left out: `npx` is not on PATH"),
        "{out}"
    );
    let key = std::fs::read(machine.data.join("team-keys/local")).unwrap();
    let token = std::fs::read(machine.data.join("tokens/alice.jwt")).unwrap();

    let again = run(&["up", "--mesh-port", "0", "--gateway-port", "0"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let down = run(&["down"]);
    assert!(down.status.success());
    assert!(String::from_utf8_lossy(&down.stdout).contains("stopped nsh up"));
    assert!(stack_processes(&machine.data).is_empty());
    let twice = run(&["down"]);
    assert!(String::from_utf8_lossy(&twice.stdout).contains("no nsh up is running"));

    // A second run keeps the key and the still-valid tokens; --reset replaces them.
    let (_up, _, lines) = up(&machine, &[]);
    assert!(
        lines.iter().any(|l| l.contains("kept from the last run")),
        "{lines:#?}"
    );
    assert_eq!(
        std::fs::read(machine.data.join("team-keys/local")).unwrap(),
        key
    );
    assert_eq!(
        std::fs::read(machine.data.join("tokens/alice.jwt")).unwrap(),
        token
    );
    drop(_up);
    let (_up, _, _) = up(&machine, &["--reset"]);
    assert_ne!(
        std::fs::read(machine.data.join("team-keys/local")).unwrap(),
        key
    );
}
