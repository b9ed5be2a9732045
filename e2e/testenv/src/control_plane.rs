//! etcd + kube-apiserver + kube-controller-manager on loopback, with envtest's flags plus the
//! controller-manager, so garbage collection, namespace deletion and the workload controllers
//! behave as in a real cluster. There is no kubelet: pods stay `Pending` unless a test sets
//! their status through the status subresource.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::pki::{ADMIN_USER, Pki};
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
    /// Started in order etcd, apiserver, controller-manager; stopped in reverse.
    processes: Vec<ManagedProcess>,
    // Declared last so the files outlive the processes that use them.
    dir: tempfile::TempDir,
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

    /// Starts a private control plane and waits until it serves and its controllers run.
    pub async fn start() -> Result<Self> {
        let binaries = Binaries::locate()?;
        let base = std::env::temp_dir().join("nsh-testenv");
        std::fs::create_dir_all(&base).map_err(Error::io(format!("create {}", base.display())))?;
        remove_stale_dirs(&base);
        // Ports are picked free and then bound by the children; on the rare collision the
        // child exits at once and we try again with new ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = tempfile::Builder::new()
                .prefix(&format!("cp-{}-", std::process::id()))
                .tempdir_in(&base)
                .map_err(Error::io("create control-plane folder"))?;
            match Self::start_in(binaries.clone(), dir).await {
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

    async fn start_in(binaries: Binaries, dir: tempfile::TempDir) -> Result<Self> {
        let started = Instant::now();
        let pki = Pki::generate(dir.path())?;
        let mut plane = Self {
            server: String::new(),
            kubeconfig: dir.path().join("kubeconfig"),
            binaries,
            processes: Vec::new(),
            dir,
        };

        let etcd_url = plane.start_etcd()?;
        let apiserver_port = free_port()?;
        plane.server = format!("https://127.0.0.1:{apiserver_port}");
        write_kubeconfig(&plane.kubeconfig, &plane.server, &pki)?;
        plane.start_apiserver(&pki, &etcd_url, apiserver_port)?;
        plane.wait_until_serving().await?;
        plane.start_controller_manager(&pki)?;
        plane.wait_until_controllers_run().await?;
        tracing::info!(server = %plane.server, elapsed = ?started.elapsed(), "control plane ready");
        Ok(plane)
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
        let (client, peer) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut command = Command::new(&self.binaries.etcd);
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
        let mut command = Command::new(&self.binaries.kube_apiserver);
        command
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg("--advertise-address=127.0.0.1")
            .arg("--bind-address=127.0.0.1")
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
                "--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"
            ))
            .arg("--authorization-mode=RBAC")
            // No kubelet mounts tokens, so pods must be accepted without them (envtest does the same).
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--allow-privileged=true");
        self.spawn("kube-apiserver", command)
    }

    fn start_controller_manager(&mut self, pki: &Pki) -> Result<()> {
        let kubeconfig = self.kubeconfig.display().to_string();
        let controllers = std::iter::once("*".to_owned())
            .chain(CLOUD_CONTROLLERS.iter().map(|c| format!("-{c}")))
            .collect::<Vec<_>>()
            .join(",");
        let mut command = Command::new(&self.binaries.kube_controller_manager);
        command
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg(format!("--authentication-kubeconfig={kubeconfig}"))
            .arg(format!("--authorization-kubeconfig={kubeconfig}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", free_port()?))
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
                "--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"
            ));
        self.spawn("kube-controller-manager", command)
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
    }
}

fn named_object<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_value(serde_json::json!({ "metadata": { "name": name } }))
        .expect("a name-only object deserializes")
}

fn write_kubeconfig(path: &Path, server: &str, pki: &Pki) -> Result<()> {
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
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
        cert = b64(&pki.admin_cert_pem),
        key = b64(&pki.admin_key_pem),
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
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
