//! Team: mints the team's signing key into a Secret it owns (created once, never rewritten,
//! never logged) and reports members and whether its mesh exists.
//!
//! `dereference` (its mesh, members, key) -> `validate` (token lifetime) -> `create_key` when
//! missing -> `status`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use nsh_mesh_transport::token;
use nsh_operator_api::common::CommonStatus;
use nsh_operator_api::conditions::{self, reason};
use nsh_operator_api::{Agent, HasConditions as _, MeshServer, Team, TeamStatus};

use crate::apply::{self, Kind, condition, labels, owner_reference};
use crate::{Context, Error, Result};

/// Key of the signing key inside the team's Secret.
pub const KEY_FIELD: &str = "key";
/// Shortest token lifetime accepted: rotation needs headroom.
const MIN_TOKEN_TTL: Duration = Duration::from_secs(60);

pub fn key_secret_name(team: &str) -> String {
    format!("{team}-team-key")
}

/// What the schema cannot check: the token lifetime as a duration.
pub fn validate(team: &Team) -> Result<Duration> {
    let ttl = humantime::parse_duration(&team.spec.token_ttl).map_err(|e| {
        Error::invalid(
            "spec.tokenTtl",
            format!("`{}` is not a duration ({e})", team.spec.token_ttl),
            "use e.g. 24h or 90m",
        )
    })?;
    if ttl < MIN_TOKEN_TTL {
        return Err(Error::invalid(
            "spec.tokenTtl",
            format!("{ttl:?} is too short"),
            "use at least 1m so tokens can be rotated before they expire",
        ));
    }
    if ttl > token::MAX_TTL {
        return Err(Error::invalid(
            "spec.tokenTtl",
            format!("{} is longer than the mesh accepts", team.spec.token_ttl),
            "use at most 30d (the mesh refuses longer-lived tokens; the operator re-mints them before they expire)",
        ));
    }
    Ok(ttl)
}

/// The team's key Secret, holding `key_text` (a new random key).
pub fn build_key_secret(team: &Team, key_text: &str) -> Secret {
    let name = team.name_any();
    Secret {
        metadata: ObjectMeta {
            name: Some(key_secret_name(&name)),
            namespace: team.namespace(),
            labels: Some(labels("team-key", &name)),
            owner_references: Some(vec![owner_reference(team)]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(
            [(
                KEY_FIELD.to_owned(),
                ByteString(key_text.as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Secret::default()
    }
}

/// What a Team's controller creates (its key Secret, once) and watches.
pub const OWNS: &[Kind] = &[Kind::Secret];

/// What the Team points at and what points at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refs {
    /// Whether its MeshServer (`spec.meshRef`) exists.
    pub mesh_exists: bool,
    /// Agents whose `teamRef` names it.
    pub members: usize,
    /// The uid of its key Secret, if it exists (it is made once, never re-applied).
    pub key_id: Option<String>,
}

pub async fn reconcile(team: Arc<Team>, ctx: Arc<Context>) -> Result<Action> {
    let outcome = pipeline(&ctx.client, &team).await;
    if let Some(status) = status(&team, &outcome) {
        apply::status(&ctx.client, team.as_ref(), &status).await?;
    }
    outcome.map(|_| Action::requeue(Duration::from_secs(300)))
}

async fn pipeline(client: &kube::Client, team: &Team) -> Result<Refs> {
    let mut refs = dereference(client, team).await?;
    validate(team)?;
    if refs.key_id.is_none() {
        refs.key_id = Some(create_key(client, team).await?);
    }
    Ok(refs)
}

async fn dereference(client: &kube::Client, team: &Team) -> Result<Refs> {
    let namespace = team.namespace().unwrap_or_default();
    let mesh_exists = Api::<MeshServer>::namespaced(client.clone(), &namespace)
        .get_opt(&team.spec.mesh_ref.name)
        .await?
        .is_some();
    let members = Api::<Agent>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|agent| agent.spec.team_ref.name == team.name_any())
        .count();
    let key_id = Api::<Secret>::namespaced(client.clone(), &namespace)
        .get_opt(&key_secret_name(&team.name_any()))
        .await?
        .and_then(|secret| secret.metadata.uid);
    Ok(Refs {
        mesh_exists,
        members,
        key_id,
    })
}

/// Creates the key Secret, once: applying a fresh random key on every reconcile would rotate it.
/// Returns the uid of the Secret that holds the key.
async fn create_key(client: &kube::Client, team: &Team) -> Result<String> {
    let namespace = team.namespace().unwrap_or_default();
    let secret = build_key_secret(team, &token::TeamKey::generate_text());
    let params = PostParams {
        field_manager: Some(apply::FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let created = match secrets.create(&params, &secret).await {
        Ok(created) => {
            tracing::info!("minted team signing key");
            created
        }
        // Another reconcile made it first: that key stays.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            secrets.get(&key_secret_name(&team.name_any())).await?
        }
        Err(err) => return Err(err.into()),
    };
    Ok(created.metadata.uid.unwrap_or_default())
}

/// The status for how the pipeline ended; `None` when an API call failed.
pub fn status(team: &Team, outcome: &Result<Refs>) -> Option<TeamStatus> {
    let generation = team.metadata.generation;
    let previous = team.conditions();
    let refs = match outcome {
        Ok(refs) => refs,
        Err(err) => {
            return Some(TeamStatus {
                common: apply::failed(previous, err, generation)?,
                ..TeamStatus::default()
            });
        }
    };
    let mesh_name = &team.spec.mesh_ref.name;
    let namespace = team.namespace().unwrap_or_default();
    let (reason, message) = if refs.mesh_exists {
        (
            reason::RECONCILED,
            format!("MeshServer `{mesh_name}` found"),
        )
    } else {
        (
            reason::REFERENCE_MISSING,
            format!(
                "MeshServer `{mesh_name}` does not exist in namespace `{namespace}`; create it or fix spec.meshRef.name"
            ),
        )
    };
    let secret_name = key_secret_name(&team.name_any());
    let condition = |type_, ok, reason, message: &str| {
        condition(previous, type_, ok, reason, message, generation)
    };
    Some(TeamStatus {
        common: CommonStatus {
            conditions: vec![
                condition(conditions::READY, refs.mesh_exists, reason, &message),
                condition(
                    conditions::REFERENCE_RESOLVED,
                    refs.mesh_exists,
                    reason,
                    &message,
                ),
                condition(
                    conditions::CREDENTIALS_READY,
                    true,
                    reason::RECONCILED,
                    &format!("signing key in Secret `{secret_name}`"),
                ),
            ],
            observed_generation: generation,
        },
        members: Some(i32::try_from(refs.members).unwrap_or(i32::MAX)),
        key_secret_name: Some(secret_name),
        key_id: refs.key_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team(json: &str) -> Team {
        serde_json::from_str(json).expect("fixture")
    }

    #[test]
    fn token_ttl_must_be_a_duration_of_at_least_a_minute() {
        let base = r#"{"apiVersion":"nsh.dev/v1alpha1","kind":"Team","metadata":{"name":"alpha","namespace":"ns","uid":"u1"},"spec":{"meshRef":{"name":"mesh"},"tokenTtl":"TTL"}}"#;
        let err = validate(&team(&base.replace("TTL", "31d")))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("spec.tokenTtl:") && err.contains("30d"),
            "{err}"
        );
        assert!(validate(&team(&base.replace("TTL", "30d"))).is_ok());
        assert_eq!(
            validate(&team(&base.replace("TTL", "24h"))).unwrap(),
            Duration::from_secs(86400)
        );
        let err = validate(&team(&base.replace("TTL", "30s")))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("spec.tokenTtl:") && err.contains("at least 1m"),
            "{err}"
        );
    }

    #[test]
    fn key_secret_is_owned_by_the_team_and_holds_the_key() {
        let team = team(
            r#"{"apiVersion":"nsh.dev/v1alpha1","kind":"Team","metadata":{"name":"alpha","namespace":"ns","uid":"u1"},"spec":{"meshRef":{"name":"mesh"}}}"#,
        );
        let secret = build_key_secret(&team, "k3y");
        assert_eq!(secret.metadata.name.as_deref(), Some("alpha-team-key"));
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Team", "u1", Some(true))
        );
        assert_eq!(secret.data.unwrap()[KEY_FIELD].0, b"k3y");
    }

    #[test]
    fn status_reports_the_mesh_members_and_an_invalid_spec() {
        let team = team(
            r#"{"apiVersion":"nsh.dev/v1alpha1","kind":"Team","metadata":{"name":"alpha","namespace":"ns","uid":"u1","generation":3},"spec":{"meshRef":{"name":"mesh"}}}"#,
        );
        let refs = Refs {
            mesh_exists: false,
            members: 2,
            key_id: Some("s1".into()),
        };
        let reported = status(&team, &Ok(refs)).unwrap();
        assert_eq!(reported.members, Some(2));
        let ready = &reported.common.conditions[0];
        assert_eq!(
            (
                ready.type_.as_str(),
                ready.status.as_str(),
                ready.reason.as_str()
            ),
            ("Ready", "False", reason::REFERENCE_MISSING)
        );
        assert_eq!(reported.common.observed_generation, Some(3));

        let invalid = Error::invalid("spec.tokenTtl", "bad", "fix it");
        let reported = status(&team, &Err(invalid)).unwrap();
        assert_eq!(reported.common.conditions[0].reason, reason::INVALID_SPEC);
        assert!(reported.key_secret_name.is_none());
    }
}
