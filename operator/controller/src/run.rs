//! Runs every controller until `shutdown` resolves.

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt as _};
use nsh_operator_api::{Agent, McpGateway, MeshServer, Team};
use tracing::Instrument as _;

use crate::apply::Kind;
use crate::{Context, Error, agent, gateway, mesh_server, team, token_request};

/// How long the Agent controller lets related changes pile up before reconciling once.
const AGENT_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(500);
/// Agent reconciles in flight at once: unbounded, a thousand new Agents open a thousand
/// connections to the apiserver at once, which costs memory and gains no speed on a small
/// control plane.
const AGENT_CONCURRENCY: u16 = 16;

fn owned() -> watcher::Config {
    // Only what the operator created: never watch every Secret in the cluster.
    watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        crate::apply::FIELD_MANAGER
    ))
}

/// Invalid specs wait for an edit, the rest retries; both are logged.
fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    _ctx: Arc<Context>,
) -> Action {
    tracing::warn!(kind = %K::kind(&()), name = %object.name_any(), namespace = ?object.namespace(), %error, "reconcile failed");
    error.requeue()
}

/// Publishes a Warning event for a failed reconcile (best effort: events are advisory).
async fn report<K: Resource<DynamicType = ()>>(ctx: &Context, object: &K, error: &Error) {
    let event = Event {
        type_: EventType::Warning,
        reason: error.event_reason().into(),
        note: Some(error.to_string()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        tracing::debug!(%err, "could not publish event");
    }
}

/// The cached objects that reference `target` (same namespace, `reference` names it): what
/// to reconcile again when `target` changes.
fn referrers<K, T>(store: &Store<K>, target: &T, reference: fn(&K) -> &str) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    T: Resource,
{
    let (name, namespace) = (target.name_any(), target.namespace());
    store
        .state()
        .into_iter()
        .filter(|k| reference(k) == name && k.namespace() == namespace)
        .map(|k| ObjectRef::from_obj(k.as_ref()))
        .collect()
}

/// What an instrumented reconcile returns.
type ReconcileFuture = std::pin::Pin<Box<dyn Future<Output = crate::Result<Action>> + Send>>;

/// Wraps a reconcile with what every kind gets: a tracing span naming the object, duration
/// and outcome metrics, and a Warning event when it fails.
fn instrumented<K, F, Fut>(
    kind: &'static str,
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<Context>) -> ReconcileFuture
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = crate::Result<Action>> + Send + 'static,
{
    move |object, ctx| {
        let span = tracing::info_span!(
            "reconcile",
            kind,
            namespace = object.namespace().unwrap_or_default(),
            name = object.name_any(),
        );
        Box::pin(
            async move {
                let started = std::time::Instant::now();
                let result = reconcile(object.clone(), ctx.clone()).await;
                ctx.metrics
                    .observe(kind, started.elapsed().as_secs_f64(), result.is_err());
                if let Err(err) = &result {
                    report(&ctx, object.as_ref(), err).await;
                }
                result
            }
            .instrument(span),
        )
    }
}

/// `controller` watching every kind in `kinds` that its reconcile owns (the kind's `OWNS`).
fn owning<K>(mut controller: Controller<K>, ctx: &Context, kinds: &[Kind]) -> Controller<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    for kind in kinds {
        controller = match kind {
            Kind::ConfigMap => controller.owns(ctx.api::<ConfigMap>(), owned()),
            Kind::Secret => controller.owns(ctx.api::<Secret>(), owned()),
            Kind::Service => controller.owns(ctx.api::<Service>(), owned()),
            Kind::Deployment => controller.owns(ctx.api::<Deployment>(), owned()),
            Kind::StatefulSet => controller.owns(ctx.api::<StatefulSet>(), owned()),
            Kind::PodDisruptionBudget => controller.owns(ctx.api::<PodDisruptionBudget>(), owned()),
        };
    }
    controller
}

/// [`run`] over `namespaces` only (a namespaced install: one set of controllers per
/// namespace, each watching its own), or over every namespace when the list is empty.
pub async fn run_in(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if namespaces.is_empty() {
        return run(ctx, shutdown).await;
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runs = namespaces.into_iter().map(|namespace| {
        let mut stopped = stopped.clone();
        let ctx = Arc::new(ctx.as_ref().clone().watching_only(namespace));
        run(ctx, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
    });
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    futures_util::future::join_all(runs).await;
}

/// Runs the Team, MeshServer, Agent and McpGateway controllers (and token requests) until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + 'static) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop_signal = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };

    let teams = Controller::new(ctx.api::<Team>(), watcher::Config::default());
    let team_store = teams.store();
    let teams = owning(teams, &ctx, team::OWNS)
        // A Team waits for its MeshServer: reconcile the Teams that point at one when it changes.
        .watches(
            ctx.api::<MeshServer>(),
            watcher::Config::default(),
            move |mesh| referrers(&team_store, &mesh, |t: &Team| &t.spec.mesh_ref.name),
        )
        .graceful_shutdown_on(stop_signal())
        .run(
            instrumented("Team", team::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});

    let meshes = Controller::new(ctx.api::<MeshServer>(), watcher::Config::default());
    let meshes = owning(meshes, &ctx, mesh_server::OWNS)
        // A Team's key (announced by its status) belongs in its mesh's keys Secret.
        .watches(ctx.api::<Team>(), watcher::Config::default(), |team| {
            Some(
                ObjectRef::<MeshServer>::new(&team.spec.mesh_ref.name)
                    .within(&team.namespace().unwrap_or_default()),
            )
        })
        .graceful_shutdown_on(stop_signal())
        .run(
            instrumented("MeshServer", mesh_server::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});

    // Agents are the many: the burst of changes one reconcile causes (its status, the Secret,
    // ConfigMap and StatefulSet it creates, the StatefulSet's status) is folded into one
    // follow-up reconcile instead of one each.
    let agents = Controller::new(ctx.api::<Agent>(), watcher::Config::default()).with_config(
        ControllerConfig::default()
            .debounce(AGENT_DEBOUNCE)
            .concurrency(AGENT_CONCURRENCY),
    );
    let agent_store = agents.store();
    // The pod's readiness reaches the Agent through its StatefulSet's status.
    let agents = owning(agents, &ctx, agent::OWNS)
        // A Team's key or groups decide its agents' tokens.
        .watches(ctx.api::<Team>(), watcher::Config::default(), move |team| {
            referrers(&agent_store, &team, |a: &Agent| &a.spec.team_ref.name)
        })
        .graceful_shutdown_on(stop_signal())
        .run(
            instrumented("Agent", agent::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});

    let gateways = Controller::new(ctx.api::<McpGateway>(), watcher::Config::default());
    let gateways = owning(gateways, &ctx, gateway::OWNS)
        .graceful_shutdown_on(stop_signal())
        .run(
            instrumented("McpGateway", gateway::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});

    // Only Secrets labelled as token requests: the operator does not cache every Secret.
    let token_requests = Controller::new(
        ctx.api::<Secret>(),
        watcher::Config::default()
            .labels(&format!("{}=true", nsh_operator_api::token_request::LABEL)),
    )
    .graceful_shutdown_on(stop_signal())
    .run(
        instrumented("TokenRequest", token_request::reconcile),
        error_policy,
        ctx.clone(),
    )
    .for_each(|_| async {});

    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    tokio::join!(teams, meshes, agents, gateways, token_requests);
    tracing::info!("controllers stopped");
}
