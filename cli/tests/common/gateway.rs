//! A real `nsh gateway run` in front of two upstreams written with the official TypeScript
//! SDK (`mesh/interop/gateway-upstream.mjs`): `local` over stdio (the gateway's child) and
//! `web` over streamable HTTP (a process of the test's). Callers are the official TypeScript
//! SDK client, driven line by line (`mesh/interop/mcp-driver.mjs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nsh_mesh_transport::token::{self, TeamKey, TokenRequest};
use nsh_testenv::process::ManagedProcess;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use super::nsh_path;

pub const AUDIENCE: &str = "nsh-gateway/test";

pub fn interop(file: &str) -> PathBuf {
    nsh_testenv::peers::interop_dir().join(file)
}

pub fn node() -> PathBuf {
    nsh_testenv::peers::node().expect("node for the SDK peers")
}

/// The HTTP upstream: the SDK server on a port of its choosing.
pub struct HttpUpstream {
    pub process: ManagedProcess,
    pub port: u16,
}

impl HttpUpstream {
    pub async fn start(dir: &Path, name: &str, port: u16) -> Self {
        let log = dir.join(format!("{name}-{port}.log"));
        let mut command = Command::new(node());
        command
            .arg(interop("gateway-upstream.mjs"))
            .args([name, "--http", &port.to_string()]);
        let process = ManagedProcess::spawn(format!("upstream {name}"), command, &log).unwrap();
        let port =
            nsh_testenv::logged_addr(&log, "listening", "addr", Duration::from_secs(20)).await;
        Self {
            process,
            port: port.port(),
        }
    }
}

pub struct Gateway {
    /// Environment of the gateway process, and YAML added under the `web` upstream.
    env: Vec<(String, String)>,
    web_extra: String,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub web: Option<HttpUpstream>,
    process: Option<ManagedProcess>,
    keys: Vec<(String, TeamKey)>,
}

impl Gateway {
    /// Starts the gateway with `local` and `web` upstreams and `extra` YAML appended to its
    /// config (policy, rate limits...), and waits until it is ready.
    pub async fn start(extra: &str) -> Self {
        Self::start_with_env(extra, &[], "").await
    }

    /// [`start`](Self::start) with environment variables for the gateway and YAML lines
    /// (indented two spaces) added to the `web` upstream.
    pub async fn start_with_env(extra: &str, env: &[(&str, &str)], web_extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let web = HttpUpstream::start(dir.path(), "web", 0).await;
        let mut gateway = Self {
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            web_extra: web_extra.to_owned(),
            dir,
            port: 0,
            web: Some(web),
            process: None,
            keys: Vec::new(),
        };
        std::fs::create_dir(gateway.path("keys")).unwrap();
        for team in ["alpha", "beta", "gamma"] {
            let text = TeamKey::generate_text();
            std::fs::write(gateway.path("keys").join(team), &text).unwrap();
            gateway.keys.push((
                team.to_owned(),
                TeamKey::from_file_contents(text.as_bytes()).unwrap(),
            ));
        }
        gateway.write_config(extra);
        gateway.run().await;
        gateway
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Writes `gateway.yaml`: teams alpha and beta (not gamma), the two upstreams, the audit
    /// log in a file, then `extra`.
    pub fn write_config(&self, extra: &str) {
        let web = self.web.as_ref().map_or(1, |w| w.port);
        let text = format!(
            "listen: 127.0.0.1:{port}\naudience: {AUDIENCE}\nteamKeysDir: keys\nteams: [alpha, beta]\n\
             upstreams:\n\
             - name: local\n  command: {{ command: {node}, args: [{server}, local] }}\n\
             - name: web\n  url: http://127.0.0.1:{web}/mcp\n{web_extra}\
             audit: {{ file: {audit}, logArguments: true }}\n{extra}",
            port = self.port,
            node = node().display(),
            server = interop("gateway-upstream.mjs").display(),
            audit = self.path("audit.jsonl").display(),
            web_extra = self.web_extra,
        );
        // Written whole and renamed, as a ConfigMap update swaps the file.
        let tmp = self.path("gateway.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.path("gateway.yaml")).unwrap();
    }

    /// A 0700 folder for the MCP daemons of this gateway's stdio upstreams.
    fn daemons(&self) -> PathBuf {
        let dir = self.path("daemons");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        dir
    }

    async fn run(&mut self) {
        let mut command = Command::new(nsh_path());
        command
            .args(["gateway", "run", "--config"])
            .arg(self.path("gateway.yaml"))
            .env("NSH_LOG", "info,nsh_mcp_gateway=debug")
            // Stdio upstreams run under MCP daemons: this gateway's, not another test's.
            .env("NSH_MCP_RUNTIME_DIR", self.daemons())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let log = self.path("gateway.log");
        self.process = Some(ManagedProcess::spawn("nsh gateway run", command, &log).unwrap());
        self.port =
            nsh_testenv::logged_addr(&log, "gateway listening", "mcp", Duration::from_secs(30))
                .await
                .port();
        // Later configs keep the port the first run was given.
        let config = std::fs::read_to_string(self.path("gateway.yaml")).unwrap();
        let fixed = config.replacen(
            "listen: 127.0.0.1:0",
            &format!("listen: 127.0.0.1:{}", self.port),
            1,
        );
        std::fs::write(self.path("gateway.yaml"), fixed).unwrap();
        let port = self.port;
        nsh_testenv::wait_for(
            "the gateway's /readyz",
            Duration::from_secs(30),
            || async move {
                Ok(super::http_get(port, "/readyz")
                    .filter(|(code, _)| *code == 200)
                    .map(|_| ()))
            },
        )
        .await;
    }

    /// A token of `team`'s key for `agent`, valid at `audiences` (and the mesh).
    pub fn token(&self, team: &str, agent: &str, audiences: &[&str]) -> String {
        let key = &self.keys.iter().find(|(t, _)| t == team).unwrap().1;
        let audiences: Vec<String> = audiences.iter().map(|a| (*a).to_owned()).collect();
        token::mint(
            &TokenRequest {
                team,
                agent,
                groups: &[],
                ttl: Duration::from_secs(600),
                audiences: &audiences,
            },
            key,
            token::now_unix(),
        )
        .unwrap()
    }

    /// An SDK client as `agent` of `team`, with a token for this gateway.
    pub async fn client(&self, team: &str, agent: &str, revision: &str) -> Driver {
        let token = self.token(team, agent, &[AUDIENCE]);
        let driver = Driver::start(&self.url(), &token, revision).await;
        let hello = driver.hello.clone();
        assert_eq!(hello["connected"], true, "{hello}\n{}", self.log());
        driver
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("gateway.log")).unwrap_or_default()
    }

    /// Every audit line written so far.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn metrics(&self) -> String {
        super::http_get(self.port, "/metrics").unwrap().1
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&super::http_get(self.port, "/status").unwrap().1).unwrap()
    }
}

/// One SDK client (`mcp-driver.mjs`): a JSON command per line in, a JSON answer per line out.
pub struct Driver {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    pub hello: Value,
}

impl Driver {
    pub async fn start(url: &str, token: &str, revision: &str) -> Self {
        Self::start_with_env(url, token, revision, &[]).await
    }

    /// With `url` "stdio", the driver runs `MCP_DRIVER_COMMAND` (a JSON array) from `env`.
    pub async fn start_with_env(
        url: &str,
        token: &str,
        revision: &str,
        env: &[(String, String)],
    ) -> Self {
        let mut child = tokio::process::Command::new(node())
            .arg(interop("mcp-driver.mjs"))
            .args([url, token, revision])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let hello = next(&mut lines).await;
        Self {
            child,
            stdin,
            lines,
            hello,
        }
    }

    pub async fn send(&mut self, command: Value) -> Value {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        next(&mut self.lines).await
    }

    pub async fn tools(&mut self) -> Vec<String> {
        let answer = self.send(json!({ "op": "tools" })).await;
        answer["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("tools/list failed: {answer}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn call(&mut self, name: &str, args: Value) -> Value {
        self.send(json!({ "op": "call", "name": name, "args": args }))
            .await
    }

    pub async fn list_changed(&mut self) -> u64 {
        self.send(json!({ "op": "changes" })).await["listChanged"]
            .as_u64()
            .unwrap()
    }

    pub async fn close(mut self) {
        let _ = self.send(json!({ "op": "close" })).await;
        let _ = self.child.wait().await;
    }
}

async fn next(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the SDK client answers within a minute")
        .unwrap()
        .expect("the SDK client is running");
    serde_json::from_str(&line).unwrap()
}
