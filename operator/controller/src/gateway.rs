//! McpGateway: a ConfigMap with the gateway's settings (its spec, as `gateway.yaml`), a
//! Deployment running `nsh gateway run` with the allowed teams' keys mounted (a projected
//! volume of their key Secrets, so rotations need no copy), and a Service at
//! `http://<gateway>.<namespace>.svc:8080/mcp`, which Agents' `gatewayRef`s resolve to.
//!
//! The gateway process itself arrives with the gateway issue; until then its pods do not
//! become ready and `Ready` stays `False` with `WaitingForPods`, as it should.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, KeyToPath, ProjectedVolumeSource,
    SecretProjection, Service, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, ObjectMeta};
use kube::runtime::controller::Action;
use nsh_contract::command::GatewayRun;
use nsh_contract::url::GATEWAY_PORT;
use nsh_operator_api::common::CommonStatus;
use nsh_operator_api::{HasConditions as _, McpGateway, McpGatewayStatus, Team};

use crate::apply::{self, Applied, Desired, Kind};
use crate::pod::{config_hash, http_probe, restricted_container, restricted_deployment};
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
    let mut seen = std::collections::BTreeSet::new();
    for (index, upstream) in spec.upstreams.iter().enumerate() {
        if !seen.insert(upstream.name.as_str()) {
            return Err(Error::invalid(
                format!("spec.upstreams[{index}].name"),
                format!("`{}` is used twice", upstream.name),
                "give every upstream its own name (tools are exposed as <name>__<tool>)",
            ));
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

/// Builds the owned objects; `teams` are the teams whose keys the gateway verifies tokens with.
pub fn build(gateway: &McpGateway, teams: &[String], default_image: &str) -> Built {
    let name = gateway.name_any();
    let spec = &gateway.spec;
    let settings = serde_json::json!({
        "listen": format!("0.0.0.0:{GATEWAY_PORT}"),
        "teamKeysDir": KEYS_MOUNT,
        "teams": teams,
        "upstreams": spec.upstreams,
        "toolPolicy": spec.tool_policy,
        "rateLimit": spec.rate_limit,
        "audit": spec.audit,
    });
    let yaml = serde_saphyr::to_string(&settings).expect("gateway settings serialize");
    let hash = config_hash(yaml.as_bytes());
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
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| default_image.to_owned()),
        ),
        args: Some(
            GatewayRun {
                config: format!("{CONFIG_MOUNT}/{CONFIG_FILE}"),
            }
            .args(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(GATEWAY_PORT),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(http_probe("/readyz", "http")),
        liveness_probe: Some(http_probe("/healthz", "http")),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_MOUNT.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "team-keys".into(),
                mount_path: KEYS_MOUNT.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
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
    let deployment = restricted_deployment(
        meta(gateway, name.clone()),
        COMPONENT,
        &name,
        spec.replicas,
        hash,
        container,
        vec![config_volume, keys],
    );
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
    if let Some(status) = status(&gateway, &outcome) {
        apply::status(&ctx.client, gateway.as_ref(), &status).await?;
    }
    outcome.map(|_| Action::requeue(Duration::from_secs(300)))
}

/// The status for how the pipeline ended; `None` when an API call failed.
pub fn status(gateway: &McpGateway, outcome: &Result<(Refs, Applied)>) -> Option<McpGatewayStatus> {
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
            gateway.spec.upstreams.len(),
            refs.teams.join(", ")
        )
    });
    Some(McpGatewayStatus {
        common: CommonStatus {
            conditions: vec![ready],
            observed_generation: generation,
        },
        ready_replicas: Some(ready_replicas),
        // Reported by the gateway process once it answers (the gateway issue).
        upstreams: None,
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
