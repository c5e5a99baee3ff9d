//! The publishing thread: sends what workers queue as pipelines on one connection, publishes the
//! node's heartbeat and renews the node's owner leases.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use redis::Value;

use super::envelope::{self, Kind, NODES_CHANNEL};
use super::{connect, Backoff, ClusterStats, Inbound, Shared};

/// Commands sent in one pipeline at most.
const MAX_BATCH: usize = 1024;
/// Longest wait for a command before looking at the clock and the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Renew a lease only while it is still this node's: a lost lease stays lost.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Delete a lease only while it is still this node's.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) else return 0 end";

/// What workers ask of the publishing thread.
#[derive(Debug)]
pub(crate) enum Cmd {
    Publish { channel: String, payload: Vec<u8> },
    Acquire { topic: Arc<str> },
    Release { topic: Arc<str> },
}

/// Not `Debug`: a Redis connection is not.
pub(super) struct Publisher {
    client: redis::Client,
    con: Option<redis::Connection>,
    backoff: Backoff,
    rx: Receiver<Cmd>,
    shared: Shared,
    /// Topics whose lease this node holds, renewed every tick.
    held: HashSet<Arc<str>>,
    heartbeat: Vec<u8>,
}

impl Publisher {
    pub(super) fn new(
        client: redis::Client,
        con: redis::Connection,
        rx: Receiver<Cmd>,
        shared: Shared,
    ) -> Self {
        let heartbeat =
            envelope::encode(Kind::Heartbeat, &shared.node, "", 0, &[]).expect("node ids fit an envelope");
        Publisher {
            client,
            con: Some(con),
            backoff: Backoff::new(),
            rx,
            shared,
            held: HashSet::new(),
            heartbeat,
        }
    }

    fn ttl_ms(&self) -> u64 {
        self.shared.timeout.as_millis() as u64
    }

    pub(super) fn run(mut self) {
        // Three heartbeats and renewals per timeout: one lost to a slow moment does not cost a
        // lease or a node's presences.
        let tick = (self.shared.timeout / 3).max(Duration::from_millis(100));
        let mut next_tick = Instant::now();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now()).min(POLL);
            match self.rx.recv_timeout(wait) {
                Ok(cmd) => batch.push(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.execute(&mut batch);
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + tick;
                self.tick();
            }
            if self.shared.stopping() && self.rx.is_empty() {
                break;
            }
        }
        self.release_all();
    }

    /// The connection, reconnecting when it was lost and the backoff allows.
    fn con(&mut self) -> Option<&mut redis::Connection> {
        if self.con.is_none() && self.backoff.ready() {
            match connect(&self.client) {
                Ok(con) => {
                    tracing::info!("cluster publisher reconnected to Redis");
                    self.backoff.succeeded();
                    self.con = Some(con);
                }
                Err(e) => {
                    self.backoff.failed();
                    tracing::debug!(error = %e, "cluster publisher cannot reach Redis");
                }
            }
        }
        self.con.as_mut()
    }

    /// Run a pipeline; on an I/O error the connection is dropped for a later reconnect.
    fn query(&mut self, pipe: &redis::Pipeline) -> Option<Vec<Value>> {
        let con = self.con()?;
        match pipe.query::<Vec<Value>>(con) {
            Ok(values) => Some(values),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    tracing::warn!(error = %e, "cluster publisher lost Redis: reconnecting");
                    self.con = None;
                    self.backoff.failed();
                } else {
                    tracing::warn!(error = %e, "cluster pipeline failed");
                }
                None
            }
        }
    }

    fn execute(&mut self, batch: &mut Vec<Cmd>) {
        let mut pipe = redis::pipe();
        let ttl = self.ttl_ms();
        for cmd in batch.iter() {
            match cmd {
                Cmd::Publish { channel, payload } => {
                    pipe.cmd("PUBLISH").arg(channel).arg(payload);
                }
                Cmd::Acquire { topic } => {
                    let key = envelope::lease_key(topic);
                    pipe.cmd("SET").arg(&key).arg(&*self.shared.node).arg("NX").arg("PX").arg(ttl);
                    pipe.cmd("GET").arg(&key);
                }
                Cmd::Release { topic } => {
                    pipe.cmd("EVAL")
                        .arg(RELEASE)
                        .arg(1)
                        .arg(envelope::lease_key(topic))
                        .arg(&*self.shared.node);
                }
            }
        }
        let values = self.query(&pipe);
        let mut values = values.into_iter().flatten();
        let stats = &self.shared.stats;
        for cmd in batch.drain(..) {
            match cmd {
                Cmd::Publish { .. } => {
                    let counter = if values.next().is_some() { &stats.published } else { &stats.dropped };
                    ClusterStats::add(counter, 1);
                }
                Cmd::Acquire { topic } => {
                    let _set = values.next();
                    let owner = match values.next() {
                        Some(Value::BulkString(b)) => String::from_utf8(b).ok().map(Arc::<str>::from),
                        _ => None,
                    };
                    if owner.as_deref() == Some(&*self.shared.node) {
                        self.held.insert(topic.clone());
                    }
                    self.shared.to_home(&topic.clone(), Inbound::Lease { topic, owner });
                }
                Cmd::Release { topic } => {
                    let _ = values.next();
                    self.held.remove(&topic);
                }
            }
        }
        stats.leases_held.store(self.held.len() as u64, Ordering::Relaxed);
    }

    /// Heartbeat and lease renewal.
    fn tick(&mut self) {
        let mut pipe = redis::pipe();
        pipe.cmd("PUBLISH").arg(NODES_CHANNEL).arg(&self.heartbeat);
        let held: Vec<Arc<str>> = self.held.iter().cloned().collect();
        for topic in &held {
            pipe.cmd("EVAL")
                .arg(RENEW)
                .arg(1)
                .arg(envelope::lease_key(topic))
                .arg(&*self.shared.node)
                .arg(self.ttl_ms());
        }
        let Some(values) = self.query(&pipe) else {
            // Leases stay held for now: if Redis is back within the timeout they are renewed, and
            // otherwise the next renewal finds them gone.
            return;
        };
        for (topic, v) in held.into_iter().zip(values.into_iter().skip(1)) {
            if !matches!(v, Value::Int(1)) {
                tracing::info!(topic = %topic, "owner lease lost");
                self.held.remove(&topic);
                self.shared.to_home(&topic.clone(), Inbound::LeaseLost { topic });
            }
        }
        self.shared.stats.leases_held.store(self.held.len() as u64, Ordering::Relaxed);
    }

    /// On the way out: give up every lease so another node takes over at once.
    fn release_all(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for topic in &self.held {
            pipe.cmd("EVAL").arg(RELEASE).arg(1).arg(envelope::lease_key(topic)).arg(&*self.shared.node);
        }
        if self.query(&pipe).is_some() {
            tracing::info!(leases = self.held.len(), "owner leases released");
        }
        self.held.clear();
        self.shared.stats.leases_held.store(0, Ordering::Relaxed);
    }
}
