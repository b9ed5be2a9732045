//! A real mesh server on a free port, and real clients, for the integration tests.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::time::Duration;

use nsh_mesh_server::store::StoreConfig;
use nsh_mesh_server::{Limits, Server, ServerConfig};
use nsh_mesh_transport::client::{Client, ClientConfig, ClientError};
use nsh_mesh_transport::token::{self, TeamKey, TokenRequest};
use tokio::sync::oneshot;

pub const TEAMS: [&str; 2] = ["alpha", "beta"];

pub struct TestMesh {
    pub url: String,
    /// The admin endpoints' own address, when configured.
    pub admin: Option<std::net::SocketAddr>,
    pub keys: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl TestMesh {
    pub async fn start() -> Self {
        Self::with_limits(Limits::default()).await
    }

    pub async fn with_limits(limits: Limits) -> Self {
        Self::with_config(limits, None).await
    }

    /// A mesh with persistence in the Redis at `redis_url`.
    pub async fn with_store(redis_url: &str) -> Self {
        Self::with_config(Limits::default(), Some(store_config(redis_url))).await
    }

    pub async fn with_config(limits: Limits, store: Option<StoreConfig>) -> Self {
        Self::configured(|config| {
            config.limits = limits;
            config.store = store;
        })
        .await
    }

    /// A mesh with the test defaults (two teams, keys re-read every 100 ms), then `configure`.
    pub async fn configured(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let keys = tempfile::tempdir().unwrap();
        for team in TEAMS {
            std::fs::write(keys.path().join(team), key_text(team)).unwrap();
        }
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), keys.path());
        config.key_reload_interval = Duration::from_millis(100);
        configure(&mut config);
        let server = Server::bind(config).await.unwrap();
        let url = format!("ws://{}", server.local_addr());
        let admin = server.admin_addr();
        let (stop, stopped) = oneshot::channel();
        let done = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            url,
            admin,
            keys,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Asks the server to shut down and waits until `run` returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(15), self.done.take().unwrap())
            .await
            .unwrap()
            .unwrap();
    }

    pub fn http(&self) -> String {
        self.url.replace("ws://", "http://")
    }

    pub async fn connect(&self, team: &str, agent: &str, groups: &[&str]) -> Agent {
        self.try_connect(&token_for(team, agent, groups))
            .await
            .unwrap()
    }

    pub async fn try_connect(&self, token: &str) -> Result<Agent, ClientError> {
        let config = ClientConfig {
            ack_timeout: Duration::from_secs(10),
            ..ClientConfig::new(&self.url).with_token(token)
        };
        let (client, incoming) = Client::connect(config).await?;
        Ok(Agent::new(client, incoming, true))
    }

    /// A client that receives messages but never acks them.
    pub async fn connect_silent(&self, team: &str, agent: &str) -> Agent {
        let config = ClientConfig::new(&self.url).with_token(token_for(team, agent, &[]));
        let (client, incoming) = Client::connect(config).await.unwrap();
        Agent::new(client, incoming, false)
    }
}

pub fn store_config(redis_url: &str) -> StoreConfig {
    StoreConfig {
        url: redis_url.to_owned(),
        retention: Duration::from_secs(3600),
        max_len: 1000,
    }
}

pub fn key_text(team: &str) -> String {
    format!("{team}-test-key-0123456789abcdef\n")
}

pub fn token_for(team: &str, agent: &str, groups: &[&str]) -> String {
    let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    let key = TeamKey::from_file_contents(key_text(team).as_bytes()).unwrap();
    token::mint(
        &TokenRequest {
            team,
            agent,
            groups: &groups,
            ttl: Duration::from_secs(3600),
            audiences: &[],
        },
        &key,
        token::now_unix(),
    )
    .unwrap()
}

/// `program` (node, or the interop virtualenv's python) running `script` of `mesh/interop`
/// against `mesh_url`, in that directory, killed with the test.
pub fn interop_script(
    program: std::path::PathBuf,
    script: &str,
    mesh_url: &str,
) -> tokio::process::Command {
    let dir = nsh_testenv::peers::interop_dir();
    let mut command = tokio::process::Command::new(program);
    command
        .arg(dir.join(script))
        .current_dir(dir)
        .env("MESH_URL", mesh_url.replace("ws://", "http://"))
        .kill_on_drop(true);
    command
}

/// Runs `command` to its end within `limit`; panics with what it printed unless it succeeded.
/// Returns its stdout and stderr.
pub async fn run_to_success(
    mut command: tokio::process::Command,
    limit: Duration,
    name: &str,
) -> (String, String) {
    let output = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish within {limit:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{name} failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

pub use nsh_testenv::mesh_agent::{Agent, new_id};
