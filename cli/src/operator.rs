//! `nsh operator …`: the Kubernetes operator and its CRDs.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub(crate) enum OperatorVerb {
    /// Print the nsh.dev CRDs as YAML, or write one file per CRD with --out.
    Crds(CrdsArgs),
    /// Run the operator (Team and MeshServer controllers) against the current kubeconfig or
    /// in-cluster config, until SIGTERM.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Image for mesh pods when a MeshServer does not name one.
    #[arg(long, env = "NSH_OPERATOR_DEFAULT_IMAGE", default_value = concat!("ghcr.io/nsh-dev/nsh:", env!("CARGO_PKG_VERSION")))]
    default_image: String,
}

#[derive(Debug, Args)]
pub(crate) struct CrdsArgs {
    /// Folder to write `<plural>.nsh.dev.yaml` files into (replaced atomically).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub(crate) async fn run(verb: OperatorVerb) -> anyhow::Result<()> {
    match verb {
        OperatorVerb::Crds(args) => crds(&args),
        OperatorVerb::Run(args) => {
            let client = kube::Client::try_default()
                .await
                .context("no Kubernetes config: set KUBECONFIG or run in a cluster")?;
            tracing::info!(default_image = %args.default_image, "operator starting");
            nsh_operator::run(
                nsh_operator::Context::new(client, args.default_image),
                crate::mesh::shutdown_signal(),
            )
            .await;
            Ok(())
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
                write_atomically(&path, &nsh_operator_api::to_yaml(crd)?).with_context(|| {
                    format!("--out {}: cannot write {}", dir.display(), path.display())
                })?;
            }
        }
    }
    Ok(())
}

/// Temp file in the same folder, then rename: readers never see half a file.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(contents.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}
