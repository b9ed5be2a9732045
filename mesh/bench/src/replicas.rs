//! `--scenario replicas`: two server processes on one Redis (a fresh `redis-server` per
//! contender), every sender on the first and every receiver on the second, so each message and
//! its ack cross replicas through Redis.

use std::path::Path;

use nsh_mesh_transport::token::TeamKey;
use nsh_testenv::RedisServer;

use crate::{Args, Route, latency, nsh_server, start, throughput};

/// One contender's measurement in one run.
struct Measured {
    run: usize,
    name: &'static str,
    throughput: f64,
    /// CPU of both replicas and Redis, per acked message.
    cpu_us_per_message: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: u64,
}

/// How each contender's replicas are started, given the Redis URL.
enum Kind {
    Nsh { persistence: bool },
    Node { adapter: &'static str },
}

const NSH: &str = "nsh --redis";
const NSH_PERSISTENCE: &str = "nsh --redis --persistence";
const NODE: &str = "node + redis-adapter";

pub(crate) async fn run(args: &Args, key: &TeamKey, keys_dir: &Path) -> anyhow::Result<()> {
    let mut contenders = vec![
        (NSH, Kind::Nsh { persistence: false }),
        (NSH_PERSISTENCE, Kind::Nsh { persistence: true }),
    ];
    if !args.only_nsh {
        contenders.push((NODE, Kind::Node { adapter: "pubsub" }));
        contenders.push((
            "node + redis-streams-adapter",
            Kind::Node { adapter: "streams" },
        ));
    }
    // Each run measures every contender in turn, so the ratios compare measurements taken
    // minutes apart rather than a whole benchmark apart: this machine's speed drifts.
    let mut results = Vec::new();
    for run in 1..=args.runs {
        for (name, kind) in &contenders {
            eprintln!("== run {run}: {name}");
            results.push(measure(run, name, kind, args, key, keys_dir).await?);
        }
    }
    report(args, &results);
    Ok(())
}

async fn measure(
    run: usize,
    name: &'static str,
    kind: &Kind,
    args: &Args,
    key: &TeamKey,
    keys_dir: &Path,
) -> anyhow::Result<Measured> {
    let redis = RedisServer::start()?;
    let command = || match kind {
        Kind::Nsh { persistence } => {
            let mut command = nsh_server(args, keys_dir);
            command.args(["--redis", &redis.url()]);
            if *persistence {
                command.arg("--persistence");
            }
            command
        }
        Kind::Node { adapter } => {
            let mut command = tokio::process::Command::new(&args.node);
            command
                .arg(args.interop_dir.join("node-server.mjs"))
                .arg("--team-keys-dir")
                .arg(keys_dir)
                .args(["--redis", &redis.url(), "--adapter", adapter]);
            command
        }
    };
    let starter = if matches!(kind, Kind::Node { .. }) {
        "node"
    } else {
        "nsh"
    };
    let (mut first, first_pid, tx) = start(starter, command()).await?;
    let (mut second, second_pid, rx) = start(starter, command()).await?;
    // Let the replicas see each other (directory snapshots, adapter subscriptions).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let route = Route { tx: &tx, rx: &rx };
    let mut serving = vec![first_pid, second_pid];
    serving.extend(redis.pid());
    let measured = throughput(route, args, key, &serving).await?;
    eprintln!(
        "   cross-replica throughput: {:.0} msg/s, {:.1} us CPU per message (replicas and Redis)",
        measured.per_second, measured.cpu_us_per_message
    );
    let (p50_ms, p99_ms, _, failed) = latency(route, args, key).await?;
    eprintln!("   latency: p50 {p50_ms:.3} ms, p99 {p99_ms:.3} ms, {failed} failed");
    first.kill().await?;
    second.kill().await?;
    Ok(Measured {
        run,
        name,
        throughput: measured.per_second,
        cpu_us_per_message: measured.cpu_us_per_message,
        p50_ms,
        p99_ms,
        failed,
    })
}

fn report(args: &Args, results: &[Measured]) {
    println!();
    println!(
        "cross-replica benchmark: 2 replicas on one Redis, {} pairs x window {} (senders on replica 1, receivers on replica 2), {:?} per phase, {} run(s) taking turns; latency at {} msg/s; CPU is both replicas' and Redis's, per acked message",
        args.pairs, args.window, args.duration, args.runs, args.rate
    );
    let in_run = |run: usize, name: &str| {
        results
            .iter()
            .find(|m| m.run == run && m.name == name)
            .map(|m| m.throughput)
    };
    println!(
        "| run | server | direct msgs/s with acks | vs node + redis-adapter (same run) | CPU us/msg | p50 (ms) | p99 (ms) | latency-phase failures |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for m in results {
        let ratio = in_run(m.run, NODE)
            .map_or_else(|| "-".to_owned(), |b| format!("{:.2}x", m.throughput / b));
        println!(
            "| {} | {} | {:.0} | {ratio} | {:.1} | {:.3} | {:.3} | {} |",
            m.run, m.name, m.throughput, m.cpu_us_per_message, m.p50_ms, m.p99_ms, m.failed
        );
    }
    // Per run: the two goals (at least 3x Node; persistence keeping at least half).
    // Each counted as printed, so the count and the list agree.
    let ratios: Vec<f64> = (1..=args.runs)
        .filter_map(|run| Some(in_run(run, NSH)? / in_run(run, NODE)?))
        .map(|ratio| crate::as_printed(ratio, 2))
        .collect();
    if !ratios.is_empty() {
        let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}x")).collect();
        println!(
            "nsh --redis vs node + redis-adapter, per run: {} (at least {TIMES_NODE}x in {} of {})",
            listed.join(", "),
            ratios.iter().filter(|&&r| r >= TIMES_NODE).count(),
            ratios.len()
        );
    }
    let kept: Vec<f64> = (1..=args.runs)
        .filter_map(|run| Some(100.0 * in_run(run, NSH_PERSISTENCE)? / in_run(run, NSH)?))
        .map(|percent| crate::as_printed(percent, 0))
        .collect();
    if !kept.is_empty() {
        let listed: Vec<String> = kept.iter().map(|k| format!("{k:.0}%")).collect();
        println!(
            "persistence keeps, per run: {} of the throughput without it (at least half in {} of {})",
            listed.join(", "),
            kept.iter().filter(|&&k| k >= 50.0).count(),
            kept.len()
        );
    }
}

/// The replicas' goal against Node + `@socket.io/redis-adapter` in the same run (issue #15).
const TIMES_NODE: f64 = 3.0;
