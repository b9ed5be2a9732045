//! `nsh`: one binary for the whole of nsh-mesh. Parsing lives in [`cli`], each verb in its module.
#![forbid(unsafe_code)]

mod agent;
mod cli;
mod cluster;
#[cfg(test)]
mod contract_tests;
mod gateway;
mod keys;
mod mcp;
mod mcp_daemon;
mod mcp_doctor;
mod mesh;
mod mesh_client;
mod mesh_terminal;
mod operator;
mod output;
mod paths;
mod signal;
mod table;
mod up;

use clap::FromArgMatches as _;

/// mimalloc rather than glibc's malloc: the mesh allocates and frees small buffers per message
/// across threads, where glibc spent a third of a replica's CPU (profiled under the
/// cross-replica benchmark). Built without transparent huge pages (`no_thp`), which otherwise
/// cost idle connections about 10 KiB each in resident memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // One bridge runs per MCP client: it skips the full command tree, TLS and logging set-up.
    if let Some(result) = mcp_daemon::run_once_fast_path() {
        return exit_code(result);
    }
    // HTTPS clients (kube, reqwest for `nsh mcp doctor`) share ring as rustls' provider; a
    // second provider would only add a C build and a choice to make at runtime.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let matches = cli::command().get_matches();
    let cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    // `mcp doctor` reports each server's failure in its table; rmcp's own log of the same
    // failure would say it twice.
    let quiet_rmcp =
        matches!(&cli.command, cli::Command::Mcp(group) if mcp::is_doctor(&group.verb));
    init_tracing(cli.log_format, quiet_rmcp);
    let result = match cli.command {
        // The MCP daemon's verbs: a bridge per MCP client should not cost a thread pool.
        cli::Command::Mcp(group) if mcp::needs_no_runtime(&group.verb) => {
            mcp::run_without_runtime(group.verb)
        }
        command => {
            let runtime = match &command {
                cli::Command::Mesh(group) => mesh::pinned_runtime(&group.verb)
                    .map_or(Runtime::MultiThread, Runtime::SingleThread),
                _ => Runtime::MultiThread,
            };
            block_on(runtime, dispatch(command))
        }
    };
    exit_code(result)
}

fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The message and its causes, never a backtrace: this is for the person at the terminal.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {}", error_chain(&err));
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each once: many errors already quote their cause in their own
/// message, and `{:#}` would print it a second time.
fn error_chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// The runtime a command runs on.
enum Runtime {
    /// Tokio's work-stealing runtime, a worker per CPU.
    MultiThread,
    /// One thread that parks as told: `nsh mesh server`, which starts its own pinned threads
    /// (`nsh_admin::shards`).
    SingleThread(nsh_admin::shards::Batching),
}

fn block_on(
    runtime: Runtime,
    work: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let mut builder = match runtime {
        Runtime::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        Runtime::SingleThread(batching) => {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            builder.on_thread_park(batching.before_park());
            builder
        }
    };
    builder
        .enable_all()
        .build()
        .map_err(|err| anyhow::anyhow!("starting the runtime: {err}"))?
        .block_on(work)
}

async fn dispatch(command: cli::Command) -> anyhow::Result<()> {
    match command {
        cli::Command::Up(args) => up::run(&args).await,
        cli::Command::Down(args) => up::down(&args).await,
        cli::Command::Mesh(group) => mesh::run(group.verb).await,
        cli::Command::Gateway(group) => gateway::run(group.verb).await,
        cli::Command::Mcp(group) => mcp::run(group.verb).await,
        cli::Command::Agent(group) => agent::run(group.verb),
        cli::Command::Operator(group) => operator::run(group.verb).await,
        cli::Command::Cluster(args) => cluster::run(args).await,
        cli::Command::Version => {
            use std::io::Write as _;
            writeln!(std::io::stdout().lock(), "nsh {}", cli::VERSION)?;
            Ok(())
        }
        cli::Command::Completion(args) => {
            use std::io::Write as _;
            // Into memory first: clap_complete panics on a write error (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut cli::command(), "nsh", &mut script);
            std::io::stdout().lock().write_all(&script)?;
            Ok(())
        }
    }
}

/// Logs go to stderr, always: several verbs (the MCP stdio servers) own stdout.
fn init_tracing(format: cli::LogFormat, quiet_rmcp: bool) {
    let asked = std::env::var(nsh_contract::env::LOG).ok();
    let filter = asked
        .as_deref()
        .and_then(|directives| tracing_subscriber::EnvFilter::try_new(directives).ok())
        // rmcp narrates every session at info; its warnings are what a user needs.
        .unwrap_or_else(|| {
            tracing_subscriber::EnvFilter::new(if quiet_rmcp {
                "info,rmcp=off"
            } else {
                "info,rmcp=warn"
            })
        });
    // socketioxide warns once per broadcast another replica relays to sockets that are closing
    // (dozens of lines when a crowd disconnects and presence changes are relayed); the mesh's
    // own broadcasts note that at debug. So from that module only errors, unless the filter
    // asked names socketioxide itself.
    let filter = if asked.is_some_and(|directives| directives.contains("socketioxide")) {
        filter
    } else {
        filter.add_directive(
            "socketioxide_core::adapter::request=error"
                .parse()
                .expect("a valid directive"),
        )
    };
    // Colours for a person at a terminal, never escape codes in a log file or a pod's log.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_on_stderr())
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().init(),
    }
}

/// Colour only for a person at a terminal who has not asked for none (<https://no-color.org>).
fn colour_on_stderr() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
