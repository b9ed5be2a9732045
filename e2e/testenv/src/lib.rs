//! Real parts for tests, started on free loopback ports and torn down with the test.
//!
//! - [`ControlPlane`]: etcd, kube-apiserver and kube-controller-manager built from their Go
//!   modules by `scripts/testbin.sh` (envtest-style: no kubelet, so pods stay `Pending`).
//!   [`ControlPlane::shared`] hands every test in a test binary the same instance; tests keep
//!   apart through [`ControlPlane::namespace`].
//! - [`RedisServer`]: Debian's `redis-server`, persistence off, stoppable for fault tests.
//! - [`mesh_agent::Agent`]: a mesh client that collects what it receives.
//!
//! Every child process is started so that it dies with the test process, even when a test
//! panics or the shared instance is never dropped (see [`process`]).

mod binaries;
mod control_plane;
mod error;
pub mod kubelet;
pub mod mesh_agent;
mod netns;
pub mod node;
pub mod peers;
mod pki;
pub mod process;
mod redis_server;
pub mod versions;

pub use binaries::{Binaries, kubeconform};
pub use control_plane::ControlPlane;
pub use error::Error;
pub use redis_server::RedisServer;

/// Result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The checkout the tests run in, found at run time.
///
/// Not `env!("CARGO_MANIFEST_DIR")`: the target dir is shared between checkouts (see
/// `scripts/env.sh`), and a test binary built in one would read another's files. Cargo sets
/// `CARGO_MANIFEST_DIR` for each test process to the package under test; the workspace root is
/// the nearest folder above it with a `Cargo.lock`.
pub fn repo_root() -> std::path::PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .expect("CARGO_MANIFEST_DIR or a current directory");
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(&start)
        .to_path_buf()
}

/// A free TCP port on 127.0.0.1: the OS picks one, we release it and hand it to a child.
///
/// Another process may take it in between, so only for children that fail loudly on a taken
/// port and are retried (etcd, the apiserver, Redis). Our own servers listen on port 0 and
/// say where in their log: see [`logged_addr`].
pub fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(Error::io("bind 127.0.0.1:0"))?;
    Ok(listener
        .local_addr()
        .map_err(Error::io("read local address"))?
        .port())
}

/// Polls `probe` every 100 ms until it returns `Some`, or fails after `timeout` naming `what`
/// and the last observation, so a test failure says what never happened.
/// The address a process says it listens on: the value of `field=` in the first line of its
/// text log at `log` that contains `message` (e.g. `nsh mesh server --listen 127.0.0.1:0`
/// logs `mesh server listening addr=127.0.0.1:41234`). Waits up to `timeout` for the line.
pub async fn logged_addr(
    log: &std::path::Path,
    message: &str,
    field: &str,
    timeout: std::time::Duration,
) -> std::net::SocketAddr {
    let key = format!("{field}=");
    wait_for(
        &format!("`{message}` in {}", log.display()),
        timeout,
        || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let found = text
                .lines()
                .find(|line| line.contains(message))
                .and_then(|line| line.split_whitespace().find_map(|w| w.strip_prefix(&key)))
                .map(|value| {
                    let value = value.trim_start_matches("http://").trim_end_matches("/mcp");
                    value.parse().map_err(|e| format!("{field}={value}: {e}"))
                })
                .transpose();
            async move { found }
        },
    )
    .await
}

pub async fn wait_for<T, F, Fut>(what: &str, timeout: std::time::Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<Option<T>, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(Some(value)) => return value,
            Ok(None) => "not yet".to_owned(),
            Err(err) => err,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last: {last}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
