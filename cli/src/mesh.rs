//! `nsh mesh …`: run the mesh server, mint tokens, make team keys.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use nsh_admin::shards::Batching;
use nsh_contract::{Rate, env};
use nsh_mesh_server::{HttpLimits, Limits, RateLimit, Server, ServerConfig};
use nsh_mesh_transport::token::{self, TeamKey, TokenRequest};

#[derive(Debug, Subcommand)]
pub(crate) enum MeshVerb {
    /// Run the mesh server (Socket.io; agents authenticate with team tokens).
    Server(ServerArgs),
    /// Mint a token for an agent, signed with its team's key (`token decode` reads one).
    Token(TokenArgs),
    /// Send one message from a terminal, as the token's agent.
    Send(crate::mesh_terminal::SendArgs),
    /// Unread messages in an agent's inbox; --follow stays connected and prints new ones.
    Inbox(crate::mesh_terminal::InboxArgs),
    /// Who on the token's team is online.
    Presence(crate::mesh_terminal::PresenceArgs),
    /// Make a new random team key.
    Keygen(KeygenArgs),
    /// Run the agent's MCP stdio server: joins the mesh, delivers messages into the conversation.
    Client(crate::mesh_client::ClientArgs),
    /// Claude Code hooks that inject unread mesh messages (and `hook install` to add them).
    Hook(crate::mesh_client::HookArgs),
    /// Print `{"Authorization": "Bearer <token>"}` from a token file, for an MCP client's
    /// headers helper (Claude Code's `headersHelper`) in front of an MCP gateway.
    AuthHeader(AuthHeaderArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AuthHeaderArgs {
    /// The agent's token file (re-read on every call, so rotated tokens are picked up).
    #[arg(long = nsh_contract::command::mesh_client_flag::TOKEN_FILE, value_name = "FILE")]
    token_file: PathBuf,
}

fn auth_header(args: &AuthHeaderArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("--token-file {}", args.token_file.display()))?;
    let token = token.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "--token-file {}: the file is empty",
        args.token_file.display()
    );
    let header = serde_json::json!({ "Authorization": format!("Bearer {token}") });
    writeln!(std::io::stdout().lock(), "{header}")?;
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// Threads that serve connections [default: 1]. Each runs a single-threaded runtime and a
    /// connection stays on one, so a message's reader, handler and writer never wake each
    /// other across threads. One thread relayed ~60,000 messages/s in the benchmark; more
    /// spread connections for throughput at a cost per message between agents on different
    /// threads (docs/mesh-server.md, "CPU per relayed message").
    #[arg(long, value_name = "N", env = env::mesh_server::WORKER_THREADS, value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    /// While messages arrive fast (--batch-after of them per this long, over a serving
    /// thread's last two rounds), how long the thread waits, off the CPU, before it sleeps on
    /// the network: it then wakes once for everything that came in meanwhile, not once for
    /// every few frames. Twice this at twice that rate, as under heavy load. Adds at most twice
    /// this much latency under load, none to a lone message. `0s` turns it off [default:
    /// 400us; 0s with --redis, where a thread runs out of work waiting on Redis and the wait
    /// would hold back Redis' replies] (docs/mesh-server.md, "CPU per relayed message").
    #[arg(long, value_name = "DURATION", env = env::mesh_server::BATCH_WAIT, value_parser = humantime::parse_duration)]
    batch_wait: Option<Duration>,
    /// The rate at which --batch-wait applies: this many messages per --batch-wait (4 per
    /// 400us is 10,000 a second), and at least this many in the thread's last two rounds.
    #[arg(long, default_value_t = 4, value_name = "N", env = env::mesh_server::BATCH_AFTER, value_parser = clap::value_parser!(u32).range(1..))]
    batch_after: u32,
    /// Address to listen on (Socket.io, /healthz, /readyz, /metrics).
    #[arg(long, default_value = "127.0.0.1:3456", env = env::mesh_server::LISTEN)]
    listen: SocketAddr,
    /// Folder with one key file per team (file name = team name); changes apply while running.
    #[arg(long, value_name = "DIR", env = env::mesh_server::TEAM_KEYS_DIR)]
    team_keys_dir: PathBuf,
    /// Sustained events per agent, as COUNT/UNIT (s, m or h).
    #[arg(
        long,
        default_value = "50/s",
        value_name = "RATE",
        env = env::mesh_server::RATE_LIMIT
    )]
    rate_limit: Rate,
    /// Events an agent may send at once above the sustained rate.
    #[arg(long, default_value_t = 100, env = env::mesh_server::BURST)]
    burst: u32,
    /// Largest message: bytes of `text` plus the JSON of `metadata`.
    #[arg(long, default_value_t = Limits::default().max_message_bytes)]
    max_message_bytes: usize,
    /// Most groups one agent may be in.
    #[arg(long, default_value_t = Limits::default().max_groups_per_agent)]
    max_groups: usize,
    /// Most simultaneous connections of one agent.
    #[arg(long, default_value_t = Limits::default().max_connections_per_agent)]
    max_connections: usize,
    /// How long a recipient has to acknowledge a message before `recipient_offline`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    ack_timeout: Duration,
    /// How often the team keys folder is re-read.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    key_reload_interval: Duration,
    /// Redis through which several replicas form one mesh (and, with --persistence, where
    /// messages are kept), e.g. redis://127.0.0.1:6379/0. Every replica must use the same one.
    #[arg(long, value_name = "URL", env = env::mesh_server::REDIS)]
    redis: Option<String>,
    /// Keep every message in Redis Streams before acking it: offline delivery, `history`.
    #[arg(long, env = env::mesh_server::PERSISTENCE, requires = "redis")]
    persistence: bool,
    /// With --persistence: how long messages are kept.
    #[arg(long, default_value = "7d", env = env::mesh_server::RETENTION, value_parser = humantime::parse_duration)]
    retention: Duration,
    /// With --persistence: most messages kept per inbox or conversation.
    #[arg(long, default_value_t = 10_000, env = env::mesh_server::MAX_LEN)]
    max_len: usize,
    /// Longest token lifetime accepted: a token whose `exp` is further ahead is refused.
    #[arg(long, default_value = "30d", env = env::mesh_server::MAX_TOKEN_TTL, value_parser = humantime::parse_duration)]
    max_token_ttl: Duration,
    /// Connections one agent may open, sustained, as COUNT/UNIT (reconnect churn floods the
    /// team with presence).
    #[arg(long, default_value = "1/s", value_name = "RATE")]
    connect_rate: Rate,
    /// Connections one agent may open at once above --connect-rate.
    #[arg(long, default_value_t = Limits::default().connect_rate.burst)]
    connect_burst: u32,
    /// Most HTTP connections open at once (WebSockets included); lowered to fit `ulimit -n`.
    #[arg(long, default_value_t = HttpLimits::default().serve.max_connections, env = env::mesh_server::MAX_HTTP_CONNECTIONS)]
    max_http_connections: usize,
    /// How long a new connection may take to send its first request head (silent and
    /// drip-fed connections are closed after it).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// Close a connection that moves no byte either way for this long (an idle keep-alive
    /// connection, a vanished peer); Engine.IO pings every 25 s, so live sessions never are.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// How long a Socket.IO session may stay without connecting with a valid token.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// New Socket.IO sessions one client address may open per --connect-timeout.
    #[arg(long, default_value_t = HttpLimits::default().new_sessions_per_peer)]
    new_sessions_per_peer: u32,
    /// New Socket.IO sessions all clients together may open per --connect-timeout.
    #[arg(long, default_value_t = HttpLimits::default().new_sessions)]
    new_sessions: u32,
    /// Broadcast presence changes only while a team has at most this many agents online
    /// (fan-out is N² frames); larger teams ask with the `presence` event.
    #[arg(long, default_value_t = Limits::default().presence_max_team)]
    presence_max_team: usize,
    /// Refuse HTTP long-polling; WebSocket only (nsh's own clients use WebSocket).
    #[arg(long, env = env::mesh_server::WEBSOCKET_ONLY)]
    websocket_only: bool,
    /// Also serve /healthz, /readyz and /metrics on this address, which stays answering while
    /// the main listener is at its connection cap.
    #[arg(long, value_name = "ADDR", env = env::mesh_server::ADMIN_LISTEN)]
    admin_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    verb: Option<TokenVerb>,
    /// Team the agent belongs to (the token's `kid` and `team`); the mesh server finds the
    /// team's key by this name in its --team-keys-dir.
    #[arg(long, required = true)]
    team: Option<String>,
    /// Agent id (the token's `sub`).
    #[arg(long, required = true)]
    agent: Option<String>,
    /// The team's key file.
    #[arg(long, value_name = "FILE", required = true)]
    key_file: Option<PathBuf>,
    /// Groups the agent may join, comma-separated; `*` allows any. Without it the agent may
    /// send to agents but join no group.
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// Lifetime, e.g. 24h, 30m, 7d.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Also valid at these MCP gateways (their `audience`, e.g. nsh-gateway); repeatable.
    /// The mesh accepts the token either way.
    #[arg(long = "audience", value_name = "AUDIENCE")]
    audiences: Vec<String>,
    /// Write the token to this file (mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// With --out: replace an existing file.
    #[arg(long, requires = "out")]
    force: bool,
}

#[derive(Debug, Subcommand)]
enum TokenVerb {
    /// Show a token's team, agent, groups and expiry (and check it with --key-file).
    Decode(crate::mesh_terminal::DecodeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Write the key to this file (mode 0600; refuses to overwrite). Without it, print the key.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// `--batch-wait` on a single server: with the Node client as load generator, 40% less CPU per
/// relayed message than without, and a sixth of the context switches (docs/mesh-server.md).
const DEFAULT_BATCH_WAIT: Duration = Duration::from_micros(400);

/// `nsh mesh server` runs on one thread that parks as this says (it starts the other
/// `--worker-threads` itself); every other verb on the multi-threaded runtime (`None`).
pub(crate) fn pinned_runtime(verb: &MeshVerb) -> Option<Batching> {
    match verb {
        MeshVerb::Server(args) => Some(args.batching()),
        _ => None,
    }
}

impl ServerArgs {
    fn batching(&self) -> Batching {
        // Across replicas a thread also idles while it waits on Redis: waiting longer
        // delays the replies on every message's path (-28% throughput in the replicas bench).
        let default_wait = if self.redis.is_some() {
            Duration::ZERO
        } else {
            DEFAULT_BATCH_WAIT
        };
        Batching {
            wait: self.batch_wait.unwrap_or(default_wait),
            min_messages: self.batch_after,
        }
    }
}

pub(crate) async fn run(verb: MeshVerb) -> anyhow::Result<()> {
    match verb {
        MeshVerb::Server(args) => server(args).await,
        MeshVerb::Token(TokenArgs {
            verb: Some(TokenVerb::Decode(args)),
            ..
        }) => crate::mesh_terminal::decode(&args),
        MeshVerb::Token(args) => mint_token(&args),
        MeshVerb::Send(args) => crate::mesh_terminal::send(args).await,
        MeshVerb::Inbox(args) => crate::mesh_terminal::inbox(args).await,
        MeshVerb::Presence(args) => crate::mesh_terminal::presence(args).await,
        MeshVerb::Keygen(args) => keygen(&args),
        MeshVerb::AuthHeader(args) => auth_header(&args),
        MeshVerb::Client(args) => crate::mesh_client::client(args).await,
        MeshVerb::Hook(args) => crate::mesh_client::hook(args),
    }
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let batching = args.batching();
    let config = ServerConfig {
        listen: args.listen,
        team_keys_dir: args.team_keys_dir,
        key_reload_interval: args.key_reload_interval,
        limits: Limits {
            rate: RateLimit {
                per_second: args.rate_limit.0,
                burst: args.burst,
            },
            max_message_bytes: args.max_message_bytes,
            max_groups_per_agent: args.max_groups,
            max_connections_per_agent: args.max_connections,
            ack_timeout: args.ack_timeout,
            max_token_ttl: args.max_token_ttl,
            presence_max_team: args.presence_max_team,
            connect_rate: RateLimit {
                per_second: args.connect_rate.0,
                burst: args.connect_burst,
            },
            ..Limits::default()
        },
        http: HttpLimits {
            serve: nsh_admin::serve::ServeLimits {
                max_connections: args.max_http_connections,
                header_read_timeout: args.header_read_timeout,
                idle_timeout: args.idle_timeout,
            },
            connect_timeout: args.connect_timeout,
            new_sessions_per_peer: args.new_sessions_per_peer,
            new_sessions: args.new_sessions,
            websocket_only: args.websocket_only,
        },
        admin_listen: args.admin_listen,
        store: match (args.persistence, &args.redis) {
            (true, Some(url)) => Some(nsh_mesh_server::store::StoreConfig {
                url: url.clone(),
                retention: args.retention,
                max_len: args.max_len,
            }),
            _ => None,
        },
        cluster_url: args.redis,
        pinned_threads: args.worker_threads.map_or(1, usize::from),
        batching,
    };
    let server = Server::bind(config)
        .await
        .map_err(|err| bind_hint(err, "--listen"))?;
    server.run(crate::signal::shutdown_signal()).await?;
    Ok(())
}

fn mint_token(args: &TokenArgs) -> anyhow::Result<()> {
    let (Some(team), Some(agent), Some(key_file)) = (&args.team, &args.agent, &args.key_file)
    else {
        anyhow::bail!("nsh mesh token needs --team, --agent and --key-file");
    };
    let key = crate::keys::read_key(key_file)?;
    if let Some(name) = key_file.file_name().and_then(|n| n.to_str())
        && name != team
    {
        // The server looks a team's key up by file name: this token is refused unless the key
        // is also in --team-keys-dir under the team's name.
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "warning: --key-file is named `{name}` but --team is `{team}`: a mesh server finds team `{team}`'s key in the file `{team}` of its --team-keys-dir, so it refuses this token unless that file holds this key"
            );
        }
    }
    let request = TokenRequest {
        team,
        agent,
        groups: &args.groups,
        ttl: args.ttl,
        audiences: &args.audiences,
    };
    let token = token::mint(&request, &key, token::now_unix())?;
    match &args.out {
        Some(path) => crate::keys::write_secret(path, &format!("{token}\n"), args.force)
            .with_context(|| format!("--out {}", path.display())),
        None => Ok(writeln!(std::io::stdout().lock(), "{token}")?),
    }
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    match &args.out {
        Some(path) => {
            crate::keys::write_new_key(path).with_context(|| format!("--out {}", path.display()))
        }
        None => Ok(writeln!(
            std::io::stdout().lock(),
            "{}",
            TeamKey::generate_text()
        )?),
    }
}

/// A port already taken gets the flag that picks another (`--listen` here, `--mesh-port` for
/// `nsh up`).
pub(crate) fn bind_hint(err: nsh_mesh_server::ServerError, flag: &str) -> anyhow::Error {
    match err {
        nsh_mesh_server::ServerError::Bind { .. } => {
            anyhow::anyhow!("{err}; pick another with {flag}")
        }
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn batching_of(line: &[&str]) -> Batching {
        let mut args = vec!["nsh", "mesh", "server", "--team-keys-dir", "/keys"];
        args.extend_from_slice(line);
        match Cli::try_parse_from(&args).unwrap().command {
            Command::Mesh(group) => pinned_runtime(&group.verb).expect("the server runs pinned"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batching_is_on_for_one_server_and_off_across_replicas_unless_asked() {
        assert_eq!(
            batching_of(&[]),
            Batching {
                wait: DEFAULT_BATCH_WAIT,
                min_messages: 4
            }
        );
        let redis = ["--redis", "redis://127.0.0.1:6379/0"];
        assert_eq!(batching_of(&redis).wait, Duration::ZERO);
        let asked = [&redis[..], &["--batch-wait", "100us", "--batch-after", "2"]].concat();
        assert_eq!(
            batching_of(&asked),
            Batching {
                wait: Duration::from_micros(100),
                min_messages: 2
            }
        );
        assert_eq!(batching_of(&["--batch-wait", "0s"]).wait, Duration::ZERO);
    }
}
