//! `Authorization: Bearer <team JWT>` on every request to `/mcp`, verified with the team keys
//! by the mesh's own code. The token must name this gateway in `aud` (a mesh-only token is
//! refused) and come from a team the gateway serves. The caller's token is never forwarded:
//! upstream requests are the gateway's own.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nsh_gateway_config::Caller;
use nsh_mesh_transport::keys::KeyDir;
use nsh_mesh_transport::token;

use crate::front::Authenticated;

/// Who may call, from the config in force.
#[derive(Debug, Clone)]
pub struct Admission {
    pub audience: String,
    pub teams: Vec<String>,
}

#[derive(Debug)]
pub struct Auth {
    pub keys: Arc<KeyDir>,
    pub admission: ArcSwap<Admission>,
}

fn refuse(status: StatusCode, challenge: &str, message: String) -> Response {
    (
        status,
        [(header::WWW_AUTHENTICATE, challenge.to_owned())],
        message,
    )
        .into_response()
}

pub async fn authenticate(
    State(auth): State<Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(bearer) = bearer else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"nsh-gateway\"",
            "missing token: send Authorization: Bearer <team JWT minted for this gateway's audience>\n".into(),
        );
    };
    let admission = auth.admission.load();
    let claims = match token::verify_for(
        bearer,
        auth.keys.as_ref(),
        &admission.audience,
        token::MAX_TTL,
        token::now_unix(),
    ) {
        Ok(claims) => claims,
        Err(err) => {
            tracing::info!(%err, "gateway request refused");
            return refuse(
                StatusCode::UNAUTHORIZED,
                "Bearer realm=\"nsh-gateway\", error=\"invalid_token\"",
                format!("unauthorized: {err}\n"),
            );
        }
    };
    if !admission
        .teams
        .iter()
        .any(|t| t == "*" || *t == claims.team)
    {
        tracing::info!(team = %claims.team, "gateway request refused: team not served");
        return refuse(
            StatusCode::FORBIDDEN,
            "Bearer realm=\"nsh-gateway\", error=\"insufficient_scope\"",
            format!(
                "forbidden: team `{}` may not call this gateway\n",
                claims.team
            ),
        );
    }
    request.extensions_mut().insert(Authenticated {
        caller: Caller {
            team: claims.team,
            agent: claims.sub,
        },
    });
    next.run(request).await
}
