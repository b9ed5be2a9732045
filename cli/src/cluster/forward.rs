//! Port-forwarding to a Service, as `kubectl port-forward svc/NAME` does: a local listener
//! whose every connection goes to a ready pod behind the Service, through the API server.

use std::net::SocketAddr;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};

use super::Cluster;

/// A running forward: where to connect locally, and what it reaches.
pub(crate) struct Forward {
    pub(crate) local: SocketAddr,
    pub(crate) service: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards `127.0.0.1:local_port` (0 picks one) to the first port of Service `name`.
pub(crate) async fn service(
    cluster: &Cluster,
    name: &str,
    local_port: u16,
) -> anyhow::Result<Forward> {
    let service = Api::<Service>::namespaced(cluster.client.clone(), &cluster.namespace)
        .get_opt(name)
        .await
        .map_err(|err| super::api_error(err, "reading the Service"))?
        .with_context(|| format!("no Service {name} in namespace {}", cluster.namespace))?;
    let spec = service.spec.unwrap_or_default();
    let selector = spec
        .selector
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    anyhow::ensure!(!selector.is_empty(), "Service {name} selects no pods");
    let port = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .next()
        .with_context(|| format!("Service {name} has no port"))?;
    let target = port.target_port.unwrap_or(IntOrString::Int(port.port));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", local_port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{local_port}; pick another port"))?;
    let local = listener.local_addr()?;
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &cluster.namespace);
    let what = format!("svc/{name}:{}", port.port);
    let label = what.clone();
    let task = tokio::spawn(async move {
        loop {
            let mut socket = match listener.accept().await {
                Ok((socket, _)) => socket,
                Err(err) => {
                    // Out of descriptors, say: wait rather than spin on the same error.
                    tracing::warn!(forward = %label, %err, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            };
            let (pods, selector, target, label) = (
                pods.clone(),
                selector.clone(),
                target.clone(),
                label.clone(),
            );
            tokio::spawn(async move {
                if let Err(err) = one_connection(&pods, &selector, &target, &mut socket).await {
                    tracing::warn!(forward = %label, "{err:#}");
                }
            });
        }
    });
    Ok(Forward {
        local,
        service: what,
        task,
    })
}

async fn one_connection(
    pods: &Api<Pod>,
    selector: &str,
    target: &IntOrString,
    socket: &mut tokio::net::TcpStream,
) -> anyhow::Result<()> {
    let (pod, port) = ready_pod(pods, selector, target).await?;
    let mut forwarder = pods
        .portforward(&pod, &[port])
        .await
        .with_context(|| format!("port-forward to pod {pod}:{port}"))?;
    let mut upstream = forwarder
        .take_stream(port)
        .context("the port-forward has no stream")?;
    let _ = tokio::io::copy_bidirectional(socket, &mut upstream).await;
    drop(upstream);
    let _ = forwarder.join().await;
    Ok(())
}

/// A ready pod that `selector` picks, and the container port `target` names on it.
async fn ready_pod(
    pods: &Api<Pod>,
    selector: &str,
    target: &IntOrString,
) -> anyhow::Result<(String, u16)> {
    let list = pods.list(&ListParams::default().labels(selector)).await?;
    let pod = list
        .items
        .into_iter()
        .find(is_ready)
        .with_context(|| format!("no ready pod with {selector}"))?;
    let port = match target {
        IntOrString::Int(port) => *port,
        IntOrString::String(name) => pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
            .with_context(|| format!("pod {} has no port named {name}", pod.name_any()))?,
    };
    Ok((
        pod.name_any(),
        u16::try_from(port).context("a port out of range")?,
    ))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
