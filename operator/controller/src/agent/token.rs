//! The agent's mesh token: a JWT per the mesh wire contract, signed with its Team's key, in a
//! Secret the Agent owns, re-minted before it expires or when its claims change.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;
use kube::api::ObjectMeta;
use nsh_mesh_transport::token::{self, ANY_GROUP, Claims, TeamKey, TokenError, TokenRequest};
use nsh_operator_api::{Agent, Team};

use crate::apply::{labels, owner_reference};
use crate::{Error, Result};

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

/// The `aud` an agent's token carries: the mesh's, then each gateway's it names.
pub fn audiences_for(gateways: &[String]) -> Vec<String> {
    std::iter::once(token::AUDIENCE.to_owned())
        .chain(gateways.iter().cloned())
        .collect()
}

/// Whether a token with `current` claims must be replaced, at `now` (Unix seconds).
/// `gateways` are the audiences of the McpGateways the agent names.
pub fn needs_new_token(
    current: Option<&Claims>,
    team: &str,
    agent: &str,
    groups: &[String],
    gateways: &[String],
    now: u64,
) -> bool {
    let Some(claims) = current else { return true };
    if claims.team != team
        || claims.sub != agent
        || claims.groups != groups
        || claims.aud.0 != audiences_for(gateways)
    {
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

/// The token the agent should have: the current one while it is good, else a new one
/// (`Minted`). `current` is the JWT in its Secret, if any.
#[derive(Debug, Clone)]
pub enum Plan {
    Keep(Claims),
    Minted { jwt: String, claims: Claims },
}

impl Plan {
    pub fn claims(&self) -> &Claims {
        match self {
            Self::Keep(claims) | Self::Minted { claims, .. } => claims,
        }
    }
}

/// What the token allows besides the agent's identity.
#[derive(Debug, Clone, Copy)]
pub struct Grants<'a> {
    /// Groups the agent may join.
    pub groups: &'a [String],
    /// Audiences of the McpGateways it may call.
    pub gateways: &'a [String],
}

/// Decides on the agent's token at `now` (pure, apart from a new token's random id).
pub fn plan(
    agent: &Agent,
    team: &Team,
    key: &TeamKey,
    current_jwt: Option<&str>,
    grants: Grants<'_>,
    ttl: Duration,
    now: u64,
) -> Result<Plan> {
    let Grants { groups, gateways } = grants;
    let (team_name, name) = (team.name_any(), agent.name_any());
    let current = current_jwt.and_then(|jwt| {
        token::verify_with(jwt, &SingleTeamKey(&team_name, key), token::MAX_TTL, now).ok()
    });
    if let Some(claims) = current
        .as_ref()
        .filter(|c| !needs_new_token(Some(c), &team_name, &name, groups, gateways, now))
    {
        return Ok(Plan::Keep(claims.clone()));
    }
    let request = TokenRequest {
        team: &team_name,
        agent: &name,
        groups,
        ttl,
        audiences: gateways,
    };
    let jwt = token::mint(&request, key, now).map_err(mint_error)?;
    let claims = token::peek_claims(&jwt).map_err(Error::Mint)?;
    Ok(Plan::Minted { jwt, claims })
}

/// A refused mint, named for the field that holds what was refused.
fn mint_error(err: TokenError) -> Error {
    match err {
        TokenError::BadName { field, value, why } => {
            let (field, fix) = match field {
                "agent" => ("metadata.name", "rename the Agent"),
                "team" => ("spec.teamRef.name", "use a Team whose name fits"),
                _ => ("spec.groups", "rename the group"),
            };
            Error::invalid(
                field,
                format!("`{value}` {why}"),
                format!(
                    "{fix}: letters, digits, '.', '_' and '-', at most 63, starting with a letter or digit"
                ),
            )
        }
        TokenError::ZeroTtl | TokenError::TtlTooLong(_) => Error::invalid(
            "spec.tokenTtl (of the Team)",
            err.to_string(),
            "use a lifetime between 1m and 30d",
        ),
        other => Error::Mint(other),
    }
}

/// When to come back: once the token should be renewed.
pub fn renew_in(claims: &Claims, now: u64) -> Duration {
    let renew_in = claims.exp.saturating_sub(now) as f64 * (1.0 - RENEW_AT_REMAINING);
    Duration::from_secs_f64(renew_in.max(1.0))
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
        assert!(needs_new_token(None, "alpha", "alice", &ops, &[], 1_000));
        assert!(!needs_new_token(
            Some(&claims(&["ops"])),
            "alpha",
            "alice",
            &ops,
            &[],
            1_500
        ));
        assert!(
            needs_new_token(Some(&claims(&["ops"])), "alpha", "alice", &ops, &[], 1_850),
            "within the last 20%"
        );
        assert!(
            needs_new_token(Some(&claims(&["dev"])), "alpha", "alice", &ops, &[], 1_100),
            "groups changed"
        );
        assert!(
            needs_new_token(Some(&claims(&["ops"])), "beta", "alice", &ops, &[], 1_100),
            "team changed"
        );
        assert!(
            needs_new_token(
                Some(&claims(&["ops"])),
                "alpha",
                "alice",
                &ops,
                &["nsh-gateway/ns/tools".to_owned()],
                1_100
            ),
            "a gateway was added to the agent"
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
