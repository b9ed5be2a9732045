//! A private control plane leaves no process behind when it is dropped. (Its own test binary,
//! so no shared instance runs beside it.)

use std::path::Path;

use nsh_testenv::ControlPlane;

fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        !s.lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    })
}

/// Pids of our direct children whose command is one of the control-plane binaries.
fn control_plane_children() -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().into_string().ok()?;
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let ppid = status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))?
                .trim()
                .to_owned();
            let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
            let name = exe.file_name()?.to_str()?.to_owned();
            (ppid == me
                && ["etcd", "kube-apiserver", "kube-controller-manager"].contains(&name.as_str()))
            .then_some(pid)
        })
        .collect()
}

#[tokio::test]
async fn dropping_a_control_plane_kills_every_process_and_removes_its_files() {
    let plane = ControlPlane::start().await.unwrap();
    let dir = plane.kubeconfig_path().parent().unwrap().to_owned();
    let pids = control_plane_children();
    assert_eq!(
        pids.len(),
        3,
        "etcd, kube-apiserver and kube-controller-manager: {pids:?}"
    );

    drop(plane);
    for pid in &pids {
        assert!(!running(pid), "process {pid} outlived its control plane");
    }
    assert!(
        !Path::new(&dir).exists(),
        "{} was not removed",
        dir.display()
    );
}
