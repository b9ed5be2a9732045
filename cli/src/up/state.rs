//! What `nsh up` keeps in its data folder: the `local` team's key, a token and a launch
//! config per agent, the gateway's config, and the running stack's pid file, logs and MCP
//! daemon sockets. Re-running keeps keys and tokens; `--reset` removes them first.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use nsh_mesh_transport::token::{self, TeamKey, TokenRequest};

use super::LOCAL_TEAM;

/// How long the tokens `nsh up` mints live; one with less than [`RENEW_BEFORE`] left is
/// minted again at the next start.
pub(crate) const TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);

/// The data folder's layout.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root }
    }
    pub(crate) fn team_keys(&self) -> PathBuf {
        self.root.join("team-keys")
    }
    pub(crate) fn team_key(&self) -> PathBuf {
        self.team_keys().join(LOCAL_TEAM)
    }
    pub(crate) fn tokens(&self) -> PathBuf {
        self.root.join("tokens")
    }
    pub(crate) fn token(&self, agent: &str) -> PathBuf {
        self.tokens().join(format!("{agent}.jwt"))
    }
    pub(crate) fn agents(&self) -> PathBuf {
        self.root.join("agents")
    }
    pub(crate) fn agent_config(&self, agent: &str) -> PathBuf {
        self.agents().join(format!("{agent}.yaml"))
    }
    pub(crate) fn gateway_config(&self) -> PathBuf {
        self.root.join("gateway.yaml")
    }
    /// What only lives while the stack runs.
    pub(crate) fn run(&self) -> PathBuf {
        self.root.join("run")
    }
    pub(crate) fn pid_file(&self) -> PathBuf {
        self.run().join("up.pid")
    }
    pub(crate) fn log(&self, component: &str) -> PathBuf {
        self.run().join(format!("{component}.log"))
    }
    /// The MCP daemons of this stack (`NSH_MCP_RUNTIME_DIR` of its gateway), apart from other
    /// daemons on the machine so stopping the stack stops exactly these.
    pub(crate) fn mcp_runtime(&self) -> PathBuf {
        self.run().join("mcp")
    }

    /// `--reset`: removes keys, tokens, agent configs and the gateway's config and pins.
    pub(crate) fn reset(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for path in [self.team_keys(), self.tokens(), self.agents()] {
            if path.exists() {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("--reset: cannot remove {}", path.display()))?;
                removed.push(path);
            }
        }
        let gateway = self.gateway_config();
        let pins = PathBuf::from(format!("{}.pins.json", gateway.display()));
        for path in [gateway, pins] {
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("--reset: cannot remove {}", path.display()))?;
                removed.push(path);
            }
        }
        Ok(removed)
    }

    /// The `local` team's key, created on first run and kept after.
    pub(crate) fn ensure_team_key(&self) -> anyhow::Result<TeamKey> {
        let keys = self.team_keys();
        std::fs::create_dir_all(&keys)
            .with_context(|| format!("--data-dir: cannot create {}", keys.display()))?;
        let key = self.team_key();
        if !key.exists() {
            crate::keys::write_new_key(&key)?;
            tracing::info!(path = %key.display(), "created the key of team `local`");
        }
        crate::keys::read_key(&key)
    }

    /// A token for `agent` that the mesh and the local gateway accept: the one on disk when it
    /// still verifies with `key` and has a day left, else a new one. Returns whether it was
    /// minted now.
    pub(crate) fn ensure_token(
        &self,
        agent: &str,
        key: &TeamKey,
        gateway_audience: &str,
    ) -> anyhow::Result<(String, bool)> {
        let path = self.token(agent);
        std::fs::create_dir_all(self.tokens())
            .with_context(|| format!("--data-dir: cannot create {}", self.tokens().display()))?;
        let now = token::now_unix();
        if let Ok(text) = std::fs::read_to_string(&path) {
            let existing = text.trim().to_owned();
            let keys = std::collections::HashMap::from([(LOCAL_TEAM.to_owned(), key.clone())]);
            if let Ok(claims) = token::verify_with(&existing, &keys, token::MAX_TTL, now)
                && claims.sub == agent
                && claims.exp > now + RENEW_BEFORE.as_secs()
                && claims.aud.0.iter().any(|a| a == gateway_audience)
            {
                return Ok((existing, false));
            }
        }
        let audiences = [gateway_audience.to_owned()];
        let minted = token::mint(
            &TokenRequest {
                team: LOCAL_TEAM,
                agent,
                groups: &[token::ANY_GROUP.to_owned()],
                ttl: TOKEN_TTL,
                audiences: &audiences,
            },
            key,
            now,
        )
        .with_context(|| format!("--agents: cannot mint a token for `{agent}`"))?;
        crate::keys::write_secret(&path, &format!("{minted}\n"), true)?;
        Ok((minted, true))
    }
}

/// The pid of the `nsh up` running for this data folder, if one is.
pub(crate) fn running_pid(layout: &Layout) -> Option<i32> {
    let text = std::fs::read_to_string(layout.pid_file()).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

pub(crate) fn alive(pid: i32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    // Signal 0: only checks that the process exists (and is ours).
    rustix::process::test_kill_process(pid).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_tokens_are_kept_and_reset_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_owned());
        let key = layout.ensure_team_key().unwrap();
        let (first, minted) = layout.ensure_token("alice", &key, "nsh-gateway").unwrap();
        assert!(minted);
        let again = layout.ensure_team_key().unwrap();
        assert_eq!(again.as_bytes(), key.as_bytes(), "an existing key is kept");
        let (second, minted) = layout.ensure_token("alice", &again, "nsh-gateway").unwrap();
        assert!(!minted, "a valid token is kept");
        assert_eq!(first, second);
        // Another gateway audience: the old token would be refused there, so a new one.
        let (_, minted) = layout.ensure_token("alice", &key, "other").unwrap();
        assert!(minted);

        let removed = layout.reset().unwrap();
        assert!(removed.contains(&layout.team_keys()), "{removed:?}");
        assert!(!layout.token("alice").exists());
        let fresh = layout.ensure_team_key().unwrap();
        assert_ne!(fresh.as_bytes(), key.as_bytes(), "--reset starts afresh");
    }
}
