//! Phoenix Channels V2 messages as the load generator reads them: the array form
//! `[join_ref, ref, topic, event, payload]`, and what a `phx_reply` says.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Longest error reason kept; longer ones are cut (at a character boundary), so a server that puts a
/// whole document in a reason cannot make the counters grow.
pub const MAX_REASON_BYTES: usize = 120;

/// One message from the server, borrowed from its text.
#[derive(Debug)]
pub struct Incoming<'a> {
    /// The message's ref: ours for replies, `None` for broadcasts.
    pub reference: Option<&'a str>,
    pub event: &'a str,
    pub payload: &'a RawValue,
}

/// Read the array form; `None` if `text` is not a Phoenix V2 message. Refs and event names are read
/// without unescaping: the load generator's own refs never need it, nor do the events it looks for.
pub fn parse(text: &str) -> Option<Incoming<'_>> {
    let (_join_ref, reference, _topic, event, payload) =
        serde_json::from_str::<(Option<&RawValue>, Option<&str>, &RawValue, &str, &RawValue)>(text).ok()?;
    Some(Incoming { reference, event, payload })
}

/// What a `phx_reply` to a push said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `ok`.
    Ok,
    /// `ok` with `{"ignored": "out_of_order"}`: a geo `location` older than the object's last one.
    OutOfOrder,
    /// `error` with its `reason` (or the status and response when they are not of that form).
    Error(String),
}

#[derive(Deserialize)]
struct ReplyPayload<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct Response<'a> {
    #[serde(borrow, default)]
    ignored: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
}

/// Classify the payload of a `phx_reply`, `{"status": ..., "response": ...}`.
pub fn reply(payload: &str) -> Reply {
    let Ok(p) = serde_json::from_str::<ReplyPayload<'_>>(payload) else {
        return Reply::Error(cut("malformed reply".to_string()));
    };
    let response = p.response.and_then(|r| serde_json::from_str::<Response<'_>>(r.get()).ok());
    match (&*p.status, response) {
        ("ok", Some(Response { ignored: Some(i), .. })) if i == "out_of_order" => Reply::OutOfOrder,
        ("ok", _) => Reply::Ok,
        ("error", Some(Response { reason: Some(reason), .. })) => Reply::Error(cut(reason.into_owned())),
        (status, _) => {
            let response = p.response.map_or("", |r| r.get());
            Reply::Error(cut(format!("{status} {response}")))
        }
    }
}

/// `s`, cut to at most [`MAX_REASON_BYTES`] at a character boundary.
pub fn cut(mut s: String) -> String {
    if s.len() > MAX_REASON_BYTES {
        let mut at = MAX_REASON_BYTES;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_read_in_array_form() {
        let m = parse(r#"["1","p17","geo:bench","phx_reply",{"status":"ok","response":{}}]"#).unwrap();
        assert_eq!((m.reference, m.event), (Some("p17"), "phx_reply"));
        assert_eq!(m.payload.get(), r#"{"status":"ok","response":{}}"#);
        let b = parse(r#"[null,null,"geo:bench","geofence_event",{"fence":"f-1"}]"#).unwrap();
        assert_eq!((b.reference, b.event), (None, "geofence_event"));
        assert!(parse(r#"{"event":"phx_reply"}"#).is_none());
        assert!(parse("not json").is_none());
    }

    #[test]
    fn replies_are_classified() {
        assert_eq!(reply(r#"{"status":"ok","response":{}}"#), Reply::Ok);
        assert_eq!(reply(r#"{"status":"ok","response":{"seq":3,"id":"9"}}"#), Reply::Ok);
        assert_eq!(reply(r#"{"response":{"ignored":"out_of_order"},"status":"ok"}"#), Reply::OutOfOrder);
        assert_eq!(reply(r#"{"status":"ok","response":{"ignored":"something else"}}"#), Reply::Ok);
        assert_eq!(reply(r#"{"status":"ok","response":[1,2]}"#), Reply::Ok);
        assert_eq!(
            reply(r#"{"status":"error","response":{"reason":"ts is in the future"}}"#),
            Reply::Error("ts is in the future".into())
        );
        assert_eq!(
            reply(r#"{"status":"error","response":{"reason":"caf\u00e9"}}"#),
            Reply::Error("café".into())
        );
        assert_eq!(reply(r#"{"status":"error","response":"nope"}"#), Reply::Error(r#"error "nope""#.into()));
        assert_eq!(reply(r#"{"status":"timeout"}"#), Reply::Error("timeout ".into()));
        assert_eq!(reply("[]"), Reply::Error("malformed reply".into()));
        let long = format!(r#"{{"status":"error","response":{{"reason":"{}"}}}}"#, "é".repeat(100));
        let Reply::Error(r) = reply(&long) else { panic!("an error") };
        assert_eq!(r.len(), MAX_REASON_BYTES);
    }
}
