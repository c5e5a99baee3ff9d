//! What one agent runs: the scenario, its share of the connections and its rates. Sent by the
//! coordinator as JSON.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::geo::walk::Bbox;

/// The traffic of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scenario {
    /// Open connections, join each to a topic, hold them with heartbeats, tear down.
    Connect,
    /// The plain-TCP floor, against `rusher-loadgen sink` processes (one per target): bare TCP
    /// connections, opened and held without a byte, then written to once per message. Connection
    /// `i < targets` sends each sink the message's intended send time (8 bytes, little-endian µs) at
    /// `publish_rate` for `measure_s` seconds; the sink writes those 8 bytes to every connection it
    /// holds. Measures each copy's latency and the time until every copy arrived, as a broadcast does,
    /// so Rusher's figures can be quoted against what the kernel alone costs.
    Tcp { publish_rate: f64, measure_s: u64 },
    /// Rooms of `members` connections; publish `new_msg` at `publish_rate` per second (this agent's
    /// share) for `measure_s` seconds; measure publish → ack and publish → delivery.
    Chat { publish_rate: f64, measure_s: u64, body_bytes: usize },
    /// The websocket-shootout protocol: `echo` (each connection in turn sends, `publish_rate` per
    /// second in all; each message answered) or `broadcast` (connection 0 sends `publish_rate` per
    /// second; each message delivered to every client and answered with `broadcastResult`; the time
    /// until every copy of a message arrived is measured as in `broadcast`).
    Shootout { broadcast: bool, publish_rate: f64, measure_s: u64, body_bytes: usize },
    /// Every connection joins one topic without presence; connection 0 publishes `new_msg` at
    /// `publish_rate`; measures each copy's latency and the time until every copy of a message
    /// arrived.
    Broadcast { publish_rate: f64, measure_s: u64, body_bytes: usize },
    /// y-websocket editors on `/collab/<prefix><i / per_topic>`, each typing real Yjs updates at its
    /// share of `publish_rate`; measures each update's propagation to the other editors (and the
    /// sender's own copy, relayed once durable, as the ack).
    Collab { publish_rate: f64, measure_s: u64, body_bytes: usize },
    /// Geofencing on `geo:<tenant>` (docs/geo.md): connections `0 .. movers` each move object
    /// `obj-<index>` along a random walk in `bbox` (`step_m` metres per update, reproducible from
    /// `seed`), sending `location` at their share of `publish_rate` (updates per second); the next
    /// `subscribers` connections join with `{"fences": "*"}` and receive every `geofence_event`. With
    /// `batch` > 1 each moving connection moves `batch` objects `obj-<index>-<k>` and sends one
    /// `locations` push of an update of each, so pushes per second are `publish_rate / batch`. The
    /// coordinator creates `fences` fences in `bbox` before the connections open; once they are open,
    /// each moving connection places its objects at the start of their walks, and the events this
    /// causes (`ts` before the measure's start) are counted apart. Measures update → reply (one sample
    /// per push) and update → event (from the update's `ts`, its intended send time).
    Geo {
        publish_rate: f64,
        measure_s: u64,
        tenant: String,
        movers: u64,
        subscribers: u64,
        fences: u64,
        step_m: f64,
        seed: u64,
        bbox: Bbox,
        batch: u64,
    },
}

impl Scenario {
    /// Short name for results folders.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Connect => "connect",
            Scenario::Tcp { .. } => "tcp",
            Scenario::Chat { .. } => "chat",
            Scenario::Shootout { broadcast: false, .. } => "shootout-echo",
            Scenario::Shootout { broadcast: true, .. } => "shootout-broadcast",
            Scenario::Broadcast { .. } => "broadcast",
            Scenario::Collab { .. } => "collab",
            Scenario::Geo { .. } => "geo",
        }
    }

    /// The traffic phase, if the scenario has one: (messages per second, seconds, body bytes). A geo
    /// message is a push, which carries [`Scenario::batch`] updates.
    pub fn traffic(&self) -> Option<(f64, u64, usize)> {
        match *self {
            Scenario::Connect => None,
            Scenario::Tcp { publish_rate, measure_s } => Some((publish_rate, measure_s, 8)),
            Scenario::Chat { publish_rate, measure_s, body_bytes }
            | Scenario::Broadcast { publish_rate, measure_s, body_bytes }
            | Scenario::Collab { publish_rate, measure_s, body_bytes }
            | Scenario::Shootout { publish_rate, measure_s, body_bytes, .. } => {
                Some((publish_rate, measure_s, body_bytes))
            }
            Scenario::Geo { publish_rate, measure_s, .. } => {
                Some((publish_rate / self.batch() as f64, measure_s, 0))
            }
        }
    }

    /// Updates per push: a geo run's `batch`, 1 for everything else.
    pub fn batch(&self) -> u64 {
        match *self {
            Scenario::Geo { batch, .. } => batch.max(1),
            _ => 1,
        }
    }

    /// Whether one connection (connection 0) publishes at the whole rate and every copy of each
    /// message is awaited and timed: `broadcast`, and the shootout's broadcast mode.
    pub fn one_publisher(&self) -> bool {
        matches!(self, Scenario::Broadcast { .. } | Scenario::Shootout { broadcast: true, .. })
    }

    /// Scale the publish rate to an agent's share of the run's senders (see [`Plan::senders`]). A
    /// broadcast has one publisher, which keeps the whole rate, and so does each of a TCP floor's.
    pub fn scale_rate(&mut self, share: f64) {
        if self.one_publisher() {
            return;
        }
        if let Scenario::Chat { publish_rate, .. }
        | Scenario::Shootout { publish_rate, .. }
        | Scenario::Collab { publish_rate, .. }
        | Scenario::Geo { publish_rate, .. } = self
        {
            *publish_rate *= share;
        }
    }

    /// The message a connection on `topic` publishes at `due` (Unix µs), carrying `due` for latency.
    pub fn publish_text(&self, topic: Option<&str>, due: u64, pad: &str) -> Option<String> {
        match self {
            Scenario::Connect | Scenario::Tcp { .. } | Scenario::Collab { .. } | Scenario::Geo { .. } => None,
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
    /// Topic of connection `i`: `{topic_prefix}{i / per_topic}`; `per_topic == 0` joins nothing. (A geo
    /// run puts every connection on its tenant's topic instead.)
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
    /// Connections this agent may have in progress (opened, not yet joined or failed) at once; 0 for
    /// no bound. With a bound the ramp is a closed model, as fast as the server and kernel take them
    /// (up to `rate`), and each connection's establish time counts from when it was opened.
    #[serde(default)]
    pub max_pending: u64,
    /// Times a connection whose TCP connect, upgrade or join failed or timed out is opened again, after
    /// [`retry_backoff`], before it counts as failed (as a client that reconnects by itself does).
    #[serde(default)]
    pub connect_retries: u32,
}

/// The wait before attempt `attempt` (1 for the first retry) of connection `idx`: 1 s doubling to at
/// most 8 s, plus up to a second spread by the connection's index so that a burst of failures does not
/// come back at once.
pub fn retry_backoff(attempt: u32, idx: u64) -> std::time::Duration {
    let base_ms = 1000u64 << attempt.saturating_sub(1).min(3);
    std::time::Duration::from_millis(base_ms + idx % 1000)
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
        match &self.scenario {
            Scenario::Geo { tenant, .. } => return Some(crate::geo::topic(tenant)),
            Scenario::Tcp { .. } => return None,
            _ => {}
        }
        (self.per_topic > 0).then(|| format!("{}{}", self.topic_prefix, i / self.per_topic))
    }

    /// The `phx_join` payload of connection `i`.
    pub fn join_params(&self, i: u64) -> &'static str {
        match &self.scenario {
            Scenario::Geo { .. } if !self.sends(i) => r#"{"fences":"*"}"#,
            Scenario::Geo { .. } => "{}",
            _ if self.presence => "{}",
            _ => r#"{"presence":false}"#,
        }
    }

    /// Whether connection `i` takes part in publishing: every connection but a geo subscriber.
    pub fn sends(&self, i: u64) -> bool {
        match self.scenario {
            Scenario::Geo { movers, .. } => i < movers,
            _ => true,
        }
    }

    /// How many of the `n` connections `start, start + stride, ...` take part in publishing: the
    /// share of the run's rate their agent or thread sends.
    pub fn senders(&self, start: u64, stride: u64, n: u64) -> u64 {
        match self.scenario {
            Scenario::Geo { movers, .. } if start >= movers => 0,
            Scenario::Geo { movers, .. } => n.min((movers - start).div_ceil(stride.max(1))),
            _ => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo_plan(movers: u64, subscribers: u64) -> Plan {
        Plan {
            scenario: Scenario::Geo {
                publish_rate: 100.0,
                measure_s: 1,
                tenant: "fleet 7".into(),
                movers,
                subscribers,
                fences: 0,
                step_m: 30.0,
                seed: 1,
                bbox: Bbox::DEFAULT,
                batch: 1,
            },
            targets: Vec::new(),
            path: "/socket/websocket?vsn=2.0.0".into(),
            sources: Vec::new(),
            topic_prefix: "room:lg-".into(),
            per_topic: 100,
            first: 0,
            count: movers + subscribers,
            rate: 1.0,
            threads: 2,
            step_timeout_s: 1,
            heartbeat_s: 30,
            presence: true,
            max_pending: 0,
            connect_retries: 0,
        }
    }

    #[test]
    fn geo_movers_send_and_subscribers_listen_on_one_topic() {
        let p = geo_plan(10, 2);
        assert_eq!(p.topic_of(0).as_deref(), Some("geo:fleet 7"));
        assert_eq!(p.topic_of(11).as_deref(), Some("geo:fleet 7"));
        assert_eq!(p.path_of(3), "/socket/websocket?vsn=2.0.0");
        assert!(p.sends(9) && !p.sends(10) && !p.sends(11));
        assert_eq!(p.join_params(9), "{}");
        assert_eq!(p.join_params(10), r#"{"fences":"*"}"#);
        assert_eq!(p.scenario.name(), "geo");
        assert_eq!(p.scenario.traffic(), Some((100.0, 1, 0)));
        assert_eq!(p.scenario.batch(), 1);
        assert_eq!(p.scenario.publish_text(Some("geo:x"), 1, ""), None, "geo pushes carry a walk");
    }

    #[test]
    fn geo_batches_keep_the_update_rate_in_fewer_pushes() {
        let mut p = geo_plan(10, 1);
        if let Scenario::Geo { batch, .. } = &mut p.scenario {
            *batch = 10;
        }
        assert_eq!(p.scenario.batch(), 10);
        assert_eq!(p.scenario.traffic(), Some((10.0, 1, 0)), "100 updates/s in 10 pushes/s");
        p.scenario.scale_rate(0.5);
        assert_eq!(p.scenario.traffic(), Some((5.0, 1, 0)));
        let chat = Scenario::Chat { publish_rate: 100.0, measure_s: 1, body_bytes: 32 };
        assert_eq!(chat.batch(), 1);
    }

    #[test]
    fn a_tcp_floor_joins_nothing_and_sends_eight_byte_times() {
        let mut p = geo_plan(0, 0);
        p.scenario = Scenario::Tcp { publish_rate: 2.0, measure_s: 3 };
        assert_eq!(p.topic_of(0), None, "bare TCP: nothing to join");
        assert_eq!(p.scenario.name(), "tcp");
        assert_eq!(p.scenario.traffic(), Some((2.0, 3, 8)));
        assert_eq!(p.scenario.publish_text(None, 1, ""), None);
        p.scenario.scale_rate(0.25);
        assert_eq!(p.scenario.traffic(), Some((2.0, 3, 8)), "every publisher sends every message");
    }

    #[test]
    fn senders_count_movers_of_a_range_or_a_thread() {
        let p = geo_plan(10, 2);
        // Agents by contiguous ranges.
        assert_eq!(p.senders(0, 1, 12), 10);
        assert_eq!(p.senders(0, 1, 6), 6);
        assert_eq!(p.senders(6, 1, 6), 4);
        assert_eq!(p.senders(10, 1, 2), 0);
        // Threads by stride: thread 0 of 2 holds 0, 2, ..., 10; thread 1 holds 1, 3, ..., 11.
        assert_eq!(p.senders(0, 2, 6), 5);
        assert_eq!(p.senders(1, 2, 6), 5);
        // Thread 1 of 4 on the agent starting at 6: 7, 11 → one mover.
        assert_eq!(p.senders(7, 4, 2), 1);
        let brute =
            |start: u64, stride: u64, n: u64| (0..n).filter(|k| p.sends(start + k * stride)).count() as u64;
        for start in 0..14 {
            for stride in 1..5 {
                for n in 0..8 {
                    assert_eq!(p.senders(start, stride, n), brute(start, stride, n), "{start} {stride} {n}");
                }
            }
        }
        let mut chat = geo_plan(0, 0);
        chat.scenario = Scenario::Chat { publish_rate: 1.0, measure_s: 1, body_bytes: 32 };
        assert_eq!(chat.senders(5, 3, 7), 7);
        assert_eq!(chat.join_params(0), "{}");
        chat.presence = false;
        assert_eq!(chat.join_params(0), r#"{"presence":false}"#);
    }
}
