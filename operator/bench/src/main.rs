//! `operator-bench`: how long `nsh operator run` takes to reconcile N Agents of one Team
//! against a real kube-apiserver + etcd + kube-controller-manager (every owned object created,
//! status written), its reconcile rate, and its memory at rest afterwards. Prints a table.
//! Run it through `scripts/bench-operator.sh`.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)] // A benchmark reports on stdout, progress on stderr.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures_util::StreamExt as _;
use kube::api::{Api, ListParams, PostParams};
use nsh_operator_api::{Agent, MeshServer, Team};

#[derive(Debug, Parser)]
struct Args {
    /// The `nsh` binary (release build).
    #[arg(long)]
    nsh: PathBuf,
    /// The committed CRDs.
    #[arg(long, default_value = "crds")]
    crds: PathBuf,
    /// Agents in the team.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Creates in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to let the operator settle before reading its memory.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    rest: Duration,
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> anyhow::Result<T> {
    Ok(serde_json::from_value(value)?)
}

/// Resident memory of `pid` in KiB, from /proc.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc status")
}

/// Agents whose status names their pod: token, ConfigMap and StatefulSet applied, status written.
async fn reconciled(agents: &Api<Agent>) -> anyhow::Result<usize> {
    Ok(agents
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|a| a.status.as_ref().is_some_and(|s| s.pod.is_some()))
        .count())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    eprintln!("starting the control plane (etcd, kube-apiserver, kube-controller-manager)…");
    let plane = nsh_testenv::ControlPlane::start().await?;
    plane.install_crds(&args.crds).await?;
    let client = plane.client().await?;
    let ns = plane.namespace("bench").await?;

    let log = std::env::temp_dir().join(format!("operator-bench-{}.log", std::process::id()));
    let admin = nsh_testenv::free_port()?;
    let mut command = Command::new(&args.nsh);
    command
        .args([
            "operator",
            "run",
            "--lease-namespace",
            &ns,
            "--admin-listen",
        ])
        .arg(format!("127.0.0.1:{admin}"))
        .env("KUBECONFIG", plane.kubeconfig_path())
        .env("NSH_LOG", "warn");
    let operator = nsh_testenv::process::ManagedProcess::spawn("nsh operator", command, &log)?;
    let idle_rss = {
        tokio::time::sleep(Duration::from_secs(3)).await;
        rss_kib(operator.pid())?
    };

    Api::<MeshServer>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &object(serde_json::json!({ "metadata": { "name": "mesh" }, "spec": {} }))?,
        )
        .await?;
    Api::<Team>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &object(serde_json::json!({ "metadata": { "name": "alpha" }, "spec": { "meshRef": { "name": "mesh" }, "groups": ["ops"] } }))?)
        .await?;
    let key = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns);
    let start = Instant::now();
    while key.get_opt("alpha-team-key").await?.is_none() {
        anyhow::ensure!(start.elapsed() < args.timeout, "the team never got its key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    eprintln!("creating {} agents…", args.agents);
    let agents = Api::<Agent>::namespaced(client.clone(), &ns);
    let start = Instant::now();
    let created: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..args.agents)
        .map(|i| {
            let agents = agents.clone();
            async move {
                let agent: Agent = object(serde_json::json!({
                    "metadata": { "name": format!("agent-{i:04}") },
                    "spec": { "teamRef": { "name": "alpha" }, "groups": ["ops"] },
                }))?;
                agents.create(&PostParams::default(), &agent).await?;
                Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let created_in = start.elapsed();

    let mut done = 0;
    while done < args.agents {
        anyhow::ensure!(
            start.elapsed() < args.timeout,
            "only {done} of {} agents reconciled within {:?}; operator log: {}",
            args.agents,
            args.timeout,
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        done = reconciled(&agents).await?;
    }
    let all_in = start.elapsed();
    eprintln!(
        "all reconciled; resting {:?} before reading memory…",
        args.rest
    );
    tokio::time::sleep(args.rest).await;
    let rest_rss = rss_kib(operator.pid())?;

    let rate = args.agents as f64 / all_in.as_secs_f64();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!("| agents | {} | 1,000 |", args.agents);
    println!(
        "| creating them (client side, {} in flight) | {:.1} s | |",
        args.concurrency,
        created_in.as_secs_f64()
    );
    println!(
        "| all reconciled (token Secret, launch ConfigMap, StatefulSet, status) | {:.1} s | < 60 s |",
        all_in.as_secs_f64()
    );
    println!("| reconcile rate | {rate:.0} agents/s | |");
    println!(
        "| operator RSS before the agents | {:.1} MiB | |",
        idle_rss as f64 / 1024.0
    );
    println!(
        "| operator RSS at rest with them | {:.1} MiB | < 100 MiB |",
        rest_rss as f64 / 1024.0
    );
    Ok(())
}
