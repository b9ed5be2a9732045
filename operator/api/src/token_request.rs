//! Tokens for agents outside the cluster (a laptop's `nsh cluster connect`), requested through
//! a Secret rather than by reading the Team's key: whoever may create a Secret labelled
//! [`LABEL`] in the Team's namespace gets a short-lived token for a name that no Agent there
//! holds; the key never leaves the cluster.
//!
//! 1. The requester creates a Secret of type [`SECRET_TYPE`], labelled [`LABEL`]`=true`, with
//!    the annotations [`TEAM`], [`AGENT`] and optionally [`TTL`] (default [`DEFAULT_TTL`], at
//!    most [`MAX_TTL`]) and [`AUDIENCES`] (comma-separated McpGateway audiences).
//! 2. The operator fills `data.token` ([`TOKEN_FIELD`]) and the annotation [`EXPIRES`], or sets
//!    [`REFUSED`] to why it will not (an unknown Team, a name an Agent holds, a bad TTL).
//! 3. The requester reads the token and deletes the Secret.

use std::time::Duration;

/// Label that marks a token request (the operator watches only these Secrets).
pub const LABEL: &str = "nsh.dev/token-request";
/// The Secret type of a token request.
pub const SECRET_TYPE: &str = "nsh.dev/token-request";
/// Annotation: the Team the token is for.
pub const TEAM: &str = "nsh.dev/team";
/// Annotation: the agent name (the token's `sub`).
pub const AGENT: &str = "nsh.dev/agent";
/// Annotation: the token's lifetime, e.g. `8h`.
pub const TTL: &str = "nsh.dev/ttl";
/// Annotation: McpGateway audiences the token should also be valid at, comma-separated.
pub const AUDIENCES: &str = "nsh.dev/audiences";
/// Annotation set by the operator: when the issued token expires (RFC 3339).
pub const EXPIRES: &str = "nsh.dev/expires";
/// Annotation set by the operator: why no token was issued.
pub const REFUSED: &str = "nsh.dev/refused";
/// Key of the token in the Secret's data.
pub const TOKEN_FIELD: &str = "token";

pub const DEFAULT_TTL: Duration = Duration::from_secs(8 * 3600);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Whether the operator has answered `secret` (a token or a refusal is in it).
pub fn is_answered(secret: &k8s_openapi::api::core::v1::Secret) -> bool {
    secret
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(REFUSED))
        || secret
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key(TOKEN_FIELD))
}
