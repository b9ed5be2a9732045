//! Agent: the agent's mesh token (a JWT per the mesh wire contract, signed with its Team's key)
//! in a Secret the Agent owns, re-minted before it expires or when its claims change; then its
//! workload ([`agent_workload`](crate::agent_workload)): the `agent launch` ConfigMap and a
//! one-pod StatefulSet with the `nsh mesh client` native sidecar. `Ready` follows the pod.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt as _;
use kube::api::{Api, ObjectMeta};
use kube::runtime::controller::Action;
use nsh_mesh_transport::token::{self, ANY_GROUP, Claims, TeamKey, TokenRequest};
use nsh_operator_api::conditions::{self, reason};
use nsh_operator_api::{Agent, HasConditions as _, McpGateway, MeshServer, Team};

use crate::apply::{self, condition, labels, owner_reference};
use crate::{Context, Error, Result, agent_workload, team};

/// Port of an McpGateway's Service (`http://<gateway>.<namespace>.svc:8080/mcp`).
pub const GATEWAY_PORT: u16 = 8080;

/// The MCP URL agents use for `gateway` in `namespace`: its status once it reports one.
fn gateway_url(gateway: &McpGateway, namespace: &str) -> String {
    gateway
        .status
        .as_ref()
        .and_then(|s| s.url.clone())
        .unwrap_or_else(|| {
            format!(
                "http://{}.{namespace}.svc:{GATEWAY_PORT}/mcp",
                gateway.name_any()
            )
        })
}

/// Key of the token inside the agent's Secret.
pub const TOKEN_FIELD: &str = "token";
/// A token is re-minted once less than this share of its lifetime is left.
const RENEW_AT_REMAINING: f64 = 0.2;

pub fn token_secret_name(agent: &str) -> String {
    format!("{agent}-mesh-token")
}

/// The groups the token allows: the agent's, which must be among the team's (`*` = all of the
/// team's groups).
pub fn resolve_groups(agent: &Agent, team: &Team) -> Result<Vec<String>> {
    if agent.spec.groups.iter().any(|g| g == ANY_GROUP) {
        return Ok(team.spec.groups.clone());
    }
    if let Some(outside) = agent
        .spec
        .groups
        .iter()
        .find(|g| !team.spec.groups.contains(g))
    {
        return Err(Error::invalid(
            "spec.groups",
            format!(
                "group `{outside}` is not one of team `{}`'s groups {:?}",
                team.name_any(),
                team.spec.groups
            ),
            "add it to the Team's spec.groups or remove it here",
        ));
    }
    Ok(agent.spec.groups.clone())
}

/// Whether a token with `current` claims must be replaced, at `now` (Unix seconds).
pub fn needs_new_token(
    current: Option<&Claims>,
    team: &str,
    agent: &str,
    groups: &[String],
    now: u64,
) -> bool {
    let Some(claims) = current else { return true };
    if claims.team != team || claims.sub != agent || claims.groups != groups {
        return true;
    }
    let lifetime = claims.exp.saturating_sub(claims.iat) as f64;
    let remaining = claims.exp.saturating_sub(now) as f64;
    remaining <= lifetime * RENEW_AT_REMAINING
}

/// The token Secret, owned by the agent.
pub fn build_token_secret(agent: &Agent, jwt: &str) -> Secret {
    let name = agent.name_any();
    Secret {
        metadata: ObjectMeta {
            name: Some(token_secret_name(&name)),
            namespace: agent.namespace(),
            labels: Some(labels("agent-token", &name)),
            owner_references: Some(vec![owner_reference(agent)]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            TOKEN_FIELD.to_owned(),
            ByteString(jwt.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

pub async fn reconcile(agent: Arc<Agent>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = agent.namespace().unwrap_or_default();
    let name = agent.name_any();
    let generation = agent.metadata.generation;
    let previous = agent.conditions();

    // Dereference: the team, and its key.
    let team_name = &agent.spec.team_ref.name;
    let Some(team) = Api::<Team>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(team_name)
        .await?
    else {
        let message = format!(
            "Team `{team_name}` does not exist in namespace `{namespace}`; create it or fix spec.teamRef.name"
        );
        apply::set_not_ready(
            &ctx.client,
            agent.as_ref(),
            reason::REFERENCE_MISSING,
            message.clone(),
        )
        .await?;
        return Err(Error::Waiting(message));
    };
    let key = Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&team::key_secret_name(team_name))
        .await?
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove(team::KEY_FIELD));
    let Some(key) = key.and_then(|k| TeamKey::from_file_contents(&k.0).ok()) else {
        let message = format!("Team `{team_name}` has no signing key yet");
        apply::set_not_ready(
            &ctx.client,
            agent.as_ref(),
            reason::REFERENCE_NOT_READY,
            message.clone(),
        )
        .await?;
        return Err(Error::Waiting(message));
    };

    // Validate against the team.
    let resolved =
        resolve_groups(&agent, &team).and_then(|groups| Ok((groups, team::validate(&team)?)));
    let (groups, ttl) = match resolved {
        Ok(resolved) => resolved,
        Err(err) => {
            apply::set_not_ready(
                &ctx.client,
                agent.as_ref(),
                reason::INVALID_SPEC,
                err.to_string(),
            )
            .await?;
            return Err(err);
        }
    };

    // Build and apply the token, only when the current one must be replaced.
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let current = secrets
        .get_opt(&token_secret_name(&name))
        .await?
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove(TOKEN_FIELD))
        .and_then(|jwt| {
            token::verify(
                &String::from_utf8_lossy(&jwt.0),
                &SingleTeamKey(team_name, &key),
            )
            .ok()
        });
    let now = token::now_unix();
    let claims = if needs_new_token(current.as_ref(), team_name, &name, &groups, now) {
        let request = TokenRequest {
            team: team_name,
            agent: &name,
            groups: &groups,
            ttl,
        };
        let jwt = token::mint(&request, &key, now).map_err(|e| {
            Error::invalid(
                "metadata.name",
                e.to_string(),
                "use a name of letters, digits, '.', '_' and '-'",
            )
        })?;
        apply::apply(&ctx.client, &namespace, &build_token_secret(&agent, &jwt)).await?;
        tracing::info!(agent = %name, %namespace, "issued mesh token");
        token::peek_claims(&jwt).map_err(|e| Error::Waiting(e.to_string()))?
    } else {
        current.expect("needs_new_token is true without a current token")
    };

    let expires =
        k8s_openapi::jiff::Timestamp::from_second(i64::try_from(claims.exp).unwrap_or(i64::MAX))
            .unwrap_or_default();
    let credentials = condition(
        previous,
        conditions::CREDENTIALS_READY,
        true,
        reason::TOKEN_ISSUED,
        format!(
            "token in Secret `{}` until {expires}",
            token_secret_name(&name)
        ),
        generation,
    );
    let status = |ready: Condition, phase: &str, pod: Option<String>| {
        serde_json::json!({
            "conditions": [ready, credentials.clone()],
            "observedGeneration": generation,
            "tokenExpiry": Time(expires),
            "phase": phase,
            "pod": pod,
        })
    };
    let not_ready = |why: &str, message: String| {
        status(
            condition(previous, conditions::READY, false, why, message, generation),
            "Pending",
            None,
        )
    };

    // Dereference the team's mesh (its in-cluster URL) and the namespace's gateways.
    let mesh_name = &team.spec.mesh_ref.name;
    let Some(mesh) = Api::<MeshServer>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(mesh_name)
        .await?
    else {
        let message = format!(
            "MeshServer `{mesh_name}` of team `{team_name}` does not exist; the token is issued, the pod waits for the mesh"
        );
        apply::apply_status(
            &ctx.client,
            agent.as_ref(),
            not_ready(reason::REFERENCE_MISSING, message.clone()),
        )
        .await?;
        return Err(Error::Waiting(message));
    };
    let mesh_url = format!(
        "ws://{mesh_name}.{namespace}.svc:{}",
        mesh.spec.service.port
    );
    // Only the gateways this agent names (most name none: no API call at all).
    let gateway_api = Api::<McpGateway>::namespaced(ctx.client.clone(), &namespace);
    let mut gateways = BTreeMap::new();
    for reference in agent
        .spec
        .mcp_servers
        .iter()
        .filter_map(|s| s.gateway_ref.as_ref())
    {
        if let Some(gateway) = gateway_api.get_opt(&reference.name).await? {
            gateways.insert(gateway.name_any(), gateway_url(&gateway, &namespace));
        }
    }
    let settings = match agent_workload::launch_settings(&agent, &mesh_url, &gateways) {
        Ok(settings) => settings,
        Err(err) => {
            let why = match err {
                Error::Waiting(_) => reason::REFERENCE_MISSING,
                _ => reason::INVALID_SPEC,
            };
            apply::apply_status(&ctx.client, agent.as_ref(), not_ready(why, err.to_string()))
                .await?;
            return Err(err);
        }
    };

    // Build and apply the workload.
    let workload = agent_workload::build(
        &agent,
        &settings,
        &mesh_url,
        &ctx.default_image,
        &ctx.agent_image,
    );
    apply::apply(&ctx.client, &namespace, &workload.config_map).await?;
    apply::apply(&ctx.client, &namespace, &workload.stateful_set).await?;

    // Status: Ready follows the pod, through the StatefulSet's status.
    let ready_replicas = Api::<StatefulSet>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&name)
        .await?
        .and_then(|s| s.status)
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let pod = agent_workload::pod_name(&name);
    let ready = if ready_replicas >= 1 {
        condition(
            previous,
            conditions::READY,
            true,
            reason::RECONCILED,
            format!("pod `{pod}` is ready (agent and mesh-client sidecar)"),
            generation,
        )
    } else {
        condition(
            previous,
            conditions::READY,
            false,
            reason::WAITING_FOR_PODS,
            format!("pod `{pod}` is not ready yet"),
            generation,
        )
    };
    let phase = if ready_replicas >= 1 {
        "Running"
    } else {
        "Pending"
    };
    apply::apply_status(&ctx.client, agent.as_ref(), status(ready, phase, Some(pod))).await?;
    // Come back when the token should be renewed.
    let renew_in = claims.exp.saturating_sub(now) as f64 * (1.0 - RENEW_AT_REMAINING);
    Ok(Action::requeue(Duration::from_secs_f64(renew_in.max(1.0))))
}

/// The one team key, as a lookup for `token::verify`.
struct SingleTeamKey<'a>(&'a str, &'a TeamKey);

impl token::KeyLookup for SingleTeamKey<'_> {
    fn key(&self, team: &str) -> Option<TeamKey> {
        (team == self.0).then(|| self.1.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(groups: &[&str]) -> Agent {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nsh.dev/v1alpha1", "kind": "Agent",
            "metadata": { "name": "alice", "namespace": "ns", "uid": "a1" },
            "spec": { "teamRef": { "name": "alpha" }, "groups": groups },
        }))
        .unwrap()
    }

    fn team(groups: &[&str]) -> Team {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nsh.dev/v1alpha1", "kind": "Team",
            "metadata": { "name": "alpha", "namespace": "ns", "uid": "t1" },
            "spec": { "meshRef": { "name": "mesh" }, "groups": groups },
        }))
        .unwrap()
    }

    #[test]
    fn groups_must_be_the_teams_and_star_means_all_of_them() {
        assert_eq!(
            resolve_groups(&agent(&["ops"]), &team(&["ops", "dev"])).unwrap(),
            ["ops"]
        );
        assert_eq!(
            resolve_groups(&agent(&["*"]), &team(&["ops", "dev"])).unwrap(),
            ["ops", "dev"]
        );
        let err = resolve_groups(&agent(&["finance"]), &team(&["ops"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("spec.groups:") && err.contains("finance"),
            "{err}"
        );
    }

    #[test]
    fn tokens_are_renewed_near_expiry_or_when_claims_change() {
        let claims = |groups: &[&str]| Claims {
            sub: "alice".into(),
            team: "alpha".into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            iss: token::ISSUER.into(),
            aud: token::AUDIENCE.into(),
            iat: 1_000,
            exp: 2_000,
            jti: "j".into(),
        };
        let ops = vec!["ops".to_owned()];
        assert!(needs_new_token(None, "alpha", "alice", &ops, 1_000));
        assert!(!needs_new_token(
            Some(&claims(&["ops"])),
            "alpha",
            "alice",
            &ops,
            1_500
        ));
        assert!(
            needs_new_token(Some(&claims(&["ops"])), "alpha", "alice", &ops, 1_850),
            "within the last 20%"
        );
        assert!(
            needs_new_token(Some(&claims(&["dev"])), "alpha", "alice", &ops, 1_100),
            "groups changed"
        );
        assert!(
            needs_new_token(Some(&claims(&["ops"])), "beta", "alice", &ops, 1_100),
            "team changed"
        );
    }

    #[test]
    fn the_token_secret_is_owned_by_the_agent() {
        let secret = build_token_secret(&agent(&[]), "jwt");
        assert_eq!(secret.metadata.name.as_deref(), Some("alice-mesh-token"));
        assert_eq!(secret.metadata.owner_references.unwrap()[0].kind, "Agent");
        assert_eq!(secret.data.unwrap()[TOKEN_FIELD].0, b"jwt");
    }
}
