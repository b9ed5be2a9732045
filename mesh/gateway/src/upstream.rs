//! One MCP server behind the gateway, kept connected by a supervisor task: it connects (a
//! child process for `command`, streamable HTTP for `url`), reads the server's tools, prompts
//! and resources with a deadline, re-reads them on `list_changed`, pings an HTTP server to
//! notice that it went away, and reconnects with backoff. A dead upstream takes nothing else
//! down: its entries leave the catalog and callers get `list_changed`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use nsh_gateway_config::{Upstream, expand_env};
use rmcp::model::{
    ClientCapabilities, ClientConfig, Implementation, ProgressNotificationParam, Prompt, Resource,
    ResourceTemplate, Tool,
};
use rmcp::service::{NotificationContext, Peer, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt as _};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::progress::ProgressRoutes;

/// What a connected upstream offers, read at connect and on each `list_changed`.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub tools: Vec<Tool>,
    pub prompts: Vec<Prompt>,
    pub resources: Vec<Resource>,
    pub resource_templates: Vec<ResourceTemplate>,
}

/// A live connection and what it offers.
#[derive(Debug)]
pub struct Live {
    pub peer: Peer<RoleClient>,
    pub catalog: Catalog,
}

/// One upstream as the rest of the gateway sees it.
#[derive(Debug)]
pub struct UpstreamHandle {
    pub spec: Upstream,
    live: ArcSwapOption<Live>,
    /// Calls in flight, bounded across every caller.
    pub slots: Arc<Semaphore>,
    /// Whether it ever answered (readiness) and is up now (health).
    answered: std::sync::atomic::AtomicBool,
    stop: CancellationToken,
}

impl UpstreamHandle {
    pub fn live(&self) -> Option<Arc<Live>> {
        self.live.load_full()
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn ever_answered(&self) -> bool {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the supervisor, which closes the connection (and ends a child process).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// What the supervisor tells the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The upstream's catalog changed (connected, re-listed, or gone).
    CatalogChanged,
}

/// Starts the supervisor of `spec`; `events` hears every catalog change.
pub fn start(
    spec: Upstream,
    concurrency: u32,
    progress: Arc<ProgressRoutes>,
    events: mpsc::UnboundedSender<Event>,
) -> Arc<UpstreamHandle> {
    let handle = Arc::new(UpstreamHandle {
        spec,
        live: ArcSwapOption::empty(),
        slots: Arc::new(Semaphore::new(concurrency as usize)),
        answered: false.into(),
        stop: CancellationToken::new(),
    });
    tokio::spawn(supervise(handle.clone(), progress, events));
    handle
}

/// The upstream side's MCP client: no sampling, elicitation or roots (the gateway cannot tie
/// such a request to one of its callers), and notifications routed back.
#[derive(Debug, Clone)]
struct Events {
    upstream: String,
    relist: mpsc::Sender<()>,
    progress: Arc<ProgressRoutes>,
}

impl ClientHandler for Events {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("nsh-gateway", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        let _ = self.relist.try_send(());
    }

    async fn on_prompt_list_changed(&self, _: NotificationContext<RoleClient>) {
        let _ = self.relist.try_send(());
    }

    async fn on_resource_list_changed(&self, _: NotificationContext<RoleClient>) {
        let _ = self.relist.try_send(());
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.progress.forward(&self.upstream, params).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("header {name}: {source}")]
    Header {
        name: String,
        source: nsh_gateway_config::MissingVariable,
    },
    #[error(
        "header {0}: valueFrom.secretKeyRef is resolved by the operator in Kubernetes; locally use value: ${{ENV}}"
    )]
    SecretOutsideCluster(String),
    #[error("header {0} is not a valid HTTP header")]
    BadHeader(String),
    #[error("MCP handshake failed: {0}")]
    Handshake(String),
}

type Client = RunningService<RoleClient, Events>;

/// The `nsh` binary that runs stdio servers through `nsh mcp run-once`, when set.
static SHARED_THROUGH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// How long a server the gateway shared stays up once the gateway has let go of it.
const SHARED_IDLE: &str = "3s";

/// From now on, `command` upstreams run through `nsh mcp run-once` (this `nsh`): the MCP
/// daemon owns the server (one per command, shared with any local client that runs the same,
/// restarted with backoff, and killed with the daemon), and the gateway holds a thin bridge.
pub fn share_stdio_servers_through(nsh: std::path::PathBuf) {
    let _ = SHARED_THROUGH.set(nsh);
}

fn stdio_process(command: &nsh_gateway_config::Command) -> tokio::process::Command {
    let Some(nsh) = SHARED_THROUGH.get() else {
        let mut process = tokio::process::Command::new(&command.command);
        process.args(&command.args);
        return process;
    };
    let mut process = tokio::process::Command::new(nsh);
    process.args(["mcp", "run-once", "--idle-timeout", SHARED_IDLE]);
    // The server's environment makes it a different server (a token, a project).
    for name in command.env.keys() {
        process.args(["--env", name]);
    }
    process.arg("--").arg(&command.command).args(&command.args);
    process
}

async fn connect(spec: &Upstream, events: Events) -> Result<Client, ConnectError> {
    if let Some(command) = &spec.command {
        let mut process = stdio_process(command);
        process.envs(&command.env);
        // The server's own log lines go to the gateway's stderr, not its stdout.
        process.stderr(std::process::Stdio::inherit());
        let transport = rmcp::transport::TokioChildProcess::new(process).map_err(|source| {
            ConnectError::Spawn {
                command: command.command.clone(),
                source,
            }
        })?;
        return events
            .serve(transport)
            .await
            .map_err(|e| ConnectError::Handshake(e.to_string()));
    }
    let url = spec.url.as_deref().unwrap_or_default();
    let mut config =
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(url);
    config.max_concurrent_requests = 256;
    for header in &spec.headers {
        let value = match (&header.value, &header.value_from) {
            (Some(value), _) => {
                expand_env(value, |name| std::env::var(name).ok()).map_err(|source| {
                    ConnectError::Header {
                        name: header.name.clone(),
                        source,
                    }
                })?
            }
            _ => return Err(ConnectError::SecretOutsideCluster(header.name.clone())),
        };
        let name = http::HeaderName::try_from(header.name.as_str())
            .map_err(|_| ConnectError::BadHeader(header.name.clone()))?;
        let value = http::HeaderValue::try_from(value)
            .map_err(|_| ConnectError::BadHeader(header.name.clone()))?;
        config.custom_headers.insert(name, value);
    }
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(config);
    events
        .serve(transport)
        .await
        .map_err(|e| ConnectError::Handshake(e.to_string()))
}

/// Reads what the upstream offers; what the server does not support stays empty.
async fn read_catalog(peer: &Peer<RoleClient>, deadline: Duration) -> Result<Catalog, String> {
    let capabilities = peer
        .peer_info()
        .map(|info| info.capabilities.clone())
        .unwrap_or_default();
    let work = async {
        let mut catalog = Catalog::default();
        if capabilities.tools.is_some() {
            catalog.tools = peer.list_all_tools().await.map_err(|e| e.to_string())?;
        }
        if capabilities.prompts.is_some() {
            catalog.prompts = peer.list_all_prompts().await.map_err(|e| e.to_string())?;
        }
        if capabilities.resources.is_some() {
            catalog.resources = peer.list_all_resources().await.map_err(|e| e.to_string())?;
            catalog.resource_templates =
                peer.list_all_resource_templates().await.unwrap_or_default();
        }
        Ok(catalog)
    };
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| format!("listing took longer than {deadline:?}"))?
}

const PING_EVERY: Duration = Duration::from_secs(5);

async fn supervise(
    handle: Arc<UpstreamHandle>,
    progress: Arc<ProgressRoutes>,
    events: mpsc::UnboundedSender<Event>,
) {
    let name = handle.spec.name.clone();
    let mut backoff = nsh_mcp_daemon::upstream::restart_backoff();
    loop {
        let (relist_tx, mut relist) = mpsc::channel(1);
        let handler = Events {
            upstream: name.clone(),
            relist: relist_tx,
            progress: progress.clone(),
        };
        let connected = tokio::select! {
            connected = connect(&handle.spec, handler) => connected,
            () = handle.stop.cancelled() => return,
        };
        match connected {
            Ok(client) => {
                let peer = client.peer().clone();
                match read_catalog(&peer, handle.spec.list_timeout()).await {
                    Ok(catalog) => {
                        tracing::info!(upstream = %name, tools = catalog.tools.len(), "upstream connected");
                        backoff = nsh_mcp_daemon::upstream::restart_backoff();
                        handle
                            .answered
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        handle.live.store(Some(Arc::new(Live {
                            peer: peer.clone(),
                            catalog,
                        })));
                        let _ = events.send(Event::CatalogChanged);
                        serve_connection(&handle, client, &mut relist, &events).await;
                    }
                    Err(why) => {
                        tracing::warn!(upstream = %name, %why, "upstream answered the handshake but not its listing");
                        let _ = client.cancel().await;
                    }
                }
                if handle.live.swap(None).is_some() {
                    let _ = events.send(Event::CatalogChanged);
                }
            }
            Err(err) => tracing::warn!(upstream = %name, %err, "cannot connect to upstream"),
        }
        let wait = backoff.next().unwrap_or(Duration::from_secs(30));
        tracing::info!(upstream = %name, retry_in = ?wait, "upstream down");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = handle.stop.cancelled() => return,
        }
    }
}

/// Until the connection ends: re-list on `list_changed`, ping an HTTP upstream (a stdio
/// child's exit closes the transport by itself).
async fn serve_connection(
    handle: &UpstreamHandle,
    client: Client,
    relist: &mut mpsc::Receiver<()>,
    events: &mpsc::UnboundedSender<Event>,
) {
    let name = &handle.spec.name;
    let peer = client.peer().clone();
    // The service loop ends by itself when a child exits; its sender closes then.
    let mut check = tokio::time::interval(Duration::from_millis(250));
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let ping_http = handle.spec.url.is_some();
    loop {
        tokio::select! {
            _ = check.tick() => if peer.is_transport_closed() {
                tracing::warn!(upstream = %name, "upstream closed its connection");
                break;
            },
            () = handle.stop.cancelled() => break,
            Some(()) = relist.recv() => {
                match read_catalog(&peer, handle.spec.list_timeout()).await {
                    Ok(catalog) => {
                        handle.live.store(Some(Arc::new(Live { peer: peer.clone(), catalog })));
                        let _ = events.send(Event::CatalogChanged);
                    }
                    Err(why) => tracing::warn!(upstream = %name, %why, "re-listing failed; keeping the last catalog"),
                }
            }
            _ = ping.tick(), if ping_http => {
                let alive = tokio::time::timeout(PING_EVERY, peer.send_request(
                    rmcp::model::ClientRequest::PingRequest(rmcp::model::PingRequest::default()),
                )).await;
                if !matches!(alive, Ok(Ok(_))) {
                    tracing::warn!(upstream = %name, "upstream stopped answering pings");
                    break;
                }
            }
        }
    }
    let _ = client.cancel().await;
}
