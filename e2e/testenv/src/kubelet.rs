//! What a kubelet would do, for tests: there is none in the harness, so pods stay `Pending`
//! until a test reports them running through the status subresource.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};

use crate::Result;

/// Reports pod `name` as `Running` and `Ready`, as a kubelet would once its containers pass
/// their readiness probes. Workload controllers then count it in `readyReplicas`.
pub async fn mark_pod_ready(client: &kube::Client, namespace: &str, name: &str) -> Result<Pod> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let conditions: Vec<serde_json::Value> = [
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
    ]
    .iter()
    .map(|kind| serde_json::json!({ "type": kind, "status": "True", "lastTransitionTime": now }))
    .collect();
    let status = serde_json::json!({
        "status": { "phase": "Running", "startTime": now, "conditions": conditions }
    });
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    Ok(pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?)
}
