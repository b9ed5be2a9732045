//! An event's or an ack's argument list, of which the mesh reads the first argument.
//!
//! socketioxide decodes a type that is not a tuple through its "first element" visitor, which
//! builds a `serde_json::Error` (an allocation and a formatted message) for every payload it
//! reads, found or not (`ok_or` where `ok_or_else` was meant, socketioxide-core 0.20): 1.6% of
//! the server's CPU per relayed message in a profile. A type that deserializes as a tuple is
//! handed the whole list instead, and this one takes the first argument itself.

use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{Deserialize, DeserializeOwned, Deserializer, IgnoredAny, SeqAccess, Visitor};
use socketioxide::ParserError;
use socketioxide::adapter::Adapter;
use socketioxide::handler::{FromMessageParts, Value as Packet};
use socketioxide::socket::Socket;
use socketioxide_core::parser::Parse as _;
use socketioxide_parser_common::CommonParser;

/// The first argument, if there is one; the rest are skipped.
#[derive(Debug)]
pub(crate) struct FirstArg<T>(pub(crate) Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for FirstArg<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A tuple to socketioxide (see the module comment); JSON has no fixed-length arrays,
        // so the length is not checked.
        deserializer.deserialize_tuple(1, FirstArgVisitor(PhantomData))
    }
}

struct FirstArgVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for FirstArgVisitor<T> {
    type Value = FirstArg<T>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a list of arguments")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = seq.next_element::<T>()?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(FirstArg(first))
    }
}

/// An ack, whatever it says: that it came is what counts.
pub(crate) type AnyAck = FirstArg<IgnoredAny>;

/// An event's payload read straight into `T` from the packet's text: one pass, no
/// `serde_json::Value` tree in between. Only a payload that does not read as `T` is read again,
/// as JSON (`Err`), so the error can name the offending field and the error ack can carry the
/// request's id, as for every other event.
pub(crate) struct Payload<T>(
    pub(crate) Result<T, Result<FirstArg<serde_json::Value>, ParserError>>,
);

impl<A: Adapter, T: DeserializeOwned> FromMessageParts<A> for Payload<T> {
    type Error = Infallible;

    fn from_message_parts(
        _: &Arc<Socket<A>>,
        packet: &mut Packet,
        _: &Option<i64>,
    ) -> Result<Self, Infallible> {
        // socketioxide's own parser handle is private; the server runs its default parser
        // (app.rs configures no other), whose decoder this is.
        let parser = CommonParser;
        if let Ok(FirstArg(Some(payload))) = parser.decode_value::<FirstArg<T>>(packet, true) {
            return Ok(Self(Ok(payload)));
        }
        Ok(Self(Err(parser.decode_value(packet, true))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn takes_the_first_argument_and_skips_the_rest() {
        let args: FirstArg<Value> = serde_json::from_value(json!([{ "id": "1" }, 2, "x"])).unwrap();
        assert_eq!(args.0, Some(json!({ "id": "1" })));
        let none: FirstArg<Value> = serde_json::from_value(json!([])).unwrap();
        assert_eq!(none.0, None);
        assert!(serde_json::from_value::<FirstArg<Value>>(json!({ "id": "1" })).is_err());
    }

    #[test]
    fn socketioxide_hands_it_the_whole_list() {
        assert!(socketioxide_core::parser::is_de_tuple::<FirstArg<Value>>());
        assert!(socketioxide_core::parser::is_de_tuple::<AnyAck>());
    }
}
