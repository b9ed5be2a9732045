//! A real `nsh mesh server` process on a free port, a team key, and tokens, for the tests that
//! drive `nsh mesh client` the way an agent's MCP client does.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nsh_mesh_transport::token::{self, TeamKey, TokenRequest};
use nsh_testenv::process::ManagedProcess;

pub mod daemon;
pub mod gateway;
pub mod up;

pub const TEAM: &str = "alpha";

pub fn nsh_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nsh"))
}

/// `nsh operator run` for one namespace of the harness's API server, its admin endpoints on a
/// free port (it logs where).
pub fn operator_command(kubeconfig: &Path, namespace: &str) -> Command {
    let mut command = Command::new(nsh_path());
    command
        .args([
            "operator",
            "run",
            "--default-image",
            "nsh:test",
            "--admin-listen",
            "127.0.0.1:0",
            "--lease-namespace",
            namespace,
            "--watch-namespace",
            namespace,
        ])
        .env("KUBECONFIG", kubeconfig);
    command
}

pub struct MeshProcess {
    pub dir: tempfile::TempDir,
    pub port: u16,
    process: Option<ManagedProcess>,
    extra: Vec<String>,
}

impl MeshProcess {
    /// Starts `nsh mesh server` with one team key and waits until it is ready.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Like [`start`](Self::start), with extra server flags (e.g. `--redis URL --persistence`).
    pub async fn start_with(extra: &[&str]) -> Self {
        Self::start_with_key(&TeamKey::generate_text(), extra).await
    }

    /// Another replica of `first`'s mesh: same team key, its own port, flags `extra` (which
    /// must include the shared `--redis`).
    pub async fn replica_of(first: &Self, extra: &[&str]) -> Self {
        let key = std::fs::read_to_string(first.path("keys").join(TEAM)).unwrap();
        Self::start_with_key(&key, extra).await
    }

    /// A server with a key for each of `teams` (besides [`TEAM`]).
    pub async fn start_with_teams(teams: &[&str]) -> Self {
        Self::start_with_keys(&TeamKey::generate_text(), teams, &[]).await
    }

    async fn start_with_key(key: &str, extra: &[&str]) -> Self {
        Self::start_with_keys(key, &[], extra).await
    }

    async fn start_with_keys(key: &str, teams: &[&str], extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::fs::write(dir.path().join("keys").join(TEAM), key).unwrap();
        for team in teams {
            std::fs::write(dir.path().join("keys").join(team), TeamKey::generate_text()).unwrap();
        }
        let mut mesh = Self {
            dir,
            // Port 0: the server picks one and logs it, so no other test can take it first.
            port: 0,
            process: None,
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        mesh.start_again().await;
        mesh
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// (Re)starts the server on the same port (a free one the first time).
    pub async fn start_again(&mut self) {
        let mut command = Command::new(nsh_path());
        command
            .args(["mesh", "server", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--team-keys-dir")
            .arg(self.path("keys"))
            .args(&self.extra);
        let log = self.path("server.log");
        self.process = Some(ManagedProcess::spawn("nsh mesh server", command, &log).unwrap());
        if self.port == 0 {
            self.port = nsh_testenv::logged_addr(
                &log,
                "mesh server listening",
                "addr",
                Duration::from_secs(20),
            )
            .await
            .port();
        }
        let port = self.port;
        nsh_testenv::wait_for(
            "the mesh server's /readyz",
            Duration::from_secs(20),
            || async move { Ok(ready(port).then_some(())) },
        )
        .await;
    }

    /// Kills the server outright (no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ManagedProcess::pid)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }

    /// A token for `agent`, valid for `ttl` (negative: already expired).
    pub fn token(&self, agent: &str, groups: &[&str], ttl_secs: i64) -> String {
        self.team_token(TEAM, agent, groups, ttl_secs)
    }

    /// A token for `agent` of `team` (a team of [`start_with_teams`](Self::start_with_teams)).
    pub fn team_token(&self, team: &str, agent: &str, groups: &[&str], ttl_secs: i64) -> String {
        let key =
            TeamKey::from_file_contents(&std::fs::read(self.path("keys").join(team)).unwrap())
                .unwrap();
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        let request = TokenRequest {
            team,
            agent,
            groups: &groups,
            ttl: Duration::from_secs(ttl_secs.unsigned_abs()),
            audiences: &[],
        };
        let now = token::now_unix();
        let issued = if ttl_secs < 0 {
            now - 2 * ttl_secs.unsigned_abs()
        } else {
            now
        };
        token::mint(&request, &key, issued).unwrap()
    }

    /// Writes a token for `agent` to `<dir>/<agent>.jwt` and returns the path.
    pub fn token_file(&self, agent: &str, groups: &[&str]) -> PathBuf {
        let path = self.path(&format!("{agent}.jwt"));
        std::fs::write(&path, self.token(agent, groups, 3600)).unwrap();
        path
    }
}

fn ready(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
}

/// `nsh mesh client` arguments for `token_file`, with the inbox in `inbox`.
pub fn client_args(url: &str, token_file: &Path, inbox: &Path) -> Vec<String> {
    vec![
        "mesh".into(),
        "client".into(),
        "--server".into(),
        url.into(),
        "--token-file".into(),
        token_file.display().to_string(),
        "--inbox-dir".into(),
        inbox.display().to_string(),
    ]
}

/// An MCP client (the official Rust SDK) running `nsh mesh client` as its stdio server.
pub type McpClient = rmcp::service::RunningService<rmcp::RoleClient, rmcp::model::ClientConfig>;

/// Spawns `nsh <args>` as an MCP stdio server, its stderr in `log`, and completes the
/// `initialize` handshake the way today's clients do (protocol 2025-11-25).
pub async fn mcp_client(args: &[String], log: &Path) -> McpClient {
    use rmcp::ServiceExt as _;
    let mut command = tokio::process::Command::new(nsh_path());
    command
        .args(args)
        .env("NSH_LOG", "info,nsh_mesh_client=debug");
    let stderr = std::fs::File::create(log).unwrap();
    let (transport, _) = rmcp::transport::TokioChildProcess::builder(command)
        .stderr(stderr)
        .spawn()
        .unwrap();
    rmcp::model::ClientConfig::default()
        .with_protocol_version(rmcp::model::ProtocolVersion::LATEST_WITH_INITIALIZE)
        .serve(transport)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "MCP handshake with nsh mesh client failed: {e}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
}

/// Calls `tool` with `arguments`; returns whether it was a tool error, and its structured result.
pub async fn call(
    client: &McpClient,
    tool: &'static str,
    arguments: serde_json::Value,
) -> (bool, serde_json::Value) {
    let serde_json::Value::Object(arguments) = arguments else {
        panic!("tool arguments must be an object");
    };
    let result = client
        .call_tool(rmcp::model::CallToolRequestParams::new(tool).with_arguments(arguments))
        .await
        .unwrap();
    (
        result.is_error == Some(true),
        result.structured_content.unwrap_or_default(),
    )
}

/// An MCP client (the official Rust SDK) on a mesh-client sidecar's streamable HTTP endpoint.
pub async fn mcp_http_client(url: &str) -> McpClient {
    use rmcp::ServiceExt as _;
    // As in `nsh`'s main: reqwest brings no TLS provider of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url.to_owned());
    rmcp::model::ClientConfig::default()
        .with_protocol_version(rmcp::model::ProtocolVersion::LATEST_WITH_INITIALIZE)
        .serve(transport)
        .await
        .unwrap_or_else(|e| panic!("MCP handshake with {url} failed: {e}"))
}

/// GETs `path` on 127.0.0.1:`port`; the status code and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let code = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Some((code, body))
}
