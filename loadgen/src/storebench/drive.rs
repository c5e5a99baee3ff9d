//! Drives the server's real storage thread (`rusher_server::store::spawn`: the bounded queue and the
//! group commit the server runs) from submitter threads standing in for the workers.
//!
//! Each submitter has an inbox the storage thread delivers its results to, stamped with the time
//! the storage thread handed them over, which is when a worker would learn its write is durable.
//! Three ways to load it:
//! - [`Harness::open_loop`]: requests at a fixed rate, each latency measured from its *intended*
//!   send time, so a stall counts for every request that should have gone out during it
//!   (coordinated omission corrected). A full queue is refused, as the server refuses with
//!   "overloaded", and counted.
//! - [`Harness::closed_loop`]: each submitter keeps a fixed number of requests in flight; the
//!   throughput this reaches is the store's capacity. Latency there is time in the queue plus the
//!   commit, by Little's law about in-flight ÷ throughput, not a service-level figure.
//! - [`Harness::reads`]: one read at a time from one submitter, on an otherwise idle store.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use hdrhistogram::Histogram;
use rusher_server::store::{self, Backend, StoreHandle, StoreRequest, StoreResult, SubmitError};

use super::workload::{Tag, Workload};
use crate::hist;

/// Results one submitter's inbox holds before the storage thread waits for it to read them.
const INBOX: usize = 16_384;
/// Longest wait for the answers still outstanding when a phase stops sending.
pub const DRAIN: Duration = Duration::from_secs(30);
/// Distinct error messages kept per phase; further ones are only counted.
const MAX_REASONS: usize = 8;

/// A result as a submitter receives it: when the storage thread delivered it, and the result.
type Delivered = (Instant, StoreResult);

/// The storage thread and the submitters' inboxes.
#[derive(Debug)]
pub struct Harness {
    handle: StoreHandle,
    join: JoinHandle<()>,
    inboxes: Vec<Receiver<Delivered>>,
}

/// What one phase measured, merged over its submitters.
#[derive(Debug)]
pub struct Phase {
    /// Requests queued.
    pub sent: u64,
    /// Requests answered with success.
    pub acked: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Requests refused because the queue was full (the server answers "overloaded").
    pub overloaded: u64,
    /// Requests still unanswered when the phase gave up waiting ([`DRAIN`]).
    pub unanswered: u64,
    /// Error messages and how often each came.
    pub reasons: BTreeMap<String, u64>,
    /// Latency of successful requests, µs (for open loops: from the intended send time).
    pub latency: Histogram<u64>,
    /// Latency of the large Yjs updates, kept apart when `split_large`.
    pub large: Histogram<u64>,
    /// Whether large updates are recorded apart (open loops) or with the others (closed loops,
    /// where latency is mostly time in the queue, whatever the size).
    split_large: bool,
    /// Messages in the pages and heads read (reads only).
    pub messages_read: u64,
    /// From the phase's start to the last answer, seconds.
    pub window_s: f64,
    /// Group commits (transactions) during the phase.
    pub commits: u64,
}

impl Phase {
    fn new(split_large: bool) -> Phase {
        Phase {
            split_large,
            sent: 0,
            acked: 0,
            errors: 0,
            overloaded: 0,
            unanswered: 0,
            reasons: BTreeMap::new(),
            latency: hist::new_hist(),
            large: hist::new_hist(),
            messages_read: 0,
            window_s: 0.0,
            commits: 0,
        }
    }

    /// Successful requests per second over the phase's window.
    pub fn per_s(&self) -> f64 {
        if self.window_s > 0.0 {
            (self.acked as f64) / self.window_s
        } else {
            0.0
        }
    }

    fn merge(&mut self, other: Phase) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.errors += other.errors;
        self.overloaded += other.overloaded;
        self.unanswered += other.unanswered;
        for (reason, n) in other.reasons {
            self.add_reason(reason, n);
        }
        // Both histograms have the same fixed bounds, so adding cannot fail.
        let _ = hist::merge(&mut self.latency, &other.latency);
        let _ = hist::merge(&mut self.large, &other.large);
        self.messages_read += other.messages_read;
        self.window_s = self.window_s.max(other.window_s);
    }

    fn add_reason(&mut self, reason: String, n: u64) {
        if self.reasons.len() < MAX_REASONS || self.reasons.contains_key(&reason) {
            *self.reasons.entry(reason).or_default() += n;
        }
    }

    /// Counts one answer: its latency from `start + tag.ns`, or its error.
    fn answer(&mut self, start: Instant, at: Instant, result: &StoreResult) {
        let tag = Tag::decode(tag_of(result));
        self.window_s = self.window_s.max(at.saturating_duration_since(start).as_secs_f64());
        match error_of(result) {
            None => {
                self.acked += 1;
                let intended = start + Duration::from_nanos(tag.ns);
                let h = if tag.large && self.split_large { &mut self.large } else { &mut self.latency };
                hist::record(h, hist::latency_from_intended(intended, at));
            }
            Some(e) => {
                self.errors += 1;
                self.add_reason(e, 1);
            }
        }
    }
}

/// The tag a result carries.
fn tag_of(r: &StoreResult) -> u64 {
    match r {
        StoreResult::Appended { tag, .. }
        | StoreResult::RoomHead { tag, .. }
        | StoreResult::History { tag, .. }
        | StoreResult::LogAppended { tag, .. }
        | StoreResult::LogLoaded { tag, .. }
        | StoreResult::LogCompacted { tag, .. }
        | StoreResult::GeoLoaded { tag, .. }
        | StoreResult::GeoDone { tag, .. } => *tag,
    }
}

/// The error a result reports, if any.
fn error_of(r: &StoreResult) -> Option<String> {
    let e = match r {
        StoreResult::Appended { result, .. }
        | StoreResult::LogAppended { result, .. }
        | StoreResult::LogCompacted { result, .. }
        | StoreResult::GeoDone { result, .. } => result.as_ref().err(),
        StoreResult::RoomHead { result, .. } => result.as_ref().err(),
        StoreResult::History { result, .. } => result.as_ref().err(),
        StoreResult::LogLoaded { result, .. } => result.as_ref().err(),
        StoreResult::GeoLoaded { result, .. } => result.as_ref().err(),
    };
    e.map(|e| e.to_string())
}

/// How a wait for an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Answer,
    Timeout,
    /// The storage thread is gone: no answer will come.
    Closed,
}

/// A submitter's view: its index (the "worker" results are delivered to) and its inbox.
struct Submitter<'a> {
    me: usize,
    handle: &'a StoreHandle,
    inbox: &'a Receiver<Delivered>,
    outstanding: u64,
    phase: Phase,
}

impl Submitter<'_> {
    fn submit(&mut self, req: StoreRequest) -> Result<(), SubmitError> {
        match self.handle.submit(self.me, req) {
            Ok(()) => {
                self.sent_one();
                Ok(())
            }
            Err(SubmitError::Full) => {
                self.phase.overloaded += 1;
                Err(SubmitError::Full)
            }
            Err(SubmitError::Closed) => Err(SubmitError::Closed),
        }
    }

    fn sent_one(&mut self) {
        self.phase.sent += 1;
        self.outstanding += 1;
    }

    /// Waits until `deadline` for one answer and counts it.
    fn receive(&mut self, start: Instant, deadline: Instant) -> Wait {
        match self.inbox.recv_deadline(deadline) {
            Ok((at, result)) => {
                self.outstanding = self.outstanding.saturating_sub(1);
                self.phase.answer(start, at, &result);
                Wait::Answer
            }
            Err(RecvTimeoutError::Timeout) => Wait::Timeout,
            Err(RecvTimeoutError::Disconnected) => Wait::Closed,
        }
    }

    /// Counts every answer already in the inbox.
    fn receive_ready(&mut self, start: Instant) {
        while let Ok((at, result)) = self.inbox.try_recv() {
            self.outstanding = self.outstanding.saturating_sub(1);
            self.phase.answer(start, at, &result);
        }
    }

    /// Waits for the outstanding answers, at most [`DRAIN`]; the rest count as unanswered.
    fn drain(mut self, start: Instant) -> Phase {
        let deadline = Instant::now() + DRAIN;
        while self.outstanding > 0 && self.receive(start, deadline) == Wait::Answer {}
        self.phase.unanswered += self.outstanding;
        self.phase
    }
}

impl Harness {
    /// Starts the storage thread on `backend` with a queue of `queue` requests, delivering to
    /// `submitters` inboxes.
    pub fn start(backend: Box<dyn Backend>, queue: usize, submitters: usize) -> Harness {
        let (txs, inboxes): (Vec<Sender<Delivered>>, Vec<Receiver<Delivered>>) =
            (0..submitters).map(|_| crossbeam_channel::bounded(INBOX)).unzip();
        let (handle, join) = store::spawn(
            backend,
            queue,
            // A submitter that has stopped listening is gone with its inbox: nothing to deliver to.
            Box::new(move |worker, result| {
                let _ = txs[worker].send((Instant::now(), result));
            }),
        );
        Harness { handle, join, inboxes }
    }

    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        self.handle.backend()
    }

    fn commits(&self) -> u64 {
        self.handle.stats().commits.load(Ordering::Relaxed)
    }

    /// Sends `rate` requests per second in all, spread evenly over one workload per submitter, for
    /// `seconds`; then waits for the answers.
    pub fn open_loop<W: Workload>(&self, workloads: &mut [W], rate: f64, seconds: f64) -> Phase {
        let interval = Duration::from_secs_f64(workloads.len() as f64 / rate);
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(seconds);
        let commits = self.commits();
        let mut phase = self.run(workloads, start, true, |s, w| {
            // Submitter i's schedule is offset by i requests of the whole stream.
            let mut next = start + Duration::from_secs_f64(s.me as f64 / rate);
            while next < end {
                let now = Instant::now();
                // Behind schedule (a stall), everything due goes out at once: its latency still
                // counts from when it was due.
                while next <= now && next < end {
                    let ns = next.duration_since(start).as_nanos() as u64;
                    if s.submit(w.next(ns)) == Err(SubmitError::Closed) {
                        return;
                    }
                    next += interval;
                }
                s.receive_ready(start);
                if next < end && s.receive(start, next) == Wait::Closed {
                    return;
                }
            }
        });
        phase.commits = self.commits() - commits;
        phase
    }

    /// Keeps `in_flight` requests per submitter outstanding for `seconds`; then waits for the
    /// answers. Latency counts from each request's submission.
    pub fn closed_loop<W: Workload>(&self, workloads: &mut [W], in_flight: u64, seconds: f64) -> Phase {
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(seconds);
        let commits = self.commits();
        let mut phase = self.run(workloads, start, false, |s, w| {
            while Instant::now() < end {
                while s.outstanding < in_flight {
                    let ns = start.elapsed().as_nanos() as u64;
                    match s.submit(w.next(ns)) {
                        Ok(()) => {}
                        // Other submitters filled the queue: wait for an answer of ours.
                        Err(SubmitError::Full) => break,
                        Err(SubmitError::Closed) => return,
                    }
                }
                if s.receive(start, end) == Wait::Closed {
                    return;
                }
            }
        });
        phase.commits = self.commits() - commits;
        phase
    }

    /// Runs `drive` on one thread per workload (submitter `i` drives workload `i`), then drains each
    /// submitter and merges what they measured. Tags count from `start`.
    fn run<W: Workload>(
        &self,
        workloads: &mut [W],
        start: Instant,
        split_large: bool,
        drive: impl Fn(&mut Submitter, &mut W) + Sync,
    ) -> Phase {
        assert!(workloads.len() <= self.inboxes.len(), "more workloads than inboxes");
        let drive = &drive;
        let phases: Vec<Phase> = std::thread::scope(|scope| {
            let threads: Vec<_> = workloads
                .iter_mut()
                .enumerate()
                .map(|(me, w)| {
                    let inbox = &self.inboxes[me];
                    let handle = &self.handle;
                    scope.spawn(move || {
                        let mut s =
                            Submitter { me, handle, inbox, outstanding: 0, phase: Phase::new(split_large) };
                        drive(&mut s, w);
                        s.drain(start)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().expect("a submitter thread panicked")).collect()
        });
        let mut merged = Phase::new(split_large);
        for p in phases {
            merged.merge(p);
        }
        merged
    }

    /// Writes `count` requests of `workload` through submitter 0, up to `in_flight` at a time, and
    /// waits for them; stops early after `limit`. For filling a room before reading it.
    pub fn fill<W: Workload>(&self, workload: &mut W, count: u64, in_flight: u64, limit: Duration) -> Phase {
        let start = Instant::now();
        let deadline = start + limit;
        let mut s = Submitter {
            me: 0,
            handle: &self.handle,
            inbox: &self.inboxes[0],
            outstanding: 0,
            phase: Phase::new(false),
        };
        let mut queued = 0;
        while (queued < count || s.outstanding > 0) && Instant::now() < deadline {
            while queued < count && s.outstanding < in_flight {
                let ns = start.elapsed().as_nanos() as u64;
                match s.submit(workload.next(ns)) {
                    Ok(()) => queued += 1,
                    Err(_) => break,
                }
            }
            if s.receive(start, deadline) != Wait::Answer {
                break;
            }
        }
        s.drain(start)
    }

    /// Sends reads one at a time through submitter 0 — `read(i)` builds the i-th, tagged with its
    /// send time by this function — until `count` were answered or `seconds` passed. `check`
    /// returns how many messages a successful answer holds, or why it is wrong (then it counts as
    /// an error).
    pub fn reads(
        &self,
        count: u64,
        seconds: f64,
        mut read: impl FnMut(u64, u64) -> StoreRequest,
        check: impl Fn(&StoreResult) -> Result<u64, String>,
    ) -> Phase {
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(seconds);
        let inbox = &self.inboxes[0];
        let mut phase = Phase::new(false);
        for i in 0..count {
            if Instant::now() >= end {
                break;
            }
            let ns = start.elapsed().as_nanos() as u64;
            match self.handle.submit(0, read(i, Tag { ns, large: false }.encode())) {
                Ok(()) => phase.sent += 1,
                Err(SubmitError::Full) => {
                    phase.overloaded += 1;
                    continue;
                }
                Err(SubmitError::Closed) => break,
            }
            let (at, result) = match inbox.recv_timeout(DRAIN) {
                Ok(delivered) => delivered,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    phase.unanswered += 1;
                    break;
                }
            };
            if error_of(&result).is_none() {
                if let Err(reason) = check(&result).map(|messages| phase.messages_read += messages) {
                    phase.errors += 1;
                    phase.add_reason(reason, 1);
                    continue;
                }
            }
            phase.answer(start, at, &result);
        }
        phase
    }

    /// Stops the storage thread after it committed everything queued.
    pub fn stop(self) {
        let Harness { handle, join, inboxes } = self;
        drop(handle);
        // The thread may be waiting to deliver into a full inbox; emptying them lets it finish.
        let stopping = std::thread::spawn(move || {
            let _ = join.join();
        });
        while !stopping.is_finished() {
            for inbox in &inboxes {
                while inbox.try_recv().is_ok() {}
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = stopping.join();
    }
}
