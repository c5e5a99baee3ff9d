//! The HTTP upgrade, WebSocket frames, Phoenix V2 messages and the shootout protocol.

use std::borrow::Cow;
use std::sync::OnceLock;

use crate::config::Config;
use crate::http::{self, Route};
use crate::metrics::{Registry, WorkerStats};
use crate::topics::shootout::{self, Action};
use crate::wire::frame::{self, FrameError, Incoming, OpCode, Reassembly};
use crate::wire::handshake::{self, HttpError};
use crate::wire::phoenix::{self as pwire, Inbound, Payload};

/// The configuration and metrics registry `/metrics` and routing read; made once per process.
fn http_env() -> &'static (Config, Registry) {
    static ENV: OnceLock<(Config, Registry)> = OnceLock::new();
    ENV.get_or_init(|| {
        let (store, _thread) = crate::store::spawn(
            Box::new(crate::store::testing::Scripted::default()),
            16,
            Box::new(|_, _| {}),
        );
        let registry = Registry { workers: vec![WorkerStats::default()].into(), store, cluster: None };
        (super::default_config(), registry)
    })
}

/// A request head as the handshake stage reads it, then routed as the worker routes it.
///
/// Checks: a complete request never claims more bytes than it was given or than the bound, and
/// parses the same from exactly those bytes; an incomplete one is still under the bound; every
/// refusal maps to a 4xx status; every response is a well-formed HTTP/1.1 response whose
/// `Content-Length` is its body's length.
pub fn http_request(data: &[u8]) {
    let (cfg, registry) = http_env();
    let max = cfg.max_request_bytes;
    match handshake::parse_request(data, max) {
        Ok(None) => assert!(data.len() < max, "incomplete request at {} bytes, bound {max}", data.len()),
        Err(e) => {
            assert!(matches!(e.status(), 400 | 411 | 413 | 431), "{e:?}");
            if data.len() < max {
                // The same bytes plus more can only fail too (or the error was a size bound).
                let mut longer = data.to_vec();
                longer.extend_from_slice(b"\r\n\r\n");
                let again = handshake::parse_request(&longer, max);
                assert!(
                    again.is_err() || matches!(e, HttpError::TooLarge | HttpError::BodyTooLarge),
                    "{e:?}, then {again:?}"
                );
            }
        }
        Ok(Some((req, used))) => {
            assert!(used <= data.len() && used <= max, "used {used} of {} (bound {max})", data.len());
            let again = handshake::parse_request(&data[..used], max);
            assert_eq!(again, Ok(Some((req.clone(), used))), "the request parses alone");
            if handshake::validate_upgrade(&req).is_ok() {
                assert!(req.upgrade_websocket && req.method == "GET");
            }
            let route = http::route(&req, cfg, registry, || "anon-fuzz".to_owned());
            check_route(&req, route);
        }
    }
}

fn check_route(req: &handshake::Request, route: Route) {
    let response = match route {
        Route::Respond(bytes) => bytes,
        Route::Phoenix { response, .. }
        | Route::Echo { response }
        | Route::Shootout { response }
        | Route::Collab { response, .. } => {
            assert!(response.starts_with(b"HTTP/1.1 101 "), "an upgrade answers 101");
            response
        }
        Route::CollabText { doc, .. } => {
            assert!(crate::topics::collab::valid_doc_name(&doc), "document name {doc:?}");
            return;
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(&response) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("malformed response {other:?}: {:?}", String::from_utf8_lossy(&response)),
    };
    let code = parsed.code.expect("a status code");
    if code == 101 {
        return;
    }
    let length = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
        .expect("every plain response has a Content-Length");
    // A HEAD response announces the body a GET would get without sending it.
    if req.method != "HEAD" {
        assert_eq!(length, response.len() - head_len, "Content-Length matches the body");
    }
}

/// One message (or error) at the message layer, owned so two runs can be compared.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<(u16, String)>),
    Error(FrameError),
}

/// The bytes a connection receives, first as one read, then one byte per read.
///
/// The first two input bytes choose the frame and message bounds (small, so that they are hit), the
/// rest is the stream. Checks: both ways of reading yield the same messages and errors (nothing is
/// consumed or unmasked by an incomplete decode); a decoded frame's header and payload fit the
/// buffer, the frame bound and [`frame::peek_total_len`]; a fragmented message never buffers more
/// than the message bound; a reassembled message is exactly its fragments' payloads, and a text
/// refused as UTF-8 is not valid UTF-8; pings, closes and messages survive the server's encoding.
pub fn ws_frames(data: &[u8]) {
    let [a, b, stream @ ..] = data else { return };
    let max_payload = 1 + usize::from(*a) * 4;
    let max_message = max_payload + usize::from(*b) * 8;
    let whole = read_frames(stream, stream.len().max(1), max_payload, max_message);
    let bytewise = read_frames(stream, 1, max_payload, max_message);
    assert_eq!(whole, bytewise, "one read and byte-by-byte reads disagree");
    for event in &whole {
        check_event(event);
    }
}

/// Feeds `stream` in reads of `step` bytes to the decoder and reassembler, as the worker does.
fn read_frames(stream: &[u8], step: usize, max_payload: usize, max_message: usize) -> Vec<Event> {
    let mut events = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut state: Option<Box<Reassembly>> = None;
    // The payloads of the open fragmented message: the model the reassembler is checked against.
    let mut fragments: Option<(OpCode, Vec<u8>)> = None;
    for chunk in stream.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            let peeked = frame::peek_total_len(&buf);
            let (head, range, used) = match frame::decode(&mut buf, max_payload) {
                Ok(None) => break,
                Ok(Some(f)) => f,
                Err(e) => {
                    events.push(Event::Error(e));
                    return events;
                }
            };
            assert_eq!(range.end, used);
            assert!(used <= buf.len());
            assert_eq!(peeked, Some(used as u64), "peek_total_len agrees with decode");
            assert_eq!(head.payload_len, range.len());
            assert!(head.payload_len <= max_payload);
            let payload = buf[range].to_vec();
            let result = frame::on_frame(&mut state, &head, &payload, max_message);
            let event = match result {
                Err(e) => {
                    if e == FrameError::InvalidUtf8 && !head.opcode.is_control() {
                        let mut text = fragments.take().map(|(_, d)| d).unwrap_or_default();
                        text.extend_from_slice(&payload);
                        assert!(std::str::from_utf8(&text).is_err(), "valid UTF-8 refused");
                    }
                    events.push(Event::Error(e));
                    return events;
                }
                Ok(None) => {
                    let open = fragments.get_or_insert_with(|| (head.opcode, Vec::new()));
                    open.1.extend_from_slice(&payload);
                    assert!(open.1.len() <= max_message, "reassembly past the message bound");
                    assert!(state.is_some(), "a buffered fragment leaves a message open");
                    None
                }
                Ok(Some(msg)) => Some(owned(msg, &head, &payload, &mut fragments)),
            };
            buf.drain(..used);
            if let Some(event) = event {
                events.push(event);
            }
        }
    }
    events
}

/// The message as an [`Event`], checked against the fragments it was made of.
fn owned(
    msg: Incoming<'_>,
    head: &frame::FrameHead,
    payload: &[u8],
    fragments: &mut Option<(OpCode, Vec<u8>)>,
) -> Event {
    if head.opcode.is_control() {
        return match msg {
            Incoming::Ping(p) => Event::Ping(p.to_vec()),
            Incoming::Pong => Event::Pong,
            Incoming::Close(c) => Event::Close(c.map(|(code, why)| (code, why.to_owned()))),
            other => panic!("control frame {:?} gave {other:?}", head.opcode),
        };
    }
    let (opcode, mut data) = fragments.take().unwrap_or((head.opcode, Vec::new()));
    data.extend_from_slice(payload);
    match msg {
        Incoming::Text(t) => {
            assert_eq!(opcode, OpCode::Text);
            assert_eq!(t.as_bytes(), &data[..], "text is its fragments' payloads");
            Event::Text(t.into_owned())
        }
        Incoming::Binary(b) => {
            assert_eq!(opcode, OpCode::Binary);
            assert_eq!(&b[..], &data[..], "binary is its fragments' payloads");
            Event::Binary(b.into_owned())
        }
        other => panic!("data frame gave {other:?}"),
    }
}

fn check_event(event: &Event) {
    let echoed = |opcode, payload: &[u8]| {
        let encoded = frame::encode(opcode, payload);
        assert_eq!(frame::payload_of(&encoded), Some(payload), "server frame round trip");
    };
    match event {
        Event::Text(t) => echoed(OpCode::Text, t.as_bytes()),
        Event::Binary(b) | Event::Ping(b) => echoed(OpCode::Binary, b),
        Event::Close(Some((code, reason))) => {
            let close = frame::close_frame(*code, reason);
            let payload = frame::payload_of(&close).expect("a whole frame");
            assert_eq!(frame::parse_close(payload), Ok(Some((*code, reason.as_str()))), "close round trip");
        }
        Event::Close(None) | Event::Pong => {}
        Event::Error(e) => assert!(matches!(e.close_code(), 1002 | 1007 | 1009)),
    }
}

/// A text frame as a Phoenix V2 message.
///
/// Checks: what parses encodes back (with [`pwire::encode`]) to text that parses to the same
/// message, and a reply to it parses as a `phx_reply`.
pub fn phoenix_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(msg) = pwire::parse_text(text) else { return };
    let Payload::Json(payload) = msg.payload else { panic!("text gave a binary payload") };
    assert!(payload.get().starts_with('{'));
    let encoded =
        pwire::encode(msg.join_ref.as_deref(), msg.msg_ref.as_deref(), &msg.topic, &msg.event, payload.get());
    let again = pwire::parse_text(&encoded).expect("an encoded message parses");
    assert_same(&msg, &again);
    let reply =
        pwire::encode_reply(msg.join_ref.as_deref(), msg.msg_ref.as_deref(), &msg.topic, "ok", payload.get());
    let reply = pwire::parse_text(&reply).expect("a reply parses");
    assert_eq!(reply.event, "phx_reply");
    assert_eq!((reply.join_ref, reply.msg_ref, reply.topic), (msg.join_ref, msg.msg_ref, msg.topic));
}

fn assert_same(a: &Inbound<'_>, b: &Inbound<'_>) {
    assert_eq!((&a.join_ref, &a.msg_ref, &a.topic, &a.event), (&b.join_ref, &b.msg_ref, &b.topic, &b.event));
    match (a.payload, b.payload) {
        (Payload::Json(x), Payload::Json(y)) => assert_eq!(x.get(), y.get()),
        (Payload::Binary(x), Payload::Binary(y)) => assert_eq!(x, y),
        _ => panic!("payload kinds differ"),
    }
}

/// A binary frame as a Phoenix V2 client push.
///
/// Checks: the refs come back as JSON strings of the bytes sent, and the fields re-encoded in the
/// client's layout parse to the same message; the server's own binary layouts take the same
/// fields.
pub fn phoenix_binary(data: &[u8]) {
    let Ok(msg) = pwire::parse_binary(data) else { return };
    let Payload::Binary(payload) = msg.payload else { panic!("binary gave a JSON payload") };
    let plain = |r: &Option<Cow<'_, str>>| {
        pwire::ref_as_plain(r.as_deref().expect("binary refs are strings")).into_owned()
    };
    let (join_ref, msg_ref) = (plain(&msg.join_ref), plain(&msg.msg_ref));
    let fields = [join_ref.as_str(), msg_ref.as_str(), &msg.topic, &msg.event];
    let mut client = vec![0u8];
    for f in fields {
        client.push(u8::try_from(f.len()).expect("a field read from one length byte fits one"));
    }
    for f in fields {
        client.extend_from_slice(f.as_bytes());
    }
    client.extend_from_slice(payload);
    assert_eq!(client, data, "the refs decode to the bytes sent");
    let again = pwire::parse_binary(&client).expect("re-encoded push parses");
    assert_same(&msg, &again);
    let reply = pwire::encode_binary_reply(&join_ref, &msg_ref, &msg.topic, &msg.event, payload)
        .expect("fields of at most 255 bytes fit");
    assert_eq!(reply[0], 1);
    assert_eq!(&reply[5..], &client[5..], "a reply lays out the same fields");
    let push = pwire::encode_binary_push(&join_ref, &msg.topic, &msg.event, payload).expect("fits");
    assert_eq!(push.len(), client.len() - 1 - msg_ref.len());
    let broadcast = pwire::encode_binary_broadcast(&msg.topic, &msg.event, payload).expect("fits");
    assert!(broadcast.ends_with(payload));
}

/// A text frame on `/shootout`.
///
/// Checks: an accepted message is answered with JSON the same handler accepts again, carrying the
/// same payload.
pub fn shootout(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(action) = shootout::handle(text) else { return };
    let replies = match &action {
        Action::Echo(reply) => vec![reply.as_str()],
        Action::Broadcast { to_all, result } => vec![to_all.as_str(), result.as_str()],
    };
    for reply in replies {
        let value: serde_json::Value = serde_json::from_str(reply).expect("a reply is JSON");
        assert!(value.get("type").is_some_and(serde_json::Value::is_string));
    }
    if let Action::Echo(reply) = &action {
        assert_eq!(shootout::handle(reply), Ok(Action::Echo(reply.clone())), "an echo echoes the same");
    }
}
