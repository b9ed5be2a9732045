//! `nsh operator crds` and `nsh operator run` as shipped, against the harness's apiserver.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use nsh_operator_api::Team;
use nsh_testenv::{ControlPlane, wait_for};

#[test]
fn crds_prints_every_crd_as_yaml() {
    let output = Command::new(assert_cmd::cargo::cargo_bin("nsh"))
        .args(["operator", "crds"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let yaml = String::from_utf8(output.stdout).unwrap();
    for name in [
        "meshservers.nsh.dev",
        "teams.nsh.dev",
        "agents.nsh.dev",
        "mcpgateways.nsh.dev",
    ] {
        assert!(yaml.contains(&format!("name: {name}")), "{name} missing");
    }
    assert_eq!(yaml.matches("\n---\n").count(), 3);
}

#[test]
fn rbac_prints_the_operators_cluster_role() {
    let output = Command::new(assert_cmd::cargo::cargo_bin("nsh"))
        .args(["operator", "rbac"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let yaml = String::from_utf8(output.stdout).unwrap();
    assert!(
        yaml.contains("kind: ClusterRole") && yaml.contains("name: nsh-operator"),
        "{yaml}"
    );
    assert!(yaml.contains("- leases"), "{yaml}");
}

#[tokio::test]
async fn run_reconciles_with_a_kubeconfig_and_stops_on_sigterm() {
    let plane = ControlPlane::shared().await.unwrap();
    plane
        .install_crds(&nsh_testenv::repo_root().join("crds"))
        .await
        .unwrap();
    let ns = plane.namespace("cli-op").await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("operator.log");
    let mut operator = common::operator_command(plane.kubeconfig_path(), &ns)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Port 0: the operator logs where its admin endpoints are.
    let admin =
        nsh_testenv::logged_addr(&log, "operator starting", "admin", Duration::from_secs(30)).await;

    let client = plane.client().await.unwrap();
    let team: Team = serde_json::from_value(serde_json::json!({ "metadata": { "name": "cli" }, "spec": { "meshRef": { "name": "m" } } })).unwrap();
    Api::<Team>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &team)
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(client, &ns);
    wait_for(
        "the operator binary to mint the team key",
        Duration::from_secs(60),
        || {
            let secrets = secrets.clone();
            async move {
                Ok(secrets
                    .get_opt("cli-team-key")
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|_| ()))
            }
        },
    )
    .await;

    // The admin endpoints report readiness and the reconciles that just happened.
    assert_eq!(http_get(admin, "/readyz"), "ok");
    // The key Secret appears mid-reconcile; the reconcile is counted when it finishes.
    wait_for(
        "the Team reconcile in /metrics",
        Duration::from_secs(30),
        || async move {
            let metrics = http_get(admin, "/metrics");
            Ok(metrics
                .lines()
                .any(|l| l.starts_with(r#"nsh_operator_reconciles_total{kind="Team"}"#))
                .then_some(()))
        },
    )
    .await;

    Command::new("kill")
        .args(["-TERM", &operator.id().to_string()])
        .status()
        .unwrap();
    assert!(operator.wait().unwrap().success());
}

/// The body of a plain HTTP/1.0 GET.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}
