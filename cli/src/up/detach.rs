//! `nsh up --detach` (the same stack in the background) and `nsh down` (stops it).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use super::state::{self, Layout};
use super::{DETACHED_ENV, RUNNING_LINE, UpArgs};

/// Arguments of `nsh down`.
#[derive(Debug, clap::Args)]
pub(crate) struct DownArgs {
    /// The data folder of the `nsh up` to stop (as given to it) [default: $XDG_DATA_HOME/nsh
    /// or ~/.local/share/nsh].
    #[arg(long, value_name = "DIR", env = "NSH_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

/// Starts this same command without `--detach` in a session of its own (Ctrl-C in this
/// terminal does not reach it), its output in `run/up.log`; returns once it runs, having
/// printed what it printed.
pub(crate) async fn start(layout: &Layout, args: &UpArgs) -> anyhow::Result<()> {
    if let Some(pid) = state::running_pid(layout) {
        anyhow::bail!(
            "nsh up is already running for {} (pid {pid}); stop it with `nsh down{}`",
            layout.root.display(),
            super::down_flag(args)
        );
    }
    std::fs::create_dir_all(layout.run())
        .with_context(|| format!("--data-dir: cannot create {}", layout.run().display()))?;
    // What it prints apart from what it logs: the instructions are shown from the first.
    let out_path = layout.run().join("up.out");
    let log_path = layout.log("up");
    let create = |path: &std::path::Path| {
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))
    };
    let (out, log) = (create(&out_path)?, create(&log_path)?);
    let exe = std::env::current_exe().context("finding this nsh binary")?;
    let forwarded: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .filter(|arg| arg != "--detach")
        .collect();
    let mut command = std::process::Command::new(exe);
    command
        .args(&forwarded)
        .env(DETACHED_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .context("cannot start nsh up in the background")?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        if text.contains(RUNNING_LINE) {
            let mut stdout = std::io::stdout().lock();
            write!(stdout, "{text}")?;
            writeln!(
                stdout,
                "(pid {}, log in {})",
                child.id(),
                log_path.display()
            )?;
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            anyhow::bail!("nsh up stopped ({status}) before it ran:\n{text}{log}");
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!(
                "nsh up did not start within 60 s; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `nsh down`: SIGTERM to the `nsh up` of this data folder, and wait until it has stopped its
/// gateway and daemons and exited.
pub(crate) async fn down(args: &DownArgs) -> anyhow::Result<()> {
    let layout = Layout::new(crate::paths::data_dir(args.data_dir.as_deref())?);
    let Some(pid) = state::running_pid(&layout) else {
        writeln!(
            std::io::stdout().lock(),
            "no nsh up is running for {}",
            layout.root.display()
        )?;
        return Ok(());
    };
    let target = rustix::process::Pid::from_raw(pid).context("a bad pid in the pid file")?;
    rustix::process::kill_process(target, rustix::process::Signal::TERM)
        .with_context(|| format!("cannot signal nsh up (pid {pid})"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while state::alive(pid) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "nsh up (pid {pid}) did not stop within 30 s; see {}",
            layout.log("up").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writeln!(std::io::stdout().lock(), "stopped nsh up (pid {pid})")?;
    Ok(())
}
