//! `nsh gateway`: run the MCP gateway (HTTP or stdio), check its config, and manage tool pins.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use nsh_gateway_config::{Caller, GatewayConfig};

#[derive(Debug, Subcommand)]
pub(crate) enum GatewayVerb {
    /// Serve MCP over streamable HTTP at /mcp (with /healthz, /readyz, /metrics, /status).
    Run(ConfigArg),
    /// Serve MCP over stdio for one local client (e.g. in an MCP client's config).
    Stdio(StdioArgs),
    /// Check a config file and print it with every default filled in.
    Check(ConfigArg),
    /// Tool pins: the hash of each tool's name, description and schemas.
    Pins(PinsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArg {
    /// The gateway's config file (docs/gateway.md).
    #[arg(long = nsh_contract::command::GATEWAY_CONFIG_FLAG, value_name = "FILE", env = "NSH_GATEWAY_CONFIG")]
    config: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct StdioArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The team the local caller counts as, for per-team policy rules.
    #[arg(long, default_value = "local")]
    team: String,
    /// The agent the local caller counts as, for per-agent policy rules and rate limits.
    #[arg(long, default_value = "local")]
    agent: String,
}

#[derive(Debug, Args)]
pub(crate) struct PinsArgs {
    #[command(subcommand)]
    verb: PinsVerb,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PinsVerb {
    /// Connect to the upstreams and show each tool's pin and current hash.
    List(PinsListArgs),
    /// Record the current hash of the named tools (or all with --all) as their pin; a running
    /// gateway picks the change up within seconds.
    Approve(ApproveArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PinsListArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    output: crate::output::OutputArg,
}

#[derive(Debug, Args)]
pub(crate) struct ApproveArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Exposed tool names (`<upstream>__<tool>`).
    tools: Vec<String>,
    /// Approve every tool's current definition.
    #[arg(long, conflicts_with = "tools")]
    all: bool,
}

pub(crate) async fn run(verb: GatewayVerb) -> anyhow::Result<()> {
    match verb {
        GatewayVerb::Run(args) => {
            share_stdio_servers()?;
            nsh_mcp_gateway::run_http(args.config, crate::signal::shutdown_signal()).await?;
            Ok(())
        }
        GatewayVerb::Stdio(args) => {
            let caller = Caller {
                team: args.team,
                agent: args.agent,
            };
            share_stdio_servers()?;
            nsh_mcp_gateway::run_stdio(args.config.config, caller).await?;
            Ok(())
        }
        GatewayVerb::Check(args) => {
            let config = GatewayConfig::load(&args.config)?;
            let text = serde_saphyr::to_string(&config).context("printing the config")?;
            writeln!(
                std::io::stdout().lock(),
                "# {}: valid\n{text}",
                args.config.display()
            )?;
            Ok(())
        }
        GatewayVerb::Pins(PinsArgs { verb }) => pins(verb).await,
    }
}

async fn pins(verb: PinsVerb) -> anyhow::Result<()> {
    let path = match &verb {
        PinsVerb::List(args) => args.config.config.clone(),
        PinsVerb::Approve(args) => args.config.config.clone(),
    };
    let config = GatewayConfig::load(&path)?;
    let pins_path = config.pins_path(&path);
    let mut recorded = nsh_mcp_gateway::pins::read(&pins_path);
    let current = nsh_mcp_gateway::serve::current_pins(&path, Duration::from_secs(15)).await?;
    match verb {
        PinsVerb::List(args) => {
            let rows: Vec<serde_json::Value> = current
                .iter()
                .map(|(tool, hash)| {
                    let pinned = config
                        .policy
                        .pinned_tools
                        .get(tool)
                        .or_else(|| recorded.get(tool));
                    let state = match pinned {
                        None => "unpinned",
                        Some(p) if p == hash => "pinned",
                        Some(_) => "CHANGED",
                    };
                    serde_json::json!({ "tool": tool, "state": state, "current": hash })
                })
                .collect();
            let mut out = std::io::stdout().lock();
            if args.output.write_data(&mut out, &rows)? {
                return Ok(());
            }
            let mut table = crate::table::table(&["TOOL", "STATE", "CURRENT"]);
            for row in &rows {
                table.add_row(
                    ["tool", "state", "current"].map(|k| row[k].as_str().unwrap_or_default()),
                );
            }
            writeln!(out, "{table}")?;
            Ok(())
        }
        PinsVerb::Approve(args) => {
            let chosen: Vec<String> = if args.all {
                current.keys().cloned().collect()
            } else {
                args.tools
            };
            anyhow::ensure!(
                !chosen.is_empty(),
                "name the tools to approve (as `nsh gateway pins list` shows them) or pass --all"
            );
            for tool in &chosen {
                let hash = current.get(tool).with_context(|| {
                    format!("no upstream offers `{tool}` now (see `nsh gateway pins list`)")
                })?;
                if config.policy.pinned_tools.contains_key(tool) {
                    anyhow::bail!(
                        "`{tool}` is pinned in the config's pinnedTools, which wins over the pins file; set it there to {hash}"
                    );
                }
                recorded.insert(tool.clone(), hash.clone());
                writeln!(std::io::stdout().lock(), "approved {tool} {hash}")?;
            }
            nsh_mcp_gateway::pins::write(&pins_path, &recorded)
                .with_context(|| format!("writing {}", pins_path.display()))?;
            Ok(())
        }
    }
}

/// `command` upstreams run under the MCP daemon (`nsh mcp run-once`), shared and supervised.
pub(crate) fn share_stdio_servers() -> anyhow::Result<()> {
    let nsh = std::env::current_exe().context("finding this nsh binary")?;
    nsh_mcp_gateway::upstream::share_stdio_servers_through(nsh);
    Ok(())
}
