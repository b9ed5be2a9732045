//! The contract between the operator and `nsh`: every command line and `NSH_*` variable the
//! operator writes into a pod spec is parsed here by `nsh`'s real clap parser, so a renamed or
//! removed flag fails this test instead of crash-looping a pod.

use std::collections::BTreeMap;
use std::ffi::OsStr;

use clap::CommandFactory as _;
use clap::Parser as _;
use k8s_openapi::api::core::v1::Container;
use nsh_operator::agent::workload;
use nsh_operator::{gateway, mesh_server};
use nsh_operator_api::{Agent, McpGateway, MeshServer};

use crate::cli::{Cli, Command};

/// The example team users apply first, as typed objects.
fn example_team() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/examples/team.yaml"),
    )
    .unwrap();
    text.split("\n---\n")
        .map(|doc| {
            let mut object: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
            object["metadata"]["namespace"] = "team-a".into();
            object["metadata"]["uid"] = "u1".into();
            object
        })
        .collect()
}

/// The example's McpGateway and MeshServer URLs, as the Agent controller resolves them.
fn example_urls() -> (BTreeMap<String, String>, String) {
    let gateways = BTreeMap::from([(
        "tools".to_owned(),
        nsh_contract::url::gateway_service("tools", "team-a"),
    )]);
    (
        gateways,
        nsh_contract::url::mesh_service("mesh", "team-a", 3456),
    )
}

fn of_kind<T: serde::de::DeserializeOwned>(objects: &[serde_json::Value], kind: &str) -> Vec<T> {
    objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| serde_json::from_value(o.clone()).unwrap())
        .collect()
}

/// `nsh` + the container's command (after `nsh`) and args.
fn command_line(container: &Container) -> Vec<String> {
    let mut line = container
        .command
        .clone()
        .unwrap_or_else(|| vec!["nsh".into()]);
    assert_eq!(line[0], "nsh", "{}: runs nsh", container.name);
    line.extend(container.args.iter().flatten().cloned());
    line
}

/// `env` as the flags that read those variables (clap reads the process environment, which a
/// test must not change), so each variable must be read by a flag of `subcommand`.
fn env_as_flags(subcommand: &[&str], env: &BTreeMap<String, String>) -> Vec<String> {
    let root = Cli::command();
    let mut command = &root;
    for name in subcommand {
        command = command.find_subcommand(name).unwrap();
    }
    env.iter()
        .flat_map(|(name, value)| {
            let arg = command
                .get_arguments()
                .chain(root.get_arguments())
                .find(|arg| arg.get_env() == Some(OsStr::new(name)))
                .unwrap_or_else(|| {
                    panic!("no flag of `nsh {}` reads {name}", subcommand.join(" "))
                });
            let long = format!("--{}", arg.get_long().unwrap());
            if arg.get_action().takes_values() {
                vec![long, value.clone()]
            } else {
                assert_eq!(value, "true", "{name} is a switch");
                vec![long]
            }
        })
        .collect()
}

/// The container's `NSH_*` variables with their values.
fn nsh_env(container: &Container) -> BTreeMap<String, String> {
    container
        .env
        .iter()
        .flatten()
        .filter(|e| e.name.starts_with("NSH_"))
        .map(|e| (e.name.clone(), e.value.clone().unwrap()))
        .collect()
}

fn parse(line: &[String]) -> Cli {
    Cli::try_parse_from(line).unwrap_or_else(|err| panic!("`{}`:\n{err}", line.join(" ")))
}

#[test]
fn the_agent_pod_runs_command_lines_nsh_accepts() {
    let objects = example_team();
    let (gateways, mesh_url) = example_urls();
    let agents: Vec<Agent> = of_kind(&objects, "Agent");
    assert_eq!(agents.len(), 2);
    for agent in &agents {
        let settings = workload::launch_settings(agent, &mesh_url, &gateways).unwrap();
        let built = workload::build(agent, &settings, &mesh_url, "nsh", "agent");
        let pod = built.stateful_set.spec.unwrap().template.spec.unwrap();
        let sidecar = &pod.init_containers.as_ref().unwrap()[0];
        match parse(&command_line(sidecar)).command {
            Command::Mesh(group) => assert!(
                matches!(group.verb, crate::mesh::MeshVerb::Client(_)),
                "the sidecar runs `nsh mesh client`"
            ),
            other => panic!("the sidecar runs {other:?}"),
        }
        let agent_container = &pod.containers[0];
        let line = command_line(agent_container);
        // The agent container's `NSH_*` variables are read by the Claude Code hooks it runs.
        let env = nsh_env(agent_container);
        assert!(!env.is_empty());
        let mut hook = vec![
            "nsh".to_owned(),
            "mesh".into(),
            "hook".into(),
            "Stop".into(),
        ];
        hook.extend(env_as_flags(&["mesh", "hook", "Stop"], &env));
        parse(&hook);
        assert!(
            matches!(parse(&line).command, Command::Agent(_)),
            "{line:?}"
        );
    }
}

#[test]
fn the_mesh_server_pod_runs_with_settings_nsh_accepts() {
    let objects = example_team();
    let mut meshes: Vec<MeshServer> = of_kind(&objects, "MeshServer");
    // And the settings the example leaves out: Redis, persistence, several replicas.
    meshes.push(
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nsh.dev/v1alpha1", "kind": "MeshServer",
            "metadata": { "name": "big", "namespace": "team-a", "uid": "u2" },
            "spec": { "replicas": 3, "redis": { "managed": true },
                      "persistence": { "enabled": true, "retention": "24h", "maxLength": 500 } },
        }))
        .unwrap(),
    );
    for mesh in &meshes {
        mesh_server::validate(mesh).unwrap();
        let built = mesh_server::build(mesh, &BTreeMap::new(), &"nsh".into());
        let pod = built.deployment.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        let env = built.config_map.data.unwrap();
        let mut line = command_line(container);
        line.extend(env_as_flags(&["mesh", "server"], &env));
        match parse(&line).command {
            Command::Mesh(group) => assert!(
                matches!(group.verb, crate::mesh::MeshVerb::Server(_)),
                "{line:?}"
            ),
            other => panic!("the mesh pod runs {other:?}"),
        }
        // A Redis URL kept in a Secret reaches the same flag.
        for extra in container.env.iter().flatten() {
            env_as_flags(
                &["mesh", "server"],
                &BTreeMap::from([(extra.name.clone(), "redis://r".to_owned())]),
            );
        }
    }
}

#[test]
fn the_gateway_pod_runs_command_lines_and_a_config_nsh_accepts() {
    let gateways: Vec<McpGateway> = of_kind(&example_team(), "McpGateway");
    let built = gateway::build(&gateways[0], &["alpha".to_owned()], "nsh");
    let pod = built.deployment.spec.unwrap().template.spec.unwrap();
    let line = command_line(&pod.containers[0]);
    assert!(
        matches!(parse(&line).command, Command::Gateway(_)),
        "{line:?}"
    );
    // The config it reads is one `nsh gateway run` accepts.
    let config = &built.config_map.data.unwrap()[gateway::CONFIG_FILE];
    nsh_gateway_config::GatewayConfig::parse(std::path::Path::new("gateway.yaml"), config)
        .unwrap_or_else(|e| panic!("{e}\n{config}"));
    // The example's `command` upstream runs in its own container, from the copied binary.
    let init = &pod.init_containers.as_ref().unwrap()[0];
    assert!(matches!(
        parse(&command_line(init)).command,
        Command::Mcp(_)
    ));
    let upstreams: Vec<&Container> = pod.containers.iter().skip(1).collect();
    assert!(!upstreams.is_empty());
    for upstream in upstreams {
        let line = command_line(&Container {
            command: Some(vec!["nsh".into()]),
            ..upstream.clone()
        });
        assert_eq!(
            upstream.command.as_ref().unwrap()[0],
            "/nsh/bin/nsh",
            "runs the copied binary"
        );
        assert!(matches!(parse(&line).command, Command::Mcp(_)), "{line:?}");
    }
}

#[test]
fn the_headers_helper_the_agent_gets_is_a_command_nsh_accepts() {
    let objects = example_team();
    let (gateways, mesh_url) = example_urls();
    let agents: Vec<Agent> = of_kind(&objects, "Agent");
    let with_gateway = agents
        .iter()
        .find(|a| a.spec.mcp_servers.iter().any(|s| s.gateway_ref.is_some()))
        .expect("an example agent names the gateway");
    let settings = workload::launch_settings(with_gateway, &mesh_url, &gateways).unwrap();
    let helper = settings
        .mcp
        .as_ref()
        .and_then(|m| m.servers.as_ref())
        .and_then(|s| s.values().find_map(|s| s.headers_helper.clone()))
        .expect("the gateway entry has a headers helper");
    let words = shlex::split(&helper).unwrap();
    assert!(
        matches!(parse(&words).command, Command::Mesh(_)),
        "{helper}"
    );
}

#[test]
fn the_charts_operator_pod_runs_a_command_line_nsh_accepts() {
    let helm = nsh_testenv::Binaries::locate().unwrap().helm;
    for sets in [&[][..], &["--set", "watchNamespaces={a,b}"][..]] {
        let output = std::process::Command::new(&helm)
            .args(["template", "nsh-mesh"])
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/nsh-mesh"))
            .args(["--kube-version", nsh_testenv::versions::kubernetes()])
            .args(sets)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let rendered = String::from_utf8(output.stdout).unwrap();
        let deployment: k8s_openapi::api::apps::v1::Deployment = rendered
            .split("\n---\n")
            .find(|doc| doc.contains("kind: Deployment"))
            .map(|doc| serde_saphyr::from_str(doc).unwrap())
            .unwrap();
        let container = &deployment.spec.unwrap().template.spec.unwrap().containers[0];
        let mut line = vec!["nsh".to_owned()];
        line.extend(container.args.iter().flatten().cloned());
        match parse(&line).command {
            Command::Operator(_) => {}
            other => panic!("the operator pod runs {other:?}"),
        }
        // Its variables are read by nsh's flags too (POD_* by leader election).
        let env = nsh_env(container);
        let mut with_env = line.clone();
        with_env.extend(env_as_flags(&["operator", "run"], &env));
        parse(&with_env);
    }
}
