//! MeshServer: Deployment, Service, ConfigMap (settings), the team keys Secret (every Team that
//! points at this mesh contributes its key) and a PodDisruptionBudget above one replica.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource,
    PodSpec, PodTemplateSpec, Secret, SecretKeySelector, SecretVolumeSource, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta};
use kube::runtime::controller::Action;
use nsh_operator_api::conditions::{self, reason};
use nsh_operator_api::{HasConditions as _, MeshServer, Team};

use crate::apply::{self, condition};
use crate::pod::{config_hash, http_probe, restricted_container, restricted_pod, template_meta};
use crate::{Context, Error, Result, team};

const KEYS_MOUNT: &str = "/etc/nsh/team-keys";
const COMPONENT: &str = "mesh-server";

/// What the schema cannot check, and what this operator version cannot run yet.
pub fn validate(mesh: &MeshServer) -> Result<()> {
    let spec = &mesh.spec;
    if spec.replicas > 1 {
        return Err(Error::invalid(
            "spec.replicas",
            "several replicas over Redis are not supported by this version yet",
            "run replicas: 1 (persistence keeps messages across restarts)",
        ));
    }
    if let Some(redis) = &spec.redis {
        if redis.managed == Some(true) {
            return Err(Error::invalid(
                "spec.redis.managed",
                "an operator-run Redis is not supported by this version yet",
                "run Redis yourself and give spec.redis.url or spec.redis.secretRef",
            ));
        }
        if !spec.persistence.enabled {
            return Err(Error::invalid(
                "spec.redis",
                "Redis is only used for persistence in this version",
                "set spec.persistence.enabled: true, or remove spec.redis",
            ));
        }
    }
    if let Some(retention) = &spec.persistence.retention {
        humantime::parse_duration(retention).map_err(|e| {
            Error::invalid(
                "spec.persistence.retention",
                format!("`{retention}`: {e}"),
                "use a duration such as 168h or 7d",
            )
        })?;
    }
    Ok(())
}

/// Everything a MeshServer owns.
#[derive(Debug, Clone)]
pub struct Built {
    pub config_map: ConfigMap,
    pub keys: Secret,
    pub deployment: Deployment,
    pub service: Service,
    pub pdb: Option<PodDisruptionBudget>,
}

fn meta(mesh: &MeshServer, name: String) -> ObjectMeta {
    apply::owned_meta(mesh, COMPONENT, name)
}

pub fn keys_secret_name(mesh: &str) -> String {
    format!("{mesh}-team-keys")
}

/// Builds every owned object from the spec and the team keys (team name -> key bytes).
pub fn build(
    mesh: &MeshServer,
    team_keys: &BTreeMap<String, Vec<u8>>,
    default_image: &str,
) -> Built {
    let name = mesh.name_any();
    let spec = &mesh.spec;
    let port = spec.service.port;
    let selector = apply::selector(COMPONENT, &name);

    let settings: BTreeMap<String, String> = [
        ("NSH_MESH_LISTEN", format!("0.0.0.0:{port}")),
        ("NSH_MESH_TEAM_KEYS_DIR", KEYS_MOUNT.to_owned()),
        ("NSH_MESH_RATE_LIMIT", spec.rate_limit.rate.clone()),
        ("NSH_MESH_BURST", spec.rate_limit.burst.to_string()),
        ("NSH_LOG_FORMAT", "json".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut settings = settings;
    let persistence = &spec.persistence;
    if persistence.enabled {
        settings.insert("NSH_MESH_PERSISTENCE".into(), "true".into());
        if let Some(retention) = &persistence.retention {
            settings.insert("NSH_MESH_RETENTION".into(), retention.clone());
        }
        if let Some(max) = persistence.max_length {
            settings.insert("NSH_MESH_MAX_LEN".into(), max.to_string());
        }
        if let Some(url) = spec.redis.as_ref().and_then(|r| r.url.clone()) {
            settings.insert("NSH_MESH_REDIS".into(), url);
        }
    }
    // A Redis URL with a password stays in its Secret: the pod reads it from there.
    let redis_from_secret = spec
        .redis
        .as_ref()
        .filter(|_| persistence.enabled)
        .and_then(|r| r.secret_ref.clone())
        .map(|secret| EnvVar {
            name: "NSH_MESH_REDIS".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.name,
                    key: secret.key,
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    // Settings reach the pods as environment variables, which only apply on restart: the hash
    // in the pod template rolls the pods when they change. Keys need no restart (hot reload).
    let config_hash = config_hash(&settings);
    let config_map = ConfigMap {
        metadata: meta(mesh, format!("{name}-config")),
        data: Some(settings),
        ..ConfigMap::default()
    };

    let keys = Secret {
        metadata: meta(mesh, keys_secret_name(&name)),
        type_: Some("Opaque".to_owned()),
        data: Some(
            team_keys
                .iter()
                .map(|(team, key)| (team.clone(), ByteString(key.clone())))
                .collect(),
        ),
        ..Secret::default()
    };

    let probe = |path: &str| http_probe(path, "socketio");
    let container = Container {
        name: "mesh".to_owned(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| default_image.to_owned()),
        ),
        args: Some(vec!["mesh".into(), "server".into()]),
        env: redis_from_secret.map(|env| vec![env]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: format!("{name}-config"),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("socketio".into()),
            container_port: port,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/healthz")),
        volume_mounts: Some(vec![VolumeMount {
            name: "team-keys".into(),
            mount_path: KEYS_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        security_context: Some(restricted_container()),
        ..Container::default()
    };
    let deployment = Deployment {
        metadata: meta(mesh, name.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(template_meta(COMPONENT, &name, config_hash)),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(restricted_pod()),
                    volumes: Some(vec![Volume {
                        name: "team-keys".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some(keys_secret_name(&name)),
                            ..SecretVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    automount_service_account_token: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let service = Service {
        metadata: meta(mesh, name.clone()),
        spec: Some(ServiceSpec {
            type_: Some(format!("{:?}", spec.service.type_)),
            selector: Some(selector.clone()),
            ports: Some(vec![ServicePort {
                name: Some("socketio".into()),
                port,
                target_port: Some(IntOrString::String("socketio".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let pdb = (spec.replicas > 1).then(|| PodDisruptionBudget {
        metadata: meta(mesh, name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    });
    Built {
        config_map,
        keys,
        deployment,
        service,
        pdb,
    }
}

/// The keys of every Team in the namespace that points at `mesh` and already has one.
async fn team_keys(
    client: &kube::Client,
    namespace: &str,
    mesh: &str,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let teams = Api::<Team>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let mut keys = BTreeMap::new();
    for t in teams.items.iter().filter(|t| t.spec.mesh_ref.name == mesh) {
        let secret = secrets
            .get_opt(&team::key_secret_name(&t.name_any()))
            .await?;
        if let Some(key) = secret
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(team::KEY_FIELD))
        {
            keys.insert(t.name_any(), key.0);
        }
    }
    Ok(keys)
}

pub async fn reconcile(mesh: Arc<MeshServer>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = mesh.namespace().unwrap_or_default();
    let name = mesh.name_any();
    let generation = mesh.metadata.generation;
    let previous = mesh.conditions();

    if let Err(err) = validate(&mesh) {
        apply::set_not_ready(
            &ctx.client,
            mesh.as_ref(),
            reason::INVALID_SPEC,
            err.to_string(),
        )
        .await?;
        return Err(err);
    }

    let keys = team_keys(&ctx.client, &namespace, &name).await?;
    let built = build(&mesh, &keys, &ctx.default_image);
    apply::apply(&ctx.client, &namespace, &built.config_map).await?;
    apply::apply(&ctx.client, &namespace, &built.keys).await?;
    apply::apply(&ctx.client, &namespace, &built.service).await?;
    let deployment = apply::apply(&ctx.client, &namespace, &built.deployment).await?;
    match &built.pdb {
        Some(pdb) => {
            apply::apply(&ctx.client, &namespace, pdb).await?;
        }
        None => {
            let pdbs = Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &namespace);
            if pdbs.get_opt(&name).await?.is_some_and(|p| {
                p.owner_references()
                    .iter()
                    .any(|o| o.uid == mesh.uid().unwrap_or_default())
            }) {
                pdbs.delete(&name, &DeleteParams::default()).await?;
            }
        }
    }

    let ready_replicas = deployment
        .status
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let serving = ready_replicas > 0;
    let message = format!(
        "{ready_replicas}/{} replicas ready; {} team key(s) loaded",
        mesh.spec.replicas,
        keys.len()
    );
    let ready = condition(
        previous,
        conditions::READY,
        serving,
        if serving {
            reason::RECONCILED
        } else {
            reason::WAITING_FOR_PODS
        },
        message,
        generation,
    );
    let status = serde_json::json!({
        "conditions": [ready],
        "observedGeneration": generation,
        "readyReplicas": ready_replicas,
        "url": format!("ws://{name}.{namespace}.svc:{}", mesh.spec.service.port),
    });
    apply::apply_status(&ctx.client, mesh.as_ref(), status).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(spec: serde_json::Value) -> MeshServer {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nsh.dev/v1alpha1", "kind": "MeshServer",
            "metadata": { "name": "mesh", "namespace": "ns", "uid": "m1" },
            "spec": spec,
        }))
        .expect("fixture")
    }

    #[test]
    fn a_single_replica_mesh_builds_its_objects_with_restricted_pods() {
        let keys = BTreeMap::from([("alpha".to_owned(), b"k".to_vec())]);
        let built = build(
            &mesh(serde_json::json!({ "service": { "port": 4000 } })),
            &keys,
            "nsh:test",
        );
        assert!(built.pdb.is_none());
        let pod = built.deployment.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("nsh:test"));
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(
            (
                security.read_only_root_filesystem,
                security.allow_privilege_escalation
            ),
            (Some(true), Some(false))
        );
        assert_eq!(
            built.config_map.data.unwrap()["NSH_MESH_LISTEN"],
            "0.0.0.0:4000"
        );
        assert_eq!(built.keys.data.unwrap()["alpha"].0, b"k");
        assert_eq!(built.service.spec.unwrap().ports.unwrap()[0].port, 4000);
        let owner = &built.deployment.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("MeshServer", "m1")
        );
    }

    #[test]
    fn settings_changes_roll_the_pods_but_key_changes_do_not() {
        let hash = |spec: serde_json::Value, keys: &BTreeMap<String, Vec<u8>>| {
            build(&mesh(spec), keys, "nsh:test")
                .deployment
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()["nsh.dev/config-hash"]
                .clone()
        };
        let none = BTreeMap::new();
        let some = BTreeMap::from([("alpha".to_owned(), b"k".to_vec())]);
        let base = hash(serde_json::json!({}), &none);
        assert_eq!(base, hash(serde_json::json!({}), &some));
        assert_ne!(
            base,
            hash(
                serde_json::json!({ "rateLimit": { "rate": "10/s" } }),
                &none
            )
        );
    }

    #[test]
    fn unsupported_features_are_refused_naming_the_field() {
        let refused = |spec: serde_json::Value, field: &str| {
            let err = validate(&mesh(spec)).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{field}:")), "{err}");
        };
        refused(
            serde_json::json!({ "persistence": { "enabled": true }, "redis": { "managed": true } }),
            "spec.redis.managed",
        );
        refused(
            serde_json::json!({ "redis": { "url": "redis://r" } }),
            "spec.redis",
        );
        refused(
            serde_json::json!({ "replicas": 2, "redis": { "url": "redis://r" }, "persistence": { "enabled": true } }),
            "spec.replicas",
        );
        refused(
            serde_json::json!({ "redis": { "url": "redis://r" }, "persistence": { "enabled": true, "retention": "1 fortnight" } }),
            "spec.persistence.retention",
        );
        assert!(validate(&mesh(serde_json::json!({}))).is_ok());
    }

    #[test]
    fn persistence_reaches_the_server_and_a_secret_url_stays_in_its_secret() {
        let with_url = build(
            &mesh(
                serde_json::json!({ "redis": { "url": "redis://r:6379/0" }, "persistence": { "enabled": true, "retention": "24h", "maxLength": 500 } }),
            ),
            &BTreeMap::new(),
            "nsh:test",
        );
        let data = with_url.config_map.data.unwrap();
        assert_eq!(data["NSH_MESH_PERSISTENCE"], "true");
        assert_eq!(data["NSH_MESH_REDIS"], "redis://r:6379/0");
        assert_eq!(
            (
                data["NSH_MESH_RETENTION"].as_str(),
                data["NSH_MESH_MAX_LEN"].as_str()
            ),
            ("24h", "500")
        );
        let with_secret = build(
            &mesh(
                serde_json::json!({ "redis": { "secretRef": { "name": "redis", "key": "url" } }, "persistence": { "enabled": true } }),
            ),
            &BTreeMap::new(),
            "nsh:test",
        );
        assert!(
            !with_secret
                .config_map
                .data
                .unwrap()
                .contains_key("NSH_MESH_REDIS")
        );
        let pod = with_secret.deployment.spec.unwrap().template.spec.unwrap();
        let env = &pod.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, "NSH_MESH_REDIS");
        assert_eq!(
            env.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .key,
            "url"
        );
    }
}
