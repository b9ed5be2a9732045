//! MCP daemon benchmark: ten MCP clients each starting their own stdio server, versus ten
//! sharing one through `nsh mcp run-once`. The server is the official TypeScript SDK's
//! (`mesh/interop/gateway-upstream.mjs`), the client raw JSON-RPC over pipes, the same on both
//! sides. Measured: total resident memory (RSS, and PSS, which splits pages the ten bridges
//! share), time to the first `tools/list`, and the latency the bridge and daemon add to a call.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)]

#[path = "proc_stat.rs"]
mod proc_stat;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

#[derive(Debug, Parser)]
struct Args {
    /// The (release) nsh binary to measure.
    #[arg(long)]
    nsh: PathBuf,
    /// Clients (and, unshared, servers).
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Sequential calls per latency measurement.
    #[arg(long, default_value_t = 3000)]
    calls: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Server sizes to compare memory at: MiB of ballast each server holds (0: the plain SDK
    /// server; a few hundred: a browser or language server).
    #[arg(long, value_delimiter = ',', default_value = "0,300")]
    ballast_mb: Vec<u64>,
}

/// One stdio MCP client: a child process spoken to in JSON-RPC lines.
struct Client {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Client {
    fn spawn(
        program: &Path,
        args: &[String],
        runtime: &Path,
        ballast_mb: u64,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .env("NSH_MCP_RUNTIME_DIR", runtime)
            .env("BALLAST_MB", ballast_mb.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        Ok(Self {
            child,
            stdin,
            lines,
        })
    }

    async fn request(&mut self, message: &Value) -> anyhow::Result<Value> {
        let mut line = serde_json::to_vec(message)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        loop {
            let line = self
                .lines
                .next_line()
                .await?
                .ok_or_else(|| anyhow::anyhow!("the server closed"))?;
            let answer: Value = serde_json::from_str(&line)?;
            if answer.get("id").is_some() && answer.get("method").is_none() {
                return Ok(answer);
            }
        }
    }

    /// initialize + initialized + tools/list: what a client does before its first call.
    async fn start(&mut self) -> anyhow::Result<()> {
        self.request(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "daemon-bench", "version": "1"}}}),
        )
        .await?;
        let mut line = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec();
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        let tools = self
            .request(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            .await?;
        anyhow::ensure!(tools["result"]["tools"].is_array(), "tools/list: {tools}");
        Ok(())
    }

    async fn close(mut self) {
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// Resident and proportional set sizes of one process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        rollup
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("Rss:"), field("Pss:"))
}

/// Pids whose command line contains `marker`.
fn pids_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

struct Setup {
    node: PathBuf,
    server: PathBuf,
    nsh: PathBuf,
    runtime: tempfile::TempDir,
}

impl Setup {
    fn direct(&self, marker: &str) -> (PathBuf, Vec<String>) {
        (
            self.node.clone(),
            vec![self.server.display().to_string(), marker.to_owned()],
        )
    }

    fn shared(&self, marker: &str) -> (PathBuf, Vec<String>) {
        let mut args: Vec<String> = ["mcp", "run-once", "--idle-timeout", "2s", "--"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.push(self.node.display().to_string());
        args.push(self.server.display().to_string());
        args.push(marker.to_owned());
        (self.nsh.clone(), args)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Startup {
    first_list_p50_ms: f64,
    first_list_max_ms: f64,
    rss: u64,
    pss: u64,
}

/// Starts `clients` clients at once; each does initialize and tools/list.
async fn startup(
    setup: &Setup,
    command: &(PathBuf, Vec<String>),
    clients: usize,
    marker: &str,
    ballast_mb: u64,
) -> anyhow::Result<(Startup, Vec<Client>)> {
    let started = futures_util::future::join_all((0..clients).map(|_| async {
        let t0 = Instant::now();
        let mut client = Client::spawn(&command.0, &command.1, setup.runtime.path(), ballast_mb)?;
        client.start().await?;
        anyhow::Ok((t0.elapsed(), client))
    }))
    .await;
    let mut times = Vec::new();
    let mut live = Vec::new();
    for result in started {
        let (took, client) = result?;
        times.push(took.as_secs_f64() * 1000.0);
        live.push(client);
    }
    times.sort_by(f64::total_cmp);
    // Let start-up garbage settle before reading memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut rss, mut pss) = (0, 0);
    for pid in pids_with(marker) {
        let (r, p) = memory(pid);
        rss += r;
        pss += p;
    }
    Ok((
        Startup {
            first_list_p50_ms: times[times.len() / 2],
            first_list_max_ms: times[times.len() - 1],
            rss,
            pss,
        },
        live,
    ))
}

#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    p50_us: f64,
    p99_us: f64,
}

async fn latency(client: &mut Client, calls: usize) -> anyhow::Result<Latency> {
    let mut histogram = Histogram::<u64>::new(3)?;
    for i in 0..(calls + calls / 10) {
        let t0 = Instant::now();
        let answer = client
            .request(
                &json!({"jsonrpc": "2.0", "id": i + 10, "method": "tools/call",
                              "params": {"name": "echo", "arguments": {"text": "x"}}}),
            )
            .await?;
        anyhow::ensure!(answer.get("result").is_some(), "{answer}");
        if i >= calls / 10 {
            histogram.record(t0.elapsed().as_micros() as u64)?;
        }
    }
    Ok(Latency {
        p50_us: histogram.value_at_quantile(0.5) as f64,
        p99_us: histogram.value_at_quantile(0.99) as f64,
    })
}

#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    one: Startup,
    separate: Startup,
    shared: Startup,
}

#[derive(Debug, Clone, Copy, Default)]
struct Calls {
    direct: Latency,
    through: Latency,
    daemon_cpu_us: f64,
    bridge_cpu_us: f64,
}

async fn wait_gone(marker: &str) {
    // A daemon idles out (2 s) before the next measurement starts its own.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids_with(marker).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn daemon_of(marker: &str) -> anyhow::Result<u32> {
    pids_with(marker)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("daemon\0host"))
        })
        .ok_or_else(|| anyhow::anyhow!("no daemon found"))
}

/// Starts `clients` clients at once, measures, closes them; waits for a shared daemon to go.
async fn measure(
    setup: &Setup,
    command: &(PathBuf, Vec<String>),
    clients: usize,
    marker: &str,
    ballast: u64,
) -> anyhow::Result<Startup> {
    let (measured, clients) = startup(setup, command, clients, marker, ballast).await?;
    for c in clients {
        c.close().await;
    }
    wait_gone(marker).await;
    Ok(measured)
}

/// One server alone, `clients` servers, `clients` clients sharing one: memory and start-up.
async fn memory_run(setup: &Setup, args: &Args, tag: &str, ballast: u64) -> anyhow::Result<Memory> {
    let pid = std::process::id();
    let one = format!("bench-one-{tag}-{pid}");
    let separate = format!("bench-separate-{tag}-{pid}");
    let shared = format!("bench-shared-{tag}-{pid}");
    Ok(Memory {
        one: measure(setup, &setup.direct(&one), 1, &one, ballast).await?,
        separate: measure(
            setup,
            &setup.direct(&separate),
            args.clients,
            &separate,
            ballast,
        )
        .await?,
        shared: measure(
            setup,
            &setup.shared(&shared),
            args.clients,
            &shared,
            ballast,
        )
        .await?,
    })
}

/// One client's sequential calls, to its own server and through the daemon.
async fn calls_run(setup: &Setup, args: &Args, tag: &str) -> anyhow::Result<Calls> {
    let marker = format!("bench-direct-{tag}-{}", std::process::id());
    let (_, mut clients) = startup(setup, &setup.direct(&marker), 1, &marker, 0).await?;
    let direct = latency(&mut clients[0], args.calls).await?;
    for c in clients {
        c.close().await;
    }
    let marker = format!("bench-through-{tag}-{}", std::process::id());
    let (_, mut clients) = startup(setup, &setup.shared(&marker), 1, &marker, 0).await?;
    let daemon = daemon_of(&marker)?;
    let bridge = clients[0].child.id().unwrap_or_default();
    let (daemon_before, bridge_before) = (
        proc_stat::cpu_seconds(daemon),
        proc_stat::cpu_seconds(bridge),
    );
    let through = latency(&mut clients[0], args.calls).await?;
    let total = (args.calls + args.calls / 10) as f64;
    let daemon_cpu_us = (proc_stat::cpu_seconds(daemon) - daemon_before) * 1e6 / total;
    let bridge_cpu_us = (proc_stat::cpu_seconds(bridge) - bridge_before) * 1e6 / total;
    for c in clients {
        c.close().await;
    }
    wait_gone(&marker).await;
    Ok(Calls {
        direct,
        through,
        daemon_cpu_us,
        bridge_cpu_us,
    })
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tempfile::Builder::new().prefix("daemon-bench").tempdir()?;
    std::fs::set_permissions(
        runtime.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    let setup = Setup {
        node: nsh_testenv::peers::node()?,
        server: nsh_testenv::peers::interop_dir().join("gateway-upstream.mjs"),
        nsh: args.nsh.clone(),
        runtime,
    };
    let c = args.clients;
    println!(
        "MCP daemon: {c} clients, each with its own server vs sharing one through `nsh mcp run-once`"
    );
    println!(
        "server: the official TypeScript SDK (gateway-upstream.mjs on node), with BALLAST_MB of memory; {} runs\n",
        args.runs
    );
    println!(
        "| server | run | 1 server RSS | {c} servers RSS | shared RSS | shared / 1 (RSS) | 1 server PSS | shared PSS | shared / 1 (PSS) | first tools/list p50, own / shared | max, own / shared |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &ballast in &args.ballast_mb {
        let mut runs = Vec::new();
        for n in 0..args.runs {
            runs.push(memory_run(&setup, &args, &format!("{ballast}-{n}"), ballast).await?);
        }
        let row = |label: String,
                   one_rss: f64,
                   sep_rss: f64,
                   sh_rss: f64,
                   one_pss: f64,
                   sh_pss: f64,
                   p50: (f64, f64),
                   max: (f64, f64)| {
            println!(
                "| +{ballast} MiB | {label} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2}x | {:.1} MiB | {:.1} MiB | {:.2}x | {:.0} / {:.0} ms | {:.0} / {:.0} ms |",
                mib(one_rss as u64),
                mib(sep_rss as u64),
                mib(sh_rss as u64),
                sh_rss / one_rss,
                mib(one_pss as u64),
                mib(sh_pss as u64),
                sh_pss / one_pss,
                p50.0,
                p50.1,
                max.0,
                max.1,
            );
        };
        for (i, r) in runs.iter().enumerate() {
            row(
                (i + 1).to_string(),
                r.one.rss as f64,
                r.separate.rss as f64,
                r.shared.rss as f64,
                r.one.pss as f64,
                r.shared.pss as f64,
                (r.separate.first_list_p50_ms, r.shared.first_list_p50_ms),
                (r.separate.first_list_max_ms, r.shared.first_list_max_ms),
            );
        }
        let m = |f: fn(&Memory) -> f64| median(runs.iter().map(f));
        row(
            "median".into(),
            m(|r| r.one.rss as f64),
            m(|r| r.separate.rss as f64),
            m(|r| r.shared.rss as f64),
            m(|r| r.one.pss as f64),
            m(|r| r.shared.pss as f64),
            (
                m(|r| r.separate.first_list_p50_ms),
                m(|r| r.shared.first_list_p50_ms),
            ),
            (
                m(|r| r.separate.first_list_max_ms),
                m(|r| r.shared.first_list_max_ms),
            ),
        );
    }

    let mut runs = Vec::new();
    for n in 0..args.runs {
        runs.push(calls_run(&setup, &args, &n.to_string()).await?);
    }
    println!(
        "\nLatency of one client's sequential `echo` calls ({} per run), and the CPU the daemon and the bridge spend per call",
        args.calls
    );
    println!(
        "| run | direct p50 | shared p50 | added p50 | direct p99 | shared p99 | added p99 | daemon CPU/call | bridge CPU/call |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let row = |label: String, r: (f64, f64, f64, f64, f64, f64)| {
        println!(
            "| {label} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.1} µs | {:.1} µs |",
            r.0,
            r.1,
            r.1 - r.0,
            r.2,
            r.3,
            r.3 - r.2,
            r.4,
            r.5,
        );
    };
    for (i, r) in runs.iter().enumerate() {
        row(
            (i + 1).to_string(),
            (
                r.direct.p50_us,
                r.through.p50_us,
                r.direct.p99_us,
                r.through.p99_us,
                r.daemon_cpu_us,
                r.bridge_cpu_us,
            ),
        );
    }
    let m = |f: fn(&Calls) -> f64| median(runs.iter().map(f));
    row(
        "median".into(),
        (
            m(|r| r.direct.p50_us),
            m(|r| r.through.p50_us),
            m(|r| r.direct.p99_us),
            m(|r| r.through.p99_us),
            m(|r| r.daemon_cpu_us),
            m(|r| r.bridge_cpu_us),
        ),
    );
    println!(
        "(added = medians' difference; the median of per-run differences is {:.0} µs at p50)",
        m(|r| r.through.p50_us - r.direct.p50_us)
    );
    println!("\nTargets: shared within 1.2x of one server's memory; at most 100 µs added at p50.");
    Ok(())
}
