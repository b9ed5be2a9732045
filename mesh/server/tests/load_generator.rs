//! The benchmark's Node load generator (`mesh/interop/node-load.mjs`, the official
//! `socket.io-client`) against our server: what it reports is what it counted, whether one
//! event loop drives the pairs or several worker threads do (`THREADS`), so the bench's p50 and
//! p99 are the quantiles of every counted message and each event loop's trace holds its own.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestMesh, interop_script, run_to_success, token_for};
use nsh_mesh_server::{Limits, RateLimit};
use nsh_testenv::peers;
use serde_json::Value;

/// A mesh whose rate limit a load generator does not reach.
async fn unlimited_mesh() -> TestMesh {
    let unlimited = RateLimit {
        per_second: 1_000_000.0,
        burst: 1_000_000,
    };
    TestMesh::with_limits(Limits {
        rate: unlimited,
        ..Limits::default()
    })
    .await
}

/// What one run printed: its phases in order and its result line.
struct Report {
    phases: Vec<String>,
    result: Value,
}

/// Runs node-load.mjs against `mesh` with `PAIRS` pairs and `env`, tracing into `traces`.
async fn run_generator(
    mesh: &TestMesh,
    pairs: usize,
    env: &[(&str, &str)],
    traces: &Path,
) -> Report {
    let mut tokens = serde_json::Map::new();
    for i in 0..pairs {
        for agent in [format!("tx-{i}"), format!("rx-{i}")] {
            tokens.insert(agent.clone(), token_for("alpha", &agent, &[]).into());
        }
    }
    let mut command = interop_script(peers::node().unwrap(), "node-load.mjs", &mesh.url);
    command
        .env("TOKENS", Value::Object(tokens).to_string())
        .env("PAIRS", pairs.to_string())
        .env("WINDOW", "2")
        .env("WARMUP_MS", "300")
        .env("DURATION_MS", "700")
        .env("LATENCY_TRACE", traces);
    for (key, value) in env {
        command.env(key, value);
    }
    let (stdout, stderr) = run_to_success(command, Duration::from_secs(60), "node-load.mjs").await;
    // Every event loop ends once it is done: the main thread does not wait out its limit.
    assert!(!stderr.contains("had not exited"), "{stderr}");
    let mut lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let result = lines.pop().expect("a result line");
    let phases = lines
        .iter()
        .map(|line| line["phase"].as_str().expect("a phase line").to_owned())
        .collect();
    Report { phases, result }
}

/// The traces in `dir`, by file name.
fn traces(dir: &Path) -> Vec<(String, Value)> {
    let mut traces: Vec<(String, Value)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap(),
            )
        })
        .collect();
    traces.sort_by(|a, b| a.0.cmp(&b.0));
    traces
}

/// Every counted latency of `traces`, sorted.
fn all_latencies(traces: &[(String, Value)]) -> Vec<f64> {
    let mut latencies: Vec<f64> = traces
        .iter()
        .flat_map(|(_, trace)| trace["latency_ms"].as_array().unwrap().clone())
        .map(|ms| ms.as_f64().unwrap())
        .collect();
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// The generator's quantile: the value at floor(q * n) of the sorted latencies.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let at = (q * sorted.len() as f64).floor() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// The result line's count, failures and quantiles are those of the traces' latencies, and
/// every trace has an ack time per latency.
fn assert_result_is_the_traces(result: &Value, traces: &[(String, Value)]) {
    let latencies = all_latencies(traces);
    let delivered = result["delivered"].as_u64().unwrap();
    assert!(delivered > 0, "nothing delivered: {result}");
    assert_eq!(result["failed"], 0, "{result}");
    assert_eq!(delivered, latencies.len() as u64, "{result}");
    for (name, trace) in traces {
        assert_eq!(
            trace["latency_ms"].as_array().unwrap().len(),
            trace["acked_at_ms"].as_array().unwrap().len(),
            "{name}: one ack time per latency"
        );
    }
    let (p50, p99) = (quantile(&latencies, 0.5), quantile(&latencies, 0.99));
    assert_eq!(result["p50_ms"].as_f64().unwrap(), p50, "{result}");
    assert_eq!(result["p99_ms"].as_f64().unwrap(), p99, "{result}");
    assert!(p50 > 0.0 && p50 <= p99, "{result}");
}

#[tokio::test]
async fn one_event_loop_reports_the_quantiles_of_what_it_counted() {
    let mesh = unlimited_mesh().await;
    let dir = tempfile::tempdir().unwrap();
    let report = run_generator(&mesh, 3, &[], dir.path()).await;

    assert_eq!(report.phases, ["counting", "stopped"]);
    let traces = traces(dir.path());
    assert_eq!(traces.len(), 1, "one trace: {traces:?}");
    assert!(!traces[0].0.starts_with("trace-w"), "{}", traces[0].0);
    assert_result_is_the_traces(&report.result, &traces);
}

#[tokio::test]
async fn two_worker_threads_merge_every_counted_latency() {
    let mesh = unlimited_mesh().await;
    let dir = tempfile::tempdir().unwrap();
    let report = run_generator(&mesh, 5, &[("THREADS", "2")], dir.path()).await;

    assert_eq!(report.phases, ["counting", "stopped"]);
    assert_eq!(report.result["threads"], 2, "{}", report.result);
    let traces = traces(dir.path());
    let names: Vec<&str> = traces.iter().map(|(name, _)| name.as_str()).collect();
    // Pairs 0-1 on the first worker, 2-4 on the second: each writes its own trace.
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with("trace-w0-"), "{names:?}");
    assert!(names[1].starts_with("trace-w2-"), "{names:?}");
    for (name, trace) in &traces {
        assert!(
            !trace["latency_ms"].as_array().unwrap().is_empty(),
            "{name}: a worker counted nothing"
        );
    }
    assert_result_is_the_traces(&report.result, &traces);
}

#[tokio::test]
async fn a_rate_is_shared_between_the_worker_threads() {
    let mesh = unlimited_mesh().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("THREADS", "2"), ("RATE", "200"), ("WARMUP_MS", "100")];
    let report = run_generator(&mesh, 4, &env, dir.path()).await;

    let traces = traces(dir.path());
    let names: Vec<&str> = traces.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.iter().all(|name| name.starts_with("trace-rate200-w")),
        "{names:?}"
    );
    assert_result_is_the_traces(&report.result, &traces);
    // Open loop: the workers together send at most 200 a second from their start, a warm-up
    // and the counting window before its end (and a little more, for one worker being ready
    // before the other), so no more than that is counted however fast the server answers.
    // Each worker at the whole rate would count about 2 x 200 x 0.7 = 280.
    let delivered = report.result["delivered"].as_f64().unwrap();
    let seconds = report.result["seconds"].as_f64().unwrap();
    let most = 200.0 * (0.1 + seconds + 0.5);
    assert!(
        delivered <= most,
        "{delivered} counted in {seconds:.2} s at 200/s, at most {most:.0}"
    );
}
