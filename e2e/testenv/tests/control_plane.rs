//! Smoke tests that prove the harness's control plane is a real one: the pinned apiserver,
//! CRDs, RBAC, and the controller-manager's garbage collection and workload controllers.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use nsh_testenv::{ControlPlane, kubelet, versions, wait_for};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("test object is well-formed")
}

#[tokio::test]
async fn apiserver_reports_the_pinned_version_to_client_and_kubectl() {
    let plane = ControlPlane::shared().await.unwrap();
    let info = plane
        .client()
        .await
        .unwrap()
        .apiserver_version()
        .await
        .unwrap();
    assert_eq!(info.git_version, versions::kubernetes());

    let output = plane
        .kubectl()
        .args(["get", "--raw", "/version"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let version: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(version["gitVersion"], versions::kubernetes());
}

#[tokio::test]
async fn crd_is_served_and_objects_of_it_can_be_created_listed_and_deleted() {
    let plane = ControlPlane::shared().await.unwrap();
    let client = plane.client().await.unwrap();
    let crd: CustomResourceDefinition = from_json(json!({
        "metadata": { "name": "widgets.smoke.nsh.dev" },
        "spec": {
            "group": "smoke.nsh.dev",
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": { "size": { "type": "integer", "minimum": 1 } }
                    }}
                }}
            }]
        }
    }));
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    wait_for("the CRD to be Established", WAIT, || {
        let crds = crds.clone();
        async move {
            let crd = crds
                .get("widgets.smoke.nsh.dev")
                .await
                .map_err(|e| e.to_string())?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            Ok(established.then_some(()))
        }
    })
    .await;

    let namespace = plane.namespace("crd").await.unwrap();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("smoke.nsh.dev", "v1", "Widget"));
    let widgets = Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &resource);
    let widget: DynamicObject = from_json(json!({
        "apiVersion": "smoke.nsh.dev/v1", "kind": "Widget",
        "metadata": { "name": "w1" }, "spec": { "size": 3 }
    }));
    widgets
        .create(&PostParams::default(), &widget)
        .await
        .unwrap();

    // The schema is enforced by the real apiserver.
    let invalid: DynamicObject = from_json(json!({
        "apiVersion": "smoke.nsh.dev/v1", "kind": "Widget",
        "metadata": { "name": "w2" }, "spec": { "size": 0 }
    }));
    let err = widgets
        .create(&PostParams::default(), &invalid)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("spec.size"), "{err}");

    let listed = widgets.list(&ListParams::default()).await.unwrap();
    let names: Vec<_> = listed
        .items
        .iter()
        .filter_map(|w| w.metadata.name.clone())
        .collect();
    assert_eq!(names, ["w1"]);
    assert_eq!(listed.items[0].data["spec"]["size"], 3);

    widgets
        .delete("w1", &DeleteParams::default())
        .await
        .unwrap();
    assert!(widgets.get_opt("w1").await.unwrap().is_none());
}

#[tokio::test]
async fn rbac_denies_an_unprivileged_service_account_until_a_role_allows_it() {
    let plane = ControlPlane::shared().await.unwrap();
    let admin = plane.client().await.unwrap();
    let namespace = plane.namespace("rbac").await.unwrap();
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), &namespace);
    accounts
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": "robot" } })),
        )
        .await
        .unwrap();

    let user = format!("system:serviceaccount:{namespace}:robot");
    let robot = plane
        .client_as(
            &user,
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{namespace}"),
            ],
        )
        .await
        .unwrap();
    let secrets_as_robot = Api::<Secret>::namespaced(robot.clone(), &namespace);
    match secrets_as_robot.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("an unprivileged service account listed secrets: {other:?}"),
    }

    // Grant exactly `list secrets` in this namespace: the same request is now allowed, so the
    // 403 above came from RBAC evaluating the request, not from a broken client.
    let role: k8s_openapi::api::rbac::v1::Role = from_json(json!({
        "metadata": { "name": "secret-reader" },
        "rules": [{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["list"] }]
    }));
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = from_json(json!({
        "metadata": { "name": "robot-reads-secrets" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secret-reader" },
        "subjects": [{ "kind": "ServiceAccount", "name": "robot", "namespace": namespace }]
    }));
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(admin.clone(), &namespace)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), &namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    secrets_as_robot.list(&ListParams::default()).await.unwrap();
    // Still nothing beyond the grant.
    let err = Api::<ConfigMap>::namespaced(robot, &namespace)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err}"
    );
}

#[tokio::test]
async fn garbage_collector_deletes_dependents_of_a_deleted_owner() {
    let plane = ControlPlane::shared().await.unwrap();
    let client = plane.client().await.unwrap();
    let namespace = plane.namespace("gc").await.unwrap();
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &namespace);
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);

    let owner = config_maps
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": "owner" } })),
        )
        .await
        .unwrap();
    let dependent: Secret = from_json(json!({
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                "uid": owner.metadata.uid.unwrap()
            }]
        },
        "stringData": { "k": "v" }
    }));
    secrets
        .create(&PostParams::default(), &dependent)
        .await
        .unwrap();

    config_maps
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the garbage collector to delete the dependent Secret",
        WAIT,
        || {
            let secrets = secrets.clone();
            async move {
                let found = secrets
                    .get_opt("dependent")
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(found.is_none().then_some(()))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn deployment_makes_a_replicaset_and_pending_pods_that_a_test_can_mark_ready() {
    let plane = ControlPlane::shared().await.unwrap();
    let client = plane.client().await.unwrap();
    let namespace = plane.namespace("deploy").await.unwrap();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace);
    let deployment: Deployment = from_json(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] }
            }
        }
    }));
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
    let pod = wait_for("the Deployment's pod", WAIT, || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .map_err(|e| e.to_string())?;
            Ok(list.items.into_iter().next())
        }
    })
    .await;
    // Deployment -> ReplicaSet -> Pod, each owned by the one before.
    let replica_set_owner = pod.metadata.owner_references.as_ref().unwrap()[0].clone();
    assert_eq!(replica_set_owner.kind, "ReplicaSet");
    let replica_set = Api::<ReplicaSet>::namespaced(client.clone(), &namespace)
        .get(&replica_set_owner.name)
        .await
        .unwrap();
    assert_eq!(
        replica_set.metadata.owner_references.unwrap()[0].kind,
        "Deployment"
    );
    // No kubelet: the pod is accepted but never runs by itself.
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Pending"));

    let pod_name = pod.metadata.name.unwrap();
    kubelet::mark_pod_ready(&client, &namespace, &pod_name)
        .await
        .unwrap();
    wait_for("the Deployment to count the pod as ready", WAIT, || {
        let deployments = deployments.clone();
        async move {
            let web = deployments.get("web").await.map_err(|e| e.to_string())?;
            let ready = web.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            Ok((ready == 1).then_some(()))
        }
    })
    .await;
}

#[tokio::test]
async fn statefulset_makes_its_ordinal_pod() {
    let plane = ControlPlane::shared().await.unwrap();
    let client = plane.client().await.unwrap();
    let namespace = plane.namespace("sts").await.unwrap();
    let set: StatefulSet = from_json(json!({
        "metadata": { "name": "agent" },
        "spec": {
            "replicas": 1,
            "serviceName": "agent",
            "selector": { "matchLabels": { "app": "agent" } },
            "template": {
                "metadata": { "labels": { "app": "agent" } },
                "spec": { "containers": [{ "name": "agent", "image": "registry.invalid/agent:1" }] }
            }
        }
    }));
    Api::<StatefulSet>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &set)
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
    let pod = wait_for("pod agent-0", WAIT, || {
        let pods = pods.clone();
        async move { pods.get_opt("agent-0").await.map_err(|e| e.to_string()) }
    })
    .await;
    assert_eq!(
        pod.metadata.owner_references.unwrap()[0].kind,
        "StatefulSet"
    );
}

#[tokio::test]
async fn deleting_a_namespace_removes_it_and_its_contents() {
    let plane = ControlPlane::shared().await.unwrap();
    let client = plane.client().await.unwrap();
    let namespace = plane.namespace("nsdel").await.unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &namespace)
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": "cm" } })),
        )
        .await
        .unwrap();
    let namespaces = Api::<Namespace>::all(client.clone());
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the namespace controller to finish deleting the namespace",
        WAIT,
        || {
            let namespaces = namespaces.clone();
            let namespace = namespace.clone();
            async move {
                let found = namespaces
                    .get_opt(&namespace)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(found.is_none().then_some(()))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn helm_from_the_pinned_build_installs_a_chart_into_the_apiserver() {
    let plane = ControlPlane::shared().await.unwrap();
    let version = plane.helm().args(["version", "--short"]).output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with(versions::helm()));

    let chart = tempfile::tempdir().unwrap();
    std::fs::create_dir(chart.path().join("templates")).unwrap();
    std::fs::write(
        chart.path().join("Chart.yaml"),
        "apiVersion: v2\nname: smoke\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(chart.path().join("values.yaml"), "greeting: hello\n").unwrap();
    std::fs::write(
        chart.path().join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    )
    .unwrap();
    let namespace = plane.namespace("helm").await.unwrap();
    let install = plane
        .helm()
        .args([
            "install",
            "smoke",
            "--namespace",
            &namespace,
            "--set",
            "greeting=hi",
            "--wait",
        ])
        .arg(chart.path())
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let cm = Api::<ConfigMap>::namespaced(plane.client().await.unwrap(), &namespace)
        .get("smoke-cm")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["greeting"], "hi");
}
