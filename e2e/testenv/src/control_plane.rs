//! etcd + kube-apiserver + kube-controller-manager on loopback, with envtest's flags plus the
//! controller-manager, so garbage collection, namespace deletion and the workload controllers
//! behave as in a real cluster. There is no kubelet: pods stay `Pending` unless a test sets
//! their status through the status subresource.
//!
//! [`ControlPlane::with_node`] is the same control plane plus a node where pods really run
//! ([`crate::node`]), all inside a network namespace of the test's own ([`crate::netns`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::netns::NetNs;
use crate::node::{self, NodeBinaries, NodeFiles, NodeInputs};
use crate::pki::{ADMIN_USER, Pki, PkiFor};
use crate::process::ManagedProcess;
use crate::{Binaries, Error, Result, free_port};

const READY_TIMEOUT: Duration = Duration::from_secs(90);
const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";
/// Controllers that need a cloud provider; everything else runs, as in a real cluster.
const CLOUD_CONTROLLERS: &[&str] = &[
    "cloud-node-lifecycle-controller",
    "node-route-controller",
    "service-lb-controller",
];

/// A private Kubernetes control plane. Dropping it kills every process and removes its files.
#[derive(Debug)]
pub struct ControlPlane {
    server: String,
    kubeconfig: PathBuf,
    binaries: Binaries,
    /// Started in order etcd, apiserver, controller-manager (then the node's); stopped in
    /// reverse.
    processes: Vec<ManagedProcess>,
    /// With a node: its namespace, files and janitor.
    node: Option<NodeParts>,
    // Declared last so the files outlive the processes that use them.
    dir: tempfile::TempDir,
}

/// What a control plane with a node has besides the processes.
#[derive(Debug)]
struct NodeParts {
    netns: NetNs,
    files: NodeFiles,
    binaries: NodeBinaries,
    /// Removes the node (see [`NodeFiles::write_cleanup`]).
    cleanup: PathBuf,
    /// Runs `cleanup` if the test process dies without dropping the node (it is a static).
    _janitor: ManagedProcess,
}

impl ControlPlane {
    /// The control plane every test of this test binary shares, started on first use.
    ///
    /// It is never dropped: its processes die with the test process (parent-death signal), and
    /// the next start removes the folders that dead test processes left behind. Clients are
    /// made per test with [`ControlPlane::client`], because a client is tied to the Tokio
    /// runtime that built it and every `#[tokio::test]` has its own.
    pub async fn shared() -> Result<&'static Self> {
        static SHARED: tokio::sync::OnceCell<ControlPlane> = tokio::sync::OnceCell::const_new();
        SHARED.get_or_try_init(Self::start).await
    }

    /// The control plane with a node every test of this test binary shares (one node per test
    /// binary at most), started on first use: pods really run, Services and cluster DNS work,
    /// `kubectl logs`, `exec` and `port-forward` too. Everything lives in a network namespace
    /// of its own that the test reaches through a veth pair; needs root, containerd, runc, the
    /// CNI plugins (scripts/test.sh installs them) and the images of `scripts/images.sh`.
    ///
    /// Its processes die with the test process; a janitor then removes its containers,
    /// mounts, cgroups and namespace, and the next start removes what a killed run left.
    ///
    /// With `NSH_E2E_KUBECONFIG` set, it is that cluster instead (kind, through
    /// `e2e/kind/run.sh`), whose images are loaded already: the same tests run there.
    pub async fn with_node() -> Result<&'static Self> {
        static NODE: tokio::sync::OnceCell<ControlPlane> = tokio::sync::OnceCell::const_new();
        NODE.get_or_try_init(|| async {
            match std::env::var_os("NSH_E2E_KUBECONFIG") {
                Some(kubeconfig) => Self::existing(PathBuf::from(kubeconfig)),
                None => Self::start_with_node().await,
            }
        })
        .await
    }

    /// A cluster someone else runs, reached through `kubeconfig`; nothing to start or stop.
    pub fn existing(kubeconfig: PathBuf) -> Result<Self> {
        let binaries = Binaries::locate()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("existing-{}-", std::process::id()))
            .tempdir_in(base_dir()?)
            .map_err(Error::io("create a folder for helm's state"))?;
        let server = Kubeconfig::read_from(&kubeconfig)?
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref()?.server.clone())
            .unwrap_or_default();
        Ok(Self {
            server,
            kubeconfig,
            binaries,
            processes: Vec::new(),
            node: None,
            dir,
        })
    }

    /// Starts a private control plane with a node; see [`Self::with_node`].
    pub async fn start_with_node() -> Result<Self> {
        if !rustix::process::geteuid().is_root() {
            return Err(Error::Io {
                context: "the one-node test cluster".into(),
                source: std::io::Error::other(
                    "needs root: it makes a network namespace, mounts and cgroups and runs containerd and the kubelet (run scripts/test.sh as root, or with sudo)",
                ),
            });
        }
        let binaries = Binaries::locate()?;
        let node_binaries = NodeBinaries::locate()?;
        let base = base_dir()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("cp-{}-", std::process::id()))
            .tempdir_in(&base)
            .map_err(Error::io("create control-plane folder"))?;
        let netns = NetNs::create()?;
        let files = NodeFiles {
            dir: dir.path().join("node"),
        };
        tracing::info!(netns = %netns.name, host = %netns.host_ip, node = %netns.node_ip, "node namespace");
        let cleanup = files.write_cleanup(&netns.name)?;
        let janitor = crate::process::spawn_janitor(&cleanup, &dir.path().join("janitor.log"))?;
        let node = NodeParts {
            netns,
            files,
            binaries: node_binaries,
            cleanup,
            _janitor: janitor,
        };
        Self::start_in(binaries, dir, Some(node)).await
    }

    /// Starts a private control plane and waits until it serves and its controllers run.
    pub async fn start() -> Result<Self> {
        let binaries = Binaries::locate()?;
        let base = base_dir()?;
        // Ports are picked free and then bound by the children; on the rare collision the
        // child exits at once and we try again with new ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = tempfile::Builder::new()
                .prefix(&format!("cp-{}-", std::process::id()))
                .tempdir_in(&base)
                .map_err(Error::io("create control-plane folder"))?;
            match Self::start_in(binaries.clone(), dir, None).await {
                Err(Error::Exited { log_tail, .. })
                    if attempt < 3 && log_tail.contains("address already in use") =>
                {
                    tracing::warn!(
                        attempt,
                        "port collision while starting the control plane; retrying"
                    );
                }
                other => return other,
            }
        }
    }

    async fn start_in(
        binaries: Binaries,
        dir: tempfile::TempDir,
        node: Option<NodeParts>,
    ) -> Result<Self> {
        let started = Instant::now();
        let pki_for = match &node {
            None => PkiFor::default(),
            Some(node) => PkiFor {
                ips: vec![node.netns.node_ip, node::KUBERNETES_SERVICE_IP],
                node: Some(node::NODE_NAME.to_owned()),
            },
        };
        let pki = Pki::generate(dir.path(), &pki_for)?;
        let mut plane = Self {
            server: String::new(),
            kubeconfig: dir.path().join("kubeconfig"),
            binaries,
            processes: Vec::new(),
            node,
            dir,
        };

        let etcd_url = plane.start_etcd()?;
        // In the node's namespace every port is free; on loopback one is picked.
        let (address, apiserver_port) = match &plane.node {
            Some(node) => (node.netns.node_ip.to_string(), 6443),
            None => ("127.0.0.1".to_owned(), free_port()?),
        };
        plane.server = format!("https://{address}:{apiserver_port}");
        write_kubeconfig(&plane.kubeconfig, &plane.server, &pki, None)?;
        plane.start_apiserver(&pki, &etcd_url, apiserver_port)?;
        plane.wait_until_serving().await?;
        plane.start_controller_manager(&pki)?;
        plane.wait_until_controllers_run().await?;
        if plane.node.is_some() {
            plane.start_node(&pki).await?;
        }
        tracing::info!(server = %plane.server, node = plane.node.is_some(), elapsed = ?started.elapsed(), "control plane ready");
        Ok(plane)
    }

    /// The node: containerd with the images, then kubelet, scheduler, kube-proxy and CoreDNS
    /// behind the `kube-dns` Service; waits until the node is Ready.
    async fn start_node(&mut self, pki: &Pki) -> Result<()> {
        let node = self.node.as_ref().expect("a node to start");
        let node_kubeconfig = self.dir.path().join("node/kubelet/kubeconfig");
        std::fs::create_dir_all(self.dir.path().join("node/kubelet"))
            .map_err(Error::io("create the kubelet's folder"))?;
        write_kubeconfig(&node_kubeconfig, &self.server, pki, Some(node::NODE_NAME))?;
        let inputs = NodeInputs {
            netns: &node.netns,
            files: &node.files,
            binaries: &node.binaries,
            ca_cert: &pki.ca_cert,
            admin_kubeconfig: &self.kubeconfig,
            node_kubeconfig: &node_kubeconfig,
        };
        let containerd = node::containerd(&inputs)?;
        let components = node::components(&inputs)?;
        let files = node.files.clone();
        let node_ip = node.netns.node_ip;
        self.spawn(&containerd.0, containerd.1)?;
        node::import_images(&files, node::BASE_IMAGES).await?;
        for (name, command) in components {
            self.spawn(&name, command)?;
        }
        self.apply_yaml(&node::dns_service_yaml(node_ip))?;
        let client = self.client().await?;
        let ready = node::until_ready(client);
        tokio::pin!(ready);
        // Watch the processes while waiting: a crashed kubelet says why at once.
        loop {
            tokio::select! {
                result = &mut ready => {
                    return result.map_err(|last_error| self.not_ready("kubelet", last_error));
                }
                () = tokio::time::sleep(Duration::from_millis(500)) => self.check_processes()?,
            }
        }
    }

    /// Imports image `name` (`<name>.tar` built by `scripts/images.sh`) into the node's
    /// containerd, for pods that run it (`pause` and `nsh` are always there).
    pub async fn load_image(&self, name: &str) -> Result<()> {
        let node = self.node.as_ref().ok_or_else(|| Error::Io {
            context: format!("load image {name}"),
            source: std::io::Error::other(
                "this control plane has no node: use ControlPlane::with_node",
            ),
        })?;
        let files = node.files.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || node::import_image(&files, &name))
            .await
            .map_err(|e| Error::io("import an image")(std::io::Error::other(e)))?
    }

    /// `kubectl apply -f -` of `yaml`.
    fn apply_yaml(&self, yaml: &str) -> Result<()> {
        use std::io::Write as _;
        let mut child = self
            .kubectl()
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(Error::io("run kubectl apply"))?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(yaml.as_bytes())
            .map_err(Error::io("write to kubectl apply"))?;
        let output = child
            .wait_with_output()
            .map_err(Error::io("wait for kubectl apply"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::Io {
                context: "kubectl apply".into(),
                source: std::io::Error::other(String::from_utf8_lossy(&output.stderr).into_owned()),
            })
        }
    }

    /// `program`, run where this control plane runs: in the node's namespace, or here.
    fn command(&self, program: &Path) -> Command {
        match &self.node {
            Some(node) => node.netns.command(program),
            None => Command::new(program),
        }
    }

    /// `https://127.0.0.1:PORT` of the apiserver.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// A kubeconfig file with cluster-admin credentials (client certificate, `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// A cluster-admin client bound to the current Tokio runtime.
    pub async fn client(&self) -> Result<kube::Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A client that authenticates as `user` (in `groups`) by impersonation, so tests can check
    /// what RBAC allows without minting credentials.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Result<kube::Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups =
            Some(groups.iter().map(|g| (*g).to_owned()).collect());
        Ok(kube::Client::try_from(config)?)
    }

    /// Creates a fresh namespace `PREFIX-N` for one test and returns its name.
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let namespace: Namespace = named_object(&name);
        Api::<Namespace>::all(self.client().await?)
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(name)
    }

    /// Applies every CRD file in `dir` (server-side, so re-applying is harmless) and waits until
    /// each CRD in the folder is Established.
    pub async fn install_crds(&self, dir: &Path) -> Result<()> {
        let output = self
            .kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg(dir)
            .output()
            .map_err(Error::io("run kubectl apply"))?;
        if !output.status.success() {
            return Err(Error::Io {
                context: format!("kubectl apply -f {}", dir.display()),
                source: std::io::Error::other(String::from_utf8_lossy(&output.stderr).into_owned()),
            });
        }
        let names = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.strip_prefix("customresourcedefinition.apiextensions.k8s.io/"))
            .filter_map(|rest| rest.split_whitespace().next().map(str::to_owned))
            .collect::<Vec<_>>();
        let crds = Api::<CustomResourceDefinition>::all(self.client().await?);
        let deadline = Instant::now() + READY_TIMEOUT;
        for name in names {
            loop {
                let crd = crds.get(&name).await?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Error::NotReady {
                        name: format!("CRD {name}"),
                        after: READY_TIMEOUT,
                        last_error: "not Established".into(),
                        log: PathBuf::new(),
                        log_tail: String::new(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// `kubectl` from the pinned build, pointed at this control plane.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(&self.binaries.kubectl);
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        command
    }

    /// `helm` from the pinned build, pointed at this control plane.
    pub fn helm(&self) -> Command {
        let mut command = Command::new(&self.binaries.helm);
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        command.env("HELM_CACHE_HOME", self.dir.path().join("helm/cache"));
        command.env("HELM_CONFIG_HOME", self.dir.path().join("helm/config"));
        command.env("HELM_DATA_HOME", self.dir.path().join("helm/data"));
        command
    }

    fn spawn(&mut self, name: &str, command: Command) -> Result<()> {
        let log = self.dir.path().join(format!("{name}.log"));
        self.processes
            .push(ManagedProcess::spawn(name, command, &log)?);
        Ok(())
    }

    fn start_etcd(&mut self) -> Result<String> {
        let (client, peer) = match self.node {
            Some(_) => (2379, 2380),
            None => (free_port()?, free_port()?),
        };
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut command = self.command(&self.binaries.etcd);
        command
            .arg("--name=testenv")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("etcd").display()
            ))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=testenv={peer_url}"))
            // Test data is thrown away: skip fsync, as envtest does.
            .arg("--unsafe-no-fsync=true")
            .arg("--log-level=warn");
        self.spawn("etcd", command)?;
        Ok(client_url)
    }

    fn start_apiserver(&mut self, pki: &Pki, etcd_url: &str, port: u16) -> Result<()> {
        let mut command = self.command(&self.binaries.kube_apiserver);
        let (advertise, bind) = match &self.node {
            // Pods reach the `kubernetes` Service through the node's address.
            Some(node) => (node.netns.node_ip.to_string(), "0.0.0.0"),
            None => ("127.0.0.1".to_owned(), "127.0.0.1"),
        };
        command
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg(format!("--advertise-address={advertise}"))
            .arg(format!("--bind-address={bind}"))
            .arg(format!("--secure-port={port}"))
            .arg(format!(
                "--cert-dir={}",
                self.dir.path().join("apiserver-certs").display()
            ))
            .arg(format!("--tls-cert-file={}", pki.serving_cert.display()))
            .arg(format!(
                "--tls-private-key-file={}",
                pki.serving_key.display()
            ))
            .arg(format!("--client-ca-file={}", pki.ca_cert.display()))
            .arg(format!("--service-account-issuer={}", self.server))
            .arg(format!(
                "--service-account-key-file={}",
                pki.service_account_pub.display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ))
            .arg(format!(
                "--service-cluster-ip-range={}",
                self.service_range()
            ))
            .arg("--allow-privileged=true");
        match &self.node {
            Some(_) => {
                command
                    .arg("--authorization-mode=Node,RBAC")
                    .arg("--enable-admission-plugins=NodeRestriction")
                    // logs, exec and port-forward: the apiserver calls the kubelet as admin.
                    .arg(format!(
                        "--kubelet-client-certificate={}",
                        pki.admin_cert.display()
                    ))
                    .arg(format!("--kubelet-client-key={}", pki.admin_key.display()))
                    // The node's name resolves nowhere: call the kubelet at its address.
                    .arg("--kubelet-preferred-address-types=InternalIP");
            }
            None => {
                command
                    .arg("--authorization-mode=RBAC")
                    // No kubelet mounts tokens, so pods must be accepted without them (as
                    // envtest does).
                    .arg("--disable-admission-plugins=ServiceAccount");
            }
        }
        self.spawn("kube-apiserver", command)
    }

    fn start_controller_manager(&mut self, pki: &Pki) -> Result<()> {
        let kubeconfig = self.kubeconfig.display().to_string();
        let controllers = std::iter::once("*".to_owned())
            .chain(CLOUD_CONTROLLERS.iter().map(|c| format!("-{c}")))
            .collect::<Vec<_>>()
            .join(",");
        let mut command = self.command(&self.binaries.kube_controller_manager);
        let kcm_port = match self.node {
            Some(_) => 10257,
            None => free_port()?,
        };
        command
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg(format!("--authentication-kubeconfig={kubeconfig}"))
            .arg(format!("--authorization-kubeconfig={kubeconfig}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={kcm_port}"))
            .arg(format!(
                "--cert-dir={}",
                self.dir.path().join("kcm-certs").display()
            ))
            .arg("--leader-elect=false")
            .arg(format!("--controllers={controllers}"))
            .arg(format!(
                "--service-account-private-key-file={}",
                pki.service_account_key.display()
            ))
            .arg(format!("--root-ca-file={}", pki.ca_cert.display()))
            .arg(format!(
                "--cluster-signing-cert-file={}",
                pki.ca_cert.display()
            ))
            .arg(format!(
                "--cluster-signing-key-file={}",
                pki.ca_key.display()
            ))
            .arg(format!(
                "--service-cluster-ip-range={}",
                self.service_range()
            ));
        self.spawn("kube-controller-manager", command)
    }

    fn service_range(&self) -> &'static str {
        match self.node {
            Some(_) => node::SERVICE_RANGE,
            None => SERVICE_CLUSTER_IP_RANGE,
        }
    }

    /// Every child still running, or the first that exited, with its log.
    fn check_processes(&mut self) -> Result<()> {
        self.processes
            .iter_mut()
            .try_for_each(ManagedProcess::check_running)
    }

    async fn wait_until_serving(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let client = self.client().await?;
        loop {
            self.check_processes()?;
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("static request");
            let last_error = match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => format!("/readyz answered {body:?}"),
                Err(err) => err.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(self.not_ready("kube-apiserver", last_error));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The controller-manager is working once its service-account controller has created the
    /// `default` ServiceAccount in the `default` namespace.
    async fn wait_until_controllers_run(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let accounts = Api::<ServiceAccount>::namespaced(self.client().await?, "default");
        loop {
            self.check_processes()?;
            let last_error = match accounts.get_opt("default").await {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => "no default ServiceAccount yet".to_owned(),
                Err(err) => err.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(self.not_ready("kube-controller-manager", last_error));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn not_ready(&self, name: &str, last_error: String) -> Error {
        let process = self.processes.iter().find(|p| p.name() == name);
        Error::NotReady {
            name: name.to_owned(),
            after: READY_TIMEOUT,
            last_error,
            log: process.map(|p| p.log_path().to_owned()).unwrap_or_default(),
            log_tail: process.map(|p| p.log_tail(30)).unwrap_or_default(),
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        while let Some(process) = self.processes.pop() {
            drop(process);
        }
        if let Some(node) = &self.node {
            let status = Command::new(&node.cleanup).status();
            if !status.is_ok_and(|s| s.success()) {
                tracing::warn!(script = %node.cleanup.display(), "the node's clean-up failed");
            }
        }
    }
}

/// `$TMPDIR/nsh-testenv`, without what dead test processes left in it.
fn base_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir().join("nsh-testenv");
    std::fs::create_dir_all(&base).map_err(Error::io(format!("create {}", base.display())))?;
    remove_stale_dirs(&base);
    Ok(base)
}

fn named_object<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_value(serde_json::json!({ "metadata": { "name": name } }))
        .expect("a name-only object deserializes")
}

/// A kubeconfig for the admin, or (`node`) for that node's kubelet.
fn write_kubeconfig(path: &Path, server: &str, pki: &Pki, node: Option<&str>) -> Result<()> {
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let (cert, key) = match node {
        Some(_) => (
            pki.node_cert_pem.as_deref().expect("a node certificate"),
            pki.node_key_pem.as_deref().expect("a node key"),
        ),
        None => (pki.admin_cert_pem.as_str(), pki.admin_key_pem.as_str()),
    };
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {ADMIN_USER}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: testenv
  context:
    cluster: testenv
    user: {ADMIN_USER}
current-context: testenv
",
        ca = b64(&pki.ca_pem),
        cert = b64(cert),
        key = b64(key),
    );
    std::fs::write(path, text).map_err(Error::io(format!("write {}", path.display())))
}

/// Removes `cp-PID-*` folders of test processes that no longer run.
fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("cp-"))
            .and_then(|n| n.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            // A node the janitor could not remove (it was killed too): remove it first.
            let cleanup = entry.path().join("node/cleanup.sh");
            if cleanup.is_file() {
                let _ = Command::new(&cleanup).status();
            }
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
