//! `nsh`: one binary for the whole of nsh-mesh. Parsing lives in [`cli`], each verb in its module.
#![forbid(unsafe_code)]

mod cli;
mod up;

use clap::FromArgMatches as _;

fn main() -> anyhow::Result<()> {
    let matches = cli::command().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches)?;
    init_tracing(cli.log_format);
    match cli.command {
        cli::Command::Up(args) => up::run(&args),
        cli::Command::Mesh(group) => match group.verb {},
        cli::Command::Gateway(group) => match group.verb {},
        cli::Command::Mcp(group) => match group.verb {},
        cli::Command::Agent(group) => match group.verb {},
        cli::Command::Operator(group) => match group.verb {},
        cli::Command::Cluster(group) => match group.verb {},
    }
}

/// Logs go to stderr, always: several verbs (the MCP stdio servers) own stdout.
fn init_tracing(format: cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NSH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().init(),
    }
}
