//! The live-bets scenario: an operator opens a market on `bet:<market>`, funds `--bettors` users and
//! changes the odds at `--odds-rate`; the bettors place bets at `--rate` in total (an open model: each
//! bet has an intended send time, and latency counts from it, so a slow server cannot hide queueing).
//! Measured: place → ack, and odds change → delivered to each bettor. At the end the market is voided,
//! which refunds every stake.
//!
//! Each connection is a thread with a blocking socket; the scenario is for a few to a few hundred
//! connections (use `chat` or `connect` for connection counts).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};

use crate::hist::{self, Percentiles};
use crate::{phoenix, ws};

/// Longest run accepted, and the most bettors.
pub const MAX_SECS: u64 = 3600;
pub const MAX_BETTORS: usize = 500;

/// Largest server frame read.
const MAX_FRAME: usize = 1 << 20;

/// How long a reply may take before the run fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct BetsPlan {
    pub target: SocketAddr,
    pub market: String,
    pub bettors: usize,
    /// Bets per second, all bettors together.
    pub rate: f64,
    /// Odds changes per second.
    pub odds_rate: f64,
    pub duration: Duration,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BetsSummary {
    pub bets_sent: u64,
    pub bets_acked: u64,
    /// Refused bets by reason (`odds changed: now N` folded into `odds changed`).
    pub refused: HashMap<String, u64>,
    pub odds_changes: u64,
    pub odds_deliveries: u64,
    /// Place → ack, µs, from the intended send time.
    pub place_ack_us: Percentiles,
    /// Odds change pushed by the operator → `odds` event at a bettor, µs.
    pub odds_delivery_us: Percentiles,
}

/// A Phoenix connection on a blocking socket.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    mask: u32,
    next_ref: u64,
}

impl Conn {
    fn open(target: SocketAddr, user: &str) -> std::io::Result<Conn> {
        let mut stream = TcpStream::connect_timeout(&target, REPLY_TIMEOUT)?;
        stream.set_nodelay(true)?;
        let path = format!("/socket/websocket?vsn=2.0.0&user={user}");
        stream.write_all(&ws::upgrade_request(&target.to_string(), &path))?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let used = loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed during upgrade"));
            }
            buf.extend_from_slice(&chunk[..n]);
            match ws::parse_upgrade_response(&buf) {
                Ok(Some(len)) => break len,
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(format!("upgrade: {e}"))),
            }
        };
        buf.drain(..used);
        Ok(Conn { stream, buf, mask: 0x9e37_79b9, next_ref: 0 })
    }

    /// Send `[join_ref, ref, topic, event, payload]`; returns the ref.
    fn push(&mut self, topic: &str, event: &str, payload: &Value) -> std::io::Result<String> {
        self.next_ref += 1;
        let reference = self.next_ref.to_string();
        let text = json!(["1", reference, topic, event, payload]).to_string();
        let mut out = Vec::with_capacity(text.len() + 14);
        ws::encode_masked(ws::TEXT, text.as_bytes(), ws::next_mask(&mut self.mask), &mut out);
        self.stream.write_all(&out)?;
        Ok(reference)
    }

    /// The next text message, waiting until `until`; `None` on timeout.
    fn next(&mut self, until: Instant) -> std::io::Result<Option<String>> {
        loop {
            if let Some((frame, used)) = ws::decode(&self.buf, MAX_FRAME).map_err(std::io::Error::other)? {
                let text = (frame.opcode == ws::TEXT)
                    .then(|| String::from_utf8_lossy(&self.buf[frame.payload.clone()]).into_owned());
                self.buf.drain(..used);
                if frame.opcode == ws::CLOSE {
                    return Err(std::io::Error::new(ErrorKind::ConnectionAborted, "server closed"));
                }
                match text {
                    Some(t) => return Ok(Some(t)),
                    None => continue,
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left.max(Duration::from_micros(100))))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "server closed")),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Push and wait for its reply; `Err` on an error reply. Other messages are passed to `other`.
    fn call(&mut self, topic: &str, event: &str, payload: &Value) -> anyhow::Result<Value> {
        let reference = self.push(topic, event, payload)?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while let Some(text) = self.next(deadline)? {
            let Some(m) = phoenix::parse(&text) else { continue };
            if m.event == "phx_reply" && m.reference == Some(&reference) {
                let v: Value = serde_json::from_str(m.payload.get())?;
                if v["status"] == "ok" {
                    return Ok(v["response"].clone());
                }
                anyhow::bail!("{event} on {topic}: {}", v["response"]);
            }
        }
        anyhow::bail!("{event} on {topic}: no reply within {REPLY_TIMEOUT:?}")
    }
}

/// When each odds version was pushed.
type Sent = Arc<Mutex<HashMap<u64, Instant>>>;

/// Run the scenario.
pub fn run(plan: &BetsPlan) -> anyhow::Result<BetsSummary> {
    anyhow::ensure!((1..=MAX_BETTORS).contains(&plan.bettors), "--bettors must be 1 to {MAX_BETTORS}");
    anyhow::ensure!(plan.rate > 0.0 && plan.rate.is_finite(), "--rate must be positive");
    anyhow::ensure!(plan.odds_rate > 0.0 && plan.odds_rate.is_finite(), "--odds-rate must be positive");
    anyhow::ensure!(plan.duration.as_secs() <= MAX_SECS, "--duration is at most {MAX_SECS} s");
    let market = format!("bet:{}", plan.market);
    let op_name = format!("{}-op", plan.market);
    let mut op = Conn::open(plan.target, &op_name)?;
    op.call(&format!("user:{op_name}"), "phx_join", &json!({}))?;
    op.call(&market, "phx_join", &json!({}))?;
    op.call(&market, "create", &json!({ "outcomes": { "home": 200, "away": 200 } }))?;
    let names: Vec<String> = (0..plan.bettors).map(|i| format!("{}-b{i}", plan.market)).collect();
    for name in &names {
        let credit =
            json!({ "user": name, "amount": 1_000_000_000_000u64, "req_id": format!("fund-{name}") });
        op.call(&format!("user:{op_name}"), "credit", &credit)?;
    }
    let sent: Sent = Arc::default();
    // Every bettor joins before the clock starts, so each sees every odds change.
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let mut starts = Vec::new();
    let bettors: Vec<_> = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let (plan, market, sent, ready) = (plan.clone(), market.clone(), sent.clone(), ready_tx.clone());
            let (start_tx, start_rx) = mpsc::channel::<Instant>();
            starts.push(start_tx);
            std::thread::spawn(move || bettor(&plan, &market, &name, i, (ready, start_rx), &sent))
        })
        .collect();
    drop(ready_tx);
    for _ in 0..plan.bettors {
        // A bettor that failed to join drops its sender; its error comes from `join` below.
        if ready_rx.recv_timeout(REPLY_TIMEOUT * 2).is_err() {
            break;
        }
    }
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + plan.duration;
    for s in starts {
        let _ = s.send(start);
    }
    let interval = Duration::from_secs_f64(1.0 / plan.odds_rate);
    let mut odds_changes = 0u64;
    let mut next = start;
    while next < end {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let odds = 150 + (odds_changes % 100);
        // The version the change will get: one past the market's, which only this loop changes.
        let version = odds_changes + 2;
        sent.lock().expect("not poisoned").insert(version, Instant::now());
        op.call(&market, "odds", &json!({ "outcome": "home", "odds": odds }))?;
        odds_changes += 1;
        next += interval;
    }
    let mut summary = BetsSummary {
        bets_sent: 0,
        bets_acked: 0,
        refused: HashMap::new(),
        odds_changes,
        odds_deliveries: 0,
        place_ack_us: hist::percentiles(&hist::new_hist()),
        odds_delivery_us: hist::percentiles(&hist::new_hist()),
    };
    let (mut acks, mut deliveries) = (hist::new_hist(), hist::new_hist());
    for b in bettors {
        let r = b.join().map_err(|_| anyhow::anyhow!("a bettor thread panicked"))??;
        summary.bets_sent += r.sent;
        summary.bets_acked += r.acked;
        for (k, v) in r.refused {
            *summary.refused.entry(k).or_default() += v;
        }
        hist::merge(&mut acks, &r.acks)?;
        hist::merge(&mut deliveries, &r.deliveries)?;
    }
    summary.odds_deliveries = deliveries.len();
    summary.place_ack_us = hist::percentiles(&acks);
    summary.odds_delivery_us = hist::percentiles(&deliveries);
    op.call(&market, "void", &json!({}))?;
    Ok(summary)
}

struct BettorResult {
    sent: u64,
    acked: u64,
    refused: HashMap<String, u64>,
    acks: Histogram<u64>,
    deliveries: Histogram<u64>,
}

fn bettor(
    plan: &BetsPlan,
    market: &str,
    name: &str,
    index: usize,
    (ready, start): (mpsc::Sender<()>, mpsc::Receiver<Instant>),
    sent_odds: &Sent,
) -> anyhow::Result<BettorResult> {
    let mut conn = Conn::open(plan.target, name)?;
    let joined = conn.call(market, "phx_join", &json!({}))?;
    let _ = ready.send(());
    let start = start.recv_timeout(REPLY_TIMEOUT * 3)?;
    let end = start + plan.duration;
    let mut odds = joined["outcomes"]["home"].as_u64().unwrap_or(200);
    let interval = Duration::from_secs_f64(plan.bettors as f64 / plan.rate);
    // Spread the bettors' first bets over one interval.
    let mut next = start + interval.mul_f64(index as f64 / plan.bettors as f64);
    let mut r = BettorResult {
        sent: 0,
        acked: 0,
        refused: HashMap::new(),
        acks: hist::new_hist(),
        deliveries: hist::new_hist(),
    };
    let mut inflight: HashMap<String, Instant> = HashMap::new();
    let mut heartbeat = Instant::now() + Duration::from_secs(10);
    let drain_until = end + REPLY_TIMEOUT;
    loop {
        let now = Instant::now();
        if now >= heartbeat {
            conn.push("phoenix", "heartbeat", &json!({}))?;
            heartbeat = now + Duration::from_secs(10);
        }
        if next < end && now >= next {
            let payload =
                json!({ "outcome": "home", "stake": 1, "odds": odds, "req_id": format!("{}", r.sent) });
            let reference = conn.push(market, "place", &payload)?;
            inflight.insert(reference, next);
            r.sent += 1;
            next += interval;
            continue;
        }
        if next >= end && (inflight.is_empty() || now >= drain_until) {
            break;
        }
        let wait = if next < end { next } else { drain_until };
        let Some(text) = conn.next(wait.min(heartbeat))? else { continue };
        let Some(m) = phoenix::parse(&text) else { continue };
        match m.event {
            "phx_reply" => {
                let Some(intended) = m.reference.and_then(|x| inflight.remove(x)) else { continue };
                match phoenix::reply(m.payload.get()) {
                    phoenix::Reply::Ok | phoenix::Reply::OutOfOrder => {
                        r.acked += 1;
                        hist::record(&mut r.acks, hist::latency_from_intended(intended, Instant::now()));
                    }
                    phoenix::Reply::Error(reason) => {
                        let reason = reason.split(": now").next().unwrap_or_default().to_owned();
                        *r.refused.entry(reason).or_default() += 1;
                    }
                }
            }
            "odds" => {
                let v: Value = serde_json::from_str(m.payload.get())?;
                odds = v["odds"].as_u64().unwrap_or(odds);
                let at = v["version"]
                    .as_u64()
                    .and_then(|ver| sent_odds.lock().expect("not poisoned").get(&ver).copied());
                if let Some(at) = at {
                    hist::record(&mut r.deliveries, hist::latency_from_intended(at, Instant::now()));
                }
            }
            _ => {}
        }
    }
    Ok(r)
}
