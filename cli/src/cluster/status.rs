//! `nsh cluster status`: the four kinds with their Ready condition, as one table.

use std::io::Write as _;

use clap::Args;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt as _};
use nsh_operator_api::{Agent, HasConditions, McpGateway, MeshServer, Team};
use serde::Serialize;

use super::Cluster;
use crate::output::OutputArg;

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Every namespace, not only one.
    #[arg(long, short = 'A')]
    all_namespaces: bool,
    #[command(flatten)]
    output: OutputArg,
}

/// One object's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Row {
    pub(crate) kind: &'static str,
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// `True`, `False` or `Unknown` (no condition yet: the operator has not seen it).
    pub(crate) ready: String,
    pub(crate) reason: String,
    pub(crate) message: String,
    pub(crate) age_seconds: Option<i64>,
}

fn row<K>(kind: &'static str, object: &K, now: i64) -> Row
where
    K: Resource + HasConditions,
{
    let ready = object
        .conditions()
        .iter()
        .find(|c| c.type_ == nsh_operator_api::conditions::READY);
    let created: Option<&Time> = object.meta().creation_timestamp.as_ref();
    Row {
        kind,
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        ready: ready.map_or_else(|| "Unknown".to_owned(), |c| c.status.clone()),
        reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
        message: ready.map(|c| c.message.clone()).unwrap_or_default(),
        age_seconds: created.map(|t| now - t.0.as_second()),
    }
}

/// Like kubectl's AGE: the largest unit, `45s`, `12m`, `5h`, `3d`.
pub(crate) fn age(seconds: Option<i64>) -> String {
    let Some(s) = seconds else {
        return "-".to_owned();
    };
    match s.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

async fn rows_of<K>(api: Api<K>, kind: &'static str, now: i64) -> anyhow::Result<Vec<Row>>
where
    K: Resource<DynamicType = ()>
        + HasConditions
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|err| super::api_error(err, &format!("listing {kind}s")))?;
    let mut rows: Vec<Row> = list.items.iter().map(|o| row(kind, o, now)).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(rows)
}

pub(crate) async fn rows(cluster: &Cluster, all: bool) -> anyhow::Result<Vec<Row>> {
    fn api<K>(cluster: &Cluster, all: bool) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        if all {
            Api::all(cluster.client.clone())
        } else {
            Api::namespaced(cluster.client.clone(), &cluster.namespace)
        }
    }
    let now = unix_now();
    let mut rows = rows_of(api::<MeshServer>(cluster, all), "MeshServer", now).await?;
    rows.extend(rows_of(api::<Team>(cluster, all), "Team", now).await?);
    rows.extend(rows_of(api::<Agent>(cluster, all), "Agent", now).await?);
    rows.extend(rows_of(api::<McpGateway>(cluster, all), "McpGateway", now).await?);
    Ok(rows)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) async fn run(cluster: &Cluster, args: &StatusArgs) -> anyhow::Result<()> {
    let rows = rows(cluster, args.all_namespaces).await?;
    let mut out = std::io::stdout().lock();
    if args.output.write_data(&mut out, &rows)? {
        return Ok(());
    }
    if rows.is_empty() {
        writeln!(
            out,
            "no MeshServers, Teams, Agents or McpGateways in namespace {} (context {}); -A for every namespace",
            cluster.namespace, cluster.context
        )?;
        return Ok(());
    }
    let mut header = vec!["KIND", "NAME", "READY", "REASON", "AGE"];
    if args.all_namespaces {
        header.insert(1, "NAMESPACE");
    }
    let mut table = crate::table::table(&header);
    for row in &rows {
        let mut cells = vec![
            row.kind.to_owned(),
            row.name.clone(),
            row.ready.clone(),
            row.reason.clone(),
            age(row.age_seconds),
        ];
        if args.all_namespaces {
            cells.insert(1, row.namespace.clone());
        }
        table.add_row(cells);
    }
    writeln!(out, "{table}")?;
    // The reasons that are not "all is well" say what to do in their message.
    for row in rows
        .iter()
        .filter(|r| r.ready == "False" && !r.message.is_empty())
    {
        writeln!(out, "{} {}: {}", row.kind, row.name, row.message)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(Some(5)), "5s");
        assert_eq!(age(Some(600)), "10m");
        assert_eq!(age(Some(3 * 3600)), "3h");
        assert_eq!(age(Some(5 * 86_400)), "5d");
        assert_eq!(age(None), "-");
    }

    #[test]
    fn an_object_without_conditions_is_unknown() {
        let team: Team = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "alpha", "namespace": "a",
                          "creationTimestamp": "2026-12-03T00:00:00Z" },
            "spec": { "meshRef": { "name": "mesh" } }
        }))
        .unwrap();
        let row = row("Team", &team, 1_796_342_400);
        assert_eq!(row.ready, "Unknown");
        assert_eq!(row.name, "alpha");
        assert_eq!(row.age_seconds, Some(1_796_342_400 - 1_796_256_000));
    }
}
