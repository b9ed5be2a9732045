//! Property tests of everything the server parses from the network: message payloads and
//! tokens. Arbitrary input may be refused, never crash; valid input round-trips. Raise
//! PROPTEST_CASES for longer runs (see docs/mesh-server.md).

use std::collections::HashMap;
use std::time::Duration;

use nsh_mesh_transport::token::{self, TeamKey, TokenRequest};
use nsh_mesh_transport::wire::{self, ErrorCode, SendRequest, Target};
use proptest::prelude::*;
use serde_json::{Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("to".to_owned()),
                    Just("group".to_owned()),
                    Just("text".to_owned()),
                    Just("ttl".to_owned()),
                    "[a-z]{1,5}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_json_payload_is_parsed_or_refused_as_invalid(value in json_value()) {
        match wire::parse::<SendRequest>(value).and_then(|r| r.validate()) {
            Ok(_) => {}
            Err(err) => prop_assert_eq!(err.code, ErrorCode::Invalid),
        }
    }

    #[test]
    fn valid_requests_round_trip(id in "[A-Za-z0-9-]{1,64}", to in "[a-z][a-z0-9-]{0,20}", text in ".{0,200}", ttl in proptest::option::of(1u64..1_000_000)) {
        let request = SendRequest { id, to: Some(to.clone()), group: None, text, metadata: Some(json!({ "k": [1, 2] })), ttl };
        let parsed: SendRequest = wire::parse(serde_json::to_value(&request).unwrap()).unwrap();
        prop_assert_eq!(parsed.validate(), Ok(Target::Agent(to)));
        prop_assert_eq!(parsed, request);
    }

    #[test]
    fn arbitrary_token_text_never_verifies_and_never_panics(text in ".{0,300}") {
        let keys = HashMap::from([("alpha".to_owned(), TeamKey::from_file_contents(b"alpha-key-0123456789").unwrap())]);
        prop_assert!(token::verify(&text, &keys).is_err());
        let _ = token::peek_claims(&text);
    }

    #[test]
    fn a_token_with_any_byte_flipped_is_refused(position in 0usize..400, bit in 0u8..8) {
        let key = TeamKey::from_file_contents(b"alpha-key-0123456789").unwrap();
        let keys = HashMap::from([("alpha".to_owned(), key.clone())]);
        let groups = vec!["ops".to_owned()];
        let good = token::mint(&TokenRequest { team: "alpha", agent: "a1", groups: &groups, ttl: Duration::from_secs(60), audiences: &[] }, &key, token::now_unix()).unwrap();
        let mut bytes = good.clone().into_bytes();
        let index = position % bytes.len();
        bytes[index] ^= 1 << bit;
        // A flip to a non-ASCII byte reaches the server as text all the same.
        let tampered = String::from_utf8_lossy(&bytes).into_owned();
        if decoded(&tampered) == decoded(&good) {
            // The one exception: a flip of the unused low bits of a segment's last base64
            // character spells the very same bytes, so it is the same token, not a forgery.
            prop_assert_eq!(token::verify(&tampered, &keys).unwrap(), token::verify(&good, &keys).unwrap());
        } else {
            prop_assert!(token::verify(&tampered, &keys).is_err(), "byte {} bit {} flipped and still accepted", index, bit);
        }
    }
}

/// The bytes a JWT's three base64url segments spell, or `None` if one does not decode.
fn decoded(jwt: &str) -> Option<Vec<Vec<u8>>> {
    use base64::Engine as _;
    jwt.split('.')
        .map(|segment| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(segment)
                .ok()
        })
        .collect()
}
