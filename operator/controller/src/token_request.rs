//! Token requests (`nsh_operator_api::token_request`): a Secret asks for a short-lived token
//! for an agent outside the cluster; the operator signs it with the Team's key, which never
//! leaves the cluster. `parse -> dereference -> validate -> mint -> answer`, the ends touching
//! the client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource as _, ResourceExt as _};
use nsh_mesh_transport::token::{self, TeamKey, TokenRequest};
use nsh_operator_api::token_request as request;
use nsh_operator_api::{Agent, Team};

use crate::apply::FIELD_MANAGER;
use crate::{Context, Error, Result, team};

/// What a request Secret asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub namespace: String,
    pub team: String,
    pub agent: String,
    pub ttl: Duration,
    pub audiences: Vec<String>,
}

/// `None` when the request was answered already (a token or a refusal is in it).
pub fn parse(secret: &Secret) -> Result<Option<Request>> {
    if request::is_answered(secret) {
        return Ok(None);
    }
    let annotations = secret.annotations();
    let namespace = secret.namespace().unwrap_or_default();
    let needed = |key: &'static str| {
        annotations
            .get(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Error::invalid(
                    format!("metadata.annotations[{key}]"),
                    "is missing",
                    "set it (nsh cluster connect and nsh cluster token do)",
                )
            })
    };
    let (team, agent) = (needed(request::TEAM)?, needed(request::AGENT)?);
    let ttl = match annotations.get(request::TTL) {
        None => request::DEFAULT_TTL,
        Some(text) => humantime::parse_duration(text.trim()).map_err(|err| {
            Error::invalid(
                format!("metadata.annotations[{}]", request::TTL),
                format!("`{text}` is not a duration ({err})"),
                "write it like 8h or 30m",
            )
        })?,
    };
    if ttl.is_zero() || ttl > request::MAX_TTL {
        return Err(Error::invalid(
            format!("metadata.annotations[{}]", request::TTL),
            format!(
                "{} is not between 1s and {}",
                humantime::format_duration(ttl),
                humantime::format_duration(request::MAX_TTL)
            ),
            "ask for a shorter token and request a new one when it expires",
        ));
    }
    let audiences = annotations
        .get(request::AUDIENCES)
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(Request {
        namespace,
        team,
        agent,
        ttl,
        audiences,
    }))
}

/// Whether the request may be answered with a token: the agent name is well formed and no
/// Agent of the team holds it (a laptop must not take over a pod's mail), and every audience
/// is a gateway of this namespace.
pub fn validate(request: &Request, team_exists: bool, agents_of_team: &[String]) -> Result<()> {
    let field = |key: &str| format!("metadata.annotations[{key}]");
    if !team_exists {
        return Err(Error::invalid(
            field(request::TEAM),
            format!(
                "Team `{}` does not exist in namespace `{}`",
                request.team, request.namespace
            ),
            "name an existing Team (kubectl get teams)",
        ));
    }
    if let Some(why) = nsh_contract::names::check(&request.agent) {
        return Err(Error::invalid(
            field(request::AGENT),
            format!("`{}` {why}", request.agent),
            "pick another agent name",
        ));
    }
    if agents_of_team.contains(&request.agent) {
        return Err(Error::invalid(
            field(request::AGENT),
            format!(
                "Agent `{}` of team `{}` runs in the cluster under this name",
                request.agent, request.team
            ),
            "pick a name no Agent of the team has, e.g. the laptop user's",
        ));
    }
    let own_gateways = format!("nsh-gateway/{}/", request.namespace);
    if let Some(other) = request
        .audiences
        .iter()
        .find(|a| !a.starts_with(&own_gateways))
    {
        return Err(Error::invalid(
            field(request::AUDIENCES),
            format!("`{other}` is not the audience of an McpGateway in this namespace"),
            format!("use audiences of the form {own_gateways}<name>"),
        ));
    }
    Ok(())
}

/// The partial Secret the operator applies: the token and its expiry, or the refusal.
pub fn answer(secret: &Secret, outcome: std::result::Result<(&str, u64), String>) -> Secret {
    let mut annotations = BTreeMap::new();
    let mut data = None;
    match outcome {
        Ok((jwt, expires)) => {
            let expires = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_secs(expires),
            )
            .to_string();
            annotations.insert(request::EXPIRES.to_owned(), expires);
            data = Some(BTreeMap::from([(
                request::TOKEN_FIELD.to_owned(),
                k8s_openapi::ByteString(jwt.as_bytes().to_vec()),
            )]));
        }
        Err(why) => {
            annotations.insert(request::REFUSED.to_owned(), why);
        }
    }
    Secret {
        metadata: kube::api::ObjectMeta {
            name: secret.metadata.name.clone(),
            namespace: secret.namespace(),
            annotations: Some(annotations),
            ..kube::api::ObjectMeta::default()
        },
        data,
        ..Secret::default()
    }
}

pub async fn reconcile(secret: Arc<Secret>, ctx: Arc<Context>) -> Result<Action> {
    let request = match parse(&secret) {
        Ok(Some(request)) => request,
        Ok(None) => return Ok(Action::await_change()),
        Err(refused) => {
            apply(&ctx, &answer(&secret, Err(refused.to_string()))).await?;
            return Ok(Action::await_change());
        }
    };
    let client = &ctx.client;
    let team = Api::<Team>::namespaced(client.clone(), &request.namespace)
        .get_opt(&request.team)
        .await?;
    let agents: Vec<String> = Api::<Agent>::namespaced(client.clone(), &request.namespace)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|a| a.spec.team_ref.name == request.team)
        .map(|a| a.name_any())
        .collect();
    if let Err(refused) = validate(&request, team.is_some(), &agents) {
        tracing::info!(agent = %request.agent, team = %request.team, %refused, "token request refused");
        apply(&ctx, &answer(&secret, Err(refused.to_string()))).await?;
        return Ok(Action::await_change());
    }
    let team = team.expect("validated: the team exists");
    let key = Api::<Secret>::namespaced(client.clone(), &request.namespace)
        .get_opt(&team::key_secret_name(&request.team))
        .await?
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove(team::KEY_FIELD))
        .and_then(|k| TeamKey::from_file_contents(&k.0).ok())
        .ok_or_else(|| {
            Error::waiting(
                nsh_operator_api::conditions::reason::REFERENCE_NOT_READY,
                format!("Team `{}` has no signing key yet", request.team),
            )
        })?;
    let now = token::now_unix();
    let jwt = token::mint(
        &TokenRequest {
            team: &request.team,
            agent: &request.agent,
            groups: &team.spec.groups,
            ttl: request.ttl,
            audiences: &request.audiences,
        },
        &key,
        now,
    )
    .map_err(Error::Mint)?;
    let expires = now + request.ttl.as_secs();
    apply(&ctx, &answer(&secret, Ok((&jwt, expires)))).await?;
    tracing::info!(agent = %request.agent, team = %request.team, ttl = ?request.ttl, "token issued");
    // On the Team: who got a token, for how long (Events are the audit trail kubectl shows).
    let event = Event {
        type_: EventType::Normal,
        reason: nsh_operator_api::conditions::reason::TOKEN_ISSUED.into(),
        note: Some(format!(
            "issued a token for agent `{}` outside the cluster, valid {} (request {})",
            request.agent,
            humantime::format_duration(request.ttl),
            secret.name_any()
        )),
        action: "IssueToken".into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &team.object_ref(&())).await {
        tracing::debug!(%err, "could not publish event");
    }
    Ok(Action::await_change())
}

async fn apply(ctx: &Context, partial: &Secret) -> Result<()> {
    let namespace = partial.namespace().unwrap_or_default();
    let mut body =
        serde_json::to_value(partial).map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
        .patch(
            &partial.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(yaml: &str) -> Secret {
        serde_saphyr::from_str(yaml).unwrap()
    }

    const ASKING: &str = r#"
metadata:
  name: r1
  namespace: team-a
  labels: { nsh.dev/token-request: "true" }
  annotations: { nsh.dev/team: alpha, nsh.dev/agent: me-laptop, nsh.dev/ttl: 2h,
                 nsh.dev/audiences: "nsh-gateway/team-a/tools" }
type: nsh.dev/token-request
"#;

    #[test]
    fn a_request_names_team_agent_ttl_and_audiences() {
        let request = parse(&secret(ASKING)).unwrap().unwrap();
        assert_eq!(
            request,
            Request {
                namespace: "team-a".into(),
                team: "alpha".into(),
                agent: "me-laptop".into(),
                ttl: Duration::from_secs(7200),
                audiences: vec!["nsh-gateway/team-a/tools".into()],
            }
        );
        validate(&request, true, &["alice".into(), "bob".into()]).unwrap();
    }

    #[test]
    fn an_answered_request_is_left_alone() {
        let mut answered = secret(ASKING);
        answered.data = Some(BTreeMap::from([(
            "token".to_owned(),
            k8s_openapi::ByteString(b"x".to_vec()),
        )]));
        assert_eq!(parse(&answered).unwrap(), None);
    }

    #[test]
    fn refusals_name_the_annotation_and_the_fix() {
        let request = parse(&secret(ASKING)).unwrap().unwrap();
        let taken = validate(&request, true, &["me-laptop".into()])
            .unwrap_err()
            .to_string();
        assert!(
            taken.starts_with("metadata.annotations[nsh.dev/agent]: Agent `me-laptop`"),
            "{taken}"
        );
        let no_team = validate(&request, false, &[]).unwrap_err().to_string();
        assert!(no_team.contains("Team `alpha` does not exist"), "{no_team}");
        let other = Request {
            audiences: vec!["nsh-gateway/other/tools".into()],
            ..request
        };
        let audience = validate(&other, true, &[]).unwrap_err().to_string();
        assert!(audience.contains("nsh-gateway/team-a/<name>"), "{audience}");

        let long = secret(&ASKING.replace("nsh.dev/ttl: 2h", "nsh.dev/ttl: 3d"));
        let ttl = parse(&long).unwrap_err().to_string();
        assert!(ttl.contains("metadata.annotations[nsh.dev/ttl]"), "{ttl}");
        let missing = secret(&ASKING.replace("nsh.dev/agent: me-laptop,", ""));
        assert!(
            parse(&missing)
                .unwrap_err()
                .to_string()
                .contains("nsh.dev/agent")
        );
    }

    #[test]
    fn the_answer_carries_the_token_or_the_refusal_only() {
        let asking = secret(ASKING);
        let issued = answer(&asking, Ok(("jwt", 0)));
        assert_eq!(issued.data.unwrap()["token"].0, b"jwt");
        assert_eq!(
            issued.metadata.annotations.unwrap()[request::EXPIRES],
            "1970-01-01T00:00:00Z"
        );
        let refused = answer(&asking, Err("no".into()));
        assert!(refused.data.is_none());
        assert_eq!(
            refused.metadata.annotations.unwrap()[request::REFUSED],
            "no"
        );
    }
}
