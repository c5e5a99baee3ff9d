//! What one agent runs: the scenario, its share of the connections and its rates. Sent by the
//! coordinator as JSON.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The traffic of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scenario {
    /// Open connections, join each to a topic, hold them with heartbeats, tear down.
    Connect,
    /// Rooms of `members` connections; publish `new_msg` at `publish_rate` per second (this agent's
    /// share) for `measure_s` seconds; measure publish → ack and publish → delivery.
    Chat { publish_rate: f64, measure_s: u64, body_bytes: usize },
    /// The websocket-shootout protocol: `echo` (each message answered) or `broadcast` (each message
    /// delivered to every client and answered with `broadcastResult`), at `publish_rate` per second.
    Shootout { broadcast: bool, publish_rate: f64, measure_s: u64, body_bytes: usize },
    /// Every connection joins one topic without presence; connection 0 publishes `new_msg` at
    /// `publish_rate`; measures each copy's latency and the time until every copy of a message
    /// arrived.
    Broadcast { publish_rate: f64, measure_s: u64, body_bytes: usize },
    /// y-websocket editors on `/collab/<prefix><i / per_topic>`, each typing real Yjs updates at its
    /// share of `publish_rate`; measures each update's propagation to the other editors (and the
    /// sender's own copy, relayed once durable, as the ack).
    Collab { publish_rate: f64, measure_s: u64, body_bytes: usize },
}

impl Scenario {
    /// Short name for results folders.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Connect => "connect",
            Scenario::Chat { .. } => "chat",
            Scenario::Shootout { broadcast: false, .. } => "shootout-echo",
            Scenario::Shootout { broadcast: true, .. } => "shootout-broadcast",
            Scenario::Broadcast { .. } => "broadcast",
            Scenario::Collab { .. } => "collab",
        }
    }

    /// The traffic phase, if the scenario has one: (messages per second, seconds, body bytes).
    pub fn traffic(&self) -> Option<(f64, u64, usize)> {
        match *self {
            Scenario::Connect => None,
            Scenario::Chat { publish_rate, measure_s, body_bytes }
            | Scenario::Broadcast { publish_rate, measure_s, body_bytes }
            | Scenario::Collab { publish_rate, measure_s, body_bytes }
            | Scenario::Shootout { publish_rate, measure_s, body_bytes, .. } => {
                Some((publish_rate, measure_s, body_bytes))
            }
        }
    }

    /// Scale the publish rate to an agent's share of the run. A broadcast has one publisher, which
    /// keeps the whole rate.
    pub fn scale_rate(&mut self, share: f64) {
        if let Scenario::Chat { publish_rate, .. }
        | Scenario::Shootout { publish_rate, .. }
        | Scenario::Collab { publish_rate, .. } = self
        {
            *publish_rate *= share;
        }
    }

    /// The message a connection on `topic` publishes at `due` (Unix µs), carrying `due` for latency.
    pub fn publish_text(&self, topic: Option<&str>, due: u64, pad: &str) -> Option<String> {
        match self {
            Scenario::Connect | Scenario::Collab { .. } => None,
            Scenario::Chat { .. } | Scenario::Broadcast { .. } => {
                let topic = serde_json::to_string(topic?).ok()?;
                Some(format!(r#"["1","p{due}",{topic},"new_msg",{{"body":"lg:{due}:{pad}"}}]"#))
            }
            Scenario::Shootout { broadcast, .. } => {
                let kind = if *broadcast { "broadcast" } else { "echo" };
                Some(format!(r#"{{"type":"{kind}","payload":{{"t":{due},"pad":"{pad}"}}}}"#))
            }
        }
    }
}

/// One agent's part of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub scenario: Scenario,
    /// Servers; connection `i` goes to `targets[i % len]`.
    pub targets: Vec<SocketAddr>,
    /// Upgrade path, e.g. `/socket/websocket?vsn=2.0.0`.
    pub path: String,
    /// Source addresses; connection `i` binds `sources[i % len]` (none: the kernel chooses).
    pub sources: Vec<IpAddr>,
    /// Topic of connection `i`: `{topic_prefix}{i / per_topic}`; `per_topic == 0` joins nothing.
    pub topic_prefix: String,
    pub per_topic: u64,
    /// This agent's connections: indices `first .. first + count` of the whole run.
    pub first: u64,
    pub count: u64,
    /// This agent's arrival rate, connections per second.
    pub rate: f64,
    /// Event-loop threads.
    pub threads: usize,
    /// Seconds each step (TCP connect, upgrade, join) may take before it counts as a timeout.
    pub step_timeout_s: u64,
    /// Seconds between heartbeats of one connection.
    pub heartbeat_s: u64,
    /// Join with presence (`false` sends `{"presence": false}`: no presence traffic).
    #[serde(default = "yes")]
    pub presence: bool,
}

fn yes() -> bool {
    true
}

impl Plan {
    /// The upgrade path of connection `i`: a collab editor's names its document.
    pub fn path_of(&self, i: u64) -> String {
        match (&self.scenario, self.topic_of(i)) {
            (Scenario::Collab { .. }, Some(doc)) => format!("{}/{doc}", self.path.trim_end_matches('/')),
            _ => self.path.clone(),
        }
    }

    /// The topic connection `i` joins, if any.
    pub fn topic_of(&self, i: u64) -> Option<String> {
        (self.per_topic > 0).then(|| format!("{}{}", self.topic_prefix, i / self.per_topic))
    }
}
