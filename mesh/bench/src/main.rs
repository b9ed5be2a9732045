//! `mesh-bench`: runs `nsh mesh server` and the official Node socket.io server (same relay
//! logic, `mesh/interop/node-server.mjs`) one after the other on this machine, drives both with
//! this one load generator, and prints a table:
//!
//! - relay (`--runs` times, each server fresh, with each `--load` generator: this crate's Rust
//!   client and the official Node `socket.io-client`): direct messages relayed with acks per
//!   second, the server's own CPU time and context switches per relayed message (from
//!   `/proc/<pid>`), p50/p99 send -> ack under that load;
//! - latency: p50/p99 send -> ack at a fixed moderate rate (`--rate`), from the Rust client and,
//!   when `--load` names it, from the Node client too (an open loop: the rate whatever is in
//!   flight, so neither generator is saturated and the latency is the server's);
//! - memory: server RSS growth per idle connection with N connections.
//!
//! `--scenario replicas` measures two replicas on one Redis instead, senders on one and
//! receivers on the other: `nsh mesh server --redis` (with and without `--persistence`) versus
//! the Node server with `@socket.io/redis-adapter` and with `@socket.io/redis-streams-adapter`.
//!
//! `scripts/bench-mesh.sh` builds what it needs and runs it.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures_util::StreamExt as _;
use nsh_mesh_transport::client::{Client, ClientConfig};
use nsh_mesh_transport::token::{self, TeamKey, TokenRequest};
use nsh_mesh_transport::wire::{SendAck, event};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};

mod proc_stat;
mod relay;
mod replicas;

#[derive(Debug, Parser)]
struct Args {
    /// The `nsh` binary (release build).
    #[arg(long)]
    nsh: PathBuf,
    /// `node`; the official server script is mesh/interop/node-server.mjs.
    #[arg(long, default_value = "node")]
    node: PathBuf,
    #[arg(long)]
    interop_dir: PathBuf,
    /// Sender/receiver pairs in the relay phase.
    #[arg(long, default_value_t = 20)]
    pairs: usize,
    /// Messages each sender keeps in flight.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Runs per load generator and server (relay), or per contender (`--scenario replicas`);
    /// each run measures every contender once, in turn.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The load generators of the relay phase, comma-separated (`node2`: the Node client on
    /// two threads).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "rust,node,node2"
    )]
    load: Vec<relay::Generator>,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Total messages per second in the latency phase.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Idle connections in the memory phase.
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// Threads serving `nsh mesh server`'s connections (its --worker-threads) [default: the
    /// server's default, 1].
    #[arg(long)]
    nsh_workers: Option<usize>,
    /// Threads of the Rust load generator (this process's runtime). One, like the Node
    /// generator: on a two-core machine a second thread competes with the server for its core
    /// and its preemptions show up as the servers' tail latency.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    load_threads: u16,
    /// Measure only `nsh mesh server` (for quick tuning runs; prints no ratios).
    #[arg(long)]
    only_nsh: bool,
    /// `single`: one server process; `replicas`: two on one Redis, traffic crossing them.
    #[arg(long, value_enum, default_value = "single")]
    scenario: Scenario,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Single,
    Replicas,
}

const TEAM: &str = "bench";
/// Idle connections are spread over this many teams of equal size: presence is broadcast per
/// team, and one team of thousands would measure an O(N^2) presence storm, not idle sockets.
const IDLE_TEAMS: usize = 100;

struct Results {
    p50_ms: f64,
    p99_ms: f64,
    latency_sent: u64,
    latency_failed: u64,
    /// The same rate from the official Node client (with `--load` naming it).
    node_client_latency: Option<relay::Relay>,
    kib_per_connection: f64,
    rss_idle_mib: f64,
    /// The same idle connections all in one team (presence to every member on each connect).
    kib_per_connection_one_team: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = match args.load_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.into())
            .enable_all()
            .build()?,
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let keys = tempfile::tempdir()?;
    let key_text = TeamKey::generate_text();
    std::fs::write(keys.path().join(TEAM), &key_text)?;
    for team in 0..IDLE_TEAMS {
        std::fs::write(keys.path().join(format!("idle-{team}")), &key_text)?;
    }
    let key = TeamKey::from_file_contents(key_text.as_bytes())?;
    if args.scenario == Scenario::Replicas {
        return replicas::run(&args, &key, keys.path()).await;
    }

    let keys_dir = keys.path();
    let node_command = || {
        let mut command = tokio::process::Command::new(&args.node);
        command
            .arg(args.interop_dir.join("node-server.mjs"))
            .arg("--team-keys-dir")
            .arg(keys_dir);
        command
    };
    let ours = measure(
        "nsh mesh server",
        || nsh_server(&args, keys_dir),
        &args,
        &key,
    )
    .await?;
    let node = if args.only_nsh {
        None
    } else {
        Some(measure("node socket.io 4.8", node_command, &args, &key).await?)
    };
    // Runs interleave the servers, so both meet the machine in the same state.
    let mut relays: Vec<(usize, relay::Generator, relay::Relay, Option<relay::Relay>)> = Vec::new();
    for run in 1..=args.runs {
        for &generator in &args.load {
            let mine = relay_once(
                "nsh mesh server",
                nsh_server(&args, keys_dir),
                generator,
                &args,
                &key,
            )
            .await?;
            let theirs = if args.only_nsh {
                None
            } else {
                Some(
                    relay_once("node socket.io 4.8", node_command(), generator, &args, &key)
                        .await?,
                )
            };
            relays.push((run, generator, mine, theirs));
        }
    }

    println!();
    println!(
        "relay: {} pairs x {} in flight, {:?} counted after a 2 s warm-up; the server's own CPU and context switches from /proc; the Rust generator on {} thread(s), the Node one on one (node2: two)",
        args.pairs, args.window, args.duration, args.load_threads
    );
    println!(
        "| run | load generator | server | msg/s | server CPU us/msg | ctx switches/msg | p50 ms | p99 ms | failed | generator CPU (cores) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (run, generator, mine, theirs) in &relays {
        for (server, r) in [("nsh", Some(mine)), ("node", theirs.as_ref())] {
            let Some(r) = r else { continue };
            println!(
                "| {run} | {} | {server} | {:.0} | {:.1} | {:.3} | {:.3} | {:.3} | {} | {:.2} |",
                generator.name(),
                r.per_second,
                r.cpu_us_per_message,
                r.switches_per_message,
                r.p50_ms,
                r.p99_ms,
                r.failed,
                r.generator_cores
            );
        }
    }
    if !args.only_nsh {
        println!();
        println!(
            "| run | load generator | {} | msg/s nsh/node |",
            target_columns()
        );
        println!("|---|---|---|---|---|---|");
        for (run, generator, mine, theirs) in &relays {
            let Some(theirs) = theirs else { continue };
            println!(
                "| {run} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                generator.name(),
                (relay::TARGETS[0].ratio)(mine, theirs),
                (relay::TARGETS[1].ratio)(mine, theirs),
                (relay::TARGETS[2].ratio)(mine, theirs),
                mine.per_second / theirs.per_second
            );
        }
        print_targets_met(&relays);
    }

    println!();
    println!(
        "mesh benchmark: {} pairs x window {}, {:?} per phase; latency at {} msg/s; {} idle connections in {IDLE_TEAMS} teams",
        args.pairs, args.window, args.duration, args.rate, args.connections
    );
    println!("| metric | nsh mesh server | node socket.io 4.8 | nsh vs node | target |");
    println!("|---|---|---|---|---|");
    let row =
        |metric: &str, ours: f64, node: Option<f64>, digits: usize, ratio: &str, target: &str| {
            let node_text = node.map_or_else(|| "-".to_owned(), |n| format!("{n:.digits$}"));
            let ratio_text =
                node.map_or_else(|| "-".to_owned(), |n| format!("{:.2}{ratio}", ours / n));
            println!("| {metric} | {ours:.digits$} | {node_text} | {ratio_text} | {target} |");
        };
    row(
        "p50 send->ack latency at --rate (ms)",
        ours.p50_ms,
        node.as_ref().map(|n| n.p50_ms),
        3,
        " of node",
        "",
    );
    row(
        "p99 send->ack latency at --rate (ms)",
        ours.p99_ms,
        node.as_ref().map(|n| n.p99_ms),
        3,
        " of node",
        "< 0.5 ms at 1,000 msg/s",
    );
    if let Some(ours_node_client) = ours.node_client_latency {
        let theirs = node.as_ref().and_then(|n| n.node_client_latency);
        row(
            "p50 send->ack at --rate, node socket.io-client (ms)",
            ours_node_client.p50_ms,
            theirs.map(|n| n.p50_ms),
            3,
            " of node",
            "",
        );
        row(
            "p99 send->ack at --rate, node socket.io-client (ms)",
            ours_node_client.p99_ms,
            theirs.map(|n| n.p99_ms),
            3,
            " of node",
            // The target is read from the Rust client's row: this one adds the Node client's
            // own event loop to every message (0.1-0.2 ms at p50 against nsh).
            "",
        );
    }
    row(
        &format!("KiB per idle connection ({IDLE_TEAMS} teams)"),
        ours.kib_per_connection,
        node.as_ref().map(|n| n.kib_per_connection),
        1,
        " of node",
        "< 40 KB",
    );
    row(
        "KiB per idle connection (one team)",
        ours.kib_per_connection_one_team,
        node.as_ref().map(|n| n.kib_per_connection_one_team),
        1,
        " of node",
        "< 40 KB",
    );
    row(
        "server RSS with all idle connections (MiB)",
        ours.rss_idle_mib,
        node.as_ref().map(|n| n.rss_idle_mib),
        1,
        " of node",
        "",
    );
    let failures = |r: &Results| {
        let node_client = r.node_client_latency.map_or_else(String::new, |n| {
            format!(
                "; node socket.io-client {:.0} msg/s acked, {} failed",
                n.per_second, n.failed
            )
        });
        format!(
            "{} sent, {} failed{node_client}",
            r.latency_sent, r.latency_failed
        )
    };
    println!(
        "| latency phase | {} | {} | | |",
        failures(&ours),
        node.as_ref().map_or_else(|| "-".to_owned(), failures)
    );
    Ok(())
}

/// The relay's targets as table columns: "CPU/msg nsh/node <= 0.33 | ...".
fn target_columns() -> String {
    let columns: Vec<String> = relay::TARGETS
        .iter()
        .map(|t| format!("{} <= {}", t.name, t.at_most))
        .collect();
    columns.join(" | ")
}

/// For each load generator, in how many runs each relay target was met, and how much of a core
/// that generator used against each server (the median over the runs): a target met in some
/// runs and not others reads differently when the generator was saturated in all of them.
fn print_targets_met(relays: &[(usize, relay::Generator, relay::Relay, Option<relay::Relay>)]) {
    println!();
    println!(
        "| load generator | runs | {} | generator CPU (cores), nsh / node runs |",
        target_columns()
    );
    println!("|---|---|---|---|---|---|");
    // The runs take turns between the generators; list each once, in the order it first ran.
    let mut generators: Vec<relay::Generator> = Vec::new();
    for (_, generator, _, _) in relays {
        if !generators.contains(generator) {
            generators.push(*generator);
        }
    }
    for generator in generators {
        let runs: Vec<(relay::Relay, relay::Relay)> = relays
            .iter()
            .filter(|r| r.1 == generator)
            .filter_map(|(_, _, mine, theirs)| Some((*mine, (*theirs)?)))
            .collect();
        let median = |mut cores: Vec<f64>| {
            cores.sort_by(f64::total_cmp);
            cores.get(cores.len() / 2).copied().unwrap_or(0.0)
        };
        let n = runs.len();
        let met: Vec<String> = relay::TARGETS
            .iter()
            .map(|t| format!("{} of {n}", t.met(&runs)))
            .collect();
        println!(
            "| {} | {n} | {} | {:.2} / {:.2} |",
            generator.name(),
            met.join(" | "),
            median(runs.iter().map(|r| r.0.generator_cores).collect()),
            median(runs.iter().map(|r| r.1.generator_cores).collect()),
        );
    }
}

/// `nsh mesh server` on a free port with the bench's keys. Node's relay has no rate limit; ours
/// is lifted so both are measured alike.
fn nsh_server(args: &Args, keys_dir: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&args.nsh);
    command
        .args([
            "mesh",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--team-keys-dir",
        ])
        .arg(keys_dir)
        .args([
            "--rate-limit",
            "1000000/s",
            "--burst",
            "1000000",
            "--max-connections",
            "100000",
            // Load from one address: lift the abuse limits too.
            "--connect-rate",
            "1000000/s",
            "--connect-burst",
            "1000000",
            "--new-sessions-per-peer",
            "1000000",
            "--new-sessions",
            "1000000",
            "--max-http-connections",
            "1000000",
        ])
        .env("NSH_LOG", "warn");
    if let Some(workers) = args.nsh_workers {
        command.arg("--worker-threads").arg(workers.to_string());
    }
    command
}

/// Runs every phase against a server started by `command`: the memory phase on one fresh
/// process, the load phases on another, so neither disturbs the other (a garbage-collected
/// runtime reuses the heap grown under load; thousands of closing idle sockets slow a load
/// phase).
async fn measure(
    name: &str,
    command: impl Fn() -> tokio::process::Command,
    args: &Args,
    key: &TeamKey,
) -> anyhow::Result<Results> {
    eprintln!("== {name}");
    let (mut server, pid, url) = start(name, command()).await?;
    let (kib_per_connection, rss_idle_mib) = idle_memory(&url, args, key, pid, IDLE_TEAMS).await?;
    eprintln!("   memory: {kib_per_connection:.1} KiB per idle connection ({IDLE_TEAMS} teams)");
    server.kill().await?;
    let (mut server, pid, url) = start(name, command()).await?;
    let (kib_per_connection_one_team, _) = idle_memory(&url, args, key, pid, 1).await?;
    eprintln!("   memory: {kib_per_connection_one_team:.1} KiB per idle connection (one team)");
    server.kill().await?;

    let (mut server, _, url) = start(name, command()).await?;
    let (p50_ms, p99_ms, latency_sent, latency_failed) =
        latency(Route::one(&url), args, key).await?;
    eprintln!("   latency: p50 {p50_ms:.3} ms, p99 {p99_ms:.3} ms");
    server.kill().await?;
    let node_client_latency = if args
        .load
        .iter()
        .any(|g| matches!(g, relay::Generator::Node | relay::Generator::NodeTwoThreads))
    {
        let (mut server, pid, url) = start(name, command()).await?;
        let measured = relay::node(&url, pid, args, key, Some(args.rate), 1).await?;
        eprintln!(
            "   latency, node socket.io-client: p50 {:.3} ms, p99 {:.3} ms",
            measured.p50_ms, measured.p99_ms
        );
        server.kill().await?;
        Some(measured)
    } else {
        None
    };
    Ok(Results {
        p50_ms,
        p99_ms,
        latency_sent,
        latency_failed,
        node_client_latency,
        kib_per_connection,
        rss_idle_mib,
        kib_per_connection_one_team,
    })
}

/// One relay run on a fresh server.
async fn relay_once(
    name: &str,
    command: tokio::process::Command,
    generator: relay::Generator,
    args: &Args,
    key: &TeamKey,
) -> anyhow::Result<relay::Relay> {
    let (mut server, pid, url) = start(name, command).await?;
    let result = relay::run(generator, &url, pid, args, key).await?;
    eprintln!(
        "   relay ({}): {:.0} msg/s, {:.1} us CPU/msg, {:.3} ctx switches/msg, p99 {:.3} ms",
        generator.name(),
        result.per_second,
        result.cpu_us_per_message,
        result.switches_per_message,
        result.p99_ms
    );
    server.kill().await?;
    Ok(result)
}

/// Starts a server; returns it, its pid and its URL once it listens.
async fn start(
    name: &str,
    mut command: tokio::process::Command,
) -> anyhow::Result<(tokio::process::Child, u32, String)> {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut server = command.spawn().with_context(|| format!("start {name}"))?;
    let pid = server.id().context("server pid")?;
    let url = if name.starts_with("node") {
        let mut lines = BufReader::new(server.stdout.take().context("stdout")?).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await??
            .context("no output")?;
        format!("ws://127.0.0.1:{}", line.trim_start_matches("listening "))
    } else {
        wait_for_nsh_port(pid).await?
    };
    eprintln!("   listening at {url} (pid {pid})");
    Ok((server, pid, url))
}

/// `nsh mesh server --listen 127.0.0.1:0` logs its address; reading /proc is simpler and exact.
async fn wait_for_nsh_port(pid: u32) -> anyhow::Result<String> {
    for _ in 0..100 {
        if let Some(port) = listening_port(pid) {
            return Ok(format!("ws://127.0.0.1:{port}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("nsh mesh server (pid {pid}) did not listen within 10 s")
}

/// The local port of the first listening TCP socket owned by `pid`.
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // state 0A = LISTEN
        (fields.get(3) == Some(&"0A") && inodes.iter().any(|i| Some(&i.as_str()) == fields.get(9)))
            .then(|| u16::from_str_radix(fields[1].split(':').nth(1)?, 16).ok())?
    })
}

fn rss_kib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("VmRSS")?;
    Ok(kib.trim().trim_end_matches("kB").trim().parse()?)
}

async fn connect(url: &str, key: &TeamKey, agent: &str) -> anyhow::Result<Client> {
    connect_to_team(url, key, TEAM, agent).await
}

/// `value` rounded as the tables print it with `decimals` digits, so a target counted met
/// agrees with the number printed beside it.
fn as_printed(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// An hour's token for `agent` of `team`, no groups.
fn bench_token(key: &TeamKey, team: &str, agent: &str) -> anyhow::Result<String> {
    Ok(token::mint(
        &TokenRequest {
            team,
            agent,
            groups: &[],
            ttl: Duration::from_secs(3600),
            audiences: &[],
        },
        key,
        token::now_unix(),
    )?)
}

async fn connect_to_team(
    url: &str,
    key: &TeamKey,
    team: &str,
    agent: &str,
) -> anyhow::Result<Client> {
    let token = bench_token(key, team, agent)?;
    let config = ClientConfig {
        ack_timeout: Duration::from_secs(30),
        ..ClientConfig::new(url).with_token(token)
    };
    let (client, mut incoming) = Client::connect(config).await?;
    // Every receiver acks at once, as the mesh-client does.
    tokio::spawn(async move {
        while let Some(mut message) = incoming.recv().await {
            message.ack(vec![json!({ "ok": true })]);
        }
    });
    Ok(client)
}

async fn send(client: &Client, to: &str) -> bool {
    let payload = json!({ "id": uuid::Uuid::new_v4().to_string(), "to": to, "text": "benchmark payload of a typical short agent message" });
    matches!(client.request::<_, SendAck>(event::MESSAGE, &payload).await, Ok(ack) if ack.ok)
}

/// Where the load goes: senders connect to `tx`, receivers to `rx` (the same server, or two
/// replicas).
#[derive(Debug, Clone, Copy)]
struct Route<'a> {
    tx: &'a str,
    rx: &'a str,
}

impl<'a> Route<'a> {
    fn one(url: &'a str) -> Self {
        Self { tx: url, rx: url }
    }
}

async fn pairs(
    route: Route<'_>,
    key: &TeamKey,
    count: usize,
) -> anyhow::Result<Vec<(Client, Client, String)>> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let receiver = format!("rx-{i}");
        let rx = connect(route.rx, key, &receiver).await?;
        let tx = connect(route.tx, key, &format!("tx-{i}")).await?;
        out.push((tx, rx, receiver));
    }
    Ok(out)
}

/// The throughput phase's result: acked messages per second, and the CPU the processes
/// `serving` (the servers, and Redis where there is one) used per acked message meanwhile.
struct Throughput {
    per_second: f64,
    cpu_us_per_message: f64,
}

async fn throughput(
    route: Route<'_>,
    args: &Args,
    key: &TeamKey,
    serving: &[u32],
) -> anyhow::Result<Throughput> {
    let cpu = || -> f64 { serving.iter().map(|&pid| proc_stat::cpu_seconds(pid)).sum() };
    let pairs = pairs(route, key, args.pairs).await?;
    // Warm up, then count acked messages for the duration.
    let delivered = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(2) + args.duration;
    let mut tasks = Vec::new();
    for (tx, _rx, to) in &pairs {
        for _ in 0..args.window {
            let (tx, to, delivered, counting) =
                (tx.clone(), to.clone(), delivered.clone(), counting.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    if send(&tx, &to).await && counting.load(Ordering::Relaxed) {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let cpu_before = cpu();
    tokio::time::sleep(args.duration).await;
    let count = delivered.load(Ordering::Relaxed);
    let cpu_used = cpu() - cpu_before;
    let elapsed = started.elapsed();
    for task in tasks {
        let _ = task.await;
    }
    drop(pairs);
    Ok(Throughput {
        per_second: count as f64 / elapsed.as_secs_f64(),
        cpu_us_per_message: cpu_used * 1e6 / (count.max(1) as f64),
    })
}

async fn latency(
    route: Route<'_>,
    args: &Args,
    key: &TeamKey,
) -> anyhow::Result<(f64, f64, u64, u64)> {
    let pairs = Arc::new(pairs(route, key, args.pairs).await?);
    let histogram = Arc::new(std::sync::Mutex::new(hdrhistogram::Histogram::<u64>::new(
        3,
    )?));
    let failed = Arc::new(AtomicU64::new(0));
    let total = (args.rate as f64 * args.duration.as_secs_f64()) as u64;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = futures_util::stream::FuturesUnordered::new();
    for i in 0..total {
        ticker.tick().await;
        let (pairs, histogram, failed) = (pairs.clone(), histogram.clone(), failed.clone());
        sends.push(tokio::spawn(async move {
            let (tx, _rx, to) = &pairs[i as usize % pairs.len()];
            let started = Instant::now();
            if send(tx, to).await {
                let micros = started.elapsed().as_micros() as u64;
                let _ = histogram.lock().expect("histogram").record(micros.max(1));
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    while sends.next().await.is_some() {}
    let histogram = histogram.lock().expect("histogram");
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok((
        ms(0.5),
        ms(0.99),
        histogram.len(),
        failed.load(Ordering::Relaxed),
    ))
}

/// RSS growth per idle connection, the connections spread over `teams` teams.
async fn idle_memory(
    url: &str,
    args: &Args,
    key: &TeamKey,
    pid: u32,
    teams: usize,
) -> anyhow::Result<(f64, f64)> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid)?;
    let mut clients = Vec::with_capacity(args.connections);
    let mut connecting = futures_util::stream::iter(0..args.connections)
        .map(|i| async move {
            connect_to_team(
                url,
                key,
                &format!("idle-{}", i % teams),
                &format!("agent-{i}"),
            )
            .await
        })
        .buffer_unordered(64);
    while let Some(client) = connecting.next().await {
        clients.push(client?);
    }
    // Let allocators settle and heartbeats run once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid)?;
    drop(clients);
    Ok(((after - before) / args.connections as f64, after / 1024.0))
}
