//! Agent: its mesh token ([`token`]) and its workload ([`workload`]: the `agent launch`
//! ConfigMap and a one-pod StatefulSet with the `nsh mesh client` native sidecar).
//!
//! `dereference` (its Team and the Team's key, the current token, the Team's MeshServer, the
//! McpGateways it names) -> `validate` (groups within the Team's, the token lifetime, launch
//! settings that resolve as `nsh agent launch` will) -> `build` (a new token when due, the
//! workload) -> `apply` -> `status` (`Ready` follows the pod). The token is issued even while
//! the pod must wait for its mesh or a gateway: the agent's identity does not depend on them.

pub mod token;
pub mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::controller::Action;
use nsh_agent_config::settings::Settings;
use nsh_mesh_transport::token::{Claims, TeamKey};
use nsh_operator_api::agent::AgentPhase;
use nsh_operator_api::common::CommonStatus;
use nsh_operator_api::conditions::{self, reason};
use nsh_operator_api::{Agent, AgentStatus, HasConditions as _, McpGateway, MeshServer, Team};

use crate::apply::{self, Applied, Desired, Kind, condition};
use crate::{Context, Error, Result, gateway, team};

/// What an Agent's controller creates, watches and may delete.
pub const OWNS: &[Kind] = &[Kind::Secret, Kind::ConfigMap, Kind::StatefulSet];

/// Everything an Agent refers to.
#[derive(Debug, Clone)]
pub struct Refs {
    pub team: Team,
    pub key: TeamKey,
    /// The JWT in the agent's token Secret, if there is one.
    pub current_token: Option<String>,
    /// The Team's MeshServer; without it the token is issued and the pod waits.
    pub mesh: Option<MeshServer>,
    /// The McpGateways the agent names that exist, by name, with their MCP URLs.
    pub gateways: BTreeMap<String, String>,
    /// Their audiences, which the agent's token carries beside the mesh's.
    pub gateway_audiences: Vec<String>,
}

/// What validation settles.
#[derive(Debug)]
pub struct Valid {
    /// The groups the token allows.
    pub groups: Vec<String>,
    pub ttl: Duration,
    /// The pod's launch settings and the mesh URL, or why the pod cannot be made yet.
    pub workload: Result<(Settings, String)>,
}

pub async fn reconcile(agent: Arc<Agent>, ctx: Arc<Context>) -> Result<Action> {
    let now = nsh_mesh_transport::token::now_unix();
    let mut issued = None;
    let outcome = pipeline(&ctx, &agent, now, &mut issued).await;
    if let Some(status) = status(&agent, issued.as_ref(), &outcome) {
        apply::status(&ctx.client, agent.as_ref(), &status).await?;
    }
    let renew_in = issued.as_ref().map(|claims| token::renew_in(claims, now));
    outcome.map(|_| Action::requeue(renew_in.unwrap_or(Duration::from_secs(300))))
}

/// Runs the pipeline; `issued` gets the claims of the agent's token once it has one.
async fn pipeline(
    ctx: &Context,
    agent: &Agent,
    now: u64,
    issued: &mut Option<Claims>,
) -> Result<Applied> {
    let refs = dereference(&ctx.client, agent).await?;
    let valid = validate(agent, &refs)?;
    let plan = token::plan(
        agent,
        &refs.team,
        &refs.key,
        refs.current_token.as_deref(),
        token::Grants {
            groups: &valid.groups,
            gateways: &refs.gateway_audiences,
        },
        valid.ttl,
        now,
    )?;
    let mut desired = Vec::new();
    if let token::Plan::Minted { jwt, .. } = &plan {
        desired.push(Desired::present(token::build_token_secret(agent, jwt)));
        tracing::info!("issuing a mesh token");
    }
    if let Ok((settings, mesh_url)) = &valid.workload {
        let built = workload::build(
            agent,
            settings,
            mesh_url,
            &ctx.images.sidecar,
            &ctx.images.agent,
        );
        desired.extend(built.into_desired());
    }
    let applied = apply::owned(&ctx.client, agent, desired).await?;
    *issued = Some(plan.claims().clone());
    // The token is out; say why the pod is not.
    valid.workload.map(|_| applied)
}

async fn dereference(client: &kube::Client, agent: &Agent) -> Result<Refs> {
    let namespace = agent.namespace().unwrap_or_default();
    let team_name = &agent.spec.team_ref.name;
    let team = Api::<Team>::namespaced(client.clone(), &namespace)
        .get_opt(team_name)
        .await?
        .ok_or_else(|| {
            Error::waiting(
                reason::REFERENCE_MISSING,
                format!(
                    "Team `{team_name}` does not exist in namespace `{namespace}`; create it or fix spec.teamRef.name"
                ),
            )
        })?;
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let secret_value = |secret: Option<Secret>, field: &str| {
        secret
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(field))
    };
    let key = secret_value(
        secrets.get_opt(&team::key_secret_name(team_name)).await?,
        team::KEY_FIELD,
    )
    .and_then(|k| TeamKey::from_file_contents(&k.0).ok())
    .ok_or_else(|| {
        Error::waiting(
            reason::REFERENCE_NOT_READY,
            format!("Team `{team_name}` has no signing key yet"),
        )
    })?;
    let current_token = secret_value(
        secrets
            .get_opt(&token::token_secret_name(&agent.name_any()))
            .await?,
        token::TOKEN_FIELD,
    )
    .map(|jwt| String::from_utf8_lossy(&jwt.0).into_owned());
    let mesh = Api::<MeshServer>::namespaced(client.clone(), &namespace)
        .get_opt(&team.spec.mesh_ref.name)
        .await?;
    // Only the gateways this agent names (most name none: no API call at all).
    let gateway_api = Api::<McpGateway>::namespaced(client.clone(), &namespace);
    let mut gateways = BTreeMap::new();
    let mut gateway_audiences = Vec::new();
    for reference in agent
        .spec
        .mcp_servers
        .iter()
        .filter_map(|s| s.gateway_ref.as_ref())
    {
        if let Some(found) = gateway_api.get_opt(&reference.name).await? {
            gateways.insert(found.name_any(), gateway::url(&found));
            gateway_audiences.push(nsh_contract::url::gateway_audience(
                &found.name_any(),
                &namespace,
            ));
        }
    }
    gateway_audiences.sort();
    gateway_audiences.dedup();
    Ok(Refs {
        team,
        key,
        current_token,
        mesh,
        gateways,
        gateway_audiences,
    })
}

/// Checks the agent against what it refers to. An error here stops everything; an error in
/// `workload` stops only the pod.
pub fn validate(agent: &Agent, refs: &Refs) -> Result<Valid> {
    let groups = token::resolve_groups(agent, &refs.team)?;
    let ttl = team::validate(&refs.team)?;
    let workload = match &refs.mesh {
        None => Err(Error::waiting(
            reason::REFERENCE_MISSING,
            format!(
                "MeshServer `{}` of team `{}` does not exist; the token is issued, the pod waits for the mesh",
                refs.team.spec.mesh_ref.name,
                refs.team.name_any()
            ),
        )),
        Some(mesh) => {
            let mesh_url = nsh_contract::url::mesh_service(
                &mesh.name_any(),
                &agent.namespace().unwrap_or_default(),
                mesh.spec.service.port,
            );
            workload::launch_settings(agent, &mesh_url, &refs.gateways)
                .map(|settings| (settings, mesh_url))
        }
    };
    Ok(Valid {
        groups,
        ttl,
        workload,
    })
}

/// The status for how the pipeline ended (`issued`: the token the agent has); `None` when an
/// API call failed.
pub fn status(
    agent: &Agent,
    issued: Option<&Claims>,
    outcome: &Result<Applied>,
) -> Option<AgentStatus> {
    let generation = agent.metadata.generation;
    let previous = agent.conditions();
    let name = agent.name_any();
    let pod = workload::pod_name(&name);
    let (ready, running) = match outcome {
        Err(err) => (apply::not_ready(previous, err, generation)?, false),
        Ok(applied) => {
            let ready_replicas = applied
                .stateful_set(&name)
                .and_then(|s| s.status.as_ref())
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            let running = ready_replicas >= 1;
            let (why, message) = if running {
                (
                    reason::RECONCILED,
                    format!("pod `{pod}` is ready (agent and mesh-client sidecar)"),
                )
            } else {
                (
                    reason::WAITING_FOR_PODS,
                    format!("pod `{pod}` is not ready yet"),
                )
            };
            let ready = condition(
                previous,
                conditions::READY,
                running,
                why,
                message,
                generation,
            );
            (ready, running)
        }
    };
    let expires = issued.map(|claims| {
        k8s_openapi::jiff::Timestamp::from_second(i64::try_from(claims.exp).unwrap_or(i64::MAX))
            .unwrap_or_default()
    });
    let credentials = expires.map(|expires| {
        condition(
            previous,
            conditions::CREDENTIALS_READY,
            true,
            reason::TOKEN_ISSUED,
            format!(
                "token in Secret `{}` until {expires}",
                token::token_secret_name(&name)
            ),
            generation,
        )
    });
    Some(AgentStatus {
        common: CommonStatus {
            conditions: std::iter::once(ready).chain(credentials).collect(),
            observed_generation: generation,
        },
        pod: outcome.is_ok().then_some(pod),
        token_expiry: expires.map(Time),
        phase: Some(if running {
            AgentPhase::Running
        } else {
            AgentPhase::Pending
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Agent {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nsh.dev/v1alpha1", "kind": "Agent",
            "metadata": { "name": "alice", "namespace": "ns", "uid": "a1", "generation": 2 },
            "spec": { "teamRef": { "name": "alpha" } },
        }))
        .unwrap()
    }

    fn claims() -> Claims {
        serde_json::from_value(serde_json::json!({
            "sub": "alice", "team": "alpha", "groups": [], "iss": "nsh-mesh", "aud": "nsh-mesh",
            "iat": 1_000, "exp": 2_000, "jti": "j",
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_waiting_for_its_mesh_keeps_the_issued_token_in_the_status() {
        let waiting = Err(Error::waiting(reason::REFERENCE_MISSING, "no mesh"));
        let reported = status(&agent(), Some(&claims()), &waiting).unwrap();
        let types: Vec<_> = reported
            .common
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            types,
            [
                ("Ready", "False", reason::REFERENCE_MISSING),
                ("CredentialsReady", "True", reason::TOKEN_ISSUED)
            ]
        );
        assert!(reported.token_expiry.is_some());
        assert_eq!(reported.phase, Some(AgentPhase::Pending));
        assert_eq!(reported.pod, None);
        assert_eq!(reported.common.observed_generation, Some(2));
    }

    #[test]
    fn a_failed_api_call_leaves_the_status_alone() {
        let failed = Err(Error::Kube(kube::Error::LinesCodecMaxLineLengthExceeded));
        assert!(status(&agent(), Some(&claims()), &failed).is_none());
    }
}
