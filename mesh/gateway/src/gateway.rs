//! The gateway's shared state: the configuration in force, the upstreams, the merged catalog,
//! the limits, the audit log and the pins. Sessions (the MCP face, `front`) read it; the
//! upstream supervisors and the config reloader change it.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use nsh_gateway_config::{Caller, GatewayPolicy};
use tokio::sync::{broadcast, mpsc};

use crate::audit::AuditLog;
use crate::catalog::{self, Index, Naming, Pinning};
use crate::metrics::{Metrics, UpstreamLabels};
use crate::pins::Pins;
use crate::progress::ProgressRoutes;
use crate::upstream::{self, Event, UpstreamHandle};

/// What changed, for callers' `list_changed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListChanged;

/// The policy in force and what is built from it.
#[derive(Debug)]
pub struct Policy {
    pub spec: GatewayPolicy,
    pub limiter: DefaultKeyedRateLimiter<Caller>,
}

#[derive(Debug, thiserror::Error)]
#[error("rateLimit: {0}")]
pub struct LimitError(String);

impl Policy {
    pub fn new(spec: GatewayPolicy) -> Result<Self, LimitError> {
        let rate: nsh_contract::rate::Rate = spec
            .rate_limit
            .rate
            .parse()
            .map_err(|e: nsh_contract::rate::RateParseError| LimitError(e.to_string()))?;
        let burst = NonZeroU32::new(spec.rate_limit.burst)
            .ok_or_else(|| LimitError("burst must be at least 1".into()))?;
        let quota = Quota::with_period(Duration::from_secs_f64(1.0 / rate.0))
            .ok_or_else(|| LimitError("the rate is too high".into()))?
            .allow_burst(burst);
        Ok(Self {
            spec,
            limiter: RateLimiter::keyed(quota),
        })
    }
}

#[derive(Debug)]
pub struct Gateway {
    pub naming: Naming,
    pub policy: ArcSwap<Policy>,
    pub upstreams: ArcSwap<Vec<Arc<UpstreamHandle>>>,
    pub index: ArcSwap<Index>,
    pub changes: broadcast::Sender<ListChanged>,
    pub progress: Arc<ProgressRoutes>,
    pub audit: ArcSwap<AuditLog>,
    pub pins: Pins,
    pub metrics: Metrics,
    events: mpsc::UnboundedSender<Event>,
}

impl Gateway {
    /// Starts every upstream of `policy`; the catalog fills as they answer.
    pub fn start(
        policy: Policy,
        naming: Naming,
        pins_file: Option<PathBuf>,
        metrics: Metrics,
    ) -> std::io::Result<Arc<Self>> {
        let (events, mut event_rx) = mpsc::unbounded_channel();
        let progress = Arc::new(ProgressRoutes::default());
        let audit = AuditLog::open(&policy.spec.audit)?;
        let upstreams = policy
            .spec
            .upstreams
            .iter()
            .map(|spec| {
                upstream::start(
                    spec.clone(),
                    policy.spec.rate_limit.upstream_concurrency,
                    progress.clone(),
                    events.clone(),
                )
            })
            .collect();
        let gateway = Arc::new(Self {
            naming,
            policy: ArcSwap::from_pointee(policy),
            upstreams: ArcSwap::from_pointee(upstreams),
            index: ArcSwap::from_pointee(Index::default()),
            changes: broadcast::channel(16).0,
            progress,
            audit: ArcSwap::from_pointee(audit),
            pins: Pins::load(pins_file),
            metrics,
            events,
        });
        // Rebuilds the catalog as upstreams come and go; ends with the gateway.
        let weak = Arc::downgrade(&gateway);
        tokio::spawn(async move {
            while let Some(Event::CatalogChanged) = event_rx.recv().await {
                // Coalesce a burst of changes into one rebuild.
                while event_rx.try_recv().is_ok() {}
                let Some(gateway) = weak.upgrade() else {
                    return;
                };
                gateway.rebuild();
            }
        });
        Ok(gateway)
    }

    /// Rebuilds the merged catalog and tells every caller its lists changed.
    pub fn rebuild(&self) {
        let upstreams = self.upstreams.load();
        let policy = self.policy.load();
        let audit = self.audit.load();
        let pinning = policy.spec.pin_tools.then(|| Pinning {
            pins: &self.pins,
            approved: &policy.spec.pinned_tools,
            audit: &audit,
            metrics: &self.metrics,
        });
        let index = catalog::build(&upstreams, self.naming, pinning);
        for upstream in upstreams.iter() {
            self.metrics
                .upstream_up
                .get_or_create(&UpstreamLabels {
                    upstream: upstream.name().to_owned(),
                })
                .set(i64::from(upstream.live().is_some()));
        }
        self.index.store(Arc::new(index));
        let _ = self.changes.send(ListChanged);
    }

    /// Puts a new policy in force: upstreams whose spec changed are restarted, new ones
    /// started, removed ones stopped; the rest keep their connections.
    pub fn apply(&self, policy: Policy) -> std::io::Result<()> {
        if policy.spec.audit != self.policy.load().spec.audit {
            self.audit
                .store(Arc::new(AuditLog::open(&policy.spec.audit)?));
        }
        let old = self.upstreams.load_full();
        let mut kept = Vec::new();
        for spec in &policy.spec.upstreams {
            match old.iter().find(|u| &u.spec == spec) {
                Some(same) => kept.push(same.clone()),
                None => kept.push(upstream::start(
                    spec.clone(),
                    policy.spec.rate_limit.upstream_concurrency,
                    self.progress.clone(),
                    self.events.clone(),
                )),
            }
        }
        for gone in old
            .iter()
            .filter(|u| !kept.iter().any(|k| Arc::ptr_eq(k, u)))
        {
            tracing::info!(upstream = %gone.name(), "upstream removed or changed; stopping it");
            gone.stop();
        }
        self.upstreams.store(Arc::new(kept));
        self.policy.store(Arc::new(policy));
        self.rebuild();
        Ok(())
    }

    /// Required upstreams that never answered, for `/readyz`; and those down now.
    pub fn health(&self) -> (Vec<String>, Vec<String>) {
        let upstreams = self.upstreams.load();
        let waiting = upstreams
            .iter()
            .filter(|u| u.spec.required && !u.ever_answered())
            .map(|u| u.name().to_owned())
            .collect();
        let down = upstreams
            .iter()
            .filter(|u| u.live().is_none())
            .map(|u| u.name().to_owned())
            .collect();
        (waiting, down)
    }

    /// Upstreams connected now.
    pub fn answering(&self) -> Vec<String> {
        self.upstreams
            .load()
            .iter()
            .filter(|u| u.live().is_some())
            .map(|u| u.name().to_owned())
            .collect()
    }

    /// Current hashes of every tool of every connected upstream, by exposed name.
    pub fn current_hashes(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for upstream in self.upstreams.load().iter() {
            if let Some(live) = upstream.live() {
                for tool in &live.catalog.tools {
                    out.insert(
                        self.naming.name(upstream.name(), &tool.name),
                        crate::pins::hash(tool),
                    );
                }
            }
        }
        out
    }

    /// Stops every upstream (children exit with their connection).
    pub fn shutdown(&self) {
        for upstream in self.upstreams.load().iter() {
            upstream.stop();
        }
    }
}
