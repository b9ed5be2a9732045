//! `nsh up`: the local stack on one machine, on embedded defaults.
//!
//! Today `nsh up` starts the mesh server and prints commands that work as printed (tokens for
//! two agents, a message between them); it lists the MCP gateway (in this build, started by
//! hand with `nsh gateway run`) and the MCP daemon (started on demand, one per shared server,
//! by `nsh mcp run-once`) and says how each starts. On first run it creates a team
//! `local` with a fresh key, so agents on this machine can join at once.

use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use nsh_mesh_server::{Server, ServerConfig};

/// The team `nsh up` creates for agents on this machine.
pub(crate) const LOCAL_TEAM: &str = "local";

/// Arguments of `nsh up`.
#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// Address every component binds to.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub(crate) bind: IpAddr,
    /// Port of the mesh server.
    #[arg(long, default_value_t = 3456)]
    pub(crate) mesh_port: u16,
    /// Where local state (team keys) lives [default: $XDG_DATA_HOME/nsh or ~/.local/share/nsh].
    #[arg(long, value_name = "DIR", env = "NSH_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Print the plan and exit without starting anything.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// One process of the local stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Component {
    pub(crate) name: &'static str,
    pub(crate) role: &'static str,
    /// `None`: it listens on no port of its own.
    pub(crate) listen: Option<SocketAddr>,
    /// Whether `nsh up` starts it, and if not, why.
    pub(crate) state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Started,
    /// In this build, but `nsh up` does not start it: how to start it by hand.
    ByHand(&'static str),
    /// Started when first needed, by this command.
    OnDemand(&'static str),
}

/// The stack `nsh up` runs with these arguments, in start order.
pub(crate) fn plan(args: &UpArgs) -> Vec<Component> {
    let at = |port| SocketAddr::new(args.bind, port);
    vec![
        Component {
            name: "mesh-server",
            role: "Socket.io mesh for agent-to-agent messages",
            listen: Some(at(args.mesh_port)),
            state: State::Started,
        },
        Component {
            name: "mcp-daemon",
            role: "one shared MCP server instance for many agents",
            listen: None,
            state: State::OnDemand("nsh mcp run-once -- COMMAND (docs/daemon.md)"),
        },
        Component {
            name: "mcp-gateway",
            role: "auth, tool policy and audit in front of MCP servers",
            // `nsh gateway run`'s own default, clear of the mesh ports the docs use.
            listen: Some(at(8080)),
            state: State::ByHand("nsh gateway run --config FILE (docs/gateway.md)"),
        },
    ]
}

pub(crate) struct PlanReport<'a>(pub(crate) &'a [Component]);

impl fmt::Display for PlanReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "nsh up: local stack on embedded defaults")?;
        for c in self.0 {
            let state = match c.state {
                State::Started => "nsh up starts it".to_owned(),
                State::ByHand(_) => "in this build, not started".to_owned(),
                State::OnDemand(_) => "starts on demand".to_owned(),
            };
            writeln!(
                f,
                "  {:<12} {:<21} {:<31} {}",
                c.name,
                c.listen.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                state,
                c.role
            )?;
        }
        for c in self.0 {
            match c.state {
                State::ByHand(how) => writeln!(f, "{}: start it by hand: {how}", c.name)?,
                State::OnDemand(how) => {
                    writeln!(
                        f,
                        "{}: each shared MCP server's first client starts one: {how}",
                        c.name
                    )?;
                }
                State::Started => {}
            }
        }
        Ok(())
    }
}

/// `--data-dir`, else `$XDG_DATA_HOME/nsh`, else `~/.local/share/nsh`.
pub(crate) fn data_dir(args: &UpArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.data_dir {
        return Ok(dir.clone());
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("nsh"));
    }
    let home = std::env::var_os("HOME")
        .context("neither --data-dir, XDG_DATA_HOME nor HOME is set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/nsh"))
}

/// The team keys folder, with a key for the `local` team (created on first run).
fn ensure_local_team(data_dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let keys = data_dir.join("team-keys");
    std::fs::create_dir_all(&keys)
        .with_context(|| format!("--data-dir: cannot create {}", keys.display()))?;
    let key = keys.join(LOCAL_TEAM);
    if !key.exists() {
        crate::keys::write_new_key(&key)?;
        tracing::info!(path = %key.display(), "created the key of team `local`");
    }
    Ok((keys, key))
}

pub(crate) async fn run(args: &UpArgs) -> anyhow::Result<()> {
    let components = plan(args);
    write!(std::io::stdout().lock(), "{}", PlanReport(&components))?;
    if args.dry_run {
        writeln!(std::io::stdout().lock(), "--dry-run: nothing was started.")?;
        return Ok(());
    }
    let data_dir = data_dir(args)?;
    let (keys, key) = ensure_local_team(&data_dir)?;
    let mesh_listen = SocketAddr::new(args.bind, args.mesh_port);
    let server = Server::bind(ServerConfig::new(mesh_listen, &keys))
        .await
        .map_err(|err| crate::mesh::bind_hint(err, "--mesh-port"))?;
    let url = format!("ws://{}", server.local_addr());
    let hints = TryIt {
        nsh: nsh_command(),
        url: &url,
        key: &key,
        tokens: &data_dir.join("tokens"),
    };
    std::fs::create_dir_all(hints.tokens)
        .with_context(|| format!("--data-dir: cannot create {}", hints.tokens.display()))?;
    // One write, ending with the last hint: a reader that stops there (`| head`) is not
    // answered with a broken pipe that would stop the stack.
    let text = format!(
        "mesh-server: {url} (team keys in {}; Ctrl-C stops)\n{hints}",
        keys.display(),
    );
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    drop(out);
    server.run(crate::signal::shutdown_signal()).await?;
    Ok(())
}

/// `nsh` when the `nsh` on PATH is this binary, else this binary's path: the printed commands
/// must run as printed (under `cargo run` there is no `nsh` on PATH).
fn nsh_command() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "nsh".to_owned();
    };
    let this = std::fs::canonicalize(&exe).ok();
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| this.is_some() && std::fs::canonicalize(dir.join("nsh")).ok() == this)
    });
    if on_path {
        "nsh".to_owned()
    } else {
        nsh_contract::quote::word(&exe.display().to_string()).into_owned()
    }
}

/// Commands that work as printed: two agents of team `local` with a token each (any group
/// allowed), one following its inbox, the other sending to it.
pub(crate) struct TryIt<'a> {
    pub(crate) nsh: String,
    pub(crate) url: &'a str,
    pub(crate) key: &'a Path,
    pub(crate) tokens: &'a Path,
}

impl TryIt<'_> {
    pub(crate) const AGENTS: [&'static str; 2] = ["alice", "bob"];

    fn token_file(&self, agent: &str) -> String {
        let path = self.tokens.join(format!("{agent}.jwt"));
        nsh_contract::quote::word(&path.display().to_string()).into_owned()
    }
}

impl fmt::Display for TryIt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (nsh, url) = (&self.nsh, self.url);
        let key = nsh_contract::quote::word(&self.key.display().to_string()).into_owned();
        writeln!(
            f,
            "try it: a token per agent (team {LOCAL_TEAM}, any group):"
        )?;
        for agent in Self::AGENTS {
            writeln!(
                f,
                "  {nsh} mesh token --team {LOCAL_TEAM} --agent {agent} --key-file {key} --groups '*' --out {} --force",
                self.token_file(agent)
            )?;
        }
        let [alice, bob] = Self::AGENTS;
        writeln!(
            f,
            "then {bob} follows its inbox in one terminal, {alice} writes from another:"
        )?;
        writeln!(
            f,
            "  {nsh} mesh inbox --follow --server {url} --token-file {}",
            self.token_file(bob)
        )?;
        writeln!(
            f,
            "  {nsh} mesh send --server {url} --token-file {} --to {bob} 'hello from {alice}'",
            self.token_file(alice)
        )?;
        writeln!(
            f,
            "an agent's MCP client runs: {nsh} mesh client --server {url} --token-file {}",
            self.token_file(alice)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(bind: &str) -> UpArgs {
        UpArgs {
            bind: bind.parse().unwrap(),
            mesh_port: 3456,
            data_dir: None,
            dry_run: true,
        }
    }

    #[test]
    fn plan_uses_bind_address_and_distinct_ports() {
        let components = plan(&args("127.0.0.2"));
        let mut ports: Vec<u16> = components
            .iter()
            .filter_map(|c| c.listen.map(|a| a.port()))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 2, "ports must not collide");
        assert!(
            components
                .iter()
                .filter_map(|c| c.listen)
                .all(|a| a.ip().to_string() == "127.0.0.2")
        );
        assert_eq!(components[0].listen.unwrap().to_string(), "127.0.0.2:3456");
    }

    #[test]
    fn report_names_what_this_build_cannot_start() {
        let text = PlanReport(&plan(&args("127.0.0.1"))).to_string();
        assert!(text.contains("mesh-server  127.0.0.1:3456"), "{text}");
        assert!(
            text.contains(
                "mcp-daemon: each shared MCP server's first client starts one: nsh mcp run-once"
            ),
            "{text}"
        );
        assert!(!text.contains("not in this build"), "{text}");
        assert!(
            text.contains("mcp-gateway: start it by hand: nsh gateway run --config FILE"),
            "{text}"
        );
    }

    #[test]
    fn the_local_team_key_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = ensure_local_team(dir.path()).unwrap();
        let first = std::fs::read(&key).unwrap();
        ensure_local_team(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(&key).unwrap(),
            first,
            "an existing key is kept"
        );
    }
}
