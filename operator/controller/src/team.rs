//! Team: mints the team's signing key into a Secret it owns (created once, never rewritten,
//! never logged) and reports members and whether its mesh exists.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use nsh_mesh_transport::token;
use nsh_operator_api::conditions::{self, reason};
use nsh_operator_api::{Agent, HasConditions as _, MeshServer, Team};

use crate::apply::{self, condition, labels, owner_reference};
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

pub async fn reconcile(team: Arc<Team>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = team.namespace().unwrap_or_default();
    let generation = team.metadata.generation;
    let previous = team.conditions();

    if let Err(err) = validate(&team) {
        apply::set_not_ready(
            &ctx.client,
            team.as_ref(),
            reason::INVALID_SPEC,
            err.to_string(),
        )
        .await?;
        return Err(err);
    }

    // The key is created once: applying a fresh random key on every reconcile would rotate it.
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let secret_name = key_secret_name(&team.name_any());
    if secrets.get_opt(&secret_name).await?.is_none() {
        let secret = build_key_secret(&team, &token::TeamKey::generate_text());
        match secrets
            .create(
                &PostParams {
                    field_manager: Some(apply::FIELD_MANAGER.into()),
                    ..PostParams::default()
                },
                &secret,
            )
            .await
        {
            Ok(_) => tracing::info!(team = %team.name_any(), %namespace, "minted team signing key"),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(err) => return Err(err.into()),
        }
    }

    let mesh_name = &team.spec.mesh_ref.name;
    let mesh = Api::<MeshServer>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(mesh_name)
        .await?;
    let members = Api::<Agent>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|agent| agent.spec.team_ref.name == team.name_any())
        .count();

    let resolved = condition(
        previous,
        conditions::REFERENCE_RESOLVED,
        mesh.is_some(),
        if mesh.is_some() {
            reason::RECONCILED
        } else {
            reason::REFERENCE_MISSING
        },
        if mesh.is_some() {
            format!("MeshServer `{mesh_name}` found")
        } else {
            format!(
                "MeshServer `{mesh_name}` does not exist in namespace `{namespace}`; create it or fix spec.meshRef.name"
            )
        },
        generation,
    );
    let credentials = condition(
        previous,
        conditions::CREDENTIALS_READY,
        true,
        reason::RECONCILED,
        format!("signing key in Secret `{secret_name}`"),
        generation,
    );
    let ready = condition(
        previous,
        conditions::READY,
        mesh.is_some(),
        if mesh.is_some() {
            reason::RECONCILED
        } else {
            reason::REFERENCE_MISSING
        },
        resolved.message.clone(),
        generation,
    );
    let status = serde_json::json!({
        "conditions": [ready, resolved, credentials],
        "observedGeneration": generation,
        "members": members,
        "keySecretName": secret_name,
    });
    apply::apply_status(&ctx.client, team.as_ref(), status).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
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
}
