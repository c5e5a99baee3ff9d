//! Counters an agent's threads share (relaxed atomics) and the snapshot sent to the coordinator.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::sources::Failure;

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
    pub published: AtomicU64,
    pub acked: AtomicU64,
    pub ack_errors: AtomicU64,
    pub delivered: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl Counters {
    /// Add one.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    /// Count a failure.
    pub fn fail(&self, f: Failure) {
        self.failures[f.index()].fetch_add(1, Ordering::Relaxed);
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
            failures: Failure::ALL
                .iter()
                .map(|f| (*f, l(&self.failures[f.index()])))
                .filter(|(_, n)| *n > 0)
                .collect(),
            published: l(&self.published),
            acked: l(&self.acked),
            ack_errors: l(&self.ack_errors),
            delivered: l(&self.delivered),
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
    pub published: u64,
    pub acked: u64,
    pub ack_errors: u64,
    pub delivered: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
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
        self.published += o.published;
        self.acked += o.acked;
        self.ack_errors += o.ack_errors;
        self.delivered += o.delivered;
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
}
