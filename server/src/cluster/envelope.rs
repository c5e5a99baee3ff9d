//! What nodes say to each other through Redis: one binary envelope per pub/sub message, and the
//! channel and key names. Pure functions, no I/O.
//!
//! Layout: version (1 byte), kind (1 byte), origin node id (u8 length + bytes), topic (u16 length +
//! bytes, little endian), request id (u64, little endian), then the body to the end.

use std::sync::Arc;

/// Envelope format version; a node drops envelopes of any other version.
const VERSION: u8 = 1;
/// Longest node id, in bytes.
pub const MAX_NODE_ID: usize = 64;
/// Bytes before the origin, the topic and the body.
const FIXED: usize = 2 + 1 + 2 + 8;

/// The channel every node's heartbeat goes to.
pub const NODES_CHANNEL: &str = "rusher:nodes";

/// The channel a topic's messages go to; every node with members of the topic subscribes to it.
pub fn topic_channel(topic: &str) -> String {
    format!("rusher:topic:{topic}")
}

/// The channel of one node: requests to it and replies for it.
pub fn node_channel(node: &str) -> String {
    format!("rusher:node:{node}")
}

/// The key holding a topic's owner lease (the owner's node id, with an expiry).
pub fn lease_key(topic: &str) -> String {
    format!("rusher:lease:{topic}")
}

/// The topic of a topic channel, or None for another channel.
pub fn topic_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("rusher:topic:")
}

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An encoded WebSocket frame for every member of the topic on the receiving node.
    Frame = 1,
    /// A topic event for the receiving node's state of the topic (presence changes); the body is
    /// the topic handler's own.
    Event = 2,
    /// A request to the topic's owner node (a forwarded chat message), answered by a `Reply` with
    /// the same request id.
    Request = 3,
    /// The owner's answer to a `Request`.
    Reply = 4,
    /// "This node is alive"; no topic, no body.
    Heartbeat = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Frame,
            2 => Kind::Event,
            3 => Kind::Request,
            4 => Kind::Reply,
            5 => Kind::Heartbeat,
            _ => return None,
        })
    }
}

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub kind: Kind,
    /// The node that sent it.
    pub origin: Arc<str>,
    pub topic: Arc<str>,
    /// Pairs a `Reply` with its `Request`; 0 otherwise.
    pub req_id: u64,
    pub body: Box<[u8]>,
}

/// Why an envelope could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope truncated")]
    Truncated,
    #[error("envelope version {0} is not {VERSION}")]
    Version(u8),
    #[error("unknown envelope kind {0}")]
    Kind(u8),
    #[error("node id or topic is not UTF-8")]
    NotUtf8,
    #[error("node id longer than {MAX_NODE_ID} bytes or topic longer than 65535")]
    TooLong,
}

/// Encode an envelope.
pub fn encode(
    kind: Kind,
    origin: &str,
    topic: &str,
    req_id: u64,
    body: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    if origin.len() > MAX_NODE_ID || topic.len() > usize::from(u16::MAX) {
        return Err(EnvelopeError::TooLong);
    }
    let mut out = Vec::with_capacity(FIXED + origin.len() + topic.len() + body.len());
    out.push(VERSION);
    out.push(kind as u8);
    out.push(origin.len() as u8);
    out.extend_from_slice(origin.as_bytes());
    out.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&req_id.to_le_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// The origin node of an envelope, read without decoding the rest (to drop a node's own messages
/// cheaply).
pub fn origin_of(bytes: &[u8]) -> Option<&[u8]> {
    let n = usize::from(*bytes.get(2)?);
    bytes.get(3..3 + n)
}

/// Decode an envelope; anything malformed is an error, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if version != VERSION {
        return Err(EnvelopeError::Version(version));
    }
    let kind_byte = r.u8()?;
    let kind = Kind::from_u8(kind_byte).ok_or(EnvelopeError::Kind(kind_byte))?;
    let origin_len = usize::from(r.u8()?);
    let origin = r.str(origin_len)?;
    let topic_len = usize::from(u16::from_le_bytes(r.take(2)?.try_into().expect("two bytes")));
    let topic = r.str(topic_len)?;
    let req_id = u64::from_le_bytes(r.take(8)?.try_into().expect("eight bytes"));
    Ok(Envelope { kind, origin: origin.into(), topic: topic.into(), req_id, body: r.0.into() })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        if self.0.len() < n {
            return Err(EnvelopeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        Ok(self.take(1)?[0])
    }
    fn str(&mut self, n: usize) -> Result<&'a str, EnvelopeError> {
        std::str::from_utf8(self.take(n)?).map_err(|_| EnvelopeError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let bytes = encode(Kind::Request, "node-a", "room:ünï", 42, b"\x00body\xff").unwrap();
        assert_eq!(origin_of(&bytes), Some(&b"node-a"[..]));
        let e = decode(&bytes).unwrap();
        assert_eq!(e.kind, Kind::Request);
        assert_eq!(&*e.origin, "node-a");
        assert_eq!(&*e.topic, "room:ünï");
        assert_eq!(e.req_id, 42);
        assert_eq!(&*e.body, b"\x00body\xff");
        let empty = decode(&encode(Kind::Heartbeat, "n", "", 0, &[]).unwrap()).unwrap();
        assert_eq!((empty.kind, &*empty.topic, empty.body.len()), (Kind::Heartbeat, "", 0));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode(Kind::Frame, "node", "room:x", 7, b"").unwrap();
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        assert!(decode(&bytes).is_ok());
    }

    #[test]
    fn bad_versions_kinds_and_names_are_refused() {
        let mut bytes = encode(Kind::Event, "node", "room:x", 0, b"{}").unwrap();
        bytes[0] = 9;
        assert_eq!(decode(&bytes), Err(EnvelopeError::Version(9)));
        bytes[0] = VERSION;
        bytes[1] = 77;
        assert_eq!(decode(&bytes), Err(EnvelopeError::Kind(77)));
        bytes[1] = Kind::Event as u8;
        bytes[3] = 0xff;
        assert_eq!(decode(&bytes), Err(EnvelopeError::NotUtf8));
        let long = "n".repeat(MAX_NODE_ID + 1);
        assert_eq!(encode(Kind::Event, &long, "t", 0, b""), Err(EnvelopeError::TooLong));
    }

    #[test]
    fn channel_names_map_back_to_topics() {
        assert_eq!(topic_of_channel(&topic_channel("room:a:b")), Some("room:a:b"));
        assert_eq!(topic_of_channel(&node_channel("n1")), None);
        assert_eq!(topic_of_channel(NODES_CHANNEL), None);
    }
}
