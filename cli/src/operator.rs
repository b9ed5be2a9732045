//! `nsh operator …`: the Kubernetes operator and its CRDs.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub(crate) enum OperatorVerb {
    /// Print the nsh.dev CRDs as YAML, or write one file per CRD with --out.
    Crds(CrdsArgs),
    /// Print the least ClusterRole the operator needs, as YAML.
    Rbac(RbacArgs),
    /// Run the operator (Team, MeshServer, Agent and McpGateway controllers) against the current
    /// kubeconfig or in-cluster config, until SIGTERM.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The nsh image for every nsh component a spec does not give one (mesh, gateway,
    /// mesh-client sidecar) unless a more specific flag below does [default: this release's].
    #[arg(long, env = "NSH_OPERATOR_DEFAULT_IMAGE")]
    default_image: Option<String>,
    /// Image of mesh server pods [default: --default-image].
    #[arg(long, env = "NSH_OPERATOR_MESH_IMAGE")]
    mesh_image: Option<String>,
    /// Image of agents' mesh-client sidecars [default: --default-image].
    #[arg(long, env = "NSH_OPERATOR_SIDECAR_IMAGE")]
    sidecar_image: Option<String>,
    /// Image of MCP gateway pods [default: --default-image].
    #[arg(long, env = "NSH_OPERATOR_GATEWAY_IMAGE")]
    gateway_image: Option<String>,
    /// Image of agent containers when an Agent does not name one [default: this release's].
    #[arg(long, env = "NSH_OPERATOR_DEFAULT_AGENT_IMAGE")]
    default_agent_image: Option<String>,
    /// Image of a MeshServer's managed Redis when it does not name one.
    #[arg(long, env = "NSH_OPERATOR_REDIS_IMAGE", default_value = nsh_contract::image::REDIS)]
    redis_image: String,
    /// Watch and reconcile only these namespaces, comma-separated (default: every namespace).
    #[arg(
        long,
        value_name = "NAMESPACE",
        env = "NSH_OPERATOR_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    watch_namespace: Vec<String>,
    /// Namespace of the leader-election Lease `nsh-operator`.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(
        long,
        env = "NSH_OPERATOR_ADMIN_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    admin_listen: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub(crate) struct CrdsArgs {
    /// Folder to write `<plural>.nsh.dev.yaml` files into (replaced atomically).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write them as the templates of the `nsh-mesh-crds` chart: with the
    /// `helm.sh/resource-policy: keep` annotation while the chart's `keep` value is true.
    #[arg(long, requires = "out")]
    helm: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RbacArgs {
    /// Print only the rules (the `nsh-mesh` chart renders them into a ClusterRole, or Roles in
    /// each watched namespace).
    #[arg(long)]
    rules_only: bool,
}

pub(crate) async fn run(verb: OperatorVerb) -> anyhow::Result<()> {
    match verb {
        OperatorVerb::Crds(args) => crds(&args),
        OperatorVerb::Rbac(args) => {
            let yaml = if args.rules_only {
                nsh_operator::rbac::rules_yaml()?
            } else {
                nsh_operator::rbac::cluster_role_yaml()?
            };
            Ok(write!(std::io::stdout().lock(), "{yaml}")?)
        }
        OperatorVerb::Run(args) => run_operator(args).await,
    }
}

/// Serves the admin endpoints, then leads (or stands by) until SIGTERM.
async fn run_operator(args: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes config: set KUBECONFIG or run in a cluster")?;
    let nsh = args.default_image.unwrap_or_else(nsh_contract::image::nsh);
    let images = nsh_operator::Images {
        mesh: args.mesh_image.unwrap_or_else(|| nsh.clone()),
        sidecar: args.sidecar_image.unwrap_or_else(|| nsh.clone()),
        gateway: args.gateway_image.unwrap_or_else(|| nsh.clone()),
        agent: args
            .default_agent_image
            .unwrap_or_else(nsh_contract::image::agent),
        redis: args.redis_image,
    };
    tracing::info!(?images, "images for pods whose spec names none");
    let ctx = std::sync::Arc::new(nsh_operator::Context::new(client.clone(), images));
    let namespaces = args.watch_namespace;
    let mut registry = prometheus_client::registry::Registry::default();
    ctx.metrics.register(&mut registry);
    let readiness = nsh_admin::ReadinessHandle::new("starting");
    let listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("--admin-listen {}: cannot listen", args.admin_listen))?;
    tracing::info!(admin = %listener.local_addr()?, lease_namespace = %args.lease_namespace, watch_namespaces = ?namespaces, "operator starting");
    let admin = tokio::spawn(
        axum::serve(
            listener,
            nsh_admin::router(std::sync::Arc::new(registry), readiness.clone()),
        )
        .into_future(),
    );
    // A standby is healthy and ready too: it is waiting for the Lease, not failing.
    readiness.set(nsh_admin::Readiness::Ready);

    let config = nsh_operator::leader::LeaseConfig::new(
        args.lease_namespace,
        nsh_operator::leader::LeaseConfig::default_identity(),
    );
    let ended = nsh_operator::leader::Elector::new(client, config)
        .lead(crate::signal::shutdown_signal(), move |mut lost| {
            nsh_operator::run_in(ctx, namespaces.clone(), async move {
                let _ = lost.wait_for(|l| *l).await;
            })
        })
        .await;
    admin.abort();
    match ended {
        nsh_operator::leader::Ended::Shutdown => Ok(()),
        nsh_operator::leader::Ended::LostLeadership => {
            anyhow::bail!("lost the leader Lease; exiting so this replica restarts as a standby")
        }
    }
}

fn crds(args: &CrdsArgs) -> anyhow::Result<()> {
    let crds = nsh_operator_api::crds();
    match &args.out {
        None => {
            let mut stdout = std::io::stdout().lock();
            for (i, crd) in crds.iter().enumerate() {
                if i > 0 {
                    writeln!(stdout, "---")?;
                }
                write!(stdout, "{}", nsh_operator_api::to_yaml(crd)?)?;
            }
        }
        Some(dir) => {
            for crd in &crds {
                let path = dir.join(nsh_operator_api::file_name(crd));
                let yaml = if args.helm {
                    nsh_operator_api::to_helm_template(crd)?
                } else {
                    nsh_operator_api::to_yaml(crd)?
                };
                // Atomic, and creates the folder: readers never see half a file.
                nsh_config_files::write_atomic(&path, yaml.as_bytes())
                    .with_context(|| format!("--out {}", dir.display()))?;
            }
        }
    }
    Ok(())
}
