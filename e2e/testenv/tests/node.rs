//! The one-node cluster runs real pods: the node registers Ready, a pod of the locally built
//! pause image runs, and `kubectl logs` and `exec` reach pods through the apiserver and kubelet.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use nsh_testenv::{ControlPlane, wait_for};

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_pod_of_a_locally_built_image_runs_on_the_node() {
    let plane = ControlPlane::with_node().await.unwrap();
    let ns = plane.namespace("node").await.unwrap();
    let pods = Api::<Pod>::namespaced(plane.client().await.unwrap(), &ns);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "sleeper" },
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "pause",
                "image": format!("registry.k8s.io/pause:{}", nsh_testenv::versions::pause()),
                "imagePullPolicy": "Never",
            }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = wait_for("the pod to run", WAIT, || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("sleeper").await.map_err(|e| e.to_string())?;
            let status = pod.status.clone().unwrap_or_default();
            let phase = status.phase.clone().unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            Ok((phase == "Running" && ready).then_some(pod))
        }
    })
    .await;
    let ip = running.status.unwrap().pod_ip.unwrap();
    assert!(
        ip.starts_with("10.244.0."),
        "a pod address from the bridge: {ip}"
    );

    // kubectl reaches the kubelet through the apiserver.
    let output = plane
        .kubectl()
        .args(["-n", &ns, "logs", "sleeper"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl logs: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // exec, in a pod of the nsh image (which has no shell: nsh itself answers).
    let nsh: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "nsh" },
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "nsh",
                "image": format!("ghcr.io/nsh-dev/nsh:{}", env!("CARGO_PKG_VERSION")),
                "imagePullPolicy": "Never",
                "args": ["up", "--data-dir", "/data"],
                "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
            }],
            "securityContext": { "fsGroup": 65532 },
            "volumes": [{ "name": "data", "emptyDir": {} }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &nsh).await.unwrap();
    let version = wait_for("kubectl exec in the nsh pod", WAIT, || {
        let output = plane
            .kubectl()
            .args([
                "-n",
                &ns,
                "exec",
                "nsh",
                "--",
                "/usr/local/bin/nsh",
                "--version",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let err = String::from_utf8_lossy(&output.stderr).into_owned();
        async move {
            if output.status.success() {
                Ok(Some(text))
            } else {
                Err(err)
            }
        }
    })
    .await;
    // `nsh 0.1.0 (commit 1a2b3c4d5e6f)`: the image's binary names what it was built from.
    let version = version.trim();
    assert!(
        version.starts_with(&format!("nsh {} (commit ", env!("CARGO_PKG_VERSION")))
            && !version.contains("unknown"),
        "{version}"
    );
}
