//! The Agent's workload, built without a client: the `agent launch` settings the agent runs
//! with (a ConfigMap), and a one-pod StatefulSet (stable identity `<agent>-0`) holding the agent
//! container and the `nsh mesh client` native sidecar.
//!
//! The sidecar owns the agent's mesh connection and inbox for the pod's whole life; the agent
//! (`nsh agent launch` -> `claude`) reaches it over MCP on loopback and reads the inbox through
//! the Claude Code hooks, from a shared volume.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    PodSpec, PodTemplateSpec, SecretVolumeSource, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt as _;
use kube::api::ObjectMeta;
use nsh_agent_config::catalog::{self, CatalogContext};
use nsh_agent_config::layers::{ConfigFile, Inputs};
use nsh_agent_config::settings::{McpServer, McpSettings, MeshSettings, Settings};
use nsh_contract::command::{AgentLaunch, AuthHeader, MeshClient};
use nsh_contract::env;
use nsh_operator_api::Agent;
use nsh_operator_api::conditions::reason;

use crate::agent::token;
use crate::apply::{self, Desired};
use crate::pod::{
    config_hash, http_probe, mount, restricted_container, restricted_pod, template_meta,
};
use crate::{Error, Result};

const COMPONENT: &str = "agent";
/// MCP of the sidecar, on loopback only: the agent container reaches it, nothing else does.
pub const SIDECAR_MCP_PORT: u16 = 8765;
/// The sidecar's /healthz and /readyz, on the pod IP for the kubelet's probes.
pub const SIDECAR_ADMIN_PORT: u16 = 9465;
const TOKEN_MOUNT: &str = "/var/run/nsh/mesh-token";
const INBOX_MOUNT: &str = "/var/lib/nsh/inbox";
/// `XDG_CONFIG_HOME` of the agent container: the launch settings are its user config file.
const CONFIG_HOME: &str = "/etc/nsh-config";
const HOME: &str = "/home/agent";
const WORKSPACE: &str = "/workspace";
/// Key of the settings in the ConfigMap (mounted as `$XDG_CONFIG_HOME/nsh/agent.yaml`).
pub const LAUNCH_FILE: &str = "agent.yaml";

pub fn launch_config_name(agent: &str) -> String {
    format!("{agent}-launch")
}

/// The pod's name: the StatefulSet's only replica.
pub fn pod_name(agent: &str) -> String {
    format!("{agent}-0")
}

/// Everything the Agent owns besides its token Secret.
#[derive(Debug, Clone)]
pub struct Workload {
    pub config_map: ConfigMap,
    pub stateful_set: StatefulSet,
}

impl Workload {
    /// The settings before the pod that reads them.
    pub fn into_desired(self) -> [Desired; 2] {
        [
            Desired::present(self.config_map),
            Desired::present(self.stateful_set),
        ]
    }
}

/// MCP of the sidecar, where the agent container reaches it.
fn sidecar_mcp() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], SIDECAR_MCP_PORT))
}

fn token_file() -> String {
    format!("{TOKEN_MOUNT}/{}", token::TOKEN_FIELD)
}

/// The `agent launch` settings of the agent's pod, checked by resolving them exactly as
/// `nsh agent launch` will in the pod. `gateways` maps McpGateway names to their MCP URLs.
pub fn launch_settings(
    agent: &Agent,
    mesh_url: &str,
    gateways: &BTreeMap<String, String>,
) -> Result<Settings> {
    let spec = &agent.spec;
    if !catalog::BUILT_IN_PROFILES.contains(&spec.profile.as_str()) {
        return Err(Error::invalid(
            "spec.profile",
            format!("there is no built-in profile `{}`", spec.profile),
            format!("use one of {}", catalog::BUILT_IN_PROFILES.join(", ")),
        ));
    }
    let mut presets = Vec::new();
    let mut servers = BTreeMap::new();
    for (index, entry) in spec.mcp_servers.iter().enumerate() {
        let field = |what: &str| format!("spec.mcpServers[{index}].{what}");
        if let Some(preset) = &entry.preset {
            if !catalog::names().contains(&preset.as_str()) || preset == "mesh" {
                return Err(Error::invalid(
                    field("preset"),
                    format!("there is no preset `{preset}` for an agent pod"),
                    format!(
                        "use one of {} (the mesh client is always there)",
                        catalog::names()
                            .into_iter()
                            .filter(|p| *p != "mesh")
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            presets.push(preset.clone());
            continue;
        }
        let server = match (&entry.command, &entry.url, &entry.gateway_ref) {
            (Some(command), _, _) => McpServer {
                command: Some(command.command.clone()),
                args: Some(command.args.clone()),
                env: (!command.env.is_empty()).then(|| command.env.clone()),
                ..McpServer::default()
            },
            (None, Some(url), _) => McpServer {
                url: Some(url.clone()),
                ..McpServer::default()
            },
            // The gateway wants the agent's token; a helper reads it from the mounted Secret at
            // each connect, so a rotated token is picked up without a restart.
            (None, None, Some(gateway)) => McpServer {
                headers_helper: Some(
                    AuthHeader {
                        token_file: token_file(),
                    }
                    .command_line(),
                ),
                url: Some(gateways.get(&gateway.name).cloned().ok_or_else(|| {
                    Error::waiting(
                        reason::REFERENCE_MISSING,
                        format!(
                            "McpGateway `{}` (spec.mcpServers[{index}].gatewayRef) does not exist",
                            gateway.name
                        ),
                    )
                })?),
                ..McpServer::default()
            },
            (None, None, None) => {
                return Err(Error::invalid(
                    field("preset"),
                    "the entry has none of preset, command, url, gatewayRef",
                    "give exactly one",
                ));
            }
        };
        servers.insert(entry.name.clone(), server);
    }
    let settings = Settings {
        profile: Some(spec.profile.clone()),
        mesh: Some(MeshSettings {
            server: Some(mesh_url.to_owned()),
            token_file: Some(token_file()),
            inbox_dir: Some(INBOX_MOUNT.to_owned()),
            client_url: Some(nsh_contract::url::mcp_endpoint(sidecar_mcp())),
            ..MeshSettings::default()
        }),
        mcp: Some(McpSettings {
            presets: (!presets.is_empty()).then_some(presets),
            servers: (!servers.is_empty()).then_some(servers),
            ..McpSettings::default()
        }),
        ..Settings::default()
    };
    // Resolve as the pod will: an error here is one the agent would hit at start.
    let inputs = Inputs {
        user: Some(ConfigFile {
            path: format!("{CONFIG_HOME}/nsh/{LAUNCH_FILE}").into(),
            settings: settings.clone(),
            text: String::new(),
        }),
        context: CatalogContext {
            project_dir: WORKSPACE.into(),
            nsh: "nsh".into(),
            ..CatalogContext::default()
        },
        ..Inputs::default()
    };
    nsh_agent_config::layers::resolve(&inputs)
        .map_err(|e| Error::invalid("spec.mcpServers", e.to_string(), "fix the entry named"))?;
    Ok(settings)
}

fn meta(agent: &Agent, name: String) -> ObjectMeta {
    apply::owned_meta(agent, COMPONENT, name)
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// Builds the ConfigMap and the StatefulSet. `nsh_image` runs the sidecar; `agent_image` is
/// the default agent container image.
pub fn build(
    agent: &Agent,
    settings: &Settings,
    mesh_url: &str,
    nsh_image: &str,
    agent_image: &str,
) -> Workload {
    let name = agent.name_any();
    let yaml = serde_saphyr::to_string(settings).expect("settings serialize as YAML");
    // The settings apply when the agent starts: a change rolls the pod.
    let config_hash = config_hash(yaml.as_bytes());
    let config_map = ConfigMap {
        metadata: meta(agent, launch_config_name(&name)),
        data: Some(BTreeMap::from([(LAUNCH_FILE.to_owned(), yaml)])),
        ..ConfigMap::default()
    };

    let admin_probe = |path: &str| http_probe(path, "admin");
    // A native sidecar: an init container that keeps running, started before the agent and
    // stopped after it.
    let sidecar = Container {
        name: "mesh-client".into(),
        image: Some(nsh_image.to_owned()),
        args: Some(
            MeshClient {
                server: mesh_url.to_owned(),
                token_file: token_file(),
                inbox_dir: INBOX_MOUNT.to_owned(),
                listen: sidecar_mcp(),
                admin_listen: std::net::SocketAddr::from(([0, 0, 0, 0], SIDECAR_ADMIN_PORT)),
                json_logs: true,
            }
            .args(),
        ),
        restart_policy: Some("Always".into()),
        ports: Some(vec![ContainerPort {
            name: Some("admin".into()),
            container_port: i32::from(SIDECAR_ADMIN_PORT),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(admin_probe("/readyz")),
        liveness_probe: Some(admin_probe("/healthz")),
        volume_mounts: Some(vec![
            mount("mesh-token", TOKEN_MOUNT, true),
            mount("inbox", INBOX_MOUNT, false),
        ]),
        security_context: Some(restricted_container()),
        ..Container::default()
    };
    let launch = AgentLaunch {
        project_dir: WORKSPACE.into(),
    };
    let mut agent_env = vec![
        env("HOME", HOME),
        env("XDG_CONFIG_HOME", CONFIG_HOME),
        env("XDG_STATE_HOME", &format!("{HOME}/.local/state")),
        env(env::mesh_client::INBOX_DIR, INBOX_MOUNT),
        // Whose mail the hooks deliver (they also read the token the launch names).
        env(env::mesh_client::TEAM, &agent.spec.team_ref.name),
        env(env::mesh_client::AGENT, &name),
    ];
    agent_env.extend(agent.spec.env.iter().cloned());
    let agent_container = Container {
        name: "agent".into(),
        image: Some(
            agent
                .spec
                .image
                .clone()
                .unwrap_or_else(|| agent_image.to_owned()),
        ),
        command: Some(launch.command()),
        args: Some(launch.args()),
        working_dir: Some(WORKSPACE.into()),
        env: Some(agent_env),
        resources: agent.spec.resources.clone(),
        volume_mounts: Some(vec![
            mount("launch-config", &format!("{CONFIG_HOME}/nsh"), true),
            mount("inbox", INBOX_MOUNT, false),
            mount("home", HOME, false),
            mount("workspace", WORKSPACE, false),
            // The agent's own token (read-only): the launch config names it as
            // mesh.tokenFile, the hooks learn whose mail they deliver from it, and the
            // headers helper of the gateways it names sends it.
            mount("mesh-token", TOKEN_MOUNT, true),
        ]),
        security_context: Some(restricted_container()),
        stdin: Some(true),
        tty: Some(true),
        ..Container::default()
    };
    let selector = apply::selector(COMPONENT, &name);
    let stateful_set = StatefulSet {
        metadata: meta(agent, name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name.clone()),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(template_meta(COMPONENT, &name, config_hash)),
                spec: Some(PodSpec {
                    init_containers: Some(vec![sidecar]),
                    containers: vec![agent_container],
                    security_context: Some(restricted_pod()),
                    volumes: Some(vec![
                        Volume {
                            name: "mesh-token".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(token::token_secret_name(&name)),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "launch-config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: launch_config_name(&name),
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        empty_dir("inbox"),
                        empty_dir("home"),
                        empty_dir("workspace"),
                    ]),
                    automount_service_account_token: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    Workload {
        config_map,
        stateful_set,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_built_is_of_a_kind_the_controller_owns_and_watches() {
        let alice = agent("spec:\n  teamRef: { name: alpha }\n");
        let settings = launch_settings(&alice, MESH, &BTreeMap::new()).unwrap();
        let token = Desired::present(token::build_token_secret(&alice, "jwt"));
        for desired in build(&alice, &settings, MESH, "nsh", "agent")
            .into_desired()
            .into_iter()
            .chain([token])
        {
            assert!(
                crate::agent::OWNS.contains(&desired.kind()),
                "{:?} is not in OWNS",
                desired.kind()
            );
        }
    }

    fn agent(yaml: &str) -> Agent {
        let mut value: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        value["apiVersion"] = "nsh.dev/v1alpha1".into();
        value["kind"] = "Agent".into();
        value["metadata"] = serde_json::json!({ "name": "alice", "namespace": "ns", "uid": "a1" });
        serde_json::from_value(value).unwrap()
    }

    const MESH: &str = "ws://mesh.ns.svc:3456";

    #[test]
    fn the_pod_runs_the_agent_with_the_mesh_client_as_a_native_sidecar() {
        let alice = agent(
            "spec:\n  teamRef: { name: alpha }\n  env: [{ name: GIT_AUTHOR_NAME, value: alice }]\n",
        );
        let settings = launch_settings(&alice, MESH, &BTreeMap::new()).unwrap();
        let built = build(&alice, &settings, MESH, "nsh:1", "agent:1");
        let pod = built.stateful_set.spec.unwrap().template.spec.unwrap();
        let sidecar = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
        assert_eq!(sidecar.image.as_deref(), Some("nsh:1"));
        let args = sidecar.args.as_ref().unwrap().join(" ");
        assert!(args.contains("--server ws://mesh.ns.svc:3456"), "{args}");
        assert!(
            args.contains("--token-file /var/run/nsh/mesh-token/token"),
            "{args}"
        );
        assert!(args.contains("--listen 127.0.0.1:8765"), "{args}");
        let agent_container = &pod.containers[0];
        assert_eq!(agent_container.image.as_deref(), Some("agent:1"));
        assert_eq!(
            agent_container.args.as_ref().unwrap()[..2],
            ["agent", "launch"]
        );
        let env: Vec<&str> = agent_container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert!(env.contains(&"XDG_CONFIG_HOME") && env.contains(&"GIT_AUTHOR_NAME"));
        // Restricted Pod Security on every container.
        for container in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let security = container.security_context.as_ref().unwrap();
            assert_eq!(security.read_only_root_filesystem, Some(true));
            assert_eq!(security.allow_privilege_escalation, Some(false));
            assert_eq!(
                security.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_owned()][..])
            );
        }
        assert_eq!(pod.automount_service_account_token, Some(false));
        let launch = &built.config_map.data.unwrap()[LAUNCH_FILE];
        assert!(
            launch.contains("clientUrl: http://127.0.0.1:8765/mcp"),
            "{launch}"
        );
        assert!(launch.contains("profile: team-member"), "{launch}");
    }

    #[test]
    fn mcp_servers_become_launch_settings_and_bad_ones_name_the_field() {
        let alice = agent(
            "spec:\n  teamRef: { name: alpha }\n  mcpServers:\n  - { name: gh, preset: github }\n  - { name: docs, url: 'https://docs.example/mcp' }\n  - { name: tools, command: { command: tools-mcp, args: [--stdio] } }\n  - { name: shared, gatewayRef: { name: gw } }\n",
        );
        let gateways = BTreeMap::from([("gw".to_owned(), "http://gw.ns.svc:8080/mcp".to_owned())]);
        let settings = launch_settings(&alice, MESH, &gateways).unwrap();
        let mcp = settings.mcp.unwrap();
        assert_eq!(mcp.presets.unwrap(), ["github"]);
        let servers = mcp.servers.unwrap();
        assert_eq!(
            servers["shared"].url.as_deref(),
            Some("http://gw.ns.svc:8080/mcp")
        );
        assert_eq!(servers["tools"].command.as_deref(), Some("tools-mcp"));

        let err = launch_settings(&alice, MESH, &BTreeMap::new()).unwrap_err();
        assert!(
            matches!(err, Error::Waiting { .. }),
            "a missing gateway is waited for: {err}"
        );

        let bad = agent(
            "spec:\n  teamRef: { name: alpha }\n  mcpServers: [{ name: x, preset: gopher }]\n",
        );
        let err = launch_settings(&bad, MESH, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("spec.mcpServers[0].preset:"), "{err}");
        let bad = agent("spec:\n  teamRef: { name: alpha }\n  profile: wizard\n");
        let err = launch_settings(&bad, MESH, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("spec.profile:") && err.contains("team-member"),
            "{err}"
        );
    }

    #[test]
    fn a_settings_change_rolls_the_pod() {
        let hash = |yaml: &str| {
            let a = agent(yaml);
            let settings = launch_settings(&a, MESH, &BTreeMap::new()).unwrap();
            build(&a, &settings, MESH, "nsh", "agent")
                .stateful_set
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()["nsh.dev/config-hash"]
                .clone()
        };
        let base = hash("spec:\n  teamRef: { name: alpha }\n");
        assert_eq!(base, hash("spec:\n  teamRef: { name: alpha }\n"));
        assert_ne!(
            base,
            hash("spec:\n  teamRef: { name: alpha }\n  profile: solo-developer\n")
        );
    }
}
