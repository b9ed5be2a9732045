//! Socket.io v5 packets inside Engine.IO v4 text frames, JSON only (the mesh sends no binary).
//!
//! Engine.IO frame: one type digit then data: `0` open, `1` close, `2` ping, `3` pong,
//! `4` message (carries a Socket.io packet), `6` noop.
//! Socket.io packet: `<type>[<namespace>,][<ack id>][<json>]`, types `0` connect,
//! `1` disconnect, `2` event, `3` ack, `4` connect error (`5`/`6` are binary: refused here).

use serde_json::Value;

/// An Engine.IO frame as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Open(Value),
    Close,
    Ping,
    Pong,
    Message(Packet),
    Noop,
}

/// A Socket.io packet on the default namespace `/`.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// Client: the auth payload; server: `{ sid }`.
    Connect(Option<Value>),
    Disconnect,
    /// `[event, args...]`, with an ack id when the sender wants an answer.
    Event {
        ack: Option<u64>,
        data: Vec<Value>,
    },
    Ack {
        id: u64,
        data: Vec<Value>,
    },
    /// Server refused the connection: `{ message }`.
    ConnectError(Value),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("empty frame")]
    Empty,
    #[error("unknown engine.io frame type {0:?}")]
    UnknownFrame(char),
    #[error("unknown socket.io packet type {0:?}")]
    UnknownPacket(char),
    #[error("binary socket.io packets are not supported")]
    Binary,
    #[error("packet for namespace {0:?}; only `/` is used")]
    Namespace(String),
    #[error("bad JSON in packet: {0}")]
    Json(String),
    #[error("{0} packet must carry a JSON array")]
    NotArray(&'static str),
    #[error("ack packet without an id")]
    MissingAckId,
}

pub fn decode_frame(text: &str) -> Result<Frame, CodecError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(CodecError::Empty)?;
    let rest = chars.as_str();
    Ok(match kind {
        '0' => {
            Frame::Open(serde_json::from_str(rest).map_err(|e| CodecError::Json(e.to_string()))?)
        }
        '1' => Frame::Close,
        '2' => Frame::Ping,
        '3' => Frame::Pong,
        '4' => Frame::Message(decode_packet(rest)?),
        '6' => Frame::Noop,
        other => return Err(CodecError::UnknownFrame(other)),
    })
}

pub fn encode_frame(frame: &Frame) -> String {
    match frame {
        Frame::Open(value) => format!("0{value}"),
        Frame::Close => "1".into(),
        Frame::Ping => "2".into(),
        Frame::Pong => "3".into(),
        Frame::Message(packet) => format!("4{}", encode_packet(packet)),
        Frame::Noop => "6".into(),
    }
}

pub fn decode_packet(text: &str) -> Result<Packet, CodecError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(CodecError::Empty)?;
    let mut rest = chars.as_str();
    if matches!(kind, '5' | '6') {
        return Err(CodecError::Binary);
    }
    if let Some(after_slash) = rest.strip_prefix('/') {
        let (namespace, tail) = after_slash.split_once(',').unwrap_or((after_slash, ""));
        if !namespace.is_empty() {
            return Err(CodecError::Namespace(format!("/{namespace}")));
        }
        rest = tail;
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = if digits > 0 {
        Some(
            rest[..digits]
                .parse::<u64>()
                .map_err(|e| CodecError::Json(e.to_string()))?,
        )
    } else {
        None
    };
    let json = &rest[digits..];
    let value = || -> Result<Option<Value>, CodecError> {
        if json.is_empty() {
            Ok(None)
        } else {
            serde_json::from_str(json)
                .map(Some)
                .map_err(|e| CodecError::Json(e.to_string()))
        }
    };
    let array = |what: &'static str| -> Result<Vec<Value>, CodecError> {
        match value()? {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(CodecError::NotArray(what)),
        }
    };
    Ok(match kind {
        '0' => Packet::Connect(value()?),
        '1' => Packet::Disconnect,
        '2' => Packet::Event {
            ack,
            data: array("event")?,
        },
        '3' => Packet::Ack {
            id: ack.ok_or(CodecError::MissingAckId)?,
            data: array("ack")?,
        },
        '4' => Packet::ConnectError(value()?.unwrap_or(Value::Null)),
        other => return Err(CodecError::UnknownPacket(other)),
    })
}

pub fn encode_packet(packet: &Packet) -> String {
    match packet {
        Packet::Connect(None) => "0".into(),
        Packet::Connect(Some(auth)) => format!("0{auth}"),
        Packet::Disconnect => "1".into(),
        Packet::Event { ack, data } => {
            format!(
                "2{}{}",
                ack.map(|id| id.to_string()).unwrap_or_default(),
                Value::from(data.clone())
            )
        }
        Packet::Ack { id, data } => format!("3{id}{}", Value::from(data.clone())),
        Packet::ConnectError(value) => format!("4{value}"),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn decodes_what_socket_io_servers_send() {
        assert!(matches!(
            decode_frame(r#"0{"sid":"x","pingInterval":25000,"pingTimeout":20000}"#),
            Ok(Frame::Open(_))
        ));
        assert_eq!(decode_frame("2"), Ok(Frame::Ping));
        assert_eq!(
            decode_frame(r#"40{"sid":"abc"}"#),
            Ok(Frame::Message(Packet::Connect(Some(json!({"sid":"abc"})))))
        );
        assert_eq!(
            decode_frame(r#"44{"message":"unauthorized: token expired"}"#),
            Ok(Frame::Message(Packet::ConnectError(
                json!({"message":"unauthorized: token expired"})
            )))
        );
        assert_eq!(
            decode_frame(r#"4212["message",{"id":"1"}]"#),
            Ok(Frame::Message(Packet::Event {
                ack: Some(12),
                data: vec![json!("message"), json!({"id":"1"})]
            }))
        );
        assert_eq!(
            decode_frame(r#"433[{"ok":true}]"#),
            Ok(Frame::Message(Packet::Ack {
                id: 3,
                data: vec![json!({"ok":true})]
            }))
        );
        assert_eq!(
            decode_packet(r#"2/,["e"]"#),
            Ok(Packet::Event {
                ack: None,
                data: vec![json!("e")]
            })
        );
        assert_eq!(
            decode_packet(r#"2/admin,["e"]"#),
            Err(CodecError::Namespace("/admin".into()))
        );
        assert_eq!(
            decode_packet(r#"51-["e",{"_placeholder":true,"num":0}]"#),
            Err(CodecError::Binary)
        );
        assert_eq!(decode_packet("3[1]"), Err(CodecError::MissingAckId));
    }

    #[test]
    fn encodes_what_socket_io_servers_expect() {
        assert_eq!(
            encode_frame(&Frame::Message(Packet::Connect(Some(json!({"token":"t"}))))),
            r#"40{"token":"t"}"#
        );
        assert_eq!(
            encode_frame(&Frame::Message(Packet::Event {
                ack: Some(7),
                data: vec![json!("presence"), json!({})]
            })),
            r#"427["presence",{}]"#
        );
        assert_eq!(
            encode_frame(&Frame::Message(Packet::Ack {
                id: 7,
                data: vec![json!({"ok":true})]
            })),
            r#"437[{"ok":true}]"#
        );
        assert_eq!(encode_frame(&Frame::Pong), "3");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".*".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z]{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_text_never_panics(text in ".*") {
            let _ = decode_frame(&text);
            let _ = decode_packet(&text);
        }

        #[test]
        fn events_and_acks_round_trip(ack in proptest::option::of(any::<u64>()), name in ".*", args in prop::collection::vec(json_value(), 0..4)) {
            let mut data = vec![Value::from(name)];
            data.extend(args);
            let event = Packet::Event { ack, data: data.clone() };
            prop_assert_eq!(decode_packet(&encode_packet(&event)), Ok(event));
            let reply = Packet::Ack { id: ack.unwrap_or(0), data };
            prop_assert_eq!(decode_packet(&encode_packet(&reply)), Ok(reply));
        }
    }
}
