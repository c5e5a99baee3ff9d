//! Cluster mode: several `rusher` processes (nodes) share topics through Redis pub/sub.
//!
//! Each node runs a cluster link: two dedicated threads, never a worker. The publishing thread owns
//! one Redis connection and sends what workers queue (publishes, lease commands) as pipelines, plus
//! the node's heartbeat and lease renewals; its queue is bounded and a full queue drops with a count.
//! The subscribing thread owns a SUBSCRIBE connection: a topic's channel while the node has members
//! of it, the node's own channel (requests to it, replies for it) and the heartbeat channel. It
//! drops the node's own publishes (the node delivered them locally already), hands everything else
//! to the topic's home worker through the mailbox, and tells every worker when a node falls silent
//! or comes back. When Redis goes away both threads reconnect with a bounded backoff; the
//! subscriber then subscribes every channel it needs again, counts and logs it.
//!
//! Without `--cluster` none of this exists: workers hold `None` and make no Redis call.

pub mod envelope;
pub mod ownership;
mod publisher;
mod subscriber;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use crate::mailbox::Mailbox;
pub use envelope::{Envelope, Kind};

/// Backoff bounds for reconnecting to Redis.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long one Redis command (or connection attempt) may take before the link gives up on it.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Counters for `/metrics`, shared by the link's threads and the workers.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Envelopes published to Redis.
    pub published: AtomicU64,
    /// Envelopes from other nodes handed to workers.
    pub received: AtomicU64,
    /// Envelopes and commands dropped: the outgoing queue was full, Redis was unreachable, or an
    /// envelope from Redis was malformed.
    pub dropped: AtomicU64,
    /// Times the subscriber reconnected and subscribed its channels again.
    pub resubscribes: AtomicU64,
    /// Owner leases this node holds (gauge).
    pub leases_held: AtomicU64,
    /// Requests forwarded to an owner node that did not answer in time.
    pub forward_timeouts: AtomicU64,
    /// Other nodes heard from within the timeout (gauge).
    pub nodes: AtomicU64,
}

impl ClusterStats {
    fn add(c: &AtomicU64, n: u64) -> u64 {
        c.fetch_add(n, Ordering::Relaxed) + n
    }

    /// The Prometheus families, as (name, type, help, value).
    pub fn families(&self) -> [(&'static str, &'static str, &'static str, u64); 7] {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("published_total", "counter", "Envelopes published to Redis.", l(&self.published)),
            ("received_total", "counter", "Envelopes from other nodes handed to workers.", l(&self.received)),
            (
                "dropped_total",
                "counter",
                "Envelopes dropped: outgoing queue full, Redis unreachable, or malformed.",
                l(&self.dropped),
            ),
            (
                "resubscribes_total",
                "counter",
                "Reconnections to Redis after which every channel was subscribed again.",
                l(&self.resubscribes),
            ),
            ("leases_held", "gauge", "Topic owner leases this node holds.", l(&self.leases_held)),
            (
                "forward_timeouts_total",
                "counter",
                "Requests forwarded to an owner node that did not answer in time.",
                l(&self.forward_timeouts),
            ),
            ("nodes", "gauge", "Other nodes heard from within the cluster timeout.", l(&self.nodes)),
        ]
    }
}

/// What the link hands to a worker (inside [`crate::mailbox::Msg::Cluster`]).
#[derive(Debug, Clone)]
pub enum Inbound {
    /// An envelope from another node, for the home worker of its topic.
    Remote(Envelope),
    /// The answer to [`Cluster::acquire`]: the node holding the topic's lease, or `None` when Redis
    /// could not be asked.
    Lease { topic: Arc<str>, owner: Option<Arc<str>> },
    /// A lease this node held could not be renewed: another node may own the topic now.
    LeaseLost { topic: Arc<str> },
    /// The topic's channel is subscribed (at first, or again after Redis came back): what other
    /// nodes publish from now on arrives.
    Subscribed { topic: Arc<str> },
    /// A node fell silent for the cluster timeout (sent to every worker).
    NodeDown { node: Arc<str> },
    /// A node declared down is heard from again (sent to every worker).
    NodeUp { node: Arc<str> },
}

/// Why a message could not be queued for Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cluster link's queue is full")]
pub struct Dropped;

/// Why the link could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL is not a Redis URL.
    #[error("--cluster must be redis://HOST[:PORT][/DB], not {0:?}")]
    Url(String),
    /// Redis did not answer.
    #[error("cannot reach the cluster's Redis at {url}: {msg}")]
    Connect { url: String, msg: String },
    /// A thread could not be started.
    #[error("cannot start the cluster link: {0}")]
    Io(#[from] std::io::Error),
}

/// What the link needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `redis://...`
    pub url: String,
    /// A node silent this long is down; leases live this long without renewal; forwarded requests
    /// get an error after this long without an answer.
    pub timeout: Duration,
    /// Commands the publishing queue holds before it drops.
    pub queue: usize,
}

/// The workers' side of the link. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cluster {
    node: Arc<str>,
    pubs: Sender<publisher::Cmd>,
    subs: Sender<subscriber::Cmd>,
    stats: Arc<ClusterStats>,
    timeout: Duration,
}

impl Cluster {
    /// This node's id: random per process, so a restarted node is a new node.
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    /// The cluster timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The shared counters.
    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// The shared counters, for the metrics registry.
    pub fn stats_arc(&self) -> Arc<ClusterStats> {
        self.stats.clone()
    }

    /// Publish to every other node with members of `topic`.
    pub fn publish(&self, topic: &str, kind: Kind, req_id: u64, body: &[u8]) -> Result<(), Dropped> {
        self.queue_envelope(envelope::topic_channel(topic), kind, topic, req_id, body)
    }

    /// Send to one node (a request to an owner, or a reply to the node that asked).
    pub fn send(&self, node: &str, topic: &str, kind: Kind, req_id: u64, body: &[u8]) -> Result<(), Dropped> {
        self.queue_envelope(envelope::node_channel(node), kind, topic, req_id, body)
    }

    fn queue_envelope(
        &self,
        channel: String,
        kind: Kind,
        topic: &str,
        req_id: u64,
        body: &[u8],
    ) -> Result<(), Dropped> {
        let Ok(payload) = envelope::encode(kind, &self.node, topic, req_id, body) else {
            ClusterStats::add(&self.stats.dropped, 1);
            return Err(Dropped);
        };
        self.queue(publisher::Cmd::Publish { channel, payload })
    }

    /// Ask for the topic's owner lease; the answer comes back as [`Inbound::Lease`] to the topic's
    /// home worker. The lease is this node's if nobody held it; it is renewed until released.
    pub fn acquire(&self, topic: Arc<str>) -> Result<(), Dropped> {
        self.queue(publisher::Cmd::Acquire { topic })
    }

    /// Give up the topic's lease if this node holds it.
    pub fn release(&self, topic: Arc<str>) {
        let _ = self.queue(publisher::Cmd::Release { topic });
    }

    /// Subscribe the topic's channel (the node has members of it now).
    pub fn subscribe(&self, topic: Arc<str>) {
        self.control(subscriber::Cmd::Subscribe(topic));
    }

    /// Unsubscribe the topic's channel (the node's last member left).
    pub fn unsubscribe(&self, topic: Arc<str>) {
        self.control(subscriber::Cmd::Unsubscribe(topic));
    }

    fn queue(&self, cmd: publisher::Cmd) -> Result<(), Dropped> {
        match self.pubs.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let n = ClusterStats::add(&self.stats.dropped, 1);
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "cluster publishing queue full: message dropped");
                }
                Err(Dropped)
            }
        }
    }

    fn control(&self, cmd: subscriber::Cmd) {
        if self.subs.try_send(cmd).is_err() {
            let n = ClusterStats::add(&self.stats.dropped, 1);
            tracing::warn!(dropped = n, "cluster subscription queue full: a (un)subscribe was dropped");
        }
    }

    /// Count a forwarded request that timed out.
    pub fn count_forward_timeout(&self) {
        ClusterStats::add(&self.stats.forward_timeouts, 1);
    }
}

#[cfg(test)]
impl Cluster {
    /// A link without threads or Redis, for tests of the workers' side: what it is asked to
    /// publish, acquire or subscribe waits in the returned receivers.
    pub(crate) fn detached(
        node: &str,
        timeout: Duration,
        queue: usize,
    ) -> (Cluster, crossbeam_channel::Receiver<publisher::Cmd>, crossbeam_channel::Receiver<subscriber::Cmd>)
    {
        let (pubs, pub_rx) = crossbeam_channel::bounded(queue);
        let (subs, sub_rx) = crossbeam_channel::bounded(queue);
        let cluster = Cluster { node: node.into(), pubs, subs, stats: Default::default(), timeout };
        (cluster, pub_rx, sub_rx)
    }
}

/// The running link's threads.
#[derive(Debug)]
pub struct Link {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Link {
    /// Stop after the publishing queue is flushed and this node's leases are released.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A node id: 16 hex digits, unique per process start.
fn new_node_id() -> Arc<str> {
    use std::hash::BuildHasher;
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let h = std::collections::hash_map::RandomState::new().hash_one((std::process::id(), nanos));
    format!("{h:016x}").into()
}

/// The URL without a password, for logs.
pub fn redact(url: &str) -> std::borrow::Cow<'_, str> {
    crate::store::redact_url(url)
}

/// Whether `url` names Redis.
pub fn valid_url(url: &str) -> bool {
    url.strip_prefix("redis://").is_some_and(|rest| !rest.is_empty())
}

/// Connect to Redis (failing at once if it does not answer) and start the link's threads.
pub fn start(settings: &Settings, mailbox: Mailbox) -> Result<(Cluster, Link), ClusterError> {
    if !valid_url(&settings.url) {
        return Err(ClusterError::Url(redact(&settings.url).into_owned()));
    }
    let connect_err = |e: redis::RedisError| ClusterError::Connect {
        url: redact(&settings.url).into_owned(),
        msg: e.to_string(),
    };
    let client = redis::Client::open(settings.url.as_str()).map_err(connect_err)?;
    let first = connect(&client).map_err(connect_err)?;
    let second = connect(&client).map_err(connect_err)?;
    let node = new_node_id();
    let stats = Arc::new(ClusterStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (pub_tx, pub_rx) = crossbeam_channel::bounded(settings.queue);
    let (sub_tx, sub_rx) = crossbeam_channel::bounded(settings.queue);
    let shared = Shared {
        node: node.clone(),
        mailbox,
        stats: stats.clone(),
        stop: stop.clone(),
        timeout: settings.timeout,
    };
    let publisher = publisher::Publisher::new(client.clone(), first, pub_rx, shared.clone());
    let subscriber = subscriber::Subscriber::new(client, second, sub_rx, shared);
    let threads = vec![
        std::thread::Builder::new().name("rusher-cluster-pub".into()).spawn(move || publisher.run())?,
        std::thread::Builder::new().name("rusher-cluster-sub".into()).spawn(move || subscriber.run())?,
    ];
    let cluster = Cluster { node, pubs: pub_tx, subs: sub_tx, stats, timeout: settings.timeout };
    Ok((cluster, Link { stop, threads }))
}

/// What both threads share.
#[derive(Debug, Clone)]
struct Shared {
    node: Arc<str>,
    mailbox: Mailbox,
    stats: Arc<ClusterStats>,
    stop: Arc<AtomicBool>,
    timeout: Duration,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Hand a message to the topic's home worker; false when the workers are gone.
    fn to_home(&self, topic: &str, msg: Inbound) -> bool {
        let worker = self.mailbox.owner(topic);
        self.mailbox.send_blocking(worker, crate::mailbox::Msg::Cluster(msg)).is_ok()
    }

    /// Tell every worker.
    fn to_all(&self, make: impl Fn() -> Inbound) {
        for w in 0..self.mailbox.workers() {
            let _ = self.mailbox.send_blocking(w, crate::mailbox::Msg::Cluster(make()));
        }
    }
}

/// One connection with the link's I/O timeouts.
fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let con = client.get_connection_with_timeout(IO_TIMEOUT)?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

/// Reconnection pacing: at most one attempt per backoff period, doubling up to a bound.
#[derive(Debug)]
struct Backoff {
    next: std::time::Instant,
    delay: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: std::time::Instant::now(), delay: BACKOFF_MIN }
    }
    fn ready(&self) -> bool {
        std::time::Instant::now() >= self.next
    }
    fn failed(&mut self) {
        self.next = std::time::Instant::now() + self.delay;
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
    }
    fn succeeded(&mut self) {
        self.delay = BACKOFF_MIN;
    }
}
