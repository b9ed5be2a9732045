//! One daemon process: the lock that makes it the only one, its socket, its state file.

use std::fs::File;
use std::future::Future;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;

use crate::hub::{self, Lifetime};
use crate::identity::{DaemonFiles, Identity};
use crate::upstream::Launch;

/// What a daemon is asked to be.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub identity: Identity,
    pub launch: Launch,
    pub lifetime: Lifetime,
    /// The runtime folder (checked by [`crate::identity::runtime_dir`]).
    pub dir: PathBuf,
}

/// What `<key>.json` records, for `nsh mcp daemon list` to find daemons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateFile {
    pub name: String,
    pub key: String,
    pub pid: u32,
    pub started_unix: u64,
}

/// Why a daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("a daemon for {name} already runs (its lock {lock} is held)")]
    AlreadyRunning { name: String, lock: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> HostError + '_ {
    move |source| HostError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Runs a daemon until it is idle for its timeout, told to stop, or `shutdown` fires.
pub async fn host(
    options: HostOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HostError> {
    let files = DaemonFiles::new(&options.dir, &options.identity.key);
    // Held for as long as this daemon takes clients: a second daemon for the key cannot start.
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&files.lock)
        .map_err(io(&files.lock))?;
    if lock.try_lock().is_err() {
        return Err(HostError::AlreadyRunning {
            name: options.identity.name,
            lock: files.lock,
        });
    }
    // A socket file left by a daemon that was killed; the lock says nobody serves it.
    let _ = std::fs::remove_file(&files.socket);
    let listener = UnixListener::bind(&files.socket).map_err(io(&files.socket))?;
    std::fs::set_permissions(&files.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(io(&files.socket))?;
    write_state(&files, &options.identity)?;
    tracing::info!(
        name = %options.identity.name,
        socket = %files.socket.display(),
        lifetime = ?options.lifetime,
        "MCP daemon serving"
    );

    let running = hub::start(options.identity.clone(), options.launch, options.lifetime);
    let accepting = tokio::spawn(crate::socket::serve(
        listener,
        running.hub.clone(),
        options.identity.name.clone(),
    ));
    tokio::select! {
        _ = running.stopping => {}
        () = shutdown => running.hub.stop(),
    }
    // From here a new bridge starts a new daemon rather than reaching this one.
    accepting.abort();
    let _ = std::fs::remove_file(&files.socket);
    let _ = std::fs::remove_file(&files.state);
    drop(lock);
    let _ = running.done.await;
    tracing::info!("MCP daemon stopped");
    Ok(())
}

fn write_state(files: &DaemonFiles, identity: &Identity) -> Result<(), HostError> {
    let state = StateFile {
        name: identity.name.clone(),
        key: identity.key.clone(),
        pid: std::process::id(),
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let tmp = files.state.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(&state).unwrap_or_default();
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &files.state).map_err(io(&files.state))
}
