//! What `nsh up` runs (the plan, also `--dry-run`'s output) and what it prints once running:
//! commands that work as printed.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use super::configs::{self, Upstream};
use super::state::{Layout, TOKEN_TTL};
use super::{LOCAL_TEAM, RUNNING_LINE, UpArgs};

/// The stack for these arguments.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) mesh: SocketAddr,
    /// `None`: not started (no preset can run here).
    pub(crate) gateway: Option<SocketAddr>,
    pub(crate) redis: Option<String>,
    pub(crate) upstreams: Vec<Upstream>,
    pub(crate) agents: Vec<String>,
}

impl Plan {
    pub(crate) fn new(args: &UpArgs, project_dir: &Path, agents: &[String]) -> Self {
        Self {
            mesh: SocketAddr::new(args.bind, args.mesh_port),
            gateway: Some(SocketAddr::new(args.bind, args.gateway_port)),
            redis: args.redis.clone(),
            upstreams: configs::upstreams(project_dir, configs::on_path),
            agents: agents.to_vec(),
        }
    }

    pub(crate) fn included(&self) -> Vec<&str> {
        self.upstreams
            .iter()
            .filter_map(|u| match u {
                Upstream::Included { name, .. } => Some(name.as_str()),
                Upstream::LeftOut { .. } => None,
            })
            .collect()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "nsh up: the local stack on embedded defaults")?;
        let store = self
            .redis
            .as_deref()
            .map_or_else(|| "messages in memory".to_owned(), |r| format!("Redis {r}"));
        let included = self.included();
        let (gateway_listen, gateway_role) = if included.is_empty() {
            (
                "not started".to_owned(),
                "no preset below can run here, so no gateway".to_owned(),
            )
        } else {
            (
                self.gateway
                    .map_or_else(|| "-".to_owned(), |a| a.to_string()),
                format!(
                    "MCP tools behind team-token auth, policy and audit; upstreams {}",
                    included.join(", ")
                ),
            )
        };
        let rows = [
            (
                "mesh-server",
                self.mesh.to_string(),
                format!("agent-to-agent messages, {store}"),
            ),
            ("mcp-gateway", gateway_listen, gateway_role),
            (
                "mcp-daemon",
                "-".to_owned(),
                "runs each of the gateway's stdio upstreams once".to_owned(),
            ),
        ];
        for (name, listen, role) in rows {
            writeln!(f, "  {name:<12} {listen:<21} {role}")?;
        }
        for upstream in &self.upstreams {
            if let Upstream::LeftOut { name, missing } = upstream {
                writeln!(
                    f,
                    "  (preset {name} left out: `{missing}` is not on PATH; install it and run nsh up again)"
                )?;
            }
        }
        writeln!(
            f,
            "  agents of team {LOCAL_TEAM}: {}",
            self.agents.join(", ")
        )
    }
}

/// What to run once the stack is up.
pub(crate) struct Instructions<'a> {
    pub(crate) layout: &'a Layout,
    pub(crate) nsh: &'a str,
    pub(crate) mesh_url: &'a str,
    pub(crate) gateway_url: Option<&'a str>,
    pub(crate) agents: &'a [String],
    /// Agents whose token was minted now (the others kept theirs).
    pub(crate) renewed: &'a [String],
    pub(crate) detached: bool,
    /// ` --data-dir DIR` when it was given.
    pub(crate) down: String,
}

fn quoted(path: &Path) -> String {
    nsh_contract::quote::word(&path.display().to_string()).into_owned()
}

impl fmt::Display for Instructions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (nsh, url) = (self.nsh, self.mesh_url);
        let layout = self.layout;
        writeln!(f, "mesh-server: {url}")?;
        if let Some(gateway) = self.gateway_url {
            writeln!(
                f,
                "mcp-gateway: {gateway} (log: {})",
                layout.log("gateway").display()
            )?;
        }
        let kept: Vec<&String> = self
            .agents
            .iter()
            .filter(|a| !self.renewed.contains(a))
            .collect();
        write!(
            f,
            "team {LOCAL_TEAM}: key {}; tokens in {} (valid {} days",
            layout.team_key().display(),
            layout.tokens().display(),
            TOKEN_TTL.as_secs() / 86_400
        )?;
        if kept.is_empty() {
            writeln!(f, ", minted now)")?;
        } else {
            writeln!(f, "; kept from the last run, renewed when a day is left)")?;
        }
        writeln!(
            f,
            "Claude Code sessions that talk, one line per terminal, in your project folder (each has the mesh tools, the hooks that show new messages, and the gateway's tools):"
        )?;
        for agent in self.agents {
            writeln!(
                f,
                "  {nsh} agent launch --config {}",
                quoted(&layout.agent_config(agent))
            )?;
        }
        if let [first, second, ..] = self.agents {
            writeln!(
                f,
                "try it from a terminal: {second} follows its inbox in one, {first} writes from another:"
            )?;
            writeln!(
                f,
                "  {nsh} mesh inbox --follow --server {url} --token-file {}",
                quoted(&layout.token(second))
            )?;
            writeln!(
                f,
                "  {nsh} mesh send --server {url} --token-file {} --to {second} 'hello from {first}'",
                quoted(&layout.token(first))
            )?;
        }
        if self.detached {
            writeln!(
                f,
                "{RUNNING_LINE} in the background; stop it with: {nsh} down{}",
                self.down
            )
        } else {
            writeln!(f, "{RUNNING_LINE}; Ctrl-C stops everything.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        up: UpArgs,
    }

    fn args(line: &[&str]) -> UpArgs {
        Wrap::parse_from(std::iter::once("up").chain(line.iter().copied())).up
    }

    #[test]
    fn the_plan_lists_every_part_at_the_bind_address() {
        let args = args(&["--bind", "127.0.0.2", "--gateway-port", "9000"]);
        let plan = Plan::new(
            &args,
            Path::new("/src/app"),
            &["alice".into(), "bob".into()],
        );
        let text = plan.to_string();
        assert!(text.contains("mesh-server  127.0.0.2:3456"), "{text}");
        assert!(text.contains("mcp-gateway  127.0.0.2:9000"), "{text}");
        assert!(text.contains("mcp-daemon"), "{text}");
        assert!(text.contains("agents of team local: alice, bob"), "{text}");
    }

    #[test]
    fn the_instructions_are_one_launch_line_per_agent_and_name_no_placeholder() {
        let agents = ["alice".to_owned(), "bob".to_owned(), "carol".to_owned()];
        let layout = Layout::new("/home/me/.local/share/nsh".into());
        let text = Instructions {
            layout: &layout,
            nsh: "nsh",
            mesh_url: "ws://127.0.0.1:3456",
            gateway_url: Some("http://127.0.0.1:8080/mcp"),
            agents: &agents,
            renewed: &agents,
            detached: false,
            down: String::new(),
        }
        .to_string();
        for agent in &agents {
            assert!(
                text.contains(&format!(
                    "  nsh agent launch --config /home/me/.local/share/nsh/agents/{agent}.yaml\n"
                )),
                "{text}"
            );
        }
        assert!(text.contains("--to bob 'hello from alice'"), "{text}");
        assert!(
            text.ends_with("nsh up is running; Ctrl-C stops everything.\n"),
            "{text}"
        );
        assert!(!text.contains("NAME"), "{text}");
    }
}
