//! Events between agents and the mesh, and their acknowledgements. Every client -> server
//! event is answered through the Socket.io ack callback.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Socket.io event names.
pub mod event {
    pub const MESSAGE: &str = "message";
    pub const PRESENCE: &str = "presence";
    pub const GROUP_JOIN: &str = "group:join";
    pub const GROUP_LEAVE: &str = "group:leave";
    pub const GROUP_LIST: &str = "group:list";
    pub const GROUP_MEMBERS: &str = "group:members";
    pub const HISTORY: &str = "history";
}

/// Prefix of every `connect_error` message caused by authentication.
/// In a `forbidden` error's message when the token's `groups` claim does not list the group
/// (as opposed to a group the agent may join but has not).
pub const TOKEN_FORBIDS_GROUP: &str = "token does not allow group";
/// In an `unavailable` error's message when the mesh runs without persistence (nothing to
/// wait for, unlike a store that is down).
pub const NO_HISTORY: &str = "keeps no history";
pub const UNAUTHORIZED_PREFIX: &str = "unauthorized:";

/// Longest message id accepted (a UUID is 36 characters, a ULID 26).
pub const MAX_ID_LEN: usize = 128;

/// Which bytes a message id may contain.
const ID_BYTES: [bool; 256] = nsh_contract::names::ascii_alphanumeric_and(b"-_.:");

/// The largest message a mesh accepts unless started with another `--max-message-bytes`:
/// bytes of `text` plus the JSON of `metadata`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    Direct,
    Group,
}

/// A message as the mesh delivers it. `from` and `timestamp` are set by the server. The relay
/// writes it with the `encoded` module rather than serde: a field added here goes there too, and
/// into the generator of `same_json_as_serde`, which compares the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: MessageKind,
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// RFC 3339 UTC time at which the server accepted the message.
    pub timestamp: String,
    /// Seconds the message stays deliverable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Agent(String),
    Group(String),
}

/// The `message` event a client sends. Unknown fields (including `from` and `timestamp`)
/// are ignored: the server never trusts them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRequest {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

/// Error codes of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    RecipientOffline,
    Forbidden,
    RateLimited,
    Invalid,
    TooLarge,
    /// The message store is down (persistence on): the message could not be kept.
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RecipientOffline => "recipient_offline",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::Invalid => "invalid",
            Self::TooLarge => "too_large",
            Self::Unavailable => "unavailable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendStatus {
    /// A recipient's client acknowledged receipt.
    Delivered,
    /// The id was seen from this sender recently; not delivered again.
    Duplicate,
    /// Kept in the message store (persistence on), not acknowledged by a recipient yet: it is
    /// delivered when the recipient connects.
    Stored,
}

impl SendStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Duplicate => "duplicate",
            Self::Stored => "stored",
        }
    }
}

/// The ack of a `message` event: `{ ok: true, id, status }` or `{ ok: false, id, error }`.
/// Written by the `encoded` module too, as [`Envelope`] is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendAck {
    pub ok: bool,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SendStatus>,
    /// For group messages: the members whose clients acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_to: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

impl SendAck {
    pub fn delivered(id: impl Into<String>, delivered_to: Option<Vec<String>>) -> Self {
        Self {
            ok: true,
            id: id.into(),
            status: Some(SendStatus::Delivered),
            delivered_to,
            error: None,
        }
    }

    pub fn duplicate(id: impl Into<String>) -> Self {
        Self {
            ok: true,
            id: id.into(),
            status: Some(SendStatus::Duplicate),
            delivered_to: None,
            error: None,
        }
    }

    pub fn failed(id: impl Into<String>, error: WireError) -> Self {
        Self {
            ok: false,
            id: id.into(),
            status: None,
            delivered_to: None,
            error: Some(error),
        }
    }
}

/// The one shape of a refusal, for every event: `{ ok: false, error }`, plus the request's
/// `id` or `group` (when it had one) so the client can match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAck {
    /// Always `false`.
    pub ok: bool,
    pub error: WireError,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl ErrorAck {
    pub fn new(error: WireError, id: Option<String>, group: Option<String>) -> Self {
        Self {
            ok: false,
            error,
            id,
            group,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPresence {
    pub id: String,
    pub online: bool,
    /// RFC 3339 time of the agent's first current connection.
    pub since: String,
    pub groups: Vec<String>,
}

/// Ack of `presence`: the caller's team only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceList {
    pub agents: Vec<AgentPresence>,
}

/// Broadcast to the team when an agent's first connection opens or its last one closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceChange {
    pub agent: String,
    pub online: bool,
    pub at: String,
}

/// `group:join`, `group:leave` and `group:members` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRequest {
    pub group: String,
}

/// Ack of `group:join`, `group:leave` and `group:members`: `{ ok, group, members }`, or
/// `{ ok: false, group, error }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupAck {
    pub ok: bool,
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

impl GroupAck {
    /// A successful answer: the group's members after the request.
    pub fn members(group: impl Into<String>, members: Vec<String>) -> Self {
        Self {
            ok: true,
            group: group.into(),
            members: Some(members),
            error: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub name: String,
    pub members: usize,
}

/// Ack of `group:list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupList {
    pub groups: Vec<GroupSummary>,
}

/// `history` request: a group's conversation or the direct one with an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Only messages before this `seq` (paging backwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

/// Most messages one `history` answer carries.
pub const MAX_HISTORY: usize = 200;

/// One message of a `history` answer: the envelope and its place in the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    #[serde(flatten)]
    pub envelope: Envelope,
    /// Position in the conversation; pass the oldest as `before` for the page before it.
    pub seq: String,
}

/// `history` answer: oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryAnswer {
    pub ok: bool,
    pub messages: Vec<HistoryEntry>,
}

impl HistoryRequest {
    /// Exactly one of `group`/`with`, valid names, a limit within bounds (default 50).
    pub fn validate(&self) -> Result<(Target, usize), WireError> {
        let invalid = |message: String| WireError::new(ErrorCode::Invalid, message);
        let target = match (&self.group, &self.with) {
            (Some(group), None) => ("group", Target::Group(group.clone())),
            (None, Some(with)) => ("with", Target::Agent(with.clone())),
            _ => return Err(invalid("group/with: give exactly one".into())),
        };
        let (field, Target::Agent(name) | Target::Group(name)) = &target;
        if let Some(why) = nsh_contract::names::check(name) {
            return Err(invalid(format!("{field}: {why}")));
        }
        let limit = self.limit.unwrap_or(50);
        if limit == 0 || limit > MAX_HISTORY {
            return Err(invalid(format!("limit: must be 1 to {MAX_HISTORY}")));
        }
        if let Some(before) = &self.before
            && !is_seq(before)
        {
            return Err(invalid(
                "before: must be a `seq` from an earlier history answer (e.g. 1764000000000-0)"
                    .into(),
            ));
        }
        Ok((target.1, limit))
    }
}

/// A history position: `MILLISECONDS-SEQUENCE` (a Redis stream entry id), or `MILLISECONDS`.
fn is_seq(text: &str) -> bool {
    let digits = |part: &str| {
        !part.is_empty() && part.len() <= 20 && part.bytes().all(|b| b.is_ascii_digit())
    };
    match text.split_once('-') {
        Some((ms, seq)) => digits(ms) && digits(seq),
        None => digits(text),
    }
}

/// Parses `value` as `T`, naming the offending field on failure (`text: invalid type: ...`).
pub fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, WireError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        WireError::new(ErrorCode::Invalid, message)
    })
}

impl SendRequest {
    /// Checks what serde cannot: the id's shape, exactly one of `to`/`group`, names, ttl.
    pub fn validate(&self) -> Result<Target, WireError> {
        let invalid = |message: String| WireError::new(ErrorCode::Invalid, message);
        if self.id.is_empty() || self.id.len() > MAX_ID_LEN {
            return Err(invalid(format!(
                "id: must be 1 to {MAX_ID_LEN} characters (use a UUID or ULID)"
            )));
        }
        // Bytes, not chars: every allowed character is ASCII, and a non-ASCII character's
        // bytes are all refused as well.
        if !self.id.bytes().all(|b| ID_BYTES[usize::from(b)]) {
            return Err(invalid(
                "id: may only contain letters, digits, '-', '_', '.', ':' (use a UUID or ULID)"
                    .into(),
            ));
        }
        if self.ttl == Some(0) {
            return Err(invalid("ttl: must be a positive number of seconds".into()));
        }
        let target = match (&self.to, &self.group) {
            (Some(to), None) => ("to", Target::Agent(to.clone())),
            (None, Some(group)) => ("group", Target::Group(group.clone())),
            (Some(_), Some(_)) => {
                return Err(invalid("to/group: give exactly one, not both".into()));
            }
            (None, None) => {
                return Err(invalid(
                    "to/group: give one (an agent id or a group name)".into(),
                ));
            }
        };
        let (field, Target::Agent(name) | Target::Group(name)) = &target;
        if let Some(why) = nsh_contract::names::check(name) {
            return Err(invalid(format!("{field}: {why}")));
        }
        Ok(target.1)
    }
}

/// Current time as RFC 3339 UTC with milliseconds, the format of every wire timestamp, as
/// [`rfc3339`] writes it. Every relayed message is stamped, so this takes humantime's direct
/// digit writer rather than `time`'s interpreted format description (the same text:
/// `now_is_written_as_rfc3339_writes_it`).
pub fn now_rfc3339() -> String {
    rfc3339_millis(std::time::SystemTime::now())
}

/// `at` as [`now_rfc3339`] writes it. A relay stamps tens of thousands of messages a second,
/// dozens within one millisecond, so each thread keeps its last stamp and hands out a copy
/// while the millisecond is the same: a copy of 24 bytes instead of writing the date again.
fn rfc3339_millis(at: std::time::SystemTime) -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(u128, String)> =
            const { std::cell::RefCell::new((u128::MAX, String::new())) };
    }
    let Ok(since_epoch) = at.duration_since(std::time::UNIX_EPOCH) else {
        return humantime::format_rfc3339_millis(at).to_string();
    };
    let millis = since_epoch.as_millis();
    LAST.with_borrow_mut(|(last_millis, last)| {
        if *last_millis != millis {
            *last = humantime::format_rfc3339_millis(at).to_string();
            *last_millis = millis;
        }
        last.clone()
    })
}

pub fn rfc3339(at: time::OffsetDateTime) -> String {
    // Always three fractional digits (the well-known Rfc3339 format trims trailing zeros, and
    // fixed-width stamps sort as text).
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: Value) -> Result<Target, WireError> {
        parse::<SendRequest>(value)?.validate()
    }

    #[test]
    fn history_before_must_be_a_seq() {
        let history = |before: &str| {
            parse::<HistoryRequest>(json!({ "with": "bob", "before": before }))
                .unwrap()
                .validate()
        };
        for good in ["1764000000000-0", "1764000000000"] {
            assert!(history(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "x",
            "1-2-3",
            "-1",
            "1-",
            "$",
            "+",
            "99999999999999999999999-0",
        ] {
            let err = history(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::Invalid, "{bad}");
            assert!(err.message.starts_with("before:"), "{}", err.message);
        }
    }

    #[test]
    fn invalid_payloads_name_the_field() {
        let cases = [
            (json!({ "to": "b", "text": "hi" }), "id"),
            (json!({ "id": "1", "to": "b", "text": 5 }), "text"),
            (json!({ "id": "1", "text": "hi" }), "to/group"),
            (
                json!({ "id": "1", "to": "b", "group": "g", "text": "hi" }),
                "to/group",
            ),
            (json!({ "id": "1", "to": "b:c", "text": "hi" }), "to:"),
            (json!({ "id": "", "to": "b", "text": "hi" }), "id:"),
            (
                json!({ "id": "1", "to": "b", "text": "hi", "ttl": 0 }),
                "ttl",
            ),
            (
                json!({ "id": "1", "to": "b", "text": "hi", "ttl": -1 }),
                "ttl",
            ),
            (json!("just a string"), "invalid type"),
        ];
        for (value, field) in cases {
            let err = request(value.clone()).unwrap_err();
            assert_eq!(err.code, ErrorCode::Invalid);
            assert!(err.message.contains(field), "{value}: {}", err.message);
        }
    }

    #[test]
    fn valid_requests_resolve_their_target_and_ignore_client_from() {
        let target =
            request(json!({ "id": "01J", "to": "bob", "text": "hi", "from": "mallory" })).unwrap();
        assert_eq!(target, Target::Agent("bob".into()));
        let target = request(json!({ "id": "x", "group": "ops", "text": "" })).unwrap();
        assert_eq!(target, Target::Group("ops".into()));
    }

    #[test]
    fn acks_serialize_to_the_documented_shapes() {
        assert_eq!(
            serde_json::to_value(SendAck::delivered("1", None)).unwrap(),
            json!({ "ok": true, "id": "1", "status": "delivered" })
        );
        assert_eq!(
            serde_json::to_value(SendAck::failed(
                "1",
                WireError::new(ErrorCode::RecipientOffline, "bob is offline")
            ))
            .unwrap(),
            json!({ "ok": false, "id": "1", "error": { "code": "recipient_offline", "message": "bob is offline" } })
        );
    }

    proptest::proptest! {
        /// An id is accepted exactly when it is 1 to 128 of `[A-Za-z0-9._:-]`, near-misses
        /// (other punctuation, spaces, non-ASCII letters) included.
        #[test]
        fn ids_are_accepted_by_their_alphabet_and_length(
            id in proptest::prop_oneof![
                "[A-Za-z0-9._:-]{0,130}",
                "[A-Za-z0-9._:-]{0,40}[/ äé@+][A-Za-z0-9._:-]{0,40}",
            ]
        ) {
            let allowed = !id.is_empty()
                && id.len() <= MAX_ID_LEN
                && id.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
            let checked = SendRequest { id: id.clone(), to: Some("bob".into()), group: None, text: String::new(), metadata: None, ttl: None }.validate();
            proptest::prop_assert_eq!(checked.is_ok(), allowed, "{:?}: {:?}", id, checked);
        }

        #[test]
        fn now_is_written_as_rfc3339_writes_it(nanos in 0u64..4_102_444_800_000_000_000, later in 0u64..2_000_000) {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos);
            proptest::prop_assert_eq!(rfc3339_millis(at), rfc3339(time::OffsetDateTime::from(at)));
            // The same millisecond reuses the last stamp, a later one does not: both are as
            // written afresh.
            let then = at + std::time::Duration::from_nanos(later);
            proptest::prop_assert_eq!(rfc3339_millis(then), rfc3339(time::OffsetDateTime::from(then)));
        }
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let at = time::macros::datetime!(2026-11-29 18:00:01.123456 +02:00);
        assert_eq!(rfc3339(at), "2026-11-29T16:00:01.123Z");
        let round = time::macros::datetime!(2026-11-29 18:00:01.190 UTC);
        assert_eq!(rfc3339(round), "2026-11-29T18:00:01.190Z");
    }
}
