//! The operator against the real apiserver: a Team gets a signing key, a MeshServer gets its
//! workload with every Team's key, conditions follow the pods (marked Ready as a kubelet
//! would), references resolve when their target appears, invalid specs get a condition and an
//! Event, and deleting a Team cleans up through garbage collection.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use nsh_operator_api::agent::AgentPhase;
use nsh_operator_api::{MeshServer, Team};
use nsh_testenv::{ControlPlane, kubelet, wait_for};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// CRDs installed, and a namespace `prefix-…` with an operator that watches only it: tests
/// share the apiserver but never each other's objects.
async fn start_operator(
    plane: &ControlPlane,
    prefix: &str,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    plane
        .install_crds(&nsh_testenv::repo_root().join("crds"))
        .await
        .unwrap();
    let ns = plane.namespace(prefix).await.unwrap();
    let ctx =
        nsh_operator::Context::new(plane.client().await.unwrap(), "nsh:test").watching_only(&ns);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(nsh_operator::run(std::sync::Arc::new(ctx), async move {
        let _ = stopped.await;
    }));
    (ns, stop)
}

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn ready_condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<(String, String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until `name`'s `Ready` condition is `True`; returns the object.
async fn until_ready<K>(api: &Api<K>, name: &str) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: nsh_operator_api::HasConditions,
{
    wait_for(&format!("{name} Ready"), WAIT, || {
        let (api, name) = (api.clone(), name.to_owned());
        async move {
            let object = api.get(&name).await.map_err(|e| e.to_string())?;
            let ready = ready_condition(object.conditions()).is_some_and(|c| c.0 == "True");
            Ok(ready.then_some(object))
        }
    })
    .await
}

/// The first pod of the workload `instance` (created by the controller-manager).
async fn first_pod(pods: &Api<Pod>, instance: &str) -> Pod {
    wait_for(&format!("a pod of {instance}"), WAIT, || {
        let pods = pods.clone();
        let selector = format!("app.kubernetes.io/instance={instance}");
        async move {
            Ok(pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| e.to_string())?
                .items
                .into_iter()
                .next())
        }
    })
    .await
}

#[tokio::test]
async fn a_team_and_its_mesh_come_up_and_go_away() {
    let plane = ControlPlane::shared().await.unwrap();
    let (ns, _operator) = start_operator(plane, "op").await;
    let client = plane.client().await.unwrap();
    let meshes = Api::<MeshServer>::namespaced(client.clone(), &ns);
    let teams = Api::<Team>::namespaced(client.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);

    meshes
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "mesh" }, "spec": {} })),
        )
        .await
        .unwrap();
    teams.create(&PostParams::default(), &object(json!({ "metadata": { "name": "alpha" }, "spec": { "meshRef": { "name": "mesh" } } }))).await.unwrap();

    // The team's key is minted into a Secret the Team owns, and named in its status.
    let team = wait_for("alpha's keySecretName", WAIT, || {
        let teams = teams.clone();
        async move {
            let team = teams.get("alpha").await.map_err(|e| e.to_string())?;
            Ok(team
                .status
                .as_ref()
                .and_then(|s| s.key_secret_name.clone())
                .is_some()
                .then_some(team))
        }
    })
    .await;
    let key_secret = secrets.get("alpha-team-key").await.unwrap();
    assert_eq!(
        key_secret.metadata.owner_references.as_ref().unwrap()[0].kind,
        "Team"
    );
    let key = key_secret.data.as_ref().unwrap()["key"].0.clone();
    assert!(key.len() >= 32, "a random key of 32 bytes, base64");
    assert_eq!(
        ready_condition(&team.status.unwrap().common.conditions)
            .unwrap()
            .0,
        "True"
    );

    // The mesh's keys Secret carries the same key under the team's name.
    wait_for("mesh-team-keys to hold alpha's key", WAIT, || {
        let (secrets, key) = (secrets.clone(), key.clone());
        async move {
            let keys = secrets
                .get_opt("mesh-team-keys")
                .await
                .map_err(|e| e.to_string())?;
            Ok(keys
                .and_then(|s| s.data)
                .is_some_and(|d| d.get("alpha").is_some_and(|k| k.0 == key))
                .then_some(()))
        }
    })
    .await;
    // Status is written at the end of a reconcile, after every owned object is applied.
    wait_for("the mesh's first status", WAIT, || {
        let meshes = meshes.clone();
        async move {
            let mesh = meshes.get("mesh").await.map_err(|e| e.to_string())?;
            Ok(mesh
                .status
                .is_some_and(|s| ready_condition(&s.common.conditions).is_some())
                .then_some(()))
        }
    })
    .await;
    for owned in [
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .get("mesh")
            .await
            .unwrap()
            .metadata,
        Api::<Service>::namespaced(client.clone(), &ns)
            .get("mesh")
            .await
            .unwrap()
            .metadata,
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get("mesh-config")
            .await
            .unwrap()
            .metadata,
    ] {
        let owner = &owned.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("MeshServer", Some(true))
        );
        assert_eq!(
            owned.labels.unwrap()["app.kubernetes.io/managed-by"],
            "nsh-operator"
        );
    }

    // No kubelet: not ready until a test marks the pod ready; then the condition follows.
    let mesh = meshes.get("mesh").await.unwrap();
    let (status, reason, _) = ready_condition(&mesh.status.unwrap().common.conditions).unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "WaitingForPods")
    );
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let pod = first_pod(&pods, "mesh").await;
    kubelet::mark_pod_ready(&client, &ns, pod.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    let mesh = until_ready(&meshes, "mesh").await;
    let status = mesh.status.unwrap();
    assert_eq!(status.ready_replicas, Some(1));
    assert_eq!(
        status.url.as_deref(),
        Some(format!("ws://mesh.{ns}.svc:3456").as_str())
    );

    // Deleting the Team: its key Secret is garbage collected and leaves the mesh's keys.
    teams
        .delete("alpha", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("alpha's key to leave the mesh", WAIT, || {
        let secrets = secrets.clone();
        async move {
            let gone = secrets
                .get_opt("alpha-team-key")
                .await
                .map_err(|e| e.to_string())?
                .is_none();
            let keys = secrets
                .get("mesh-team-keys")
                .await
                .map_err(|e| e.to_string())?;
            Ok((gone && !keys.data.unwrap_or_default().contains_key("alpha")).then_some(()))
        }
    })
    .await;
}

#[tokio::test]
async fn a_team_waits_for_its_mesh_and_resolves_when_it_appears() {
    let plane = ControlPlane::shared().await.unwrap();
    let (ns, _operator) = start_operator(plane, "op-ref").await;
    let client = plane.client().await.unwrap();
    let teams = Api::<Team>::namespaced(client.clone(), &ns);
    teams.create(&PostParams::default(), &object(json!({ "metadata": { "name": "early" }, "spec": { "meshRef": { "name": "later" } } }))).await.unwrap();
    let (_, reason, message) = wait_for("a ReferenceMissing condition", WAIT, || {
        let teams = teams.clone();
        async move {
            Ok(teams
                .get("early")
                .await
                .map_err(|e| e.to_string())?
                .status
                .and_then(|s| ready_condition(&s.common.conditions)))
        }
    })
    .await;
    assert_eq!(reason, "ReferenceMissing");
    assert!(
        message.contains("MeshServer `later` does not exist")
            && message.contains("spec.meshRef.name"),
        "{message}"
    );

    Api::<MeshServer>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "later" }, "spec": {} })),
        )
        .await
        .unwrap();
    wait_for(
        "the Team to become Ready once its mesh exists",
        WAIT,
        || {
            let teams = teams.clone();
            async move {
                let ready = teams
                    .get("early")
                    .await
                    .map_err(|e| e.to_string())?
                    .status
                    .and_then(|s| ready_condition(&s.common.conditions));
                Ok(ready.filter(|c| c.0 == "True").map(|_| ()))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn an_unsupported_spec_gets_a_condition_and_an_event_not_a_crash_loop() {
    let plane = ControlPlane::shared().await.unwrap();
    let (ns, _operator) = start_operator(plane, "op-invalid").await;
    let client = plane.client().await.unwrap();
    let meshes = Api::<MeshServer>::namespaced(client.clone(), &ns);
    meshes
        .create(
            &PostParams::default(),
            &object(
                json!({ "metadata": { "name": "m" }, "spec": { "rateLimit": { "rate": "0/s" } } }),
            ),
        )
        .await
        .unwrap();
    let (status, reason, message) = wait_for("an InvalidSpec condition", WAIT, || {
        let meshes = meshes.clone();
        async move {
            Ok(meshes
                .get("m")
                .await
                .map_err(|e| e.to_string())?
                .status
                .and_then(|s| ready_condition(&s.common.conditions)))
        }
    })
    .await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(
        message.starts_with("spec.rateLimit.rate:") && message.contains("50/s"),
        "{message}"
    );
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    wait_for("a Warning event", WAIT, || {
        let events = events.clone();
        async move {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            Ok(list
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("InvalidSpec"))
                .map(|_| ()))
        }
    })
    .await;
    // Nothing was built for it.
    assert!(
        Api::<Deployment>::namespaced(client, &ns)
            .get_opt("m")
            .await
            .unwrap()
            .is_none()
    );
}

/// Polls until `get` returns what `want` accepts.
async fn until<T, F, Fut>(what: &str, get: F, want: impl Fn(&T) -> bool) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    wait_for(what, WAIT, || async {
        let value = get().await.map_err(|e| e.to_string())?;
        Ok(want(&value).then_some(value))
    })
    .await
}

#[tokio::test]
async fn scaling_a_mesh_out_brings_redis_a_pdb_and_scaling_back_removes_them() {
    let plane = ControlPlane::shared().await.unwrap();
    let (ns, _operator) = start_operator(plane, "op-scale").await;
    let client = plane.client().await.unwrap();
    let meshes = Api::<MeshServer>::namespaced(client.clone(), &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    let pdbs = Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns);
    let config = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    meshes
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "m" }, "spec": {} })),
        )
        .await
        .unwrap();
    until(
        "the mesh Deployment",
        || deployments.get_opt("m"),
        Option::is_some,
    )
    .await;

    let patch = |spec: serde_json::Value| {
        let meshes = meshes.clone();
        async move {
            meshes
                .patch(
                    "m",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": spec })),
                )
                .await
                .unwrap();
        }
    };
    patch(
        json!({ "replicas": 3, "redis": { "managed": true }, "persistence": { "enabled": true } }),
    )
    .await;
    until(
        "three mesh replicas",
        || deployments.get("m"),
        |d| d.spec.as_ref().and_then(|s| s.replicas) == Some(3),
    )
    .await;
    let redis = until(
        "the managed Redis",
        || deployments.get_opt("m-redis"),
        Option::is_some,
    )
    .await
    .unwrap();
    assert_eq!(
        redis.metadata.owner_references.unwrap()[0].kind,
        "MeshServer"
    );
    assert!(services.get_opt("m-redis").await.unwrap().is_some());
    until("a PDB", || pdbs.get_opt("m"), Option::is_some).await;
    until(
        "settings pointing at the managed Redis, persistence on",
        || config.get("m-config"),
        |c| {
            c.data.as_ref().is_some_and(|d| {
                d.get("NSH_MESH_REDIS").map(String::as_str) == Some("redis://m-redis:6379/0")
                    && d.get("NSH_MESH_PERSISTENCE").map(String::as_str) == Some("true")
            })
        },
    )
    .await;
    // The controller-manager makes the replicas' pods (Pending: no kubelet).

    // Back to one replica without Redis: the PDB and the managed Redis go.
    meshes
        .patch("m", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "replicas": 1, "redis": null, "persistence": { "enabled": false } } })))
        .await
        .unwrap();
    until("no PDB", || pdbs.get_opt("m"), Option::is_none).await;
    until(
        "no managed Redis",
        || deployments.get_opt("m-redis"),
        Option::is_none,
    )
    .await;
    until(
        "no Redis Service",
        || services.get_opt("m-redis"),
        Option::is_none,
    )
    .await;
    let settings = config.get("m-config").await.unwrap().data.unwrap();
    assert!(
        !settings.contains_key("NSH_MESH_REDIS"),
        "settings without Redis: {settings:?}"
    );
}

#[tokio::test]
async fn an_agent_gets_a_verifiable_mesh_token_renewed_when_its_claims_change() {
    use nsh_mesh_transport::token::{self, TeamKey};
    use nsh_operator_api::Agent;

    let plane = ControlPlane::shared().await.unwrap();
    let (ns, _operator) = start_operator(plane, "op-agent").await;
    let client = plane.client().await.unwrap();
    let agents = Api::<Agent>::namespaced(client.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    Api::<Team>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &object(json!({ "metadata": { "name": "alpha" }, "spec": { "meshRef": { "name": "m" }, "groups": ["ops", "dev"] } })))
        .await
        .unwrap();
    agents
        .create(&PostParams::default(), &object(json!({ "metadata": { "name": "alice" }, "spec": { "teamRef": { "name": "alpha" }, "groups": ["ops"] } })))
        .await
        .unwrap();

    let claims_of = |secrets: Api<Secret>| async move {
        let key = secrets
            .get("alpha-team-key")
            .await
            .map_err(|e| e.to_string())?
            .data
            .unwrap()["key"]
            .0
            .clone();
        let keys = std::collections::HashMap::from([(
            "alpha".to_owned(),
            TeamKey::from_file_contents(&key).unwrap(),
        )]);
        let Some(secret) = secrets
            .get_opt("alice-mesh-token")
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let jwt = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
        // The token verifies with the team's key: exactly what the mesh server will check.
        token::verify(&jwt, &keys)
            .map(Some)
            .map_err(|e| e.to_string())
    };
    let claims = wait_for("alice's mesh token", WAIT, || claims_of(secrets.clone())).await;
    assert_eq!(
        (claims.sub.as_str(), claims.team.as_str()),
        ("alice", "alpha")
    );
    assert_eq!(claims.groups, ["ops"]);
    assert_eq!(
        claims.exp - claims.iat,
        24 * 3600,
        "the Team's default tokenTtl"
    );

    let agent = wait_for("alice's status", WAIT, || {
        let agents = agents.clone();
        async move {
            let agent = agents.get("alice").await.map_err(|e| e.to_string())?;
            Ok(agent
                .status
                .as_ref()
                .is_some_and(|s| s.token_expiry.is_some())
                .then_some(agent))
        }
    })
    .await;
    let status = agent.status.unwrap();
    let credentials = status
        .common
        .conditions
        .iter()
        .find(|c| c.type_ == "CredentialsReady")
        .unwrap();
    assert_eq!(credentials.status, "True");
    let (ready, reason, message) = ready_condition(&status.common.conditions).unwrap();
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "ReferenceMissing"),
        "the token is issued, but the team's mesh does not exist for the pod to join"
    );
    assert!(message.contains("MeshServer `m`"), "{message}");

    // New groups, new token.
    agents
        .patch(
            "alice",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "groups": ["dev"] } })),
        )
        .await
        .unwrap();
    wait_for("a token with the new groups", WAIT, || {
        let secrets = secrets.clone();
        async move {
            Ok(claims_of(secrets)
                .await?
                .filter(|c| c.groups == ["dev"])
                .map(|_| ()))
        }
    })
    .await;

    // A group the team does not have is refused, naming the field.
    agents
        .create(&PostParams::default(), &object(json!({ "metadata": { "name": "mallory" }, "spec": { "teamRef": { "name": "alpha" }, "groups": ["finance"] } })))
        .await
        .unwrap();
    let (_, reason, message) = wait_for("mallory's InvalidSpec", WAIT, || {
        let agents = agents.clone();
        async move {
            Ok(agents
                .get("mallory")
                .await
                .map_err(|e| e.to_string())?
                .status
                .and_then(|s| ready_condition(&s.common.conditions)))
        }
    })
    .await;
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.starts_with("spec.groups:") && message.contains("finance"),
        "{message}"
    );
    assert!(
        secrets
            .get_opt("mallory-mesh-token")
            .await
            .unwrap()
            .is_none()
    );

    // Deleting the agent removes its token through garbage collection (slow on purpose: the
    // controller-manager rediscovers CRD kinds installed after it started every 30 s).
    agents
        .delete("alice", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("alice's token to be collected", WAIT, || {
        let secrets = secrets.clone();
        async move {
            Ok(secrets
                .get_opt("alice-mesh-token")
                .await
                .map_err(|e| e.to_string())?
                .is_none()
                .then_some(()))
        }
    })
    .await;
}

#[tokio::test]
async fn an_agent_runs_in_one_pod_with_the_mesh_client_sidecar_and_ready_follows_it() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use nsh_operator_api::Agent;

    let plane = ControlPlane::shared().await.unwrap();
    let (ns, _operator) = start_operator(plane, "op-pod").await;
    let client = plane.client().await.unwrap();
    let agents = Api::<Agent>::namespaced(client.clone(), &ns);
    Api::<MeshServer>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "mesh" }, "spec": {} })),
        )
        .await
        .unwrap();
    Api::<Team>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &object(json!({ "metadata": { "name": "alpha" }, "spec": { "meshRef": { "name": "mesh" }, "groups": ["ops"] } })))
        .await
        .unwrap();
    Api::<nsh_operator_api::McpGateway>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &object(json!({ "metadata": { "name": "tools" }, "spec": { "upstreams": [{ "name": "fs", "url": "http://fs.example/mcp" }] } })))
        .await
        .unwrap();
    agents
        .create(&PostParams::default(), &object(json!({ "metadata": { "name": "alice" }, "spec": {
            "teamRef": { "name": "alpha" }, "groups": ["ops"],
            "mcpServers": [{ "name": "gh", "preset": "github" }, { "name": "shared", "gatewayRef": { "name": "tools" } }],
            "env": [{ "name": "GIT_AUTHOR_NAME", "value": "alice" }],
        } })))
        .await
        .unwrap();

    let sets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let set = wait_for("alice's StatefulSet", WAIT, || {
        let sets = sets.clone();
        async move { sets.get_opt("alice").await.map_err(|e| e.to_string()) }
    })
    .await;
    assert_eq!(
        set.metadata.owner_references.as_ref().unwrap()[0].kind,
        "Agent"
    );
    let pod_spec = set.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let sidecar = &pod_spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(
        (sidecar.name.as_str(), sidecar.restart_policy.as_deref()),
        ("mesh-client", Some("Always")),
        "a native sidecar"
    );
    assert!(
        sidecar
            .args
            .as_ref()
            .unwrap()
            .join(" ")
            .contains(&format!("--server ws://mesh.{ns}.svc:3456")),
        "{:?}",
        sidecar.args
    );
    let volumes: Vec<String> = pod_spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| v.name.clone())
        .collect();
    assert!(
        volumes.contains(&"mesh-token".to_owned()) && volumes.contains(&"launch-config".to_owned())
    );

    // The launch settings: the mesh preset points at the sidecar, the gateway at its Service.
    let launch = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("alice-launch")
        .await
        .unwrap()
        .data
        .unwrap()["agent.yaml"]
        .clone();
    assert!(
        launch.contains("clientUrl: http://127.0.0.1:8765/mcp"),
        "{launch}"
    );
    assert!(
        launch.contains(&format!("url: http://tools.{ns}.svc:8080/mcp")),
        "{launch}"
    );
    assert!(launch.contains("- github"), "{launch}");

    // The StatefulSet controller makes the pod; it stays Pending (no kubelet) until marked.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    wait_for("the pod alice-0", WAIT, || {
        let pods = pods.clone();
        async move { pods.get_opt("alice-0").await.map_err(|e| e.to_string()) }
    })
    .await;
    let waiting = wait_for("alice WaitingForPods", WAIT, || {
        let agents = agents.clone();
        async move {
            let agent = agents.get("alice").await.map_err(|e| e.to_string())?;
            Ok(agent
                .status
                .and_then(|s| ready_condition(&s.common.conditions))
                .filter(|(_, reason, _)| reason == "WaitingForPods"))
        }
    })
    .await;
    assert!(waiting.2.contains("alice-0"), "{waiting:?}");
    kubelet::mark_pod_ready(&client, &ns, "alice-0")
        .await
        .unwrap();
    let agent = until_ready(&agents, "alice").await;
    let status = agent.status.unwrap();
    assert_eq!(
        (status.phase, status.pod.as_deref()),
        (Some(AgentPhase::Running), Some("alice-0"))
    );

    // An unknown preset: InvalidSpec naming the entry, and the pod is left as it was.
    agents
        .patch(
            "alice",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "spec": { "mcpServers": [{ "name": "x", "preset": "gopher" }] } }),
            ),
        )
        .await
        .unwrap();
    let (_, reason, message) = wait_for("alice's InvalidSpec", WAIT, || {
        let agents = agents.clone();
        async move {
            Ok(agents
                .get("alice")
                .await
                .map_err(|e| e.to_string())?
                .status
                .and_then(|s| ready_condition(&s.common.conditions))
                .filter(|c| c.1 == "InvalidSpec"))
        }
    })
    .await;
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.starts_with("spec.mcpServers[0].preset:"),
        "{message}"
    );
}

#[tokio::test]
async fn the_example_team_applied_with_kubectl_comes_up() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use nsh_operator_api::Agent;

    let plane = ControlPlane::shared().await.unwrap();
    let (ns, _operator) = start_operator(plane, "op-example").await;
    let client = plane.client().await.unwrap();
    let example = nsh_testenv::repo_root().join("e2e/examples/team.yaml");
    let output = plane
        .kubectl()
        .args(["apply", "-n", &ns, "-f"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Every agent gets its token, launch settings and pod; the mesh its Deployment.
    let sets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    for agent in ["alice", "bob"] {
        wait_for(&format!("{agent}'s StatefulSet"), WAIT, || {
            let sets = sets.clone();
            async move { sets.get_opt(agent).await.map_err(|e| e.to_string()) }
        })
        .await;
        assert!(
            Api::<Secret>::namespaced(client.clone(), &ns)
                .get_opt(&format!("{agent}-mesh-token"))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .get_opt(&format!("{agent}-launch"))
                .await
                .unwrap()
                .is_some()
        );
    }
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    for pod in ["alice-0", "bob-0"] {
        wait_for(pod, WAIT, || {
            let pods = pods.clone();
            async move { pods.get_opt(pod).await.map_err(|e| e.to_string()) }
        })
        .await;
        kubelet::mark_pod_ready(&client, &ns, pod).await.unwrap();
    }
    let agents = Api::<Agent>::namespaced(client.clone(), &ns);
    for agent in ["alice", "bob"] {
        until_ready(&agents, agent).await;
    }
    assert!(
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .get_opt("mesh")
            .await
            .unwrap()
            .is_some()
    );

    // The gateway: its settings, its Deployment and Service, its URL; Ready follows its pod.
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let gateway = wait_for("the gateway's Deployment", WAIT, || {
        let deployments = deployments.clone();
        async move {
            deployments
                .get_opt("tools")
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let args = gateway.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(args[..2], ["gateway", "run"]);
    let settings = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("tools-config")
        .await
        .unwrap()
        .data
        .unwrap()["gateway.yaml"]
        .clone();
    assert!(settings.contains("github__delete_*"), "{settings}");
    assert!(
        Api::<Service>::namespaced(client.clone(), &ns)
            .get_opt("tools")
            .await
            .unwrap()
            .is_some()
    );
    let gateways = Api::<nsh_operator_api::McpGateway>::namespaced(client.clone(), &ns);
    let pod = first_pod(&pods, "tools").await;
    kubelet::mark_pod_ready(&client, &ns, pod.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    let status = until_ready(&gateways, "tools").await.status.unwrap();
    assert_eq!(
        status.url.as_deref(),
        Some(format!("http://tools.{ns}.svc:8080/mcp").as_str())
    );
}

#[tokio::test]
async fn a_gateway_runs_its_command_upstreams_beside_it_and_agents_get_its_audience() {
    use k8s_openapi::api::core::v1::Secret;
    use nsh_operator_api::{Agent, McpGateway};

    let plane = ControlPlane::shared().await.unwrap();
    let (ns, _operator) = start_operator(plane, "op-gw").await;
    let client = plane.client().await.unwrap();
    Api::<MeshServer>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "mesh" }, "spec": {} })),
        )
        .await
        .unwrap();
    Api::<Team>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &object(json!({ "metadata": { "name": "alpha" }, "spec": { "meshRef": { "name": "mesh" } } })))
        .await
        .unwrap();
    let gateways = Api::<McpGateway>::namespaced(client.clone(), &ns);
    gateways
        .create(&PostParams::default(), &object(json!({ "metadata": { "name": "tools" }, "spec": {
            "teams": ["alpha"],
            "replicas": 2,
            "upstreams": [
                { "name": "github", "url": "https://api.githubcopilot.com/mcp/",
                  "headers": [{ "name": "Authorization", "valueFrom": { "secretKeyRef": { "name": "gh", "key": "auth" } } }] },
                { "name": "fetch", "command": { "command": "uvx", "args": ["mcp-server-fetch"], "image": "ghcr.io/astral-sh/uv:python3.12-bookworm-slim" } },
            ],
            "toolPolicy": { "rules": [{ "agents": ["alice"], "deny": ["github__*"] }] },
            "pinTools": true,
        } })))
        .await
        .unwrap();

    // The config: the command upstream is a loopback URL, the Secret header an env reference.
    let configs = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let config = wait_for("the gateway's config", WAIT, || {
        let configs = configs.clone();
        async move {
            configs
                .get_opt("tools-config")
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await
    .data
    .unwrap()["gateway.yaml"]
        .clone();
    let parsed =
        nsh_gateway_config::GatewayConfig::parse(std::path::Path::new("gateway.yaml"), &config)
            .unwrap_or_else(|e| panic!("{e}\n{config}"));
    assert_eq!(parsed.audience, format!("nsh-gateway/{ns}/tools"));
    assert_eq!(
        parsed.policy.upstreams[1].url.as_deref(),
        Some("http://127.0.0.1:9101/mcp")
    );
    assert!(parsed.policy.upstreams[1].command.is_none());
    assert_eq!(
        parsed.policy.upstreams[0].headers[0].value.as_deref(),
        Some("${NSH_UPSTREAM_0_HEADER_0}")
    );
    assert!(!config.contains("secretKeyRef"), "{config}");

    let deployment = wait_for("the gateway's Deployment", WAIT, || {
        let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
        async move {
            deployments
                .get_opt("tools")
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["gateway", "upstream-1-fetch"]);
    let upstream = &pod.containers[1];
    assert_eq!(
        upstream.image.as_deref(),
        Some("ghcr.io/astral-sh/uv:python3.12-bookworm-slim")
    );
    assert_eq!(
        upstream.args.as_ref().unwrap().join(" "),
        "mcp daemon serve --listen 127.0.0.1:9101 --name fetch -- uvx mcp-server-fetch"
    );
    assert_eq!(pod.init_containers.as_ref().unwrap()[0].name, "nsh-bin");
    let header = &pod.containers[0].env.as_ref().unwrap()[0];
    assert_eq!(header.name, "NSH_UPSTREAM_0_HEADER_0");
    let secret_ref = header
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (secret_ref.name.as_str(), secret_ref.key.as_str()),
        ("gh", "auth")
    );
    let service = Api::<Service>::namespaced(client.clone(), &ns)
        .get("tools")
        .await
        .unwrap();
    assert_eq!(
        service.spec.unwrap().session_affinity.as_deref(),
        Some("ClientIP"),
        "2025-11-25 sessions stay on one replica"
    );

    // An agent naming the gateway gets a token the gateway accepts and a headers helper.
    Api::<Agent>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "alice" }, "spec": {
            "teamRef": { "name": "alpha" },
            "mcpServers": [{ "name": "tools", "gatewayRef": { "name": "tools" } }],
        } })),
        )
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let jwt = wait_for("alice's token", WAIT, || {
        let secrets = secrets.clone();
        async move {
            Ok(secrets
                .get_opt("alice-mesh-token")
                .await
                .map_err(|e| e.to_string())?
                .and_then(|s| s.data)
                .map(|d| String::from_utf8(d["token"].0.clone()).unwrap()))
        }
    })
    .await;
    let claims = nsh_mesh_transport::token::peek_claims(&jwt).unwrap();
    assert_eq!(
        claims.aud.0,
        ["nsh-mesh".to_owned(), format!("nsh-gateway/{ns}/tools")]
    );
    let launch = wait_for("alice's launch settings", WAIT, || {
        let configs = configs.clone();
        async move {
            configs
                .get_opt("alice-launch")
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await
    .data
    .unwrap()["agent.yaml"]
        .clone();
    assert!(
        launch.contains(
            "headersHelper: nsh mesh auth-header --token-file /var/run/nsh/mesh-token/token"
        ),
        "{launch}"
    );

    // What the schema lets through and the gateway would refuse is refused by name.
    gateways
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "bad" }, "spec": {
            "teams": ["alpha"],
            "upstreams": [{ "name": "a__b", "url": "http://x/mcp" }],
        } })),
        )
        .await
        .unwrap_err();
    gateways
        .create(&PostParams::default(), &object(json!({ "metadata": { "name": "bad" }, "spec": {
            "teams": ["alpha"],
            "upstreams": [{ "name": "a", "url": "http://x/mcp", "headers": [{ "name": "X", "value": "${HOME}" }] }],
        } })))
        .await
        .unwrap();
    let (status, reason, message) = wait_for("bad's InvalidSpec", WAIT, || {
        let gateways = gateways.clone();
        async move {
            Ok(gateways
                .get("bad")
                .await
                .map_err(|e| e.to_string())?
                .status
                .and_then(|s| ready_condition(&s.common.conditions)))
        }
    })
    .await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(
        message.starts_with("spec.upstreams[0].headers[0].value:"),
        "{message}"
    );
}
