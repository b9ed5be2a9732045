//! `nsh up`: the whole stack on one machine, on embedded defaults.
//!
//! The components arrive one by one; until they do, `nsh up` prints the plan it will run and
//! says plainly which parts this build cannot start yet. Nothing here pretends to run.

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;

/// Arguments of `nsh up`.
#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// Address every component binds to; each takes its own port from the defaults.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub(crate) bind: std::net::IpAddr,
}

/// One process of the local stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Component {
    pub(crate) name: &'static str,
    pub(crate) role: &'static str,
    pub(crate) listen: SocketAddr,
    /// Whether this build contains the component. Parts that do not exist yet are listed as planned.
    pub(crate) available: bool,
}

/// The embedded defaults: one entry per component, in start order.
const DEFAULTS: &[(&str, &str, u16)] = &[
    (
        "mesh-server",
        "Socket.io mesh for agent-to-agent messages",
        3456,
    ),
    (
        "mcp-daemon",
        "one shared MCP server instance for many agents",
        3458,
    ),
    (
        "mcp-gateway",
        "auth, tool policy and audit in front of MCP servers",
        3457,
    ),
];

/// The stack `nsh up` starts with these arguments.
pub(crate) fn plan(args: &UpArgs) -> Vec<Component> {
    DEFAULTS
        .iter()
        .map(|&(name, role, port)| Component {
            name,
            role,
            listen: SocketAddr::new(args.bind, port),
            available: false,
        })
        .collect()
}

pub(crate) struct PlanReport<'a>(pub(crate) &'a [Component]);

impl fmt::Display for PlanReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "nsh up: local stack on embedded defaults")?;
        for c in self.0 {
            let state = if c.available {
                "ready to start"
            } else {
                "planned, not in this build yet"
            };
            writeln!(
                f,
                "  {:<12} {:<21} {:<32} {}",
                c.name, c.listen, state, c.role
            )?;
        }
        let missing = self.0.iter().filter(|c| !c.available).count();
        if missing > 0 {
            writeln!(
                f,
                "{missing} of {} components are not in this build yet, so nothing was started.",
                self.0.len()
            )?;
        }
        Ok(())
    }
}

pub(crate) fn run(args: &UpArgs) -> anyhow::Result<()> {
    let components = plan(args);
    tracing::debug!(components = components.len(), "planned local stack");
    write!(std::io::stdout().lock(), "{}", PlanReport(&components))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(bind: &str) -> UpArgs {
        UpArgs {
            bind: bind.parse().unwrap(),
        }
    }

    #[test]
    fn plan_uses_bind_address_and_distinct_default_ports() {
        let components = plan(&args("127.0.0.2"));
        assert_eq!(components.len(), DEFAULTS.len());
        let mut ports: Vec<u16> = components.iter().map(|c| c.listen.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), components.len(), "ports must not collide");
        assert!(
            components
                .iter()
                .all(|c| c.listen.ip().to_string() == "127.0.0.2")
        );
        assert_eq!(components[0].listen.to_string(), "127.0.0.2:3456");
    }

    #[test]
    fn report_says_nothing_was_started_when_parts_are_missing() {
        let text = PlanReport(&plan(&args("127.0.0.1"))).to_string();
        assert!(text.contains("mesh-server"), "{text}");
        assert!(text.contains("127.0.0.1:3456"), "{text}");
        assert!(
            text.contains("3 of 3 components are not in this build yet"),
            "{text}"
        );
    }
}
