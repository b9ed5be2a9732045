//! `nsh mcp …`: MCP servers across MCP clients (list, install, uninstall, doctor).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use nsh_agent_config::settings::McpServer;
use nsh_mcp_clients::clients::{self, Client, Env, Scope};
use serde_json::json;

#[derive(Debug, Subcommand)]
pub(crate) enum McpVerb {
    /// Every MCP server in every detected MCP client's config.
    ListInstalled(ListArgs),
    /// Add a server (a preset, or --command/--url) to an MCP client's config.
    Install(InstallArgs),
    /// Remove a server from an MCP client's config.
    Uninstall(UninstallArgs),
    /// Start (or connect to) every installed server and check the MCP handshake and tools/list.
    Doctor(DoctorArgs),
    /// Run a stdio MCP server shared by every client that runs the same: what an MCP
    /// client's config runs instead of the server itself.
    RunOnce(crate::mcp_daemon::SharedServerArgs),
    /// One stdio MCP server shared by many clients: list, stop, serve over HTTP.
    Daemon(DaemonArgs),
}

/// `nsh mcp doctor`, whose table reports every failure itself.
pub(crate) fn is_doctor(verb: &McpVerb) -> bool {
    matches!(verb, McpVerb::Doctor(_))
}

#[derive(Debug, Args)]
pub(crate) struct DaemonArgs {
    #[command(subcommand)]
    verb: DaemonVerb,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum DaemonVerb {
    /// Run COMMAND once and serve it over streamable HTTP at /mcp to every client (what an
    /// McpGateway's `command` upstream container runs).
    Serve(DaemonServeArgs),
    /// Every daemon started by `nsh mcp run-once`: clients, pid, uptime, memory.
    List(crate::mcp_daemon::ListArgs),
    /// Stop a daemon and its server.
    Stop(crate::mcp_daemon::StopArgs),
    /// The daemon process `run-once` starts.
    #[command(hide = true)]
    Host(crate::mcp_daemon::SharedServerArgs),
    /// Start a server with a parent-death signal (the daemon starts its server this way).
    #[command(hide = true)]
    Exec(crate::mcp_daemon::ExecArgs),
    /// Copy this `nsh` binary to a path (an init container sharing it with containers of other
    /// images, which then run `nsh mcp daemon serve`).
    #[command(hide = true)]
    CopyBinary(CopyBinaryArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CopyBinaryArgs {
    /// Where to put the copy (its folder must exist).
    #[arg(long, value_name = "PATH")]
    to: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct DaemonServeArgs {
    /// Address of the MCP endpoint (/mcp) and /healthz, /readyz, /metrics.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    /// Name of the server, for logs.
    #[arg(long, default_value = "server")]
    name: String,
    /// The stdio MCP server and its arguments, after `--`.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only this client.
    #[arg(long, value_parser = client_parser())]
    client: Option<&'static Client>,
    #[command(flatten)]
    output: crate::output::OutputArg,
}

#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// Name of the server: a preset (`nsh agent presets`), a server defined in your
    /// .agent.yaml, or any name with --command or --url.
    server: String,
    /// The MCP client to install into.
    #[arg(long, value_parser = client_parser())]
    client: &'static Client,
    /// Which of the client's config files: `user` (every project), `project` (shared
    /// through git) or `local` (this project, this machine); clients have some of them.
    #[arg(long, value_enum, default_value_t = ScopeArg::User)]
    scope: ScopeArg,
    /// Run this command as a stdio server (its arguments after `--`).
    #[arg(long, conflicts_with = "url")]
    command: Option<String>,
    /// Connect to this URL (streamable HTTP).
    #[arg(long)]
    url: Option<String>,
    /// Environment for a stdio server, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = key_value)]
    env: Vec<(String, String)>,
    /// HTTP header for a URL server, KEY=VALUE (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// Run the server through `nsh mcp run-once`: one process shared by every client that runs
    /// the same (stdio servers only).
    #[arg(long)]
    shared: bool,
    /// Replace a server of the same name that has other settings (without it, install refuses
    /// and shows the difference).
    #[arg(long)]
    force: bool,
    /// Print the edit as a unified diff; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Arguments of --command.
    #[arg(last = true)]
    args: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct UninstallArgs {
    /// Name of the server, as `nsh mcp list-installed` shows it.
    server: String,
    /// The MCP client to remove it from.
    #[arg(long, value_parser = client_parser())]
    client: &'static Client,
    /// The scope to remove it from [default: wherever it is installed].
    #[arg(long, value_enum)]
    scope: Option<ScopeArg>,
}

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// Only this client.
    #[arg(long, value_parser = client_parser())]
    client: Option<&'static Client>,
    /// How long each server has to answer initialize and tools/list.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    output: crate::output::OutputArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScopeArg {
    User,
    Project,
    Local,
}

impl From<ScopeArg> for Scope {
    fn from(scope: ScopeArg) -> Self {
        match scope {
            ScopeArg::User => Self::User,
            ScopeArg::Project => Self::Project,
            ScopeArg::Local => Self::Local,
        }
    }
}

/// `--client`, whose values `--help` and errors list.
fn client_parser() -> impl clap::builder::TypedValueParser<Value = &'static Client> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(clients::ids())
        .map(|id: String| clients::client(&id).expect("a listed client"))
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "expected KEY=VALUE".to_owned())
}

fn env() -> anyhow::Result<Env> {
    Ok(Env::current(
        crate::paths::home()?,
        std::env::current_dir().context("cannot read the current folder")?,
    ))
}

/// The verbs that must not run on the multi-threaded runtime (see `mcp_daemon`).
pub(crate) fn needs_no_runtime(verb: &McpVerb) -> bool {
    matches!(
        verb,
        McpVerb::RunOnce(_)
            | McpVerb::Daemon(DaemonArgs {
                verb: DaemonVerb::Host(_)
                    | DaemonVerb::Exec(_)
                    | DaemonVerb::List(_)
                    | DaemonVerb::Stop(_),
            })
    )
}

/// Runs a verb [`needs_no_runtime`] picked.
pub(crate) fn run_without_runtime(verb: McpVerb) -> anyhow::Result<()> {
    use crate::mcp_daemon as daemon;
    match verb {
        McpVerb::RunOnce(args) => daemon::run_once(&args),
        McpVerb::Daemon(DaemonArgs {
            verb: DaemonVerb::Host(args),
        }) => daemon::host(&args),
        McpVerb::Daemon(DaemonArgs {
            verb: DaemonVerb::Exec(args),
        }) => daemon::exec(&args),
        McpVerb::Daemon(DaemonArgs {
            verb: DaemonVerb::List(args),
        }) => daemon::list(&args),
        McpVerb::Daemon(DaemonArgs {
            verb: DaemonVerb::Stop(args),
        }) => daemon::stop(&args),
        _ => unreachable!("needs_no_runtime picks only these"),
    }
}

pub(crate) async fn run(verb: McpVerb) -> anyhow::Result<()> {
    match verb {
        McpVerb::ListInstalled(args) => list(&args),
        McpVerb::Install(args) => install(args),
        McpVerb::Uninstall(args) => uninstall(&args),
        McpVerb::Doctor(args) => doctor(&args).await,
        McpVerb::Daemon(DaemonArgs {
            verb: DaemonVerb::Serve(args),
        }) => {
            let mut words = args.command.into_iter();
            let command = nsh_gateway_config::Command {
                command: words.next().unwrap_or_default(),
                args: words.collect(),
                env: Default::default(),
                image: None,
            };
            crate::gateway::share_stdio_servers()?;
            nsh_mcp_gateway::run_shared_stdio(
                args.listen,
                args.name,
                command,
                crate::signal::shutdown_signal(),
            )
            .await?;
            Ok(())
        }
        McpVerb::Daemon(DaemonArgs {
            verb: DaemonVerb::CopyBinary(args),
        }) => copy_binary(&args.to),
        McpVerb::RunOnce(_)
        | McpVerb::Daemon(DaemonArgs {
            verb:
                DaemonVerb::Host(_) | DaemonVerb::Exec(_) | DaemonVerb::List(_) | DaemonVerb::Stop(_),
        }) => unreachable!("handled by run_without_runtime"),
    }
}

fn copy_binary(to: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let me = std::env::current_exe().context("finding this binary")?;
    std::fs::copy(&me, to)
        .with_context(|| format!("copying {} to {}", me.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", to.display()))?;
    tracing::info!(to = %to.display(), "nsh copied");
    Ok(())
}

/// Where a server runs: its command line, or its URL.
fn target(server: &McpServer) -> String {
    match (&server.command, &server.url) {
        (Some(command), _) => std::iter::once(command.clone())
            .chain(server.args.clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" "),
        (None, Some(url)) => url.clone(),
        (None, None) => "(neither command nor url)".into(),
    }
}

fn transport(server: &McpServer) -> &'static str {
    use nsh_agent_config::settings::Transport;
    match (server.command.is_some(), server.transport) {
        (true, _) => "stdio",
        (false, Some(Transport::Sse)) => "sse",
        (false, _) => "http",
    }
}

fn list(args: &ListArgs) -> anyhow::Result<()> {
    let (installed, problems) = nsh_mcp_clients::list_installed(&env()?, args.client);
    let mut out = std::io::stdout().lock();
    if args.output.format() != crate::output::Format::Table {
        let servers: Vec<_> = installed
            .iter()
            .map(|i| {
                json!({
                    "client": i.client.id, "scope": i.scope, "name": i.name,
                    "transport": transport(&i.server), "server": i.server, "file": i.path,
                })
            })
            .collect();
        let problems: Vec<_> = problems
            .iter()
            .map(|p| json!({ "client": p.client.id, "scope": p.scope, "file": p.path, "error": p.error.to_string() }))
            .collect();
        args.output.write_data(
            &mut out,
            &json!({ "servers": servers, "problems": problems }),
        )?;
        return Ok(());
    }
    let mut rows = crate::table::table(&[
        "CLIENT",
        "SCOPE",
        "SERVER",
        "TRANSPORT",
        "COMMAND / URL",
        "FILE",
    ]);
    for i in &installed {
        rows.add_row(vec![
            i.client.id.to_owned(),
            i.scope.as_str().to_owned(),
            i.name.clone(),
            transport(&i.server).to_owned(),
            target(&i.server),
            i.path.display().to_string(),
        ]);
    }
    if installed.is_empty() {
        writeln!(out, "no MCP servers found in any client's config")?;
    } else {
        writeln!(out, "{rows}")?;
    }
    for problem in &problems {
        tracing::warn!(client = problem.client.id, "{}", problem.error);
    }
    Ok(())
}

fn install(args: InstallArgs) -> anyhow::Result<()> {
    let mut server = match (&args.command, &args.url) {
        (Some(command), _) => McpServer {
            command: Some(command.clone()),
            args: Some(args.args.clone()),
            ..McpServer::default()
        },
        (None, Some(url)) => McpServer {
            url: Some(url.clone()),
            ..McpServer::default()
        },
        (None, None) => crate::agent::catalog_server(&args.server)?,
    };
    if !args.env.is_empty() {
        anyhow::ensure!(
            server.command.is_some(),
            "--env applies to stdio servers; this one is a URL (use --header)"
        );
        server
            .env
            .get_or_insert_with(BTreeMap::new)
            .extend(args.env.iter().cloned());
    }
    if !args.headers.is_empty() {
        anyhow::ensure!(
            server.url.is_some(),
            "--header applies to URL servers; this one runs a command (use --env)"
        );
        server
            .headers
            .get_or_insert_with(BTreeMap::new)
            .extend(args.headers.iter().cloned());
    }
    if args.shared {
        anyhow::ensure!(
            server.command.is_some(),
            "--shared applies to stdio servers; `{}` is reached by URL, which many clients share already",
            args.server
        );
        let nsh = std::env::current_exe().context("finding this nsh binary")?;
        server = nsh_agent_config::catalog::shared(&nsh.to_string_lossy(), server);
    }
    let change = nsh_mcp_clients::install(
        args.client,
        &env()?,
        args.scope.into(),
        &args.server,
        &server,
        nsh_mcp_clients::InstallOptions {
            force: args.force,
            dry_run: args.dry_run,
        },
    )?;
    let mut out = std::io::stdout().lock();
    if !change.changed {
        writeln!(
            out,
            "`{}` is already installed in {} as given: {}",
            args.server,
            args.client.name,
            change.path.display()
        )?;
    } else if args.dry_run {
        write!(out, "{}", change.diff)?;
        writeln!(out, "--dry-run: {} was not changed", change.path.display())?;
    } else {
        writeln!(
            out,
            "installed `{}` in {} ({}): {}",
            args.server,
            args.client.name,
            change.scope.as_str(),
            change.path.display()
        )?;
        if let Some(backup) = change.backup {
            writeln!(out, "previous file saved to {}", backup.display())?;
        }
    }
    Ok(())
}

fn uninstall(args: &UninstallArgs) -> anyhow::Result<()> {
    let change = nsh_mcp_clients::uninstall(
        args.client,
        &env()?,
        args.scope.map(Into::into),
        &args.server,
    )?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "removed `{}` from {} ({}): {}",
        args.server,
        args.client.name,
        change.scope.as_str(),
        change.path.display()
    )?;
    if change.deleted {
        writeln!(
            out,
            "{} held nothing else, so it was deleted (as before the install)",
            change.path.display()
        )?;
    }
    if let Some(backup) = change.backup {
        writeln!(out, "previous file saved to {}", backup.display())?;
    }
    Ok(())
}

async fn doctor(args: &DoctorArgs) -> anyhow::Result<()> {
    let (installed, problems) = nsh_mcp_clients::list_installed(&env()?, args.client);
    let probes = futures_util::future::join_all(
        installed
            .iter()
            .map(|i| crate::mcp_doctor::probe(&i.server, args.timeout)),
    )
    .await;
    let mut results = Vec::new();
    for problem in &problems {
        results.push(json!({
            "client": problem.client.id, "scope": problem.scope, "server": null,
            "ok": false, "detail": format!("config file: {}", problem.error), "file": problem.path,
        }));
    }
    for (i, probe) in installed.iter().zip(probes) {
        let (ok, detail) = match probe {
            Ok(found) => (true, found.to_string()),
            Err(why) => (false, why),
        };
        results.push(json!({
            "client": i.client.id, "scope": i.scope, "server": i.name, "ok": ok,
            "detail": detail, "file": i.path,
        }));
    }
    let failed = results.iter().filter(|r| r["ok"] == false).count();
    let mut out = std::io::stdout().lock();
    let printed_as_data = args.output.write_data(&mut out, &results)?;
    if printed_as_data {
        // JSON or YAML: printed.
    } else if results.is_empty() {
        writeln!(out, "no MCP servers found in any client's config")?;
    } else {
        let mut rows = crate::table::table(&["CLIENT", "SCOPE", "SERVER", "STATUS", "DETAIL"]);
        for r in &results {
            rows.add_row(vec![
                r["client"].as_str().unwrap_or_default().to_owned(),
                r["scope"].as_str().unwrap_or_default().to_owned(),
                r["server"].as_str().unwrap_or("(config file)").to_owned(),
                if r["ok"] == true { "OK" } else { "FAILED" }.to_owned(),
                r["detail"].as_str().unwrap_or_default().to_owned(),
            ]);
        }
        writeln!(out, "{rows}")?;
    }
    drop(out);
    anyhow::ensure!(failed == 0, "{failed} of {} checks failed", results.len());
    Ok(())
}
