//! RFC 6455 framing, server side: masked client frames are decoded and unmasked in place, fragmented messages are
//! reassembled, and unmasked server frames are encoded.
//!
//! Every error maps to the close code the server sends before dropping the connection, so the caller never has
//! to classify failures itself.

use std::borrow::Cow;
use std::ops::Range;

/// Largest payload a control frame may carry (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Close code for a protocol violation.
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code for a text payload (or close reason) that is not UTF-8.
const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close code for a frame or message above the configured bound.
const CLOSE_TOO_BIG: u16 = 1009;

/// The four-bit frame opcode; the reserved values 3-7 and 11-15 are rejected while decoding.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OpCode {
    /// Continues a fragmented data message.
    Continuation,
    /// Starts a UTF-8 text message.
    Text,
    /// Starts a binary message.
    Binary,
    /// Starts or answers the closing handshake.
    Close,
    /// Asks the peer for a pong.
    Ping,
    /// Answers a ping, or serves as an unsolicited heartbeat.
    Pong,
}

impl OpCode {
    /// Control frames (close, ping, pong) may interleave with fragments and never exceed 125 bytes.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }

    fn from_bits(bits: u8) -> Result<Self, FrameError> {
        Ok(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(FrameError::ReservedOpcode(other)),
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }
}

/// The parts of a frame header the message layer needs; the mask has already been applied.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FrameHead {
    /// Last frame of its message. Always true for control frames.
    pub fin: bool,
    /// What the payload is.
    pub opcode: OpCode,
    /// Payload length in bytes; never above the `max_payload` given to [`decode`].
    pub payload_len: usize,
}

/// Errors while decoding client frames; each maps to the close code the server must send.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// RSV1-3 set, but no extension was negotiated.
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// Opcode 3-7 or 11-15.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// Clients must mask every frame (RFC 6455 §5.1).
    #[error("client frame is not masked")]
    Unmasked,
    /// Control frame payload above 125 bytes.
    #[error("control frame payload above 125 bytes")]
    ControlTooLong,
    /// Control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// 64-bit payload length with the most significant bit set.
    #[error("64-bit payload length has its most significant bit set")]
    BadLength,
    /// One frame's payload above the configured bound.
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Length announced by the header.
        len: u64,
        /// Configured bound.
        max: usize,
    },
    /// Close payload of exactly one byte: too short for a code.
    #[error("close payload of one byte")]
    BadClosePayload,
    /// Close code that must not appear on the wire.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// Text message or close reason that is not UTF-8.
    #[error("invalid UTF-8 in text payload")]
    InvalidUtf8,
    /// Continuation frame with no fragmented message open.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// New text or binary frame while a fragmented message is still open.
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// Reassembled message above the configured bound.
    #[error("message exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Configured bound.
        max: usize,
    },
}

impl FrameError {
    /// The close code to send before dropping the connection.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::InvalidUtf8 => CLOSE_INVALID_PAYLOAD,
            FrameError::TooLarge { .. } | FrameError::MessageTooLarge { .. } => CLOSE_TOO_BIG,
            FrameError::ReservedBits
            | FrameError::ReservedOpcode(_)
            | FrameError::Unmasked
            | FrameError::ControlTooLong
            | FrameError::FragmentedControl
            | FrameError::BadLength
            | FrameError::BadClosePayload
            | FrameError::InvalidCloseCode(_)
            | FrameError::UnexpectedContinuation
            | FrameError::ExpectedContinuation => CLOSE_PROTOCOL_ERROR,
        }
    }
}

/// Decoded frame: its head, the payload's byte range within the buffer, and the total bytes it occupied.
pub type Decoded = (FrameHead, Range<usize>, usize);

/// Decode one client frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold the whole frame; nothing is modified then, so the caller reads
/// more and calls again with the grown buffer. Header errors and [`FrameError::TooLarge`] are reported as soon as
/// the header bytes that prove them have arrived, before the payload. On success the payload is unmasked in place:
/// the caller must consume the returned number of bytes before decoding again, or the payload would be unmasked
/// twice.
pub fn decode(buf: &mut [u8], max_payload: usize) -> Result<Option<Decoded>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F)?;
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(FrameError::FragmentedControl);
        }
        if usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(FrameError::ControlTooLong);
        }
    }
    let Some((len, len_bytes)) = extended_len(buf, len7)? else {
        return Ok(None);
    };
    if len > max_payload as u64 {
        return Err(FrameError::TooLarge { len, max: max_payload });
    }
    // `len <= max_payload` so it fits in usize; only the header addition can overflow.
    let header = 2 + len_bytes + 4;
    let total = header.checked_add(len as usize).ok_or(FrameError::TooLarge { len, max: max_payload })?;
    if buf.len() < total {
        return Ok(None);
    }
    let mask = [buf[header - 4], buf[header - 3], buf[header - 2], buf[header - 1]];
    apply_mask(&mut buf[header..total], mask);
    let head = FrameHead { fin, opcode, payload_len: len as usize };
    Ok(Some((head, header..total, total)))
}

/// Reads the 16- or 64-bit extended length; returns the payload length and how many extension bytes it used, or
/// `None` while those bytes have not arrived.
fn extended_len(buf: &[u8], len7: u8) -> Result<Option<(u64, usize)>, FrameError> {
    match len7 {
        126 => Ok(buf.get(2..4).map(|b| (u64::from(u16::from_be_bytes([b[0], b[1]])), 2))),
        127 => match buf.get(2..10) {
            None => Ok(None),
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(FrameError::BadLength);
                }
                Ok(Some((len, 8)))
            }
        },
        n => Ok(Some((u64::from(n), 0))),
    }
}

/// Total frame size (header + payload) once the header is complete, so the caller can reserve buffer space for a
/// big frame in one step. Does not validate the header; [`decode`] does.
pub fn peek_total_len(buf: &[u8]) -> Option<u64> {
    let (b1, len7) = match *buf {
        [_, b1, ..] => (b1, b1 & 0x7F),
        _ => return None,
    };
    let mask_len: u64 = if b1 & 0x80 != 0 { 4 } else { 0 };
    let (len, len_bytes) = match len7 {
        126 => {
            let b = buf.get(2..4)?;
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 2)
        }
        127 => {
            let b = buf.get(2..10)?;
            let mut be = [0u8; 8];
            be.copy_from_slice(b);
            (u64::from_be_bytes(be), 8)
        }
        n => (u64::from(n), 0),
    };
    Some(len.saturating_add(2 + len_bytes + mask_len))
}

fn header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// The payload of a whole unmasked frame as [`encode`] makes it; `None` if `frame` is not one.
pub fn payload_of(frame: &[u8]) -> Option<&[u8]> {
    if frame.get(1).is_none_or(|b1| b1 & 0x80 != 0) || peek_total_len(frame)? != frame.len() as u64 {
        return None;
    }
    let len = match frame[1] {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    frame.get(2 + len..)
}

/// Encode a whole unmasked server frame (FIN set) into a new `Vec` of exactly the frame's size.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header_len(payload.len()) + payload.len());
    encode_header(opcode, payload.len(), &mut out);
    out.extend_from_slice(payload);
    out
}

/// Append just an unmasked header (FIN set) for a payload of `len` bytes, for callers that write the payload
/// from elsewhere.
pub fn encode_header(opcode: OpCode, len: usize, out: &mut Vec<u8>) {
    out.push(0x80 | opcode.bits());
    match len {
        0..=125 => out.push(len as u8),
        126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Close frame with `code` and `reason`; the reason is cut on a char boundary so the payload stays within the
/// 125 bytes a control frame allows.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut out = Vec::with_capacity(2 + 2 + reason.len());
    encode_header(OpCode::Close, 2 + reason.len(), &mut out);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
    out
}

/// Whether a peer may send `code` in a close frame.
///
/// 1004-1006 and 1015 are reserved for local reporting, 1016-2999 are unassigned or reserved for future
/// revisions, and anything outside 1000-4999 is not a close code. 1012-1014 are registered with IANA (service
/// restart, try again later, bad gateway), and Autobahn 7.9.x does not list them as invalid, so they are accepted.
fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Parse and validate a received close payload: empty means no code was given.
pub fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::BadClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(FrameError::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// XOR `data` with the repeating four-byte `mask`, starting at mask byte 0.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    // Eight bytes per step: chunk offsets are multiples of 8, so the mask phase at each chunk start is 0 and one
    // doubled mask word covers the chunk.
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// Incremental UTF-8 check over a growing buffer.
#[derive(Default, Debug)]
struct Utf8Check {
    /// `data[..valid_up_to]` is valid UTF-8; bytes past it are at most an incomplete trailing sequence that could
    /// still become valid.
    valid_up_to: usize,
}

impl Utf8Check {
    /// Checks the bytes appended to `data` since the last call. Fails as soon as the data can no longer become
    /// valid, rather than at the end of the message; `complete` means no more bytes will follow.
    fn advance(&mut self, data: &[u8], complete: bool) -> Result<(), FrameError> {
        match std::str::from_utf8(&data[self.valid_up_to..]) {
            Ok(_) => {
                self.valid_up_to = data.len();
                Ok(())
            }
            // `error_len() == None` means the input merely ended inside a sequence that is a valid prefix.
            Err(e) if e.error_len().is_none() && !complete => {
                self.valid_up_to += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(FrameError::InvalidUtf8),
        }
    }
}

/// State of a fragmented data message in flight. The connection holds `Option<Box<Reassembly>>`, `None` when
/// idle, so an idle connection pays one pointer for it.
pub struct Reassembly {
    /// [`OpCode::Text`] or [`OpCode::Binary`]: the opcode of the first fragment.
    opcode: OpCode,
    /// Payloads of all fragments received so far, in order; never longer than the `max_message` bound.
    data: Vec<u8>,
    /// Progress of the UTF-8 check; unused for binary messages.
    utf8: Utf8Check,
}

// Written by hand so that logging a connection shows the buffered size, not up to `max_message` bytes.
impl std::fmt::Debug for Reassembly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembly")
            .field("opcode", &self.opcode)
            .field("len", &self.data.len())
            .field("utf8", &self.utf8)
            .finish()
    }
}

impl Reassembly {
    fn push(&mut self, payload: &[u8], fin: bool, max_message: usize) -> Result<(), FrameError> {
        if self.data.len() + payload.len() > max_message {
            return Err(FrameError::MessageTooLarge { max: max_message });
        }
        self.data.extend_from_slice(payload);
        if self.opcode == OpCode::Text {
            self.utf8.advance(&self.data, fin)?;
        }
        Ok(())
    }
}

/// What a complete frame means at the message level.
///
/// Data messages borrow the frame payload when the message was a single frame, and own the reassembled bytes when
/// it was fragmented; the unfragmented case never allocates.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A complete text message, validated as UTF-8.
    Text(Cow<'a, str>),
    /// A complete binary message.
    Binary(Cow<'a, [u8]>),
    /// A ping; the payload must be echoed in a pong.
    Ping(&'a [u8]),
    /// A pong; its payload carries nothing the server needs.
    Pong,
    /// A close frame with its validated code and reason, if it had any.
    Close(Option<(u16, &'a str)>),
}

/// Feed one decoded frame.
///
/// Returns `Ok(Some(msg))` when the frame completes a message or is a control frame, and `Ok(None)` when a fragment
/// was buffered. Text is validated as UTF-8, incrementally across fragments, failing as soon as a sequence can no
/// longer become valid. `max_message` bounds the reassembled size. Control frames leave an open fragmented message
/// untouched. After an error the connection must be closed with [`FrameError::close_code`]; `state` is then
/// unspecified.
pub fn on_frame<'a>(
    state: &mut Option<Box<Reassembly>>,
    head: &FrameHead,
    payload: &'a [u8],
    max_message: usize,
) -> Result<Option<Incoming<'a>>, FrameError> {
    match head.opcode {
        OpCode::Ping => Ok(Some(Incoming::Ping(payload))),
        OpCode::Pong => Ok(Some(Incoming::Pong)),
        OpCode::Close => Ok(Some(Incoming::Close(parse_close(payload)?))),
        OpCode::Text | OpCode::Binary => {
            if state.is_some() {
                return Err(FrameError::ExpectedContinuation);
            }
            if head.fin {
                if payload.len() > max_message {
                    return Err(FrameError::MessageTooLarge { max: max_message });
                }
                return single_frame_message(head.opcode, payload).map(Some);
            }
            let mut fragments = Box::new(Reassembly {
                opcode: head.opcode,
                data: Vec::with_capacity(payload.len()),
                utf8: Utf8Check::default(),
            });
            fragments.push(payload, false, max_message)?;
            *state = Some(fragments);
            Ok(None)
        }
        OpCode::Continuation => {
            let Some(mut fragments) = state.take() else {
                return Err(FrameError::UnexpectedContinuation);
            };
            fragments.push(payload, head.fin, max_message)?;
            if !head.fin {
                *state = Some(fragments);
                return Ok(None);
            }
            let Reassembly { opcode, data, .. } = *fragments;
            if opcode == OpCode::Text {
                let text = String::from_utf8(data).map_err(|_| FrameError::InvalidUtf8)?;
                Ok(Some(Incoming::Text(Cow::Owned(text))))
            } else {
                Ok(Some(Incoming::Binary(Cow::Owned(data))))
            }
        }
    }
}

fn single_frame_message(opcode: OpCode, payload: &[u8]) -> Result<Incoming<'_>, FrameError> {
    if opcode == OpCode::Text {
        let text = std::str::from_utf8(payload).map_err(|_| FrameError::InvalidUtf8)?;
        Ok(Incoming::Text(Cow::Borrowed(text)))
    } else {
        Ok(Incoming::Binary(Cow::Borrowed(payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::{self, Read};

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const BIG: usize = 1 << 20;

    /// A client frame with full control over the first byte, the mask bit and the length encoding.
    fn raw_frame(b0: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![b0];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            0..=125 => out.push(mask_bit | payload.len() as u8),
            126..=0xFFFF => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            _ => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
        }
        if masked {
            out.extend_from_slice(&MASK);
            let start = out.len();
            out.extend_from_slice(payload);
            for (i, b) in out[start..].iter_mut().enumerate() {
                *b ^= MASK[i % 4];
            }
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    fn client_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        raw_frame(if fin { 0x80 } else { 0 } | opcode.bits(), true, payload)
    }

    fn decode_owned(
        mut bytes: Vec<u8>,
        max: usize,
    ) -> Result<Option<(FrameHead, Vec<u8>, usize)>, FrameError> {
        Ok(decode(&mut bytes, max)?.map(|(head, range, used)| (head, bytes[range].to_vec(), used)))
    }

    fn payload_of(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn payloads_come_back_out_of_encoded_frames() {
        for len in [0, 1, 125, 126, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let frame = encode(OpCode::Binary, &payload);
            assert_eq!(super::payload_of(&frame), Some(&payload[..]), "length {len}");
            assert_eq!(super::payload_of(&frame[..frame.len() - 1]), None, "cut {len}");
        }
        assert_eq!(super::payload_of(&[]), None);
        assert_eq!(super::payload_of(&[0x82, 0x81, 1, 2, 3, 4, 5]), None, "masked frames are not ours");
    }

    #[test]
    fn decodes_every_length_form() {
        for (len, header) in [(0, 6), (5, 6), (125, 6), (126, 8), (65535, 8), (65536, 14), (70_000, 14)] {
            let payload = payload_of(len);
            let frame = client_frame(true, OpCode::Binary, &payload);
            assert_eq!(frame.len(), header + len);
            assert_eq!(peek_total_len(&frame), Some((header + len) as u64));
            let (head, got, used) = decode_owned(frame, BIG).unwrap().unwrap();
            assert_eq!(head, FrameHead { fin: true, opcode: OpCode::Binary, payload_len: len });
            assert_eq!(got, payload, "len {len}");
            assert_eq!(used, header + len);
        }
    }

    #[test]
    fn payload_range_points_into_the_buffer_and_is_unmasked() {
        let mut buf = client_frame(true, OpCode::Text, b"hello");
        let (head, range, used) = decode(&mut buf, BIG).unwrap().unwrap();
        assert_eq!(range, 6..11);
        assert_eq!(used, 11);
        assert_eq!(&buf[range], b"hello");
        assert_eq!(head.opcode, OpCode::Text);
    }

    #[test]
    fn unmasked_client_frame_is_rejected() {
        let err = decode_owned(raw_frame(0x81, false, b"hi"), BIG).unwrap_err();
        assert_eq!(err, FrameError::Unmasked);
        assert_eq!(err.close_code(), 1002);
    }

    #[test]
    fn byte_by_byte_yields_none_until_the_last_byte() {
        let payload = payload_of(300);
        let frame = client_frame(true, OpCode::Binary, &payload);
        for cut in 0..frame.len() {
            let mut partial = frame[..cut].to_vec();
            assert_eq!(decode(&mut partial, BIG).unwrap(), None, "cut at {cut}");
            assert_eq!(partial, frame[..cut], "incomplete input must not be modified");
        }
        let (head, got, used) = decode_owned(frame.clone(), BIG).unwrap().unwrap();
        assert_eq!((head.payload_len, got, used), (300, payload, frame.len()));
    }

    /// Yields its chunks one read at a time with `WouldBlock` between them, like a non-blocking socket.
    struct ChunkedSocket {
        chunks: VecDeque<Vec<u8>>,
        ready: bool,
    }

    impl Read for ChunkedSocket {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if !self.ready {
                self.ready = true;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.ready = false;
            match self.chunks.pop_front() {
                None => Ok(0),
                Some(chunk) => {
                    assert!(chunk.len() <= out.len());
                    out[..chunk.len()].copy_from_slice(&chunk);
                    Ok(chunk.len())
                }
            }
        }
    }

    /// Drives `decode` the way a connection does: read until `WouldBlock`, decode all complete frames, repeat.
    fn drive(socket: &mut ChunkedSocket) -> Vec<(FrameHead, Vec<u8>)> {
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        let mut scratch = [0u8; 4096];
        loop {
            loop {
                match socket.read(&mut scratch) {
                    Ok(0) => return frames,
                    Ok(n) => buf.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            while let Some((head, range, used)) = decode(&mut buf, BIG).unwrap() {
                frames.push((head, buf[range].to_vec()));
                buf.drain(..used);
            }
        }
    }

    #[test]
    fn frames_split_across_would_block_reads() {
        let big = payload_of(70_000);
        let mut stream = client_frame(true, OpCode::Text, b"first");
        stream.extend(client_frame(true, OpCode::Binary, &big));
        stream.extend(client_frame(true, OpCode::Ping, b"p"));
        // Odd chunk sizes so boundaries land inside headers, extended lengths, masks and payloads.
        let mut chunks = VecDeque::new();
        let mut rest = &stream[..];
        for size in [1usize, 3, 7, 2, 1000, 9, 4096, 13].into_iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            chunks.push_back(chunk.to_vec());
            rest = tail;
        }
        let frames = drive(&mut ChunkedSocket { chunks, ready: false });
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].1, b"first");
        assert_eq!(frames[1].0.opcode, OpCode::Binary);
        assert_eq!(frames[1].1, big);
        assert_eq!(frames[2].0.opcode, OpCode::Ping);
        assert_eq!(frames[2].1, b"p");
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let mut buf = client_frame(false, OpCode::Text, b"ab");
        buf.extend(client_frame(true, OpCode::Ping, b""));
        buf.extend(client_frame(true, OpCode::Continuation, b"cd"));
        let mut offset = 0;
        let mut seen = Vec::new();
        while let Some((head, range, used)) = decode(&mut buf[offset..], BIG).unwrap() {
            seen.push((head.fin, head.opcode, buf[offset..][range].to_vec()));
            offset += used;
        }
        assert_eq!(offset, buf.len());
        assert_eq!(
            seen,
            vec![
                (false, OpCode::Text, b"ab".to_vec()),
                (true, OpCode::Ping, Vec::new()),
                (true, OpCode::Continuation, b"cd".to_vec()),
            ]
        );
    }

    #[test]
    fn header_errors_and_their_close_codes() {
        let cases: Vec<(Vec<u8>, FrameError, u16)> = vec![
            (raw_frame(0x81 | 0x40, true, b"x"), FrameError::ReservedBits, 1002),
            (raw_frame(0x81 | 0x20, true, b"x"), FrameError::ReservedBits, 1002),
            (raw_frame(0x81 | 0x10, true, b"x"), FrameError::ReservedBits, 1002),
            (raw_frame(0x81, false, b"x"), FrameError::Unmasked, 1002),
            (raw_frame(0x89, true, &[0; 126]), FrameError::ControlTooLong, 1002),
            (raw_frame(0x09, true, b"x"), FrameError::FragmentedControl, 1002),
            (raw_frame(0x08, true, b""), FrameError::FragmentedControl, 1002),
        ];
        for (frame, want, code) in cases {
            // Two bytes are enough to prove every one of these.
            let err = decode(&mut frame[..2].to_vec(), BIG).unwrap_err();
            assert_eq!(err, want);
            assert_eq!(err.close_code(), code);
            assert_eq!(decode_owned(frame, BIG).unwrap_err(), want);
        }
        for op in (3..=7).chain(11..=15) {
            let err = decode_owned(raw_frame(0x80 | op, true, b""), BIG).unwrap_err();
            assert_eq!(err, FrameError::ReservedOpcode(op));
            assert_eq!(err.close_code(), 1002);
        }
    }

    #[test]
    fn length_with_msb_set_is_a_protocol_error() {
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
        let err = decode(&mut frame, usize::MAX).unwrap_err();
        assert_eq!(err, FrameError::BadLength);
        assert_eq!(err.close_code(), 1002);
    }

    #[test]
    fn too_large_is_reported_from_the_header_alone() {
        let frame = client_frame(true, OpCode::Binary, &payload_of(70_000));
        let err = decode(&mut frame[..10].to_vec(), 65_536).unwrap_err();
        assert_eq!(err, FrameError::TooLarge { len: 70_000, max: 65_536 });
        assert_eq!(err.close_code(), 1009);
        // 64-bit lengths are checked before the payload arrives too.
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        assert_eq!(
            decode(&mut huge, 1024).unwrap_err(),
            FrameError::TooLarge { len: u64::MAX >> 1, max: 1024 }
        );
        // Exactly at the bound is fine.
        assert!(decode_owned(client_frame(true, OpCode::Binary, &[1; 16]), 16).unwrap().is_some());
    }

    #[test]
    fn peek_total_len_waits_for_the_extended_length() {
        let frame = client_frame(true, OpCode::Binary, &payload_of(65536));
        assert_eq!(peek_total_len(&frame[..1]), None);
        assert_eq!(peek_total_len(&frame[..9]), None);
        assert_eq!(peek_total_len(&frame[..10]), Some(14 + 65536));
        let small = client_frame(true, OpCode::Text, b"abc");
        assert_eq!(peek_total_len(&small[..2]), Some(9));
    }

    #[test]
    fn close_payload_validation() {
        assert_eq!(parse_close(b""), Ok(None));
        assert_eq!(parse_close(&[3]), Err(FrameError::BadClosePayload));
        assert_eq!(FrameError::BadClosePayload.close_code(), 1002);
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999,
        ] {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice("bye ✓".as_bytes());
            assert_eq!(parse_close(&payload), Ok(Some((code, "bye ✓"))), "code {code}");
        }
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            let err = parse_close(&code.to_be_bytes()).unwrap_err();
            assert_eq!(err, FrameError::InvalidCloseCode(code));
            assert_eq!(err.close_code(), 1002);
        }
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.extend_from_slice(&[0xce, 0xba, 0xed, 0xa0, 0x80]);
        let err = parse_close(&bad_reason).unwrap_err();
        assert_eq!(err, FrameError::InvalidUtf8);
        assert_eq!(err.close_code(), 1007);
    }

    #[test]
    fn close_frame_truncates_on_a_char_boundary() {
        let frame = close_frame(1000, "done");
        assert_eq!(frame, [0x88, 6, 0x03, 0xe8, b'd', b'o', b'n', b'e']);
        let long = "é".repeat(100);
        let frame = close_frame(1001, &long);
        let payload = &frame[2..];
        assert_eq!(usize::from(frame[1]), payload.len());
        assert!(payload.len() <= 125);
        assert_eq!(payload.len(), 2 + 122, "123 bytes would split a two-byte char");
        let (code, reason) = parse_close(payload).unwrap().unwrap();
        assert_eq!(code, 1001);
        assert_eq!(reason, "é".repeat(61));
    }

    #[test]
    fn encode_round_trips_every_length_form() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload = payload_of(len);
            let frame = encode(OpCode::Binary, &payload);
            assert_eq!(frame.len(), frame.capacity(), "exact capacity for {len}");
            assert_eq!(frame[0], 0x82);
            assert_eq!(frame[1] & 0x80, 0, "server frames are unmasked");
            assert_eq!(peek_total_len(&frame), Some(frame.len() as u64));
            // Mask it the way a client would, then decode it back.
            let header = frame.len() - len;
            let mut masked = frame[..header].to_vec();
            masked[1] |= 0x80;
            masked.extend_from_slice(&MASK);
            let mut body = payload.clone();
            apply_mask(&mut body, MASK);
            masked.extend(body);
            let (head, got, used) = decode_owned(masked.clone(), BIG).unwrap().unwrap();
            assert_eq!(head, FrameHead { fin: true, opcode: OpCode::Binary, payload_len: len });
            assert_eq!(got, payload);
            assert_eq!(used, masked.len());
        }
        let mut header = Vec::new();
        encode_header(OpCode::Text, 300, &mut header);
        assert_eq!(header, [0x81, 126, 0x01, 0x2c]);
    }

    #[test]
    fn apply_mask_matches_the_bytewise_definition() {
        for len in 0..40 {
            let original = payload_of(len);
            let mut fast = original.clone();
            apply_mask(&mut fast, MASK);
            let slow: Vec<u8> = original.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]).collect();
            assert_eq!(fast, slow, "len {len}");
            apply_mask(&mut fast, MASK);
            assert_eq!(fast, original);
        }
    }

    fn head(fin: bool, opcode: OpCode, payload: &[u8]) -> FrameHead {
        FrameHead { fin, opcode, payload_len: payload.len() }
    }

    fn feed<'a>(
        state: &mut Option<Box<Reassembly>>,
        fin: bool,
        opcode: OpCode,
        payload: &'a [u8],
    ) -> Result<Option<Incoming<'a>>, FrameError> {
        on_frame(state, &head(fin, opcode, payload), payload, 1024)
    }

    #[test]
    fn single_frame_messages_borrow_the_payload() {
        let mut state = None;
        let msg = feed(&mut state, true, OpCode::Text, "héllo".as_bytes()).unwrap().unwrap();
        assert!(matches!(msg, Incoming::Text(Cow::Borrowed("héllo"))));
        let msg = feed(&mut state, true, OpCode::Binary, &[1, 2]).unwrap().unwrap();
        assert!(matches!(msg, Incoming::Binary(Cow::Borrowed([1, 2]))));
        assert_eq!(feed(&mut state, true, OpCode::Ping, b"hb"), Ok(Some(Incoming::Ping(b"hb"))));
        assert_eq!(feed(&mut state, true, OpCode::Pong, b"x"), Ok(Some(Incoming::Pong)));
        assert_eq!(
            feed(&mut state, true, OpCode::Close, &[0x03, 0xe8, b'o', b'k']),
            Ok(Some(Incoming::Close(Some((1000, "ok")))))
        );
        assert_eq!(feed(&mut state, true, OpCode::Close, b""), Ok(Some(Incoming::Close(None))));
        assert!(state.is_none());
    }

    #[test]
    fn invalid_utf8_in_a_single_text_frame() {
        let err = feed(&mut None, true, OpCode::Text, &[b'a', 0xff]).unwrap_err();
        assert_eq!(err, FrameError::InvalidUtf8);
        assert_eq!(err.close_code(), 1007);
    }

    #[test]
    fn fragments_with_an_interleaved_ping() {
        let mut state = None;
        assert_eq!(feed(&mut state, false, OpCode::Text, b"Hel"), Ok(None));
        assert!(state.is_some());
        assert_eq!(feed(&mut state, true, OpCode::Ping, b"p"), Ok(Some(Incoming::Ping(b"p"))));
        assert_eq!(feed(&mut state, false, OpCode::Continuation, b"lo, "), Ok(None));
        let msg = feed(&mut state, true, OpCode::Continuation, b"world").unwrap().unwrap();
        assert_eq!(msg, Incoming::Text(Cow::Owned("Hello, world".to_owned())));
        assert!(state.is_none(), "a finished message releases its buffer");

        assert_eq!(feed(&mut state, false, OpCode::Binary, &[1]), Ok(None));
        assert_eq!(feed(&mut state, false, OpCode::Continuation, &[]), Ok(None));
        let msg = feed(&mut state, true, OpCode::Continuation, &[2, 3]).unwrap().unwrap();
        assert_eq!(msg, Incoming::Binary(Cow::Owned(vec![1, 2, 3])));
    }

    #[test]
    fn multibyte_char_split_across_fragments_is_valid() {
        let text = "κόσμε".as_bytes();
        let mut state = None;
        for (i, byte) in text.iter().enumerate() {
            let last = i + 1 == text.len();
            let opcode = if i == 0 { OpCode::Text } else { OpCode::Continuation };
            let got = feed(&mut state, last, opcode, std::slice::from_ref(byte)).unwrap();
            assert_eq!(got.is_some(), last);
            if last {
                assert_eq!(got, Some(Incoming::Text(Cow::Owned("κόσμε".to_owned()))));
            }
        }
    }

    #[test]
    fn utf8_fails_fast_across_fragments() {
        // `ED A0 80` encodes a surrogate: `ED` alone could still be valid, `ED A0` never can.
        let mut state = None;
        assert_eq!(feed(&mut state, false, OpCode::Text, &[0xce, 0xba, 0xed]), Ok(None));
        let err = feed(&mut state, false, OpCode::Continuation, &[0xa0]).unwrap_err();
        assert_eq!(err, FrameError::InvalidUtf8);
        assert_eq!(err.close_code(), 1007);
        // A bad byte in the first fragment fails before the message ends.
        assert_eq!(feed(&mut None, false, OpCode::Text, &[b'a', 0xc0]), Err(FrameError::InvalidUtf8));
        // A truncated sequence is only an error once the message is complete.
        let mut state = None;
        assert_eq!(feed(&mut state, false, OpCode::Text, &[b'a', 0xe2, 0x82]), Ok(None));
        assert_eq!(feed(&mut state, true, OpCode::Continuation, &[]), Err(FrameError::InvalidUtf8));
        // Binary messages are not checked.
        let mut state = None;
        assert_eq!(feed(&mut state, false, OpCode::Binary, &[0xff]), Ok(None));
        assert!(feed(&mut state, true, OpCode::Continuation, &[0xfe]).unwrap().is_some());
    }

    #[test]
    fn reassembly_debug_shows_size_not_bytes() {
        let mut state = None;
        feed(&mut state, false, OpCode::Binary, &[7; 300]).unwrap();
        let shown = format!("{:?}", state.unwrap());
        assert!(shown.contains("len: 300"), "{shown}");
        assert!(!shown.contains('7'), "{shown}");
    }

    #[test]
    fn continuation_errors() {
        let err = feed(&mut None, true, OpCode::Continuation, b"x").unwrap_err();
        assert_eq!(err, FrameError::UnexpectedContinuation);
        assert_eq!(err.close_code(), 1002);
        let mut state = None;
        feed(&mut state, false, OpCode::Text, b"a").unwrap();
        let err = feed(&mut state, true, OpCode::Text, b"b").unwrap_err();
        assert_eq!(err, FrameError::ExpectedContinuation);
        assert_eq!(err.close_code(), 1002);
    }

    #[test]
    fn reassembled_size_is_bounded() {
        let mut state = None;
        let chunk = [b'a'; 400];
        assert_eq!(feed(&mut state, false, OpCode::Text, &chunk), Ok(None));
        assert_eq!(feed(&mut state, false, OpCode::Continuation, &chunk), Ok(None));
        let err = feed(&mut state, true, OpCode::Continuation, &chunk).unwrap_err();
        assert_eq!(err, FrameError::MessageTooLarge { max: 1024 });
        assert_eq!(err.close_code(), 1009);
        // Exactly at the bound is accepted.
        let mut state = None;
        feed(&mut state, false, OpCode::Binary, &[0; 1000]).unwrap();
        assert!(feed(&mut state, true, OpCode::Continuation, &[0; 24]).unwrap().is_some());
        // A single frame above the message bound is refused as well.
        let err = feed(&mut None, true, OpCode::Binary, &[0; 1025]).unwrap_err();
        assert_eq!(err, FrameError::MessageTooLarge { max: 1024 });
    }

    #[test]
    fn invalid_close_inside_a_fragmented_message() {
        let mut state = None;
        feed(&mut state, false, OpCode::Text, b"a").unwrap();
        let err = feed(&mut state, true, OpCode::Close, &1005u16.to_be_bytes()).unwrap_err();
        assert_eq!(err, FrameError::InvalidCloseCode(1005));
    }
}
