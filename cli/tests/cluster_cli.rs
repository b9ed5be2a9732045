//! `nsh cluster status|token|logs` against the harness's API server with `nsh operator run`:
//! the operator answers token requests (and refuses the ones it must), the request Secret is
//! gone afterwards, and the status table lists the four kinds. Port-forward and logs that need
//! a kubelet are in e2e_example_team.rs.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use nsh_operator_api::{Agent, MeshServer, Team};
use nsh_testenv::process::ManagedProcess;
use nsh_testenv::{ControlPlane, wait_for};

fn nsh(plane: &ControlPlane, ns: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nsh"))
        .args(["cluster", "-n", ns])
        .args(args)
        .env("KUBECONFIG", plane.kubeconfig_path())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn create<K>(client: &kube::Client, ns: &str, value: serde_json::Value)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value).unwrap();
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

#[tokio::test]
async fn tokens_come_from_the_operator_and_status_lists_the_team() {
    let plane = ControlPlane::shared().await.unwrap();
    plane
        .install_crds(&nsh_testenv::repo_root().join("crds"))
        .await
        .unwrap();
    let ns = plane.namespace("cli-cluster").await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let operator = common::operator_command(plane.kubeconfig_path(), &ns);
    let _operator =
        ManagedProcess::spawn("nsh operator run", operator, &logs.path().join("op.log")).unwrap();

    let client = plane.client().await.unwrap();
    create::<MeshServer>(
        &client,
        &ns,
        serde_json::json!({
            "metadata": { "name": "mesh" }, "spec": {}
        }),
    )
    .await;
    create::<Team>(
        &client,
        &ns,
        serde_json::json!({
            "metadata": { "name": "alpha" },
            "spec": { "meshRef": { "name": "mesh" }, "groups": ["dev"] }
        }),
    )
    .await;
    create::<Agent>(
        &client,
        &ns,
        serde_json::json!({
            "metadata": { "name": "alice" }, "spec": { "teamRef": { "name": "alpha" } }
        }),
    )
    .await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let key = wait_for("the team key", Duration::from_secs(60), || {
        let secrets = secrets.clone();
        async move {
            let secret = secrets
                .get_opt("alpha-team-key")
                .await
                .map_err(|e| e.to_string())?;
            Ok(secret
                .and_then(|s| s.data)
                .and_then(|mut d| d.remove("key")))
        }
    })
    .await;

    // A token for a laptop agent, signed with the team key that stayed in the cluster.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("laptop.jwt");
    let out = Command::new(env!("CARGO_BIN_EXE_nsh"))
        .args([
            "cluster", "-n", &ns, "token", "--team", "alpha", "--agent", "laptop", "--out",
        ])
        .arg(&token_file)
        .env("KUBECONFIG", plane.kubeconfig_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("token for laptop of team alpha"),
        "{}",
        text(&out)
    );
    let key_file = dir.path().join("alpha");
    std::fs::write(&key_file, &key.0).unwrap();
    let decoded = Command::new(env!("CARGO_BIN_EXE_nsh"))
        .args(["mesh", "token", "decode", "-o", "json", "--token-file"])
        .arg(&token_file)
        .arg("--key-file")
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(decoded.status.success(), "{}", text(&decoded));
    let claims: serde_json::Value = serde_json::from_slice(&decoded.stdout).unwrap();
    assert_eq!(claims["claims"]["sub"], "laptop", "{claims}");
    assert_eq!(claims["claims"]["team"], "alpha", "{claims}");
    assert_eq!(
        claims["claims"]["groups"],
        serde_json::json!(["dev"]),
        "{claims}"
    );
    assert_eq!(claims["signature"], "valid", "{claims}");
    // Nothing of the request is left in the cluster.
    let requests = secrets
        .list(&ListParams::default().labels("nsh.dev/token-request=true"))
        .await
        .unwrap();
    assert!(requests.items.is_empty(), "{:?}", requests.items);

    // Refusals say why, naming the annotation and the fix.
    let taken = nsh(plane, &ns, &["token", "--agent", "alice"]);
    assert!(!taken.status.success());
    assert!(
        text(&taken).contains("the operator refused the token: metadata.annotations[nsh.dev/agent]: Agent `alice` of team `alpha` runs in the cluster"),
        "{}",
        text(&taken)
    );
    let long = nsh(plane, &ns, &["token", "--agent", "laptop", "--ttl", "3d"]);
    assert!(text(&long).contains("nsh.dev/ttl"), "{}", text(&long));
    let no_team = nsh(plane, &ns, &["token", "--team", "beta", "--agent", "x"]);
    assert!(
        text(&no_team).contains("--team beta: no such Team"),
        "{}",
        text(&no_team)
    );

    // The status table: every kind with its Ready condition.
    let status = nsh(plane, &ns, &["status", "-o", "json"]);
    assert!(status.status.success(), "{}", text(&status));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&status.stdout).unwrap();
    let listed: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (kind, name) in [
        ("MeshServer", "mesh"),
        ("Team", "alpha"),
        ("Agent", "alice"),
    ] {
        assert!(
            listed.contains(&(kind.to_owned(), name.to_owned())),
            "{listed:?}"
        );
    }
    let team = rows.iter().find(|r| r["kind"] == "Team").unwrap();
    assert!(
        ["True", "False"].contains(&team["ready"].as_str().unwrap()),
        "{team}"
    );
    let table = text(&nsh(plane, &ns, &["status"]));
    assert!(
        table.contains("KIND") && table.contains("REASON") && table.contains("AGE"),
        "{table}"
    );

    // Without a kubelet there is no pod: the logs verb says so rather than hanging.
    let logs = nsh(plane, &ns, &["logs", "mesh"]);
    assert!(!logs.status.success(), "{}", text(&logs));
    assert!(
        text(&logs).contains("no pod of mesh has started"),
        "{}",
        text(&logs)
    );
}
