//! MeshServer: Deployment, Service, ConfigMap (settings), the team keys Secret (every Team that
//! points at this mesh contributes its key), a PodDisruptionBudget above one replica, and, with
//! `redis.managed`, a single-pod Redis (Deployment + Service) for it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource,
    Secret, SecretKeySelector, SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, ObjectMeta};
use kube::runtime::controller::Action;
use nsh_contract::url::DEFAULT_MESH_PORT;
use nsh_contract::{command, env};
use nsh_operator_api::common::CommonStatus;
use nsh_operator_api::{HasConditions as _, MeshServer, MeshServerStatus, Team};

use crate::apply;
use crate::apply::{Applied, Desired, Kind};
use crate::pod::{
    config_hash, config_hash_of_map, http_probe, restricted_container, restricted_deployment,
};
use crate::{Context, Error, Images, Result, team};

const KEYS_MOUNT: &str = "/etc/nsh/team-keys";
const COMPONENT: &str = "mesh-server";

const REDIS_COMPONENT: &str = "redis";
const REDIS_PORT: i32 = 6379;

/// What the schema cannot check.
pub fn validate(mesh: &MeshServer) -> Result<()> {
    let spec = &mesh.spec;
    if spec.replicas > 1 && spec.redis.is_none() {
        return Err(Error::invalid(
            "spec.replicas",
            "several replicas form one mesh through Redis, and none is configured",
            "set spec.redis (url, secretRef, or managed: true), or run replicas: 1",
        ));
    }
    if spec.persistence.enabled && spec.redis.is_none() {
        return Err(Error::invalid(
            "spec.persistence.enabled",
            "persistence keeps messages in Redis, and none is configured",
            "set spec.redis (url, secretRef, or managed: true), or disable persistence",
        ));
    }
    // The schema's pattern admits `0/s`, which the server would refuse at start-up.
    if let Err(err) = spec.rate_limit.rate.parse::<nsh_contract::Rate>() {
        return Err(Error::invalid(
            "spec.rateLimit.rate",
            err.to_string(),
            "give a positive count, such as 50/s",
        ));
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
    /// The operator-run Redis, with `redis.managed`.
    pub redis: Option<(Deployment, Service)>,
}

/// What a MeshServer's controller creates, watches and may delete.
pub const OWNS: &[Kind] = &[
    Kind::ConfigMap,
    Kind::Secret,
    Kind::Service,
    Kind::Deployment,
    Kind::PodDisruptionBudget,
];

impl Built {
    /// In the order they are applied: settings and keys before the pods that read them; the
    /// PDB and the managed Redis deleted when the spec no longer asks for them.
    pub fn into_desired(self, mesh: &str) -> Vec<Desired> {
        let mut desired = vec![
            Desired::present(self.config_map),
            Desired::present(self.keys),
            Desired::present(self.service),
            Desired::present(self.deployment),
        ];
        desired.push(match self.pdb {
            Some(pdb) => Desired::present(pdb),
            None => Desired::Absent {
                kind: Kind::PodDisruptionBudget,
                name: mesh.to_owned(),
            },
        });
        match self.redis {
            Some((deployment, service)) => {
                desired.extend([Desired::present(service), Desired::present(deployment)]);
            }
            None => desired.extend(
                [Kind::Deployment, Kind::Service].map(|kind| Desired::Absent {
                    kind,
                    name: redis_name(mesh),
                }),
            ),
        }
        desired
    }
}

fn is_managed(mesh: &MeshServer) -> bool {
    mesh.spec.redis.as_ref().and_then(|r| r.managed) == Some(true)
}

pub fn redis_name(mesh: &str) -> String {
    format!("{mesh}-redis")
}

fn meta(mesh: &MeshServer, name: String) -> ObjectMeta {
    apply::owned_meta(mesh, COMPONENT, name)
}

pub fn keys_secret_name(mesh: &str) -> String {
    format!("{mesh}-team-keys")
}

/// Builds every owned object from the spec and the team keys (team name -> key bytes).
pub fn build(mesh: &MeshServer, team_keys: &BTreeMap<String, Vec<u8>>, images: &Images) -> Built {
    let name = mesh.name_any();
    let spec = &mesh.spec;
    let port = spec.service.port;
    let selector = apply::selector(COMPONENT, &name);

    // Redis serves the replicas (adapter) and persistence alike.
    let redis = if is_managed(mesh) {
        Some(format!("redis://{}:{REDIS_PORT}/0", redis_name(&name)))
    } else {
        spec.redis.as_ref().and_then(|r| r.url.clone())
    };
    let server = command::MeshServer {
        listen: SocketAddr::from((
            [0, 0, 0, 0],
            u16::try_from(port).unwrap_or(DEFAULT_MESH_PORT),
        )),
        team_keys_dir: KEYS_MOUNT.to_owned(),
        rate_limit: spec.rate_limit.rate.clone(),
        burst: u32::try_from(spec.rate_limit.burst).unwrap_or(1),
        redis,
        persistence: spec.persistence.enabled.then(|| command::Persistence {
            retention: spec.persistence.retention.clone(),
            max_len: spec
                .persistence
                .max_length
                .and_then(|n| u64::try_from(n).ok()),
        }),
        json_logs: true,
    };
    let settings = server.env();
    // A Redis URL with a password stays in its Secret: the pod reads it from there.
    let redis_from_secret = spec
        .redis
        .as_ref()
        .and_then(|r| r.secret_ref.clone())
        .map(|secret| EnvVar {
            name: env::mesh_server::REDIS.into(),
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
    let config_hash = config_hash_of_map(&settings);
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
        image: Some(spec.image.clone().unwrap_or_else(|| images.mesh.clone())),
        args: Some(server.args()),
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
    let keys_volume = Volume {
        name: "team-keys".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(keys_secret_name(&name)),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let deployment = restricted_deployment(
        meta(mesh, name.clone()),
        COMPONENT,
        &name,
        spec.replicas,
        config_hash,
        container,
        vec![keys_volume],
    );
    let service = Service {
        metadata: meta(mesh, name.clone()),
        spec: Some(ServiceSpec {
            type_: Some(format!("{:?}", spec.service.type_)),
            selector: Some(selector.clone()),
            // Socket.io's long-polling needs every request of a session on one replica.
            session_affinity: (spec.replicas > 1).then(|| "ClientIP".to_owned()),
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
    let redis = is_managed(mesh).then(|| build_redis(mesh, &images.redis));
    Built {
        config_map,
        keys,
        deployment,
        service,
        pdb,
        redis,
    }
}

/// One Redis pod for the mesh: data in an emptyDir (kept across container restarts, not pod
/// moves), append-only when persistence is on.
fn build_redis(mesh: &MeshServer, default_image: &str) -> (Deployment, Service) {
    let name = redis_name(&mesh.name_any());
    let selector = apply::selector(REDIS_COMPONENT, &name);
    let appendonly = if mesh.spec.persistence.enabled {
        "yes"
    } else {
        "no"
    };
    let tcp_probe = || k8s_openapi::api::core::v1::Probe {
        tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
            port: IntOrString::String("redis".into()),
            ..Default::default()
        }),
        period_seconds: Some(5),
        ..Default::default()
    };
    let container = Container {
        name: "redis".into(),
        image: Some(
            mesh.spec
                .redis
                .as_ref()
                .and_then(|r| r.image.clone())
                .unwrap_or_else(|| default_image.to_owned()),
        ),
        command: Some(vec!["redis-server".into()]),
        args: Some(
            [
                "--port",
                &REDIS_PORT.to_string(),
                "--dir",
                "/data",
                "--save",
                "",
                "--appendonly",
                appendonly,
                "--protected-mode",
                "no",
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: REDIS_PORT,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(tcp_probe()),
        liveness_probe: Some(tcp_probe()),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            ..VolumeMount::default()
        }]),
        security_context: Some(restricted_container()),
        ..Container::default()
    };
    let meta = |n: String| apply::owned_meta(mesh, REDIS_COMPONENT, n);
    let data = Volume {
        name: "data".into(),
        empty_dir: Some(Default::default()),
        ..Volume::default()
    };
    let mut deployment = restricted_deployment(
        meta(name.clone()),
        REDIS_COMPONENT,
        &name,
        1,
        config_hash(appendonly.as_bytes()),
        container,
        vec![data],
    );
    if let Some(spec) = deployment.spec.as_mut() {
        // Never two Redis pods at once: they would be two meshes.
        spec.strategy = Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
            type_: Some("Recreate".into()),
            ..Default::default()
        });
    }
    let service = Service {
        metadata: meta(name),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("redis".into()),
                port: REDIS_PORT,
                target_port: Some(IntOrString::String("redis".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    (deployment, service)
}

/// What a MeshServer refers to: the keys of every Team in its namespace that points at it
/// and already has one (team name -> key bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refs {
    pub team_keys: BTreeMap<String, Vec<u8>>,
}

async fn dereference(client: &kube::Client, mesh: &MeshServer) -> Result<Refs> {
    let namespace = mesh.namespace().unwrap_or_default();
    let teams = Api::<Team>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default())
        .await?;
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let mut team_keys = BTreeMap::new();
    for t in teams
        .items
        .iter()
        .filter(|t| t.spec.mesh_ref.name == mesh.name_any())
    {
        let secret = secrets
            .get_opt(&team::key_secret_name(&t.name_any()))
            .await?;
        if let Some(key) = secret
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(team::KEY_FIELD))
        {
            team_keys.insert(t.name_any(), key.0);
        }
    }
    Ok(Refs { team_keys })
}

pub async fn reconcile(mesh: Arc<MeshServer>, ctx: Arc<Context>) -> Result<Action> {
    let outcome = async {
        let refs = dereference(&ctx.client, &mesh).await?;
        validate(&mesh)?;
        let built = build(&mesh, &refs.team_keys, &ctx.images);
        let applied = apply::owned(
            &ctx.client,
            mesh.as_ref(),
            built.into_desired(&mesh.name_any()),
        )
        .await?;
        Ok((refs, applied))
    }
    .await;
    if let Some(status) = status(&mesh, &outcome) {
        apply::status(&ctx.client, mesh.as_ref(), &status).await?;
    }
    outcome.map(|_| Action::requeue(Duration::from_secs(300)))
}

/// The status for how the pipeline ended; `None` when an API call failed.
pub fn status(mesh: &MeshServer, outcome: &Result<(Refs, Applied)>) -> Option<MeshServerStatus> {
    let generation = mesh.metadata.generation;
    let previous = mesh.conditions();
    let (refs, applied) = match outcome {
        Ok(done) => done,
        Err(err) => {
            return Some(MeshServerStatus {
                common: apply::failed(previous, err, generation)?,
                ..MeshServerStatus::default()
            });
        }
    };
    let name = mesh.name_any();
    let (ready_replicas, ready) = apply::serving(applied, &name, previous, generation, |ready| {
        format!(
            "{ready}/{} replicas ready; {} team key(s) loaded",
            mesh.spec.replicas,
            refs.team_keys.len()
        )
    });
    Some(MeshServerStatus {
        common: CommonStatus {
            conditions: vec![ready],
            observed_generation: generation,
        },
        ready_replicas: Some(ready_replicas),
        url: Some(nsh_contract::url::mesh_service(
            &name,
            &mesh.namespace().unwrap_or_default(),
            mesh.spec.service.port,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_built_is_of_a_kind_the_controller_owns_and_watches() {
        let spec = serde_json::json!({ "replicas": 2, "redis": { "managed": true }, "persistence": { "enabled": true } });
        for spec in [serde_json::json!({}), spec] {
            let built = build(&mesh(spec), &BTreeMap::new(), &Images::from("nsh:test"));
            for desired in built.into_desired("mesh") {
                assert!(
                    OWNS.contains(&desired.kind()),
                    "{:?} is not in OWNS",
                    desired.kind()
                );
            }
        }
    }

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
            &Images::from("nsh:test"),
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
            build(&mesh(spec), keys, &Images::from("nsh:test"))
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
    fn specs_that_need_redis_without_one_are_refused_naming_the_field() {
        let refused = |spec: serde_json::Value, field: &str| {
            let err = validate(&mesh(spec)).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{field}:")), "{err}");
            assert!(err.contains("spec.redis"), "names the fix: {err}");
        };
        refused(serde_json::json!({ "replicas": 3 }), "spec.replicas");
        refused(
            serde_json::json!({ "persistence": { "enabled": true } }),
            "spec.persistence.enabled",
        );
        let err = validate(&mesh(
            serde_json::json!({ "redis": { "url": "redis://r" }, "persistence": { "enabled": true, "retention": "1 fortnight" } }),
        ))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("spec.persistence.retention:"), "{err}");
        let err = validate(&mesh(serde_json::json!({ "rateLimit": { "rate": "0/s" } })))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("spec.rateLimit.rate:"), "{err}");
        for fine in [
            serde_json::json!({}),
            serde_json::json!({ "replicas": 3, "redis": { "url": "redis://r" } }),
            serde_json::json!({ "replicas": 2, "redis": { "managed": true }, "persistence": { "enabled": true } }),
        ] {
            assert!(validate(&mesh(fine.clone())).is_ok(), "{fine}");
        }
    }

    #[test]
    fn several_replicas_get_redis_a_pdb_and_sticky_sessions() {
        let built = build(
            &mesh(serde_json::json!({ "replicas": 3, "redis": { "url": "redis://r:6379/1" } })),
            &BTreeMap::new(),
            &Images::from("nsh:test"),
        );
        assert_eq!(
            built.config_map.data.unwrap()["NSH_MESH_REDIS"],
            "redis://r:6379/1",
            "Redis without persistence still joins the replicas"
        );
        assert_eq!(built.deployment.spec.unwrap().replicas, Some(3));
        let pdb = built.pdb.expect("a PDB above one replica");
        assert_eq!(pdb.spec.unwrap().min_available, Some(IntOrString::Int(1)));
        assert_eq!(
            built.service.spec.unwrap().session_affinity.as_deref(),
            Some("ClientIP")
        );
        assert!(built.redis.is_none());
    }

    #[test]
    fn a_managed_redis_is_one_restricted_pod_the_mesh_points_at() {
        let built = build(
            &mesh(
                serde_json::json!({ "replicas": 2, "redis": { "managed": true }, "persistence": { "enabled": true } }),
            ),
            &BTreeMap::new(),
            &Images::from("nsh:test"),
        );
        assert_eq!(
            built.config_map.data.unwrap()["NSH_MESH_REDIS"],
            "redis://mesh-redis:6379/0"
        );
        let (deployment, service) = built.redis.expect("managed Redis objects");
        assert_eq!(deployment.metadata.name.as_deref(), Some("mesh-redis"));
        assert_eq!(service.metadata.name.as_deref(), Some("mesh-redis"));
        let spec = deployment.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
        let redis = &pod.containers[0];
        assert_eq!(redis.image.as_deref(), Some(nsh_contract::image::REDIS));
        let args = redis.args.clone().unwrap();
        let appendonly = args.iter().position(|a| a == "--appendonly").unwrap();
        assert_eq!(args[appendonly + 1], "yes", "persistence on: append-only");
        assert_eq!(
            redis
                .security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true)
        );
        assert_eq!(deployment.metadata.owner_references.unwrap()[0].uid, "m1");
    }

    #[test]
    fn persistence_reaches_the_server_and_a_secret_url_stays_in_its_secret() {
        let with_url = build(
            &mesh(
                serde_json::json!({ "redis": { "url": "redis://r:6379/0" }, "persistence": { "enabled": true, "retention": "24h", "maxLength": 500 } }),
            ),
            &BTreeMap::new(),
            &Images::from("nsh:test"),
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
            &Images::from("nsh:test"),
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
