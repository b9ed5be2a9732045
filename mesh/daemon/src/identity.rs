//! Which daemon an invocation belongs to, and where its files live.
//!
//! "The same server" is the command, its arguments, the environment variables the invocation
//! names (their values, hashed, never stored) and the working folder; or a `--name`. Each
//! daemon owns `<key>.sock`, `<key>.json`, `<key>.lock` and `<key>.log` in the user's runtime
//! folder, which must be the user's own and closed to everyone else.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Overrides the runtime folder (tests; several users on one machine with odd set-ups).
pub const RUNTIME_DIR_ENV: &str = "NSH_MCP_RUNTIME_DIR";

/// A stdio MCP server as an invocation describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub command: String,
    pub args: Vec<String>,
    /// The variables that make two servers different (a token, a project): name → value.
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
}

/// A daemon's name (what people type) and key (what its files are called).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub key: String,
}

impl ServerSpec {
    /// The identity of this server: `--name` if given, else a hash of what makes it this server.
    pub fn identity(&self, name: Option<&str>) -> Identity {
        match name {
            Some(name) => Identity {
                name: name.to_owned(),
                key: format!("n-{}", short_hash(&[name])),
            },
            None => {
                let mut parts: Vec<&str> = vec![&self.command];
                parts.extend(self.args.iter().map(String::as_str));
                parts.push("\0env");
                for (name, value) in &self.env {
                    parts.push(name);
                    parts.push(value);
                }
                parts.push("\0cwd");
                let cwd = self.cwd.to_string_lossy();
                parts.push(&cwd);
                Identity {
                    name: self.default_name(),
                    key: format!("h-{}", short_hash(&parts)),
                }
            }
        }
    }

    /// A readable name: the package or script a launcher runs (`npx -y @scope/server-x@1` →
    /// `server-x`), else the command's file name.
    fn default_name(&self) -> String {
        const LAUNCHERS: &[&str] = &[
            "npx", "uvx", "bunx", "node", "python", "python3", "uv", "pipx", "deno", "bun",
            "docker", "pnpm", "yarn",
        ];
        let base = |text: &str| -> String {
            let last = text.rsplit('/').next().unwrap_or(text);
            // `pkg@1.2.3` → `pkg`; a scoped package's leading `@` stays out of the way.
            let last = last.split('@').find(|s| !s.is_empty()).unwrap_or(last);
            last.trim_end_matches(".js")
                .trim_end_matches(".mjs")
                .trim_end_matches(".py")
                .to_owned()
        };
        let command = base(&self.command);
        if LAUNCHERS.contains(&command.as_str())
            && let Some(target) = self
                .args
                .iter()
                .find(|a| !a.starts_with('-') && !["run", "dlx", "exec", "x"].contains(&a.as_str()))
        {
            return base(target);
        }
        command
    }
}

/// 16 hex digits of SHA-256 over the parts, each ended by a zero byte so no two lists collide.
fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The files of one daemon.
#[derive(Debug, Clone)]
pub struct DaemonFiles {
    pub socket: PathBuf,
    pub state: PathBuf,
    pub lock: PathBuf,
    pub start_lock: PathBuf,
    pub log: PathBuf,
}

impl DaemonFiles {
    pub fn new(dir: &Path, key: &str) -> Self {
        Self {
            socket: dir.join(format!("{key}.sock")),
            state: dir.join(format!("{key}.json")),
            lock: dir.join(format!("{key}.lock")),
            start_lock: dir.join(format!("{key}.start")),
            log: dir.join(format!("{key}.log")),
        }
    }
}

/// Why the runtime folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} belongs to user {owner}, not to you ({me}): another user could answer your MCP clients; remove it or set {RUNTIME_DIR_ENV} to a folder of yours"
    )]
    NotYours { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "{path} is open to other users (mode {mode:o}); run `chmod 700 {path}` or set {RUNTIME_DIR_ENV}"
    )]
    Open { path: PathBuf, mode: u32 },
}

/// The folder for the daemons' sockets: `$NSH_MCP_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/nsh/mcp`, else `/tmp/nsh-<uid>/mcp`; created 0700 and checked to be
/// the user's own and closed to others.
pub fn runtime_dir() -> Result<PathBuf, RuntimeDirError> {
    let uid = rustix::process::getuid().as_raw();
    let dir = match std::env::var_os(RUNTIME_DIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(base) => PathBuf::from(base).join("nsh").join("mcp"),
            None => std::env::temp_dir().join(format!("nsh-{uid}")).join("mcp"),
        },
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| RuntimeDirError::Create {
            path: dir.clone(),
            source,
        })?;
    // The folder itself and, under /tmp, its parent: both must be ours and closed.
    let mut checked = vec![dir.clone()];
    if std::env::var_os(RUNTIME_DIR_ENV).is_none()
        && std::env::var_os("XDG_RUNTIME_DIR").is_none()
        && let Some(parent) = dir.parent()
    {
        checked.push(parent.to_owned());
    }
    for path in checked {
        let meta = std::fs::metadata(&path).map_err(|source| RuntimeDirError::Create {
            path: path.clone(),
            source,
        })?;
        if meta.uid() != uid {
            return Err(RuntimeDirError::NotYours {
                path,
                owner: meta.uid(),
                me: uid,
            });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(RuntimeDirError::Open { path, mode });
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &str, args: &[&str]) -> ServerSpec {
        ServerSpec {
            command: command.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: BTreeMap::new(),
            cwd: "/work".into(),
        }
    }

    #[test]
    fn launchers_are_named_after_what_they_run() {
        let cases = [
            (
                spec(
                    "npx",
                    &["-y", "@modelcontextprotocol/server-filesystem@1.2", "/tmp"],
                ),
                "server-filesystem",
            ),
            (spec("uvx", &["mcp-server-fetch"]), "mcp-server-fetch"),
            (spec("/usr/bin/node", &["/opt/servers/echo.mjs"]), "echo"),
            (spec("/usr/local/bin/github-mcp", &["stdio"]), "github-mcp"),
        ];
        for (spec, name) in cases {
            assert_eq!(spec.identity(None).name, name, "{spec:?}");
        }
    }

    #[test]
    fn what_makes_a_server_different_changes_its_key() {
        let base = spec("npx", &["server"]);
        let key = base.identity(None).key;
        let mut other_args = base.clone();
        other_args.args.push("--read-only".into());
        let mut other_env = base.clone();
        other_env.env.insert("TOKEN".into(), "b".into());
        let mut other_cwd = base.clone();
        other_cwd.cwd = "/elsewhere".into();
        for other in [other_args, other_env, other_cwd] {
            assert_ne!(other.identity(None).key, key, "{other:?}");
        }
        assert_eq!(
            base.clone().identity(None).key,
            key,
            "the same server, the same key"
        );
        // Arguments may not be re-split to collide: ["a b"] is not ["a", "b"].
        assert_ne!(
            spec("x", &["a b"]).identity(None).key,
            spec("x", &["a", "b"]).identity(None).key
        );
    }

    #[test]
    fn a_name_wins_over_the_command() {
        let a = spec("npx", &["one"]).identity(Some("browser"));
        let b = spec("npx", &["two"]).identity(Some("browser"));
        assert_eq!(a, b);
        assert_eq!(a.name, "browser");
    }
}
