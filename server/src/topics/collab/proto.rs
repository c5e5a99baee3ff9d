//! The y-websocket wire protocol (y-protocols' sync, awareness and auth messages), one message per
//! WebSocket binary frame.
//!
//! Every message starts with a lib0 `varUint` message type; sync messages add a `varUint` sub-type and
//! a `varUint8Array` (length-prefixed bytes). The payloads (state vectors, updates, awareness updates)
//! are opaque to the message layer; [`check_update`] and [`check_state_vector`] walk the Yjs v1
//! encodings so that [`super::doc`] hands `yrs` only input it decodes without panicking or
//! allocating more than the input's size.
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
    /// A Yjs payload breaks its encoding: an unknown tag, a count larger than the bytes left, a clock
    /// past `u32`, nesting deeper than [`MAX_ANY_DEPTH`].
    #[error("malformed payload: {0}")]
    Malformed(&'static str),
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
            ProtoError::Truncated
            | ProtoError::BadVarInt
            | ProtoError::TrailingBytes
            | ProtoError::Malformed(_) => 1007,
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
    r.finish()?;
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

/// Deepest nesting of arrays and maps accepted inside an update's `Any` content. `yrs` decodes it
/// recursively, so unbounded nesting would overflow the worker's stack; documents built from JSON
/// values nest a handful of levels.
pub const MAX_ANY_DEPTH: usize = 64;

/// Checks that `update` is a well-formed Yjs v1 update as `yrs` 0.28 reads it, before `yrs` does:
/// every count fits in the bytes left (`yrs` reserves memory for counts up front, and a hash map
/// initialises what it reserves), client ids stay below 2^53 (what Yjs writes; `yrs` asserts it),
/// clocks and deletion ranges stay within `u32`, `Any` values nest at most [`MAX_ANY_DEPTH`] deep,
/// strings are UTF-8, and nothing follows the delete set.
pub fn check_update(update: &[u8]) -> Result<(), ProtoError> {
    let mut r = Reader { buf: update };
    // Per client: block count, client id, first clock.
    for _ in 0..r.count(3)? {
        let blocks = r.count(1)?;
        r.var_uint()?;
        let mut clock = r.var_u32()?;
        for _ in 0..blocks {
            let len = check_block(&mut r)?;
            clock = clock.checked_add(len).ok_or(ProtoError::Malformed("clock past u32"))?;
        }
    }
    check_id_set(&mut r)?;
    r.finish()
}

/// Checks that `state_vector` is a well-formed v1 state vector: a count, then (client id, clock)
/// pairs, and nothing after them.
pub fn check_state_vector(state_vector: &[u8]) -> Result<(), ProtoError> {
    let mut r = Reader { buf: state_vector };
    for _ in 0..r.count(2)? {
        r.var_uint()?;
        r.var_u32()?;
    }
    r.finish()
}

/// Block info byte of a garbage-collected range.
const BLOCK_GC: u8 = 0;
/// Block info byte of a skipped range: a gap in a merged update.
const BLOCK_SKIP: u8 = 10;
/// Item info flag: the item names its left origin.
const HAS_ORIGIN: u8 = 0x80;
/// Item info flag: the item names its right origin.
const HAS_RIGHT_ORIGIN: u8 = 0x40;
/// Item info flag: the item is a map entry and names its key (only when it names no origin).
const HAS_PARENT_SUB: u8 = 0x20;

/// Checks one block and returns the number of clock ticks it takes.
fn check_block(r: &mut Reader<'_>) -> Result<u32, ProtoError> {
    let info = r.u8()?;
    if info == BLOCK_GC || info == BLOCK_SKIP {
        return match r.var_u32()? {
            0 => Err(ProtoError::Malformed("empty block")),
            len => Ok(len),
        };
    }
    if info & HAS_ORIGIN != 0 {
        check_id(r)?;
    }
    if info & HAS_RIGHT_ORIGIN != 0 {
        check_id(r)?;
    }
    if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        // The parent: 1 = a root type's name, anything else = the id of the item holding the type.
        if r.var_u32()? == 1 {
            r.string()?;
        } else {
            check_id(r)?;
        }
        if info & HAS_PARENT_SUB != 0 {
            r.string()?;
        }
    }
    // `yrs` takes the content type from the low four bits.
    let len = match info & 0x0f {
        // Deleted content: just a length.
        1 => r.var_u32()?,
        // Legacy JSON content: `yrs` reads one string more than the count says.
        2 => {
            let count = r.count(1)?;
            if count >= r.buf.len() as u64 {
                return Err(ProtoError::Malformed("count exceeds input"));
            }
            for _ in 0..=count {
                r.string()?;
            }
            count as u32 + 1
        }
        // Binary.
        3 => {
            r.var_bytes()?;
            1
        }
        // String: its length in UTF-16 code units, as Yjs counts.
        4 => r.string()?.encode_utf16().count() as u32,
        // Embed (JSON text).
        5 => {
            r.string()?;
            1
        }
        // Format: key and JSON value.
        6 => {
            r.string()?;
            r.string()?;
            1
        }
        // A shared type; only an XML element carries more (its tag name).
        7 => {
            match r.u8()? {
                0 | 1 | 2 | 4 | 5 | 6 | 9 | 15 => {}
                3 => {
                    r.string()?;
                }
                _ => return Err(ProtoError::Malformed("unknown type ref")),
            }
            1
        }
        // Any values.
        8 => {
            let count = r.count(1)?;
            for _ in 0..count {
                check_any(r, 0)?;
            }
            count as u32
        }
        // Sub-document: guid and options.
        9 => {
            r.string()?;
            check_any(r, 0)?;
            1
        }
        _ => return Err(ProtoError::Malformed("unknown content type")),
    };
    Ok(len)
}

/// Checks an id (client id, clock).
fn check_id(r: &mut Reader<'_>) -> Result<(), ProtoError> {
    r.var_uint()?;
    r.var_u32()?;
    Ok(())
}

/// Checks a delete set: per client, its id and clock ranges (start, length).
fn check_id_set(r: &mut Reader<'_>) -> Result<(), ProtoError> {
    for _ in 0..r.count(2)? {
        r.var_uint()?;
        for _ in 0..r.count(2)? {
            let clock = r.var_u32()?;
            let len = r.var_u32()?;
            clock.checked_add(len).ok_or(ProtoError::Malformed("deletion past u32"))?;
        }
    }
    Ok(())
}

/// Checks one lib0 `Any` value nested `depth` deep.
fn check_any(r: &mut Reader<'_>, depth: usize) -> Result<(), ProtoError> {
    match r.u8()? {
        // undefined, null, false, true
        127 | 126 | 121 | 120 => {}
        125 => r.var_int()?,
        // float32; float64 and bigint64
        124 => r.skip(4)?,
        123 | 122 => r.skip(8)?,
        119 => {
            r.string()?;
        }
        116 => {
            r.var_bytes()?;
        }
        tag @ (117 | 118) => {
            if depth >= MAX_ANY_DEPTH {
                return Err(ProtoError::Malformed("values nested too deep"));
            }
            let is_map = tag == 118;
            for _ in 0..r.count(if is_map { 2 } else { 1 })? {
                if is_map {
                    r.string()?;
                }
                check_any(r, depth + 1)?;
            }
        }
        _ => return Err(ProtoError::Malformed("unknown value tag")),
    }
    Ok(())
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

    /// Reads a `varUint` that Yjs stores as a 32-bit value (clocks, lengths).
    fn var_u32(&mut self) -> Result<u32, ProtoError> {
        u32::try_from(self.var_uint()?).map_err(|_| ProtoError::Malformed("value past u32"))
    }

    /// Reads a count of elements that take at least `min_len` bytes each, refusing counts the bytes
    /// left cannot hold.
    fn count(&mut self, min_len: u64) -> Result<u64, ProtoError> {
        let n = self.var_uint()?;
        if n.saturating_mul(min_len) > self.buf.len() as u64 {
            return Err(ProtoError::Malformed("count exceeds input"));
        }
        Ok(n)
    }

    /// Skips a lib0 signed `varInt`: sign and 6 bits, then 7 bits per byte. Like `varUint`, at most
    /// 8 bytes for a safe integer; `yrs` would overflow a shift on longer ones.
    fn var_int(&mut self) -> Result<(), ProtoError> {
        match self.buf.iter().position(|b| b & 0x80 == 0) {
            Some(i) if i < MAX_VARINT_LEN => self.skip(i + 1),
            Some(_) => Err(ProtoError::BadVarInt),
            None if self.buf.len() >= MAX_VARINT_LEN => Err(ProtoError::BadVarInt),
            None => Err(ProtoError::Truncated),
        }
    }

    fn u8(&mut self) -> Result<u8, ProtoError> {
        let (&byte, rest) = self.buf.split_first().ok_or(ProtoError::Truncated)?;
        self.buf = rest;
        Ok(byte)
    }

    fn skip(&mut self, n: usize) -> Result<(), ProtoError> {
        self.buf = self.buf.get(n..).ok_or(ProtoError::Truncated)?;
        Ok(())
    }

    /// Reads a lib0 `varString`: a `varUint8Array` holding UTF-8.
    pub(crate) fn string(&mut self) -> Result<&'a str, ProtoError> {
        std::str::from_utf8(self.var_bytes()?).map_err(|_| ProtoError::Malformed("string is not UTF-8"))
    }

    /// Succeeds if every byte was read.
    pub(crate) fn finish(&self) -> Result<(), ProtoError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::TrailingBytes)
        }
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
    /// Updates and state vectors as yrs writes them, covering every block and content kind a Yjs
    /// document produces: strings, deletions, formatting, embeds, any values (nested), binary,
    /// shared types (map, array, text, XML element with a tag), sub-documents, GC'd ranges, skips.
    fn yrs_payloads() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        use std::collections::HashMap;
        use yrs::types::Attrs;
        use yrs::updates::encoder::Encode;
        use yrs::{
            Any, Array, ArrayPrelim, Doc, Map, MapPrelim, ReadTxn, StateVector, Text, TextPrelim, Transact,
            XmlElementPrelim, XmlFragment,
        };

        let doc = Doc::with_client_id(1);
        let text = doc.get_or_insert_text("quill");
        let map = doc.get_or_insert_map("meta");
        let array = doc.get_or_insert_array("list");
        let xml = doc.get_or_insert_xml_fragment("prosemirror");
        let mut updates = Vec::new();
        let mut step = |f: &dyn Fn(&mut yrs::TransactionMut)| {
            let mut txn = doc.transact_mut();
            f(&mut txn);
            updates.push(txn.encode_update_v1());
        };
        step(&|txn| text.insert(txn, 0, "héllo 😀 wörld"));
        step(&|txn| text.format(txn, 0, 5, Attrs::from([("bold".into(), Any::Bool(true))])));
        step(&|txn| {
            text.insert_embed(txn, 3, Any::from(HashMap::from([("image".to_owned(), Any::from("a.png"))])));
        });
        step(&|txn| text.remove_range(txn, 1, 2));
        step(&|txn| {
            let nested = Any::from(HashMap::from([
                ("n".to_owned(), Any::from(-123_456_789_i64)),
                ("f".to_owned(), Any::from(1.5)),
                (
                    "l".to_owned(),
                    Any::from(vec![Any::Null, Any::Undefined, Any::from(false), Any::from("s")]),
                ),
                ("b".to_owned(), Any::from(vec![1u8, 2, 3])),
                ("big".to_owned(), Any::from(1_i64 << 60)),
            ]));
            map.insert(txn, "nested", nested);
        });
        step(&|txn| {
            map.insert(txn, "submap", MapPrelim::from([("k", 1)]));
            map.insert(txn, "subtext", TextPrelim::new("inner"));
            map.insert(txn, "subdoc", Doc::new());
        });
        step(&|txn| {
            array.push_back(txn, ArrayPrelim::from([1, 2, 3]));
            array.push_back(txn, "x");
            array.remove_range(txn, 0, 1);
        });
        step(&|txn| {
            xml.push_back(txn, XmlElementPrelim::empty("p"));
        });
        step(&|txn| map.remove(txn, "submap").map(drop).unwrap_or(()));
        // With garbage collection, deleted content becomes GC ranges in the full state.
        let full = doc.transact().encode_state_as_update_v1(&StateVector::default());
        // Merging updates with a gap between them writes a skip block.
        let gapped = yrs::merge_updates_v1([&updates[0], &updates[2]]).unwrap();
        let mut state_vectors =
            vec![doc.transact().state_vector().encode_v1(), StateVector::default().encode_v1()];
        state_vectors.push(Doc::with_client_id((1 << 53) - 1).transact().state_vector().encode_v1());
        updates.push(full);
        updates.push(gapped);
        updates.push(yrs::Update::EMPTY_V1.to_vec());
        (updates, state_vectors)
    }

    #[test]
    fn yrs_payloads_pass_the_checks() {
        use yrs::updates::decoder::Decode;
        let (updates, state_vectors) = yrs_payloads();
        for u in &updates {
            assert_eq!(check_update(u), Ok(()), "{u:?}");
            yrs::Update::decode_v1(u).unwrap();
        }
        let full = &updates[updates.len() - 3];
        assert!(full.contains(&BLOCK_GC) && updates[updates.len() - 2].contains(&BLOCK_SKIP));
        for sv in &state_vectors {
            assert_eq!(check_state_vector(sv), Ok(()), "{sv:?}");
        }
    }

    /// One update holding a single `Any` item under the root "t", with the given value bytes.
    fn any_update(value: &[u8]) -> Vec<u8> {
        let mut u = vec![1, 1, 1, 0, 8, 1, 1, b't', 1];
        u.extend_from_slice(value);
        u.push(0);
        u
    }

    #[test]
    fn declared_counts_must_fit_in_the_input() {
        // 14 bytes declaring ~9 billion clients: yrs would reserve a hash map for all of them.
        let bomb = [233, 212, 233, 162, 33, 103, 211, 176, 143, 146, 49, 117, 79, 241];
        assert_eq!(check_update(&bomb), Err(ProtoError::Malformed("count exceeds input")));
        assert_eq!(
            check_state_vector(&[0xff, 0xff, 0xff, 0x7a, 1, 1]),
            Err(ProtoError::Malformed("count exceeds input"))
        );
        assert_eq!(
            check_update(&any_update(&[118, 0xff, 0xff, 0x7f])),
            Err(ProtoError::Malformed("count exceeds input"))
        );
        assert_eq!(
            check_update(&any_update(&[117, 0xff, 0xff, 0x7f])),
            Err(ProtoError::Malformed("count exceeds input"))
        );
        assert_eq!(
            check_update(&[0, 1, 5, 0xff, 0xff, 0x03, 0]),
            Err(ProtoError::Malformed("count exceeds input"))
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |depth: usize| {
            let mut value = [117, 1].repeat(depth);
            value.push(126);
            any_update(&value)
        };
        let deepest = nested(MAX_ANY_DEPTH);
        assert_eq!(check_update(&deepest), Ok(()));
        assert!(yrs::updates::decoder::Decode::decode_v1(&deepest).map(|_: yrs::Update| ()).is_ok());
        assert_eq!(
            check_update(&nested(MAX_ANY_DEPTH + 1)),
            Err(ProtoError::Malformed("values nested too deep"))
        );
        // Deep enough to overflow a thread's stack inside yrs' recursive decoder.
        assert_eq!(check_update(&nested(1_000_000)), Err(ProtoError::Malformed("values nested too deep")));
    }

    #[test]
    fn ids_and_clocks_stay_in_yjs_ranges() {
        // Client id 2^53 (yrs asserts ids are below it) as a block's client and in a state vector.
        let id_2_53 = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10];
        let mut u = vec![1, 1];
        u.extend_from_slice(&id_2_53);
        u.extend_from_slice(&[0, 4, 1, 1, b't', 1, b'a', 0]);
        assert_eq!(check_update(&u), Err(ProtoError::BadVarInt));
        let mut sv = vec![1];
        sv.extend_from_slice(&id_2_53);
        sv.push(5);
        assert_eq!(check_state_vector(&sv), Err(ProtoError::BadVarInt));
        // Clocks: a first clock past u32, blocks running past u32, deletions running past it.
        assert_eq!(
            check_update(&[1, 1, 1, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 1, 0]),
            Err(ProtoError::Malformed("value past u32"))
        );
        assert_eq!(
            check_update(&[1, 1, 1, 0xfe, 0xff, 0xff, 0xff, 0x0f, 0, 2, 0]),
            Err(ProtoError::Malformed("clock past u32"))
        );
        assert_eq!(
            check_update(&[0, 1, 1, 1, 0xfe, 0xff, 0xff, 0xff, 0x0f, 2]),
            Err(ProtoError::Malformed("deletion past u32"))
        );
        assert_eq!(check_update(&[0, 1, 1, 1, 0xfe, 0xff, 0xff, 0xff, 0x0f, 1]), Ok(()));
        // Signed varints longer than a safe integer needs; yrs would overflow a shift.
        assert_eq!(
            check_update(&any_update(&[125, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])),
            Err(ProtoError::BadVarInt)
        );
        assert_eq!(check_update(&any_update(&[125, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f])), Ok(()));
    }

    #[test]
    fn malformed_structure_is_refused() {
        assert_eq!(check_update(&[]), Err(ProtoError::Truncated));
        assert_eq!(check_update(&[0, 0, 0]), Err(ProtoError::TrailingBytes));
        assert_eq!(check_update(&[1, 1, 1, 0, BLOCK_GC, 0, 0]), Err(ProtoError::Malformed("empty block")));
        assert_eq!(
            check_update(&[1, 1, 1, 0, 0x0b, 1, 1, b't', 0]),
            Err(ProtoError::Malformed("unknown content type"))
        );
        assert_eq!(
            check_update(&[1, 1, 1, 0, 7, 1, 1, b't', 7, 0]),
            Err(ProtoError::Malformed("unknown type ref"))
        );
        assert_eq!(check_update(&any_update(&[115])), Err(ProtoError::Malformed("unknown value tag")));
        assert_eq!(
            check_update(&[1, 1, 1, 0, 4, 1, 1, b't', 1, 0xff, 0]),
            Err(ProtoError::Malformed("string is not UTF-8"))
        );
        assert_eq!(check_state_vector(&[1, 1, 0x80]), Err(ProtoError::Truncated));
        assert_eq!(check_state_vector(&[1, 1, 1, 1]), Err(ProtoError::TrailingBytes));
        let (updates, _) = yrs_payloads();
        for u in &updates[..updates.len() - 1] {
            for cut in 0..u.len() {
                assert!(check_update(&u[..cut]).is_err(), "cut {cut} of {u:?}");
            }
        }
    }

    #[test]
    fn checked_updates_decode_without_panicking() {
        use yrs::updates::decoder::Decode;
        let (updates, _) = yrs_payloads();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut passed = 0;
        for i in 0..20_000 {
            let mut bad = updates[i % updates.len()].clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() % bad.len() as u64) as usize;
                match next() % 4 {
                    0 => bad[at] ^= 1 << (next() % 8),
                    1 => bad[at] = next() as u8,
                    2 => bad.insert(at, next() as u8),
                    _ => drop(bad.remove(at)),
                }
                if bad.is_empty() {
                    bad.push(0);
                }
            }
            if check_update(&bad).is_ok() {
                passed += 1;
                // No catch_unwind: a panic here fails the test.
                let _ = yrs::Update::decode_v1(&bad);
            }
        }
        assert!(passed > 500, "only {passed} mutated updates passed the check");
    }
}
