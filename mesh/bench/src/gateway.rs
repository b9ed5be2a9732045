//! Gateway benchmark: the same rmcp client and the same rmcp upstream (an `echo` tool over
//! streamable HTTP, in its own process), called directly and through `nsh gateway run`, at 1
//! and 32 concurrent sessions, in one run. Prints p50/p99 latency, throughput, what the
//! gateway adds, and the gateway's own CPU per call (from /proc/<pid>/stat: the load
//! generator shares the cores).

#[path = "proc_stat.rs"]
mod proc_stat;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, ServerCapabilities, ServerConfig,
};
use rmcp::{ServerHandler, ServiceExt as _, tool, tool_handler, tool_router};

#[derive(Debug, Parser)]
#[command(about = "nsh gateway versus direct calls to the same MCP server")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The nsh binary.
    #[arg(long, default_value = "nsh")]
    nsh: std::path::PathBuf,
    /// How long each measurement runs.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Session counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    sessions: Vec<usize>,
    /// Repetitions of the whole table.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the benchmark's upstream (an `echo` tool) on 127.0.0.1, printing its address.
    Upstream,
}

#[derive(Debug, Clone)]
struct Echo {
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    text: String,
}

#[tool_router]
impl Echo {
    #[tool(description = "Returns the text it is given.")]
    fn echo(&self, Parameters(args): Parameters<EchoArgs>) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::text(args.text)])
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

async fn upstream() -> anyhow::Result<()> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let mut config = StreamableHttpServerConfig::default();
    config.legacy_session_mode = true;
    let service = StreamableHttpService::new(
        || {
            Ok(Echo {
                tool_router: Echo::tool_router(),
            })
        },
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    #[allow(clippy::print_stdout)]
    {
        println!("listening {}", listener.local_addr()?);
    }
    // As production servers do (Go, Node, uvicorn): small SSE writes must not wait for
    // Nagle's algorithm and delayed ACKs. BENCH_UPSTREAM_NAGLE=1 leaves it on, as a plain
    // `axum::serve` does.
    use axum::serve::ListenerExt as _;
    let nodelay = std::env::var_os("BENCH_UPSTREAM_NAGLE").is_none();
    let listener = listener.tap_io(move |tcp| {
        let _ = tcp.set_nodelay(nodelay);
    });
    axum::serve(listener, router).await?;
    Ok(())
}

/// One row: run, sessions, direct, through the gateway, gateway CPU µs per call.
type Row = (usize, usize, Measured, Measured, f64);

#[derive(Debug, Clone, Copy)]
struct Measured {
    p50_us: f64,
    p99_us: f64,
    calls_per_s: f64,
    calls: u64,
}

async fn measure(
    url: &str,
    token: Option<&str>,
    tool: &'static str,
    sessions: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let mut clients = Vec::new();
    for _ in 0..sessions {
        let mut config =
            rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
                url,
            );
        config.auth_header = token.map(str::to_owned);
        let transport = rmcp::transport::StreamableHttpClientTransport::from_config(config);
        clients.push(().serve(transport).await.context("connecting")?);
    }
    // Warm up every session.
    for client in &clients {
        client.call_tool(call(tool)).await?;
    }
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in clients {
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3).expect("histogram");
            while Instant::now() < deadline {
                let start = Instant::now();
                client.call_tool(call(tool)).await.expect("call");
                histogram.record(start.elapsed().as_micros() as u64).ok();
            }
            let _ = client.cancel().await;
            histogram
        }));
    }
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    for task in tasks {
        all.add(task.await?).ok();
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Measured {
        p50_us: all.value_at_quantile(0.5) as f64,
        p99_us: all.value_at_quantile(0.99) as f64,
        calls_per_s: all.len() as f64 / elapsed,
        calls: all.len(),
    })
}

fn call(tool: &'static str) -> CallToolRequestParams {
    CallToolRequestParams::new(tool).with_arguments(
        serde_json::json!({ "text": "hello" })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // rmcp's HTTP client is built on reqwest without a TLS provider of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if let Some(Command::Upstream) = args.command {
        return upstream().await;
    }
    let dir = tempfile::tempdir()?;
    // The upstream, in a process of its own.
    let me = std::env::current_exe()?;
    let mut upstream = tokio::process::Command::new(&me)
        .arg("upstream")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut line = String::new();
    {
        use tokio::io::AsyncBufReadExt as _;
        let mut out = tokio::io::BufReader::new(upstream.stdout.take().context("stdout")?);
        out.read_line(&mut line).await?;
    }
    let upstream_addr = line.trim().trim_start_matches("listening ").to_owned();
    let direct = format!("http://{upstream_addr}/mcp");

    // The gateway in front of it: limits raised for a load test, audit on (to a file).
    let key = nsh_mesh_transport::token::TeamKey::generate_text();
    std::fs::create_dir(dir.path().join("keys"))?;
    std::fs::write(dir.path().join("keys/alpha"), &key)?;
    let port = nsh_testenv::free_port()?;
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nteamKeysDir: keys\nteams: [alpha]\nupstreams:\n- name: bench\n  url: {direct}\nrateLimit: {{ rate: 1000000/s, burst: 1000000, upstreamConcurrency: 10000 }}\naudit: {{ file: {} }}\n",
            dir.path().join("audit.jsonl").display()
        ),
    )?;
    let mut gateway = tokio::process::Command::new(&args.nsh)
        .args(["gateway", "run", "--config"])
        .arg(&config)
        .env("NSH_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let gateway_pid = gateway.id().context("gateway pid")?;
    let through = format!("http://127.0.0.1:{port}/mcp");
    let key = nsh_mesh_transport::token::TeamKey::from_file_contents(key.as_bytes())?;
    let token = nsh_mesh_transport::token::mint(
        &nsh_mesh_transport::token::TokenRequest {
            team: "alpha",
            agent: "bench",
            groups: &[],
            ttl: Duration::from_secs(3600),
            audiences: &["nsh-gateway".to_owned()],
        },
        &key,
        nsh_mesh_transport::token::now_unix(),
    )?;
    let ready = Instant::now() + Duration::from_secs(20);
    while reqwest_ready(port).await.is_err() {
        anyhow::ensure!(Instant::now() < ready, "the gateway did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut rows: Vec<Row> = Vec::new();
    for run in 1..=args.runs {
        for &sessions in &args.sessions {
            let d = measure(&direct, None, "echo", sessions, args.duration).await?;
            let cpu_before = proc_stat::cpu_seconds(gateway_pid);
            let g = measure(
                &through,
                Some(&token),
                "bench__echo",
                sessions,
                args.duration,
            )
            .await?;
            let cpu = proc_stat::cpu_seconds(gateway_pid) - cpu_before;
            rows.push((run, sessions, d, g, cpu * 1e6 / g.calls.max(1) as f64));
        }
    }
    let _ = gateway.kill().await;
    let _ = upstream.kill().await;

    let mut out = String::new();
    out.push_str("run sessions | direct p50 µs p99 µs calls/s | gateway p50 µs p99 µs calls/s | added p50 µs added p99 µs | throughput ratio | gateway CPU µs/call\n");
    for (run, sessions, d, g, cpu) in &rows {
        out.push_str(&format!(
            "{run:>3} {sessions:>8} | {:>10.0} {:>6.0} {:>7.0} | {:>11.0} {:>6.0} {:>7.0} | {:>12.0} {:>12.0} | {:>16.2} | {:>19.1}\n",
            d.p50_us, d.p99_us, d.calls_per_s, g.p50_us, g.p99_us, g.calls_per_s,
            g.p50_us - d.p50_us, g.p99_us - d.p99_us, g.calls_per_s / d.calls_per_s, cpu,
        ));
    }
    out.push_str("\nmedian of the runs\n");
    for &sessions in &args.sessions {
        let median = |f: &dyn Fn(&Row) -> f64| {
            let mut values: Vec<f64> = rows.iter().filter(|r| r.1 == sessions).map(f).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        out.push_str(&format!(
            "sessions {sessions:>3}: added p50 {:.0} µs, added p99 {:.0} µs, throughput {:.0}% of direct, gateway CPU {:.1} µs/call\n",
            median(&|r| r.3.p50_us - r.2.p50_us),
            median(&|r| r.3.p99_us - r.2.p99_us),
            median(&|r| 100.0 * r.3.calls_per_s / r.2.calls_per_s),
            median(&|r| r.4),
        ));
    }
    #[allow(clippy::print_stdout)]
    {
        print!("{out}");
    }
    Ok(())
}

/// `/readyz` of the gateway answers 200.
async fn reqwest_ready(port: u16) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n")
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    anyhow::ensure!(answer.split(' ').nth(1) == Some("200"), "{answer}");
    Ok(())
}
