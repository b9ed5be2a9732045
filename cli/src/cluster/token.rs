//! Tokens for this machine's agent, requested from the operator through a token-request
//! Secret (`nsh_operator_api::token_request`), then removed.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use nsh_operator_api::token_request as request;

use super::Cluster;

/// How long the operator has to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    pub(crate) who: Who,
    /// Write the token to this file (mode 0600, replaced atomically) instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Whose token, for how long.
#[derive(Debug, Clone, Args)]
pub(crate) struct Who {
    /// The Team [default: the only Team in the namespace].
    #[arg(long, value_name = "NAME")]
    pub(crate) team: Option<String>,
    /// The agent name this machine joins as (no Agent of the team may have it).
    #[arg(long, value_name = "NAME")]
    pub(crate) agent: String,
    /// The token's lifetime (at most 24h).
    #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
    pub(crate) ttl: Duration,
}

/// An issued token.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) jwt: String,
    pub(crate) team: String,
    /// When it expires, as the operator wrote it (RFC 3339).
    pub(crate) expires: String,
}

/// The Team `--team` names, else the only one in the namespace.
pub(crate) async fn team(
    cluster: &Cluster,
    named: Option<&str>,
) -> anyhow::Result<nsh_operator_api::Team> {
    let teams =
        Api::<nsh_operator_api::Team>::namespaced(cluster.client.clone(), &cluster.namespace);
    if let Some(name) = named {
        return teams
            .get_opt(name)
            .await
            .map_err(|err| super::api_error(err, "reading the Team"))?
            .with_context(|| {
                format!(
                    "--team {name}: no such Team in namespace {} (nsh cluster status lists them; -n picks another namespace)",
                    cluster.namespace
                )
            });
    }
    let mut list = teams
        .list(&Default::default())
        .await
        .map_err(|err| super::api_error(err, "listing Teams"))?
        .items;
    match list.len() {
        1 => Ok(list.remove(0)),
        0 => anyhow::bail!(
            "no Team in namespace {} (context {}); pick the namespace with -n",
            cluster.namespace,
            cluster.context
        ),
        _ => anyhow::bail!(
            "several Teams in namespace {}: pick one with --team ({})",
            cluster.namespace,
            list.iter()
                .map(kube::ResourceExt::name_any)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Asks the operator for a token: creates the request, waits for its answer, deletes it.
pub(crate) async fn request(
    cluster: &Cluster,
    team: &str,
    who: &Who,
    audiences: &[String],
) -> anyhow::Result<Issued> {
    let secrets = Api::<Secret>::namespaced(cluster.client.clone(), &cluster.namespace);
    let mut annotations = BTreeMap::from([
        (request::TEAM.to_owned(), team.to_owned()),
        (request::AGENT.to_owned(), who.agent.clone()),
        (
            request::TTL.to_owned(),
            humantime::format_duration(who.ttl).to_string(),
        ),
    ]);
    if !audiences.is_empty() {
        annotations.insert(request::AUDIENCES.to_owned(), audiences.join(","));
    }
    let asking = Secret {
        metadata: ObjectMeta {
            generate_name: Some(format!("{team}-{}-token-", who.agent)),
            labels: Some(BTreeMap::from([(
                request::LABEL.to_owned(),
                "true".to_owned(),
            )])),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        type_: Some(request::SECRET_TYPE.to_owned()),
        ..Secret::default()
    };
    let created = secrets
        .create(&PostParams::default(), &asking)
        .await
        .map_err(|err| super::api_error(err, "creating the token request Secret"))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    let answer = wait_for_answer(&secrets, &name).await;
    // Whatever the answer, the request goes: the token lives only on this machine.
    if let Err(err) = secrets.delete(&name, &DeleteParams::default()).await {
        tracing::warn!(secret = %name, %err, "cannot delete the token request; delete it by hand");
    }
    let answered = answer?;
    let annotations = answered.metadata.annotations.unwrap_or_default();
    if let Some(why) = annotations.get(request::REFUSED) {
        anyhow::bail!("the operator refused the token: {why}");
    }
    let jwt = answered
        .data
        .and_then(|mut d| d.remove(request::TOKEN_FIELD))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
        .context("the answer has no token")?;
    Ok(Issued {
        jwt,
        team: team.to_owned(),
        expires: annotations
            .get(request::EXPIRES)
            .cloned()
            .unwrap_or_default(),
    })
}

async fn wait_for_answer(secrets: &Api<Secret>, name: &str) -> anyhow::Result<Secret> {
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    loop {
        let secret = secrets
            .get(name)
            .await
            .map_err(|err| super::api_error(err, "reading the token request"))?;
        if request::is_answered(&secret) {
            return Ok(secret);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the operator did not answer the token request {name} within {} s: is it running, and watching namespace {}? (nsh cluster status; kubectl logs deploy/nsh-mesh -n nsh-system)",
            ANSWER_WITHIN.as_secs(),
            secrets_namespace(secrets)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn secrets_namespace(secrets: &Api<Secret>) -> String {
    secrets.namespace().unwrap_or_default().to_owned()
}

pub(crate) async fn run(cluster: &Cluster, args: &TokenArgs) -> anyhow::Result<()> {
    let team = team(cluster, args.who.team.as_deref()).await?;
    let issued = request(cluster, &kube::ResourceExt::name_any(&team), &args.who, &[]).await?;
    match &args.out {
        Some(path) => {
            crate::keys::write_secret(path, &format!("{}\n", issued.jwt), true)
                .with_context(|| format!("--out {}", path.display()))?;
            writeln!(
                std::io::stderr().lock(),
                "token for {} of team {} (valid until {}) in {}",
                args.who.agent,
                issued.team,
                issued.expires,
                path.display()
            )?;
        }
        None => writeln!(std::io::stdout().lock(), "{}", issued.jwt)?,
    }
    Ok(())
}
