//! The y-websocket wire protocol (y-protocols' sync, awareness and auth messages), one message per
//! WebSocket binary frame.
//!
//! Every message starts with a lib0 `varUint` message type; sync messages add a `varUint` sub-type and
//! a `varUint8Array` (length-prefixed bytes). The payloads (state vectors, updates, awareness updates)
//! are opaque here: [`super::doc`] decodes them.
//!
//! ```text
//! sync step 1   0 0 <len> <state vector>
//! sync step 2   0 1 <len> <update>
//! update        0 2 <len> <update>
//! awareness     1   <len> <awareness update>
//! auth          2   <anything>
//! query         3
//! ```

/// Message type of sync messages (step 1, step 2, update).
const MSG_SYNC: u64 = 0;
/// Message type of awareness updates.
const MSG_AWARENESS: u64 = 1;
/// Message type of auth messages; the server never interprets their body.
const MSG_AUTH: u64 = 2;
/// Message type of an awareness query: "send me everyone's awareness state".
const MSG_QUERY_AWARENESS: u64 = 3;

/// Sync sub-type: the sender's state vector, asking for what it lacks.
const SYNC_STEP1: u64 = 0;
/// Sync sub-type: the answer to step 1, an update holding what the asker lacks.
const SYNC_STEP2: u64 = 1;
/// Sync sub-type: an incremental update made after the initial exchange.
const SYNC_UPDATE: u64 = 2;

/// The largest frame [`decode`] accepts. A full-document sync step 2 of a long text is a few MiB at
/// most; anything bigger is refused rather than parsed.
pub const MAX_FRAME_LEN: usize = 16 << 20;

/// lib0 integers are JavaScript numbers: a `varUint` above 2^53 - 1 makes the JS decoder throw, so no
/// honest peer sends one.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// One decoded client message; the payloads borrow from the frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// Sync step 1: the client's state vector (v1); answer with [`sync_step2`] of the diff.
    SyncStep1 {
        /// The client's encoded state vector.
        state_vector: &'a [u8],
    },
    /// Sync step 2: what the server lacked (v1 update), in answer to the server's step 1.
    SyncStep2 {
        /// The encoded update.
        update: &'a [u8],
    },
    /// An incremental document update (v1).
    Update {
        /// The encoded update.
        update: &'a [u8],
    },
    /// An awareness update (cursor, user name, ...): y-protocols' awareness encoding.
    Awareness {
        /// The encoded awareness update.
        update: &'a [u8],
    },
    /// A request for the awareness state of every client.
    QueryAwareness,
    /// An auth message. Clients do not send these; the body is ignored.
    Auth,
}

/// Why a frame is not a valid y-websocket message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    /// The frame ends inside a varint or inside a length-prefixed payload (an empty frame included).
    #[error("truncated message")]
    Truncated,
    /// A varint longer than lib0 writes, or above JavaScript's largest safe integer.
    #[error("malformed varint")]
    BadVarInt,
    /// The message type is none of sync, awareness, auth, query awareness.
    #[error("unknown message type {0}")]
    UnknownType(u64),
    /// The sync sub-type is none of step 1, step 2, update.
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    /// Bytes follow the message. y-websocket clients send one message per frame and read only the
    /// first one of a frame they receive, so a second message here would be silently lost: refuse it.
    #[error("trailing bytes after the message")]
    TrailingBytes,
    /// The frame is bigger than the configured bound.
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The frame's length.
        size: usize,
        /// The bound it exceeded.
        max: usize,
    },
}

impl ProtoError {
    /// The WebSocket close code to close the connection with: 1003 (unsupported data) for message
    /// types this server does not speak, 1009 (message too big) for oversized frames, 1007 (invalid
    /// payload data) for malformed content.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtoError::UnknownType(_) | ProtoError::UnknownSyncType(_) => 1003,
            ProtoError::TooLarge { .. } => 1009,
            ProtoError::Truncated | ProtoError::BadVarInt | ProtoError::TrailingBytes => 1007,
        }
    }
}

/// Decodes one client frame, refusing frames over [`MAX_FRAME_LEN`].
pub fn decode(frame: &[u8]) -> Result<Inbound<'_>, ProtoError> {
    decode_limited(frame, MAX_FRAME_LEN)
}

/// Decodes one client frame, refusing frames over `max` bytes.
pub fn decode_limited(frame: &[u8], max: usize) -> Result<Inbound<'_>, ProtoError> {
    if frame.len() > max {
        return Err(ProtoError::TooLarge { size: frame.len(), max });
    }
    let mut r = Reader { buf: frame };
    let message = match r.var_uint()? {
        MSG_SYNC => match r.var_uint()? {
            SYNC_STEP1 => Inbound::SyncStep1 { state_vector: r.var_bytes()? },
            SYNC_STEP2 => Inbound::SyncStep2 { update: r.var_bytes()? },
            SYNC_UPDATE => Inbound::Update { update: r.var_bytes()? },
            other => return Err(ProtoError::UnknownSyncType(other)),
        },
        MSG_AWARENESS => Inbound::Awareness { update: r.var_bytes()? },
        MSG_QUERY_AWARENESS => Inbound::QueryAwareness,
        // Auth bodies (a reason string after a sub-type) only ever flow server to client.
        MSG_AUTH => return Ok(Inbound::Auth),
        other => return Err(ProtoError::UnknownType(other)),
    };
    if !r.buf.is_empty() {
        return Err(ProtoError::TrailingBytes);
    }
    Ok(message)
}

/// Encodes sync step 1 carrying `state_vector` (v1).
pub fn sync_step1(state_vector: &[u8]) -> Vec<u8> {
    sync_message(SYNC_STEP1, state_vector)
}

/// Encodes sync step 2 carrying `update` (v1): the answer to a client's step 1.
pub fn sync_step2(update: &[u8]) -> Vec<u8> {
    sync_message(SYNC_STEP2, update)
}

/// Encodes an incremental update message carrying `update` (v1): what the server broadcasts for
/// every update or step 2 it applied.
pub fn update(update: &[u8]) -> Vec<u8> {
    sync_message(SYNC_UPDATE, update)
}

/// Encodes an awareness message carrying an encoded awareness update.
pub fn awareness(update: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + MAX_VARINT_LEN + update.len());
    write_var_uint(&mut out, MSG_AWARENESS);
    write_var_bytes(&mut out, update);
    out
}

fn sync_message(sub_type: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + MAX_VARINT_LEN + payload.len());
    write_var_uint(&mut out, MSG_SYNC);
    write_var_uint(&mut out, sub_type);
    write_var_bytes(&mut out, payload);
    out
}

/// Bytes of the longest `varUint` lib0 writes for a safe integer (53 bits, 7 per byte).
pub(crate) const MAX_VARINT_LEN: usize = 8;

/// Appends `n` as a lib0 `varUint`: 7 bits per byte, least significant first, high bit = "more".
pub(crate) fn write_var_uint(out: &mut Vec<u8>, mut n: u64) {
    while n > 0x7f {
        out.push(0x80 | (n & 0x7f) as u8);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Appends a lib0 `varUint8Array`: the length as a `varUint`, then the bytes.
pub(crate) fn write_var_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_var_uint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A cursor over lib0-encoded bytes; every read either advances past a whole value or fails.
pub(crate) struct Reader<'a> {
    /// The bytes not read yet.
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads a lib0 `varUint`, refusing values above 2^53 - 1 as lib0 does.
    pub(crate) fn var_uint(&mut self) -> Result<u64, ProtoError> {
        let mut n: u64 = 0;
        for (i, &byte) in self.buf.iter().enumerate() {
            if i == MAX_VARINT_LEN {
                return Err(ProtoError::BadVarInt);
            }
            n |= u64::from(byte & 0x7f) << (7 * i);
            if n > MAX_SAFE_INTEGER {
                return Err(ProtoError::BadVarInt);
            }
            if byte & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(n);
            }
        }
        Err(ProtoError::Truncated)
    }

    /// Reads a lib0 `varUint8Array`, borrowing the bytes.
    pub(crate) fn var_bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let len = self.var_uint()?;
        let len = usize::try_from(len).map_err(|_| ProtoError::Truncated)?;
        if len > self.buf.len() {
            return Err(ProtoError::Truncated);
        }
        let (bytes, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var_uint(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_var_uint(&mut out, n);
        out
    }

    #[test]
    fn byte_exact_frames() {
        assert_eq!(update(&[1, 2, 3]), [0, 2, 3, 1, 2, 3]);
        assert_eq!(sync_step1(&[0]), [0, 0, 1, 0]);
        assert_eq!(sync_step2(&[0, 0]), [0, 1, 2, 0, 0]);
        assert_eq!(
            awareness(&[1, 5, 1, 4, b'n', b'u', b'l', b'l']),
            [1, 8, 1, 5, 1, 4, b'n', b'u', b'l', b'l']
        );
        assert_eq!(sync_step1(&[]), [0, 0, 0]);
    }

    #[test]
    fn varints_match_lib0() {
        assert_eq!(var_uint(0), [0]);
        assert_eq!(var_uint(127), [0x7f]);
        assert_eq!(var_uint(128), [0x80, 0x01]);
        assert_eq!(var_uint(300), [0xac, 0x02]);
        assert_eq!(var_uint(16_384), [0x80, 0x80, 0x01]);
        assert_eq!(var_uint(MAX_SAFE_INTEGER), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        for n in [0, 1, 127, 128, 255, 300, 16_383, 16_384, 1 << 32, MAX_SAFE_INTEGER] {
            let bytes = var_uint(n);
            let mut r = Reader { buf: &bytes };
            assert_eq!(r.var_uint(), Ok(n));
            assert!(r.buf.is_empty());
        }
    }

    #[test]
    fn varint_above_safe_integer_is_refused() {
        let mut r = Reader { buf: &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10] };
        assert_eq!(r.var_uint(), Err(ProtoError::BadVarInt));
        // Nine bytes can never come from lib0, even with zero payload bits.
        let mut r = Reader { buf: &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00] };
        assert_eq!(r.var_uint(), Err(ProtoError::BadVarInt));
        assert_eq!(
            decode(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(ProtoError::BadVarInt)
        );
    }

    #[test]
    fn round_trips_every_message() {
        let payloads: [&[u8]; 4] = [&[], &[7], &[0xff; 127], &[0xab; 200]];
        for p in payloads {
            assert_eq!(decode(&sync_step1(p)), Ok(Inbound::SyncStep1 { state_vector: p }));
            assert_eq!(decode(&sync_step2(p)), Ok(Inbound::SyncStep2 { update: p }));
            assert_eq!(decode(&update(p)), Ok(Inbound::Update { update: p }));
            assert_eq!(decode(&awareness(p)), Ok(Inbound::Awareness { update: p }));
        }
        assert_eq!(decode(&[3]), Ok(Inbound::QueryAwareness));
        assert_eq!(decode(&[2, 0, 4, b'n', b'o', b'p', b'e']), Ok(Inbound::Auth));
    }

    #[test]
    fn payload_lengths_over_127_use_two_byte_varints() {
        let payload = vec![9u8; 300];
        let frame = update(&payload);
        assert_eq!(&frame[..4], [0, 2, 0xac, 0x02]);
        assert_eq!(frame.len(), 4 + 300);
        assert_eq!(decode(&frame), Ok(Inbound::Update { update: &payload[..] }));

        let big = vec![1u8; 20_000];
        let frame = sync_step2(&big);
        assert_eq!(&frame[..5], [0, 1, 0xa0, 0x9c, 0x01]);
        assert_eq!(decode(&frame), Ok(Inbound::SyncStep2 { update: &big[..] }));
    }

    #[test]
    fn every_cut_point_of_a_frame_is_an_error() {
        let payload = vec![5u8; 200];
        let frames = [sync_step1(&payload), sync_step2(&payload), update(&payload), awareness(&payload)];
        for frame in &frames {
            for cut in 0..frame.len() {
                let err = decode(&frame[..cut]).expect_err("a cut frame must not decode");
                assert_eq!(err, ProtoError::Truncated, "cut at {cut} of {frame:?}");
                assert_eq!(err.close_code(), 1007);
            }
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut frame = update(&[1, 2]);
        frame.push(0);
        assert_eq!(decode(&frame), Err(ProtoError::TrailingBytes));
        // Two whole messages in one frame: the second would be lost, so refuse the frame.
        let mut two = awareness(&[0]);
        two.extend_from_slice(&update(&[1]));
        assert_eq!(decode(&two), Err(ProtoError::TrailingBytes));
        assert_eq!(decode(&[3, 3]), Err(ProtoError::TrailingBytes));
        assert_eq!(ProtoError::TrailingBytes.close_code(), 1007);
    }

    #[test]
    fn unknown_types_close_with_1003() {
        let err = decode(&[4]).unwrap_err();
        assert_eq!(err, ProtoError::UnknownType(4));
        assert_eq!(err.close_code(), 1003);
        assert_eq!(decode(&[0x80, 0x01]), Err(ProtoError::UnknownType(128)));
        let err = decode(&[0, 3, 0]).unwrap_err();
        assert_eq!(err, ProtoError::UnknownSyncType(3));
        assert_eq!(err.close_code(), 1003);
    }

    #[test]
    fn oversized_frames_are_refused_before_parsing() {
        let frame = update(&[0u8; 64]);
        assert_eq!(decode_limited(&frame, 66), Err(ProtoError::TooLarge { size: 67, max: 66 }));
        assert!(decode_limited(&frame, 67).is_ok());
        assert_eq!(ProtoError::TooLarge { size: 2, max: 1 }.close_code(), 1009);
    }

    #[test]
    fn random_frames_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut decoded = 0;
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            // Small first bytes so that valid message types and lengths come up often.
            let frame: Vec<u8> = (0..len).map(|i| (next() % if i < 3 { 5 } else { 256 }) as u8).collect();
            if let Ok(msg) = decode(&frame) {
                decoded += 1;
                let body_ok = match msg {
                    Inbound::SyncStep1 { state_vector: p }
                    | Inbound::SyncStep2 { update: p }
                    | Inbound::Update { update: p }
                    | Inbound::Awareness { update: p } => frame.ends_with(p),
                    Inbound::QueryAwareness => frame == [3],
                    Inbound::Auth => frame[0] == 2,
                };
                assert!(body_ok, "{frame:?} decoded as {msg:?}");
            }
        }
        assert!(decoded > 100, "the generator should hit valid frames, got {decoded}");
    }
}
