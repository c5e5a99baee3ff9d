//! The subscribing thread: one SUBSCRIBE connection, routing what other nodes publish to the home
//! workers of its topics, and watching the other nodes' heartbeats.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::envelope::{self, Kind, NODES_CHANNEL};
use super::{connect, Backoff, ClusterStats, Inbound, Shared, IO_TIMEOUT};

/// How long one read waits for a message before the thread looks at its commands, the clock and
/// the stop flag: the delay a (un)subscribe may wait.
const POLL: Duration = Duration::from_millis(20);
/// Channels named in one SUBSCRIBE when subscribing everything again.
const SUBSCRIBE_CHUNK: usize = 512;
/// Nodes remembered as down, so one heard from again is announced as back.
const MAX_DOWN: usize = 1024;

/// Subscription changes asked by workers.
#[derive(Debug)]
pub(crate) enum Cmd {
    Subscribe(Arc<str>),
    Unsubscribe(Arc<str>),
}

/// Not `Debug`: a Redis connection is not.
pub(super) struct Subscriber {
    client: redis::Client,
    first: Option<redis::Connection>,
    rx: Receiver<Cmd>,
    shared: Shared,
    /// Topics whose channel this node needs.
    topics: HashSet<Arc<str>>,
    /// Other nodes and when each was last heard from.
    nodes: HashMap<Arc<str>, Instant>,
    /// Nodes declared down, oldest first.
    down: VecDeque<Arc<str>>,
    last_liveness_check: Instant,
}

/// Why a subscribed session ended.
enum End {
    Stop,
    Lost(redis::RedisError),
}

impl Subscriber {
    pub(super) fn new(
        client: redis::Client,
        con: redis::Connection,
        rx: Receiver<Cmd>,
        shared: Shared,
    ) -> Self {
        Subscriber {
            client,
            first: Some(con),
            rx,
            shared,
            topics: HashSet::new(),
            nodes: HashMap::new(),
            down: VecDeque::new(),
            last_liveness_check: Instant::now(),
        }
    }

    pub(super) fn run(mut self) {
        let mut backoff = Backoff::new();
        let mut sessions = 0u64;
        while !self.shared.stopping() {
            let con = match self.first.take() {
                Some(con) => Ok(con),
                None => {
                    // Keep the wanted set current and nodes' liveness checked while Redis is away.
                    while !backoff.ready() && !self.shared.stopping() {
                        self.apply_offline();
                        self.check_liveness();
                        std::thread::sleep(POLL);
                    }
                    connect(&self.client)
                }
            };
            let mut con = match con {
                Ok(con) => con,
                Err(e) => {
                    tracing::debug!(error = %e, "cluster subscriber cannot reach Redis");
                    backoff.failed();
                    continue;
                }
            };
            backoff.succeeded();
            sessions += 1;
            match self.session(&mut con, sessions > 1) {
                End::Stop => break,
                End::Lost(e) => {
                    tracing::warn!(error = %e, "cluster subscriber lost Redis: reconnecting");
                    backoff.failed();
                }
            }
        }
    }

    /// One connection's life: subscribe everything needed, then read until an error or the stop.
    fn session(&mut self, con: &mut redis::Connection, again: bool) -> End {
        let mut ps = con.as_pubsub();
        let mut fixed = vec![NODES_CHANNEL.to_owned(), envelope::node_channel(&self.shared.node)];
        fixed.extend(self.topics.iter().map(|t| envelope::topic_channel(t)));
        for chunk in fixed.chunks(SUBSCRIBE_CHUNK) {
            if let Err(e) = ps.subscribe(chunk) {
                return End::Lost(e);
            }
        }
        if again {
            ClusterStats::add(&self.shared.stats.resubscribes, 1);
            tracing::info!(
                topics = self.topics.len(),
                "cluster subscriber reconnected: every channel subscribed again"
            );
        }
        for topic in &self.topics {
            self.shared.to_home(topic, Inbound::Subscribed { topic: topic.clone() });
        }
        if let Err(e) = ps.set_read_timeout(Some(POLL)) {
            return End::Lost(e);
        }
        loop {
            if self.shared.stopping() {
                return End::Stop;
            }
            while let Ok(cmd) = self.rx.try_recv() {
                if let Err(e) = self.apply(&mut ps, cmd) {
                    return End::Lost(e);
                }
            }
            match ps.get_message() {
                Ok(msg) => self.on_message(msg.get_channel_name(), msg.get_payload_bytes()),
                Err(e) if e.is_timeout() => {}
                Err(e) => return End::Lost(e),
            }
            self.check_liveness();
        }
    }

    /// Apply one subscription change on the connection. A subscribe waits for Redis's confirmation
    /// (messages arriving meanwhile are kept), then tells the topic's home worker.
    fn apply(&mut self, ps: &mut redis::PubSub<'_>, cmd: Cmd) -> redis::RedisResult<()> {
        ps.set_read_timeout(Some(IO_TIMEOUT))?;
        match cmd {
            Cmd::Subscribe(topic) => {
                if self.topics.insert(topic.clone()) {
                    ps.subscribe(envelope::topic_channel(&topic))?;
                }
                self.shared.to_home(&topic.clone(), Inbound::Subscribed { topic });
            }
            Cmd::Unsubscribe(topic) => {
                if self.topics.remove(&topic) {
                    ps.unsubscribe(envelope::topic_channel(&topic))?;
                }
            }
        }
        ps.set_read_timeout(Some(POLL))
    }

    /// Without a connection, subscription changes only update the set subscribed on reconnect.
    fn apply_offline(&mut self) {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Cmd::Subscribe(topic) => {
                    self.topics.insert(topic);
                }
                Cmd::Unsubscribe(topic) => {
                    self.topics.remove(&topic);
                }
            }
        }
    }

    fn on_message(&mut self, channel: &str, payload: &[u8]) {
        if envelope::origin_of(payload) == Some(self.shared.node.as_bytes()) {
            // This node delivered its own publish locally already.
            return;
        }
        let env = match envelope::decode(payload) {
            Ok(env) => env,
            Err(e) => {
                ClusterStats::add(&self.shared.stats.dropped, 1);
                tracing::warn!(channel, error = %e, "malformed cluster envelope dropped");
                return;
            }
        };
        // Any envelope shows its node alive: one that sent presences and died before its next
        // heartbeat must still be declared down.
        self.heard(&env.origin);
        if env.kind == Kind::Heartbeat {
            return;
        }
        if env.topic.is_empty() {
            ClusterStats::add(&self.shared.stats.dropped, 1);
            return;
        }
        ClusterStats::add(&self.shared.stats.received, 1);
        self.shared.to_home(&env.topic.clone(), Inbound::Remote(env));
    }

    fn heard(&mut self, node: &Arc<str>) {
        let now = Instant::now();
        if let Some(seen) = self.nodes.get_mut(node) {
            *seen = now;
            return;
        }
        if let Some(i) = self.down.iter().position(|n| n == node) {
            self.down.remove(i);
            tracing::info!(node = %node, "cluster node is back");
            self.shared.to_all(|| Inbound::NodeUp { node: node.clone() });
        }
        self.nodes.insert(node.clone(), now);
        self.shared.stats.nodes.store(self.nodes.len() as u64, Ordering::Relaxed);
    }

    /// Declare down every node silent for the timeout.
    fn check_liveness(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_liveness_check) < POLL * 5 {
            return;
        }
        self.last_liveness_check = now;
        let timeout = self.shared.timeout;
        let silent: Vec<Arc<str>> = self
            .nodes
            .iter()
            .filter(|(_, seen)| now.duration_since(**seen) > timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for node in silent {
            self.nodes.remove(&node);
            tracing::warn!(node = %node, timeout_ms = timeout.as_millis() as u64, "cluster node silent: declared down");
            self.shared.to_all(|| Inbound::NodeDown { node: node.clone() });
            if self.down.len() == MAX_DOWN {
                self.down.pop_front();
            }
            self.down.push_back(node);
        }
        self.shared.stats.nodes.store(self.nodes.len() as u64, Ordering::Relaxed);
    }
}
