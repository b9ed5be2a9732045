//! End to end on the one-node cluster, as a user meets nsh-mesh: `helm install` both charts,
//! `kubectl apply -f e2e/examples/team.yaml`, and the team runs as real pods. The agents'
//! mesh-client sidecars reach the mesh Service by its DNS name with the tokens the operator
//! minted; a message from alice reaches bob's inbox, acked `delivered`, and group messages
//! reach the group. Then the faults: the mesh pod dies, the team key is rotated, an Agent is
//! deleted; then `helm upgrade` and `helm uninstall`.
//!
//! No model API is reachable here, so the chart is installed with the agent image's stand-in
//! for `claude` (`images.agent`); everything else is the real images, built by
//! `scripts/images.sh` from the repository's Dockerfiles.

mod common;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams};
use nsh_operator_api::{Agent, MeshServer};
use nsh_testenv::process::ManagedProcess;
use nsh_testenv::{ControlPlane, repo_root, wait_for};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(180);
const RELEASE_NAMESPACE: &str = "nsh-system";
const TEAM_NAMESPACE: &str = "team-a";

fn run(command: &mut std::process::Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn helm(plane: &ControlPlane, args: &[&str]) -> String {
    run(plane.helm().args(args))
}

fn chart(name: &str) -> String {
    repo_root().join("charts").join(name).display().to_string()
}

/// `kubectl port-forward` to `pod`'s `port`, on a local port kubectl picks (and prints).
struct PortForward {
    _process: ManagedProcess,
    port: u16,
}

async fn port_forward(
    plane: &ControlPlane,
    namespace: &str,
    pod: &str,
    port: u16,
    log: &Path,
) -> PortForward {
    let _ = std::fs::remove_file(log);
    let mut kubectl = plane.kubectl();
    kubectl.args([
        "-n",
        namespace,
        "port-forward",
        &format!("pod/{pod}"),
        &format!(":{port}"),
        "--address",
        "127.0.0.1",
    ]);
    let process = ManagedProcess::spawn(format!("port-forward {pod}"), kubectl, log).unwrap();
    let local = wait_for(&format!("port-forward to {pod}"), WAIT, || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let port = text.lines().find_map(|line| {
            line.strip_prefix("Forwarding from 127.0.0.1:")?
                .split_whitespace()
                .next()?
                .parse::<u16>()
                .ok()
        });
        async move { port.map(Some).ok_or(format!("kubectl says: {text}")) }
    })
    .await;
    PortForward {
        _process: process,
        port: local,
    }
}

/// An MCP client on `agent`'s mesh-client sidecar (loopback inside its pod).
async fn sidecar(
    plane: &ControlPlane,
    agent: &str,
    log: &Path,
) -> (PortForward, common::McpClient) {
    let forward = port_forward(plane, TEAM_NAMESPACE, &format!("{agent}-0"), 8765, log).await;
    let client = common::mcp_http_client(&format!("http://127.0.0.1:{}/mcp", forward.port)).await;
    (forward, client)
}

async fn until_ready<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + nsh_operator_api::HasConditions,
{
    wait_for(&format!("{name} Ready"), WAIT, || {
        let (api, name) = (api.clone(), name.to_owned());
        async move {
            let object = api.get(&name).await.map_err(|e| e.to_string())?;
            let ready = object.conditions().iter().find(|c| c.type_ == "Ready");
            match ready {
                Some(c) if c.status == "True" => Ok(Some(())),
                Some(c) => Err(format!("{}: {}", c.reason, c.message)),
                None => Ok(None),
            }
        }
    })
    .await;
}

/// Sends from `from` until the mesh acks it (the sidecar may still be reconnecting).
async fn send_until_acked(
    client: &common::McpClient,
    arguments: serde_json::Value,
) -> serde_json::Value {
    wait_for("a send the mesh acks", WAIT, || {
        let arguments = arguments.clone();
        async move {
            let (failed, answer) = common::call(client, "mesh_send", arguments).await;
            Ok((!failed).then_some(answer))
        }
    })
    .await
}

/// The name of the first pod that `labels` select.
async fn first_pod(pods: &Api<Pod>, labels: &str) -> String {
    let list = pods
        .list(&kube::api::ListParams::default().labels(labels))
        .await
        .unwrap();
    list.items
        .first()
        .and_then(|pod| pod.metadata.name.clone())
        .unwrap_or_else(|| panic!("no pod with {labels}"))
}

async fn mcp_gateway_step(plane: &ControlPlane, client: &kube::Client, log: &Path) {
    let image = format!(
        "ghcr.io/nsh-dev/nsh-agent-standin:{}",
        env!("CARGO_PKG_VERSION")
    );
    let manifest = format!(
        "apiVersion: nsh.dev/v1alpha1
kind: McpGateway
metadata: {{ name: echo }}
spec:
  teams: [alpha]
  upstreams:
  - name: echo
    command: {{ command: node, args: [/opt/nsh-test/echo-mcp.mjs], image: '{image}' }}
  toolPolicy: {{ deny: ['*__delete_*'] }}
---
apiVersion: nsh.dev/v1alpha1
kind: Agent
metadata: {{ name: dave }}
spec:
  teamRef: {{ name: alpha }}
  mcpServers:
  - {{ name: echo, gatewayRef: {{ name: echo }} }}
"
    );
    let file = log.with_extension("yaml");
    std::fs::write(&file, manifest).unwrap();
    run(plane
        .kubectl()
        .args(["-n", TEAM_NAMESPACE, "apply", "-f"])
        .arg(&file));
    let gateways = Api::<nsh_operator_api::McpGateway>::namespaced(client.clone(), TEAM_NAMESPACE);
    until_ready(&gateways, "echo").await;
    wait_for("the gateway's status to count its upstream", WAIT, || {
        let gateways = gateways.clone();
        async move {
            let status = gateways
                .get("echo")
                .await
                .map_err(|e| e.to_string())?
                .status;
            Ok((status.and_then(|s| s.upstreams) == Some(1)).then_some(()))
        }
    })
    .await;
    let secrets = Api::<Secret>::namespaced(client.clone(), TEAM_NAMESPACE);
    let token = wait_for("dave's token", WAIT, || {
        let secrets = secrets.clone();
        async move {
            Ok(secrets
                .get_opt("dave-mesh-token")
                .await
                .map_err(|e| e.to_string())?
                .and_then(|s| s.data)
                .map(|d| String::from_utf8(d["token"].0.clone()).unwrap()))
        }
    })
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), TEAM_NAMESPACE);
    let pod = first_pod(&pods, "app.kubernetes.io/instance=echo").await;
    let forward = port_forward(plane, TEAM_NAMESPACE, &pod, 8080, log).await;
    let url = format!("http://127.0.0.1:{}/mcp", forward.port);
    for revision in ["legacy", "2026-07-28"] {
        let mut caller = common::gateway::Driver::start(&url, &token, revision).await;
        assert_eq!(caller.hello["connected"], true, "{}", caller.hello);
        assert_eq!(caller.tools().await, ["echo__echo"], "{revision}");
        let answer = caller
            .call("echo__echo", json!({ "text": "via the gateway" }))
            .await;
        let text = answer["result"]["text"].as_str().unwrap_or_default();
        assert!(text.ends_with(": via the gateway"), "{revision}: {answer}");
        let hidden = caller.call("echo__delete_everything", json!({})).await;
        assert_eq!(
            hidden["error"]["message"], "tool `echo__delete_everything` not found",
            "{hidden}"
        );
        caller.close().await;
    }
    // A token minted for another gateway (alice names `tools`, not `echo`) is refused.
    let alice_token = String::from_utf8(
        secrets.get("alice-mesh-token").await.unwrap().data.unwrap()["token"]
            .0
            .clone(),
    )
    .unwrap();
    let refused = common::gateway::Driver::start(&url, &alice_token, "legacy").await;
    assert_eq!(refused.hello["connected"], false, "{}", refused.hello);
    let logs = run(plane
        .kubectl()
        .args(["-n", TEAM_NAMESPACE, "logs", &pod, "-c", "gateway"]));
    assert!(
        logs.lines().any(|l| l.contains("\"audit\":\"nsh-gateway\"")
            && l.contains("\"agent\":\"dave\"")
            && l.contains("\"decision\":\"denied\"")),
        "{logs}"
    );
}

/// alice sends `text` to bob until the mesh acks it `delivered`; it is then in bob's inbox.
async fn alice_to_bob(alice: &common::McpClient, bob: &common::McpClient, text: &str) {
    let ack = send_until_acked(alice, json!({ "to": "bob", "text": text })).await;
    assert_eq!(ack["status"], "delivered", "{ack}");
    assert!(inbox_texts(bob).await.contains(&text.to_owned()), "{text}");
}

/// `nsh` with the cluster's kubeconfig, as a laptop user runs it.
fn nsh_cluster(plane: &ControlPlane, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nsh"));
    command
        .args(["cluster", "-n", TEAM_NAMESPACE])
        .args(args)
        .env("KUBECONFIG", plane.kubeconfig_path());
    command
}

/// The laptop: `nsh cluster status`, `connect` (a token from the operator, a port-forward to
/// the mesh through the API server, a message from a terminal through it), `send` and `logs`.
async fn laptop_step(plane: &ControlPlane, bob: &common::McpClient, logs: &Path) {
    let status = run(&mut nsh_cluster(plane, &["status"]));
    let alice_row = status
        .lines()
        .find(|l| l.contains("Agent") && l.contains("alice"));
    assert!(
        alice_row.is_some_and(|l| l.contains("True")),
        "alice is Ready in:\n{status}"
    );

    let data = logs.join("laptop-data");
    let connect_log = logs.join("connect.log");
    let mut connect = nsh_cluster(
        plane,
        &[
            "connect",
            "--team",
            "alpha",
            "--agent",
            "laptop",
            "--data-dir",
        ],
    );
    connect.arg(&data);
    let mut connect = ManagedProcess::spawn("nsh cluster connect", connect, &connect_log).unwrap();
    let printed = wait_for("nsh cluster connect to connect", WAIT, || {
        let text = std::fs::read_to_string(&connect_log).unwrap_or_default();
        async move {
            Ok(text
                .contains("Ctrl-C ends the port-forward")
                .then_some(text))
        }
    })
    .await;
    // The printed terminal line works as printed, through the port-forward.
    let send_line = printed
        .lines()
        .find(|l| l.contains(" mesh send --server ws://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no send line in:\n{printed}"))
        .trim()
        .replace("'hello from laptop'", "'hello from the laptop'");
    assert!(
        send_line.contains("--to alice"),
        "a real recipient: {send_line}"
    );
    let to_bob = send_line.replace("--to alice", "--to bob");
    let sent = run(std::process::Command::new("sh").args(["-c", &to_bob]));
    assert!(sent.starts_with("delivered"), "{sent}");
    assert!(
        inbox_texts(bob)
            .await
            .contains(&"hello from the laptop".to_owned()),
        "bob got the laptop's message"
    );
    // The written agent config is one `nsh agent launch` takes.
    let config = printed
        .lines()
        .find_map(|l| l.trim().split_once(" agent launch --config "))
        .map(|(_, path)| path.to_owned())
        .unwrap_or_else(|| panic!("no launch line in:\n{printed}"));
    let dry = run(std::process::Command::new(env!("CARGO_BIN_EXE_nsh"))
        .args(["agent", "launch", "--dry-run", "--config", &config])
        .env("HOME", logs));
    assert!(
        dry.contains("mesh client --server ws://127.0.0.1:") || dry.contains("\"ws://127.0.0.1:"),
        "{dry}"
    );
    let pid = rustix::process::Pid::from_raw(connect.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    wait_for("connect to end on Ctrl-C", WAIT, || {
        let text = std::fs::read_to_string(&connect_log).unwrap_or_default();
        async move { Ok(text.contains("port-forward ended").then_some(())) }
    })
    .await;
    connect.kill();

    let quick = run(&mut nsh_cluster(
        plane,
        &["send", "--to", "bob", "a quick note"],
    ));
    assert!(quick.starts_with("delivered"), "{quick}");
    assert!(inbox_texts(bob).await.contains(&"a quick note".to_owned()));

    let mesh_log = run(&mut nsh_cluster(plane, &["logs", "mesh", "--tail", "20"]));
    assert!(!mesh_log.trim().is_empty(), "the mesh pod's log");
    let sidecar_log = run(&mut nsh_cluster(
        plane,
        &["logs", "bob", "-c", "mesh-client"],
    ));
    assert!(sidecar_log.contains("mesh-client"), "{sidecar_log}");
}

/// The messages in `client`'s agent's inbox.
async fn inbox_texts(client: &common::McpClient) -> Vec<String> {
    let (failed, inbox) = common::call(client, "mesh_inbox", json!({})).await;
    assert!(!failed, "{inbox}");
    inbox["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .filter_map(|m| m["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_example_team_runs_as_real_pods_and_its_agents_talk() {
    let plane = ControlPlane::with_node().await.unwrap();
    let client = plane.client().await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = |name: &str| logs.path().join(format!("{name}.log"));

    plane.load_image("nsh-agent-standin").await.unwrap();

    // 1. The charts: the CRDs, then the operator (with the stand-in for `claude`).
    helm(
        plane,
        &[
            "install",
            "nsh-mesh-crds",
            &chart("nsh-mesh-crds"),
            "--wait",
        ],
    );
    helm(
        plane,
        &[
            "install",
            "nsh-mesh",
            &chart("nsh-mesh"),
            "--namespace",
            RELEASE_NAMESPACE,
            "--create-namespace",
            "--set",
            "images.agent.repository=nsh-dev/nsh-agent-standin",
            "--wait",
            "--timeout",
            "3m",
        ],
    );
    let leases = Api::<Lease>::namespaced(client.clone(), RELEASE_NAMESPACE);
    wait_for("the operator to lead", WAIT, || {
        let leases = leases.clone();
        async move {
            let lease = leases
                .get_opt("nsh-operator")
                .await
                .map_err(|e| e.to_string())?;
            Ok(lease.and_then(|l| l.spec?.holder_identity))
        }
    })
    .await;
    let operator_pod = first_pod(
        &Api::<Pod>::namespaced(client.clone(), RELEASE_NAMESPACE),
        "app.kubernetes.io/name=nsh-operator",
    )
    .await;
    let metrics = port_forward(
        plane,
        RELEASE_NAMESPACE,
        &operator_pod,
        8080,
        &log("pf-operator"),
    )
    .await;
    let (code, body) = common::http_get(metrics.port, "/metrics").unwrap();
    assert_eq!(code, 200, "{body}");

    // 2. The example team, as the README says.
    run(plane
        .kubectl()
        .args(["create", "namespace", TEAM_NAMESPACE]));
    run(plane
        .kubectl()
        .args(["-n", TEAM_NAMESPACE, "apply", "-f"])
        .arg(repo_root().join("e2e/examples/team.yaml")));
    let meshes = Api::<MeshServer>::namespaced(client.clone(), TEAM_NAMESPACE);
    let agents = Api::<Agent>::namespaced(client.clone(), TEAM_NAMESPACE);
    until_ready(&meshes, "mesh").await;
    // Ready means the sidecar connected to ws://mesh.team-a.svc:3456 with its minted token.
    until_ready(&agents, "alice").await;
    until_ready(&agents, "bob").await;

    // 3. alice -> bob, through alice's sidecar, into bob's inbox.
    let (_alice_forward, alice) = sidecar(plane, "alice", &log("pf-alice")).await;
    let (_bob_forward, bob) = sidecar(plane, "bob", &log("pf-bob")).await;
    alice_to_bob(&alice, &bob, "hello from alice's pod").await;
    for (who, client) in [("alice", &alice), ("bob", &bob)] {
        let (failed, joined) =
            common::call(client, "mesh_group_join", json!({ "group": "dev" })).await;
        assert!(!failed, "{who}: {joined}");
    }
    let ack = send_until_acked(&alice, json!({ "group": "dev", "text": "standup in 5" })).await;
    assert_eq!(ack["delivered_to"], json!(["bob"]), "{ack}");
    let ack = send_until_acked(&bob, json!({ "group": "dev", "text": "on my way" })).await;
    assert_eq!(ack["delivered_to"], json!(["alice"]), "{ack}");
    assert!(inbox_texts(&alice).await.contains(&"on my way".to_owned()));

    // 3b. A laptop pointed at the cluster.
    laptop_step(plane, &bob, logs.path()).await;

    // 4a. The mesh pod dies: its Deployment replaces it, the sidecars reconnect.
    let pods = Api::<Pod>::namespaced(client.clone(), TEAM_NAMESPACE);
    let mesh_pod = first_pod(&pods, "app.kubernetes.io/component=mesh-server").await;
    pods.delete(&mesh_pod, &DeleteParams::default())
        .await
        .unwrap();
    alice_to_bob(&alice, &bob, "after the mesh restarted").await;

    // 4b. The team key is rotated (delete its Secret; the operator mints a new key and new
    // tokens, the mesh drops the old sockets, the sidecars reconnect with the new tokens).
    let secrets = Api::<Secret>::namespaced(client.clone(), TEAM_NAMESPACE);
    let old_token = secrets.get("alice-mesh-token").await.unwrap().data.unwrap()["token"].clone();
    secrets
        .delete("alpha-team-key", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("a new token for alice", WAIT, || {
        let (secrets, old) = (secrets.clone(), old_token.clone());
        async move {
            let secret = secrets
                .get("alice-mesh-token")
                .await
                .map_err(|e| e.to_string())?;
            Ok((secret.data.unwrap_or_default().get("token") != Some(&old)).then_some(()))
        }
    })
    .await;
    alice_to_bob(&alice, &bob, "after the key rotation").await;

    // 4c. Deleting an Agent removes its pod, token Secret and launch ConfigMap.
    agents
        .delete("bob", &DeleteParams::default())
        .await
        .unwrap();
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), TEAM_NAMESPACE);
    wait_for("bob's objects to go", WAIT, || {
        let (pods, secrets, configmaps) = (pods.clone(), secrets.clone(), configmaps.clone());
        async move {
            let gone = pods
                .get_opt("bob-0")
                .await
                .map_err(|e| e.to_string())?
                .is_none()
                && secrets
                    .get_opt("bob-mesh-token")
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none()
                && configmaps
                    .get_opt("bob-launch")
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none();
            Ok(gone.then_some(()))
        }
    })
    .await;

    // 5. An McpGateway whose `command` upstream runs in its own container (from the stand-in
    // image, which has Node and a stdio MCP server), and an Agent that names it: the agent's
    // operator-minted token gets in, the policy hides a tool, the call is audited in the pod's
    // log, and the McpGateway's status counts the upstream that answered.
    mcp_gateway_step(plane, &client, &log("pf-gateway")).await;

    // 6. helm upgrade with a changed value rolls the operator; helm uninstall leaves the CRDs
    // and the team's objects.
    let deployments = Api::<Deployment>::namespaced(client.clone(), RELEASE_NAMESPACE);
    let before = deployments
        .get("nsh-mesh")
        .await
        .unwrap()
        .metadata
        .generation;
    helm(
        plane,
        &[
            "upgrade",
            "nsh-mesh",
            &chart("nsh-mesh"),
            "--namespace",
            RELEASE_NAMESPACE,
            "--reuse-values",
            "--set",
            "logFormat=text",
            "--wait",
            "--timeout",
            "3m",
        ],
    );
    let after = deployments.get("nsh-mesh").await.unwrap();
    assert!(
        after.metadata.generation > before,
        "the upgrade changed the pod template"
    );
    let status = after.status.unwrap();
    assert_eq!(status.updated_replicas, Some(1), "rolled out");
    helm(
        plane,
        &[
            "uninstall",
            "nsh-mesh",
            "--namespace",
            RELEASE_NAMESPACE,
            "--wait",
        ],
    );
    helm(plane, &["uninstall", "nsh-mesh-crds", "--wait"]);
    assert!(deployments.get_opt("nsh-mesh").await.unwrap().is_none());
    assert!(
        agents.get_opt("alice").await.unwrap().is_some(),
        "the CRDs and the team stay"
    );
}
