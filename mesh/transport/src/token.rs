//! Team-scoped mesh tokens: HS256 JWTs signed with the team's key, header `kid` = team.
//!
//! Claims: `sub` (agent id), `team`, `groups` (`"*"` allows any), `iss` = `aud` = `nsh-mesh`,
//! `iat`, `exp`, `jti`. Verification pins the algorithm, requires `exp` and `iat`, allows 30 s
//! of skew, checks `nbf` when present, and refuses tokens issued in the future or living longer
//! than the verifier's maximum lifetime ([`MAX_TTL`] unless configured).
//!
//! `aud` may be one string or an array (RFC 7519 §4.1.3): a token minted for the mesh and a
//! gateway names both. `jti` is an identifier for logs and audit only: tokens are bearer
//! credentials reused on every reconnect, so it is not tracked for single use.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

pub use crate::display::shown;

pub const ISSUER: &str = "nsh-mesh";
pub const AUDIENCE: &str = "nsh-mesh";
/// Clock skew tolerated on `exp`, `iat` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// Longest token lifetime accepted by default (`nsh mesh server --max-token-ttl`): a stolen
/// token must not work forever. Also the longest `nsh mesh token --ttl` and Team `tokenTtl`.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A group-claim entry that allows every group.
pub const ANY_GROUP: &str = "*";
/// Shortest key accepted: HS256 is only as strong as its key.
pub const MIN_KEY_BYTES: usize = 16;

/// A team's HMAC secret: the bytes of its key file with surrounding whitespace trimmed.
#[derive(Clone, PartialEq, Eq)]
pub struct TeamKey(Vec<u8>);

impl TeamKey {
    pub fn from_file_contents(bytes: &[u8]) -> Result<Self, TokenError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_KEY_BYTES {
            return Err(TokenError::WeakKey { len: trimmed.len() });
        }
        Ok(Self(trimmed.to_vec()))
    }

    /// A new random key in the text form `nsh mesh keygen` writes: 32 random bytes, base64.
    pub fn generate_text() -> String {
        let bytes: [u8; 32] = rand::random();
        STANDARD.encode(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Never print a key, not even in debug logs.
impl std::fmt::Debug for TeamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TeamKey(<{} bytes>)", self.0.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Agent id.
    pub sub: String,
    pub team: String,
    #[serde(default)]
    pub groups: Vec<String>,
    pub iss: String,
    pub aud: Audience,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

/// The `aud` claim: one audience or several. Serialized as a plain string when there is one,
/// which is what every token minted before gateways existed carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience(pub Vec<String>);

impl Audience {
    pub fn contains(&self, audience: &str) -> bool {
        self.0.iter().any(|a| a == audience)
    }
}

impl From<&str> for Audience {
    fn from(audience: &str) -> Self {
        Self(vec![audience.to_owned()])
    }
}

impl Serialize for Audience {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => serializer.serialize_str(one),
            many => many.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(one) => Self(vec![one]),
            OneOrMany::Many(many) => Self(many),
        })
    }
}

impl Claims {
    /// Whether the token lets its agent join `group`.
    pub fn may_join(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == ANY_GROUP || g == group)
    }
}

/// What to put in a new token.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    pub team: &'a str,
    pub agent: &'a str,
    pub groups: &'a [String],
    pub ttl: Duration,
    /// Verifiers besides the mesh that must accept the token (MCP gateways' audiences).
    pub audiences: &'a [String],
}

/// Why a token was not minted or not accepted. The `Display` text is what a refused client
/// reads after `unauthorized: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing token: pass auth {{ token: \"<JWT>\" }} in the handshake")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token has no `kid` header naming its team")]
    MissingKid,
    #[error("unknown team `{0}`: the mesh has no key for it")]
    UnknownTeam(String),
    #[error("algorithm {0} is not accepted; tokens must be HS256")]
    WrongAlgorithm(String),
    #[error("bad signature: the token was not signed with team `{0}`'s current key")]
    BadSignature(String),
    #[error("token expired")]
    Expired,
    #[error("token is not valid yet (`nbf` is in the future)")]
    NotYetValid,
    #[error("token was issued in the future (`iat`); check this machine's clock")]
    IssuedInFuture,
    #[error(
        "token lives too long: it expires in {expires_in}, and this mesh accepts at most {max} (mint a shorter one, e.g. `nsh mesh token --ttl 24h`, or raise the server's --max-token-ttl)",
        expires_in = humantime_secs(*.expires_in_secs),
        max = humantime_secs(*.max_secs)
    )]
    TooLong { expires_in_secs: u64, max_secs: u64 },
    #[error("wrong issuer or audience: both must be `nsh-mesh`")]
    WrongIssuerOrAudience,
    #[error(
        "the token is not for `{0}`: its `aud` claim does not name it (mint it with that audience, e.g. `nsh mesh token --audience {0}`)"
    )]
    NotForThisAudience(String),
    #[error("missing claim `{0}`")]
    MissingClaim(String),
    #[error("`kid` header `{kid}` does not match the `team` claim `{team}`")]
    TeamMismatch { kid: String, team: String },
    #[error("invalid {field} `{value}`: {why}")]
    BadName {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("team key is too short ({len} bytes); use at least 16, e.g. `nsh mesh keygen`")]
    WeakKey { len: usize },
    #[error("ttl must be positive")]
    ZeroTtl,
    #[error("ttl {} is longer than the {} a mesh accepts by default; use a shorter one (tokens are re-minted, not kept forever)", humantime_secs(*.0), humantime_secs(MAX_TTL.as_secs()))]
    TtlTooLong(u64),
    #[error("could not sign token: {0}")]
    Signing(String),
}

fn humantime_secs(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// Where the verifier finds team keys (the server's key directory, a test's map, ...).
pub trait KeyLookup {
    fn key(&self, team: &str) -> Option<TeamKey>;
}

impl KeyLookup for std::collections::HashMap<String, TeamKey> {
    fn key(&self, team: &str) -> Option<TeamKey> {
        self.get(team).cloned()
    }
}

fn check_name(field: &'static str, value: &str) -> Result<(), TokenError> {
    match nsh_contract::names::check(value) {
        Some(why) => Err(TokenError::BadName {
            field,
            value: shown(value),
            why,
        }),
        None => Ok(()),
    }
}

/// Mints a token for `request`, valid from `now_unix` for `request.ttl`.
pub fn mint(
    request: &TokenRequest<'_>,
    key: &TeamKey,
    now_unix: u64,
) -> Result<String, TokenError> {
    check_name("team", request.team)?;
    check_name("agent", request.agent)?;
    for group in request.groups.iter().filter(|g| *g != ANY_GROUP) {
        check_name("group", group)?;
    }
    if request.ttl.is_zero() {
        return Err(TokenError::ZeroTtl);
    }
    if request.ttl > MAX_TTL {
        return Err(TokenError::TtlTooLong(request.ttl.as_secs()));
    }
    let claims = Claims {
        sub: request.agent.to_owned(),
        team: request.team.to_owned(),
        groups: request.groups.to_vec(),
        iss: ISSUER.to_owned(),
        aud: Audience(
            std::iter::once(AUDIENCE.to_owned())
                .chain(request.audiences.iter().filter(|a| *a != AUDIENCE).cloned())
                .collect(),
        ),
        iat: now_unix,
        exp: now_unix + request.ttl.as_secs().max(1),
        jti: uuid::Uuid::new_v4().to_string(),
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(request.team.to_owned());
    let key =
        EncodingKey::from_secret(key.as_bytes()).map_err(|e| TokenError::Signing(e.to_string()))?;
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| TokenError::Signing(e.to_string()))
}

/// Verifies `token` against the key of the team its `kid` names, with the default maximum
/// lifetime ([`MAX_TTL`]).
pub fn verify(token: &str, keys: &impl KeyLookup) -> Result<Claims, TokenError> {
    verify_with(token, keys, MAX_TTL, now_unix())
}

/// [`verify`] with a maximum lifetime (how far in the future `exp` may be) at time `now`.
pub fn verify_with(
    token: &str,
    keys: &impl KeyLookup,
    max_ttl: Duration,
    now: u64,
) -> Result<Claims, TokenError> {
    verify_for(token, keys, AUDIENCE, max_ttl, now)
}

/// [`verify_with`] for a verifier other than the mesh: the token's `aud` must name
/// `audience` (an MCP gateway's; a token minted for the mesh alone is refused there).
pub fn verify_for(
    token: &str,
    keys: &impl KeyLookup,
    audience: &str,
    max_ttl: Duration,
    now: u64,
) -> Result<Claims, TokenError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    if header.alg != Algorithm::HS256 {
        return Err(TokenError::WrongAlgorithm(format!("{:?}", header.alg)));
    }
    let team = header.kid.ok_or(TokenError::MissingKid)?;
    // The `kid` is attacker-chosen: check it before it is looked up, logged or echoed.
    check_name("team", &team)?;
    let key = keys
        .key(&team)
        .ok_or_else(|| TokenError::UnknownTeam(team.clone()))?;

    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY.as_secs();
    // Off by default in jsonwebtoken: a token with `nbf` in the future must not work yet.
    validation.validate_nbf = true;
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let key = DecodingKey::from_secret(key.as_bytes())
        .map_err(|e| TokenError::Malformed(e.to_string()))?;
    let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|err| match err
        .kind()
    {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidSignature => TokenError::BadSignature(team.clone()),
        ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm("other than HS256".into()),
        ErrorKind::InvalidIssuer => TokenError::WrongIssuerOrAudience,
        ErrorKind::InvalidAudience if audience == AUDIENCE => TokenError::WrongIssuerOrAudience,
        ErrorKind::InvalidAudience => TokenError::NotForThisAudience(audience.to_owned()),
        ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
        other => TokenError::Malformed(format!("{other:?}")),
    })?;
    let claims = data.claims;
    let leeway = LEEWAY.as_secs();
    if claims.iat > now.saturating_add(leeway) {
        return Err(TokenError::IssuedInFuture);
    }
    let expires_in = claims.exp.saturating_sub(now);
    if expires_in > max_ttl.as_secs().saturating_add(leeway) {
        return Err(TokenError::TooLong {
            expires_in_secs: expires_in,
            max_secs: max_ttl.as_secs(),
        });
    }
    if claims.team != team {
        return Err(TokenError::TeamMismatch {
            kid: team,
            team: shown(&claims.team),
        });
    }
    check_name("agent", &claims.sub)?;
    Ok(claims)
}

/// Reads the claims of `token` without checking its signature: for display (`nsh mesh client`
/// learns its agent id and team this way), never for authorization.
pub fn peek_claims(token: &str) -> Result<Claims, TokenError> {
    jsonwebtoken::dangerous::insecure_decode_claims::<Claims>(token.trim())
        .map_err(|e| TokenError::Malformed(e.to_string()))
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn key(text: &str) -> TeamKey {
        TeamKey::from_file_contents(text.as_bytes()).unwrap()
    }

    fn keys() -> HashMap<String, TeamKey> {
        HashMap::from([
            ("alpha".to_owned(), key("alpha-secret-0123456789\n")),
            ("beta".to_owned(), key("beta-secret-0123456789")),
        ])
    }

    fn token(team: &str, signing: &str, ttl: u64, now: u64) -> String {
        let groups = vec!["ops".to_owned()];
        mint(
            &TokenRequest {
                team,
                agent: "a1",
                groups: &groups,
                ttl: Duration::from_secs(ttl),
                audiences: &[],
            },
            &key(signing),
            now,
        )
        .unwrap()
    }

    #[test]
    fn a_minted_token_verifies_and_carries_the_claims() {
        let claims = verify(
            &token("alpha", "alpha-secret-0123456789", 3600, now_unix()),
            &keys(),
        )
        .unwrap();
        assert_eq!((claims.sub.as_str(), claims.team.as_str()), ("a1", "alpha"));
        assert_eq!(
            (claims.iss.as_str(), &claims.aud),
            (ISSUER, &Audience::from(AUDIENCE))
        );
        assert_eq!(claims.exp - claims.iat, 3600);
        assert!(claims.may_join("ops") && !claims.may_join("dev"));
        assert!(!claims.jti.is_empty());
    }

    #[test]
    fn key_file_whitespace_is_trimmed() {
        // Signed with the trimmed bytes, verified against a key read with a trailing newline.
        assert!(
            verify(
                &token("alpha", "  alpha-secret-0123456789  ", 60, now_unix()),
                &keys()
            )
            .is_ok()
        );
    }

    #[test]
    fn every_refusal_has_its_own_reason() {
        let now = now_unix();
        assert_eq!(verify("", &keys()), Err(TokenError::Missing));
        assert!(matches!(
            verify("not.a.jwt", &keys()),
            Err(TokenError::Malformed(_))
        ));
        assert_eq!(
            verify(&token("gamma", "gamma-secret-0123456789", 60, now), &keys()),
            Err(TokenError::UnknownTeam("gamma".into()))
        );
        assert_eq!(
            verify(&token("alpha", "beta-secret-0123456789", 60, now), &keys()),
            Err(TokenError::BadSignature("alpha".into()))
        );
        // Expired beyond the 30 s leeway; within it still accepted.
        assert_eq!(
            verify(
                &token("alpha", "alpha-secret-0123456789", 60, now - 120),
                &keys()
            ),
            Err(TokenError::Expired)
        );
        assert!(
            verify(
                &token("alpha", "alpha-secret-0123456789", 60, now - 80),
                &keys()
            )
            .is_ok()
        );
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        // {"alg":"none","kid":"alpha"} . valid claims . no signature
        let claims = serde_json::json!({ "sub": "a1", "team": "alpha", "iss": ISSUER, "aud": AUDIENCE,
            "iat": now_unix(), "exp": now_unix() + 60, "jti": "x" });
        let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({ "alg": "none", "kid": "alpha" })),
            b64(&claims)
        );
        assert!(verify(&none, &keys()).is_err());
        let hs512 = jsonwebtoken::encode(
            &Header {
                kid: Some("alpha".into()),
                ..Header::new(Algorithm::HS512)
            },
            &claims,
            &EncodingKey::from_secret(b"alpha-secret-0123456789").unwrap(),
        )
        .unwrap();
        assert!(matches!(
            verify(&hs512, &keys()),
            Err(TokenError::WrongAlgorithm(_))
        ));
    }

    #[test]
    fn kid_must_match_the_team_claim() {
        let claims = serde_json::json!({ "sub": "a1", "team": "beta", "iss": ISSUER, "aud": AUDIENCE,
            "iat": now_unix(), "exp": now_unix() + 60, "jti": "x" });
        let forged = jsonwebtoken::encode(
            &Header {
                kid: Some("alpha".into()),
                ..Header::new(Algorithm::HS256)
            },
            &claims,
            &EncodingKey::from_secret(b"alpha-secret-0123456789").unwrap(),
        )
        .unwrap();
        assert!(matches!(
            verify(&forged, &keys()),
            Err(TokenError::TeamMismatch { .. })
        ));
    }

    #[test]
    fn minting_refuses_bad_names_weak_keys_and_zero_ttl() {
        let k = key("alpha-secret-0123456789");
        let no_groups: Vec<String> = vec![];
        let bad_agent = TokenRequest {
            team: "alpha",
            agent: "a:b",
            groups: &no_groups,
            ttl: Duration::from_secs(1),
            audiences: &[],
        };
        assert!(matches!(
            mint(&bad_agent, &k, 0),
            Err(TokenError::BadName { field: "agent", .. })
        ));
        let zero = TokenRequest {
            team: "alpha",
            agent: "a",
            groups: &no_groups,
            ttl: Duration::ZERO,
            audiences: &[],
        };
        assert_eq!(mint(&zero, &k, 0), Err(TokenError::ZeroTtl));
        assert_eq!(
            TeamKey::from_file_contents(b" short \n"),
            Err(TokenError::WeakKey { len: 5 })
        );
    }

    #[test]
    fn generated_keys_are_base64_of_32_bytes_and_differ() {
        let (a, b) = (TeamKey::generate_text(), TeamKey::generate_text());
        assert_eq!(a.len(), 44);
        assert_ne!(a, b);
        assert_eq!(STANDARD.decode(&a).unwrap().len(), 32);
    }

    /// Signs arbitrary claims with alpha's key, `kid` = `kid`.
    fn signed(kid: &str, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header {
                kid: Some(kid.into()),
                ..Header::new(Algorithm::HS256)
            },
            claims,
            &EncodingKey::from_secret(b"alpha-secret-0123456789").unwrap(),
        )
        .unwrap()
    }

    fn claims_with(extra: serde_json::Value) -> serde_json::Value {
        let now = now_unix();
        let mut claims = serde_json::json!({ "sub": "a1", "team": "alpha", "iss": ISSUER,
            "aud": AUDIENCE, "iat": now, "exp": now + 60, "jti": "x" });
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims
    }

    #[test]
    fn aud_may_be_a_string_or_an_array_naming_the_mesh() {
        let many = signed(
            "alpha",
            &claims_with(serde_json::json!({ "aud": ["nsh-gateway/tools", AUDIENCE] })),
        );
        let claims = verify(&many, &keys()).unwrap();
        assert!(claims.aud.contains(AUDIENCE) && claims.aud.contains("nsh-gateway/tools"));
        assert!(peek_claims(&many).unwrap().aud.contains(AUDIENCE));
        // Serialized back in the form it came in.
        assert_eq!(
            serde_json::to_value(&claims.aud).unwrap(),
            serde_json::json!(["nsh-gateway/tools", AUDIENCE])
        );
        let other = signed(
            "alpha",
            &claims_with(serde_json::json!({ "aud": ["nsh-gateway/tools"] })),
        );
        assert_eq!(
            verify(&other, &keys()),
            Err(TokenError::WrongIssuerOrAudience)
        );
    }

    #[test]
    fn lifetimes_are_bounded_and_nbf_and_iat_are_checked() {
        let now = now_unix();
        let forever = signed(
            "alpha",
            &claims_with(serde_json::json!({ "exp": u64::MAX })),
        );
        let err = verify(&forever, &keys()).unwrap_err();
        assert!(matches!(err, TokenError::TooLong { .. }), "{err}");
        assert!(err.to_string().contains("--max-token-ttl"), "{err}");
        // Just inside the default maximum is fine; a configured shorter maximum refuses it.
        let month = signed(
            "alpha",
            &claims_with(serde_json::json!({ "exp": now + MAX_TTL.as_secs() })),
        );
        assert!(verify(&month, &keys()).is_ok());
        assert!(matches!(
            verify_with(&month, &keys(), Duration::from_secs(3600), now),
            Err(TokenError::TooLong { .. })
        ));
        let later = signed(
            "alpha",
            &claims_with(serde_json::json!({ "nbf": now + 600 })),
        );
        assert_eq!(verify(&later, &keys()), Err(TokenError::NotYetValid));
        let future = signed(
            "alpha",
            &claims_with(serde_json::json!({ "iat": now + 600, "exp": now + 1200 })),
        );
        assert_eq!(verify(&future, &keys()), Err(TokenError::IssuedInFuture));
        // Within the leeway both are accepted (clocks drift).
        let skewed = signed(
            "alpha",
            &claims_with(serde_json::json!({ "iat": now + 10, "nbf": now + 10 })),
        );
        assert!(verify(&skewed, &keys()).is_ok());
        let request = TokenRequest {
            team: "alpha",
            agent: "a",
            groups: &[],
            ttl: MAX_TTL + Duration::from_secs(1),
            audiences: &[],
        };
        assert!(matches!(
            mint(&request, &key("alpha-secret-0123456789"), now),
            Err(TokenError::TtlTooLong(_))
        ));
    }

    #[test]
    fn a_hostile_kid_is_refused_without_repeating_it_raw() {
        let forged_line = "alpha\n2026-12-03T00:00:00Z INFO agent connected team=alpha";
        let err = verify(
            &signed(forged_line, &claims_with(serde_json::json!({}))),
            &keys(),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("\\u{a}"), "{err}");
        let huge = "k".repeat(700_000);
        let err = verify(&signed(&huge, &claims_with(serde_json::json!({}))), &keys())
            .unwrap_err()
            .to_string();
        assert!(err.len() < 300, "{} bytes: the kid was echoed", err.len());
        assert!(err.contains("more characters"), "{err}");
    }

    #[test]
    fn peek_reads_claims_without_a_key() {
        let claims =
            peek_claims(&token("alpha", "alpha-secret-0123456789", 60, now_unix())).unwrap();
        assert_eq!(claims.team, "alpha");
    }
}
