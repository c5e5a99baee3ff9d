//! The agent's event loops: one mio thread per core, each opening its share of the connections at
//! the planned arrival rate, driving the scenario on them, and recording latencies.
//!
//! Memory per idle connection is a few dozen bytes: no read or write buffer is held between events.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::counters::Counters;
use crate::geo::{self, walk::Walker};
use crate::hist;
use crate::phoenix::{self, json_str, Reply};
use crate::plan::{self, Plan, Scenario};
use crate::sources::{connect_from, Failure};
use crate::ws;

const WAKER: Token = Token(usize::MAX);
/// Connections opened per loop turn at most, so reads are never starved by a ramp.
const OPEN_BATCH: usize = 512;
/// Largest server frame accepted.
const MAX_FRAME: usize = 1 << 20;
/// How long a measure phase waits for outstanding acks after its last publish.
const DRAIN: Duration = Duration::from_secs(10);
/// How long a geo placement waits for its replies.
pub const PLACE_WAIT: Duration = Duration::from_secs(60);

/// Phase commands from the agent.
#[derive(Debug, Clone, Copy)]
pub enum Cmd {
    /// Open this thread's connections.
    Connect,
    /// Geo: put each object of this thread's moving connections at the start of its walk.
    Place,
    /// Run the scenario's traffic starting at this Unix time (µs), shared by every agent.
    Measure { start_unix_us: u64 },
    /// Close everything and stop.
    Teardown,
}

/// What threads tell the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Every connection of the thread is joined or failed.
    ConnectDone,
    /// Every placement push of the thread is answered (or its connection failed, or the wait ran out).
    PlaceDone,
    /// The traffic phase ended and its acks are in (or the drain time passed).
    MeasureDone,
}

/// Latency histograms of one agent, in microseconds.
#[derive(Debug)]
pub struct Hists {
    /// Intended open time → TCP connected, open model.
    pub tcp: Histogram<u64>,
    /// Intended open time → joined (TCP + upgrade + join), open model.
    pub establish: Histogram<u64>,
    /// Intended publish time → ack.
    pub ack: Histogram<u64>,
    /// Intended publish time → each delivery.
    pub delivery: Histogram<u64>,
    /// Geo: intended update time (the update's `ts`) → each `geofence_event` received.
    pub event: Histogram<u64>,
}

impl Hists {
    fn new() -> Self {
        Hists {
            tcp: hist::new_hist(),
            establish: hist::new_hist(),
            ack: hist::new_hist(),
            delivery: hist::new_hist(),
            event: hist::new_hist(),
        }
    }
    /// Every histogram with its name.
    pub fn named(&self) -> [(&'static str, &Histogram<u64>); 5] {
        [
            ("tcp", &self.tcp),
            ("establish", &self.establish),
            ("ack", &self.ack),
            ("delivery", &self.delivery),
            ("event", &self.event),
        ]
    }
    fn reset(&mut self) {
        self.tcp.reset();
        self.establish.reset();
        self.ack.reset();
        self.delivery.reset();
        self.event.reset();
    }

    /// Add another set's samples.
    pub fn merge(&mut self, o: &Hists) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.tcp.add(&o.tcp);
        let _ = self.establish.add(&o.establish);
        let _ = self.ack.add(&o.ack);
        let _ = self.delivery.add(&o.delivery);
        let _ = self.event.add(&o.event);
    }
}

/// Per broadcast message, keyed by its intended send time (Unix µs): copies received and the
/// latency of the last one.
pub type Completion = std::collections::BTreeMap<u64, (u64, u64)>;

/// Add another agent's or thread's counts.
pub fn merge_completion(into: &mut Completion, from: &Completion) {
    for (sent, (n, max)) in from {
        let e = into.entry(*sent).or_insert((0, 0));
        e.0 += n;
        e.1 = e.1.max(*max);
    }
}

impl Default for Hists {
    fn default() -> Self {
        Hists::new()
    }
}

/// What a thread hands back when it stops.
type ThreadResult = (Hists, Completion);

/// A running engine.
#[derive(Debug)]
pub struct Engine {
    threads: Vec<(Sender<Cmd>, Arc<Waker>, JoinHandle<ThreadResult>)>,
    /// Samples the threads flushed since the last [`Engine::take_interval`].
    interval: Arc<Mutex<Hists>>,
    pub counters: Arc<Counters>,
    pub events: Receiver<Event>,
}

impl Engine {
    /// Start the threads; they wait for [`Cmd::Connect`].
    pub fn start(plan: Plan, counters: Arc<Counters>) -> io::Result<Engine> {
        let plan = Arc::new(plan);
        let (ev_tx, events) = crossbeam_channel::unbounded();
        let mut threads = Vec::new();
        let interval = Arc::new(Mutex::new(Hists::new()));
        for t in 0..plan.threads.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (tx, rx) = crossbeam_channel::bounded(16);
            let mut th =
                Thread::new(t, plan.clone(), poll, rx, ev_tx.clone(), counters.clone(), interval.clone());
            let h = std::thread::Builder::new().name(format!("lg-{t}")).spawn(move || th.run())?;
            threads.push((tx, waker, h));
        }
        Ok(Engine { threads, interval, counters, events })
    }

    /// The samples recorded since the last call (flushed by the threads once a second).
    pub fn take_interval(&self) -> Hists {
        match self.interval.lock() {
            Ok(mut h) => std::mem::take(&mut *h),
            Err(_) => Hists::new(),
        }
    }

    /// Number of threads (each reports every event once).
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Send a command to every thread.
    pub fn command(&self, cmd: Cmd) {
        for (tx, waker, _) in &self.threads {
            let _ = tx.send(cmd);
            let _ = waker.wake();
        }
    }

    /// Wait until every thread reported `ev`, or `timeout` passed; returns how many did.
    pub fn wait_all(&self, ev: Event, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut n = 0;
        while n < self.threads.len() {
            match self.events.recv_deadline(deadline) {
                Ok(e) if e == ev => n += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        n
    }

    /// Tear down and collect the merged histograms.
    pub fn finish(self) -> (Hists, Completion) {
        self.command(Cmd::Teardown);
        let mut all = Hists::new();
        let mut completion = Completion::new();
        for (_, _, h) in self.threads {
            if let Ok((hs, c)) = h.join() {
                all.merge(&hs);
                merge_completion(&mut completion, &c);
            }
        }
        (all, completion)
    }
}

/// Now, in microseconds since the Unix epoch: the clock every agent's send times use.
pub fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Where a client connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Connecting,
    Upgrading,
    Joining,
    Open,
}

/// One client connection.
#[derive(Debug)]
struct Client {
    stream: TcpStream,
    gen: u32,
    idx: u64,
    st: St,
    /// Intended open time, ms since the thread's connect phase began.
    intended_ms: u32,
    /// Attempts made before this one (`--connect-retries`).
    attempt: u8,
    // An `Option<Box<Vec>>` is 8 bytes where an `Option<Vec>` is 24, and every idle connection
    // pays for these two fields.
    #[allow(clippy::box_collection)]
    rbuf: Option<Box<Vec<u8>>>,
    #[allow(clippy::box_collection)]
    wbuf: Option<Box<Vec<u8>>>,
}

struct Measure {
    /// Broadcast and TCP floor: copies this thread expects (messages × its open connections) and has
    /// seen.
    expect: Option<u64>,
    /// TCP floor: this thread's connections that send each message to their sink (slab keys).
    floor_publishers: Vec<usize>,
    seen: u64,
    start_unix_us: u64,
    end_unix_us: u64,
    rate: f64,
    next: u64,
    published: u64,
    answered: u64,
    cursor: usize,
    drain_until: Option<Instant>,
    body_pad: String,
}

/// A geo placement under way.
struct Place {
    /// Connections (by slab key) whose placement push is not answered yet.
    waiting: HashSet<usize>,
    until: Instant,
}

struct Thread {
    id: usize,
    plan: Arc<Plan>,
    poll: Poll,
    cmds: Receiver<Cmd>,
    events: Sender<Event>,
    counters: Arc<Counters>,
    conns: Slab<Client>,
    next_gen: u32,
    pool: Vec<Vec<u8>>,
    /// Samples since the last flush (once a second): shared with the agent for the time series, then
    /// added to `total`.
    interval: Hists,
    total: Hists,
    shared: Arc<Mutex<Hists>>,
    /// Broadcast: per message (by its send time), copies seen and the latest copy's latency.
    completion: Completion,
    /// Collab: each typing connection's own Yjs document, by slab key.
    editors: std::collections::HashMap<usize, yrs::Doc>,
    /// Geo: each moving connection's objects (`batch` of them), by slab key.
    walkers: std::collections::HashMap<usize, Vec<Walker>>,
    last_flush: Instant,
    /// This thread's connections: global index `first + id + k * threads` for k in 0..mine.
    mine: u64,
    next_k: u64,
    connect_start: Option<Instant>,
    settled: u64,
    connect_reported: bool,
    timeouts: VecDeque<(usize, u32, St, Instant)>,
    /// Connections to open again: (when, index, intended open time in ms, attempt), earliest first.
    retries: BinaryHeap<Reverse<(Instant, u64, u32, u8)>>,
    hb_cursor: usize,
    hb_last: Instant,
    hb_ref: u64,
    measure: Option<Measure>,
    place: Option<Place>,
    /// Geo: the measure's start (Unix µs), once known; events with an earlier `ts` come from the
    /// placement.
    measure_from: Option<u64>,
    mask: u32,
    stop: bool,
}

impl Thread {
    fn new(
        id: usize,
        plan: Arc<Plan>,
        poll: Poll,
        cmds: Receiver<Cmd>,
        events: Sender<Event>,
        counters: Arc<Counters>,
        shared: Arc<Mutex<Hists>>,
    ) -> Self {
        let threads = plan.threads.max(1) as u64;
        let mine = plan.count / threads + u64::from((id as u64) < plan.count % threads);
        Thread {
            id,
            plan,
            poll,
            cmds,
            events,
            counters,
            conns: Slab::new(),
            next_gen: 0,
            pool: Vec::new(),
            interval: Hists::new(),
            total: Hists::new(),
            shared,
            completion: Completion::new(),
            editors: std::collections::HashMap::new(),
            walkers: std::collections::HashMap::new(),
            last_flush: Instant::now(),
            mine,
            next_k: 0,
            connect_start: None,
            settled: 0,
            connect_reported: false,
            timeouts: VecDeque::new(),
            retries: BinaryHeap::new(),
            hb_cursor: 0,
            hb_last: Instant::now(),
            hb_ref: 0,
            measure: None,
            place: None,
            measure_from: None,
            mask: 0x9e37_79b9 ^ id as u32,
            stop: false,
        }
    }

    fn run(&mut self) -> (Hists, Completion) {
        let mut events = Events::with_capacity(1024);
        while !self.stop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "poll failed");
                    break;
                }
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let t = ev.token().0;
                let (key, gen) = (t & 0xffff_ffff, (t >> 32) as u32);
                if self.conns.get(key).is_none_or(|c| c.gen != gen) {
                    continue;
                }
                if ev.is_writable() {
                    self.on_writable(key);
                }
                if (ev.is_readable() || ev.is_read_closed() || ev.is_error()) && self.conns.contains(key) {
                    self.on_readable(key);
                }
            }
            while let Ok(cmd) = self.cmds.try_recv() {
                self.on_cmd(cmd);
            }
            self.open_due();
            self.expire();
            self.heartbeats();
            self.publish_due();
            self.check_done();
            if self.last_flush.elapsed() >= Duration::from_secs(1) {
                self.flush_interval();
            }
        }
        self.flush_interval();
        (std::mem::take(&mut self.total), std::mem::take(&mut self.completion))
    }

    fn flush_interval(&mut self) {
        self.last_flush = Instant::now();
        self.total.merge(&self.interval);
        if let Ok(mut shared) = self.shared.lock() {
            shared.merge(&self.interval);
        }
        self.interval.reset();
    }

    fn poll_timeout(&self) -> Duration {
        let mut t = Duration::from_millis(100);
        if let Some(start) = self.connect_start {
            // At the bound on connections in progress, the next open waits for one of them to settle,
            // which an event or an expiry brings, not for its scheduled time (long past in a closed ramp).
            let capped = self.max_pending().is_some_and(|max| self.next_k - self.settled >= max);
            if self.next_k < self.mine && !capped {
                let due = start + self.intended_offset(self.next_k);
                t = t.min(due.saturating_duration_since(Instant::now()));
            }
        }
        if let Some(Reverse((due, ..))) = self.retries.peek() {
            t = t.min(due.saturating_duration_since(Instant::now()));
        }
        if let Some(m) = self.measure.as_ref().filter(|m| m.rate > 0.0) {
            if m.drain_until.is_none() {
                let due_us = m.start_unix_us + (m.next as f64 * 1e6 / m.rate) as u64;
                t = t.min(Duration::from_micros(due_us.saturating_sub(unix_us())));
            }
        }
        t
    }

    fn intended_offset(&self, k: u64) -> Duration {
        let threads = self.plan.threads.max(1) as u64;
        let n = k * threads + self.id as u64;
        if self.plan.rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(n as f64 / self.plan.rate)
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Connect => {
                self.connect_start = Some(Instant::now());
                self.connect_reported = false;
            }
            Cmd::Place => self.place(),
            Cmd::Measure { start_unix_us } => {
                self.measure_from = Some(start_unix_us);
                let Some((publish_rate, measure_s, body_bytes)) = self.plan.scenario.traffic() else {
                    let _ = self.events.send(Event::MeasureDone);
                    return;
                };
                let broadcast = self.plan.scenario.one_publisher();
                let floor = matches!(self.plan.scenario, Scenario::Tcp { .. });
                // This thread's share of the agent's senders: connections first + id + k × threads.
                let threads = self.plan.threads.max(1) as u64;
                let agent_senders = self.plan.senders(self.plan.first, 1, self.plan.count);
                let senders = self.plan.senders(self.plan.first + self.id as u64, threads, self.mine);
                let mut rate = if agent_senders == 0 {
                    0.0
                } else {
                    publish_rate * senders as f64 / agent_senders as f64
                };
                let mut expect = None;
                let mut floor_publishers = Vec::new();
                if floor {
                    // Connection i goes to target i mod N, so connections 0..N reach every sink once;
                    // each of them sends every message. Every open connection expects each message.
                    let sinks = self.plan.targets.len() as u64;
                    floor_publishers = self
                        .conns
                        .iter()
                        .filter(|(_, c)| c.st == St::Open && c.idx < sinks)
                        .map(|(key, _)| key)
                        .collect();
                    rate = if floor_publishers.is_empty() { 0.0 } else { publish_rate };
                    let messages = (measure_s as f64 * publish_rate).ceil() as u64;
                    let open = self.conns.iter().filter(|(_, c)| c.st == St::Open).count() as u64;
                    expect = Some(messages * open);
                } else if broadcast {
                    // One publisher (the thread holding connection 0) at the whole rate; every
                    // thread knows how many messages that makes and waits for its copies.
                    let publisher = self.plan.first == 0 && self.id == 0;
                    rate = if publisher { publish_rate } else { 0.0 };
                    let messages = (measure_s as f64 * publish_rate).ceil() as u64;
                    let open = self.conns.iter().filter(|(_, c)| c.st == St::Open).count() as u64;
                    expect = Some(messages * open);
                }
                if rate <= 0.0 && expect.is_none() {
                    let _ = self.events.send(Event::MeasureDone);
                    return;
                }
                // Offset each thread's schedule so the threads interleave instead of bursting together.
                let offset = (self.id as f64 / self.plan.threads.max(1) as f64 * 1e6 / rate) as u64;
                let offset = if broadcast || floor { 0 } else { offset };
                self.measure = Some(Measure {
                    expect,
                    floor_publishers,
                    seen: 0,
                    start_unix_us: start_unix_us + offset,
                    end_unix_us: start_unix_us + measure_s * 1_000_000,
                    rate,
                    next: 0,
                    published: 0,
                    answered: 0,
                    cursor: 0,
                    drain_until: None,
                    body_pad: "x".repeat(body_bytes.saturating_sub(24)),
                });
            }
            Cmd::Teardown => {
                let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                // A bare TCP connection just closes: its sink would take a close frame for a message.
                let websocket = !matches!(self.plan.scenario, Scenario::Tcp { .. });
                for key in keys {
                    if websocket {
                        let mut frame = Vec::with_capacity(8);
                        ws::encode_masked(ws::CLOSE, &1000u16.to_be_bytes(), self.next_mask(), &mut frame);
                        let _ = self.conns[key].stream.write(&frame);
                    }
                    self.drop_conn(key);
                }
                self.stop = true;
            }
        }
    }

    /// Geo: send each open moving connection's placement push (its objects at the start of their
    /// walks, `ts` now) and wait for the replies. Other scenarios have nothing to place.
    fn place(&mut self) {
        let plan = self.plan.clone();
        let Scenario::Geo { tenant, seed, bbox, .. } = &plan.scenario else {
            let _ = self.events.send(Event::PlaceDone);
            return;
        };
        let batch = plan.scenario.batch();
        let topic = json_str(&geo::topic(tenant));
        let movers: Vec<(usize, u64)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.st == St::Open && plan.sends(c.idx))
            .map(|(key, c)| (key, c.idx))
            .collect();
        self.place =
            Some(Place { waiting: HashSet::with_capacity(movers.len()), until: Instant::now() + PLACE_WAIT });
        for (key, idx) in movers {
            // A connection that failed on an earlier send of this loop is gone.
            if !self.conns.contains(key) {
                continue;
            }
            let walkers = self.walkers.entry(key).or_insert_with(|| geo::walkers(*seed, idx, batch, bbox));
            let text = geo::placement_push(&topic, idx, walkers, unix_us());
            Counters::add(&self.counters.placing, batch);
            if let Some(p) = self.place.as_mut() {
                p.waiting.insert(key);
            }
            self.send_text(key, &text);
        }
    }

    fn next_mask(&mut self) -> [u8; 4] {
        ws::next_mask(&mut self.mask)
    }

    // ---- opening ----

    fn open_due(&mut self) {
        let Some(start) = self.connect_start else {
            return;
        };
        let now = Instant::now();
        let mut opened = 0;
        while opened < OPEN_BATCH && self.retries.peek().is_some_and(|Reverse((due, ..))| *due <= now) {
            let Some(Reverse((_, idx, intended_ms, attempt))) = self.retries.pop() else { break };
            opened += 1;
            self.open(idx, intended_ms, attempt);
        }
        let max_pending = self.max_pending();
        while self.next_k < self.mine
            && opened < OPEN_BATCH
            && start + self.intended_offset(self.next_k) <= now
            && max_pending.is_none_or(|max| self.next_k - self.settled < max)
        {
            let k = self.next_k;
            self.next_k += 1;
            opened += 1;
            let threads = self.plan.threads.max(1) as u64;
            let idx = self.plan.first + self.id as u64 + k * threads;
            // A bounded ramp is a closed model: a connection's clock starts when a slot lets it open.
            let intended = match max_pending {
                Some(_) => now.duration_since(start),
                None => self.intended_offset(k),
            };
            self.open(idx, intended.as_millis() as u32, 0);
        }
    }

    /// This thread's share of the plan's bound on connections in progress, if it has one.
    fn max_pending(&self) -> Option<u64> {
        (self.plan.max_pending > 0).then(|| self.plan.max_pending.div_ceil(self.plan.threads.max(1) as u64))
    }

    /// Open connection `idx`; `attempt` counts the attempts before this one.
    fn open(&mut self, idx: u64, intended_ms: u32, attempt: u8) {
        if attempt == 0 {
            Counters::inc(&self.counters.attempted);
        }
        let plan = &self.plan;
        let target = plan.targets[(idx % plan.targets.len() as u64) as usize];
        let source =
            (!plan.sources.is_empty()).then(|| plan.sources[(idx % plan.sources.len() as u64) as usize]);
        let mut stream = match connect_from(source, target) {
            Ok(s) => s,
            Err(e) => return self.settle_failed(idx, intended_ms, attempt, Failure::of(&e)),
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.next_gen = self.next_gen.wrapping_add(1);
        let token = Token(key | ((self.next_gen as usize) << 32));
        if let Err(e) =
            self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            return self.settle_failed(idx, intended_ms, attempt, Failure::of(&e));
        }
        entry.insert(Client {
            stream,
            gen: self.next_gen,
            idx,
            st: St::Connecting,
            intended_ms,
            attempt,
            rbuf: None,
            wbuf: None,
        });
        self.arm_timeout(key);
    }

    /// A connection that failed before it joined: open it again later while it has retries left,
    /// else count the failure and settle it.
    fn settle_failed(&mut self, idx: u64, intended_ms: u32, attempt: u8, f: Failure) {
        if u32::from(attempt) < self.plan.connect_retries && attempt < u8::MAX {
            Counters::inc(&self.counters.retried);
            let due = Instant::now() + plan::retry_backoff(u32::from(attempt) + 1, idx);
            self.retries.push(Reverse((due, idx, intended_ms, attempt + 1)));
            return;
        }
        self.counters.fail(f);
        self.settled += 1;
    }

    fn arm_timeout(&mut self, key: usize) {
        let c = &self.conns[key];
        let deadline = Instant::now() + Duration::from_secs(self.plan.step_timeout_s.max(1));
        self.timeouts.push_back((key, c.gen, c.st, deadline));
    }

    /// Steps all take the same time bound, so the queue is in deadline order.
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&(key, gen, st, deadline)) = self.timeouts.front() {
            if deadline > now {
                break;
            }
            self.timeouts.pop_front();
            if self.conns.get(key).is_some_and(|c| c.gen == gen && c.st == st && c.st != St::Open) {
                self.fail(key, Failure::Timeout);
            }
        }
    }

    // ---- I/O ----

    fn on_writable(&mut self, key: usize) {
        if self.conns[key].st == St::Connecting {
            let c = &mut self.conns[key];
            match c.stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.fail(key, Failure::of(&e)),
            }
            if let Err(e) = c.stream.peer_addr() {
                if e.kind() == io::ErrorKind::NotConnected {
                    return; // Not yet: a spurious wake-up.
                }
                return self.fail(key, Failure::of(&e));
            }
            Counters::inc(&self.counters.tcp_connected);
            c.st = St::Upgrading;
            if let Some(start) = self.connect_start {
                let intended = start + Duration::from_millis(u64::from(c.intended_ms));
                hist::record(&mut self.interval.tcp, hist::latency_from_intended(intended, Instant::now()));
            }
            if matches!(self.plan.scenario, Scenario::Tcp { .. }) {
                // The floor stops here: a bare TCP connection is established once connected.
                return self.joined(key);
            }
            let host = c.stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            let req = ws::upgrade_request(&host, &self.plan.path_of(c.idx));
            self.arm_timeout(key);
            self.send(key, &req);
            return;
        }
        let c = &mut self.conns[key];
        let Some(buf) = c.wbuf.as_mut() else { return };
        match c.stream.write(buf) {
            Ok(n) => {
                buf.drain(..n);
                if buf.is_empty() {
                    c.wbuf = None;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.fail(key, Failure::of(&e)),
        }
    }

    fn send(&mut self, key: usize, bytes: &[u8]) {
        self.counters.bytes_out.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let c = &mut self.conns[key];
        if let Some(buf) = c.wbuf.as_mut() {
            buf.extend_from_slice(bytes);
            return;
        }
        let mut at = 0;
        while at < bytes.len() {
            match c.stream.write(&bytes[at..]) {
                Ok(0) => return self.fail(key, Failure::Closed),
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(key, Failure::of(&e)),
            }
        }
        if at < bytes.len() {
            c.wbuf = Some(Box::new(bytes[at..].to_vec()));
        }
    }

    fn send_text(&mut self, key: usize, text: &str) {
        let mut frame = Vec::with_capacity(text.len() + 14);
        let mask = self.next_mask();
        ws::encode_masked(ws::TEXT, text.as_bytes(), mask, &mut frame);
        self.send(key, &frame);
    }

    fn on_readable(&mut self, key: usize) {
        let mut buf = match self.conns[key].rbuf.take() {
            Some(b) => *b,
            None => self.pool.pop().unwrap_or_else(|| Vec::with_capacity(16 * 1024)),
        };
        loop {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 * 1024);
            }
            let c = &mut self.conns[key];
            let start = buf.len();
            buf.resize(buf.capacity(), 0);
            match c.stream.read(&mut buf[start..]) {
                Ok(0) => {
                    buf.truncate(start);
                    self.recycle(buf);
                    return self.fail(key, Failure::Closed);
                }
                Ok(n) => {
                    buf.truncate(start + n);
                    self.counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    let used = match self.consume(key, &buf) {
                        Some(used) => used,
                        None => return self.recycle(buf),
                    };
                    buf.drain(..used);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    buf.truncate(start);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
                Err(e) => {
                    buf.truncate(start);
                    self.recycle(buf);
                    return self.fail(key, Failure::of(&e));
                }
            }
        }
        if buf.is_empty() {
            self.recycle(buf);
        } else {
            self.conns[key].rbuf = Some(Box::new(buf));
        }
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.pool.len() < 64 && buf.capacity() <= 64 * 1024 {
            buf.clear();
            self.pool.push(buf);
        }
    }

    /// Handle what `buf` holds; returns the bytes used, or None when the connection was dropped.
    fn consume(&mut self, key: usize, buf: &[u8]) -> Option<usize> {
        if matches!(self.plan.scenario, Scenario::Tcp { .. }) {
            return Some(self.on_floor_bytes(buf));
        }
        let mut used = 0;
        if self.conns[key].st == St::Upgrading {
            match ws::parse_upgrade_response(buf) {
                Ok(None) => return Some(0),
                Ok(Some(n)) => {
                    used = n;
                    Counters::inc(&self.counters.upgraded);
                    self.upgraded(key);
                    if !self.conns.contains(key) {
                        return None;
                    }
                }
                Err(ws::UpgradeError::Status(_)) => {
                    self.fail(key, Failure::HttpStatus);
                    return None;
                }
                Err(ws::UpgradeError::Malformed) => {
                    self.fail(key, Failure::Protocol);
                    return None;
                }
            }
        }
        loop {
            match ws::decode(&buf[used..], MAX_FRAME) {
                Ok(None) => return Some(used),
                Ok(Some((frame, n))) => {
                    let payload = &buf[used + frame.payload.start..used + frame.payload.end];
                    used += n;
                    match frame.opcode {
                        ws::TEXT => self.on_text(key, payload),
                        ws::BINARY if matches!(self.plan.scenario, Scenario::Collab { .. }) => {
                            self.on_collab_binary(key, payload)
                        }
                        ws::PING => {
                            let mut pong = Vec::new();
                            let mask = self.next_mask();
                            ws::encode_masked(ws::PONG, payload, mask, &mut pong);
                            self.send(key, &pong);
                        }
                        ws::CLOSE => {
                            self.fail(key, Failure::Closed);
                            return None;
                        }
                        _ => {}
                    }
                    if !self.conns.contains(key) {
                        return None;
                    }
                }
                Err(_) => {
                    self.fail(key, Failure::Protocol);
                    return None;
                }
            }
        }
    }

    fn upgraded(&mut self, key: usize) {
        let idx = self.conns[key].idx;
        if matches!(self.plan.scenario, Scenario::Collab { .. } | Scenario::Shootout { .. }) {
            return self.joined(key);
        }
        match self.plan.topic_of(idx) {
            Some(topic) => {
                self.conns[key].st = St::Joining;
                self.arm_timeout(key);
                let params = self.plan.join_params(idx);
                self.send_text(key, &format!(r#"["1","1",{},"phx_join",{params}]"#, json_str(&topic)));
            }
            None => self.joined(key),
        }
    }

    fn joined(&mut self, key: usize) {
        let c = &mut self.conns[key];
        c.st = St::Open;
        Counters::inc(&self.counters.joined);
        Counters::inc(&self.counters.open);
        self.settled += 1;
        if let Some(start) = self.connect_start {
            let intended = start + Duration::from_millis(u64::from(c.intended_ms));
            hist::record(&mut self.interval.establish, hist::latency_from_intended(intended, Instant::now()));
        }
    }

    fn on_text(&mut self, key: usize, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            return self.fail(key, Failure::Protocol);
        };
        if let Scenario::Shootout { .. } = self.plan.scenario {
            return self.on_shootout_text(key, text);
        }
        // Only refs, event and a few payload fields matter.
        let Some(phoenix::Incoming { reference: r, event, payload: body }) = phoenix::parse(text) else {
            return self.fail(key, Failure::Protocol);
        };
        match (event, r) {
            ("phx_reply", Some("1")) if self.conns[key].st == St::Joining => {
                if body.get().starts_with(r#"{"status":"ok""#) {
                    self.joined(key);
                } else {
                    self.fail(key, Failure::JoinRefused);
                }
            }
            ("phx_reply", Some(geo::PLACE_REF)) => {
                // A reply after the placement gave up waiting is not counted.
                let awaited = self.place.as_mut().is_some_and(|p| p.waiting.remove(&key));
                if awaited {
                    self.on_placement_reply(body.get());
                }
            }
            ("phx_reply", Some(r)) if r.starts_with('p') => {
                if let (Ok(sent), Some(m)) = (r[1..].parse::<u64>(), self.measure.as_mut()) {
                    m.answered += 1;
                    let latency = unix_us().saturating_sub(sent);
                    let batch = self.plan.scenario.batch();
                    if batch > 1 {
                        return self.on_locations_reply(body.get(), batch, latency);
                    }
                    match phoenix::reply(body.get()) {
                        Reply::Ok => {
                            Counters::inc(&self.counters.acked);
                            hist::record(&mut self.interval.ack, latency);
                        }
                        Reply::OutOfOrder => {
                            Counters::inc(&self.counters.out_of_order);
                            hist::record(&mut self.interval.ack, latency);
                        }
                        Reply::Error(reason) => self.counters.reply_error(&reason, 1),
                    }
                }
            }
            ("geofence_event", None) => {
                let Some((kind, ts)) = geo::parse_event(body.get()) else {
                    return self.fail(key, Failure::Protocol);
                };
                // From before the measure's start (or before it is known): caused by the placement,
                // counted apart. An event without a time counts as measured once the measure began.
                if self.measure_from.is_none_or(|from| ts.is_some_and(|ts| ts < from)) {
                    Counters::inc(&self.counters.placement_events);
                    return;
                }
                Counters::inc(&self.counters.delivered);
                Counters::inc(&self.counters.events[kind.index()]);
                if let Some(ts) = ts {
                    hist::record(&mut self.interval.event, unix_us().saturating_sub(ts));
                }
            }
            ("new_msg", _) => {
                if let Some(sent) = marker_time(body.get()) {
                    self.delivered(sent);
                }
            }
            _ => {}
        }
    }

    /// Bytes from a TCP floor's sink: each 8 of them are a message's send time (little-endian Unix
    /// µs), counted as a broadcast copy is. Returns the bytes used (whole messages).
    fn on_floor_bytes(&mut self, buf: &[u8]) -> usize {
        let whole = buf.len() - buf.len() % 8;
        for chunk in buf[..whole].chunks_exact(8) {
            let mut sent = [0u8; 8];
            sent.copy_from_slice(chunk);
            self.delivered(u64::from_le_bytes(sent));
        }
        whole
    }

    /// One copy of the message sent at `sent` (Unix µs) arrived: its latency, and the message's
    /// completion when the run counts copies.
    fn delivered(&mut self, sent: u64) {
        let latency = unix_us().saturating_sub(sent);
        Counters::inc(&self.counters.delivered);
        hist::record(&mut self.interval.delivery, latency);
        if let Some(m) = self.measure.as_mut().filter(|m| m.expect.is_some()) {
            m.seen += 1;
            let e = self.completion.entry(sent).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(latency);
        }
    }

    /// The reply to a geo `locations` push of `batch` updates: each update counted as applied, ignored
    /// or refused (all of them when the push was), one latency sample for the push.
    fn on_locations_reply(&mut self, payload: &str, batch: u64, latency: u64) {
        match geo::locations_reply(payload) {
            Ok(r) => {
                Counters::add(&self.counters.acked, r.applied);
                Counters::add(&self.counters.out_of_order, r.ignored);
                for reason in &r.errors {
                    self.counters.reply_error(reason, 1);
                }
                hist::record(&mut self.interval.ack, latency);
            }
            Err(reason) => self.counters.reply_error(&reason, batch),
        }
    }

    /// The reply to a geo placement push: its updates counted as placed (applied or ignored) or
    /// refused, apart from the measure's.
    fn on_placement_reply(&mut self, payload: &str) {
        let batch = self.plan.scenario.batch();
        if batch > 1 {
            match geo::locations_reply(payload) {
                Ok(r) => {
                    Counters::add(&self.counters.placed, r.applied + r.ignored);
                    for reason in &r.errors {
                        self.counters.place_error(reason, 1);
                    }
                }
                Err(reason) => self.counters.place_error(&reason, batch),
            }
            return;
        }
        match phoenix::reply(payload) {
            Reply::Ok | Reply::OutOfOrder => Counters::inc(&self.counters.placed),
            Reply::Error(reason) => self.counters.place_error(&reason, 1),
        }
    }

    fn on_shootout_text(&mut self, key: usize, text: &str) {
        #[derive(serde::Deserialize)]
        struct Payload {
            t: u64,
        }
        #[derive(serde::Deserialize)]
        struct Msg<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            payload: Payload,
        }
        let Ok(m) = serde_json::from_str::<Msg<'_>>(text) else {
            return self.fail(key, Failure::Protocol);
        };
        let latency = unix_us().saturating_sub(m.payload.t);
        match m.kind {
            "echo" | "broadcastResult" => {
                Counters::inc(&self.counters.acked);
                hist::record(&mut self.interval.ack, latency);
                if let Some(ms) = self.measure.as_mut() {
                    ms.answered += 1;
                }
            }
            "broadcast" => {
                Counters::inc(&self.counters.delivered);
                hist::record(&mut self.interval.delivery, latency);
                if let Some(ms) = self.measure.as_mut().filter(|ms| ms.expect.is_some()) {
                    ms.seen += 1;
                    let e = self.completion.entry(m.payload.t).or_insert((0, 0));
                    e.0 += 1;
                    e.1 = e.1.max(latency);
                }
            }
            _ => self.fail(key, Failure::Protocol),
        }
    }

    // ---- traffic ----

    fn heartbeats(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.hb_last);
        // The TCP floor's connections are held silent: their sinks expect nothing.
        let silent = matches!(self.plan.scenario, Scenario::Tcp { .. });
        if elapsed < Duration::from_millis(100) || self.conns.is_empty() || silent {
            return;
        }
        self.hb_last = now;
        // Visit the slab a slice per tick so every connection beats once per period.
        let cap = self.conns.capacity().max(1);
        let per_tick =
            ((cap as f64) * elapsed.as_secs_f64() / self.plan.heartbeat_s.max(1) as f64).ceil() as usize;
        self.hb_ref += 1;
        // Phoenix sockets beat on the `phoenix` topic; other protocols get a WebSocket ping.
        let phoenix = !matches!(self.plan.scenario, Scenario::Shootout { .. } | Scenario::Collab { .. });
        let text = format!(r#"[null,"h{}","phoenix","heartbeat",{{}}]"#, self.hb_ref);
        for _ in 0..per_tick.min(cap) {
            let key = self.hb_cursor % cap;
            self.hb_cursor = self.hb_cursor.wrapping_add(1);
            if self.conns.get(key).is_some_and(|c| c.st == St::Open) {
                if phoenix {
                    self.send_text(key, &text);
                } else {
                    let mut ping = Vec::with_capacity(6);
                    let mask = self.next_mask();
                    ws::encode_masked(ws::PING, b"", mask, &mut ping);
                    self.send(key, &ping);
                }
            }
        }
    }

    fn publish_due(&mut self) {
        let Some(m) = self.measure.as_mut() else {
            return;
        };
        if m.drain_until.is_some() || m.rate <= 0.0 {
            return;
        }
        let now = unix_us();
        if !m.floor_publishers.is_empty() {
            return self.publish_floor(now);
        }
        let mut sends = Vec::new();
        let cap = self.conns.capacity().max(1);
        while sends.len() < OPEN_BATCH {
            let due = m.start_unix_us + (m.next as f64 * 1e6 / m.rate) as u64;
            if due > now {
                break;
            }
            if due >= m.end_unix_us {
                m.drain_until = Some(Instant::now() + DRAIN);
                break;
            }
            m.next += 1;
            // The next open connection after the cursor that sends publishes.
            let mut found = None;
            for _ in 0..cap {
                let key = m.cursor % cap;
                m.cursor = m.cursor.wrapping_add(1);
                if self.conns.get(key).is_some_and(|c| c.st == St::Open && self.plan.sends(c.idx)) {
                    found = Some(key);
                    break;
                }
            }
            let Some(key) = found else { break };
            m.published += 1;
            sends.push((key, due));
        }
        let pad = self.measure.as_ref().map(|m| m.body_pad.clone()).unwrap_or_default();
        let plan = self.plan.clone();
        for (key, due) in sends {
            // A connection may appear twice in a batch and fail on its first send.
            if !self.conns.contains(key) {
                continue;
            }
            if let Scenario::Collab { .. } = plan.scenario {
                Counters::inc(&self.counters.published);
                let message = self.editor_update(key, due, &pad);
                let mut frame = Vec::with_capacity(message.len() + 14);
                let mask = self.next_mask();
                ws::encode_masked(ws::BINARY, &message, mask, &mut frame);
                self.send(key, &frame);
                continue;
            }
            if let Scenario::Geo { tenant, step_m, seed, bbox, .. } = &plan.scenario {
                let batch = plan.scenario.batch();
                Counters::add(&self.counters.published, batch);
                Counters::inc(&self.counters.pushes);
                let idx = self.conns[key].idx;
                // The placement put the objects at the start of their walks: each update is a step on.
                // (Without a placement, the first update is where the walk starts.)
                let walkers = self
                    .walkers
                    .entry(key)
                    .and_modify(|ws| ws.iter_mut().for_each(|w| w.step(*step_m, bbox)))
                    .or_insert_with(|| geo::walkers(*seed, idx, batch, bbox));
                let text = geo::location_push(&json_str(&geo::topic(tenant)), idx, walkers, due);
                self.send_text(key, &text);
                continue;
            }
            let topic = self.plan.topic_of(self.conns[key].idx);
            let Some(text) = self.plan.scenario.publish_text(topic.as_deref(), due, &pad) else {
                continue;
            };
            Counters::inc(&self.counters.published);
            self.send_text(key, &text);
        }
    }

    /// TCP floor: every message due by `now` goes, as its send time in 8 bytes, to each sink through
    /// this thread's publishing connections. There is no reply: a message counts as answered once sent.
    fn publish_floor(&mut self, now: u64) {
        let Some(m) = self.measure.as_mut() else { return };
        let mut due_times = Vec::new();
        while due_times.len() < OPEN_BATCH {
            let due = m.start_unix_us + (m.next as f64 * 1e6 / m.rate) as u64;
            if due > now {
                break;
            }
            if due >= m.end_unix_us {
                m.drain_until = Some(Instant::now() + DRAIN);
                break;
            }
            m.next += 1;
            m.published += 1;
            m.answered += 1;
            due_times.push(due);
        }
        let publishers = m.floor_publishers.clone();
        for due in due_times {
            for &key in &publishers {
                // A publisher may have failed on an earlier send.
                if self.conns.contains(key) {
                    Counters::inc(&self.counters.published);
                    self.send(key, &due.to_le_bytes());
                }
            }
        }
    }

    /// A real Yjs update typed by the editor on connection `key`: it appends `lg:<due>:<idx>;` (plus
    /// padding) to its own text, as typing does, so receivers can find the send time in the update's
    /// bytes (Yjs stores inserted strings verbatim). Inserting at the very start instead would make
    /// every editor's insert conflict with all earlier ones there, which costs the server O(n) each.
    fn editor_update(&mut self, key: usize, due: u64, pad: &str) -> Vec<u8> {
        use yrs::{Text, Transact};
        let idx = self.conns[key].idx;
        let doc = self.editors.entry(key).or_default();
        let text = doc.get_or_insert_text("quill");
        let mut txn = doc.transact_mut();
        let len = text.len(&txn);
        text.insert(&mut txn, len, &format!("lg:{due}:{idx};{pad}"));
        // Keep the editor's document small: it also deletes what it typed long ago.
        if len > 4096 {
            text.remove_range(&mut txn, 0, len - 2048);
        }
        let update = txn.encode_update_v1();
        rusher_server::topics::collab::proto::update(&update)
    }

    fn on_collab_binary(&mut self, key: usize, payload: &[u8]) {
        // Only relayed updates (sync type 0, update 2) carry markers; sync steps and awareness pass.
        if payload.len() < 2 || payload[0] != 0 || payload[1] != 2 {
            return;
        }
        let Some(at) = payload.windows(3).position(|w| w == b"lg:") else { return };
        let rest = &payload[at + 3..];
        let Some(colon) = rest.iter().position(|b| *b == b':') else { return };
        let Some(semi) = rest.iter().position(|b| *b == b';') else { return };
        let parse = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|s| s.parse::<u64>().ok());
        let (Some(sent), Some(from)) = (parse(&rest[..colon]), parse(&rest[colon + 1..semi.max(colon + 1)]))
        else {
            return;
        };
        let latency = unix_us().saturating_sub(sent);
        if from == self.conns[key].idx {
            Counters::inc(&self.counters.acked);
            hist::record(&mut self.interval.ack, latency);
            if let Some(m) = self.measure.as_mut() {
                m.answered += 1;
            }
        } else {
            Counters::inc(&self.counters.delivered);
            hist::record(&mut self.interval.delivery, latency);
        }
    }

    fn check_done(&mut self) {
        if self.connect_start.is_some()
            && !self.connect_reported
            && self.next_k >= self.mine
            && self.settled >= self.mine
        {
            self.connect_reported = true;
            let _ = self.events.send(Event::ConnectDone);
        }
        if self.place.as_ref().is_some_and(|p| p.waiting.is_empty() || Instant::now() >= p.until) {
            self.place = None;
            let _ = self.events.send(Event::PlaceDone);
        }
        if let Some(m) = &self.measure {
            let done = match m.expect {
                // A broadcast listener is done when every copy arrived, or a while after the
                // last message was due.
                Some(expect) => {
                    let published_all = m.rate <= 0.0 || m.drain_until.is_some();
                    let acks_in = m.answered >= m.published;
                    let late = unix_us() > m.end_unix_us + DRAIN.as_micros() as u64;
                    (m.seen >= expect && published_all && acks_in) || late
                }
                None => {
                    m.drain_until.is_some_and(|until| m.answered >= m.published || Instant::now() >= until)
                }
            };
            if done {
                self.measure = None;
                let _ = self.events.send(Event::MeasureDone);
            }
        }
    }

    // ---- failures ----

    fn fail(&mut self, key: usize, f: Failure) {
        if !self.conns.contains(key) {
            return;
        }
        let c = &self.conns[key];
        if c.st == St::Open {
            self.counters.fail(f);
        } else {
            let (idx, intended_ms, attempt) = (c.idx, c.intended_ms, c.attempt);
            self.settle_failed(idx, intended_ms, attempt, f);
        }
        self.drop_conn(key);
    }

    fn drop_conn(&mut self, key: usize) {
        self.editors.remove(&key);
        self.walkers.remove(&key);
        if let Some(p) = self.place.as_mut() {
            p.waiting.remove(&key);
        }
        let mut c = self.conns.remove(key);
        if c.st == St::Open {
            self.counters.open.fetch_sub(1, Ordering::Relaxed);
        }
        let _ = self.poll.registry().deregister(&mut c.stream);
        if let Some(b) = c.rbuf.take() {
            self.recycle(*b);
        }
    }
}

/// The send time in a load-generator message body (`"body":"lg:<unix µs>:..."`).
fn marker_time(payload: &str) -> Option<u64> {
    let at = payload.find(r#""body":"lg:"#)? + r#""body":"lg:"#.len();
    let rest = &payload[at..];
    let end = rest.find(':')?;
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_in_delivered_messages() {
        let p = r#"{"seq":3,"id":"9","user":"u1","body":"lg:1700000000123456:xxxx","ts":1}"#;
        assert_eq!(marker_time(p), Some(1_700_000_000_123_456));
        assert_eq!(marker_time(r#"{"body":"hello"}"#), None);
    }
}
