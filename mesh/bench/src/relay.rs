//! The relay phase: PAIRS senders each keep WINDOW direct messages in flight to their receiver,
//! which acks at once; counted for the duration after a warm-up. Driven by this crate's Rust
//! client or by the official Node `socket.io-client` (`mesh/interop/node-load.mjs`), since the
//! load generator shares the machine's cores with the server. Reports the server's own CPU and
//! context switches per relayed message, from /proc, over exactly the counted window.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nsh_mesh_transport::token::TeamKey;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::proc_stat::Sample;
use crate::{Args, Route, TEAM};

/// Which load generator drives the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Generator {
    Rust,
    Node,
}

impl Generator {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Rust => "rust client",
            Self::Node => "node socket.io-client",
        }
    }
}

/// One relay run against one server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Relay {
    pub(crate) per_second: f64,
    pub(crate) cpu_us_per_message: f64,
    pub(crate) switches_per_message: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) failed: u64,
}

impl Relay {
    fn from(
        delivered: u64,
        seconds: f64,
        before: Sample,
        after: Sample,
        p50_ms: f64,
        p99_ms: f64,
        failed: u64,
    ) -> Self {
        let n = delivered.max(1) as f64;
        Self {
            per_second: delivered as f64 / seconds,
            cpu_us_per_message: (after.cpu_seconds - before.cpu_seconds) * 1e6 / n,
            switches_per_message: after
                .context_switches
                .saturating_sub(before.context_switches) as f64
                / n,
            p50_ms,
            p99_ms,
            failed,
        }
    }
}

pub(crate) async fn run(
    generator: Generator,
    url: &str,
    pid: u32,
    args: &Args,
    key: &TeamKey,
) -> anyhow::Result<Relay> {
    match generator {
        Generator::Rust => rust(url, pid, args, key).await,
        Generator::Node => node(url, pid, args, key).await,
    }
}

async fn rust(url: &str, pid: u32, args: &Args, key: &TeamKey) -> anyhow::Result<Relay> {
    let pairs = crate::pairs(Route::one(url), key, args.pairs).await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let histogram = Arc::new(std::sync::Mutex::new(hdrhistogram::Histogram::<u64>::new(
        3,
    )?));
    let deadline = Instant::now() + Duration::from_secs(2) + args.duration;
    let mut tasks = Vec::new();
    for (tx, _rx, to) in &pairs {
        for _ in 0..args.window {
            let (tx, to) = (tx.clone(), to.clone());
            let (delivered, failed, counting, histogram) = (
                delivered.clone(),
                failed.clone(),
                counting.clone(),
                histogram.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let ok = crate::send(&tx, &to).await;
                    if !counting.load(Ordering::Relaxed) {
                        continue;
                    }
                    if ok {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        let micros = started.elapsed().as_micros() as u64;
                        let _ = histogram.lock().expect("histogram").record(micros.max(1));
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = Sample::of(pid);
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(args.duration).await;
    counting.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let after = Sample::of(pid);
    let count = delivered.load(Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    drop(pairs);
    let histogram = histogram.lock().expect("histogram");
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(Relay::from(
        count,
        seconds,
        before,
        after,
        ms(0.5),
        ms(0.99),
        failed.load(Ordering::Relaxed),
    ))
}

async fn node(url: &str, pid: u32, args: &Args, key: &TeamKey) -> anyhow::Result<Relay> {
    let mut tokens = serde_json::Map::new();
    for i in 0..args.pairs {
        for agent in [format!("tx-{i}"), format!("rx-{i}")] {
            let jwt = crate::bench_token(key, TEAM, &agent)?;
            tokens.insert(agent, jwt.into());
        }
    }
    let mut child = tokio::process::Command::new(&args.node)
        .arg(args.interop_dir.join("node-load.mjs"))
        .env("MESH_URL", url)
        .env("TOKENS", serde_json::Value::Object(tokens).to_string())
        .env("PAIRS", args.pairs.to_string())
        .env("WINDOW", args.window.to_string())
        .env("DURATION_MS", args.duration.as_millis().to_string())
        .env("WARMUP_MS", "2000")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start node node-load.mjs")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let (mut before, mut after) = (None, None);
    let limit = args.duration + Duration::from_secs(120);
    while let Some(line) = tokio::time::timeout(limit, lines.next_line()).await?? {
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("node-load: {line}"))?;
        match value["phase"].as_str() {
            Some("counting") => before = Some(Sample::of(pid)),
            Some("stopped") => after = Some(Sample::of(pid)),
            _ => {
                let (Some(before), Some(after)) = (before, after) else {
                    anyhow::bail!("node-load ended without its counting window: {line}");
                };
                let number = |k: &str| value[k].as_f64().unwrap_or(0.0);
                let _ = child.wait().await;
                return Ok(Relay::from(
                    number("delivered") as u64,
                    number("seconds"),
                    before,
                    after,
                    number("p50_ms"),
                    number("p99_ms"),
                    number("failed") as u64,
                ));
            }
        }
    }
    anyhow::bail!("node-load.mjs printed no result")
}
