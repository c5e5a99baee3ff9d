//! The websocket-shootout messages, shared by the Rust peers (included with `#[path]`): the same
//! rules as Rusher's `server/src/topics/shootout.rs`, so every server does the same work per message.
//! `{"type":"echo","payload":P}` is answered with the same message; `{"type":"broadcast","payload":P}`
//! sends `{"type":"broadcast","payload":P}` to every client (the sender included), then
//! `{"type":"broadcastResult","payload":P}` to the sender. The payload is kept verbatim.

use serde::Deserialize;
use serde_json::value::RawValue;

/// What to do with one client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this back to the sender.
    Echo(String),
    /// Send `to_all` to every client, then `result` to the sender.
    Broadcast { to_all: String, result: String },
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

/// Interpret one text message; `Err` names what is wrong (the connection is then closed with 1003).
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

/// `--listen ADDR` and `--threads N` from the command line (defaults 127.0.0.1:4800 and 1).
pub fn args() -> Result<(std::net::SocketAddr, usize), String> {
    let mut listen = "127.0.0.1:4800".to_owned();
    let mut threads = "1".to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let slot = match flag.as_str() {
            "--listen" => &mut listen,
            "--threads" => &mut threads,
            other => return Err(format!("unknown flag {other:?} (flags: --listen ADDR, --threads N)")),
        };
        *slot = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
    }
    let addr = listen.parse().map_err(|e| format!("--listen {listen:?}: {e}"))?;
    let threads = threads
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("--threads {threads:?}: a count ≥ 1"))?;
    Ok((addr, threads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_and_broadcast_keep_the_payload_verbatim() {
        assert_eq!(
            handle(r#"{"type":"echo","payload":{"t":1,"pad":"xx"}}"#).unwrap(),
            Action::Echo(r#"{"type":"echo","payload":{"t":1,"pad":"xx"}}"#.into())
        );
        assert_eq!(
            handle(r#"{"payload":7,"type":"broadcast"}"#).unwrap(),
            Action::Broadcast {
                to_all: r#"{"type":"broadcast","payload":7}"#.into(),
                result: r#"{"type":"broadcastResult","payload":7}"#.into()
            }
        );
        assert!(handle("{").unwrap_err().contains("not a shootout message"));
        assert!(handle(r#"{"type":"shout"}"#).unwrap_err().contains("shout"));
    }
}
