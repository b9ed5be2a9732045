//! Two operator instances on one cluster: only the Lease holder reconciles; when it shuts
//! down and releases the Lease, the other takes over and reconciles in its place.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use nsh_operator::leader::{Elector, Ended, LeaseConfig};
use nsh_operator_api::Team;
use nsh_testenv::{ControlPlane, wait_for};

const WAIT: Duration = Duration::from_secs(60);

struct Instance {
    ctx: Arc<nsh_operator::Context>,
    stop: tokio::sync::oneshot::Sender<()>,
    ended: tokio::task::JoinHandle<Ended>,
}

async fn start(plane: &ControlPlane, lease_namespace: &str, identity: &str) -> Instance {
    let client = plane.client().await.unwrap();
    let ctx = Arc::new(
        nsh_operator::Context::new(client.clone(), "nsh:test").watching_only(lease_namespace),
    );
    let config = LeaseConfig {
        lease_duration: Duration::from_secs(4),
        renew_every: Duration::from_millis(500),
        ..LeaseConfig::new(lease_namespace, identity)
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run_ctx = ctx.clone();
    let ended = tokio::spawn(async move {
        Elector::new(client, config)
            .lead(
                async move {
                    let _ = stopped.await;
                },
                move |mut lost| {
                    nsh_operator::run(run_ctx, async move {
                        let _ = lost.wait_for(|l| *l).await;
                    })
                },
            )
            .await
    });
    Instance { ctx, stop, ended }
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("nsh-operator")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

async fn create_team_and_wait_for_its_key(client: &kube::Client, ns: &str, name: &str) {
    let team: Team = serde_json::from_value(
        serde_json::json!({ "metadata": { "name": name }, "spec": { "meshRef": { "name": "m" } } }),
    )
    .unwrap();
    Api::<Team>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &team)
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let secret = format!("{name}-team-key");
    wait_for(&format!("{secret} from the leader"), WAIT, || {
        let (secrets, secret) = (secrets.clone(), secret.clone());
        async move {
            Ok(secrets
                .get_opt(&secret)
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ()))
        }
    })
    .await;
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let plane = ControlPlane::shared().await.unwrap();
    plane
        .install_crds(&nsh_testenv::repo_root().join("crds"))
        .await
        .unwrap();
    let client = plane.client().await.unwrap();
    let ns = plane.namespace("leader").await.unwrap();
    let leases = Api::<Lease>::namespaced(client.clone(), &ns);

    let first = start(plane, &ns, "first").await;
    wait_for("first to take the lease", WAIT, || {
        let leases = leases.clone();
        async move { Ok(holder(&leases).await.filter(|h| h == "first").map(|_| ())) }
    })
    .await;
    let second = start(plane, &ns, "second").await;

    create_team_and_wait_for_its_key(&client, &ns, "one").await;
    // Give the standby every chance to (wrongly) reconcile too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        first.ctx.metrics.reconciles("Team") > 0,
        "the leader reconciled"
    );
    assert_eq!(
        second.ctx.metrics.reconciles("Team"),
        0,
        "the standby must not write"
    );
    assert_eq!(holder(&leases).await.as_deref(), Some("first"));

    // The leader shuts down and releases the lease; the standby takes over well before expiry
    // would have let it.
    let _ = first.stop.send(());
    assert_eq!(
        tokio::time::timeout(WAIT, first.ended)
            .await
            .unwrap()
            .unwrap(),
        Ended::Shutdown
    );
    wait_for("second to take the lease", WAIT, || {
        let leases = leases.clone();
        async move { Ok(holder(&leases).await.filter(|h| h == "second").map(|_| ())) }
    })
    .await;
    create_team_and_wait_for_its_key(&client, &ns, "two").await;
    assert!(
        second.ctx.metrics.reconciles("Team") > 0,
        "the new leader reconciles"
    );

    let _ = second.stop.send(());
    assert_eq!(
        tokio::time::timeout(WAIT, second.ended)
            .await
            .unwrap()
            .unwrap(),
        Ended::Shutdown
    );
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_a_live_one_is_not() {
    let plane = ControlPlane::shared().await.unwrap();
    let ns = plane.namespace("lease").await.unwrap();
    let client = plane.client().await.unwrap();
    let config = |identity: &str| LeaseConfig {
        lease_duration: Duration::from_secs(2),
        ..LeaseConfig::new(&ns, identity)
    };
    let a = Elector::new(client.clone(), config("a"));
    let b = Elector::new(client.clone(), config("b"));
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a free lease is acquired"
    );
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "a live lease is not taken"
    );
    assert!(a.try_acquire_or_renew().await.unwrap(), "the holder renews");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "an expired lease is taken over"
    );
    assert!(
        !a.try_acquire_or_renew().await.unwrap(),
        "the old holder has lost it"
    );
    let lease = Api::<Lease>::namespaced(client, &ns)
        .get("nsh-operator")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(lease.lease_transitions, Some(1));
}
