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
use nsh_operator_api::conditions::{self, reason};
use nsh_operator_api::{HasConditions as _, McpGateway, Team};

use crate::agent::GATEWAY_PORT;
use crate::apply::{self, condition};
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
    let hash = config_hash(&yaml);
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
            [
                "gateway",
                "run",
                "--config",
                &format!("{CONFIG_MOUNT}/{CONFIG_FILE}"),
            ]
            .map(str::to_owned)
            .to_vec(),
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

pub async fn reconcile(gateway: Arc<McpGateway>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = gateway.namespace().unwrap_or_default();
    let name = gateway.name_any();
    let generation = gateway.metadata.generation;
    let previous = gateway.conditions();
    if let Err(err) = validate(&gateway) {
        apply::set_not_ready(
            &ctx.client,
            gateway.as_ref(),
            reason::INVALID_SPEC,
            err.to_string(),
        )
        .await?;
        return Err(err);
    }
    // `*`: every team in the namespace, as it is now (a new Team is picked up on the next
    // reconcile, at the latest after the requeue below).
    let teams: Vec<String> = if gateway.spec.teams.iter().any(|t| t == "*") {
        Api::<Team>::namespaced(ctx.client.clone(), &namespace)
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(kube::ResourceExt::name_any)
            .collect()
    } else {
        gateway.spec.teams.clone()
    };
    let built = build(&gateway, &teams, &ctx.default_image);
    apply::apply(&ctx.client, &namespace, &built.config_map).await?;
    apply::apply(&ctx.client, &namespace, &built.service).await?;
    let deployment = apply::apply(&ctx.client, &namespace, &built.deployment).await?;
    let ready_replicas = deployment
        .status
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let serving = ready_replicas > 0;
    let ready = condition(
        previous,
        conditions::READY,
        serving,
        if serving {
            reason::RECONCILED
        } else {
            reason::WAITING_FOR_PODS
        },
        format!(
            "{ready_replicas}/{} replicas ready; {} upstream(s), teams {}",
            gateway.spec.replicas,
            gateway.spec.upstreams.len(),
            teams.join(", ")
        ),
        generation,
    );
    let status = serde_json::json!({
        "conditions": [ready],
        "observedGeneration": generation,
        "readyReplicas": ready_replicas,
        "url": format!("http://{name}.{namespace}.svc:{GATEWAY_PORT}/mcp"),
    });
    apply::apply_status(&ctx.client, gateway.as_ref(), status).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
