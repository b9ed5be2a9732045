//! `nsh cluster connect` (a local Claude Code joins a remote team) and `nsh cluster send`.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use kube::ResourceExt as _;
use kube::api::Api;
use nsh_mesh_client::link::TokenSource;
use nsh_mesh_transport::wire::{SendStatus, Target};
use nsh_operator_api::{McpGateway, MeshServer, Team};

use super::token::{self, Who};
use super::{Cluster, forward};

#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    #[command(flatten)]
    who: Who,
    /// Local port of the forward to the mesh (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    mesh_port: u16,
    /// Where the token and the agent config are written [default: $XDG_DATA_HOME/nsh or
    /// ~/.local/share/nsh, under clusters/].
    #[arg(long, value_name = "DIR", env = "NSH_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The agent to send to.
    #[arg(long, value_name = "AGENT")]
    to: String,
    /// The message.
    text: String,
    /// The Team [default: the only Team in the namespace].
    #[arg(long, value_name = "NAME")]
    team: Option<String>,
    /// The name the message comes from (no Agent of the team may have it).
    #[arg(long = "as", value_name = "NAME", default_value = "laptop")]
    sender: String,
}

/// The mesh Service of `team` (named after its MeshServer) and the McpGateways that admit it.
async fn endpoints(cluster: &Cluster, team: &Team) -> anyhow::Result<(String, Vec<McpGateway>)> {
    let mesh = &team.spec.mesh_ref.name;
    Api::<MeshServer>::namespaced(cluster.client.clone(), &cluster.namespace)
        .get_opt(mesh)
        .await
        .map_err(|err| super::api_error(err, "reading the MeshServer"))?
        .with_context(|| {
            format!(
                "Team {} uses MeshServer {mesh}, which is not in namespace {}",
                team.name_any(),
                cluster.namespace
            )
        })?;
    let team_name = team.name_any();
    let gateways = Api::<McpGateway>::namespaced(cluster.client.clone(), &cluster.namespace)
        .list(&Default::default())
        .await
        .map_err(|err| super::api_error(err, "listing McpGateways"))?
        .items
        .into_iter()
        .filter(|g| g.spec.teams.iter().any(|t| t == &team_name || t == "*"))
        .collect();
    Ok((mesh.clone(), gateways))
}

/// A file name part for the cluster context (which may hold `:` or `/`).
fn safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(crate) async fn connect(cluster: &Cluster, args: &ConnectArgs) -> anyhow::Result<()> {
    let team = token::team(cluster, args.who.team.as_deref()).await?;
    let team_name = team.name_any();
    let (mesh, gateways) = endpoints(cluster, &team).await?;
    let audiences: Vec<String> = gateways
        .iter()
        .map(|g| nsh_contract::url::gateway_audience(&g.name_any(), &cluster.namespace))
        .collect();
    let issued = token::request(cluster, &team_name, &args.who, &audiences).await?;

    let dir = crate::paths::data_dir(args.data_dir.as_deref())?
        .join("clusters")
        .join(format!(
            "{}_{}_{team_name}",
            safe(&cluster.context),
            safe(&cluster.namespace)
        ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let token_file = dir.join(format!("{}.jwt", args.who.agent));
    crate::keys::write_secret(&token_file, &format!("{}\n", issued.jwt), true)?;

    let mesh_forward = forward::service(cluster, &mesh, args.mesh_port).await?;
    let mut gateway_forwards = Vec::new();
    for gateway in &gateways {
        let name = gateway.name_any();
        gateway_forwards.push((name.clone(), forward::service(cluster, &name, 0).await?));
    }
    let nsh = crate::up::nsh_command();
    let mesh_url = format!("ws://{}", mesh_forward.local);
    let gateway_servers: Vec<(String, String)> = gateway_forwards
        .iter()
        .map(|(name, f)| (format!("gateway-{name}"), format!("http://{}/mcp", f.local)))
        .collect();
    let settings =
        crate::up::configs::agent_settings(&nsh, &mesh_url, &gateway_servers, &token_file);
    let config_file = dir.join(format!("{}.yaml", args.who.agent));
    crate::keys::write_secret(
        &config_file,
        &crate::up::configs::agent_file(
            &format!(
                "`nsh cluster connect` for agent {} of team {team_name} in {}/{} (while it runs)",
                args.who.agent, cluster.context, cluster.namespace
            ),
            &settings,
        )?,
        true,
    )?;

    // A real recipient for the example line: one of the team's agents.
    let example_peer =
        Api::<nsh_operator_api::Agent>::namespaced(cluster.client.clone(), &cluster.namespace)
            .list(&Default::default())
            .await
            .map_err(|err| super::api_error(err, "listing Agents"))?
            .items
            .into_iter()
            .find(|a| a.spec.team_ref.name == team_name)
            .map_or_else(|| "AGENT".to_owned(), |a| a.name_any());
    let quoted =
        |p: &std::path::Path| nsh_contract::quote::word(&p.display().to_string()).into_owned();
    let mut text = format!(
        "team {team_name} in {} (context {}), as agent {}; token valid until {}, renewed while this runs\n\
         mesh: {mesh_url} -> {}\n",
        cluster.namespace, cluster.context, args.who.agent, issued.expires, mesh_forward.service
    );
    for (name, f) in &gateway_forwards {
        text.push_str(&format!(
            "gateway {name}: http://{}/mcp -> {}\n",
            f.local, f.service
        ));
    }
    text.push_str(&format!(
        "Claude Code joins the team with:\n  {nsh} agent launch --config {}\n\
         or from a terminal:\n  {nsh} mesh send --server {mesh_url} --token-file {} --to {example_peer} 'hello from {}'\n\
         connected; Ctrl-C ends the port-forward.\n",
        quoted(&config_file),
        quoted(&token_file),
        args.who.agent
    ));
    {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }

    // Renew at four fifths of the lifetime: the mesh client re-reads the file when it
    // reconnects, the gateway header helper at each connect.
    let renew_every = args.who.ttl.mul_f64(0.8).max(Duration::from_secs(30));
    let shutdown = crate::signal::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(renew_every) => {
                match token::request(cluster, &team_name, &args.who, &audiences).await {
                    Ok(renewed) => {
                        crate::keys::write_secret(&token_file, &format!("{}\n", renewed.jwt), true)?;
                        tracing::info!(expires = %renewed.expires, "token renewed");
                    }
                    Err(err) => tracing::warn!("cannot renew the token: {err:#}"),
                }
            }
        }
    }
    drop(gateway_forwards);
    drop(mesh_forward);
    writeln!(std::io::stdout().lock(), "port-forward ended")?;
    Ok(())
}

pub(crate) async fn send(cluster: &Cluster, args: SendArgs) -> anyhow::Result<()> {
    let team = token::team(cluster, args.team.as_deref()).await?;
    let team_name = team.name_any();
    let (mesh, _) = endpoints(cluster, &team).await?;
    let who = Who {
        team: Some(team_name.clone()),
        agent: args.sender.clone(),
        ttl: Duration::from_secs(300),
    };
    let issued = token::request(cluster, &team_name, &who, &[]).await?;
    let forward = forward::service(cluster, &mesh, 0).await?;
    let ack = nsh_mesh_client::terminal::send(
        &format!("ws://{}", forward.local),
        &TokenSource::Inline(issued.jwt),
        Target::Agent(args.to.clone()),
        args.text,
    )
    .await?;
    writeln!(
        std::io::stdout().lock(),
        "{} (id {}) to {} of team {team_name}, from {}",
        ack.status.map_or("sent", SendStatus::as_str),
        ack.id,
        args.to,
        args.sender
    )?;
    Ok(())
}
