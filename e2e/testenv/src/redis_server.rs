//! Debian's `redis-server` on a free loopback port, persistence off, for tests. It can be
//! stopped and started again on the same port, so fault tests see a real outage and recovery.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::ManagedProcess;
use crate::{Error, Result, binaries, free_port};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A private `redis-server`; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    process: Option<ManagedProcess>,
    /// Append-only file, fsynced on every write: what was acked survives a crash.
    durable: bool,
}

impl RedisServer {
    /// Starts a new in-memory server (a restart loses its data) and waits for `PING`.
    pub fn start() -> Result<Self> {
        Self::start_with(false)
    }

    /// Starts a server that keeps its data across [`stop`](Self::stop) and
    /// [`start_again`](Self::start_again) (AOF, `appendfsync always`), as a production
    /// message store is configured.
    pub fn start_durable() -> Result<Self> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<Self> {
        let binary = binaries::redis_server()?;
        let mut dir = tempfile::Builder::new()
            .prefix("nsh-redis-")
            .tempdir()
            .map_err(Error::io("create redis work folder"))?;
        // A port taken between free_port() and bind shows up as an early exit: pick another.
        let mut last = None;
        for _ in 0..3 {
            let mut server = Self {
                binary: binary.clone(),
                port: free_port()?,
                dir,
                process: None,
                durable,
            };
            match server.start_again() {
                Ok(()) => return Ok(server),
                Err(err) => {
                    dir = server.take_dir();
                    last = Some(err);
                }
            }
        }
        Err(last.expect("three attempts were made"))
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The running server's process id (for what it uses, from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ManagedProcess::pid)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Kills the server (SIGKILL, like a crash); clients see the connection drop.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the server again on the same port (a no-op if it runs) and waits for `PING`.
    pub fn start_again(&mut self) -> Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        let mut command = Command::new(&self.binary);
        command
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--protected-mode", "yes"])
            .args(if self.durable {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .args(["--daemonize", "no", "--loglevel", "warning", "--dir"])
            .arg(self.dir.path());
        let log = self.dir.path().join("redis.log");
        let mut process =
            ManagedProcess::spawn(format!("redis-server :{}", self.port), command, &log)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            process.check_running()?;
            match ping(self.port) {
                Ok(()) => break,
                Err(err) if Instant::now() >= deadline => {
                    return Err(Error::NotReady {
                        name: process.name().to_owned(),
                        after: READY_TIMEOUT,
                        last_error: err.to_string(),
                        log: log.clone(),
                        log_tail: process.log_tail(20),
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        tracing::info!(port = self.port, "redis-server ready");
        self.process = Some(process);
        Ok(())
    }

    fn take_dir(self) -> tempfile::TempDir {
        let Self { dir, process, .. } = self;
        drop(process);
        dir
    }
}

/// One `PING` over a raw connection: the harness needs no Redis client library of its own.
fn ping(port: u16) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply)?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(&reply)
        )))
    }
}
