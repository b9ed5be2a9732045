//! HTTP side: the Socket.io layer plus admin endpoints on one listener, background upkeep, and
//! a graceful shutdown that stops accepting, disconnects every socket, then exits.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter};
use nsh_admin::{Readiness, ReadinessHandle};
use socketioxide::SocketIo;
use tokio::net::TcpListener;

use crate::config::{HttpLimits, RateLimit};
use crate::gate::SessionGate;
use crate::{Mesh, ServerConfig, dedup::Dedup, handlers, metrics::Metrics, registry::Registry};
use nsh_mesh_transport::keys::{KeyDir, KeyDirError};

/// How long shutdown waits for connections to close before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Keys(#[from] KeyDirError),
    #[error("cannot listen on {addr}: {source} (is another server using the port?)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("--redis: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot join the other replicas over Redis: {0}")]
    Adapter(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot start the connection threads: {0}")]
    Threads(#[source] std::io::Error),
    #[error("invalid limit: {0}")]
    Limit(String),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// The replicas' Redis adapter, on our reconnecting driver.
type ClusterAdapter = socketioxide_redis::CustomRedisAdapter<
    socketioxide::adapter::Emitter,
    crate::pubsub::ManagedDriver,
>;

/// The Socket.io server: one replica alone, or one of several over Redis.
#[derive(Debug, Clone)]
enum Io {
    Alone(SocketIo),
    Replica(SocketIo<ClusterAdapter>),
}

impl Io {
    async fn close(&self) {
        match self {
            Self::Alone(io) => io.close().await,
            Self::Replica(io) => io.close().await,
        }
    }

    /// Disconnects this replica's sockets whose tokens no longer hold.
    fn disconnect_revoked(&self, rekeyed_teams: &[String], now_unix: u64) -> usize {
        match self {
            Self::Alone(io) => crate::revocation::disconnect_revoked(io, rekeyed_teams, now_unix),
            Self::Replica(io) => crate::revocation::disconnect_revoked(io, rekeyed_teams, now_unix),
        }
    }

    /// Background work that needs the server: the cluster directory.
    fn spawn_directory(&self, mesh: &Arc<Mesh>) -> Option<tokio::task::JoinHandle<()>> {
        let (Self::Replica(io), Some(cluster)) = (self, &mesh.cluster) else {
            return None;
        };
        Some(tokio::spawn(crate::cluster::run(
            io.clone(),
            mesh.clone(),
            cluster.clone(),
        )))
    }
}

/// A bound, not yet running, mesh server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    mesh: Arc<Mesh>,
    io: Io,
    router: axum::Router,
    readiness: ReadinessHandle,
    key_reload_interval: Duration,
    http: HttpLimits,
    gate: Arc<SessionGate>,
    /// The admin endpoints' own listener, with their router.
    admin: Option<(TcpListener, axum::Router)>,
    /// The runtimes the connections run on.
    shards: nsh_admin::shards::Shards,
}

/// A token bucket for `rate`; `flag` names the setting in the error.
fn quota(rate: RateLimit, flag: &str) -> Result<Quota, ServerError> {
    let burst = NonZeroU32::new(rate.burst)
        .ok_or_else(|| ServerError::Limit(format!("{flag}: the burst must be at least 1")))?;
    if !(rate.per_second.is_finite() && rate.per_second > 0.0) {
        return Err(ServerError::Limit(format!(
            "{flag}: the rate must be positive"
        )));
    }
    Ok(
        Quota::with_period(Duration::from_secs_f64(1.0 / rate.per_second))
            .ok_or_else(|| ServerError::Limit(format!("{flag}: the rate is too high")))?
            .allow_burst(burst),
    )
}

async fn bind_listener(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

impl Server {
    /// Loads the team keys and binds the listener (port 0 picks a free one).
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        let keys = Arc::new(KeyDir::load(&config.team_keys_dir)?);
        let limits = config.limits.clone();
        let events = quota(limits.rate, "--rate-limit/--burst")?;
        let connects = quota(limits.connect_rate, "--connect-rate/--connect-burst")?;

        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let node = uuid::Uuid::new_v4().simple().to_string();
        let cluster = match &config.cluster_url {
            Some(url) => Some(Arc::new(
                crate::cluster::Cluster::connect(url, node.clone()).await?,
            )),
            None => None,
        };
        let mesh = Arc::new(Mesh {
            dedup: Dedup::new(limits.dedup_ids_per_sender, limits.dedup_window),
            limiter: RateLimiter::keyed(events),
            connect_limiter: RateLimiter::keyed(connects),
            presence: crate::presence::PresenceThrottle::new(limits.presence_interval),
            store: config
                .store
                .clone()
                .map(crate::store::Store::new)
                .transpose()?,
            deliverers: crate::durable::Deliverers::default(),
            registry: Registry::default(),
            keys,
            metrics,
            limits,
            node,
            cluster,
        });
        // Engine.IO caps frames below our own size check would see them; leave room so an
        // oversized message gets a `too_large` answer rather than a dropped connection.
        let frame_limit = (mesh.limits.max_message_bytes * 4).max(1 << 20);
        let mut builder = SocketIo::builder()
            .with_state(mesh.clone())
            .max_payload(frame_limit as u64)
            .ws_max_message_size(frame_limit)
            .connect_timeout(config.http.connect_timeout);
        if config.http.websocket_only {
            builder = builder.transports([socketioxide::TransportType::Websocket]);
        }
        let readiness = ReadinessHandle::new("starting");
        let registry = Arc::new(registry);
        let admin: axum::Router = nsh_admin::router(registry.clone(), readiness.clone());
        let admin_alone = match config.admin_listen {
            Some(addr) => Some((
                bind_listener(addr).await?,
                nsh_admin::router(registry, readiness.clone()),
            )),
            None => None,
        };
        let (router, io) = match &mesh.cluster {
            None => {
                let (layer, io) = builder.build_layer();
                handlers::register(&io);
                (admin.layer(layer), Io::Alone(io))
            }
            Some(cluster) => {
                // Cross-replica acks wait for every replica's answer; give them the ack timeout
                // plus a margin for the round trip through Redis.
                let adapter_config = socketioxide_redis::RedisAdapterConfig::new()
                    .with_prefix(crate::cluster::ADAPTER_PREFIX)
                    .with_request_timeout(mesh.limits.ack_timeout + Duration::from_secs(1));
                let ctr = socketioxide_redis::RedisAdapterCtr::new_with_driver(
                    cluster.driver(),
                    adapter_config,
                );
                let (layer, io) = builder.with_adapter::<ClusterAdapter>(ctr).build_layer();
                handlers::register(&io)
                    .await
                    .map_err(|e| ServerError::Adapter(Box::new(e)))?;
                (admin.layer(layer), Io::Replica(io))
            }
        };
        // Outermost: new sessions are counted before Engine.IO allocates anything for them.
        let gate = Arc::new(SessionGate::new(&config.http));
        let router = router.layer(axum::middleware::from_fn_with_state(
            gate.clone(),
            crate::gate::admit_new_sessions,
        ));
        let listener = bind_listener(config.listen).await?;
        let shards = match config.pinned_threads {
            0 => nsh_admin::shards::Shards::caller(),
            threads => nsh_admin::shards::Shards::start(threads, config.batching)
                .map_err(ServerError::Threads)?,
        };
        Ok(Self {
            listener,
            mesh,
            io,
            router,
            readiness,
            key_reload_interval: config.key_reload_interval,
            http: config.http,
            gate,
            admin: admin_alone,
            shards,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where the admin endpoints' own listener is, when `admin_listen` was set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then drains: stop accepting, disconnect every socket,
    /// wait (bounded) for connections to close.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let addr = self.local_addr();
        let upkeep = tokio::spawn(upkeep(
            self.mesh.clone(),
            self.io.clone(),
            self.gate.clone(),
            self.key_reload_interval,
        ));
        let redis_health = (self.mesh.store.is_some() || self.mesh.cluster.is_some())
            .then(|| tokio::spawn(watch_redis(self.mesh.clone(), self.readiness.clone())));
        let directory = self.io.spawn_directory(&self.mesh);
        let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve_limits = self.http.serve.fitted_to_descriptors();
        if serve_limits.max_connections < self.http.serve.max_connections {
            tracing::warn!(
                max_connections = serve_limits.max_connections,
                "connection cap lowered to fit this process's descriptor limit (ulimit -n)"
            );
        }
        // TCP_NODELAY inside: small frames (an envelope, then an ack) must not wait for
        // Nagle's algorithm and the peer's delayed ACK (~40 ms a hop).
        let (listener, router, shards) = (self.listener, self.router, self.shards);
        let threads = shards.count();
        let serve = async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            nsh_admin::serve::serve_on(listener, router, serve_limits, &shards, stopped).await
        };
        let mut serving = tokio::spawn(serve);
        let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
        if let Some((listener, router)) = self.admin {
            let admin_addr = listener.local_addr().ok();
            let mut admin_stopped = admin_stopped.clone();
            let limits = nsh_admin::serve::ServeLimits {
                max_connections: 256,
                ..serve_limits
            };
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = admin_stopped.wait_for(|stop| *stop).await;
                };
                if let Err(err) = nsh_admin::serve::serve(listener, router, limits, stopped).await {
                    tracing::warn!(%err, "admin endpoints stopped");
                }
            });
            tracing::info!(admin = ?admin_addr, "admin endpoints listening on their own address too");
        }
        if redis_health.is_none() {
            self.readiness.set(Readiness::Ready);
        }
        tracing::info!(%addr, node = %self.mesh.node, threads, teams = ?self.mesh.keys.teams(), persistence = self.mesh.store.is_some(), replicas_over_redis = self.mesh.cluster.is_some(), "mesh server listening");
        let background = [Some(upkeep), redis_health, directory];
        let stop_background = || {
            background
                .iter()
                .flatten()
                .for_each(tokio::task::JoinHandle::abort);
        };

        tokio::select! {
            () = shutdown => {}
            result = &mut serving => {
                stop_background();
                let _ = stop_admin.send(true);
                return result.map_err(|e| ServerError::Serve(std::io::Error::other(e)))?.map_err(ServerError::Serve);
            }
        }
        tracing::info!(
            connections = self.mesh.registry.connection_count(&self.mesh.node),
            "shutting down: draining"
        );
        self.readiness
            .set(Readiness::NotReady("shutting down".into()));
        let _ = stop_accepting.send(());
        self.io.close().await;
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, serving).await;
        if let Some(cluster) = &self.mesh.cluster {
            // Let the disconnects just published go out before saying goodbye.
            tokio::time::sleep(Duration::from_millis(100)).await;
            crate::cluster::leave(cluster).await;
        }
        stop_background();
        let _ = stop_admin.send(true);
        match drained {
            Ok(result) => result
                .map_err(|e| ServerError::Serve(std::io::Error::other(e)))?
                .map_err(ServerError::Serve)?,
            Err(_) => {
                tracing::warn!(timeout = ?DRAIN_TIMEOUT, "connections still open after drain timeout; exiting anyway");
            }
        }
        tracing::info!("mesh server stopped");
        Ok(())
    }
}

/// Periodic work: reload team keys and disconnect the sockets whose tokens no longer hold,
/// expire dedup windows, idle rate-limit buckets and settled presence.
async fn upkeep(mesh: Arc<Mesh>, io: Io, gate: Arc<SessionGate>, key_reload_interval: Duration) {
    let mut ticker = tokio::time::interval(key_reload_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut rekeyed = Vec::new();
        match mesh.keys.reload() {
            Ok(report) => {
                if !(report.added.is_empty()
                    && report.changed.is_empty()
                    && report.removed.is_empty())
                {
                    tracing::info!(added = ?report.added, changed = ?report.changed, removed = ?report.removed, "team keys reloaded");
                }
                for skipped in report.skipped {
                    tracing::debug!(%skipped, "team key skipped");
                }
                rekeyed = [report.changed, report.removed].concat();
            }
            Err(err) => tracing::warn!(%err, "team keys not reloaded; keeping the previous set"),
        }
        let revoked = io.disconnect_revoked(&rekeyed, nsh_mesh_transport::token::now_unix());
        if revoked > 0 {
            tracing::info!(revoked, "disconnected sockets whose tokens no longer hold");
        }
        let now = Instant::now();
        mesh.dedup.prune(now);
        mesh.limiter.retain_recent();
        mesh.connect_limiter.retain_recent();
        mesh.presence.prune(now);
        gate.prune();
    }
}

/// How often the message store is checked, and (every `SWEEP_EVERY` checks) trimmed.
const STORE_CHECK: Duration = Duration::from_secs(2);
const SWEEP_EVERY: u32 = 30;

/// `/readyz` follows Redis (the message store, the other replicas): ready while it answers,
/// degraded (still serving this replica's live traffic) while it does not. Also applies the
/// retention age.
async fn watch_redis(mesh: Arc<Mesh>, readiness: ReadinessHandle) {
    let mut ticker = tokio::time::interval(STORE_CHECK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    let mut was_up = None;
    loop {
        ticker.tick().await;
        let up = match (&mesh.store, &mesh.cluster) {
            (Some(store), _) => store.ping().await.map_err(|e| e.to_string()),
            (None, Some(cluster)) => cluster.ping().await,
            (None, None) => return,
        };
        match (&up, was_up) {
            (Ok(()), Some(false) | None) => {
                tracing::info!("Redis reachable");
                readiness.set(Readiness::Ready);
            }
            (Err(err), Some(true) | None) => {
                tracing::warn!(%err, "Redis unreachable: this replica's live traffic only");
                readiness.set(Readiness::Degraded(err.clone()));
            }
            _ => {}
        }
        was_up = Some(up.is_ok());
        ticks = ticks.wrapping_add(1);
        if let Some(store) = &mesh.store
            && up.is_ok()
            && ticks.is_multiple_of(SWEEP_EVERY)
        {
            match store.sweep().await {
                Ok(0) => {}
                Ok(trimmed) => tracing::info!(trimmed, "retention: old messages trimmed"),
                Err(err) => tracing::debug!(%err, "retention sweep failed"),
            }
        }
    }
}
