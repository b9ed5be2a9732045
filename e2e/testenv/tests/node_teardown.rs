//! A private one-node cluster leaves nothing behind when dropped: no process in its network
//! namespace, no namespace (nor its veth), no mount under its folder, no pod cgroup. (Its own
//! test binary: no other cluster of this process runs beside it.)

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use nsh_testenv::{ControlPlane, wait_for};

fn mounts_under(dir: &str) -> usize {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .nth(1)
                .is_some_and(|m| m.starts_with(dir))
        })
        .count()
}

#[tokio::test]
async fn a_dropped_node_leaves_no_container_mount_namespace_or_cgroup() {
    let plane = ControlPlane::start_with_node().await.unwrap();
    let netns = format!("/run/netns/nsh-node-{}", std::process::id());
    let cgroup = format!("/sys/fs/cgroup/pids/nsh-node-{}", std::process::id());
    assert!(Path::new(&netns).exists());
    let temp = std::env::temp_dir()
        .join("nsh-testenv")
        .display()
        .to_string();

    // A running pod: a container, its mounts and its cgroup.
    let ns = plane.namespace("teardown").await.unwrap();
    let pods = Api::<Pod>::namespaced(plane.client().await.unwrap(), &ns);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "p" },
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "c",
                "image": format!("registry.k8s.io/pause:{}", nsh_testenv::versions::pause()),
                "imagePullPolicy": "Never",
            }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_for("the pod to run", Duration::from_secs(120), || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("p").await.map_err(|e| e.to_string())?;
            Ok((pod.status.and_then(|s| s.phase).as_deref() == Some("Running")).then_some(()))
        }
    })
    .await;
    assert!(
        mounts_under(&temp) > 0,
        "the pod's mounts are there while it runs"
    );
    assert!(Path::new(&cgroup).exists());

    drop(plane);
    assert!(!Path::new(&netns).exists(), "namespace {netns} left behind");
    assert_eq!(mounts_under(&temp), 0, "mounts left under {temp}");
    assert!(!Path::new(&cgroup).exists(), "cgroup {cgroup} left behind");
    // Our end of the pair goes with the namespace; the kernel removes it in the background.
    let veth = format!("/sys/class/net/nshh{}", std::process::id() % 16384);
    wait_for("our veth to go", Duration::from_secs(10), || {
        let gone = !Path::new(&veth).exists();
        async move { Ok(gone.then_some(())) }
    })
    .await;
}
