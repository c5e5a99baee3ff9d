//! Fence setup before a geo run: the coordinator (and nothing else, so a fleet creates each fence
//! once) opens one plain blocking WebSocket connection per target, joins the tenant and creates the
//! fences with `fence_create`, a window of pushes in flight, waiting for every reply.
//!
//! A fence refused by `fence_create` (its id is taken, say, by an earlier run against the same
//! server) is sent again as `fence_update`, which replaces it; a fence refused by both fails the setup.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::walk::{self, Bbox};
use crate::phoenix::{self, Reply};
use crate::plan::{Plan, Scenario};
use crate::ws;

/// Fences in flight at once: enough to keep the server busy, few enough that neither side's socket
/// buffers fill while the other is not reading.
const WINDOW: u64 = 256;
/// Largest server frame accepted: a join reply may describe what the tenant already holds.
const MAX_FRAME: usize = 64 << 20;
/// Reasons listed in the error when fences are refused.
const REASONS_SHOWN: usize = 5;

/// What the setup did, for the summary and SETUP.md.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FenceSetup {
    /// Servers the fences were created on (each holds its own tenant).
    pub targets: u64,
    /// Fences per target.
    pub fences: u64,
    /// Created by `fence_create`, over all targets.
    pub created: u64,
    /// Already there, replaced by `fence_update`.
    pub replaced: u64,
    /// From the first connect to the last reply.
    pub seconds: f64,
}

/// Why the setup failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Connecting, reading or writing failed.
    #[error("fence setup on {target}: {source}")]
    Io { target: SocketAddr, source: io::Error },
    /// The server did not upgrade the connection.
    #[error("fence setup on {target}: upgrade failed: {source}")]
    Upgrade { target: SocketAddr, source: ws::UpgradeError },
    /// The server refused the join.
    #[error("fence setup on {target}: joining {topic} was refused: {reason}")]
    JoinRefused { target: SocketAddr, topic: String, reason: String },
    /// Nothing arrived for the step timeout, or the run's time was up.
    #[error("fence setup on {target}: no reply within {seconds} s while {doing}")]
    Timeout { target: SocketAddr, seconds: u64, doing: &'static str },
    /// The server closed the connection.
    #[error("fence setup on {target}: the server closed the connection while {doing}")]
    Closed { target: SocketAddr, doing: &'static str },
    /// A frame or message that is not the protocol.
    #[error("fence setup on {target}: {detail}")]
    Protocol { target: SocketAddr, detail: String },
    /// Some fences could be neither created nor replaced.
    #[error("fence setup on {target}: {refused} of {fences} fences refused ({reasons})")]
    Refused { target: SocketAddr, refused: u64, fences: u64, reasons: String },
}

/// Create the fences of a geo plan on each of its targets. `deadline` bounds the whole setup; each
/// reply may take at most the plan's step timeout.
pub fn create_fences(plan: &Plan, deadline: Instant) -> Result<FenceSetup, SetupError> {
    let started = Instant::now();
    let Scenario::Geo { tenant, fences, seed, bbox, .. } = &plan.scenario else {
        return Ok(FenceSetup::default());
    };
    let mut targets = plan.targets.clone();
    targets.sort_unstable();
    targets.dedup();
    let job = Job {
        path: &plan.path,
        topic: super::topic(tenant),
        fences: *fences,
        seed: *seed,
        area: *bbox,
        step: Duration::from_secs(plan.step_timeout_s.max(1)),
        deadline,
    };
    let mut out = FenceSetup { targets: targets.len() as u64, fences: *fences, ..FenceSetup::default() };
    for target in targets {
        job.run(target, &mut out)?;
    }
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

struct Job<'a> {
    path: &'a str,
    topic: String,
    fences: u64,
    seed: u64,
    area: Bbox,
    step: Duration,
    deadline: Instant,
}

impl Job<'_> {
    fn run(&self, target: SocketAddr, out: &mut FenceSetup) -> Result<(), SetupError> {
        let mut conn = Conn::open(target, self.path, self.step, self.until())?;
        let topic = phoenix::json_str(&self.topic);
        conn.send(&format!(r#"["1","1",{topic},"phx_join",{{}}]"#))?;
        loop {
            let text = conn.read_text(self.until(), "joining")?;
            let msg = conn.parse(&text)?;
            if msg.event == "phx_reply" && msg.reference == Some("1") {
                match phoenix::reply(msg.payload.get()) {
                    Reply::Error(reason) => {
                        return Err(SetupError::JoinRefused { target, topic: self.topic.clone(), reason })
                    }
                    Reply::Ok | Reply::OutOfOrder => break,
                }
            }
        }

        let (mut next, mut in_flight, mut done) = (0u64, 0u64, 0u64);
        // Fences sent again as updates, with the reason their creation was refused.
        let mut retried: HashMap<u64, String> = HashMap::new();
        let mut refused: BTreeMap<String, u64> = BTreeMap::new();
        while done < self.fences {
            while in_flight < WINDOW && next < self.fences {
                let fence = walk::fence_payload(next, self.seed, &self.area);
                conn.send(&format!(r#"["1","c{next}",{topic},"fence_create",{fence}]"#))?;
                next += 1;
                in_flight += 1;
            }
            let text = conn.read_text(self.until(), "creating fences")?;
            let msg = conn.parse(&text)?;
            let Some((kind, i)) = msg.reference.filter(|_| msg.event == "phx_reply").and_then(fence_ref)
            else {
                continue;
            };
            match (kind, phoenix::reply(msg.payload.get())) {
                (Op::Create, Reply::Error(reason)) => {
                    let fence = walk::fence_payload(i, self.seed, &self.area);
                    conn.send(&format!(r#"["1","u{i}",{topic},"fence_update",{fence}]"#))?;
                    retried.insert(i, reason);
                    continue;
                }
                (Op::Create, _) => out.created += 1,
                (Op::Update, Reply::Error(_)) => {
                    let reason = retried.remove(&i).unwrap_or_default();
                    *refused.entry(reason).or_default() += 1;
                }
                (Op::Update, _) => {
                    retried.remove(&i);
                    out.replaced += 1;
                }
            }
            in_flight -= 1;
            done += 1;
        }
        conn.close();
        if refused.is_empty() {
            return Ok(());
        }
        let mut reasons: Vec<(String, u64)> = refused.into_iter().collect();
        reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let refused = reasons.iter().map(|(_, n)| n).sum();
        let shown: Vec<String> =
            reasons.iter().take(REASONS_SHOWN).map(|(r, n)| format!("{n} × {r:?}")).collect();
        Err(SetupError::Refused { target, refused, fences: self.fences, reasons: shown.join(", ") })
    }

    /// When the current wait ends: a step's time from now, within the setup's deadline.
    fn until(&self) -> Instant {
        self.deadline.min(Instant::now() + self.step)
    }
}

/// What a fence push's ref says: `c<i>` creates fence `i`, `u<i>` updates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Update,
}

fn fence_ref(r: &str) -> Option<(Op, u64)> {
    let op = match r.as_bytes().first()? {
        b'c' => Op::Create,
        b'u' => Op::Update,
        _ => return None,
    };
    Some((op, r[1..].parse().ok()?))
}

/// A blocking client connection: frames in `buf` until read.
struct Conn {
    target: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
    mask: u32,
    /// How long one wait may take, for the timeout message.
    step: Duration,
}

impl Conn {
    fn open(target: SocketAddr, path: &str, step: Duration, until: Instant) -> Result<Conn, SetupError> {
        let io = |source| SetupError::Io { target, source };
        let timeout = until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let stream = TcpStream::connect_timeout(&target, timeout).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let mut conn = Conn { target, stream, buf: Vec::new(), mask: 0x2545_f491, step };
        conn.stream.write_all(&ws::upgrade_request(&target.to_string(), path)).map_err(io)?;
        loop {
            match ws::parse_upgrade_response(&conn.buf) {
                Ok(Some(n)) => {
                    conn.buf.drain(..n);
                    return Ok(conn);
                }
                Ok(None) => conn.fill(until, "upgrading")?,
                Err(source) => return Err(SetupError::Upgrade { target, source }),
            }
        }
    }

    fn send(&mut self, text: &str) -> Result<(), SetupError> {
        self.frame(ws::TEXT, text.as_bytes())
    }

    fn frame(&mut self, opcode: u8, payload: &[u8]) -> Result<(), SetupError> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        ws::encode_masked(opcode, payload, ws::next_mask(&mut self.mask), &mut frame);
        self.stream.write_all(&frame).map_err(|source| SetupError::Io { target: self.target, source })
    }

    /// The next text message, answering pings on the way.
    fn read_text(&mut self, until: Instant, doing: &'static str) -> Result<String, SetupError> {
        loop {
            let decoded = ws::decode(&self.buf, MAX_FRAME).map_err(|e| self.protocol(e.to_string()))?;
            let Some((frame, used)) = decoded else {
                self.fill(until, doing)?;
                continue;
            };
            let payload = self.buf[frame.payload.clone()].to_vec();
            self.buf.drain(..used);
            match frame.opcode {
                ws::TEXT => {
                    return String::from_utf8(payload).map_err(|_| self.protocol("a text frame is not UTF-8"))
                }
                ws::PING => self.frame(ws::PONG, &payload)?,
                ws::CLOSE => return Err(SetupError::Closed { target: self.target, doing }),
                _ => {}
            }
        }
    }

    fn parse<'t>(&self, text: &'t str) -> Result<phoenix::Incoming<'t>, SetupError> {
        phoenix::parse(text).ok_or_else(|| self.protocol(format!("not a Phoenix V2 message: {text:.200}")))
    }

    /// Read what arrives before `until` into the buffer.
    fn fill(&mut self, until: Instant, doing: &'static str) -> Result<(), SetupError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let seconds = self.step.as_secs();
                return Err(SetupError::Timeout { target: self.target, seconds, doing });
            }
            let io = |source| SetupError::Io { target: self.target, source };
            self.stream.set_read_timeout(Some(left)).map_err(io)?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(SetupError::Closed { target: self.target, doing }),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(source) => return Err(SetupError::Io { target: self.target, source }),
            }
        }
    }

    fn protocol(&self, detail: impl Into<String>) -> SetupError {
        SetupError::Protocol { target: self.target, detail: detail.into() }
    }

    /// Say goodbye; the run goes on whether or not the server hears it.
    fn close(mut self) {
        let _ = self.frame(ws::CLOSE, &1000u16.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusher_server::wire::frame::{self as server_frame, OpCode};
    use std::net::TcpListener;

    /// A server speaking just enough of the geo channel: it answers the join with `join`, and each
    /// fence push with what `answer(event, fence number)` says (`None`: never).
    fn fake_server(
        join: &'static str,
        answer: fn(&str, u64) -> Option<&'static str>,
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut chunk).unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.clear();
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n").unwrap();
            let mut seen = Vec::new();
            loop {
                match server_frame::decode(&mut buf, 1 << 20).unwrap() {
                    None => match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return seen,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    },
                    Some((head, range, used)) => {
                        let payload = buf[range].to_vec();
                        buf.drain(..used);
                        match head.opcode {
                            OpCode::Close => return seen,
                            OpCode::Pong => {
                                assert_eq!(payload, b"hi", "a pong echoes its ping");
                                continue;
                            }
                            _ => {}
                        }
                        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                        let (r, event) = (v[1].as_str().unwrap().to_string(), v[3].as_str().unwrap());
                        let reply = if event == "phx_join" {
                            Some(join)
                        } else {
                            let n = v[4]["id"].as_str().unwrap()[2..].parse().unwrap();
                            // Noise the client must skip: a ping and someone else's event.
                            s.write_all(&server_frame::encode(OpCode::Ping, b"hi")).unwrap();
                            let other = r#"[null,null,"geo:t","geofence_event",{"event":"enter"}]"#;
                            s.write_all(&server_frame::encode(OpCode::Text, other.as_bytes())).unwrap();
                            answer(event, n)
                        };
                        seen.push(format!("{event} {}", v[4]["id"].as_str().unwrap_or("")));
                        if let Some(reply) = reply {
                            let text =
                                format!(r#"["1",{},"geo:t","phx_reply",{reply}]"#, phoenix::json_str(&r));
                            s.write_all(&server_frame::encode(OpCode::Text, text.as_bytes())).unwrap();
                        }
                    }
                }
            }
        });
        (addr, h)
    }

    fn plan(target: SocketAddr, fences: u64) -> Plan {
        Plan {
            scenario: Scenario::Geo {
                publish_rate: 1.0,
                measure_s: 1,
                tenant: "t".into(),
                movers: 1,
                subscribers: 0,
                fences,
                step_m: 30.0,
                seed: 3,
                bbox: Bbox::DEFAULT,
                batch: 1,
            },
            targets: vec![target],
            path: "/socket/websocket?vsn=2.0.0".into(),
            sources: Vec::new(),
            topic_prefix: String::new(),
            per_topic: 1,
            first: 0,
            count: 1,
            rate: 1.0,
            threads: 1,
            step_timeout_s: 5,
            heartbeat_s: 30,
            presence: false,
            max_pending: 0,
            connect_retries: 0,
        }
    }

    const OK: &str = r#"{"status":"ok","response":{"fence":{}}}"#;
    const TAKEN: &str = r#"{"status":"error","response":{"reason":"fence exists"}}"#;
    const FULL: &str = r#"{"status":"error","response":{"reason":"too many fences"}}"#;

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(20)
    }

    #[test]
    fn every_fence_is_created_once_with_a_window_in_flight() {
        let (addr, server) = fake_server(OK, |_, _| Some(OK));
        let out = create_fences(&plan(addr, 1000), deadline()).expect("setup succeeds");
        assert_eq!((out.targets, out.fences, out.created, out.replaced), (1, 1000, 1000, 0));
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 1001);
        assert_eq!(seen[0], "phx_join ");
        let mut ids: Vec<&str> =
            seen[1..].iter().map(|s| s.strip_prefix("fence_create f-").unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 1000, "each fence once");
    }

    #[test]
    fn taken_ids_are_replaced_and_refusals_fail_the_setup() {
        let (addr, server) = fake_server(OK, |event, n| match (event, n % 3) {
            ("fence_create", 0) => Some(TAKEN),
            _ => Some(OK),
        });
        let out = create_fences(&plan(addr, 30), deadline()).expect("setup succeeds");
        assert_eq!((out.created, out.replaced), (20, 10));
        assert_eq!(server.join().unwrap().iter().filter(|s| s.starts_with("fence_update")).count(), 10);

        let (addr, _server) = fake_server(OK, |_, n| Some(if n < 7 { FULL } else { OK }));
        let err = create_fences(&plan(addr, 30), deadline()).unwrap_err();
        assert!(matches!(err, SetupError::Refused { refused: 7, fences: 30, .. }), "{err}");
        assert!(err.to_string().contains(r#"7 × "too many fences""#), "{err}");
    }

    #[test]
    fn a_refused_join_and_a_silent_server_are_reported() {
        let (addr, _server) =
            fake_server(r#"{"status":"error","response":{"reason":"unauthorized"}}"#, |_, _| None);
        let err = create_fences(&plan(addr, 3), deadline()).unwrap_err();
        assert!(err.to_string().contains("joining geo:t was refused: unauthorized"), "{err}");

        let (addr, _server) = fake_server(OK, |_, _| None);
        let mut p = plan(addr, 3);
        p.step_timeout_s = 1;
        let started = Instant::now();
        let err = create_fences(&p, deadline()).unwrap_err();
        assert!(matches!(err, SetupError::Timeout { doing: "creating fences", .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
