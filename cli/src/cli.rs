//! The command tree. Groups that have no verbs yet are declared (so later work only adds
//! variants) but hidden from `--help` by [`command`], so nobody is shown a command that does nothing.

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// `0.1.0 (commit 1a2b3c4d5e6f)`: what `nsh --version` and `nsh version` print.
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("NSH_GIT_COMMIT"),
    ")"
);

/// nsh-mesh: teams of AI coding agents that talk to each other and to MCP servers.
#[derive(Debug, Parser)]
#[command(
    name = "nsh",
    version = VERSION,
    propagate_version = true,
    subcommand_required = true
)]
pub(crate) struct Cli {
    /// Log format on stderr.
    #[arg(long = nsh_contract::command::LOG_FORMAT_FLAG, global = true, value_enum, default_value_t = LogFormat::Text, env = nsh_contract::env::LOG_FORMAT)]
    pub(crate) log_format: LogFormat,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the whole local stack (mesh, MCP gateway, MCP daemon) on embedded defaults, with a
    /// team `local` and ready-to-paste commands for its agents.
    Up(crate::up::UpArgs),
    /// Stop a stack started with `nsh up --detach`.
    Down(crate::up::DownArgs),
    /// The agent-to-agent mesh: server, client, tokens.
    Mesh(Group<crate::mesh::MeshVerb>),
    /// The MCP gateway in front of MCP servers.
    Gateway(Group<crate::gateway::GatewayVerb>),
    /// MCP servers installed across MCP clients.
    Mcp(Group<crate::mcp::McpVerb>),
    /// Launch and configure coding agents.
    Agent(Group<crate::agent::AgentVerb>),
    /// The Kubernetes operator and its CRDs.
    Operator(Group<crate::operator::OperatorVerb>),
    /// Commands that target a remote cluster.
    Cluster(crate::cluster::ClusterArgs),
    /// Print nsh's version and the commit it was built from.
    Version,
    /// Print a shell completion script: `source <(nsh completion bash)`, or save it where
    /// your shell loads completions.
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

/// A subcommand group; `V` lists its verbs.
#[derive(Debug, Args)]
pub(crate) struct Group<V: Subcommand> {
    #[command(subcommand)]
    pub(crate) verb: V,
}

/// The clap command with every verb-less group hidden.
pub(crate) fn command() -> clap::Command {
    let mut command = Cli::command();
    let empty_groups: Vec<String> = command
        .get_subcommands()
        .filter(|sub| is_group(sub) && !sub.has_subcommands())
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in empty_groups {
        command = command.mut_subcommand(name, |sub| sub.hide(true));
    }
    command
}

/// A group is a subcommand that requires a verb (`up` is a plain command, not a group).
fn is_group(sub: &clap::Command) -> bool {
    sub.is_subcommand_required_set()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tree_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn groups_without_verbs_are_hidden_and_commands_are_not() {
        let command = command();
        let visible: Vec<&str> = command
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set())
            .map(clap::Command::get_name)
            .collect();
        assert!(visible.contains(&"up"), "`up` must be shown: {visible:?}");
        for sub in command.get_subcommands().filter(|sub| is_group(sub)) {
            assert_eq!(
                sub.is_hide_set(),
                !sub.has_subcommands(),
                "group `{}` is shown iff it has verbs",
                sub.get_name()
            );
        }
    }

    /// Every argument and every command says what it is for in `--help`.
    #[test]
    fn every_argument_and_command_has_a_description() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{sub_path} (the command)"));
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&command(), "nsh", &mut missing);
        assert!(
            missing.is_empty(),
            "no description:\n{}",
            missing.join("\n")
        );
    }
}
