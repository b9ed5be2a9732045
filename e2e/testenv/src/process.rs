//! Child processes that never outlive the test process.
//!
//! Two mechanisms, because either alone leaks:
//! - [`ManagedProcess`] kills its child on drop, which covers a test that panics (unwinding
//!   drops it) and every part a test owns;
//! - every child is started with `PR_SET_PDEATHSIG = SIGKILL`, which covers what is never
//!   dropped: statics such as the shared control plane, and a test binary killed outright.
//!
//! The kernel sends the parent-death signal when the *thread* that forked the child exits, not
//! the process. Test threads come and go, so all children are forked by one spawner thread that
//! lives as long as the process.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;

use crate::{Error, Result};

/// A running child whose stdout and stderr go to a log file; killed and reaped on drop.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ManagedProcess {
    /// Starts `command` with its output appended to `log`.
    pub fn spawn(name: impl Into<String>, command: Command, log: &Path) -> Result<Self> {
        Self::spawn_with_death_signal(name, command, log, DeathSignal::Kill)
    }

    fn spawn_with_death_signal(
        name: impl Into<String>,
        mut command: Command,
        log: &Path,
        signal: DeathSignal,
    ) -> Result<Self> {
        let name = name.into();
        let file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(Error::io(format!("open log {}", log.display())))?;
        let stderr = file.try_clone().map_err(Error::io("clone log handle"))?;
        command.stdin(Stdio::null()).stdout(file).stderr(stderr);
        let child = spawn_with_signal(command, signal).map_err(|source| Error::Spawn {
            name: name.clone(),
            source,
        })?;
        tracing::debug!(name, pid = child.id(), log = %log.display(), "started");
        Ok(Self {
            name,
            child,
            log: log.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// `Err(Exited)` if the child has exited (with its log tail), `Ok` while it runs.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(self.exited(status)),
            Ok(None) => Ok(()),
            Err(source) => Err(Error::io(format!("wait for {}", self.name))(source)),
        }
    }

    pub(crate) fn exited(&self, status: ExitStatus) -> Error {
        Error::Exited {
            name: self.name.clone(),
            status,
            log: self.log.clone(),
            log_tail: self.log_tail(30),
        }
    }

    /// Sends SIGKILL and reaps the child.
    pub fn kill(&mut self) {
        // An error here means the child is already gone, which is what we want.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Last `lines` lines of a text file, or a note that it could not be read.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 16 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(log {} unreadable: {err})", path.display()),
    }
}

/// Starts a janitor: a shell that runs `script` when the test process dies (it gets SIGTERM as
/// its parent-death signal and traps it) and otherwise sleeps. Dropping it kills it without
/// running the script: whoever drops it cleans up themselves.
pub(crate) fn spawn_janitor(script: &Path, log: &Path) -> Result<ManagedProcess> {
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!(
        "trap '{} >/dev/null 2>&1; exit 0' TERM; while :; do sleep 3600 & wait $!; done",
        script.display()
    ));
    ManagedProcess::spawn_with_death_signal("janitor", command, log, DeathSignal::Terminate)
}

/// What a child gets when the test process dies.
#[derive(Debug, Clone, Copy)]
enum DeathSignal {
    Kill,
    /// For a child that must do something first (the janitor).
    Terminate,
}

type SpawnRequest = (Command, DeathSignal, mpsc::Sender<std::io::Result<Child>>);

/// Forks `command` from the long-lived spawner thread, with the parent-death signal set.
fn spawn_with_signal(command: Command, signal: DeathSignal) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("nsh-testenv-spawner".into())
            .spawn(move || {
                for (mut command, signal, reply) in incoming {
                    set_parent_death_signal(&mut command, signal);
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("the OS refused to start the spawner thread");
        requests
    });
    let (reply, result) = mpsc::channel();
    spawner
        .send((command, signal, reply))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    result
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_parent_death_signal(command: &mut Command, signal: DeathSignal) {
    use std::os::unix::process::CommandExt as _;
    let signal = match signal {
        DeathSignal::Kill => libc::SIGKILL,
        DeathSignal::Terminate => libc::SIGTERM,
    };
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2) and
    // getppid(2), which are async-signal-safe and touch no memory shared with the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would send the signal.
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_command: &mut Command, _signal: DeathSignal) {}

/// Runs `command` to the end with `input` on its stdin; its status, stdout and stderr (what a
/// hook or filter gets from the program that runs it).
pub fn output_with_stdin(
    mut command: Command,
    input: &[u8],
) -> std::io::Result<std::process::Output> {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Written from another thread: a child that answers before reading all of it cannot
    // deadlock us on a full pipe.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output()?;
    // A child that exits without reading everything closes the pipe: not our failure.
    let _ = writer.join();
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_kills_and_reaps_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("sleep");
        command.arg("600");
        let process =
            ManagedProcess::spawn("sleep", command, &dir.path().join("sleep.log")).unwrap();
        let pid = process.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(process);
        // Reaped, so the pid is gone, not a zombie.
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} survived drop"
        );
    }

    #[test]
    fn exited_child_reports_its_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "echo first; echo boom >&2; exit 3"]);
        let mut process =
            ManagedProcess::spawn("failing", command, &dir.path().join("f.log")).unwrap();
        let err = loop {
            match process.check_running() {
                Ok(()) => std::thread::sleep(std::time::Duration::from_millis(10)),
                Err(err) => break err.to_string(),
            }
        };
        assert!(err.contains("failing exited early"), "{err}");
        assert!(err.contains("boom"), "{err}");
    }

    /// Re-runs this test binary as a parent that starts `sleep`, leaks it (as a static would)
    /// and exits; the kernel must then kill the orphan.
    #[test]
    fn children_die_with_the_test_process_even_when_leaked() {
        const ROLE: &str = "NSH_TESTENV_LEAKING_PARENT";
        const NAME: &str = "process::tests::children_die_with_the_test_process_even_when_leaked";
        if std::env::var_os(ROLE).is_some() {
            let dir = std::env::temp_dir();
            let mut command = Command::new("sleep");
            command.arg("600");
            let process =
                ManagedProcess::spawn("orphan", command, &dir.join("nsh-orphan.log")).unwrap();
            println!("orphan-pid={}", process.pid());
            std::mem::forget(process);
            std::process::exit(0);
        }
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(ROLE, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let pid: u32 = stdout
            .lines()
            .find_map(|l: &str| l.split("orphan-pid=").nth(1))
            .unwrap_or_else(|| panic!("parent printed no pid: {stdout}"))
            .parse()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while is_alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "orphan {pid} outlived its parent"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Running, as opposed to gone or a zombie waiting for a reaper that may never come.
    fn is_alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
            !status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
    }

    #[test]
    fn tail_returns_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        std::fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&path, 2), "c\nd");
        assert!(tail(&dir.path().join("missing"), 2).contains("unreadable"));
    }
}
