//! The node of [`ControlPlane::with_node`](crate::ControlPlane::with_node): containerd (with
//! runc and Debian's CNI plugins), kubelet, kube-scheduler, kube-proxy and CoreDNS, all inside
//! the control plane's network namespace, with images imported from `scripts/images.sh`.
//!
//! Settings follow what ran real pods on this machine class (`shared/reference/
//! one-node-cluster.md`): containerd may not lower `oom_score_adj` (no `CAP_SYS_RESOURCE`),
//! kubelet runs on cgroup v1 with the cgroupfs driver, image GC is off so the sandbox image
//! stays, pods get a bridge with hairpin mode and no masquerading, and CoreDNS answers
//! `cluster.local` only.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;

use crate::netns::{NetNs, run};
use crate::{Error, Result};

/// The node's name (and its kubelet's identity, `system:node:nsh-node`).
pub(crate) const NODE_NAME: &str = "nsh-node";
/// Services; the first address is the `kubernetes` Service, `.10` the cluster DNS.
pub(crate) const SERVICE_RANGE: &str = "10.96.0.0/16";
pub(crate) const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
pub(crate) const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// Pods of the one node.
const POD_RANGE: &str = "10.244.0.0/24";
const CLUSTER_RANGE: &str = "10.244.0.0/16";
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The node-side binaries, built by `scripts/testbin.sh` next to the control plane's.
#[derive(Debug, Clone)]
pub(crate) struct NodeBinaries {
    pub(crate) kube_scheduler: PathBuf,
    pub(crate) kubelet: PathBuf,
    pub(crate) kube_proxy: PathBuf,
    pub(crate) coredns: PathBuf,
}

impl NodeBinaries {
    pub(crate) fn locate() -> Result<Self> {
        let dir = crate::Binaries::dir();
        let find = |name: &'static str| -> Result<PathBuf> {
            let path = dir.join(name);
            path.is_file()
                .then(|| path.clone())
                .ok_or(Error::MissingBinary {
                    name,
                    path,
                    fix: "scripts/testbin.sh",
                })
        };
        // Debian's packages, installed by scripts/test.sh.
        for (name, path) in [
            ("containerd", "/usr/bin/containerd"),
            ("runc", "/usr/sbin/runc"),
            ("ctr", "/usr/bin/ctr"),
            ("the CNI bridge plugin", "/usr/lib/cni/bridge"),
            ("iptables", "/usr/sbin/iptables"),
            ("nsenter", "/usr/bin/nsenter"),
        ] {
            if !Path::new(path).is_file() {
                return Err(Error::MissingBinary {
                    name,
                    path: path.into(),
                    fix: "apt-get install -y containerd runc containernetworking-plugins iptables (or scripts/test.sh, which installs them)",
                });
            }
        }
        Ok(Self {
            kube_scheduler: find("kube-scheduler")?,
            kubelet: find("kubelet")?,
            kube_proxy: find("kube-proxy")?,
            coredns: find("coredns")?,
        })
    }
}

/// The folder `scripts/images.sh` writes image archives to.
pub fn images_dir() -> PathBuf {
    std::env::var_os("NSH_IMAGES_DIR").map_or_else(
        || {
            crate::Binaries::dir()
                .parent()
                .map_or_else(std::env::temp_dir, Path::to_path_buf)
                .join("images")
        },
        PathBuf::from,
    )
}

/// Files of the node in the control plane's folder.
#[derive(Debug, Clone)]
pub(crate) struct NodeFiles {
    pub(crate) dir: PathBuf,
}

impl NodeFiles {
    pub(crate) fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd/state/containerd.sock")
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("create {}", parent.display())))?;
        }
        std::fs::write(&path, text).map_err(Error::io(format!("write {}", path.display())))?;
        Ok(path)
    }

    /// The cgroup (in every v1 hierarchy) the kubelet puts pods under: one per test process,
    /// so the clean-up knows exactly what is ours.
    pub(crate) fn cgroup_root() -> String {
        format!("/nsh-node-{}", std::process::id())
    }

    /// A shell script that removes everything of this node: processes in its namespace and
    /// its pods' cgroups, mounts under its folder, the namespace (and the veth with it). Run
    /// on drop, by the janitor when the test process dies, and by the next start if both
    /// were killed.
    pub(crate) fn write_cleanup(&self, netns: &str) -> Result<PathBuf> {
        let dir = self.dir.display();
        let cgroup = Self::cgroup_root();
        let script = format!(
            r#"#!/bin/sh
# Removes the one-node test cluster of one test process. Safe to run twice.
ns={netns}
kill_all() {{
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  for procs in $(find /sys/fs/cgroup/*{cgroup} -name cgroup.procs 2>/dev/null); do
    for pid in $(cat "$procs" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  done
}}
kill_all; sleep 0.5; kill_all
# Innermost first: pods' volumes, container root filesystems, the pods' network namespaces.
grep -o " {dir}[^ ]*" /proc/self/mounts | sort -r | while read -r mount; do
  umount -l "$mount" 2>/dev/null
done
for hierarchy in /sys/fs/cgroup/*{cgroup}; do
  [ -d "$hierarchy" ] && find "$hierarchy" -depth -type d -exec rmdir {{}} \; 2>/dev/null
done
ip netns delete "$ns" 2>/dev/null
exit 0
"#
        );
        let path = self.write("cleanup.sh", &script)?;
        run(std::process::Command::new("chmod").arg("+x").arg(&path))?;
        Ok(path)
    }

    fn containerd_config(&self) -> Result<PathBuf> {
        let dir = self.dir.display();
        self.write(
            "containerd/config.toml",
            &format!(
                r#"version = 2
root = "{dir}/containerd/root"
state = "{dir}/containerd/state"
[grpc]
  address = "{dir}/containerd/state/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:{pause}"
  # Root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  # Pods' network namespaces under our folder, not /var/run/netns: the clean-up finds them.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{dir}/cni"
"#,
                pause = crate::versions::pause(),
            ),
        )
    }

    fn cni_config(&self) -> Result<PathBuf> {
        self.write(
            "cni/10-bridge.conflist",
            &serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "nsh-pods",
                "plugins": [
                    {
                        "type": "bridge", "bridge": "cni0", "isGateway": true,
                        // Pods talk to the node and each other only: nothing to masquerade.
                        "ipMasq": false,
                        // A pod reaching its own Service.
                        "hairpinMode": true,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{ "subnet": POD_RANGE }]],
                            "routes": [{ "dst": "0.0.0.0/0" }],
                            "dataDir": format!("{}/cni-ipam", self.dir.display()),
                        },
                    },
                    { "type": "portmap", "capabilities": { "portMappings": true } },
                ],
            })
            .to_string(),
        )
    }

    fn kubelet_config(&self, ca: &Path) -> Result<PathBuf> {
        let dir = self.dir.display();
        self.write(
            "kubelet/config.yaml",
            &format!(
                r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {cgroup}
failSwapOn: false
containerRuntimeEndpoint: unix://{socket}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
clusterDomain: cluster.local
clusterDNS: [{DNS_IP}]
podLogsDir: {dir}/pod-logs
healthzBindAddress: 127.0.0.1
# containerd 1.6 does not pin the sandbox image: no image GC, or pause is collected.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}}
serializeImagePulls: false
# Secret and ConfigMap volumes follow their objects within seconds, not the default minute:
# tests rotate keys and tokens and wait for the pods to see them.
syncFrequency: 10s
"#,
                cgroup = Self::cgroup_root(),
                socket = self.containerd_socket().display(),
                ca = ca.display(),
            ),
        )
    }

    fn kube_proxy_config(&self, kubeconfig: &Path) -> Result<PathBuf> {
        self.write(
            "kube-proxy/config.yaml",
            &format!(
                r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kubeconfig}}}
mode: iptables
clusterCIDR: {CLUSTER_RANGE}
hostnameOverride: {NODE_NAME}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the machine's conntrack settings alone.
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
"#,
                kubeconfig = kubeconfig.display(),
            ),
        )
    }

    fn corefile(&self, node_ip: Ipv4Addr, kubeconfig: &Path) -> Result<PathBuf> {
        self.write(
            "coredns/Corefile",
            &format!(
                r#"cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {node_ip}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} testenv
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
"#,
                kubeconfig = kubeconfig.display(),
            ),
        )
    }
}

/// What the control plane hands the node.
pub(crate) struct NodeInputs<'a> {
    pub(crate) netns: &'a NetNs,
    pub(crate) files: &'a NodeFiles,
    pub(crate) binaries: &'a NodeBinaries,
    pub(crate) ca_cert: &'a Path,
    pub(crate) admin_kubeconfig: &'a Path,
    pub(crate) node_kubeconfig: &'a Path,
}

/// One process to start: its name and command.
pub(crate) type Start = (String, std::process::Command);

/// Prepares the node (namespace sysctls, cgroups, configs, containerd with the images) and
/// returns the processes to start after containerd: kubelet, scheduler, proxy, DNS.
pub(crate) fn containerd(inputs: &NodeInputs<'_>) -> Result<Start> {
    let netns = inputs.netns;
    netns.inside(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    // Bridged pod traffic to Services must pass kube-proxy's rules.
    netns.inside(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"])?;
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .map_err(Error::io("read /sys/fs/cgroup"))?
        .flatten()
    {
        let path = hierarchy
            .path()
            .join(NodeFiles::cgroup_root().trim_start_matches('/'));
        if hierarchy.path().join("cgroup.procs").exists() {
            std::fs::create_dir_all(&path)
                .map_err(Error::io(format!("create {}", path.display())))?;
        }
    }
    inputs.files.cni_config()?;
    let config = inputs.files.containerd_config()?;
    let mut command = netns.command("/usr/bin/containerd");
    command.arg("--config").arg(config);
    Ok(("containerd".into(), command))
}

/// Images every node has: the pod sandbox and nsh (operator, mesh, sidecars).
pub(crate) const BASE_IMAGES: &[&str] = &["pause", "nsh"];

/// Waits for containerd's socket, then imports the image archives `names` (`<name>.tar` in
/// [`images_dir`]).
pub(crate) async fn import_images(files: &NodeFiles, names: &[&str]) -> Result<()> {
    let socket = files.containerd_socket();
    let deadline = Instant::now() + READY_TIMEOUT;
    while !socket.exists() {
        if Instant::now() >= deadline {
            return Err(Error::Io {
                context: format!("containerd socket {}", socket.display()),
                source: std::io::Error::other("never appeared"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in names {
        import_image(files, name)?;
    }
    Ok(())
}

/// Imports `<name>.tar` of [`images_dir`] into the node's containerd.
pub(crate) fn import_image(files: &NodeFiles, name: &str) -> Result<()> {
    let archive = images_dir().join(format!("{name}.tar"));
    if !archive.is_file() {
        return Err(Error::MissingBinary {
            name: "an image archive",
            path: archive,
            fix: "scripts/images.sh",
        });
    }
    run(std::process::Command::new("ctr")
        .arg("--address")
        .arg(files.containerd_socket())
        .args(["--namespace", "k8s.io", "images", "import"])
        .arg(&archive))
}

/// The node's other processes, in start order.
pub(crate) fn components(inputs: &NodeInputs<'_>) -> Result<Vec<Start>> {
    let (netns, files, binaries) = (inputs.netns, inputs.files, inputs.binaries);
    let kubelet_config = files.kubelet_config(inputs.ca_cert)?;
    let mut kubelet = netns.command(&binaries.kubelet);
    kubelet
        .arg(format!("--config={}", kubelet_config.display()))
        .arg(format!("--kubeconfig={}", inputs.node_kubeconfig.display()))
        .arg(format!("--node-ip={}", netns.node_ip))
        .arg(format!("--hostname-override={NODE_NAME}"))
        .arg(format!(
            "--root-dir={}",
            files.dir.join("kubelet/root").display()
        ))
        .arg(format!(
            "--cert-dir={}",
            files.dir.join("kubelet/pki").display()
        ))
        .arg("--v=1");
    let mut scheduler = netns.command(&binaries.kube_scheduler);
    scheduler
        .arg(format!(
            "--kubeconfig={}",
            inputs.admin_kubeconfig.display()
        ))
        .arg(format!(
            "--authentication-kubeconfig={}",
            inputs.admin_kubeconfig.display()
        ))
        .arg(format!(
            "--authorization-kubeconfig={}",
            inputs.admin_kubeconfig.display()
        ))
        .arg("--bind-address=127.0.0.1")
        .arg("--leader-elect=false");
    let proxy_config = files.kube_proxy_config(inputs.admin_kubeconfig)?;
    let mut proxy = netns.command(&binaries.kube_proxy);
    proxy.arg(format!("--config={}", proxy_config.display()));
    let corefile = files.corefile(netns.node_ip, inputs.admin_kubeconfig)?;
    let mut dns = netns.command(&binaries.coredns);
    dns.arg("-conf").arg(corefile);
    Ok(vec![
        ("kubelet".into(), kubelet),
        ("kube-scheduler".into(), scheduler),
        ("kube-proxy".into(), proxy),
        ("coredns".into(), dns),
    ])
}

/// The selector-less `kube-dns` Service at [`DNS_IP`] and its EndpointSlice at the node,
/// where CoreDNS listens.
pub(crate) fn dns_service_yaml(node_ip: Ipv4Addr) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: kube-dns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  clusterIP: {DNS_IP}
  ports:
  - {{name: dns, port: 53, protocol: UDP, targetPort: 53}}
  - {{name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-node
  namespace: kube-system
  labels: {{kubernetes.io/service-name: kube-dns}}
addressType: IPv4
endpoints:
- addresses: ["{node_ip}"]
  conditions: {{ready: true}}
ports:
- {{name: dns, port: 53, protocol: UDP}}
- {{name: dns-tcp, port: 53, protocol: TCP}}
"#
    )
}

/// Waits until the node reports `Ready`.
pub(crate) async fn until_ready(client: kube::Client) -> std::result::Result<(), String> {
    let nodes = Api::<Node>::all(client);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let last = match nodes.get_opt(NODE_NAME).await {
            Ok(Some(node)) => {
                let ready = node
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == "Ready");
                match ready {
                    Some(c) if c.status == "True" => return Ok(()),
                    Some(c) => format!("Ready={}: {}", c.status, c.message.unwrap_or_default()),
                    None => "no Ready condition yet".into(),
                }
            }
            Ok(None) => "the node has not registered".into(),
            Err(err) => err.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
