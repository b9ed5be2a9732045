//! The operator works with exactly the ClusterRole `nsh operator rbac` prints, and no more:
//! it runs here as an impersonated ServiceAccount bound to that role.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use nsh_operator::leader::{Elector, LeaseConfig};
use nsh_operator_api::{Agent, MeshServer, Team};
use nsh_testenv::{ControlPlane, wait_for};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

#[tokio::test]
async fn the_operator_reconciles_everything_with_its_generated_role_alone() {
    // The operator's warnings name any permission it lacks; show them when this fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let plane = ControlPlane::shared().await.unwrap();
    plane
        .install_crds(&nsh_testenv::repo_root().join("crds"))
        .await
        .unwrap();
    let admin = plane.client().await.unwrap();
    let ns = plane.namespace("rbac-op").await.unwrap();

    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &nsh_operator::rbac::cluster_role())
        .await
        .unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "nsh-operator" } })),
        )
        .await
        .unwrap();
    let binding: ClusterRoleBinding = object(json!({
        "metadata": { "name": format!("nsh-operator-{ns}") },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "nsh-operator" },
        "subjects": [{ "kind": "ServiceAccount", "name": "nsh-operator", "namespace": ns }]
    }));
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let user = format!("system:serviceaccount:{ns}:nsh-operator");
    let groups = [
        "system:serviceaccounts",
        &format!("system:serviceaccounts:{ns}"),
        "system:authenticated",
    ];
    let operator_client = plane.client_as(&user, &groups).await.unwrap();
    // Least privilege: nothing beyond the role (pods are not the operator's business).
    let denied = Api::<Pod>::all(operator_client.clone())
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(denied, kube::Error::Api(ref s) if s.code == 403),
        "{denied}"
    );

    let ctx = Arc::new(
        nsh_operator::Context::new(operator_client.clone(), "nsh:test").watching_only(&ns),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run_ctx = ctx.clone();
    let config = LeaseConfig {
        renew_every: Duration::from_millis(500),
        ..LeaseConfig::new(&ns, "rbac-test")
    };
    let operator = tokio::spawn(Elector::new(operator_client, config).lead(
        async move {
            let _ = stopped.await;
        },
        move |mut lost| {
            nsh_operator::run(run_ctx, async move {
                let _ = lost.wait_for(|l| *l).await;
            })
        },
    ));

    Api::<MeshServer>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "mesh" }, "spec": { "replicas": 1 } })),
        )
        .await
        .unwrap();
    Api::<Team>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &object(json!({ "metadata": { "name": "alpha" }, "spec": { "meshRef": { "name": "mesh" }, "groups": ["ops"] } })))
        .await
        .unwrap();
    Api::<Agent>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &object(json!({ "metadata": { "name": "alice" }, "spec": { "teamRef": { "name": "alpha" }, "groups": ["ops"] } })))
        .await
        .unwrap();

    let secrets = Api::<Secret>::namespaced(admin.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &ns);
    wait_for(
        "every owned object, written under the generated role",
        WAIT,
        || {
            let (secrets, deployments) = (secrets.clone(), deployments.clone());
            async move {
                let keys = secrets
                    .get_opt("mesh-team-keys")
                    .await
                    .map_err(|e| e.to_string())?;
                let has_team_key = keys
                    .and_then(|s| s.data)
                    .is_some_and(|d| d.contains_key("alpha"));
                let token = secrets
                    .get_opt("alice-mesh-token")
                    .await
                    .map_err(|e| e.to_string())?;
                let deployment = deployments
                    .get_opt("mesh")
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((has_team_key && token.is_some() && deployment.is_some()).then_some(()))
            }
        },
    )
    .await;
    // Objects appear mid-reconcile; a reconcile is counted when it returns.
    for kind in ["Team", "MeshServer", "Agent"] {
        wait_for(&format!("{kind} reconciles to be counted"), WAIT, || {
            let ctx = ctx.clone();
            async move { Ok((ctx.metrics.reconciles(kind) > 0).then_some(())) }
        })
        .await;
    }
    // Scaling out with a managed Redis, and back: creating and deleting its objects is
    // within the role too.
    let meshes = Api::<MeshServer>::namespaced(admin.clone(), &ns);
    let scale = |spec: serde_json::Value| {
        let meshes = meshes.clone();
        async move {
            meshes
                .patch(
                    "mesh",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": spec })),
                )
                .await
                .unwrap();
        }
    };
    let redis_exists = |want: bool| {
        let deployments = deployments.clone();
        async move {
            wait_for(&format!("the managed Redis to exist: {want}"), WAIT, || {
                let deployments = deployments.clone();
                async move {
                    let found = deployments
                        .get_opt("mesh-redis")
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok((found.is_some() == want).then_some(()))
                }
            })
            .await;
        }
    };
    scale(json!({ "replicas": 2, "redis": { "managed": true } })).await;
    redis_exists(true).await;
    scale(json!({ "replicas": 1, "redis": null })).await;
    redis_exists(false).await;

    let agent = Api::<Agent>::namespaced(admin, &ns)
        .get("alice")
        .await
        .unwrap();
    assert!(
        agent.status.and_then(|s| s.token_expiry).is_some(),
        "status written under the role"
    );

    let _ = stop.send(());
    tokio::time::timeout(WAIT, operator).await.unwrap().unwrap();
}
