//! `nsh up`: the whole local stack on one machine, on embedded defaults.
//!
//! One process tree: the mesh server runs in this process, the MCP gateway is a child
//! (`nsh gateway run` on a config written here, with the built-in presets that need no
//! credentials as upstreams), and the gateway runs each stdio upstream once through the MCP
//! daemon, whose sockets live in this stack's own runtime folder so stopping the stack stops
//! exactly its daemons. A team `local` with a key, a token and an `nsh agent launch` config per
//! agent are kept in the data folder across runs (`--reset` starts afresh).

pub(crate) mod configs;
mod detach;
mod plan;
mod state;
mod status;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use nsh_mesh_server::{Server, ServerConfig};

pub(crate) use detach::{DownArgs, down};
use plan::{Instructions, Plan};
use state::Layout;

/// The team `nsh up` creates for agents on this machine.
pub(crate) const LOCAL_TEAM: &str = "local";

/// Tells a detached `nsh up` (started by `nsh up --detach`) that `nsh down` stops it.
const DETACHED_ENV: &str = "NSH_UP_DETACHED";

/// The last line of the instructions: what a reader (or `--detach`) waits for.
pub(crate) const RUNNING_LINE: &str = "nsh up is running";

/// Arguments of `nsh up`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct UpArgs {
    /// Address every component binds to.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub(crate) bind: IpAddr,
    /// Port of the mesh server (0 picks a free one).
    #[arg(long, default_value_t = 3456)]
    pub(crate) mesh_port: u16,
    /// Port of the MCP gateway (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub(crate) gateway_port: u16,
    /// The local agents to make tokens and launch configs for, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "alice,bob",
        value_name = "NAMES"
    )]
    pub(crate) agents: Vec<String>,
    /// Redis for the mesh (several replicas, and messages kept in Redis Streams), e.g.
    /// redis://127.0.0.1:6379/0 [default: in memory].
    #[arg(long, value_name = "URL")]
    pub(crate) redis: Option<String>,
    /// Where local state (team key, tokens, configs, logs) lives [default: $XDG_DATA_HOME/nsh
    /// or ~/.local/share/nsh].
    #[arg(long, value_name = "DIR", env = "NSH_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Remove the team key, tokens and configs of earlier runs first (agents need the new
    /// tokens: restart them).
    #[arg(long)]
    pub(crate) reset: bool,
    /// Print the plan and exit without starting anything.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Run in the background; `nsh down` stops it.
    #[arg(long, conflicts_with = "dry_run")]
    pub(crate) detach: bool,
}

impl UpArgs {
    fn check_agents(&self) -> anyhow::Result<Vec<String>> {
        let mut agents: Vec<String> = Vec::new();
        for agent in &self.agents {
            let agent = agent.trim();
            if let Some(why) = nsh_contract::names::check(agent) {
                anyhow::bail!("--agents: `{agent}` {why}; e.g. --agents alice,bob");
            }
            if !agents.iter().any(|a| a == agent) {
                agents.push(agent.to_owned());
            }
        }
        anyhow::ensure!(
            !agents.is_empty(),
            "--agents: name at least one agent, e.g. --agents alice,bob"
        );
        Ok(agents)
    }
}

pub(crate) async fn run(args: &UpArgs) -> anyhow::Result<()> {
    let agents = args.check_agents()?;
    let layout = Layout::new(crate::paths::data_dir(args.data_dir.as_deref())?);
    if args.detach {
        return detach::start(&layout, args).await;
    }
    let project_dir = std::env::current_dir().context("cannot read the current folder")?;
    let mut plan = Plan::new(args, &project_dir, &agents);
    if args.dry_run {
        let mut out = std::io::stdout().lock();
        write!(out, "{plan}")?;
        writeln!(out, "--dry-run: nothing was started.")?;
        return Ok(());
    }
    if let Some(pid) = state::running_pid(&layout) {
        anyhow::bail!(
            "nsh up is already running for {} (pid {pid}); stop it with `nsh down{}` or pick another --data-dir",
            layout.root.display(),
            down_flag(args)
        );
    }
    if args.reset {
        for path in layout.reset()? {
            tracing::info!(path = %path.display(), "--reset: removed");
        }
    }
    let key = layout.ensure_team_key()?;
    let mut renewed = Vec::new();
    for agent in &agents {
        let (_, minted) = layout.ensure_token(agent, &key, configs::GATEWAY_AUDIENCE)?;
        if minted {
            renewed.push(agent.clone());
        }
    }
    // The daemons refuse a socket folder others can enter.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(layout.mcp_runtime())
        .with_context(|| {
            format!(
                "--data-dir: cannot create {}",
                layout.mcp_runtime().display()
            )
        })?;

    let mesh = Server::bind(mesh_config(args, &layout))
        .await
        .map_err(|err| crate::mesh::bind_hint(err, "--mesh-port"))?;
    let mesh_addr = mesh.local_addr();
    // Port 0 picked real ports: the plan shows those.
    plan.mesh = mesh_addr;
    let mut gateway = if plan.included().is_empty() {
        // No preset can run here: a gateway with nothing behind it would only confuse.
        plan.gateway = None;
        None
    } else {
        let gateway_addr = free_gateway_addr(args)?;
        plan.gateway = Some(gateway_addr);
        std::fs::write(
            layout.gateway_config(),
            configs::gateway_config(gateway_addr, &plan.upstreams),
        )
        .with_context(|| format!("cannot write {}", layout.gateway_config().display()))?;
        let mut child = spawn_gateway(&layout)?;
        wait_listening(gateway_addr, &mut child, &layout).await?;
        Some(child)
    };

    let nsh = nsh_command();
    let mesh_url = format!("ws://{mesh_addr}");
    let gateway_url = plan.gateway.map(|addr| format!("http://{addr}/mcp"));
    let gateways: Vec<(String, String)> = gateway_url
        .iter()
        .map(|url| ("nsh-gateway".to_owned(), url.clone()))
        .collect();
    std::fs::create_dir_all(layout.agents())
        .with_context(|| format!("cannot create {}", layout.agents().display()))?;
    for agent in &agents {
        let settings = configs::agent_settings(&nsh, &mesh_url, &gateways, &layout.token(agent));
        crate::keys::write_secret(
            &layout.agent_config(agent),
            &configs::agent_file(
                &format!(
                    "`nsh up` for agent {agent} of team {LOCAL_TEAM} (rewritten at each start)"
                ),
                &settings,
            )?,
            true,
        )?;
    }
    write_pid_file(&layout)?;

    let instructions = Instructions {
        layout: &layout,
        nsh: &nsh,
        mesh_url: &mesh_url,
        gateway_url: gateway_url.as_deref(),
        agents: &agents,
        renewed: &renewed,
        detached: std::env::var_os(DETACHED_ENV).is_some(),
        down: down_flag(args),
    };
    // One write, ending with the running line: a reader that stops there (`| head`) is not
    // answered with a broken pipe that would stop the stack.
    {
        let mut out = std::io::stdout().lock();
        out.write_all(format!("{plan}{instructions}").as_bytes())?;
        out.flush()?;
    }

    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::signal::shutdown_signal().await;
        let _ = stop.send(true);
    });
    let mesh_stopped = wait_stop(stopped.clone());
    let mesh_task = tokio::spawn(mesh.run(mesh_stopped));
    let probe = status::Probe::new(mesh_addr, plan.gateway, &layout.mcp_runtime());
    let live = std::io::IsTerminal::is_terminal(&std::io::stdout());
    supervise(gateway.as_mut(), &probe, live, stopped).await;

    let stopped_daemons = match gateway.as_mut() {
        Some(child) => stop_stack(child, &layout).await,
        None => 0,
    };
    let mesh_result = mesh_task.await;
    let _ = std::fs::remove_file(layout.pid_file());
    tracing::info!(daemons = stopped_daemons, "nsh up stopped");
    writeln!(
        std::io::stdout().lock(),
        "nsh up stopped: mesh{} and {stopped_daemons} MCP daemon(s).",
        if plan.gateway.is_some() {
            ", gateway"
        } else {
            ""
        }
    )?;
    mesh_result.context("the mesh server's task")??;
    Ok(())
}

async fn wait_stop(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// `--data-dir DIR` when it was given, for the `nsh down` line.
fn down_flag(args: &UpArgs) -> String {
    args.data_dir
        .as_ref()
        .map(|dir| {
            format!(
                " --data-dir {}",
                nsh_contract::quote::word(&dir.display().to_string())
            )
        })
        .unwrap_or_default()
}

fn mesh_config(args: &UpArgs, layout: &Layout) -> ServerConfig {
    let mut config = ServerConfig::new(
        SocketAddr::new(args.bind, args.mesh_port),
        layout.team_keys(),
    );
    if let Some(url) = &args.redis {
        config.cluster_url = Some(url.clone());
        config.store = Some(nsh_mesh_server::store::StoreConfig {
            url: url.clone(),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_len: 10_000,
        });
    }
    config
}

/// The gateway's address, its port picked now when `--gateway-port 0`; a busy port names the
/// flag.
fn free_gateway_addr(args: &UpArgs) -> anyhow::Result<SocketAddr> {
    let wanted = SocketAddr::new(args.bind, args.gateway_port);
    let probe = std::net::TcpListener::bind(wanted).with_context(|| {
        format!("the gateway cannot listen on {wanted}; pick another with --gateway-port")
    })?;
    Ok(probe.local_addr()?)
}

fn spawn_gateway(layout: &Layout) -> anyhow::Result<tokio::process::Child> {
    let exe = std::env::current_exe().context("finding this nsh binary")?;
    let log_path = layout.log("gateway");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut command = tokio::process::Command::new(&exe);
    // Through `nsh mcp daemon exec`, which arms a parent-death signal: the gateway goes with
    // this process even when it is killed outright.
    command
        .args(["mcp", "daemon", "exec", "--parent"])
        .arg(std::process::id().to_string())
        .arg("--")
        .arg(&exe)
        .args(["gateway", "run", "--config"])
        .arg(layout.gateway_config())
        .env(
            nsh_mcp_daemon::identity::RUNTIME_DIR_ENV,
            layout.mcp_runtime(),
        )
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Gone with this process however it ends.
        .kill_on_drop(true);
    command
        .spawn()
        .context("cannot start the gateway (nsh gateway run)")
}

/// Waits until the gateway accepts connections; a gateway that exits first is an error with
/// the end of its log.
async fn wait_listening(
    addr: SocketAddr,
    gateway: &mut tokio::process::Child,
    layout: &Layout,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = gateway.try_wait()? {
            anyhow::bail!(
                "the gateway exited ({status}) before listening on {addr}:\n{}",
                log_tail(&layout.log("gateway"))
            );
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the gateway did not listen on {addr} within 30 s; its log: {}",
            layout.log("gateway").display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn write_pid_file(layout: &Layout) -> anyhow::Result<()> {
    let path = layout.pid_file();
    std::fs::write(&path, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Until the stop signal: redraws the status line on a terminal each second, and says so once
/// when the gateway exits by itself (the mesh keeps running).
async fn supervise(
    mut gateway: Option<&mut tokio::process::Child>,
    probe: &status::Probe,
    live: bool,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut gateway_gone = gateway.is_none();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            exit = async { gateway.as_mut()?.wait().await.ok() }, if !gateway_gone => {
                gateway_gone = true;
                tracing::error!(?exit, "the gateway exited; the mesh keeps running (see run/gateway.log)");
            }
            _ = tick.tick(), if live => {
                let mut line = probe.snapshot().await.to_string();
                // A line wider than the terminal wraps, and `\r` then redraws only its end.
                // (comfy-table asks the terminal for its width, as for the tables.)
                if let Some(width) = comfy_table::Table::new().width() {
                    let keep = usize::from(width).saturating_sub(1);
                    if let Some((cut, _)) = line.char_indices().nth(keep) {
                        line.truncate(cut);
                    }
                }
                let mut out = std::io::stdout().lock();
                // Back to the line's start and clear it: one status line, redrawn in place.
                let _ = write!(out, "\r\x1b[2K{line}");
                let _ = out.flush();
            }
        }
    }
    if live {
        let _ = writeln!(std::io::stdout().lock());
    }
}

/// Stops the gateway (SIGTERM, then kill after 10 s) and every MCP daemon of this stack;
/// returns how many daemons were stopped.
async fn stop_stack(gateway: &mut tokio::process::Child, layout: &Layout) -> usize {
    if let Some(pid) = gateway
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(Duration::from_secs(10), gateway.wait())
        .await
        .is_err()
    {
        tracing::warn!("the gateway did not stop within 10 s; killing it");
        let _ = gateway.kill().await;
    }
    let dir = layout.mcp_runtime();
    tokio::task::spawn_blocking(move || {
        let mut stopped = 0;
        for daemon in nsh_mcp_daemon::control::list(&dir) {
            match nsh_mcp_daemon::control::stop(&dir, &daemon.key) {
                Ok(_) => stopped += 1,
                Err(err) => {
                    tracing::warn!(daemon = %daemon.name, %err, "cannot stop an MCP daemon");
                }
            }
        }
        stopped
    })
    .await
    .unwrap_or(0)
}

/// `nsh` when the `nsh` on PATH is this binary, else this binary's path: the printed commands
/// must run as printed (under `cargo run` there is no `nsh` on PATH).
pub(crate) fn nsh_command() -> String {
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
