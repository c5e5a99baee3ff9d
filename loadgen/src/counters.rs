//! Counters an agent's threads share (relaxed atomics) and the snapshot sent to the coordinator.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::geo::EventKind;
use crate::sources::Failure;

/// Distinct error reasons counted; further ones count as [`OTHER_REASONS`], so a server that puts
/// ids in its reasons cannot grow the counters without bound.
pub const MAX_REASONS: usize = 32;
/// Where reasons past [`MAX_REASONS`] are counted.
pub const OTHER_REASONS: &str = "(other reasons)";

/// Live counters of one agent.
#[derive(Debug, Default)]
pub struct Counters {
    pub attempted: AtomicU64,
    pub tcp_connected: AtomicU64,
    pub upgraded: AtomicU64,
    pub joined: AtomicU64,
    /// Connections open now (gauge).
    pub open: AtomicU64,
    pub failures: [AtomicU64; Failure::ALL.len()],
    /// Connection attempts that failed and were made again (`--connect-retries`); not in `failures`.
    pub retried: AtomicU64,
    /// Messages published (geo: updates, `batch` per push).
    pub published: AtomicU64,
    /// Geo pushes sent.
    pub pushes: AtomicU64,
    /// Pushes answered `ok` (geo: updates applied, not counting `out_of_order`).
    pub acked: AtomicU64,
    /// Geo updates ignored as out of order.
    pub out_of_order: AtomicU64,
    /// Pushes (geo: updates) answered with an error; by reason in `reply_errors`.
    pub ack_errors: AtomicU64,
    /// Error replies by reason: a rare path, so a lock is fine.
    pub reply_errors: Mutex<Vec<(String, u64)>>,
    /// Messages delivered (geo: events received).
    pub delivered: AtomicU64,
    /// Geo events received, by [`EventKind::index`].
    pub events: [AtomicU64; EventKind::ALL.len()],
    /// Geo placement (before the measure): updates sent to put each object at its start.
    pub placing: AtomicU64,
    /// Placement updates answered `ok` (applied, or ignored as out of order).
    pub placed: AtomicU64,
    /// Placement updates refused, by reason.
    pub place_errors: Mutex<Vec<(String, u64)>>,
    /// Geo events from before the measure (their `ts` is earlier than its start): caused by the
    /// placement, left out of `delivered`, `events` and the event latency.
    pub placement_events: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl Counters {
    /// Add one.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    /// Add `n`.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    /// Count a failure.
    pub fn fail(&self, f: Failure) {
        self.failures[f.index()].fetch_add(1, Ordering::Relaxed);
    }
    /// Count `n` errors for one reason (a refused push counts one per update it carried).
    pub fn reply_error(&self, reason: &str, n: u64) {
        Counters::add(&self.ack_errors, n);
        let Ok(mut reasons) = self.reply_errors.lock() else { return };
        count_reason(&mut reasons, reason, n);
    }
    /// Count `n` placement updates refused for one reason.
    pub fn place_error(&self, reason: &str, n: u64) {
        let Ok(mut reasons) = self.place_errors.lock() else { return };
        count_reason(&mut reasons, reason, n);
    }

    /// A consistent-enough copy for reports.
    pub fn snapshot(&self) -> Snapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            attempted: l(&self.attempted),
            tcp_connected: l(&self.tcp_connected),
            upgraded: l(&self.upgraded),
            joined: l(&self.joined),
            open: l(&self.open),
            retried: l(&self.retried),
            failures: Failure::ALL
                .iter()
                .map(|f| (*f, l(&self.failures[f.index()])))
                .filter(|(_, n)| *n > 0)
                .collect(),
            published: l(&self.published),
            pushes: l(&self.pushes),
            acked: l(&self.acked),
            out_of_order: l(&self.out_of_order),
            ack_errors: l(&self.ack_errors),
            reply_errors: self.reply_errors.lock().map(|r| r.clone()).unwrap_or_default(),
            delivered: l(&self.delivered),
            events: EventKind::ALL
                .iter()
                .map(|k| (k.name().to_string(), l(&self.events[k.index()])))
                .filter(|(_, n)| *n > 0)
                .collect(),
            placing: l(&self.placing),
            placed: l(&self.placed),
            place_errors: self.place_errors.lock().map(|r| r.clone()).unwrap_or_default(),
            placement_events: l(&self.placement_events),
            bytes_in: l(&self.bytes_in),
            bytes_out: l(&self.bytes_out),
        }
    }
}

/// Counter values at one moment; summed across agents by the coordinator.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    pub attempted: u64,
    pub tcp_connected: u64,
    pub upgraded: u64,
    pub joined: u64,
    pub open: u64,
    pub failures: Vec<(Failure, u64)>,
    /// Failed attempts made again (`--connect-retries`), by any cause; a connection that failed on its
    /// last attempt is in `failures` instead.
    #[serde(default)]
    pub retried: u64,
    pub published: u64,
    #[serde(default)]
    pub pushes: u64,
    pub acked: u64,
    #[serde(default)]
    pub out_of_order: u64,
    pub ack_errors: u64,
    /// Error replies by reason.
    #[serde(default)]
    pub reply_errors: Vec<(String, u64)>,
    pub delivered: u64,
    /// Geo events by kind (`enter`, `exit`, ...).
    #[serde(default)]
    pub events: Vec<(String, u64)>,
    /// Geo placement: updates sent, answered `ok`, refused by reason; events it caused.
    #[serde(default)]
    pub placing: u64,
    #[serde(default)]
    pub placed: u64,
    #[serde(default)]
    pub place_errors: Vec<(String, u64)>,
    #[serde(default)]
    pub placement_events: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Add `n` to `reason`'s count, keeping at most [`MAX_REASONS`] of them.
fn count_reason(reasons: &mut Vec<(String, u64)>, reason: &str, n: u64) {
    if let Some((_, m)) = reasons.iter_mut().find(|(r, _)| r == reason) {
        *m += n;
        return;
    }
    let reason = if reasons.len() < MAX_REASONS { reason } else { OTHER_REASONS };
    match reasons.iter_mut().find(|(r, _)| r == reason) {
        Some((_, m)) => *m += n,
        None => reasons.push((reason.to_string(), n)),
    }
}

impl Snapshot {
    /// Total failures of every kind.
    pub fn failed(&self) -> u64 {
        self.failures.iter().map(|(_, n)| n).sum()
    }

    /// Add another agent's counters.
    pub fn add(&mut self, o: &Snapshot) {
        self.attempted += o.attempted;
        self.tcp_connected += o.tcp_connected;
        self.upgraded += o.upgraded;
        self.joined += o.joined;
        self.open += o.open;
        self.retried += o.retried;
        self.published += o.published;
        self.pushes += o.pushes;
        self.acked += o.acked;
        self.out_of_order += o.out_of_order;
        self.ack_errors += o.ack_errors;
        self.delivered += o.delivered;
        for (reason, n) in &o.reply_errors {
            count_reason(&mut self.reply_errors, reason, *n);
        }
        self.reply_errors.sort();
        for (kind, n) in &o.events {
            match self.events.iter_mut().find(|(k, _)| k == kind) {
                Some((_, m)) => *m += n,
                None => self.events.push((kind.clone(), *n)),
            }
        }
        self.events.sort_by_key(|(k, _)| EventKind::of(k).index());
        self.placing += o.placing;
        self.placed += o.placed;
        self.placement_events += o.placement_events;
        for (reason, n) in &o.place_errors {
            count_reason(&mut self.place_errors, reason, *n);
        }
        self.place_errors.sort();
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        for (f, n) in &o.failures {
            match self.failures.iter_mut().find(|(g, _)| g == f) {
                Some((_, m)) => *m += n,
                None => self.failures.push((*f, *n)),
            }
        }
        self.failures.sort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_add_up() {
        let c = Counters::default();
        Counters::inc(&c.joined);
        c.fail(Failure::Timeout);
        let mut a = c.snapshot();
        let b = c.snapshot();
        a.add(&b);
        assert_eq!(a.joined, 2);
        assert_eq!(a.failures, vec![(Failure::Timeout, 2)]);
        assert_eq!(a.failed(), 2);
    }

    #[test]
    fn geo_replies_and_events_add_up_by_reason_and_kind() {
        let c = Counters::default();
        c.reply_error("ts is in the future", 1);
        c.reply_error("ts is in the future", 1);
        c.reply_error("forbidden", 1);
        Counters::inc(&c.events[EventKind::Exit.index()]);
        Counters::inc(&c.events[EventKind::Enter.index()]);
        Counters::inc(&c.out_of_order);
        c.reply_error("forbidden", 10);
        let mut a = c.snapshot();
        assert_eq!(a.ack_errors, 13, "a refused push of 10 updates counts 10");
        assert_eq!(a.reply_errors, vec![("ts is in the future".into(), 2), ("forbidden".into(), 11)]);
        assert_eq!(a.events, vec![("enter".into(), 1), ("exit".into(), 1)]);
        let other = Snapshot {
            reply_errors: vec![("overloaded".into(), 4), ("forbidden".into(), 1)],
            events: vec![("cross".into(), 5), ("enter".into(), 2)],
            out_of_order: 2,
            pushes: 5,
            ..Snapshot::default()
        };
        a.add(&other);
        assert_eq!((a.out_of_order, a.pushes), (3, 5));
        assert_eq!(
            a.reply_errors,
            vec![("forbidden".into(), 12), ("overloaded".into(), 4), ("ts is in the future".into(), 2)]
        );
        assert_eq!(a.events, vec![("enter".into(), 3), ("exit".into(), 1), ("cross".into(), 5)]);
    }

    #[test]
    fn placement_is_counted_apart_from_the_measure() {
        let c = Counters::default();
        Counters::add(&c.placing, 30);
        Counters::add(&c.placed, 27);
        c.place_error("lat out of range", 2);
        c.place_error("forbidden", 1);
        Counters::add(&c.placement_events, 40);
        let mut a = c.snapshot();
        assert_eq!((a.placing, a.placed, a.placement_events), (30, 27, 40));
        assert_eq!((a.published, a.acked, a.ack_errors, a.delivered), (0, 0, 0, 0));
        assert!(a.reply_errors.is_empty());
        a.add(&c.snapshot());
        assert_eq!((a.placing, a.placed, a.placement_events), (60, 54, 80));
        assert_eq!(a.place_errors, vec![("forbidden".into(), 2), ("lat out of range".into(), 4)]);
    }

    #[test]
    fn reasons_are_bounded() {
        let c = Counters::default();
        for i in 0..MAX_REASONS + 10 {
            c.reply_error(&format!("no such object obj-{i}"), 1);
        }
        c.reply_error("no such object obj-0", 1);
        let s = c.snapshot();
        assert_eq!(s.reply_errors.len(), MAX_REASONS + 1);
        assert_eq!(s.reply_errors[0], ("no such object obj-0".into(), 2));
        assert_eq!(s.reply_errors.last(), Some(&(OTHER_REASONS.to_string(), 10)));
        assert_eq!(s.ack_errors, MAX_REASONS as u64 + 11);
    }
}
