//! Typed builders for the `nsh` invocations the operator puts into pod specs. Flag names are
//! constants the CLI's clap definitions use too; `cli`'s contract test parses what these build.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::env;

/// The binary, as the images install it on `PATH`.
pub const NSH: &str = "nsh";

/// Flags of `nsh mesh client` the operator sets.
pub mod mesh_client_flag {
    pub const SERVER: &str = "server";
    pub const TOKEN_FILE: &str = "token-file";
    pub const INBOX_DIR: &str = "inbox-dir";
    pub const LISTEN: &str = "listen";
    pub const ADMIN_LISTEN: &str = "admin-listen";
}
/// The global flag every verb takes.
pub const LOG_FORMAT_FLAG: &str = "log-format";
/// `nsh agent launch --project-dir`.
pub const PROJECT_DIR_FLAG: &str = "project-dir";
/// `nsh gateway run --config`.
pub const GATEWAY_CONFIG_FLAG: &str = "config";

fn flag(name: &str) -> String {
    format!("--{name}")
}

/// `nsh mesh client` as the agent pod's sidecar: one agent's mesh connection and inbox,
/// serving MCP over HTTP on `listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshClient {
    pub server: String,
    pub token_file: String,
    pub inbox_dir: String,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub json_logs: bool,
}

impl MeshClient {
    /// The container's `args` (its image's entrypoint is `nsh`).
    pub fn args(&self) -> Vec<String> {
        use mesh_client_flag as f;
        let mut args = vec!["mesh".to_owned(), "client".to_owned()];
        for (name, value) in [
            (f::SERVER, self.server.clone()),
            (f::TOKEN_FILE, self.token_file.clone()),
            (f::INBOX_DIR, self.inbox_dir.clone()),
            (f::LISTEN, self.listen.to_string()),
            (f::ADMIN_LISTEN, self.admin_listen.to_string()),
        ] {
            args.extend([flag(name), value]);
        }
        if self.json_logs {
            args.extend([flag(LOG_FORMAT_FLAG), "json".to_owned()]);
        }
        args
    }
}

/// `nsh agent launch` in the agent container: the agent with its launch settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLaunch {
    pub project_dir: String,
}

impl AgentLaunch {
    /// The container's `command`: the agent image may have another entrypoint.
    pub fn command(&self) -> Vec<String> {
        vec![NSH.to_owned()]
    }

    pub fn args(&self) -> Vec<String> {
        vec![
            "agent".to_owned(),
            "launch".to_owned(),
            flag(PROJECT_DIR_FLAG),
            self.project_dir.clone(),
        ]
    }
}

/// `nsh gateway run` with its settings file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRun {
    pub config: String,
}

impl GatewayRun {
    pub fn args(&self) -> Vec<String> {
        vec![
            "gateway".to_owned(),
            "run".to_owned(),
            flag(GATEWAY_CONFIG_FLAG),
            self.config.clone(),
        ]
    }
}

/// `nsh mesh auth-header --token-file FILE`: prints `{"Authorization": "Bearer <token>"}` for
/// an MCP client's headers helper (Claude Code's `headersHelper`), reading the file each time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    pub token_file: String,
}

impl AuthHeader {
    pub fn args(&self) -> Vec<String> {
        vec![
            "mesh".to_owned(),
            "auth-header".to_owned(),
            flag(mesh_client_flag::TOKEN_FILE),
            self.token_file.clone(),
        ]
    }

    /// As one shell command line (what `headersHelper` takes).
    pub fn command_line(&self) -> String {
        let args = self.args();
        crate::quote::join(std::iter::once(NSH).chain(args.iter().map(String::as_str)))
    }
}

/// `nsh mcp daemon serve`: one stdio MCP server shared over HTTP on `listen` (a `command`
/// upstream's container in an McpGateway's pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpDaemonServe {
    pub listen: SocketAddr,
    pub name: String,
    pub command: Vec<String>,
}

impl McpDaemonServe {
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "mcp".to_owned(),
            "daemon".to_owned(),
            "serve".to_owned(),
            "--listen".to_owned(),
            self.listen.to_string(),
            "--name".to_owned(),
            self.name.clone(),
            "--".to_owned(),
        ];
        args.extend(self.command.iter().cloned());
        args
    }
}

/// `nsh mcp daemon copy-binary`: copies `nsh` to `to`, so a container of any image can run it
/// (an init container filling a volume the upstream containers share).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyBinary {
    pub to: String,
}

impl CopyBinary {
    pub fn args(&self) -> Vec<String> {
        vec![
            "mcp".to_owned(),
            "daemon".to_owned(),
            "copy-binary".to_owned(),
            "--to".to_owned(),
            self.to.clone(),
        ]
    }
}

/// `nsh mesh server`'s settings, passed as environment (a ConfigMap the pods read with
/// `envFrom`, so the pod template's hash of it rolls them on a change).
#[derive(Debug, Clone, PartialEq)]
pub struct MeshServer {
    pub listen: SocketAddr,
    pub team_keys_dir: String,
    /// COUNT/UNIT, see [`crate::Rate`].
    pub rate_limit: String,
    pub burst: u32,
    /// Omitted here when the URL is in a Secret the pod reads [`env::mesh_server::REDIS`] from.
    pub redis: Option<String>,
    pub persistence: Option<Persistence>,
    pub json_logs: bool,
}

/// `--persistence` and what tunes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Persistence {
    /// A humantime duration (`7d`).
    pub retention: Option<String>,
    pub max_len: Option<u64>,
}

impl MeshServer {
    /// The container's `args`; the rest is in [`Self::env`].
    pub fn args(&self) -> Vec<String> {
        vec!["mesh".to_owned(), "server".to_owned()]
    }

    pub fn env(&self) -> BTreeMap<String, String> {
        use env::mesh_server as e;
        let mut env = BTreeMap::new();
        let mut set = |name: &str, value: String| env.insert(name.to_owned(), value);
        set(e::LISTEN, self.listen.to_string());
        set(e::TEAM_KEYS_DIR, self.team_keys_dir.clone());
        set(e::RATE_LIMIT, self.rate_limit.clone());
        set(e::BURST, self.burst.to_string());
        if let Some(redis) = &self.redis {
            set(e::REDIS, redis.clone());
        }
        if let Some(persistence) = &self.persistence {
            set(e::PERSISTENCE, "true".to_owned());
            if let Some(retention) = &persistence.retention {
                set(e::RETENTION, retention.clone());
            }
            if let Some(max_len) = persistence.max_len {
                set(e::MAX_LEN, max_len.to_string());
            }
        }
        if self.json_logs {
            set(env::LOG_FORMAT, "json".to_owned());
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sidecar_command_line_carries_every_setting() {
        let client = MeshClient {
            server: "ws://mesh.ns.svc:3456".into(),
            token_file: "/t/token".into(),
            inbox_dir: "/inbox".into(),
            listen: "127.0.0.1:8765".parse().unwrap(),
            admin_listen: "0.0.0.0:9465".parse().unwrap(),
            json_logs: true,
        };
        assert_eq!(
            client.args().join(" "),
            "mesh client --server ws://mesh.ns.svc:3456 --token-file /t/token --inbox-dir /inbox \
             --listen 127.0.0.1:8765 --admin-listen 0.0.0.0:9465 --log-format json"
        );
    }

    #[test]
    fn server_settings_leave_out_what_is_not_set() {
        let server = MeshServer {
            listen: "0.0.0.0:3456".parse().unwrap(),
            team_keys_dir: "/keys".into(),
            rate_limit: "50/s".into(),
            burst: 100,
            redis: None,
            persistence: None,
            json_logs: false,
        };
        let env = server.env();
        assert_eq!(env.len(), 4, "{env:?}");
        assert!(!env.contains_key(env::mesh_server::PERSISTENCE));
        let env = MeshServer {
            persistence: Some(Persistence {
                retention: Some("1d".into()),
                max_len: None,
            }),
            ..server
        }
        .env();
        assert_eq!(env[env::mesh_server::PERSISTENCE], "true");
        assert_eq!(env[env::mesh_server::RETENTION], "1d");
        assert!(!env.contains_key(env::mesh_server::MAX_LEN));
    }
}
