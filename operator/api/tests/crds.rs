//! The CRDs: committed YAML matches the code, and the real apiserver serves them, applies the
//! example team, enforces their validation and reads back into the Rust types.

use std::path::PathBuf;

use kube::api::Api;
use nsh_operator_api::{Agent, McpGateway, MeshServer, Team};
use nsh_testenv::ControlPlane;

fn repo() -> PathBuf {
    nsh_testenv::repo_root()
}

#[test]
fn committed_crds_match_the_code() {
    for crd in nsh_operator_api::crds() {
        let path = repo().join("crds").join(nsh_operator_api::file_name(&crd));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == nsh_operator_api::to_yaml(&crd).unwrap(),
            "{} is out of date with the Rust types: run `cargo run -p nsh -- operator crds --out crds` and commit it",
            path.display()
        );
    }
}

fn kubectl(plane: &ControlPlane, args: &[&str]) -> std::process::Output {
    plane
        .kubectl()
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

async fn install_crds(plane: &ControlPlane) {
    plane.install_crds(&repo().join("crds")).await.unwrap();
}

#[tokio::test]
async fn the_example_team_applies_and_reads_back_with_defaults() {
    let plane = ControlPlane::shared().await.unwrap();
    install_crds(plane).await;
    let ns = plane.namespace("crds").await.unwrap();
    let applied = kubectl(plane, &["apply", "-n", &ns, "-f", "e2e/examples/team.yaml"]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    let client = plane.client().await.unwrap();
    let mesh = Api::<MeshServer>::namespaced(client.clone(), &ns)
        .get("mesh")
        .await
        .unwrap();
    // Defaults are applied by the apiserver from the schema.
    assert_eq!(mesh.spec.service.port, 3456);
    assert!(!mesh.spec.persistence.enabled);
    let team = Api::<Team>::namespaced(client.clone(), &ns)
        .get("alpha")
        .await
        .unwrap();
    assert_eq!(
        (
            team.spec.mesh_ref.name.as_str(),
            team.spec.token_ttl.as_str()
        ),
        ("mesh", "24h")
    );
    let bob = Api::<Agent>::namespaced(client.clone(), &ns)
        .get("bob")
        .await
        .unwrap();
    assert_eq!(bob.spec.profile, "team-member");
    let gateway = Api::<McpGateway>::namespaced(client, &ns)
        .get("tools")
        .await
        .unwrap();
    assert!(gateway.spec.policy.audit.enabled && !gateway.spec.policy.audit.log_arguments);

    // Short names and printer columns work in kubectl.
    let listed = kubectl(plane, &["get", "mesh,tm,ag,mcpgw", "-n", &ns]);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    for expected in [
        "meshserver.nsh.dev/mesh",
        "team.nsh.dev/alpha",
        "agent.nsh.dev/alice",
        "mcpgateway.nsh.dev/tools",
        "REPLICAS",
        "MESH",
        "TEAM",
        "UPSTREAMS",
    ] {
        assert!(
            table.contains(expected),
            "`{expected}` missing from:\n{table}"
        );
    }
}

#[tokio::test]
async fn invalid_specs_are_refused_with_messages_that_name_the_field() {
    let plane = ControlPlane::shared().await.unwrap();
    install_crds(plane).await;
    let ns = plane.namespace("crds-invalid").await.unwrap();
    let cases = [
        (
            "kind: MeshServer\nmetadata: {name: m}\nspec: {replicas: 3}",
            "spec.replicas above 1 needs spec.redis",
        ),
        (
            "kind: MeshServer\nmetadata: {name: m}\nspec: {persistence: {enabled: true}}",
            "spec.persistence.enabled needs spec.redis",
        ),
        (
            "kind: MeshServer\nmetadata: {name: m}\nspec: {redis: {url: 'redis://r:6379', managed: true}}",
            "set exactly one of url, secretRef or managed",
        ),
        (
            "kind: MeshServer\nmetadata: {name: m}\nspec: {replicas: 0}",
            "spec.replicas",
        ),
        (
            "kind: Team\nmetadata: {name: t}\nspec: {meshRef: {name: m}, tokenTtl: 'one day'}",
            "spec.tokenTtl",
        ),
        ("kind: Team\nmetadata: {name: t}\nspec: {}", "spec.meshRef"),
        (
            "kind: Agent\nmetadata: {name: a}\nspec: {teamRef: {name: t}, mcpServers: [{name: x, preset: git, url: 'https://x'}]}",
            "exactly one of preset, command, url or gatewayRef",
        ),
        (
            "kind: McpGateway\nmetadata: {name: g}\nspec: {upstreams: [{name: u}]}",
            "exactly one of url or command",
        ),
        (
            "kind: McpGateway\nmetadata: {name: g}\nspec: {upstreams: []}",
            "spec.upstreams",
        ),
    ];
    for (manifest, expected) in cases {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            format!("apiVersion: nsh.dev/v1alpha1\n{manifest}\n"),
        )
        .unwrap();
        let output = kubectl(
            plane,
            &["apply", "-n", &ns, "-f", file.path().to_str().unwrap()],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "accepted:\n{manifest}");
        assert!(
            stderr.contains(expected),
            "`{expected}` not in the refusal of\n{manifest}\n{stderr}"
        );
    }
}
