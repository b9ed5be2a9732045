//! `nsh mcp daemon list|stop`: find the daemons in the runtime folder and ask each.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::bridge::ask;
use crate::daemon::StateFile;
use crate::identity::DaemonFiles;
use crate::wire::{Hello, Status};

/// Every daemon that answers. Files of daemons that died without cleaning up are removed.
pub fn list(dir: &Path) -> Vec<Status> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Some(state) = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<StateFile>(&bytes).ok())
        else {
            continue;
        };
        let files = DaemonFiles::new(dir, &state.key);
        match ask(&files, &Hello::Status) {
            Some(status) => found.push(status),
            None => remove_if_abandoned(&files),
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name).then(a.key.cmp(&b.key)));
    found
}

/// A daemon's files whose lock nobody holds belong to a daemon that was killed.
fn remove_if_abandoned(files: &DaemonFiles) {
    let Ok(lock) = std::fs::File::options().write(true).open(&files.lock) else {
        return;
    };
    if lock.try_lock().is_ok() {
        let _ = std::fs::remove_file(&files.state);
        let _ = std::fs::remove_file(&files.socket);
    }
}

/// Why `stop` stopped nothing.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("no daemon is called {wanted}; running: {}", if running.is_empty() { "none".to_owned() } else { running.join(", ") })]
    NotFound {
        wanted: String,
        running: Vec<String>,
    },
    #[error("{count} daemons are called {wanted}; stop one by its key: {}", keys.join(", "))]
    Ambiguous {
        wanted: String,
        count: usize,
        keys: Vec<String>,
    },
    #[error(
        "daemon {name} (pid {pid}) was asked to stop but still runs after {0:?}",
        STOP_WAIT
    )]
    StillRunning { name: String, pid: u32 },
}

/// How long `stop` waits for the daemon (and its server) to be gone.
pub const STOP_WAIT: Duration = Duration::from_secs(10);

/// Stops the daemon with this name or key and waits until it and its server are gone.
pub fn stop(dir: &Path, wanted: &str) -> Result<Status, StopError> {
    let running = list(dir);
    let matching: Vec<&Status> = running
        .iter()
        .filter(|s| s.name == wanted || s.key == wanted)
        .collect();
    let status = match matching.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(StopError::NotFound {
                wanted: wanted.to_owned(),
                running: running.iter().map(|s| s.name.clone()).collect(),
            });
        }
        many => {
            return Err(StopError::Ambiguous {
                wanted: wanted.to_owned(),
                count: many.len(),
                keys: many.iter().map(|s| s.key.clone()).collect(),
            });
        }
    };
    let files = DaemonFiles::new(dir, &status.key);
    let _ = ask(&files, &Hello::Stop);
    let deadline = Instant::now() + STOP_WAIT;
    let alive =
        |pid: Option<u32>| pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
    while Instant::now() < deadline {
        if !alive(Some(status.pid)) && !alive(status.server_pid) {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(StopError::StillRunning {
        name: status.name,
        pid: status.pid,
    })
}
