//! The websocket-shootout protocol on `/shootout`, so other servers can be measured against Rusher with
//! the same tool: `{"type":"echo","payload":P}` is answered with the same message;
//! `{"type":"broadcast","payload":P}` sends `{"type":"broadcast","payload":P}` to every shootout client
//! (the sender included) and then `{"type":"broadcastResult","payload":P}` to the sender.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Name of the internal subscriber list of shootout clients; not a valid Phoenix topic.
pub const TOPIC: &str = "\0shootout";

/// What to do with one client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this back to the sender.
    Echo(String),
    /// Send `to_all` to every shootout client, then `result` to the sender.
    Broadcast { to_all: String, result: String },
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

/// Interpret one text message; `Err` names what is wrong (the connection is closed with 1003).
pub fn handle(text: &str) -> Result<Action, String> {
    let m: Message<'_> = serde_json::from_str(text).map_err(|e| format!("not a shootout message: {e}"))?;
    let payload = m.payload.map_or("null", RawValue::get);
    match m.kind {
        "echo" => Ok(Action::Echo(format!(r#"{{"type":"echo","payload":{payload}}}"#))),
        "broadcast" => Ok(Action::Broadcast {
            to_all: format!(r#"{{"type":"broadcast","payload":{payload}}}"#),
            result: format!(r#"{{"type":"broadcastResult","payload":{payload}}}"#),
        }),
        other => Err(format!("unknown message type {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_and_broadcast_keep_the_payload_verbatim() {
        assert_eq!(
            handle(r#"{"type":"echo","payload":{"a":[1,2.50,"x"]}}"#).unwrap(),
            Action::Echo(r#"{"type":"echo","payload":{"a":[1,2.50,"x"]}}"#.into())
        );
        let Action::Broadcast { to_all, result } = handle(r#"{"payload":7,"type":"broadcast"}"#).unwrap()
        else {
            panic!("broadcast expected")
        };
        assert_eq!(to_all, r#"{"type":"broadcast","payload":7}"#);
        assert_eq!(result, r#"{"type":"broadcastResult","payload":7}"#);
    }

    #[test]
    fn bad_messages_are_named() {
        assert!(handle("{").unwrap_err().contains("not a shootout message"));
        assert!(handle(r#"{"type":"shout"}"#).unwrap_err().contains("shout"));
        assert_eq!(
            handle(r#"{"type":"echo"}"#).unwrap(),
            Action::Echo(r#"{"type":"echo","payload":null}"#.into())
        );
    }
}
