//! Phoenix Channels V2 messages: the `[join_ref, ref, topic, event, payload]` JSON array carried in text frames,
//! and the length-prefixed layouts carried in binary frames.
//!
//! The client compares refs with `===`, so they must come back exactly as sent: refs are kept as raw JSON text
//! (`"3"` with its quotes, or `12`) and written back unchanged. JSON `null` is `None`.

use std::borrow::Cow;
use std::fmt;
use std::io;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Binary frame kind of a push (client to server, or server to client without a ref).
const KIND_PUSH: u8 = 0;
/// Binary frame kind of a reply to a client push.
const KIND_REPLY: u8 = 1;
/// Binary frame kind of a topic broadcast.
const KIND_BROADCAST: u8 = 2;

/// The payload of an inbound message.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// A text frame's payload: raw JSON text, always an object.
    Json(&'a RawValue),
    /// A binary frame's payload: the bytes after the header fields.
    Binary(&'a [u8]),
}

/// A message from the client, borrowing from the frame where it can.
#[derive(Debug, Clone)]
pub struct Inbound<'a> {
    /// Raw JSON of the join ref (a string or a number), or `None` for `null`.
    pub join_ref: Option<Cow<'a, str>>,
    /// Raw JSON of the message ref (a string or a number), or `None` for `null`.
    pub msg_ref: Option<Cow<'a, str>>,
    /// Decoded topic; owned only when the JSON string had escapes.
    pub topic: Cow<'a, str>,
    /// Decoded event name; owned only when the JSON string had escapes.
    pub event: Cow<'a, str>,
    /// The message body.
    pub payload: Payload<'a>,
}

/// Why a client message could not be read.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum PhoenixError {
    /// The text frame is JSON but not an array.
    #[error("message is not a JSON array")]
    NotAnArray,
    /// The array does not have exactly five elements.
    #[error("message array does not have five elements")]
    WrongLength,
    /// A ref is neither null, a string nor a number (or, in a binary frame, not UTF-8).
    #[error("ref must be null, a string or a number")]
    BadRef,
    /// The topic is not a string (or, in a binary frame, not UTF-8).
    #[error("topic must be a string")]
    BadTopic,
    /// The event is not a string (or, in a binary frame, not UTF-8).
    #[error("event must be a string")]
    BadEvent,
    /// The payload of a text message is not a JSON object.
    #[error("payload must be a JSON object")]
    PayloadNotObject,
    /// A binary frame ends before its header fields do.
    #[error("binary message is truncated")]
    BinaryTruncated,
    /// A binary frame of a kind clients do not send.
    #[error("binary message of unknown kind {0}")]
    BinaryKind(u8),
    /// A string field too long for the one-byte length of the binary layout.
    #[error("{field} of {len} bytes does not fit a binary message (at most 255)")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The text frame is not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
}

/// The five elements of a text message as raw JSON, or `None` when the array had another length.
struct Elements<'a>(Option<[&'a RawValue; 5]>);

impl<'de> Deserialize<'de> for Elements<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ElementsVisitor;

        impl<'de> Visitor<'de> for ElementsVisitor {
            type Value = Elements<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON array")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items: [Option<&'de RawValue>; 5] = [None; 5];
                let mut count = 0usize;
                // Extra elements are still read so that the whole array is checked as JSON.
                while let Some(item) = seq.next_element::<&'de RawValue>()? {
                    if let Some(slot) = items.get_mut(count) {
                        *slot = Some(item);
                    }
                    count += 1;
                }
                Ok(Elements(match items {
                    [Some(a), Some(b), Some(c), Some(d), Some(e)] if count == 5 => Some([a, b, c, d, e]),
                    _ => None,
                }))
            }
        }

        deserializer.deserialize_seq(ElementsVisitor)
    }
}

/// Parse a text frame: `[join_ref, ref, topic, event, payload]`, borrowing from `text`.
pub fn parse_text(text: &str) -> Result<Inbound<'_>, PhoenixError> {
    let elements = serde_json::from_str::<Elements<'_>>(text).map_err(|e| match e.classify() {
        // Every element is accepted as raw JSON, so a type mismatch can only be the top-level value.
        serde_json::error::Category::Data => PhoenixError::NotAnArray,
        _ => PhoenixError::Json(e.to_string()),
    })?;
    let [join_ref, msg_ref, topic, event, payload] = elements.0.ok_or(PhoenixError::WrongLength)?;
    if !payload.get().starts_with('{') {
        return Err(PhoenixError::PayloadNotObject);
    }
    Ok(Inbound {
        join_ref: raw_ref(join_ref)?,
        msg_ref: raw_ref(msg_ref)?,
        topic: json_str(topic.get()).ok_or(PhoenixError::BadTopic)?,
        event: json_str(event.get()).ok_or(PhoenixError::BadEvent)?,
        payload: Payload::Json(payload),
    })
}

fn raw_ref(raw: &RawValue) -> Result<Option<Cow<'_, str>>, PhoenixError> {
    let text = raw.get();
    // `raw` is one valid JSON value, so its first byte tells its type.
    match text.as_bytes().first() {
        Some(b'n') => Ok(None),
        Some(b'"' | b'-' | b'0'..=b'9') => Ok(Some(Cow::Borrowed(text))),
        _ => Err(PhoenixError::BadRef),
    }
}

/// Decodes `text` if it is a valid JSON string, borrowing when it has no escapes.
fn json_str(text: &str) -> Option<Cow<'_, str>> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains(['\\', '"']) && !inner.bytes().any(|b| b < 0x20) {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// Parse a binary frame of kind 0 (client push):
/// `0, len(join_ref), len(ref), len(topic), len(event), join_ref, ref, topic, event, data`.
///
/// Refs become raw JSON strings (quoted and escaped) so they are handled exactly like refs from text frames. An
/// empty join ref stays `Some("\"\"")`: the phoenix 1.8.16 client cannot send a null one (its encoder reads
/// `join_ref.length` and throws on null), and Phoenix itself keeps the empty string as is.
pub fn parse_binary(data: &[u8]) -> Result<Inbound<'_>, PhoenixError> {
    let (&kind, rest) = data.split_first().ok_or(PhoenixError::BinaryTruncated)?;
    if kind != KIND_PUSH {
        return Err(PhoenixError::BinaryKind(kind));
    }
    let Some((&[join_ref_len, ref_len, topic_len, event_len], mut rest)) = rest.split_first_chunk::<4>()
    else {
        return Err(PhoenixError::BinaryTruncated);
    };
    let mut take = |len: u8| -> Result<&[u8], PhoenixError> {
        let len = usize::from(len);
        if rest.len() < len {
            return Err(PhoenixError::BinaryTruncated);
        }
        let (field, tail) = rest.split_at(len);
        rest = tail;
        Ok(field)
    };
    let join_ref = take(join_ref_len)?;
    let msg_ref = take(ref_len)?;
    let topic = take(topic_len)?;
    let event = take(event_len)?;
    let utf8 = |bytes, err| std::str::from_utf8(bytes).map_err(|_| err);
    Ok(Inbound {
        join_ref: Some(Cow::Owned(json_string(utf8(join_ref, PhoenixError::BadRef)?))),
        msg_ref: Some(Cow::Owned(json_string(utf8(msg_ref, PhoenixError::BadRef)?))),
        topic: Cow::Borrowed(utf8(topic, PhoenixError::BadTopic)?),
        event: Cow::Borrowed(utf8(event, PhoenixError::BadEvent)?),
        payload: Payload::Binary(rest),
    })
}

/// Lets `serde_json` escape a string straight into a `String`.
struct StringSink<'s>(&'s mut String);

impl io::Write for StringSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // serde_json writes a string as `&str` runs cut at ASCII escapes plus ASCII escape sequences, so every
        // buffer it hands over is whole UTF-8 and this never fails.
        let text = std::str::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.0.push_str(text);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn push_json_str(out: &mut String, value: &str) {
    let written = serde_json::to_writer(StringSink(out), value);
    debug_assert!(written.is_ok(), "serde_json wrote a partial UTF-8 sequence");
}

fn json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    push_json_str(&mut out, value);
    out
}

fn push_head(out: &mut String, join_ref: Option<&str>, msg_ref: Option<&str>, topic: &str, event: &str) {
    out.push('[');
    out.push_str(join_ref.unwrap_or("null"));
    out.push(',');
    out.push_str(msg_ref.unwrap_or("null"));
    out.push(',');
    push_json_str(out, topic);
    out.push(',');
    push_json_str(out, event);
    out.push(',');
}

fn head_capacity(join_ref: Option<&str>, msg_ref: Option<&str>, topic: &str, event: &str) -> usize {
    // Brackets, commas and quotes, plus a little room for escapes.
    16 + join_ref.map_or(4, str::len) + msg_ref.map_or(4, str::len) + topic.len() + event.len()
}

/// `[join_ref, ref, topic, event, payload]` as JSON text. Refs are raw JSON as received (`None` is `null`), and
/// `payload_json` is an already-serialised JSON object.
pub fn encode(
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload_json: &str,
) -> String {
    let mut out = String::with_capacity(head_capacity(join_ref, msg_ref, topic, event) + payload_json.len());
    push_head(&mut out, join_ref, msg_ref, topic, event);
    out.push_str(payload_json);
    out.push(']');
    out
}

/// `[join_ref, ref, topic, "phx_reply", {"status": status, "response": response_json}]` as JSON text, with refs
/// and `response_json` as in [`encode`].
pub fn encode_reply(
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    status: &str,
    response_json: &str,
) -> String {
    let capacity =
        head_capacity(join_ref, msg_ref, topic, "phx_reply") + 28 + status.len() + response_json.len();
    let mut out = String::with_capacity(capacity);
    push_head(&mut out, join_ref, msg_ref, topic, "phx_reply");
    out.push_str("{\"status\":");
    push_json_str(&mut out, status);
    out.push_str(",\"response\":");
    out.push_str(response_json);
    out.push_str("}]");
    out
}

fn field_len(field: &'static str, value: &str) -> Result<u8, PhoenixError> {
    u8::try_from(value.len()).map_err(|_| PhoenixError::FieldTooLong { field, len: value.len() })
}

fn binary_message(kind: u8, lens: &[u8], fields: &[&str], data: &[u8]) -> Vec<u8> {
    let size = 1 + lens.len() + fields.iter().map(|f| f.len()).sum::<usize>() + data.len();
    let mut out = Vec::with_capacity(size);
    out.push(kind);
    out.extend_from_slice(lens);
    for field in fields {
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Binary push to one channel member (kind 0, no ref):
/// `0, len(join_ref), len(topic), len(event), join_ref, topic, event, data`.
///
/// `join_ref` is the decoded string (see [`ref_as_plain`]). Each string must be at most 255 bytes.
pub fn encode_binary_push(
    join_ref: &str,
    topic: &str,
    event: &str,
    data: &[u8],
) -> Result<Vec<u8>, PhoenixError> {
    let lens = [field_len("join_ref", join_ref)?, field_len("topic", topic)?, field_len("event", event)?];
    Ok(binary_message(KIND_PUSH, &lens, &[join_ref, topic, event], data))
}

/// Binary reply (kind 1), which the client turns into `phx_reply` with `{status, response: ArrayBuffer}`:
/// `1, len(join_ref), len(ref), len(topic), len(status), join_ref, ref, topic, status, data`.
///
/// Refs are decoded strings (see [`ref_as_plain`]). Each string must be at most 255 bytes.
pub fn encode_binary_reply(
    join_ref: &str,
    msg_ref: &str,
    topic: &str,
    status: &str,
    data: &[u8],
) -> Result<Vec<u8>, PhoenixError> {
    let lens = [
        field_len("join_ref", join_ref)?,
        field_len("ref", msg_ref)?,
        field_len("topic", topic)?,
        field_len("status", status)?,
    ];
    Ok(binary_message(KIND_REPLY, &lens, &[join_ref, msg_ref, topic, status], data))
}

/// Binary broadcast to a topic (kind 2): `2, len(topic), len(event), topic, event, data`. Each string must be at
/// most 255 bytes.
pub fn encode_binary_broadcast(topic: &str, event: &str, data: &[u8]) -> Result<Vec<u8>, PhoenixError> {
    let lens = [field_len("topic", topic)?, field_len("event", event)?];
    Ok(binary_message(KIND_BROADCAST, &lens, &[topic, event], data))
}

/// Raw JSON ref to the plain string the binary layout carries: `"3"` becomes `3`, `12` stays `12`. Input that is
/// not a JSON string comes back unchanged.
pub fn ref_as_plain(raw: &str) -> Cow<'_, str> {
    json_str(raw).unwrap_or(Cow::Borrowed(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_payload<'a>(msg: &Inbound<'a>) -> &'a str {
        match msg.payload {
            Payload::Json(raw) => raw.get(),
            Payload::Binary(_) => panic!("expected a JSON payload"),
        }
    }

    #[test]
    fn typical_exchange_byte_for_byte() {
        let join = parse_text(r#"["3","3","room:lobby","phx_join",{"user":"alice"}]"#).unwrap();
        assert_eq!(join.join_ref.as_deref(), Some(r#""3""#));
        assert_eq!(join.msg_ref.as_deref(), Some(r#""3""#));
        assert_eq!(join.topic, "room:lobby");
        assert_eq!(join.event, "phx_join");
        assert_eq!(json_payload(&join), r#"{"user":"alice"}"#);
        assert!(matches!(join.topic, Cow::Borrowed(_)));

        let reply = encode_reply(
            join.join_ref.as_deref(),
            join.msg_ref.as_deref(),
            &join.topic,
            "ok",
            r#"{"welcome":"room:lobby"}"#,
        );
        assert_eq!(
            reply,
            r#"["3","3","room:lobby","phx_reply",{"status":"ok","response":{"welcome":"room:lobby"}}]"#
        );

        let state = encode(
            join.join_ref.as_deref(),
            None,
            &join.topic,
            "presence_state",
            r#"{"alice":{"metas":[{"phx_ref":"1"}]}}"#,
        );
        assert_eq!(
            state,
            r#"["3",null,"room:lobby","presence_state",{"alice":{"metas":[{"phx_ref":"1"}]}}]"#
        );

        let broadcast = encode(None, None, "room:lobby", "new_msg", r#"{"body":"hi"}"#);
        assert_eq!(broadcast, r#"[null,null,"room:lobby","new_msg",{"body":"hi"}]"#);

        let heartbeat = parse_text(r#"[null,"8","phoenix","heartbeat",{}]"#).unwrap();
        assert_eq!(heartbeat.join_ref, None);
        let reply =
            encode_reply(heartbeat.join_ref.as_deref(), heartbeat.msg_ref.as_deref(), "phoenix", "ok", "{}");
        assert_eq!(reply, r#"[null,"8","phoenix","phx_reply",{"status":"ok","response":{}}]"#);

        let leave = parse_text(r#"["3","10","room:lobby","phx_leave",{}]"#).unwrap();
        let close =
            encode(leave.join_ref.as_deref(), leave.join_ref.as_deref(), &leave.topic, "phx_close", "{}");
        assert_eq!(close, r#"["3","3","room:lobby","phx_close",{}]"#);
    }

    #[test]
    fn refs_keep_their_json_type() {
        let msg = parse_text(r#"[12, -3.5, "t", "e", {}]"#).unwrap();
        assert_eq!(msg.join_ref.as_deref(), Some("12"));
        assert_eq!(msg.msg_ref.as_deref(), Some("-3.5"));
        assert_eq!(
            encode(msg.join_ref.as_deref(), msg.msg_ref.as_deref(), "t", "phx_reply", "{}"),
            r#"[12,-3.5,"t","phx_reply",{}]"#
        );

        let msg = parse_text(r#"["7", null, "t", "e", {}]"#).unwrap();
        assert_eq!(msg.join_ref.as_deref(), Some(r#""7""#));
        assert_eq!(msg.msg_ref, None);

        let escaped = parse_text(r#"["a\"b", "\u0031", "t", "e", {}]"#).unwrap();
        assert_eq!(escaped.join_ref.as_deref(), Some(r#""a\"b""#), "echoed verbatim, escapes included");
        assert_eq!(ref_as_plain(escaped.join_ref.as_deref().unwrap()), "a\"b");
        assert_eq!(ref_as_plain(escaped.msg_ref.as_deref().unwrap()), "1");

        for bad in [r#"[true,"1","t","e",{}]"#, r#"[{},"1","t","e",{}]"#, r#"["1",["x"],"t","e",{}]"#] {
            assert_eq!(parse_text(bad).unwrap_err(), PhoenixError::BadRef, "{bad}");
        }
    }

    #[test]
    fn ref_as_plain_strips_json_quoting() {
        assert!(matches!(ref_as_plain(r#""3""#), Cow::Borrowed("3")));
        assert_eq!(ref_as_plain("12"), "12");
        assert_eq!(ref_as_plain(r#""tab\there""#), "tab\there");
        assert_eq!(ref_as_plain(r#""""#), "");
    }

    #[test]
    fn escaped_topics_and_events() {
        let msg = parse_text(r#"[null,"1","room:caf\u00e9 \"x\"","new\nmsg",{}]"#).unwrap();
        assert_eq!(msg.topic, "room:café \"x\"");
        assert_eq!(msg.event, "new\nmsg");
        assert!(matches!(msg.topic, Cow::Owned(_)));
        let out = encode(None, None, &msg.topic, &msg.event, "{}");
        assert_eq!(out, r#"[null,null,"room:café \"x\"","new\nmsg",{}]"#);
        let back = parse_text(&out).unwrap();
        assert_eq!((back.topic, back.event), (msg.topic, msg.event));

        let controls = encode(None, None, "a\u{1}\\/", "e", "{}");
        assert_eq!(controls, r#"[null,null,"a\u0001\\/","e",{}]"#);
        let reply = encode_reply(None, None, "t", "bad \"status\"", "{}");
        assert_eq!(reply, r#"[null,null,"t","phx_reply",{"status":"bad \"status\"","response":{}}]"#);
        assert!(serde_json::from_str::<serde_json::Value>(&reply).is_ok());
    }

    #[test]
    fn shape_errors() {
        assert_eq!(parse_text(r#"{"topic":"t"}"#).unwrap_err(), PhoenixError::NotAnArray);
        assert_eq!(parse_text(r#""x""#).unwrap_err(), PhoenixError::NotAnArray);
        assert_eq!(parse_text(r#"["1","1","t","e"]"#).unwrap_err(), PhoenixError::WrongLength);
        assert_eq!(parse_text(r#"["1","1","t","e",{},{}]"#).unwrap_err(), PhoenixError::WrongLength);
        assert_eq!(parse_text("[]").unwrap_err(), PhoenixError::WrongLength);
        assert_eq!(parse_text(r#"["1","1",5,"e",{}]"#).unwrap_err(), PhoenixError::BadTopic);
        assert_eq!(parse_text(r#"["1","1","t",null,{}]"#).unwrap_err(), PhoenixError::BadEvent);
        for payload in ["[]", "\"x\"", "null", "1"] {
            let text = format!(r#"["1","1","t","e",{payload}]"#);
            assert_eq!(parse_text(&text).unwrap_err(), PhoenixError::PayloadNotObject, "{payload}");
        }
        for broken in ["", "[", r#"["1","1","t","e",{}"#, r#"["1","1","t","e",{}] x"#, "nope"] {
            assert!(matches!(parse_text(broken), Err(PhoenixError::Json(_))), "{broken:?}");
        }
    }

    #[test]
    fn whitespace_around_elements_is_not_part_of_them() {
        let msg = parse_text(" [ \"1\" ,\n null , \"t\" , \"e\" ,\t{ \"a\" : 1 } ] ").unwrap();
        assert_eq!(msg.join_ref.as_deref(), Some("\"1\""));
        assert_eq!(json_payload(&msg), "{ \"a\" : 1 }");
    }

    #[test]
    fn captured_binary_push_from_the_client() {
        let mut frame = vec![0x00, 0x01, 0x01, 0x0a, 0x03];
        frame.extend_from_slice(b"39room:lobbybin");
        frame.extend_from_slice(&[0x01, 0x02, 0x03, 0xfa]);
        let msg = parse_binary(&frame).unwrap();
        assert_eq!(msg.join_ref.as_deref(), Some(r#""3""#));
        assert_eq!(msg.msg_ref.as_deref(), Some(r#""9""#));
        assert_eq!(msg.topic, "room:lobby");
        assert_eq!(msg.event, "bin");
        assert!(matches!(msg.payload, Payload::Binary([0x01, 0x02, 0x03, 0xfa])));
        // The raw refs reply in a text frame exactly like refs parsed from text.
        let reply = encode_reply(msg.join_ref.as_deref(), msg.msg_ref.as_deref(), &msg.topic, "ok", "{}");
        assert_eq!(reply, r#"["3","9","room:lobby","phx_reply",{"status":"ok","response":{}}]"#);
    }

    #[test]
    fn binary_push_edge_cases() {
        let empty_fields = parse_binary(&[0, 0, 0, 0, 0]).unwrap();
        assert_eq!(empty_fields.join_ref.as_deref(), Some(r#""""#));
        assert!(matches!(empty_fields.payload, Payload::Binary([])));
        let quoted = parse_binary(b"\x00\x03\x01\x01\x01a\"b2te").unwrap();
        assert_eq!(quoted.join_ref.as_deref(), Some(r#""a\"b""#));

        assert_eq!(parse_binary(&[]).unwrap_err(), PhoenixError::BinaryTruncated);
        assert_eq!(parse_binary(&[0, 1, 1]).unwrap_err(), PhoenixError::BinaryTruncated);
        assert_eq!(
            parse_binary(b"\x00\x01\x01\x0a\x03" as &[u8]).unwrap_err(),
            PhoenixError::BinaryTruncated
        );
        assert_eq!(
            parse_binary(b"\x00\x01\x01\x0a\x0339room:lobbybi").unwrap_err(),
            PhoenixError::BinaryTruncated
        );
        assert_eq!(parse_binary(&[1, 0, 0, 0, 0]).unwrap_err(), PhoenixError::BinaryKind(1));
        assert_eq!(parse_binary(&[2, 0, 0]).unwrap_err(), PhoenixError::BinaryKind(2));
        assert_eq!(parse_binary(b"\x00\x01\x01\x01\x01\xff2te").unwrap_err(), PhoenixError::BadRef);
        assert_eq!(parse_binary(b"\x00\x01\x01\x01\x0112\xffe").unwrap_err(), PhoenixError::BadTopic);
        assert_eq!(parse_binary(b"\x00\x01\x01\x01\x0112t\xff").unwrap_err(), PhoenixError::BadEvent);
    }

    #[test]
    fn binary_encoder_layouts() {
        let push = encode_binary_push("3", "room:lobby", "bin", &[9, 8]).unwrap();
        let mut want = vec![0, 1, 10, 3];
        want.extend_from_slice(b"3room:lobbybin");
        want.extend_from_slice(&[9, 8]);
        assert_eq!(push, want);
        assert_eq!(push.len(), push.capacity());

        let reply = encode_binary_reply("3", "12", "room:lobby", "ok", &[0xfa]).unwrap();
        let mut want = vec![1, 1, 2, 10, 2];
        want.extend_from_slice(b"312room:lobbyok");
        want.push(0xfa);
        assert_eq!(reply, want);

        let broadcast = encode_binary_broadcast("room:lobby", "delta", b"").unwrap();
        let mut want = vec![2, 10, 5];
        want.extend_from_slice(b"room:lobbydelta");
        assert_eq!(broadcast, want);

        let plain = ref_as_plain(r#""3""#);
        assert_eq!(encode_binary_push(&plain, "t", "e", &[]).unwrap(), [0, 1, 1, 1, b'3', b't', b'e']);
    }

    #[test]
    fn binary_encoders_refuse_long_fields() {
        let long = "x".repeat(256);
        let max = "x".repeat(255);
        assert!(encode_binary_broadcast(&max, "e", &[]).is_ok());
        assert_eq!(
            encode_binary_broadcast(&long, "e", &[]).unwrap_err(),
            PhoenixError::FieldTooLong { field: "topic", len: 256 }
        );
        assert_eq!(
            encode_binary_push("1", "t", &long, &[]).unwrap_err(),
            PhoenixError::FieldTooLong { field: "event", len: 256 }
        );
        assert_eq!(
            encode_binary_reply("1", &long, "t", "ok", &[]).unwrap_err(),
            PhoenixError::FieldTooLong { field: "ref", len: 256 }
        );
        assert_eq!(
            encode_binary_reply("1", "2", "t", &long, &[]).unwrap_err(),
            PhoenixError::FieldTooLong { field: "status", len: 256 }
        );
    }
}
