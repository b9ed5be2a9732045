//! `nsh operator crds` and `nsh operator run` as shipped, against the harness's apiserver.

use std::path::Path;
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

#[tokio::test]
async fn run_reconciles_with_a_kubeconfig_and_stops_on_sigterm() {
    let plane = ControlPlane::shared().await.unwrap();
    plane
        .install_crds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds"))
        .await
        .unwrap();
    let ns = plane.namespace("cli-op").await.unwrap();
    let mut operator = Command::new(assert_cmd::cargo::cargo_bin("nsh"))
        .args(["operator", "run", "--default-image", "nsh:test"])
        .env("KUBECONFIG", plane.kubeconfig_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

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

    Command::new("kill")
        .args(["-TERM", &operator.id().to_string()])
        .status()
        .unwrap();
    assert!(operator.wait().unwrap().success());
}
