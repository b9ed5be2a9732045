use std::{
    io::{self, Read},
    str,
};

use crate::errors::{ParsingError, RedisError, Repr, ServerError, ServerErrorKind};
use crate::types::{PushKind, RedisResult, Value, VerbatimFormat};

use combine::{
    ParseError, Parser as _, any,
    error::StreamError,
    opaque,
    parser::{
        byte::{crlf, take_until_bytes},
        combinator::{AnySendSyncPartialState, any_send_sync_partial_state},
        range::{recognize, take},
    },
    stream::{
        PointerOffset, RangeStream, StreamErrorFor,
        decoder::{self, Decoder},
    },
    unexpected_any,
};

const MAX_RECURSE_DEPTH: usize = 100;

fn err_parser(line: &str) -> ServerError {
    let mut pieces = line.splitn(2, ' ');
    let kind = match pieces.next().unwrap() {
        "ERR" => ServerErrorKind::ResponseError,
        "EXECABORT" => ServerErrorKind::ExecAbort,
        "LOADING" => ServerErrorKind::BusyLoading,
        "NOSCRIPT" => ServerErrorKind::NoScript,
        "MOVED" => ServerErrorKind::Moved,
        "ASK" => ServerErrorKind::Ask,
        "TRYAGAIN" => ServerErrorKind::TryAgain,
        "CLUSTERDOWN" => ServerErrorKind::ClusterDown,
        "CROSSSLOT" => ServerErrorKind::CrossSlot,
        "MASTERDOWN" => ServerErrorKind::MasterDown,
        "READONLY" => ServerErrorKind::ReadOnly,
        "NOTBUSY" => ServerErrorKind::NotBusy,
        "NOSUB" => ServerErrorKind::NoSub,
        "NOPERM" => ServerErrorKind::NoPerm,
        code => {
            return ServerError(Repr::Extension {
                code: code.into(),
                detail: pieces.next().map(|str| str.into()),
            });
        }
    };
    let detail = pieces.next().map(|str| str.into());
    ServerError(Repr::Known { kind, detail })
}

pub fn get_push_kind(kind: String) -> PushKind {
    match kind.as_str() {
        "invalidate" => PushKind::Invalidate,
        "message" => PushKind::Message,
        "pmessage" => PushKind::PMessage,
        "smessage" => PushKind::SMessage,
        "unsubscribe" => PushKind::Unsubscribe,
        "punsubscribe" => PushKind::PUnsubscribe,
        "sunsubscribe" => PushKind::SUnsubscribe,
        "subscribe" => PushKind::Subscribe,
        "psubscribe" => PushKind::PSubscribe,
        "ssubscribe" => PushKind::SSubscribe,
        _ => PushKind::Other(kind),
    }
}

fn value<'a, I>(
    count: Option<usize>,
) -> impl combine::Parser<I, Output = Value, PartialState = AnySendSyncPartialState>
where
    I: RangeStream<Token = u8, Range = &'a [u8]>,
    I::Error: combine::ParseError<u8, &'a [u8], I::Position>,
{
    let count = count.unwrap_or(1);

    opaque!(any_send_sync_partial_state(
        any()
            .then_partial(move |&mut b| {
                if count > MAX_RECURSE_DEPTH {
                    combine::unexpected_any("Maximum recursion depth exceeded").left()
                } else {
                    combine::value(b).right()
                }
            })
            .then_partial(move |&mut b| {
                let line = || {
                    recognize(take_until_bytes(&b"\r\n"[..]).with(take(2).map(|_| ()))).and_then(
                        |line: &[u8]| {
                            str::from_utf8(&line[..line.len() - 2])
                                .map_err(StreamErrorFor::<I>::other)
                        },
                    )
                };

                let simple_string = || {
                    line().map(|line| {
                        if line == "OK" {
                            Value::Okay
                        } else {
                            Value::SimpleString(line.into())
                        }
                    })
                };

                let int = || {
                    line().and_then(|line| {
                        line.trim().parse::<i64>().map_err(|_| {
                            StreamErrorFor::<I>::message_static_message(
                                "Expected integer, got garbage",
                            )
                        })
                    })
                };

                let bulk_string = || {
                    int().then_partial(move |size| {
                        if *size < 0 {
                            combine::produce(|| Value::Nil).left()
                        } else {
                            take(*size as usize)
                                .map(|bs: &[u8]| Value::BulkString(bs.to_vec()))
                                .skip(crlf())
                                .right()
                        }
                    })
                };
                let blob = || {
                    int().then_partial(move |size| {
                        take(*size as usize)
                            .map(|bs: &[u8]| String::from_utf8_lossy(bs).to_string())
                            .skip(crlf())
                    })
                };

                let array = || {
                    int().then_partial(move |&mut length| {
                        if length < 0 {
                            combine::produce(|| Value::Nil).left()
                        } else {
                            let length = length as usize;
                            combine::count_min_max(length, length, value(Some(count + 1)))
                                .map(Value::Array)
                                .right()
                        }
                    })
                };

                let error = || line().map(err_parser);
                let map = || {
                    int().then_partial(move |&mut kv_length| {
                        match (kv_length as usize).checked_mul(2) {
                            Some(length) => {
                                combine::count_min_max(length, length, value(Some(count + 1)))
                                    .map(move |result: Vec<Value>| {
                                        let mut it = result.into_iter();
                                        let mut x = vec![];
                                        for _ in 0..kv_length {
                                            if let (Some(k), Some(v)) = (it.next(), it.next()) {
                                                x.push((k, v));
                                            }
                                        }
                                        Value::Map(x)
                                    })
                                    .left()
                            }
                            None => {
                                unexpected_any("Attribute key-value length is too large").right()
                            }
                        }
                    })
                };
                let attribute = || {
                    int().then_partial(move |&mut kv_length| {
                        match (kv_length as usize).checked_mul(2) {
                            Some(length) => {
                                // + 1 is for data!
                                let length = length + 1;
                                combine::count_min_max(length, length, value(Some(count + 1)))
                                    .map(move |result: Vec<Value>| {
                                        let mut it = result.into_iter();
                                        let mut attributes = vec![];
                                        for _ in 0..kv_length {
                                            if let (Some(k), Some(v)) = (it.next(), it.next()) {
                                                attributes.push((k, v));
                                            }
                                        }
                                        Value::Attribute {
                                            data: Box::new(it.next().unwrap()),
                                            attributes,
                                        }
                                    })
                                    .left()
                            }
                            None => {
                                unexpected_any("Attribute key-value length is too large").right()
                            }
                        }
                    })
                };
                let set = || {
                    int().then_partial(move |&mut length| {
                        if length < 0 {
                            combine::produce(|| Value::Nil).left()
                        } else {
                            let length = length as usize;
                            combine::count_min_max(length, length, value(Some(count + 1)))
                                .map(Value::Set)
                                .right()
                        }
                    })
                };
                let push = || {
                    int().then_partial(move |&mut length| {
                        if length <= 0 {
                            combine::produce(|| Value::Push {
                                kind: PushKind::Other("".to_string()),
                                data: vec![],
                            })
                            .left()
                        } else {
                            let length = length as usize;
                            combine::count_min_max(length, length, value(Some(count + 1)))
                                .and_then(|result: Vec<Value>| {
                                    let mut it = result.into_iter();
                                    let first = it.next().unwrap_or(Value::Nil);
                                    if let Value::BulkString(kind) = first {
                                        let push_kind = String::from_utf8(kind)
                                            .map_err(StreamErrorFor::<I>::other)?;
                                        Ok(Value::Push {
                                            kind: get_push_kind(push_kind),
                                            data: it.collect(),
                                        })
                                    } else if let Value::SimpleString(kind) = first {
                                        Ok(Value::Push {
                                            kind: get_push_kind(kind),
                                            data: it.collect(),
                                        })
                                    } else {
                                        Err(StreamErrorFor::<I>::message_static_message(
                                            "parse error when decoding push",
                                        ))
                                    }
                                })
                                .right()
                        }
                    })
                };
                let null = || line().map(|_| Value::Nil);
                let double = || {
                    line().and_then(|line| {
                        line.trim()
                            .parse::<f64>()
                            .map_err(StreamErrorFor::<I>::other)
                    })
                };
                let boolean = || {
                    line().and_then(|line: &str| match line {
                        "t" => Ok(true),
                        "f" => Ok(false),
                        _ => Err(StreamErrorFor::<I>::message_static_message(
                            "Expected boolean, got garbage",
                        )),
                    })
                };
                let blob_error = || blob().map(|line| err_parser(&line));
                let verbatim = || {
                    blob().and_then(|line| {
                        if let Some((format, text)) = line.split_once(':') {
                            let format = match format {
                                "txt" => VerbatimFormat::Text,
                                "mkd" => VerbatimFormat::Markdown,
                                x => VerbatimFormat::Unknown(x.to_string()),
                            };
                            Ok(Value::VerbatimString {
                                format,
                                text: text.to_string(),
                            })
                        } else {
                            Err(StreamErrorFor::<I>::message_static_message(
                                "parse error when decoding verbatim string",
                            ))
                        }
                    })
                };
                let big_number = || {
                    line().and_then(|line| {
                        #[cfg(not(feature = "num-bigint"))]
                        return Ok::<_, StreamErrorFor<I>>(Value::BigNumber(
                            line.as_bytes().to_vec(),
                        ));
                        #[cfg(feature = "num-bigint")]
                        num_bigint::BigInt::parse_bytes(line.as_bytes(), 10)
                            .ok_or_else(|| {
                                StreamErrorFor::<I>::message_static_message(
                                    "Expected bigint, got garbage",
                                )
                            })
                            .map(Value::BigNumber)
                    })
                };
                combine::dispatch!(b;
                    b'+' => simple_string(),
                    b':' => int().map(Value::Int),
                    b'$' => bulk_string(),
                    b'*' => array(),
                    b'%' => map(),
                    b'|' => attribute(),
                    b'~' => set(),
                    b'-' => error().map(Value::ServerError),
                    b'_' => null(),
                    b',' => double().map(Value::Double),
                    b'#' => boolean().map(Value::Boolean),
                    b'!' => blob_error().map(Value::ServerError),
                    b'=' => verbatim(),
                    b'(' => big_number(),
                    b'>' => push(),
                    b => combine::unexpected_any(combine::error::Token(b))
                )
            })
    ))
}

// a macro is needed because of lifetime shenanigans with `decoder`.
macro_rules! to_redis_err {
    ($err: expr, $decoder: expr) => {
        match $err {
            decoder::Error::Io { error, .. } => error.into(),
            decoder::Error::Parse(err) => {
                if err.is_unexpected_end_of_input() {
                    RedisError::from(io::Error::from(io::ErrorKind::UnexpectedEof))
                } else {
                    let err = err
                        .map_range(|range| format!("{range:?}"))
                        .map_position(|pos| pos.translate_position($decoder.buffer()))
                        .to_string();
                    RedisError::from(ParsingError::from(err))
                }
            }
        }
    };
}

/// Reads one whole reply straight from a byte slice, without `combine`, for the types that
/// make up nearly all replies: simple strings, errors, integers, bulk strings, nulls, and
/// arrays and pushes (RESP3's pub/sub messages) of these. Any other RESP3 type, or a reply
/// that does not parse, is [`Stop::Other`], and `combine` reads it as before: it stays the one
/// definition of every type and of every error. What this returns is what `combine` would
/// (`tests::complete_replies_read_as_combine_reads_them`).
#[cfg(feature = "aio")]
mod complete {
    use super::*;

    /// Why a reply was not read here.
    #[derive(Debug, PartialEq)]
    pub(super) enum Stop {
        /// The buffer ends before the reply does.
        Incomplete,
        /// Another type, or not a valid reply: for `combine`.
        Other,
    }

    /// The reply at the start of `bytes` and how many bytes it takes.
    pub(super) fn parse(bytes: &[u8]) -> Result<(Value, usize), Stop> {
        let mut at = 0;
        let value = parse_value(bytes, &mut at, 1)?;
        Ok((value, at))
    }

    fn parse_value(bytes: &[u8], at: &mut usize, depth: usize) -> Result<Value, Stop> {
        if depth > MAX_RECURSE_DEPTH {
            return Err(Stop::Other);
        }
        let kind = *bytes.get(*at).ok_or(Stop::Incomplete)?;
        *at += 1;
        match kind {
            b'+' => {
                let line = parse_text(bytes, at)?;
                Ok(if line == "OK" {
                    Value::Okay
                } else {
                    Value::SimpleString(line.into())
                })
            }
            b'-' => parse_text(bytes, at).map(|line| Value::ServerError(err_parser(line))),
            b':' => parse_int(bytes, at).map(Value::Int),
            b'_' => parse_text(bytes, at).map(|_| Value::Nil),
            b'$' => {
                let size = parse_int(bytes, at)?;
                let Ok(size) = usize::try_from(size) else {
                    return Ok(Value::Nil);
                };
                let end = at.checked_add(size).ok_or(Stop::Other)?;
                let data = bytes.get(*at..end).ok_or(Stop::Incomplete)?;
                match bytes.get(end..end + 2) {
                    Some(b"\r\n") => {}
                    Some(_) => return Err(Stop::Other),
                    // Nothing or a lone `\r` after the data: the rest is still to come.
                    None if bytes.get(end).is_none_or(|&b| b == b'\r') => {
                        return Err(Stop::Incomplete);
                    }
                    None => return Err(Stop::Other),
                }
                *at = end + 2;
                Ok(Value::BulkString(data.to_vec()))
            }
            b'*' => {
                let length = parse_int(bytes, at)?;
                let Ok(length) = usize::try_from(length) else {
                    return Ok(Value::Nil);
                };
                parse_items(bytes, at, depth, length).map(Value::Array)
            }
            b'>' => {
                let length = parse_int(bytes, at)?;
                let Ok(length @ 1..) = usize::try_from(length) else {
                    return Ok(Value::Push {
                        kind: PushKind::Other(String::new()),
                        data: vec![],
                    });
                };
                let mut data = parse_items(bytes, at, depth, length)?;
                let kind = match data.remove(0) {
                    Value::BulkString(kind) => String::from_utf8(kind).map_err(|_| Stop::Other)?,
                    Value::SimpleString(kind) => kind,
                    _ => return Err(Stop::Other),
                };
                Ok(Value::Push {
                    kind: get_push_kind(kind),
                    data,
                })
            }
            _ => Err(Stop::Other),
        }
    }

    /// The `length` elements of an array or a push.
    fn parse_items(
        bytes: &[u8],
        at: &mut usize,
        depth: usize,
        length: usize,
    ) -> Result<Vec<Value>, Stop> {
        // The shortest element takes three bytes (`_\r\n`): a longer array is not all here
        // yet, and its length must not size an allocation.
        if length > (bytes.len() - *at) / 3 {
            return Err(Stop::Incomplete);
        }
        let mut items = Vec::with_capacity(length);
        for _ in 0..length {
            items.push(parse_value(bytes, at, depth + 1)?);
        }
        Ok(items)
    }

    /// The bytes up to the first CRLF, as `combine`'s line.
    fn parse_line<'a>(bytes: &'a [u8], at: &mut usize) -> Result<&'a [u8], Stop> {
        let rest = &bytes[*at..];
        let mut from = 0;
        let end = loop {
            let cr = rest[from..]
                .iter()
                .position(|&b| b == b'\r')
                .ok_or(Stop::Incomplete)?;
            match rest.get(from + cr + 1) {
                Some(b'\n') => break from + cr,
                Some(_) => from += cr + 1,
                None => return Err(Stop::Incomplete),
            }
        };
        *at += end + 2;
        Ok(&rest[..end])
    }

    /// A line as text: `combine` refuses one that is not UTF-8.
    fn parse_text<'a>(bytes: &'a [u8], at: &mut usize) -> Result<&'a str, Stop> {
        str::from_utf8(parse_line(bytes, at)?).map_err(|_| Stop::Other)
    }

    fn parse_int(bytes: &[u8], at: &mut usize) -> Result<i64, Stop> {
        let line = parse_line(bytes, at)?;
        // Lengths and counts: a few plain digits, read without `str::parse`'s generality.
        if !line.is_empty() && line.len() <= 18 && line.iter().all(u8::is_ascii_digit) {
            return Ok(line
                .iter()
                .fold(0, |n, &digit| n * 10 + i64::from(digit - b'0')));
        }
        str::from_utf8(line)
            .ok()
            .and_then(|line| line.trim().parse().ok())
            .ok_or(Stop::Other)
    }
}

#[cfg(feature = "aio")]
mod aio_support {
    use super::*;

    use bytes::{Buf, BytesMut};
    use tokio::io::AsyncRead;
    use tokio_util::codec::{Decoder, Encoder};

    /// How large a reply still incomplete in the buffer is read again from its start once
    /// more bytes are in, rather than resumed by `combine`.
    pub(super) const WAIT_FOR_WHOLE_REPLIES_UP_TO: usize = 64 * 1024;

    /// Decodes Redis replies out of an async byte stream.
    ///
    /// Harness-visible through the `doc(hidden)` re-export in `lib.rs` so the
    /// codec-level microbenchmarks can drive it directly.
    #[derive(Default)]
    pub struct ValueCodec {
        state: AnySendSyncPartialState,
        /// `combine` has begun a reply that was incomplete: it must finish it from `state`
        /// before the next reply may take the fast path.
        resuming: bool,
    }

    impl ValueCodec {
        fn decode_stream(&mut self, bytes: &mut BytesMut, eof: bool) -> RedisResult<Option<Value>> {
            // Nearly every reply is already whole in the buffer when this runs; `combine`'s
            // resumable parse costs several times what reading it directly does.
            if !self.resuming {
                match super::complete::parse(bytes) {
                    Ok((value, len)) => {
                        bytes.advance(len);
                        return Ok(Some(value));
                    }
                    // Wait for the rest: read again from the start once it is here. A reply
                    // this size comes in a few reads (a read takes what the socket holds); a
                    // larger one `combine` reads as it arrives, without starting over each
                    // time.
                    Err(super::complete::Stop::Incomplete)
                        if !eof && bytes.len() < WAIT_FOR_WHOLE_REPLIES_UP_TO =>
                    {
                        return Ok(None);
                    }
                    Err(_) => {}
                }
            }
            let had_input = !bytes.is_empty();
            let (opt, removed_len) = {
                let buffer = &bytes[..];
                let mut stream =
                    combine::easy::Stream(combine::stream::MaybePartialStream(buffer, !eof));
                match combine::stream::decode_tokio(value(None), &mut stream, &mut self.state) {
                    Ok(x) => x,
                    Err(err) => {
                        self.resuming = false;
                        let err = err
                            .map_position(|pos| pos.translate_position(buffer))
                            .map_range(|range| format!("{range:?}"))
                            .to_string();
                        return Err(RedisError::from(ParsingError::from(err)));
                    }
                }
            };

            bytes.advance(removed_len);
            // An empty buffer begins nothing; anything else `combine` did not finish, it
            // resumes on the next call.
            self.resuming = opt.is_none() && had_input;
            match opt {
                Some(result) => Ok(Some(result)),
                None => Ok(None),
            }
        }
    }

    impl Encoder<Vec<u8>> for ValueCodec {
        type Error = RedisError;
        fn encode(&mut self, item: Vec<u8>, dst: &mut BytesMut) -> Result<(), Self::Error> {
            dst.extend_from_slice(item.as_ref());
            Ok(())
        }
    }

    impl Decoder for ValueCodec {
        type Item = Value;
        type Error = RedisError;

        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
            self.decode_stream(src, false)
        }

        fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
            self.decode_stream(buf, true)
        }
    }

    /// Parses a redis value asynchronously.
    pub async fn parse_redis_value_async<R>(
        decoder: &mut combine::stream::Decoder<AnySendSyncPartialState, PointerOffset<[u8]>>,
        read: &mut R,
    ) -> RedisResult<Value>
    where
        R: AsyncRead + std::marker::Unpin,
    {
        let result = combine::decode_tokio!(*decoder, *read, value(None), |input, _| {
            combine::stream::easy::Stream::from(input)
        });
        match result {
            Err(err) => Err(to_redis_err!(err, decoder)),
            Ok(result) => Ok(result),
        }
    }
}

#[cfg(feature = "aio")]
#[cfg_attr(docsrs, doc(cfg(feature = "aio")))]
pub use self::aio_support::*;

/// The internal redis response parser.
pub struct Parser {
    decoder: Decoder<AnySendSyncPartialState, PointerOffset<[u8]>>,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

/// The parser can be used to parse redis responses into values.  Generally
/// you normally do not use this directly as it's already done for you by
/// the client but in some more complex situations it might be useful to be
/// able to parse the redis responses.
impl Parser {
    /// Creates a new parser that parses the data behind the reader.  More
    /// than one value can be behind the reader in which case the parser can
    /// be invoked multiple times.  In other words: the stream does not have
    /// to be terminated.
    pub fn new() -> Self {
        Self {
            decoder: Decoder::new(),
        }
    }

    // public api

    /// Parses synchronously into a single value from the reader.
    pub fn parse_value<T: Read>(&mut self, mut reader: T) -> RedisResult<Value> {
        let mut decoder = &mut self.decoder;
        let result = combine::decode!(decoder, reader, value(None), |input, _| {
            combine::stream::easy::Stream::from(input)
        });
        match result {
            Err(err) => Err(to_redis_err!(err, decoder)),
            Ok(result) => Ok(result),
        }
    }
}

/// Parses bytes into a redis value.
///
/// This is the most straightforward way to parse something into a low
/// level redis value instead of having to use a whole parser.
pub fn parse_redis_value(bytes: &[u8]) -> RedisResult<Value> {
    let mut parser = Parser::new();
    parser.parse_value(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::ErrorKind;
    use assert_matches::assert_matches;

    #[cfg(feature = "aio")]
    #[test]
    fn decode_eof_returns_none_at_eof() {
        use tokio_util::codec::Decoder;
        let mut codec = ValueCodec::default();

        let mut bytes = bytes::BytesMut::from(&b"+GET 123\r\n"[..]);
        assert_eq!(
            codec.decode_eof(&mut bytes),
            Ok(Some(parse_redis_value(b"+GET 123\r\n").unwrap()))
        );
        assert_eq!(codec.decode_eof(&mut bytes), Ok(None));
        assert_eq!(codec.decode_eof(&mut bytes), Ok(None));
    }

    #[cfg(feature = "aio")]
    #[test]
    fn decode_eof_returns_error_inside_array_and_can_parse_more_inputs() {
        use tokio_util::codec::Decoder;
        let mut codec = ValueCodec::default();

        let mut bytes =
            bytes::BytesMut::from(b"*3\r\n+OK\r\n-LOADING server is loading\r\n+OK\r\n".as_slice());
        let result = codec.decode_eof(&mut bytes).unwrap().unwrap();

        assert_eq!(
            result,
            Value::Array(vec![
                Value::Okay,
                Value::ServerError(ServerError(Repr::Known {
                    kind: ServerErrorKind::BusyLoading,
                    detail: Some(arcstr::literal!("server is loading"))
                })),
                Value::Okay
            ])
        );

        let mut bytes = bytes::BytesMut::from(b"+OK\r\n".as_slice());
        let result = codec.decode_eof(&mut bytes).unwrap().unwrap();

        assert_eq!(result, Value::Okay);
    }

    #[test]
    fn parse_nested_error_and_handle_more_inputs() {
        // from https://redis.io/docs/interact/transactions/ -
        // "EXEC returned two-element bulk string reply where one is an OK code and the other an error reply. It's up to the client library to find a sensible way to provide the error to the user."

        let bytes = b"*3\r\n+OK\r\n-LOADING server is loading\r\n+OK\r\n";
        let result = parse_redis_value(bytes);

        assert_eq!(
            result.unwrap(),
            Value::Array(vec![
                Value::Okay,
                Value::ServerError(ServerError(Repr::Known {
                    kind: ServerErrorKind::BusyLoading,
                    detail: Some(arcstr::literal!("server is loading"))
                })),
                Value::Okay
            ])
        );

        let result = parse_redis_value(b"+OK\r\n").unwrap();

        assert_eq!(result, Value::Okay);
    }

    #[test]
    fn decode_resp3_double() {
        let val = parse_redis_value(b",1.23\r\n").unwrap();
        assert_eq!(val, Value::Double(1.23));
        let val = parse_redis_value(b",nan\r\n").unwrap();
        if let Value::Double(val) = val {
            assert!(val.is_sign_positive());
            assert!(val.is_nan());
        } else {
            panic!("expected double");
        }
        // -nan is supported prior to redis 7.2
        let val = parse_redis_value(b",-nan\r\n").unwrap();
        if let Value::Double(val) = val {
            assert!(val.is_sign_negative());
            assert!(val.is_nan());
        } else {
            panic!("expected double");
        }
        //Allow doubles in scientific E notation
        let val = parse_redis_value(b",2.67923e+8\r\n").unwrap();
        assert_eq!(val, Value::Double(267923000.0));
        let val = parse_redis_value(b",2.67923E+8\r\n").unwrap();
        assert_eq!(val, Value::Double(267923000.0));
        let val = parse_redis_value(b",-2.67923E+8\r\n").unwrap();
        assert_eq!(val, Value::Double(-267923000.0));
        let val = parse_redis_value(b",2.1E-2\r\n").unwrap();
        assert_eq!(val, Value::Double(0.021));

        let val = parse_redis_value(b",-inf\r\n").unwrap();
        assert_eq!(val, Value::Double(-f64::INFINITY));
        let val = parse_redis_value(b",inf\r\n").unwrap();
        assert_eq!(val, Value::Double(f64::INFINITY));
    }

    #[test]
    fn decode_resp3_map() {
        let val = parse_redis_value(b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n").unwrap();
        let mut v = val.as_map_iter().unwrap();
        assert_eq!(
            (&Value::SimpleString("first".to_string()), &Value::Int(1)),
            v.next().unwrap()
        );
        assert_eq!(
            (&Value::SimpleString("second".to_string()), &Value::Int(2)),
            v.next().unwrap()
        );
    }

    #[test]
    fn decode_resp3_boolean() {
        let val = parse_redis_value(b"#t\r\n").unwrap();
        assert_eq!(val, Value::Boolean(true));
        let val = parse_redis_value(b"#f\r\n").unwrap();
        assert_eq!(val, Value::Boolean(false));
        let val = parse_redis_value(b"#x\r\n");
        assert_matches!(val, Err(_));
        let val = parse_redis_value(b"#\r\n");
        assert_matches!(val, Err(_));
    }

    #[test]
    fn decode_resp3_blob_error() {
        let val = parse_redis_value(b"!21\r\nSYNTAX invalid syntax\r\n");
        assert_eq!(
            val.unwrap(),
            Value::ServerError(ServerError(Repr::Extension {
                code: arcstr::literal!("SYNTAX"),
                detail: Some(arcstr::literal!("invalid syntax"))
            }))
        );
    }

    #[test]
    fn decode_resp3_big_number() {
        let val = parse_redis_value(b"(3492890328409238509324850943850943825024385\r\n").unwrap();
        #[cfg(feature = "num-bigint")]
        let expected = Value::BigNumber(
            num_bigint::BigInt::parse_bytes(b"3492890328409238509324850943850943825024385", 10)
                .unwrap(),
        );
        #[cfg(not(feature = "num-bigint"))]
        let expected = Value::BigNumber(b"3492890328409238509324850943850943825024385".to_vec());
        assert_eq!(val, expected);
    }

    #[test]
    fn decode_resp3_set() {
        let val = parse_redis_value(b"~5\r\n+orange\r\n+apple\r\n#t\r\n:100\r\n:999\r\n").unwrap();
        let v = val.as_sequence().unwrap();
        assert!(v.len() >= 5);
        assert_eq!(Value::SimpleString("orange".to_string()), v[0]);
        assert_eq!(Value::SimpleString("apple".to_string()), v[1]);
        assert_eq!(Value::Boolean(true), v[2]);
        assert_eq!(Value::Int(100), v[3]);
        assert_eq!(Value::Int(999), v[4]);
    }

    #[test]
    fn decode_resp3_push() {
        let val = parse_redis_value(b">3\r\n+message\r\n+somechannel\r\n+this is the message\r\n")
            .unwrap();
        if let Value::Push { ref kind, ref data } = val {
            assert_eq!(&PushKind::Message, kind);
            assert_eq!(Value::SimpleString("somechannel".to_string()), data[0]);
            assert_eq!(
                Value::SimpleString("this is the message".to_string()),
                data[1]
            );
        } else {
            panic!("Expected Value::Push")
        }
    }

    #[test]
    fn test_max_recursion_depth_set_and_array() {
        for test_byte in ["*", "~"] {
            let initial = format!("{test_byte}1\r\n").as_bytes().to_vec();
            let end = format!("{test_byte}0\r\n").as_bytes().to_vec();

            let mut ba = initial.repeat(MAX_RECURSE_DEPTH - 1).to_vec();
            ba.extend(end.clone());
            match parse_redis_value(&ba) {
                Ok(Value::Array(a)) => assert_eq!(a.len(), 1),
                Ok(Value::Set(s)) => assert_eq!(s.len(), 1),
                _ => panic!("Expected valid array or set"),
            }

            let mut ba = initial.repeat(MAX_RECURSE_DEPTH).to_vec();
            ba.extend(end);
            match parse_redis_value(&ba) {
                Ok(_) => panic!("Expected ParseError"),
                Err(e) => assert_matches!(e.kind(), ErrorKind::Parse),
            }
        }
    }

    #[test]
    fn test_max_recursion_depth_map() {
        let initial = b"%1\r\n+a\r\n";
        let end = b"%0\r\n";

        let mut ba = initial.repeat(MAX_RECURSE_DEPTH - 1).to_vec();
        ba.extend(*end);
        match parse_redis_value(&ba) {
            Ok(Value::Map(m)) => assert_eq!(m.len(), 1),
            Ok(Value::Set(s)) => assert_eq!(s.len(), 1),
            _ => panic!("Expected valid array or set"),
        }

        let mut ba = initial.repeat(MAX_RECURSE_DEPTH).to_vec();
        ba.extend(end);
        match parse_redis_value(&ba) {
            Ok(_) => panic!("Expected ParseError"),
            Err(e) => assert_matches!(e.kind(), ErrorKind::Parse),
        }
    }

    /// Replies of each type the fast path reads, nested and at their edges.
    #[cfg(feature = "aio")]
    const READ_DIRECTLY: &[&[u8]] = &[
        b"+OK\r\n",
        b"+QUEUED\r\n",
        b"+\r\n",
        b"+a\rb\r\n",
        b"-ERR unknown command\r\n",
        b"-LOADING server is loading\r\n",
        b"-WRONGTYPE\r\n",
        b":0\r\n",
        b":-42\r\n",
        b": 7 \r\n",
        b"_\r\n",
        b"$5\r\nhello\r\n",
        b"$0\r\n\r\n",
        b"$-1\r\n",
        b"$4\r\na\r\nb\r\n",
        b"$2\r\n\xff\xfe\r\n",
        b"*0\r\n",
        b"*-1\r\n",
        b"*4\r\n$-1\r\n+OK\r\n$15\r\n1712345678901-0\r\n:3\r\n",
        b"*1\r\n*2\r\n$15\r\n1712345678901-0\r\n*4\r\n$1\r\nm\r\n$2\r\n{}\r\n$3\r\nexp\r\n$1\r\n0\r\n",
        b"*3\r\n+OK\r\n-LOADING server is loading\r\n+OK\r\n",
        b"*3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$7\r\npayload\r\n",
        b">3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$7\r\npayload\r\n",
        b">3\r\n+subscribe\r\n$4\r\nchan\r\n:1\r\n",
        b">2\r\n$4\r\nelse\r\n*1\r\n:1\r\n",
        b">0\r\n",
    ];

    #[cfg(feature = "aio")]
    #[test]
    fn complete_replies_read_as_combine_reads_them() {
        for reply in READ_DIRECTLY {
            let (value, len) = complete::parse(reply)
                .unwrap_or_else(|stop| panic!("{stop:?}: {:?}", String::from_utf8_lossy(reply)));
            assert_eq!(len, reply.len(), "{:?}", String::from_utf8_lossy(reply));
            assert_eq!(Ok(value), parse_redis_value(reply));
        }
    }

    #[cfg(feature = "aio")]
    #[test]
    fn every_reply_cut_short_is_incomplete() {
        for reply in READ_DIRECTLY {
            for end in 0..reply.len() {
                assert_eq!(
                    complete::parse(&reply[..end]).map(|_| ()),
                    Err(complete::Stop::Incomplete),
                    "{:?}",
                    String::from_utf8_lossy(&reply[..end])
                );
            }
        }
        assert_eq!(
            complete::parse(b"*1000000000\r\n:1\r\n").map(|_| ()),
            Err(complete::Stop::Incomplete)
        );
    }

    #[cfg(feature = "aio")]
    #[test]
    fn other_types_and_malformed_replies_are_left_to_combine() {
        let left: &[&[u8]] = &[
            b",1.5\r\n",
            b"#t\r\n",
            b"%1\r\n+a\r\n:1\r\n",
            b"*1\r\n,1.5\r\n",
            b">2\r\n:1\r\n$1\r\nc\r\n",
            b">1\r\n$1\r\n\xff\r\n",
            b":x\r\n",
            b":99999999999999999999\r\n",
            b"$2\r\nabc\r\n",
            b"$2\r\nabc",
            b"+\xff\r\n",
            b"!\r\n",
        ];
        for reply in left {
            assert_eq!(
                complete::parse(reply).map(|_| ()),
                Err(complete::Stop::Other),
                "{:?}",
                String::from_utf8_lossy(reply)
            );
        }
        let mut too_deep = b"*1\r\n".repeat(MAX_RECURSE_DEPTH);
        too_deep.extend_from_slice(b":1\r\n");
        assert_eq!(complete::parse(&too_deep).map(|_| ()), Err(complete::Stop::Other));
        assert_matches!(parse_redis_value(&too_deep), Err(_));
        let mut deepest = b"*1\r\n".repeat(MAX_RECURSE_DEPTH - 1);
        deepest.extend_from_slice(b":1\r\n");
        assert_eq!(
            complete::parse(&deepest).ok().map(|(value, _)| value),
            parse_redis_value(&deepest).ok()
        );
    }

    /// However the bytes arrive, a codec reads the replies `combine` alone would: whole
    /// replies directly, a split one through `combine` to its end, then directly again.
    #[cfg(feature = "aio")]
    #[test]
    fn a_codec_reads_the_same_replies_however_the_bytes_are_split() {
        use tokio_util::codec::Decoder;
        let mut replies: Vec<&[u8]> = READ_DIRECTLY.to_vec();
        // Types only `combine` reads, between the others.
        replies.insert(3, b",1.5\r\n");
        replies.insert(9, b"%1\r\n+a\r\n*1\r\n:1\r\n");
        let expected: Vec<Value> = replies
            .iter()
            .map(|reply| parse_redis_value(reply).unwrap())
            .collect();
        let stream = replies.concat();

        let read = |chunks: &mut dyn Iterator<Item = &[u8]>| {
            let mut codec = ValueCodec::default();
            let mut buffer = bytes::BytesMut::new();
            let mut read = Vec::new();
            for chunk in chunks {
                buffer.extend_from_slice(chunk);
                while let Some(value) = codec.decode(&mut buffer).unwrap() {
                    read.push(value);
                }
            }
            assert!(buffer.is_empty());
            read
        };
        for split in 0..=stream.len() {
            let (first, second) = stream.split_at(split);
            assert_eq!(read(&mut [first, second].into_iter()), expected, "split at {split}");
        }
        assert_eq!(read(&mut stream.chunks(1)), expected, "a byte at a time");
        assert_eq!(read(&mut stream.chunks(7)), expected, "seven bytes at a time");
    }

    /// A reply too large to wait for whole is resumed by `combine` as it arrives, and the
    /// replies after it are read directly again.
    #[cfg(feature = "aio")]
    #[test]
    fn a_codec_resumes_a_large_reply_through_combine() {
        use tokio_util::codec::Decoder;
        let mut large = b"*4000\r\n".to_vec();
        for i in 0..4000 {
            let entry = format!("entry number {i:>10} of a large reply");
            large.extend_from_slice(format!("${}\r\n{entry}\r\n", entry.len()).as_bytes());
        }
        assert!(large.len() > 2 * aio_support::WAIT_FOR_WHOLE_REPLIES_UP_TO);
        let stream = [&large[..], b"+OK\r\n", b":5\r\n"].concat();
        let expected = vec![
            parse_redis_value(&large).unwrap(),
            Value::Okay,
            Value::Int(5),
        ];
        let mut codec = ValueCodec::default();
        let mut buffer = bytes::BytesMut::new();
        let mut read = Vec::new();
        for chunk in stream.chunks(4096) {
            buffer.extend_from_slice(chunk);
            while let Some(value) = codec.decode(&mut buffer).unwrap() {
                read.push(value);
            }
        }
        assert_eq!(read, expected);
        assert!(buffer.is_empty());
    }

    #[cfg(feature = "aio")]
    #[test]
    fn a_codec_still_refuses_what_does_not_parse() {
        use tokio_util::codec::Decoder;
        for broken in [&b":x\r\n"[..], b"$2\r\nabc\r\n", b"!\r\n"] {
            let mut codec = ValueCodec::default();
            let mut buffer = bytes::BytesMut::from(broken);
            let err = codec.decode(&mut buffer).unwrap_err();
            assert_matches!(err.kind(), ErrorKind::Parse);
        }
    }
}
