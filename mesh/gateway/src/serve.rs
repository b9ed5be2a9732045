//! The gateway's fronts: streamable HTTP at `/mcp` (both the sessionful and the stateless
//! protocol revisions rmcp serves) beside `/healthz`, `/readyz`, `/metrics` and `/status`; and
//! stdio for one local client. Also the config reloader (the old config stays in force when a
//! new one is refused) and readiness (ready once every required upstream answered).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use nsh_admin::{Readiness, ReadinessHandle};
use nsh_gateway_config::{Caller, ConfigError, GatewayConfig};
use nsh_mesh_transport::keys::KeyDir;
use prometheus_client::registry::Registry;
use rmcp::ServiceExt as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::auth::{Admission, Auth};
use crate::catalog::Naming;
use crate::front::Front;
use crate::gateway::{Gateway, Policy};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Limit(#[from] crate::gateway::LimitError),
    #[error("teamKeysDir: {0}")]
    Keys(#[from] nsh_mesh_transport::keys::KeyDirError),
    #[error(
        "teamKeysDir: the HTTP front needs team keys to verify callers; set it to the folder of key files (one per team, as `nsh mesh keygen --out DIR/TEAM` writes)"
    )]
    NoKeys,
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("audit.file: {0}")]
    Audit(std::io::Error),
    #[error("MCP over stdio: {0}")]
    Stdio(String),
}

/// How often the config file and the pins file are re-read.
const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// How often team keys are re-read (Secret volumes swap a symlink; polling sees it).
const KEYS_EVERY: Duration = Duration::from_secs(10);

fn start_gateway(
    config: &GatewayConfig,
    path: &Path,
    registry: &mut Registry,
) -> Result<Arc<Gateway>, GatewayError> {
    let policy = Policy::new(config.policy.clone())?;
    let metrics = Metrics::register(registry);
    Gateway::start(
        policy,
        Naming::Prefixed,
        Some(config.pins_path(path)),
        metrics,
    )
    .map_err(GatewayError::Audit)
}

/// `nsh gateway run --config FILE`: serves until `shutdown` resolves.
pub async fn run_http(
    path: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let config = GatewayConfig::load(&path)?;
    let keys_dir = config
        .team_keys_dir
        .as_deref()
        .ok_or(GatewayError::NoKeys)?;
    let keys_dir = path.parent().unwrap_or(Path::new(".")).join(keys_dir);
    let keys = Arc::new(KeyDir::load(keys_dir)?);
    let mut registry = Registry::default();
    let gateway = start_gateway(&config, &path, &mut registry)?;
    let auth = Arc::new(Auth {
        keys: keys.clone(),
        admission: ArcSwap::from_pointee(Admission {
            audience: config.audience.clone(),
            teams: config.teams.clone(),
        }),
    });
    let readiness = ReadinessHandle::new("connecting to upstreams");
    tokio::spawn(follow_health(gateway.clone(), readiness.clone()));
    tokio::spawn(reload(
        path.clone(),
        config.clone(),
        gateway.clone(),
        Some(auth.clone()),
    ));
    tokio::spawn(reload_keys(keys));

    let mut http = StreamableHttpServerConfig::default();
    // Sessions for the 2025-11-25 revision (list_changed on the session's stream); the
    // 2026-07-28 revision is served statelessly whatever this says.
    http.legacy_session_mode = true;
    // Callers prove who they are with a token, so the Host allow-list (a guard for
    // unauthenticated local servers against DNS rebinding) would only refuse Service names.
    http = http.disable_allowed_hosts();
    let front_gateway = gateway.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(Front::new(front_gateway.clone(), None)),
        Arc::new(LocalSessionManager::default()),
        http,
    );
    let status_gateway = gateway.clone();
    let router = axum::Router::new()
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::authenticate,
        ))
        .route(
            "/status",
            axum::routing::get(move || {
                let gateway = status_gateway.clone();
                async move { axum::Json(status(&gateway)) }
            }),
        )
        .merge(nsh_admin::router(Arc::new(registry), readiness));
    let listener = bind(&config.listen).await?;
    tracing::info!(
        mcp = %mcp_url(&listener),
        audience = %config.audience,
        teams = ?config.teams,
        upstreams = config.policy.upstreams.len(),
        "gateway listening"
    );
    serve_until(listener, router, &gateway, shutdown).await
}

async fn bind(addr: &str) -> Result<tokio::net::TcpListener, GatewayError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Listen {
            addr: addr.to_owned(),
            source,
        })
}

fn mcp_url(listener: &tokio::net::TcpListener) -> String {
    listener
        .local_addr()
        .map(|local| format!("http://{local}/mcp"))
        .unwrap_or_default()
}

/// Serves `router` with the admin crate's bounded accept loop until `shutdown`, then stops the
/// upstreams (children exit with their connections).
async fn serve_until(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    gateway: &Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let served = nsh_admin::serve::serve(
        listener,
        router,
        nsh_admin::serve::ServeLimits::default().fitted_to_descriptors(),
        shutdown,
    )
    .await;
    gateway.shutdown();
    served.map_err(|source| GatewayError::Listen { addr, source })
}

/// What `/status` reports (the operator puts `answering` in the McpGateway's status).
#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub answering: Vec<String>,
    pub waiting: Vec<String>,
    pub down: Vec<String>,
    pub tools: usize,
    /// Pinned tools hidden because their upstream changed them, with the new hash (put it in
    /// `pinnedTools` to approve the change).
    pub hidden_changed: std::collections::BTreeMap<String, String>,
}

fn status(gateway: &Gateway) -> Status {
    let (waiting, down) = gateway.health();
    let index = gateway.index.load();
    Status {
        answering: gateway.answering(),
        waiting,
        down,
        tools: index.tools.len(),
        hidden_changed: index.changed.clone().into_iter().collect(),
    }
}

/// `nsh gateway stdio --config FILE`: one local client on stdin/stdout, trusted as `caller`.
pub async fn run_stdio(path: PathBuf, caller: Caller) -> Result<(), GatewayError> {
    let config = GatewayConfig::load(&path)?;
    let mut registry = Registry::default();
    let gateway = start_gateway(&config, &path, &mut registry)?;
    tokio::spawn(reload(path, config, gateway.clone(), None));
    // Answer `initialize` with whatever is connected after a short wait, not an empty list.
    wait_for_required(&gateway, Duration::from_secs(10)).await;
    let service = Front::new(gateway.clone(), Some(caller))
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| GatewayError::Stdio(e.to_string()))?;
    let ended = service.waiting().await;
    gateway.shutdown();
    ended
        .map(|_| ())
        .map_err(|e| GatewayError::Stdio(e.to_string()))
}

async fn wait_for_required(gateway: &Gateway, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline && !gateway.health().0.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/readyz`: not ready until every required upstream answered once; degraded while one is
/// down (the others keep serving).
async fn follow_health(gateway: Arc<Gateway>, readiness: ReadinessHandle) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let (waiting, down) = gateway.health();
        readiness.set(if !waiting.is_empty() {
            Readiness::NotReady(format!("waiting for upstream(s) {}", waiting.join(", ")))
        } else if !down.is_empty() {
            Readiness::Degraded(format!("upstream(s) down: {}", down.join(", ")))
        } else {
            Readiness::Ready
        });
    }
}

async fn reload_keys(keys: Arc<KeyDir>) {
    let mut tick = tokio::time::interval(KEYS_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        match keys.reload() {
            Ok(report) if report != Default::default() => {
                tracing::info!(added = ?report.added, changed = ?report.changed, removed = ?report.removed, skipped = ?report.skipped, "team keys reloaded");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "team keys not reloaded; the previous keys stay"),
        }
    }
}

/// Re-reads the config (and pins) file; a refused file leaves the old config in force.
async fn reload(
    path: PathBuf,
    mut current: GatewayConfig,
    gateway: Arc<Gateway>,
    auth: Option<Arc<Auth>>,
) {
    let mut last_text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        if gateway.pins.reload() {
            tracing::info!("tool pins reloaded");
            gateway.rebuild();
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if text == last_text {
            continue;
        }
        last_text = text.clone();
        let fresh = match GatewayConfig::parse(&path, &text) {
            Ok(fresh) => fresh,
            Err(err) => {
                gateway.metrics.reload_failures.inc();
                tracing::error!(error = %err.in_file(&path), "config refused; the previous one stays in force");
                continue;
            }
        };
        let policy = match Policy::new(fresh.policy.clone()) {
            Ok(policy) => policy,
            Err(err) => {
                gateway.metrics.reload_failures.inc();
                tracing::error!(%err, "config refused; the previous one stays in force");
                continue;
            }
        };
        if fresh.listen != current.listen || fresh.team_keys_dir != current.team_keys_dir {
            tracing::warn!("listen and teamKeysDir apply at the next start");
        }
        if let Err(err) = gateway.apply(policy) {
            gateway.metrics.reload_failures.inc();
            tracing::error!(%err, "config refused; the previous one stays in force");
            continue;
        }
        if let Some(auth) = &auth {
            auth.admission.store(Arc::new(Admission {
                audience: fresh.audience.clone(),
                teams: fresh.teams.clone(),
            }));
        }
        tracing::info!(upstreams = fresh.policy.upstreams.len(), "config reloaded");
        current = fresh;
    }
}

/// Connects to every upstream of the config at `path` and returns the current hash of each
/// tool, by exposed name (for `nsh gateway pins`).
pub async fn current_pins(
    path: &Path,
    wait: Duration,
) -> Result<std::collections::BTreeMap<String, String>, GatewayError> {
    let mut config = GatewayConfig::load(path)?;
    config.policy.audit.enabled = false;
    config.policy.pin_tools = false;
    let mut registry = Registry::default();
    let gateway = start_gateway(&config, path, &mut registry)?;
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline
        && gateway.answering().len() < config.policy.upstreams.len()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hashes = gateway.current_hashes();
    gateway.shutdown();
    Ok(hashes)
}

/// `nsh mcp daemon serve --listen ADDR -- COMMAND…`: one stdio server, started once, shared by
/// every HTTP session (rmcp gives each upstream request its own id, so sessions never get
/// each other's answers). Names are left as the server gives them; no auth (it listens on
/// loopback inside a pod, for the gateway beside it), no policy, no audit.
pub async fn run_shared_stdio(
    listen: SocketAddr,
    name: String,
    command: nsh_gateway_config::Command,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let policy = nsh_gateway_config::GatewayPolicy {
        upstreams: vec![nsh_gateway_config::Upstream {
            name,
            url: None,
            headers: Vec::new(),
            command: Some(command),
            required: true,
            list_timeout: None,
            call_timeout: None,
        }],
        audit: nsh_gateway_config::Audit {
            enabled: false,
            ..Default::default()
        },
        // Limits are the gateway's business; here only the upstream's concurrency bound.
        rate_limit: nsh_gateway_config::RateLimit {
            rate: "1000000/s".into(),
            burst: 1_000_000,
            upstream_concurrency: 1024,
        },
        ..Default::default()
    };
    let mut registry = Registry::default();
    let gateway = Gateway::start(
        Policy::new(policy)?,
        Naming::AsIs,
        None,
        Metrics::register(&mut registry),
    )
    .map_err(GatewayError::Audit)?;
    let readiness = ReadinessHandle::new("starting the server");
    tokio::spawn(follow_health(gateway.clone(), readiness.clone()));
    let mut http = StreamableHttpServerConfig::default();
    http.legacy_session_mode = true;
    let front_gateway = gateway.clone();
    let local_caller = Caller {
        team: "local".into(),
        agent: "local".into(),
    };
    let mcp = StreamableHttpService::new(
        move || {
            Ok(Front::new(
                front_gateway.clone(),
                Some(local_caller.clone()),
            ))
        },
        Arc::new(LocalSessionManager::default()),
        http,
    );
    let router = axum::Router::new()
        .nest_service("/mcp", mcp)
        .merge(nsh_admin::router(Arc::new(registry), readiness));
    let listener = bind(&listen.to_string()).await?;
    tracing::info!(mcp = %mcp_url(&listener), "shared MCP server listening");
    serve_until(listener, router, &gateway, shutdown).await
}
