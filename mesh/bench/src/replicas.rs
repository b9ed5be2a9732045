//! `--scenario replicas`: two server processes on one Redis (a fresh `redis-server` per
//! contender), every sender on the first and every receiver on the second, so each message and
//! its ack cross replicas through Redis.

use std::path::Path;

use nsh_mesh_transport::token::TeamKey;
use nsh_testenv::RedisServer;

use crate::{Args, Route, latency, nsh_server, start, throughput};

struct Contender {
    name: &'static str,
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: u64,
}

/// How each contender's replicas are started, given the Redis URL.
enum Kind {
    Nsh { persistence: bool },
    Node { adapter: &'static str },
}

pub(crate) async fn run(args: &Args, key: &TeamKey, keys_dir: &Path) -> anyhow::Result<()> {
    let mut contenders = vec![
        ("nsh --redis", Kind::Nsh { persistence: false }),
        ("nsh --redis --persistence", Kind::Nsh { persistence: true }),
    ];
    if !args.only_nsh {
        contenders.push(("node + redis-adapter", Kind::Node { adapter: "pubsub" }));
        contenders.push((
            "node + redis-streams-adapter",
            Kind::Node { adapter: "streams" },
        ));
    }
    let mut results = Vec::new();
    for (name, kind) in contenders {
        eprintln!("== {name}");
        let redis = RedisServer::start()?;
        let command = || match &kind {
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
        let (mut first, _, tx) = start(starter, command()).await?;
        let (mut second, _, rx) = start(starter, command()).await?;
        // Let the replicas see each other (directory snapshots, adapter subscriptions).
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let route = Route { tx: &tx, rx: &rx };
        let msgs = throughput(route, args, key).await?;
        eprintln!("   cross-replica throughput: {msgs:.0} msg/s");
        let (p50_ms, p99_ms, _, failed) = latency(route, args, key).await?;
        eprintln!("   latency: p50 {p50_ms:.3} ms, p99 {p99_ms:.3} ms, {failed} failed");
        first.kill().await?;
        second.kill().await?;
        results.push(Contender {
            name,
            throughput: msgs,
            p50_ms,
            p99_ms,
            failed,
        });
    }

    println!();
    println!(
        "cross-replica benchmark: 2 replicas on one Redis, {} pairs x window {} (senders on replica 1, receivers on replica 2), {:?} per phase; latency at {} msg/s",
        args.pairs, args.window, args.duration, args.rate
    );
    let baseline = results
        .iter()
        .find(|c| c.name == "node + redis-adapter")
        .map(|c| c.throughput);
    println!(
        "| server | direct msgs/s with acks | vs node + redis-adapter | p50 (ms) | p99 (ms) | latency-phase failures |"
    );
    println!("|---|---|---|---|---|---|");
    for c in &results {
        let ratio =
            baseline.map_or_else(|| "-".to_owned(), |b| format!("{:.2}x", c.throughput / b));
        println!(
            "| {} | {:.0} | {ratio} | {:.3} | {:.3} | {} |",
            c.name, c.throughput, c.p50_ms, c.p99_ms, c.failed
        );
    }
    if let (Some(plain), Some(kept)) = (
        results.iter().find(|c| c.name == "nsh --redis"),
        results
            .iter()
            .find(|c| c.name == "nsh --redis --persistence"),
    ) {
        println!(
            "cost of persistence: {:.0}% of the throughput without it",
            100.0 * kept.throughput / plain.throughput
        );
    }
    Ok(())
}
