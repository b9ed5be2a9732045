//! `nsh mcp run-once` bridges to a real stdio MCP server (the official TypeScript SDK's, in
//! `mesh/interop/gateway-upstream.mjs`), spoken to in raw JSON-RPC so a test chooses its ids,
//! and the process table, to count servers and find leftovers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use super::gateway::{interop, node};
use super::nsh_path;

/// A runtime folder of the test's own (so daemons of other tests are not found), and a server
/// name no other test uses (to find its processes).
pub struct Shared {
    pub dir: tempfile::TempDir,
    pub marker: String,
}

impl Shared {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nsh-daemon-test")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let marker = format!("dt{}", uuid_like());
        Self { dir, marker }
    }

    pub fn runtime(&self) -> &Path {
        self.dir.path()
    }

    /// Where each server that starts writes its pid.
    pub fn instance_log(&self) -> PathBuf {
        self.dir.path().join("instances.log")
    }

    /// Servers started so far.
    pub fn instances(&self) -> Vec<u32> {
        std::fs::read_to_string(self.instance_log())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }

    /// The command line that runs the test server through `run-once`.
    pub fn run_once_args(&self, flags: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["mcp", "run-once"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.extend(flags.iter().map(|s| (*s).to_owned()));
        args.push("--".into());
        args.push(node().to_string_lossy().into_owned());
        args.push(
            interop("gateway-upstream.mjs")
                .to_string_lossy()
                .into_owned(),
        );
        args.push(self.marker.clone());
        args
    }

    pub fn command(&self, args: &[String]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(nsh_path());
        command
            .args(args)
            .env("NSH_MCP_RUNTIME_DIR", self.runtime())
            .env("INSTANCE_LOG", self.instance_log())
            .current_dir(self.dir.path());
        command
    }

    /// A bridge, not yet initialized.
    pub async fn bridge(&self, flags: &[&str]) -> Bridge {
        let args = self.run_once_args(flags);
        Bridge::spawn(self.command(&args))
    }

    /// A bridge that has done the MCP handshake.
    pub async fn client(&self, flags: &[&str]) -> Bridge {
        let mut bridge = self.bridge(flags).await;
        bridge.initialize(json!({})).await;
        bridge
    }

    /// `nsh ARGS` with this test's runtime folder.
    pub fn nsh(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(nsh_path())
            .args(args)
            .env("NSH_MCP_RUNTIME_DIR", self.runtime())
            .output()
            .unwrap()
    }

    /// `nsh mcp daemon list --json`.
    pub fn list(&self) -> Vec<Value> {
        let out = self.nsh(&["mcp", "daemon", "list", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
    }

    /// `nsh mcp daemon stop NAME`.
    pub fn stop(&self, name: &str) -> std::process::Output {
        self.nsh(&["mcp", "daemon", "stop", name])
    }

    /// Processes (daemon, server, bridges) whose command line names this test's marker.
    pub fn processes(&self) -> Vec<(u32, String)> {
        processes_with(&self.marker)
    }

    /// Waits (up to `within`) until no process names the marker; panics listing them if some do.
    pub async fn assert_no_processes_left(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = self.processes();
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "processes left behind: {left:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.runtime()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A failed test must not leave its daemon behind for the next.
        for (pid, _) in self.processes() {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{}x{nanos:x}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// (pid, command line) of every process whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        // Zombies have an empty command line and hold nothing.
        if cmdline.contains(marker) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// One `run-once` bridge, spoken to in raw JSON-RPC lines.
pub struct Bridge {
    pub child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Bridge {
    pub fn spawn(mut command: tokio::process::Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            lines,
        }
    }

    pub async fn send(&mut self, message: &Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.stdin
            .as_mut()
            .expect("stdin open")
            .write_all(line.as_bytes())
            .await
            .unwrap();
    }

    /// The next message, or `None` if the bridge closed its output.
    pub async fn recv(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("an answer within 30 s")
            .ok()
            .flatten()?;
        Some(serde_json::from_str(&line).unwrap())
    }

    /// The next message that is a response (notifications before it are returned too).
    pub async fn response(&mut self) -> (Value, Vec<Value>) {
        let mut notes = Vec::new();
        loop {
            let message = self.recv().await.expect("the bridge is open");
            if message.get("method").is_some() {
                notes.push(message);
            } else {
                return (message, notes);
            }
        }
    }

    pub async fn initialize(&mut self, capabilities: Value) -> Value {
        self.send(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": capabilities,
            "clientInfo": {"name": "daemon-test", "version": "1"}}}),
        )
        .await;
        let (answer, _) = self.response().await;
        assert!(answer.get("result").is_some(), "initialize: {answer}");
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        answer
    }

    pub async fn call(&mut self, id: Value, tool: &str, args: Value) -> Value {
        self.send(&call(id, tool, args)).await;
        self.response().await.0
    }

    /// Closes stdin, as an MCP client that is done; waits for the bridge to exit.
    pub async fn close(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the bridge exits when its client is done")
            .unwrap()
    }
}

pub fn call(id: Value, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}})
}

/// The text of a tools/call answer.
pub fn text(answer: &Value) -> &str {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a tool result: {answer}"))
}

/// Polls until `check` holds (up to `within`).
pub async fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn alive(pid: u32) -> bool {
    // A zombie (state Z) is dead for our purposes: it runs nothing and holds no memory.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rfind(')').map(|i| stat[i + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}
