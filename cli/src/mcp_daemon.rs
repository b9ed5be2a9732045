//! `nsh mcp run-once` and `nsh mcp daemon …`: one stdio MCP server shared by many clients.
//!
//! These verbs run without the multi-threaded runtime (see `main`): a bridge is plain threads,
//! a daemon a single-threaded runtime (the parent-death signal of the server it starts belongs
//! to the thread that started it, so that thread must live as long as the daemon).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use nsh_mcp_daemon::identity::{DaemonFiles, runtime_dir};
use nsh_mcp_daemon::{Launch, Lifetime, ServerSpec};

/// What makes a shared server, for `run-once` and the daemon it starts.
#[derive(Debug, Clone, Args)]
pub(crate) struct SharedServerArgs {
    /// Share by this name instead of by command, arguments, named environment and folder.
    #[arg(long)]
    name: Option<String>,
    /// Stop the daemon after this long without clients.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, conflicts_with = "persistent")]
    idle_timeout: Duration,
    /// Keep the daemon until `nsh mcp daemon stop NAME`.
    #[arg(long)]
    persistent: bool,
    /// An environment variable that makes servers different (a token, a project), NAME or
    /// NAME=VALUE (repeatable). Its value is part of what is shared and is given to the server.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// The stdio MCP server and its arguments, after `--`.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

impl SharedServerArgs {
    fn spec(&self) -> anyhow::Result<ServerSpec> {
        let mut env = BTreeMap::new();
        for entry in &self.env {
            let (name, value) = match entry.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => {
                    let value = std::env::var(entry).map_err(|_| {
                        anyhow::anyhow!(
                            "--env {entry}: not set in this environment; set it, or pass --env {entry}=VALUE"
                        )
                    })?;
                    (entry.clone(), value)
                }
            };
            anyhow::ensure!(
                !name.is_empty(),
                "--env {entry}: the name is empty; use NAME or NAME=VALUE"
            );
            env.insert(name, value);
        }
        let mut words = self.command.iter().cloned();
        Ok(ServerSpec {
            command: words.next().context("no COMMAND after `--`")?,
            args: words.collect(),
            env,
            cwd: std::env::current_dir().context("cannot read the current folder")?,
        })
    }

    fn lifetime(&self) -> Lifetime {
        if self.persistent {
            Lifetime::Persistent
        } else {
            Lifetime::Idle(self.idle_timeout)
        }
    }

    /// The same flags again, for the daemon this bridge starts.
    fn to_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(name) = &self.name {
            flags.extend(["--name".to_owned(), name.clone()]);
        }
        if self.persistent {
            flags.push("--persistent".to_owned());
        } else {
            flags.extend([
                "--idle-timeout".to_owned(),
                humantime::format_duration(self.idle_timeout).to_string(),
            ]);
        }
        for entry in &self.env {
            flags.extend(["--env".to_owned(), entry.clone()]);
        }
        flags.push("--".to_owned());
        flags.extend(self.command.iter().cloned());
        flags
    }
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    output: crate::output::OutputArg,
}

#[derive(Debug, Args)]
pub(crate) struct StopArgs {
    /// The daemon's name or key (as `nsh mcp daemon list` shows them).
    name: String,
}

#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// The daemon's pid: if it is already gone, the server is not started.
    #[arg(long)]
    parent: u32,
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

/// `nsh mcp run-once`: become the stdio bridge to the shared server.
pub(crate) fn run_once(args: &SharedServerArgs) -> anyhow::Result<()> {
    let spec = args.spec()?;
    let identity = spec.identity(args.name.as_deref());
    let files = DaemonFiles::new(&runtime_dir()?, &identity.key);
    let nsh = std::env::current_exe().context("finding this nsh binary")?;
    let mut host = std::process::Command::new(nsh);
    host.args(["mcp", "daemon", "host"]).args(args.to_flags());
    nsh_mcp_daemon::bridge::run(&files, &mut host)
        .with_context(|| format!("MCP server `{}`", identity.name))
}

/// `nsh mcp run-once …` parsed on its own, before anything else `nsh` sets up; `None` for
/// every other command line.
pub(crate) fn run_once_fast_path() -> Option<anyhow::Result<()>> {
    use clap::{Args as _, FromArgMatches as _};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_none_or(|a| a != "mcp") || args.get(2).is_none_or(|a| a != "run-once") {
        return None;
    }
    let command = SharedServerArgs::augment_args(
        clap::Command::new("run-once").bin_name("nsh mcp run-once"),
    )
    .about(
        "Run a stdio MCP server shared by every client that runs the same: what an MCP client's config runs instead of the server itself",
    );
    let matches = command.get_matches_from(&args[2..]);
    Some(
        SharedServerArgs::from_arg_matches(&matches)
            .map_err(anyhow::Error::from)
            .and_then(|args| run_once(&args)),
    )
}

/// `nsh mcp daemon host` (hidden): the daemon process a bridge starts.
pub(crate) fn host(args: &SharedServerArgs) -> anyhow::Result<()> {
    // Its own session: the client's terminal closing, or its process group being killed,
    // does not reach the daemon.
    let _ = nsh_mcp_daemon::upstream::new_session();
    let spec = args.spec()?;
    let identity = spec.identity(args.name.as_deref());
    let options = nsh_mcp_daemon::daemon::HostOptions {
        identity,
        launch: Launch {
            spec,
            helper: Some(std::env::current_exe().context("finding this nsh binary")?),
        },
        lifetime: args.lifetime(),
        dir: runtime_dir()?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(nsh_mcp_daemon::daemon::host(
        options,
        crate::signal::shutdown_signal(),
    ))?;
    Ok(())
}

/// `nsh mcp daemon exec` (hidden): arm the parent-death signal, become the server.
pub(crate) fn exec(args: &ExecArgs) -> anyhow::Result<()> {
    let (command, rest) = args.command.split_first().context("no COMMAND")?;
    let err = nsh_mcp_daemon::upstream::exec_with_parent_death(args.parent, command, rest);
    Err(anyhow::Error::new(err).context(format!("starting `{command}`")))
}

/// `nsh mcp daemon list`.
pub(crate) fn list(args: &ListArgs) -> anyhow::Result<()> {
    let daemons = nsh_mcp_daemon::control::list(&runtime_dir()?);
    let mut out = std::io::stdout().lock();
    if args.output.write_data(&mut out, &daemons)? {
        return Ok(());
    }
    if daemons.is_empty() {
        writeln!(out, "no MCP daemons running")?;
        return Ok(());
    }
    let mut rows = crate::table::table(&[
        "NAME",
        "KEY",
        "PID",
        "SERVER PID",
        "CLIENTS",
        "UPTIME",
        "MEMORY",
        "LIFETIME",
        "COMMAND",
    ]);
    for d in &daemons {
        rows.add_row(vec![
            d.name.clone(),
            d.key.clone(),
            d.pid.to_string(),
            d.server_pid
                .map_or_else(|| "restarting".to_owned(), |p| p.to_string()),
            d.clients.to_string(),
            humantime::format_duration(Duration::from_secs(d.uptime_secs)).to_string(),
            format!("{:.1} MiB", d.memory_bytes as f64 / (1024.0 * 1024.0)),
            match d.idle_timeout_secs {
                Some(secs) => format!(
                    "idle {}",
                    humantime::format_duration(Duration::from_secs(secs))
                ),
                None => "persistent".to_owned(),
            },
            d.command.join(" "),
        ]);
    }
    writeln!(out, "{rows}")?;
    Ok(())
}

/// `nsh mcp daemon stop NAME`.
pub(crate) fn stop(args: &StopArgs) -> anyhow::Result<()> {
    let stopped = nsh_mcp_daemon::control::stop(&runtime_dir()?, &args.name)?;
    writeln!(
        std::io::stdout().lock(),
        "stopped {} (pid {}) and its server",
        stopped.name,
        stopped.pid
    )?;
    Ok(())
}
