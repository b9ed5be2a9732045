//! The two payloads a relayed direct message sends, its [`Envelope`] and the sender's
//! [`SendAck`], written as JSON directly, once, for socketioxide to copy as they are.
//!
//! Through serde, serde_json escapes every key and every string value byte by byte; that was a
//! tenth of a relay server's instructions, though nearly all of those strings (keys, ids, names,
//! timestamps) hold nothing to escape. Here each string is checked in one pass and copied
//! whole when it is clean, and goes through serde_json's escaping otherwise. The text is the
//! same as serde's (`same_json_as_serde`).
//!
//! [`Encoded`] hands the text to serde_json as a `RawValue` does, which it writes out
//! unchanged. A `RawValue` itself is made only by parsing its text again, which cost as much
//! as the escaping saved.

use std::fmt::Write as _;

use serde::ser::{Serialize, SerializeStruct as _, Serializer};

use crate::wire::{Envelope, MessageKind, SendAck, SendStatus};

/// JSON text that serde_json writes as it is (with its `raw_value` feature, which this crate
/// turns on), wherever it sits in what is serialized. Only for serde_json: another serializer
/// would write a struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded(String);

/// The name by which serde_json's serializer knows a `RawValue` (`serde_json::raw::TOKEN`,
/// not exported). If a release changed it, `serde_json_writes_it_unchanged` fails.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

impl Encoded {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for Encoded {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // What `RawValue`'s own `Serialize` does.
        let mut raw = serializer.serialize_struct(RAW_VALUE_TOKEN, 1)?;
        raw.serialize_field(RAW_VALUE_TOKEN, self.0.as_str())?;
        raw.end()
    }
}

impl Envelope {
    /// This envelope as JSON, the text serde would write.
    pub fn to_json(&self) -> Encoded {
        Encoded(write_envelope(self))
    }
}

impl SendAck {
    /// This ack as JSON, the text serde would write.
    pub fn to_json(&self) -> Encoded {
        Encoded(
            write_send_ack(self).unwrap_or_else(|| {
                serde_json::to_string(self).unwrap_or_else(|_| "null".to_owned())
            }),
        )
    }
}

fn write_envelope(envelope: &Envelope) -> String {
    let mut out = String::with_capacity(112 + envelope.text.len() + envelope.id.len());
    out.push_str("{\"id\":");
    push_string(&mut out, &envelope.id);
    out.push_str(match envelope.kind {
        MessageKind::Direct => ",\"type\":\"direct\",\"from\":",
        MessageKind::Group => ",\"type\":\"group\",\"from\":",
    });
    push_string(&mut out, &envelope.from);
    if let Some(to) = &envelope.to {
        out.push_str(",\"to\":");
        push_string(&mut out, to);
    }
    if let Some(group) = &envelope.group {
        out.push_str(",\"group\":");
        push_string(&mut out, group);
    }
    out.push_str(",\"text\":");
    push_string(&mut out, &envelope.text);
    if let Some(metadata) = &envelope.metadata {
        out.push_str(",\"metadata\":");
        push_serialized(&mut out, metadata);
    }
    out.push_str(",\"timestamp\":");
    push_string(&mut out, &envelope.timestamp);
    if let Some(ttl) = envelope.ttl {
        let _ = write!(out, ",\"ttl\":{ttl}");
    }
    out.push('}');
    out
}

/// The usual ack (`{ok, id, status}`); `None` for a group's ack or a refusal, which are rarer
/// and hold lists and nested objects: serde writes those.
fn write_send_ack(ack: &SendAck) -> Option<String> {
    if ack.delivered_to.is_some() || ack.error.is_some() {
        return None;
    }
    let mut out = String::with_capacity(48 + ack.id.len());
    out.push_str(if ack.ok {
        "{\"ok\":true,\"id\":"
    } else {
        "{\"ok\":false,\"id\":"
    });
    push_string(&mut out, &ack.id);
    if let Some(status) = ack.status {
        out.push_str(match status {
            SendStatus::Delivered => ",\"status\":\"delivered\"",
            SendStatus::Duplicate => ",\"status\":\"duplicate\"",
            SendStatus::Stored => ",\"status\":\"stored\"",
        });
    }
    out.push('}');
    Some(out)
}

/// Appends `value` as a JSON string.
fn push_string(out: &mut String, value: &str) {
    // One pass over all of it, with no early exit. (Eight bytes at a time measured the same:
    // these strings are short, and the call around the check costs as much as the check.)
    let needs_escape = value
        .bytes()
        .map(|b| u8::from(b < 0x20) | u8::from(b == b'"') | u8::from(b == b'\\'))
        .fold(0, |any, flag| any | flag)
        != 0;
    if needs_escape {
        push_serialized(out, value);
    } else {
        out.push('"');
        out.push_str(value);
        out.push('"');
    }
}

/// Appends `value` as serde_json writes it.
fn push_serialized(out: &mut String, value: &(impl Serialize + ?Sized)) {
    match serde_json::to_string(value) {
        Ok(json) => out.push_str(&json),
        // Only a map with non-string keys fails, which a `Value` cannot hold; keep the JSON valid.
        Err(_) => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::wire::{ErrorCode, WireError};

    /// Any string: plain ASCII mostly, with quotes, backslashes, controls and non-ASCII.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9 ._:-]{0,40}",
            "[\\x00-\\x1f\"\\\\a-z\u{e9}\u{2028}\u{1F600}]{0,20}",
            any::<String>(),
        ]
    }

    fn envelope() -> impl Strategy<Value = Envelope> {
        let metadata = prop_oneof![
            Just(None),
            Just(Some(json!({"k": [1, "two\n", null], "ü": {"x": 1.5}}))),
            text().prop_map(|t| Some(json!({ "note": t }))),
        ];
        (
            (text(), any::<bool>(), text(), prop::option::of(text())),
            (prop::option::of(text()), text(), metadata, text()),
            prop::option::of(any::<u64>()),
        )
            .prop_map(
                |((id, group_kind, from, to), (group, text, metadata, timestamp), ttl)| Envelope {
                    id,
                    kind: if group_kind {
                        MessageKind::Group
                    } else {
                        MessageKind::Direct
                    },
                    from,
                    to,
                    group,
                    text,
                    metadata,
                    timestamp,
                    ttl,
                },
            )
    }

    fn send_ack() -> impl Strategy<Value = SendAck> {
        let status = prop_oneof![
            Just(None),
            Just(Some(SendStatus::Delivered)),
            Just(Some(SendStatus::Duplicate)),
            Just(Some(SendStatus::Stored)),
        ];
        (
            any::<bool>(),
            text(),
            status,
            prop::option::of(prop::collection::vec(text(), 0..3)),
            prop::option::of(text()),
        )
            .prop_map(|(ok, id, status, delivered_to, error)| SendAck {
                ok,
                id,
                status,
                delivered_to,
                error: error.map(|message| WireError::new(ErrorCode::Invalid, message)),
            })
    }

    proptest! {
        /// Byte for byte what serde writes, so the wire does not change. The writers are
        /// compared themselves: `to_json` would hide a mistake that is not JSON behind serde.
        #[test]
        fn same_json_as_serde(envelope in envelope(), ack in send_ack()) {
            prop_assert_eq!(write_envelope(&envelope), serde_json::to_string(&envelope).unwrap());
            if let Some(json) = write_send_ack(&ack) {
                prop_assert_eq!(json, serde_json::to_string(&ack).unwrap());
            }
            let ack_json = ack.to_json();
            prop_assert_eq!(ack_json.as_str(), serde_json::to_string(&ack).unwrap());
        }

        /// serde_json writes an [`Encoded`] as its text, at the top or nested.
        #[test]
        fn serde_json_writes_it_unchanged(envelope in envelope()) {
            let encoded = envelope.to_json();
            prop_assert_eq!(serde_json::to_string(&encoded).unwrap(), encoded.as_str());
            let nested = serde_json::to_string(&("message", &encoded, [&encoded])).unwrap();
            let expected = format!(r#"["message",{0},[{0}]]"#, encoded.as_str());
            prop_assert_eq!(nested, expected);
        }
    }

    #[test]
    fn strings_that_need_escaping_are_escaped() {
        let envelope = Envelope {
            id: "a\"b".into(),
            kind: MessageKind::Direct,
            from: "x\\y".into(),
            to: Some("t".into()),
            group: None,
            text: "line\nnext\u{1}".into(),
            metadata: None,
            timestamp: "2026-12-04T00:00:00.000Z".into(),
            ttl: Some(5),
        };
        assert_eq!(
            write_envelope(&envelope),
            r#"{"id":"a\"b","type":"direct","from":"x\\y","to":"t","text":"line\nnext\u0001","timestamp":"2026-12-04T00:00:00.000Z","ttl":5}"#
        );
        let back: Envelope = serde_json::from_str(envelope.to_json().as_str()).unwrap();
        assert_eq!(back, envelope);
    }
}
