//! The client side of WebSocket: the upgrade request, masked frames out, unmasked frames in.

use rusher_server::wire::frame::apply_mask;

/// Opcodes the load generator sends or reads.
pub const TEXT: u8 = 1;
pub const BINARY: u8 = 2;
pub const CLOSE: u8 = 8;
pub const PING: u8 = 9;
pub const PONG: u8 = 10;

/// The HTTP upgrade request for `path` on `host`.
pub fn upgrade_request(host: &str, path: &str) -> Vec<u8> {
    // The key only has to be 16 base64-encoded bytes; servers echo its hash, nothing more.
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: cnVzaGVyLWxvYWRnZW4tMQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Why an upgrade failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpgradeError {
    /// The server answered with another status.
    #[error("HTTP {0}")]
    Status(u16),
    /// Not an HTTP response, or too long.
    #[error("malformed response")]
    Malformed,
}

/// Look for the end of the upgrade response in `buf`: `Ok(Some(len))` once a complete 101 arrived.
pub fn parse_upgrade_response(buf: &[u8]) -> Result<Option<usize>, UpgradeError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > 8192 { Err(UpgradeError::Malformed) } else { Ok(None) };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| UpgradeError::Malformed)?;
    let status: u16 = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or(UpgradeError::Malformed)?;
    if status != 101 {
        return Err(UpgradeError::Status(status));
    }
    Ok(Some(end + 4))
}

/// Append one masked, final frame. The mask only has to be unpredictable to intermediaries, which a
/// loopback benchmark has none of; a cheap counter-derived key keeps clients honest (RFC 6455 §5.3).
pub fn encode_masked(opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65_536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// The next masking key from a xorshift32 `state`, which must start non-zero (it then never becomes
/// zero): cheap, and as unpredictable as a client no intermediary watches needs.
pub fn next_mask(state: &mut u32) -> [u8; 4] {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    state.to_ne_bytes()
}

/// A frame read from the server.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerFrame {
    pub opcode: u8,
    pub fin: bool,
    /// Payload position within the buffer given to [`decode`].
    pub payload: std::ops::Range<usize>,
}

/// Why a server frame was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Servers must not mask.
    #[error("masked server frame")]
    Masked,
    /// Longer than the limit.
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(u64),
}

/// Decode one server frame from the front of `buf`: the frame and the bytes it used, or None while
/// incomplete.
pub fn decode(buf: &[u8], max: usize) -> Result<Option<(ServerFrame, usize)>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let (len, header) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            (u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")), 10)
        }
        n => (u64::from(n), 2),
    };
    if len > max as u64 {
        return Err(FrameError::TooLarge(len));
    }
    let total = header + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let frame = ServerFrame { opcode: buf[0] & 0x0f, fin: buf[0] & 0x80 != 0, payload: header..total };
    Ok(Some((frame, total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusher_server::wire::frame::{self as server_frame, OpCode};

    #[test]
    fn masked_frames_decode_on_the_server_side() {
        for len in [0, 5, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            encode_masked(TEXT, &payload, [1, 2, 3, 4], &mut out);
            let (head, range, used) = server_frame::decode(&mut out, 1 << 20).unwrap().unwrap();
            assert_eq!(head.opcode, OpCode::Text);
            assert_eq!(used, out.len());
            assert_eq!(&out[range], &payload[..]);
        }
    }

    #[test]
    fn server_frames_decode_whole_and_in_pieces() {
        let f = server_frame::encode(OpCode::Binary, &[7u8; 300]);
        for cut in 0..f.len() {
            assert_eq!(decode(&f[..cut], 1024).unwrap(), None, "cut at {cut}");
        }
        let (frame, used) = decode(&f, 1024).unwrap().unwrap();
        assert_eq!((frame.opcode, frame.fin, used), (BINARY, true, f.len()));
        assert_eq!(&f[frame.payload], &[7u8; 300][..]);
        assert_eq!(decode(&f, 100), Err(FrameError::TooLarge(300)));
    }

    #[test]
    fn upgrade_responses() {
        assert_eq!(parse_upgrade_response(b"HTTP/1.1 101 Switching"), Ok(None));
        assert_eq!(
            parse_upgrade_response(b"HTTP/1.1 101 Switching Protocols\r\nA: b\r\n\r\nxx"),
            Ok(Some(42))
        );
        assert_eq!(parse_upgrade_response(b"HTTP/1.1 403 Forbidden\r\n\r\n"), Err(UpgradeError::Status(403)));
        assert_eq!(parse_upgrade_response(b"SSH-2.0\r\n\r\n"), Err(UpgradeError::Malformed));
    }
}
