//! Cross-worker messages: each worker has a bounded inbox plus a `mio::Waker`.
//!
//! A topic's stateful work is owned by one worker (`owner = hash(topic) % workers`); others forward to
//! it through here, and it fans results back out. Sending to oneself goes through a local queue that the
//! worker drains in the same loop turn, so both paths keep the same order of effects.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::Waker;

use crate::phoenix::JoinRef;
use crate::store::StoreResult;
use crate::topics::TopicMsg;

/// A complete, already-encoded WebSocket frame. Shared by every recipient of a broadcast.
pub type Frame = Arc<[u8]>;

/// A connection anywhere in the process: worker index (8 bits), slot generation (24 bits) and slab key
/// (32 bits). The low 56 bits are the connection's `mio::Token` on its worker.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    /// Most workers a process may run (the worker index has 8 bits).
    pub const MAX_WORKERS: usize = 256;
    /// Generations wrap at this bound.
    pub const GEN_MASK: u32 = (1 << 24) - 1;

    /// Pack the three parts.
    pub fn new(worker: usize, gen: u32, key: usize) -> Self {
        debug_assert!(worker < Self::MAX_WORKERS && key <= u32::MAX as usize);
        ConnId(((worker as u64) << 56) | (u64::from(gen & Self::GEN_MASK) << 32) | key as u64)
    }
    /// Worker that owns the connection.
    pub fn worker(self) -> usize {
        (self.0 >> 56) as usize
    }
    /// Slab key on that worker.
    pub fn key(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }
    /// Slot generation.
    pub fn gen(self) -> u32 {
        ((self.0 >> 32) as u32) & Self::GEN_MASK
    }
    /// The `mio::Token` value on the owning worker.
    pub fn token(self) -> usize {
        (self.0 & ((1 << 56) - 1)) as usize
    }
}

/// What travels between workers (and from the storage thread to a worker).
#[derive(Debug)]
pub enum Msg {
    /// Work for the topic's owner.
    Topic(TopicMsg),
    /// Write a frame to one connection, if it still exists.
    ToConn { conn: ConnId, frame: Frame },
    /// The owner's answer to a join. On `ok` the worker records the subscription (if the channel is still
    /// joining with this join ref) and then writes `frames` in order; otherwise it forgets the channel.
    Joined {
        conn: ConnId,
        topic: Arc<str>,
        join_ref: JoinRef,
        ok: bool,
        /// Whether the member also takes presence events.
        presence: bool,
        frames: Vec<Frame>,
    },
    /// Write one frame to each of these connections of the receiving worker, if they still exist.
    ToConns { conns: Vec<ConnId>, frame: Frame },
    /// Write a frame to every local subscriber of `topic` (except one, for broadcast-from).
    Broadcast { topic: Arc<str>, frame: Frame, except: Option<ConnId> },
    /// Close one connection with this WebSocket close code and reason, if it still exists.
    CloseConn { conn: ConnId, code: u16, reason: Box<str> },
    /// Write this complete HTTP response to a connection waiting for one, then close it.
    HttpReply { conn: ConnId, bytes: Vec<u8> },
    /// A storage result for a topic this worker owns.
    Store(StoreResult),
    /// From the cluster link: another node's envelope, a lease answer, a node down or back.
    Cluster(crate::cluster::Inbound),
    /// Begin the graceful drain.
    Shutdown,
}

/// The receiving side of one worker's inbox.
#[derive(Debug)]
pub struct Inbox {
    pub rx: Receiver<Msg>,
    /// Set by a sender that has woken the worker; cleared by the worker before it drains, so a burst of
    /// messages costs one wake-up instead of one `eventfd` write each.
    pub notified: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Peer {
    tx: Sender<Msg>,
    waker: Arc<Waker>,
    notified: Arc<AtomicBool>,
}

/// A worker's (or the storage thread's) way to reach every worker.
#[derive(Clone, Debug)]
pub struct Mailbox {
    peers: Arc<[Peer]>,
    hasher: std::collections::hash_map::RandomState,
}

/// Why a message could not be delivered.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The receiver's inbox is at its bound; the message was dropped.
    Full,
    /// The receiver has exited.
    Closed,
}

impl Mailbox {
    /// Build the inboxes: one `(Inbox, capacity)` per waker given.
    pub fn new(wakers: Vec<Arc<Waker>>, capacity: usize) -> (Mailbox, Vec<Inbox>) {
        let mut peers = Vec::with_capacity(wakers.len());
        let mut inboxes = Vec::with_capacity(wakers.len());
        for waker in wakers {
            let (tx, rx) = crossbeam_channel::bounded(capacity);
            let notified = Arc::new(AtomicBool::new(false));
            peers.push(Peer { tx, waker, notified: notified.clone() });
            inboxes.push(Inbox { rx, notified });
        }
        let mailbox = Mailbox { peers: peers.into(), hasher: std::collections::hash_map::RandomState::new() };
        (mailbox, inboxes)
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.peers.len()
    }

    /// The worker that owns `topic`.
    pub fn owner(&self, topic: &str) -> usize {
        (self.hasher.hash_one(topic) % self.peers.len() as u64) as usize
    }

    /// Deliver without blocking; a full inbox drops the message (the caller counts it).
    pub fn try_send(&self, worker: usize, msg: Msg) -> Result<(), SendError> {
        let peer = &self.peers[worker];
        match peer.tx.try_send(msg) {
            Ok(()) => {
                wake(peer);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                wake(peer);
                Err(SendError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(SendError::Closed),
        }
    }

    /// Deliver, waiting while the inbox is full. Only for threads that are not workers (the storage
    /// thread, the signal thread): a worker must never block on another worker.
    pub fn send_blocking(&self, worker: usize, msg: Msg) -> Result<(), SendError> {
        let peer = &self.peers[worker];
        peer.tx.send(msg).map_err(|_| SendError::Closed)?;
        wake(peer);
        Ok(())
    }
}

fn wake(peer: &Peer) {
    if !peer.notified.swap(true, Ordering::AcqRel) {
        if let Err(e) = peer.waker.wake() {
            tracing::error!(error = %e, "failed to wake worker");
        }
    }
}

/// A worker's outgoing side: messages to itself stay in a local queue, the rest go to the mailbox.
#[derive(Debug)]
pub struct Outbox {
    /// This worker's index.
    pub me: usize,
    /// Every worker.
    pub mailbox: Mailbox,
    /// Messages this worker sent to itself, drained in the same loop turn.
    pub local: VecDeque<Msg>,
    /// Messages dropped because a peer's inbox was full.
    pub dropped: u64,
}

impl Outbox {
    /// Send to a worker (possibly this one). Drops and counts when the peer's inbox is full.
    pub fn send(&mut self, worker: usize, msg: Msg) {
        if worker == self.me {
            self.local.push_back(msg);
        } else if let Err(e) = self.mailbox.try_send(worker, msg) {
            self.dropped += 1;
            if e == SendError::Full && self.dropped.is_power_of_two() {
                tracing::warn!(to = worker, dropped = self.dropped, "worker inbox full: message dropped");
            }
        }
    }

    /// The worker that owns `topic`.
    pub fn owner(&self, topic: &str) -> usize {
        self.mailbox.owner(topic)
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.mailbox.workers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_id_packs_and_unpacks() {
        let id = ConnId::new(255, ConnId::GEN_MASK, u32::MAX as usize);
        assert_eq!(id.worker(), 255);
        assert_eq!(id.gen(), ConnId::GEN_MASK);
        assert_eq!(id.key(), u32::MAX as usize);
        assert!(id.token() < usize::MAX - 2, "conn tokens stay below listener/waker tokens");
        let other = ConnId::new(3, 7, 42);
        assert_eq!((other.worker(), other.gen(), other.key()), (3, 7, 42));
    }
}
