//! `nsh cluster logs AGENT|agent/NAME|mesh[/NAME]|gateway[/NAME] [-f]`.

use std::io::Write as _;

use anyhow::Context as _;
use clap::Args;
use futures_util::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use nsh_operator_api::{McpGateway, MeshServer};

use super::Cluster;

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// AGENT (or agent/NAME), mesh or mesh/NAME, gateway or gateway/NAME.
    target: String,
    /// Keep streaming new lines.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Lines from the end to start with.
    #[arg(long, default_value_t = 100)]
    tail: i64,
    /// The container [default: the agent's `agent`, the mesh's `mesh`, the gateway's
    /// `gateway`]; e.g. `mesh-client` for an agent's sidecar.
    #[arg(long, short = 'c')]
    container: Option<String>,
}

/// What a target names: a component of the operator's pods and one instance of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Agent(String),
    Mesh(Option<String>),
    Gateway(Option<String>),
}

impl Target {
    pub(crate) fn parse(text: &str) -> anyhow::Result<Self> {
        let (kind, name) = match text.split_once('/') {
            Some((kind, name)) => (kind, Some(name.to_owned())),
            None => (text, None),
        };
        Ok(match (kind, name) {
            ("mesh", name) => Self::Mesh(name),
            ("gateway", name) => Self::Gateway(name),
            ("agent", Some(name)) => Self::Agent(name),
            ("agent", None) => anyhow::bail!("name the agent: agent/NAME or just NAME"),
            (agent, None) => Self::Agent(agent.to_owned()),
            (other, Some(_)) => anyhow::bail!(
                "`{text}`: `{other}` is not a kind here; use AGENT, agent/NAME, mesh[/NAME] or gateway[/NAME]"
            ),
        })
    }

    /// The component label of its pods and its default container.
    fn component(&self) -> (&'static str, &'static str) {
        match self {
            Self::Agent(_) => ("agent", "agent"),
            Self::Mesh(_) => ("mesh-server", "mesh"),
            Self::Gateway(_) => ("mcp-gateway", "gateway"),
        }
    }
}

/// The instance name: given, or the only MeshServer/McpGateway in the namespace.
async fn instance(cluster: &Cluster, target: &Target) -> anyhow::Result<String> {
    async fn only<K>(cluster: &Cluster, kind: &str) -> anyhow::Result<String>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let names: Vec<String> = Api::<K>::namespaced(cluster.client.clone(), &cluster.namespace)
            .list(&ListParams::default())
            .await
            .map_err(|err| super::api_error(err, &format!("listing {kind}s")))?
            .items
            .iter()
            .map(kube::ResourceExt::name_any)
            .collect();
        match names.as_slice() {
            [one] => Ok(one.clone()),
            [] => anyhow::bail!("no {kind} in namespace {}", cluster.namespace),
            many => anyhow::bail!(
                "several {kind}s in namespace {}: name one ({})",
                cluster.namespace,
                many.join(", ")
            ),
        }
    }
    match target {
        Target::Agent(name) | Target::Mesh(Some(name)) | Target::Gateway(Some(name)) => {
            Ok(name.clone())
        }
        Target::Mesh(None) => only::<MeshServer>(cluster, "MeshServer").await,
        Target::Gateway(None) => only::<McpGateway>(cluster, "McpGateway").await,
    }
}

pub(crate) async fn run(cluster: &Cluster, args: &LogsArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.target)?;
    let name = instance(cluster, &target).await?;
    let (component, container) = target.component();
    let selector =
        format!("app.kubernetes.io/component={component},app.kubernetes.io/instance={name}");
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &cluster.namespace);
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|err| super::api_error(err, "listing pods"))?
        .items;
    // A pod that has not started has no log yet (the API answers with nothing or an error).
    let phase = |pod: &Pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".to_owned())
    };
    let mut names: Vec<String> = listed
        .iter()
        .filter(|pod| !["Pending", "Unknown"].contains(&phase(pod).as_str()))
        .map(kube::ResourceExt::name_any)
        .collect();
    names.sort();
    if names.is_empty() {
        let waiting: Vec<String> = listed
            .iter()
            .map(|pod| format!("{} is {}", kube::ResourceExt::name_any(pod), phase(pod)))
            .collect();
        anyhow::bail!(
            "no pod of {} has started in namespace {} yet{}; nsh cluster status says why",
            args.target,
            cluster.namespace,
            if waiting.is_empty() {
                String::new()
            } else {
                format!(" ({})", waiting.join(", "))
            }
        );
    }
    let params = LogParams {
        follow: args.follow,
        tail_lines: Some(args.tail),
        container: Some(
            args.container
                .clone()
                .unwrap_or_else(|| container.to_owned()),
        ),
        ..LogParams::default()
    };
    // Several replicas: each line says which pod it came from.
    let prefix = names.len() > 1;
    let mut streams = Vec::new();
    for pod in &names {
        let reader = pods
            .log_stream(pod, &params)
            .await
            .map_err(|err| super::api_error(err, &format!("the log of pod {pod}")))?;
        let pod = pod.clone();
        streams.push(reader.lines().map(move |line| (pod.clone(), line)).boxed());
    }
    let mut merged = futures_util::stream::select_all(streams);
    let stop = crate::signal::shutdown_signal();
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            () = &mut stop => break,
            next = merged.next() => next,
        };
        let Some((pod, line)) = next else { break };
        let line = line.with_context(|| format!("reading the log of pod {pod}"))?;
        let mut out = std::io::stdout().lock();
        if prefix {
            writeln!(out, "[{pod}] {line}")?;
        } else {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_like_kubectl_resources() {
        assert_eq!(
            Target::parse("alice").unwrap(),
            Target::Agent("alice".into())
        );
        assert_eq!(
            Target::parse("agent/bob").unwrap(),
            Target::Agent("bob".into())
        );
        assert_eq!(Target::parse("mesh").unwrap(), Target::Mesh(None));
        assert_eq!(
            Target::parse("gateway/tools").unwrap(),
            Target::Gateway(Some("tools".into()))
        );
        let err = Target::parse("pod/x").unwrap_err().to_string();
        assert!(
            err.contains("use AGENT, agent/NAME, mesh[/NAME] or gateway[/NAME]"),
            "{err}"
        );
    }
}
