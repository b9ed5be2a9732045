//! McpGateway: a ConfigMap with the gateway's config (`gateway.yaml`, the same type as the
//! spec's policy), a Deployment running `nsh gateway run` with the allowed teams' keys mounted
//! (a projected volume of their key Secrets, so rotations need no copy), and a Service at
//! `http://<gateway>.<namespace>.svc:8080/mcp`, which Agents' `gatewayRef`s resolve to.
//!
//! Each `command` upstream runs in a container of its own in the gateway's pod, from the image
//! its spec names: an init container copies `nsh` into a shared volume, and the container runs
//! `nsh mcp daemon serve` on a loopback port, which the config names as that upstream's `url`.
//! Header values from Secrets reach the gateway as environment variables the config refers to
//! (`${NSH_UPSTREAM_<i>_HEADER_<j>}`), never as text in the ConfigMap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, KeyToPath, ProjectedVolumeSource, SecretKeySelector, SecretProjection, Service,
    ServicePort, ServiceSpec, Volume, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, ObjectMeta};
use kube::runtime::controller::Action;
use nsh_contract::command::{CopyBinary, GatewayRun, McpDaemonServe};
use nsh_contract::url::GATEWAY_PORT;
use nsh_gateway_config::GatewayConfig;
use nsh_operator_api::common::CommonStatus;
use nsh_operator_api::{HasConditions as _, McpGateway, McpGatewayStatus, Team};

use crate::apply::{self, Applied, Desired, Kind};
use crate::pod::{config_hash, http_probe, mount, restricted_container, restricted_deployment};
use crate::{Context, Error, Result, team};

const COMPONENT: &str = "mcp-gateway";
const CONFIG_MOUNT: &str = "/etc/nsh/gateway";
const KEYS_MOUNT: &str = "/etc/nsh/team-keys";
pub const CONFIG_FILE: &str = "gateway.yaml";

pub fn config_map_name(gateway: &str) -> String {
    format!("{gateway}-config")
}

/// What the schema cannot check.
pub fn validate(gateway: &McpGateway) -> Result<()> {
    let spec = &gateway.spec;
    if spec.teams.is_empty() {
        return Err(Error::invalid(
            "spec.teams",
            "no team may call this gateway",
            "list the teams whose agents may call it, or `*` for every team in the namespace",
        ));
    }
    nsh_gateway_config::check_policy(&spec.policy, "spec")
        .map_err(|e| Error::invalid(e.field, e.why, e.fix))?;
    for (index, upstream) in spec.policy.upstreams.iter().enumerate() {
        for (h, header) in upstream.headers.iter().enumerate() {
            if header.value.as_deref().is_some_and(|v| v.contains("${")) {
                return Err(Error::invalid(
                    format!("spec.upstreams[{index}].headers[{h}].value"),
                    "`${...}` refers to the gateway's environment, which the operator sets",
                    "put the secret in a Secret and use valueFrom.secretKeyRef",
                ));
            }
        }
    }
    Ok(())
}

/// Everything an McpGateway owns.
#[derive(Debug, Clone)]
pub struct Built {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
}

/// What an McpGateway's controller creates, watches and may delete.
pub const OWNS: &[Kind] = &[Kind::ConfigMap, Kind::Service, Kind::Deployment];

impl Built {
    /// In the order they are applied: the settings before the pods that read them.
    pub fn into_desired(self) -> Vec<Desired> {
        vec![
            Desired::present(self.config_map),
            Desired::present(self.service),
            Desired::present(self.deployment),
        ]
    }
}

/// The MCP URL agents use for `gateway`: its status once it reports one.
pub fn url(gateway: &McpGateway) -> String {
    gateway
        .status
        .as_ref()
        .and_then(|s| s.url.clone())
        .unwrap_or_else(|| {
            nsh_contract::url::gateway_service(
                &gateway.name_any(),
                &gateway.namespace().unwrap_or_default(),
            )
        })
}

fn meta(gateway: &McpGateway, name: String) -> ObjectMeta {
    apply::owned_meta(gateway, COMPONENT, name)
}

/// The first loopback port of `command` upstreams' containers (one port each, in order).
pub const UPSTREAM_BASE_PORT: u16 = 9100;
const NSH_BIN_MOUNT: &str = "/nsh/bin";
const PINS_MOUNT: &str = "/var/run/nsh/pins";

/// The environment variable carrying header `header` of upstream `upstream` from a Secret.
fn header_env(upstream: usize, header: usize) -> String {
    format!("NSH_UPSTREAM_{upstream}_HEADER_{header}")
}

/// A container name for upstream `index` (DNS-1123: lowercase letters, digits and `-`).
fn upstream_container(index: usize, name: &str) -> String {
    let cleaned: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut out = format!("upstream-{index}-{cleaned}");
    out.truncate(63);
    out.trim_end_matches('-').to_owned()
}

/// The gateway's config as its pod sees it: `command` upstreams become loopback URLs of their
/// containers, Secret headers become `${ENV}` references; and the containers and environment
/// that make those work.
#[derive(Debug, Clone, Default)]
pub struct PodPlan {
    pub config: GatewayConfig,
    pub upstream_containers: Vec<Container>,
    pub gateway_env: Vec<EnvVar>,
}

pub fn plan(gateway: &McpGateway, teams: &[String], image: &str) -> PodPlan {
    let name = gateway.name_any();
    let namespace = gateway.namespace().unwrap_or_default();
    let mut policy = gateway.spec.policy.clone();
    let mut upstream_containers = Vec::new();
    let mut gateway_env = Vec::new();
    for (index, upstream) in policy.upstreams.iter_mut().enumerate() {
        if let Some(command) = upstream.command.take() {
            let port = UPSTREAM_BASE_PORT + index as u16;
            let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            upstream.url = Some(nsh_contract::url::mcp_endpoint(listen));
            let args = McpDaemonServe {
                listen,
                name: upstream.name.clone(),
                command: std::iter::once(command.command.clone())
                    .chain(command.args.iter().cloned())
                    .collect(),
            }
            .args();
            let mut env: Vec<EnvVar> = command
                .env
                .iter()
                .map(|(k, v)| EnvVar {
                    name: k.clone(),
                    value: Some(v.clone()),
                    ..EnvVar::default()
                })
                .collect();
            // Many stdio servers (npx, uvx) write caches under $HOME.
            env.push(EnvVar {
                name: "HOME".into(),
                value: Some("/tmp".into()),
                ..EnvVar::default()
            });
            let mut security = restricted_container();
            // Any image may host a stdio server; most write somewhere besides $HOME.
            security.read_only_root_filesystem = Some(false);
            upstream_containers.push(Container {
                name: upstream_container(index, &upstream.name),
                image: Some(command.image.clone().unwrap_or_else(|| image.to_owned())),
                command: Some(vec![format!(
                    "{NSH_BIN_MOUNT}/{}",
                    nsh_contract::command::NSH
                )]),
                args: Some(args),
                env: Some(env),
                volume_mounts: Some(vec![
                    mount("nsh-bin", NSH_BIN_MOUNT, true),
                    mount("tmp", "/tmp", false),
                ]),
                security_context: Some(security),
                ..Container::default()
            });
        }
        for (h, header) in upstream.headers.iter_mut().enumerate() {
            if let Some(from) = header.value_from.take() {
                let var = header_env(index, h);
                header.value = Some(format!("${{{var}}}"));
                gateway_env.push(EnvVar {
                    name: var,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: from.secret_key_ref.name,
                            key: from.secret_key_ref.key,
                            optional: Some(false),
                        }),
                        ..EnvVarSource::default()
                    }),
                    ..EnvVar::default()
                });
            }
        }
    }
    // The pins the gateway records live in the pod (an emptyDir); the lasting ones are the
    // spec's `pinnedTools`.
    let config = GatewayConfig {
        listen: format!("0.0.0.0:{GATEWAY_PORT}"),
        audience: nsh_contract::url::gateway_audience(&name, &namespace),
        team_keys_dir: Some(KEYS_MOUNT.into()),
        teams: teams.to_vec(),
        pins_file: Some(format!("{PINS_MOUNT}/pins.json")),
        policy,
    };
    PodPlan {
        config,
        upstream_containers,
        gateway_env,
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// Builds the owned objects; `teams` are the teams whose keys the gateway verifies tokens with.
pub fn build(gateway: &McpGateway, teams: &[String], default_image: &str) -> Built {
    let name = gateway.name_any();
    let spec = &gateway.spec;
    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| default_image.to_owned());
    let plan = plan(gateway, teams, &image);
    let yaml = serde_saphyr::to_string(&plan.config).expect("gateway config serializes");
    // Pods roll when anything that applies only at start changes: the config is re-read live,
    // but upstream containers and header environment are not.
    let hash = config_hash(
        format!("{yaml}{:?}{:?}", plan.upstream_containers, plan.gateway_env).as_bytes(),
    );
    let config_map = ConfigMap {
        metadata: meta(gateway, config_map_name(&name)),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_owned(), yaml)])),
        ..ConfigMap::default()
    };
    let selector = apply::selector(COMPONENT, &name);
    let keys = Volume {
        name: "team-keys".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(
                teams
                    .iter()
                    .map(|team| VolumeProjection {
                        secret: Some(SecretProjection {
                            name: team::key_secret_name(team),
                            items: Some(vec![KeyToPath {
                                key: team::KEY_FIELD.into(),
                                path: team.clone(),
                                ..KeyToPath::default()
                            }]),
                            optional: Some(true),
                        }),
                        ..VolumeProjection::default()
                    })
                    .collect(),
            ),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    };
    let container = Container {
        name: "gateway".into(),
        image: Some(image.clone()),
        args: Some(
            GatewayRun {
                config: format!("{CONFIG_MOUNT}/{CONFIG_FILE}"),
            }
            .args(),
        ),
        env: (!plan.gateway_env.is_empty()).then(|| plan.gateway_env.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(GATEWAY_PORT),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(http_probe("/readyz", "http")),
        liveness_probe: Some(http_probe("/healthz", "http")),
        volume_mounts: Some(vec![
            mount("config", CONFIG_MOUNT, true),
            mount("team-keys", KEYS_MOUNT, true),
            mount("pins", PINS_MOUNT, false),
        ]),
        security_context: Some(restricted_container()),
        ..Container::default()
    };
    let config_volume = Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map_name(&name),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mut volumes = vec![config_volume, keys, empty_dir("pins")];
    if !plan.upstream_containers.is_empty() {
        volumes.extend([empty_dir("nsh-bin"), empty_dir("tmp")]);
    }
    let mut deployment = restricted_deployment(
        meta(gateway, name.clone()),
        COMPONENT,
        &name,
        spec.replicas,
        hash,
        container,
        volumes,
    );
    if !plan.upstream_containers.is_empty()
        && let Some(pod) = deployment
            .spec
            .as_mut()
            .and_then(|d| d.template.spec.as_mut())
    {
        pod.init_containers = Some(vec![Container {
            name: "nsh-bin".into(),
            image: Some(image),
            args: Some(
                CopyBinary {
                    to: format!("{NSH_BIN_MOUNT}/{}", nsh_contract::command::NSH),
                }
                .args(),
            ),
            volume_mounts: Some(vec![mount("nsh-bin", NSH_BIN_MOUNT, false)]),
            security_context: Some(restricted_container()),
            ..Container::default()
        }]);
        pod.containers.extend(plan.upstream_containers);
    }
    let service = Service {
        metadata: meta(gateway, name),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: i32::from(GATEWAY_PORT),
                target_port: Some(IntOrString::String("http".into())),
                ..ServicePort::default()
            }]),
            // A 2025-11-25 session lives in one pod; the 2026-07-28 revision has no sessions
            // and would need no affinity.
            session_affinity: (spec.replicas > 1).then(|| "ClientIP".to_owned()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Built {
        config_map,
        deployment,
        service,
    }
}

/// What an McpGateway refers to: the teams whose keys verify its callers' tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refs {
    pub teams: Vec<String>,
}

async fn dereference(client: &kube::Client, gateway: &McpGateway) -> Result<Refs> {
    // `*`: every team in the namespace, as it is now (a new Team is picked up on the next
    // reconcile, at the latest after the requeue).
    let teams = if gateway.spec.teams.iter().any(|t| t == "*") {
        Api::<Team>::namespaced(client.clone(), &gateway.namespace().unwrap_or_default())
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(kube::ResourceExt::name_any)
            .collect()
    } else {
        gateway.spec.teams.clone()
    };
    Ok(Refs { teams })
}

pub async fn reconcile(gateway: Arc<McpGateway>, ctx: Arc<Context>) -> Result<Action> {
    let outcome = async {
        let refs = dereference(&ctx.client, &gateway).await?;
        validate(&gateway)?;
        let built = build(&gateway, &refs.teams, &ctx.images.gateway);
        let applied = apply::owned(&ctx.client, gateway.as_ref(), built.into_desired()).await?;
        Ok((refs, applied))
    }
    .await;
    let reported = match &outcome {
        Ok(_) => reported_status(&ctx.client, &gateway).await,
        Err(_) => None,
    };
    if let Some(status) = status(&gateway, &outcome, reported) {
        apply::status(&ctx.client, gateway.as_ref(), &status).await?;
    }
    // Upstreams come and go without any object changing: look again within a minute.
    outcome.map(|_| Action::requeue(Duration::from_secs(60)))
}

/// What a gateway pod reports on `/status` (one pod's view; replicas see the same upstreams).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Reported {
    pub answering: Vec<String>,
    #[serde(default)]
    pub hidden_changed: BTreeMap<String, String>,
}

/// `/status` of a gateway pod, read through the apiserver's service proxy; `None` while no
/// pod answers.
async fn reported_status(client: &kube::Client, gateway: &McpGateway) -> Option<Reported> {
    let path = format!(
        "/api/v1/namespaces/{}/services/{}:http/proxy/status",
        gateway.namespace()?,
        gateway.name_any()
    );
    let request = http::Request::get(path).body(Vec::new()).ok()?;
    let text = tokio::time::timeout(Duration::from_secs(3), client.request_text(request))
        .await
        .ok()?
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// The status for how the pipeline ended; `None` when an API call failed.
pub fn status(
    gateway: &McpGateway,
    outcome: &Result<(Refs, Applied)>,
    reported: Option<Reported>,
) -> Option<McpGatewayStatus> {
    let generation = gateway.metadata.generation;
    let previous = gateway.conditions();
    let (refs, applied) = match outcome {
        Ok(done) => done,
        Err(err) => {
            return Some(McpGatewayStatus {
                common: apply::failed(previous, err, generation)?,
                ..McpGatewayStatus::default()
            });
        }
    };
    let name = gateway.name_any();
    let (ready_replicas, ready) = apply::serving(applied, &name, previous, generation, |ready| {
        format!(
            "{ready}/{} replicas ready; {} upstream(s), teams {}",
            gateway.spec.replicas,
            gateway.spec.policy.upstreams.len(),
            refs.teams.join(", ")
        )
    });
    Some(McpGatewayStatus {
        common: CommonStatus {
            conditions: vec![ready],
            observed_generation: generation,
        },
        ready_replicas: Some(ready_replicas),
        upstreams: reported
            .as_ref()
            .and_then(|r| i32::try_from(r.answering.len()).ok()),
        changed_tools: reported.map(|r| r.hidden_changed).unwrap_or_default(),
        url: Some(nsh_contract::url::gateway_service(
            &name,
            &gateway.namespace().unwrap_or_default(),
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_built_is_of_a_kind_the_controller_owns_and_watches() {
        let gw = gateway(
            serde_json::json!({ "upstreams": [{ "name": "a", "url": "http://a" }], "teams": ["alpha"] }),
        );
        for desired in build(&gw, &["alpha".into()], "nsh:1").into_desired() {
            assert!(
                OWNS.contains(&desired.kind()),
                "{:?} is not in OWNS",
                desired.kind()
            );
        }
    }

    fn gateway(spec: serde_json::Value) -> McpGateway {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nsh.dev/v1alpha1", "kind": "McpGateway",
            "metadata": { "name": "tools", "namespace": "ns", "uid": "g1" },
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn the_gateway_gets_its_config_keys_and_service() {
        let gw = gateway(serde_json::json!({
            "upstreams": [{ "name": "fetch", "command": { "command": "uvx", "args": ["mcp-server-fetch"] } }],
            "toolPolicy": { "deny": ["fetch__*"] },
            "teams": ["alpha"],
        }));
        validate(&gw).unwrap();
        let built = build(&gw, &["alpha".into()], "nsh:1");
        let config = &built.config_map.data.unwrap()[CONFIG_FILE];
        assert!(config.contains("teams:\n- alpha"), "{config}");
        assert!(config.contains("fetch__*"), "{config}");
        let pod = built.deployment.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.containers[0].args.as_ref().unwrap()[..2],
            ["gateway", "run"]
        );
        let keys = pod.volumes.as_ref().unwrap()[1].projected.as_ref().unwrap();
        let source = keys.sources.as_ref().unwrap()[0].secret.as_ref().unwrap();
        assert_eq!(source.name, "alpha-team-key");
        assert_eq!(source.items.as_ref().unwrap()[0].path, "alpha");
        assert_eq!(
            built.service.spec.unwrap().ports.unwrap()[0].port,
            i32::from(GATEWAY_PORT)
        );
    }

    #[test]
    fn specs_the_schema_cannot_catch_name_the_field() {
        let err = validate(&gateway(
            serde_json::json!({ "upstreams": [{ "name": "a", "url": "http://a" }] }),
        ))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("spec.teams:"), "{err}");
        let err = validate(&gateway(serde_json::json!({
            "upstreams": [{ "name": "a", "url": "http://a" }, { "name": "a", "url": "http://b" }],
            "teams": ["*"],
        })))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("spec.upstreams[1].name:"), "{err}");
    }
}
