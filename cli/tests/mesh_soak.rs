//! Soak: two `nsh mesh server` replicas with `--redis --persistence` on a durable Redis,
//! senders and receivers spread over both, while Redis and then a replica are killed with
//! SIGKILL and started again. Counts what the client API sees: messages sent, acked,
//! delivered, lost (acked but never delivered: must be 0) and delivered more than once, and
//! samples each replica's RSS.
//!
//! Bounded: `NSH_SOAK_SECS` (default 24 s in the test suite; `scripts/soak-mesh.sh` runs an
//! hour). Every loop stops by itself at the deadline.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::MeshProcess;
use nsh_testenv::RedisServer;
use nsh_testenv::mesh_agent::{Agent, new_id};
use serde_json::{Value, json};

const PAIRS: usize = 4;

#[derive(Debug, Default)]
struct Tally {
    sent: HashSet<String>,
    acked: HashSet<String>,
    /// How each id was acked (status, seconds into the run, pair), for the report of a loss.
    how: HashMap<String, (String, f64, usize)>,
    /// Receptions per id, at the receivers.
    received: HashMap<String, u32>,
    retries: u64,
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Connects `agent` to whichever replica answers, trying `first` before the other.
async fn connect_any(urls: &[String], tokens: &[String], first: usize) -> Option<Agent> {
    for i in 0..urls.len() {
        let at = (first + i) % urls.len();
        if let Ok(agent) = Agent::connect(&urls[at], &tokens[at]).await {
            return Some(agent);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_through_redis_and_replica_kills_loses_nothing() {
    let seconds: u64 = std::env::var("NSH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let duration = Duration::from_secs(seconds);
    let mut redis = RedisServer::start_durable().unwrap();
    let url = redis.url();
    let flags = [
        "--redis",
        url.as_str(),
        "--persistence",
        "--ack-timeout",
        "2s",
    ];
    let first = MeshProcess::start_with(&flags).await;
    let second = MeshProcess::replica_of(&first, &flags).await;
    let mesh = Arc::new(tokio::sync::Mutex::new([first, second]));
    let (urls, tokens_for) = {
        let mesh = mesh.lock().await;
        let urls: Vec<String> = mesh.iter().map(MeshProcess::url).collect();
        let tokens_for = |agent: &str| -> Vec<String> {
            mesh.iter()
                .map(|m| m.token(agent, &[], 3600 * 24))
                .collect()
        };
        let tokens: Vec<(Vec<String>, Vec<String>)> = (0..PAIRS)
            .map(|i| (tokens_for(&format!("tx{i}")), tokens_for(&format!("rx{i}"))))
            .collect();
        (urls, tokens)
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    let deadline = Instant::now() + duration;
    // Receivers run past the deadline, to collect what is still in flight or stored.
    let drain_until = deadline + Duration::from_secs(20);

    let mut tasks = Vec::new();
    for (i, (tx_tokens, rx_tokens)) in tokens_for.into_iter().enumerate() {
        let (urls_rx, tally_rx) = (urls.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < drain_until {
                let Some(mut rx) = connect_any(&urls_rx, &rx_tokens, i + 1).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                // Until the connection is gone, and then what it had already received.
                while Instant::now() < drain_until {
                    match tokio::time::timeout(Duration::from_millis(300), rx.recv_message()).await
                    {
                        Ok(Some(envelope)) => {
                            *tally_rx
                                .lock()
                                .unwrap()
                                .received
                                .entry(envelope.id)
                                .or_default() += 1;
                        }
                        Ok(None) => break,
                        Err(_) if !rx.client.is_connected() => break,
                        Err(_) => {}
                    }
                }
            }
        }));
        let (urls_tx, tally_tx) = (urls.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let to = format!("rx{i}");
            let mut tx: Option<Agent> = None;
            while Instant::now() < deadline {
                let id = new_id();
                tally_tx.lock().unwrap().sent.insert(id.clone());
                // Retry the same id until it is acked: what a client does on `unavailable`
                // or `recipient_offline` (the dedup window makes a retry safe).
                while Instant::now() < drain_until {
                    if tx.as_ref().is_none_or(|t| !t.client.is_connected()) {
                        tx = connect_any(&urls_tx, &tx_tokens, i).await;
                    }
                    let Some(sender) = &tx else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    };
                    let payload = json!({ "id": id, "to": to, "text": format!("soak {id}") });
                    let ack = tokio::time::timeout(
                        Duration::from_secs(5),
                        sender.client.request::<_, Value>("message", &payload),
                    )
                    .await;
                    match ack {
                        Ok(Ok(ack)) if ack["ok"] == true => {
                            let mut tally = tally_tx.lock().unwrap();
                            tally.acked.insert(id.clone());
                            let status = ack["status"].as_str().unwrap_or("?").to_owned();
                            let at =
                                duration.as_secs_f64() - (deadline - Instant::now()).as_secs_f64();
                            tally.how.insert(id.clone(), (status, at, i));
                            break;
                        }
                        _ => {
                            tally_tx.lock().unwrap().retries += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                // Mixed traffic: presence and history queries between messages.
                if let Some(sender) = &tx {
                    let _ = sender
                        .client
                        .request::<_, Value>("presence", &json!({}))
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    // Faults and RSS samples, on a schedule scaled to the duration.
    let started = Instant::now();
    let mut rss = Vec::new();
    let step = duration / 12;
    for tick in 0..12 {
        tokio::time::sleep(step).await;
        {
            let mesh = mesh.lock().await;
            let sample: Vec<Option<f64>> = mesh.iter().map(|m| m.pid().and_then(rss_mib)).collect();
            rss.push((started.elapsed(), sample));
        }
        match tick {
            2 | 8 => {
                redis.stop();
                tokio::time::sleep(Duration::from_secs(1)).await;
                redis.start_again().unwrap();
            }
            5 => {
                let mut mesh = mesh.lock().await;
                mesh[1].kill();
                tokio::time::sleep(Duration::from_secs(2)).await;
                mesh[1].start_again().await;
            }
            _ => {}
        }
    }
    for task in tasks {
        task.await.unwrap();
    }

    let tally = tally.lock().unwrap();
    let delivered: HashSet<&String> = tally.received.keys().collect();
    let lost: Vec<&String> = tally
        .acked
        .iter()
        .filter(|id| !delivered.contains(id))
        .collect();
    let redelivered: u32 = tally.received.values().map(|n| n - 1).sum();
    let unexpected = delivered
        .iter()
        .filter(|id| !tally.sent.contains(**id))
        .count();
    println!(
        "\nsoak: {seconds} s, {PAIRS} pairs over 2 replicas, Redis killed twice, a replica once"
    );
    println!(
        "| sent | acked | delivered | lost | delivered twice (dropped by id in the mesh-client) | retries |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {redelivered} | {} |",
        tally.sent.len(),
        tally.acked.len(),
        delivered.len(),
        lost.len(),
        tally.retries
    );
    println!("\n| at | replica 1 RSS (MiB) | replica 2 RSS (MiB) |\n|---|---|---|");
    for (at, sample) in &rss {
        let cell = |v: &Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        println!(
            "| {:.0} s | {} | {} |",
            at.as_secs_f64(),
            cell(&sample[0]),
            cell(&sample[1])
        );
    }
    assert!(
        tally.acked.len() > 10,
        "too little traffic to say anything: {tally:?}"
    );
    assert!(
        lost.is_empty(),
        "{} acked messages never delivered: {lost:?}",
        lost.len()
    );
    assert_eq!(unexpected, 0, "a message nobody sent was delivered");
}
