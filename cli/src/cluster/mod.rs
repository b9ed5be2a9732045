//! `nsh cluster`: a laptop pointed at a remote cluster, through the kubeconfig like kubectl.
//! Tokens come from the operator through a token-request Secret
//! (`nsh_operator_api::token_request`); the team key never leaves the cluster.

mod connect;
mod forward;
mod logs;
mod status;
mod token;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterVerb {
    /// Teams, Agents, MeshServers and McpGateways with their Ready condition, reason and age.
    Status(status::StatusArgs),
    /// Join a team from this machine: a short-lived token from the operator, port-forwards to
    /// the mesh (and the team's gateways), and an `nsh agent launch` config. Ctrl-C ends it.
    Connect(connect::ConnectArgs),
    /// Send one message to an agent of a team, from this machine.
    Send(connect::SendArgs),
    /// Logs of an agent's pod, the mesh or a gateway: AGENT, agent/NAME, mesh[/NAME],
    /// gateway[/NAME].
    Logs(logs::LogsArgs),
    /// Ask the operator for a short-lived token for an agent outside the cluster.
    Token(token::TokenArgs),
}

/// Which cluster and namespace, as kubectl's flags say it.
#[derive(Debug, Clone, Args)]
pub(crate) struct Target {
    /// The kubeconfig context [default: the current context].
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
    /// The namespace [default: the context's namespace, else `default`].
    #[arg(long, short = 'n', global = true, value_name = "NAME")]
    namespace: Option<String>,
    /// The kubeconfig file [default: $KUBECONFIG, else ~/.kube/config].
    #[arg(long, global = true, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
}

/// A client for the target cluster, with the namespace to work in.
pub(crate) struct Cluster {
    pub(crate) client: kube::Client,
    pub(crate) namespace: String,
    /// The context's name, for messages and per-cluster file names.
    pub(crate) context: String,
}

impl Target {
    pub(crate) async fn connect(&self) -> anyhow::Result<Cluster> {
        let options = kube::config::KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let kubeconfig = match &self.kubeconfig {
            Some(path) => kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?,
            None => kube::config::Kubeconfig::read().context(
                "no kubeconfig: set KUBECONFIG, pass --kubeconfig, or create ~/.kube/config",
            )?,
        };
        let context = self
            .context
            .clone()
            .or_else(|| kubeconfig.current_context.clone())
            .unwrap_or_default();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .with_context(|| match &self.context {
                Some(name) => format!("--context {name}"),
                None => "the kubeconfig's current context".to_owned(),
            })?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).context("a client for the cluster")?;
        Ok(Cluster {
            client,
            namespace,
            context,
        })
    }
}

#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    #[command(subcommand)]
    pub(crate) verb: ClusterVerb,
    #[command(flatten)]
    pub(crate) target: Target,
}

pub(crate) async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let cluster = args.target.connect().await?;
    match args.verb {
        ClusterVerb::Status(verb) => status::run(&cluster, &verb).await,
        ClusterVerb::Connect(verb) => connect::connect(&cluster, &verb).await,
        ClusterVerb::Send(verb) => connect::send(&cluster, verb).await,
        ClusterVerb::Logs(verb) => logs::run(&cluster, &verb).await,
        ClusterVerb::Token(verb) => token::run(&cluster, &verb).await,
    }
}

/// What a kube error says, with a hint when access was denied.
pub(crate) fn api_error(err: kube::Error, doing: &str) -> anyhow::Error {
    if let kube::Error::Api(status) = &err
        && status.code == 403
    {
        return anyhow::anyhow!(
            "{doing}: forbidden ({}); ask for the Role in docs/cluster.md",
            status.message
        );
    }
    anyhow::Error::new(err).context(doing.to_owned())
}
