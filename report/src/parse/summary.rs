//! `summary.json`: the figures the coordinator computed at the end of a run. Fields a scenario
//! does not produce are absent, so everything past the scenario kind is optional.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::ParseError;

/// The summary of one run.
#[derive(Debug, Clone, Deserialize)]
pub struct Summary {
    /// What ran and with which parameters.
    pub scenario: Scenario,
    /// Connections the run asked for (geo counts its subscribers too).
    #[serde(default)]
    pub connections: u64,
    /// Most connections open at once.
    #[serde(default)]
    pub peak_connections: Option<u64>,
    /// Seconds the ramp to `connections` took.
    #[serde(default)]
    pub connect_seconds: Option<f64>,
    /// Connection attempts per second during the ramp.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Load generator processes.
    #[serde(default)]
    pub agents: Option<u64>,
    /// Source addresses connections were bound to.
    #[serde(default)]
    pub sources: Option<u64>,
    /// Counters summed over agents.
    #[serde(default)]
    pub counters: Counters,
    /// Latency percentiles per metric (`tcp`, `establish`, `ack`, ...), in µs.
    #[serde(default)]
    pub latency_us: BTreeMap<String, Latency>,
    /// Agents that stopped answering during the run.
    #[serde(default)]
    pub lost_agents: Vec<String>,
    /// Server resident memory before the ramp and at its peak, in KiB.
    #[serde(default)]
    pub server_rss_kb: Option<BeforePeak>,
    /// Kernel slab memory before the ramp and at its peak, in KiB.
    #[serde(default)]
    pub kernel_slab_kb: Option<BeforePeak>,
    /// Server RSS at the peak divided by the connections held.
    #[serde(default)]
    pub server_rss_bytes_per_connection: Option<f64>,
    /// Server RSS growth per connection over the ramp (null when too few samples).
    #[serde(default)]
    pub server_rss_bytes_per_connection_marginal: Option<f64>,
    /// Kernel slab growth from before the run to its peak, per connection.
    #[serde(default)]
    pub kernel_slab_bytes_per_connection: Option<f64>,
    /// Kernel slab growth per connection over the ramp.
    #[serde(default)]
    pub kernel_slab_bytes_per_connection_marginal: Option<f64>,
    /// The broadcast scenario's figures.
    #[serde(default)]
    pub broadcast: Option<Broadcast>,
    /// The geo scenario's figures.
    #[serde(default)]
    pub geo: Option<Geo>,
    /// `scripts/c1m`'s figures and their ratios to the plain-TCP floor.
    #[serde(default)]
    pub c1m: Option<C1m>,
    /// A database comparison's figures.
    #[serde(default)]
    pub db: Option<super::db::Db>,
    /// A Firebase comparison's figures, side by side (`bench/firebase`).
    #[serde(default)]
    pub firebase: Option<super::firebase::Comparison>,
    /// A peer comparison's figures, server by server (`scripts/compare-peers`).
    #[serde(default)]
    pub peers: Option<super::peers::Comparison>,
}

/// `c1m`: a run of `scripts/c1m` — the broadcast phase's figures against the plain-TCP floor's, and
/// the chat phase. Ratios are Rusher's figure divided by the floor's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct C1m {
    /// Most joined connections held at once.
    pub held: Option<u64>,
    /// Seconds they were held before the broadcast.
    pub hold_s: u64,
    /// Server RSS growth (summed over the nodes) per connection.
    pub server_user_bytes_per_connection: Option<f64>,
    /// Kernel slab growth per connection, with Rusher and with the floor.
    pub kernel_bytes_per_connection: Option<f64>,
    pub floor_kernel_bytes_per_connection: Option<f64>,
    pub kernel_ratio: Option<f64>,
    /// Seconds until every connection was established, with Rusher and with the floor.
    pub establish_seconds: Option<f64>,
    pub floor_establish_seconds: Option<f64>,
    pub establish_ratio: Option<f64>,
    /// Milliseconds from the publish until every copy arrived, with Rusher and with the floor.
    pub broadcast_every_copy_ms: Option<f64>,
    pub floor_every_copy_ms: Option<f64>,
    pub broadcast_ratio: Option<f64>,
    /// The chat phase.
    pub chat: C1mChat,
    /// Errors by phase and kind (only kinds that happened are reported).
    pub errors: BTreeMap<String, BTreeMap<String, u64>>,
    /// `/proc/loadavg` when the run started.
    pub load_average_at_start: String,
}

/// `c1m.chat`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct C1mChat {
    /// Rooms, members per room, messages per second asked for and seconds.
    pub rooms: u64,
    pub room: u64,
    pub rate: f64,
    pub seconds: u64,
    /// Messages sent, acknowledged, copies delivered and copies expected (sent × room).
    pub published: u64,
    pub acked: u64,
    pub delivered: u64,
    pub expected_deliveries: u64,
    /// Publish → ack and publish → delivery.
    pub ack_us: Option<Latency>,
    pub delivery_us: Option<Latency>,
}

/// `scenario`: its kind and its parameters as given.
#[derive(Debug, Clone, Deserialize)]
pub struct Scenario {
    /// `connect`, `chat`, `broadcast`, `collab`, `geo`, `shootout`, ...
    pub kind: String,
    /// Every other field (`publish_rate`, `measure_s`, `batch`, ...).
    #[serde(flatten)]
    pub params: BTreeMap<String, Value>,
}

/// `counters`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Connections attempted.
    pub attempted: u64,
    /// TCP handshakes completed.
    pub tcp_connected: u64,
    /// WebSocket upgrades completed.
    pub upgraded: u64,
    /// Channel joins acknowledged.
    pub joined: u64,
    /// Failed attempts made again (`--connect-retries`); connections that failed on their last attempt
    /// are in `failures`.
    pub retried: u64,
    /// Messages (or updates) sent.
    pub published: u64,
    /// Replies received.
    pub acked: u64,
    /// Copies received by listeners.
    pub delivered: u64,
    /// Replies that were errors.
    pub ack_errors: u64,
    /// Connection failures by cause, only causes that happened.
    pub failures: Vec<(String, u64)>,
    /// Error replies by reason.
    pub reply_errors: Vec<(String, u64)>,
    /// Refused placements (geo) by reason.
    pub place_errors: Vec<(String, u64)>,
    /// Updates the server reported as older than the object's last one.
    pub out_of_order: u64,
    /// Bytes received by the load generator.
    pub bytes_in: u64,
    /// Bytes sent by the load generator.
    pub bytes_out: u64,
}

/// Percentiles of one latency metric, in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// 99.99th percentile.
    pub p9999: f64,
    /// Largest.
    pub max: f64,
}

/// A memory figure before the run and at its peak.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct BeforePeak {
    /// Before the first connection.
    pub before: u64,
    /// Highest sample.
    pub peak: u64,
}

/// `broadcast`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Broadcast {
    /// Messages published.
    pub messages: u64,
    /// Messages whose every copy arrived.
    pub complete: u64,
    /// Messages with copies missing at the end.
    pub incomplete: u64,
    /// Listeners on the topic.
    pub subscribers: u64,
    /// Time until the last copy of a message arrived, in µs.
    pub every_copy_us: Option<Latency>,
}

/// `geo`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Geo {
    /// Updates per push.
    pub batch: u64,
    /// Location updates answered per second in the measure window.
    pub updates_per_s: f64,
    /// Fence events received per second.
    pub events_per_s: f64,
    /// Fence events received in the measure window.
    pub events_received: u64,
    /// Enter events caused by placing the objects, left out of the figures.
    pub placement_events: u64,
    /// Error replies.
    pub errors: u64,
    /// Pushes without a reply at the end.
    pub unanswered: u64,
    /// Events by kind.
    pub events_by_kind: BTreeMap<String, u64>,
}

impl Summary {
    /// Every error the run counted, as (what, how many), only those that happened.
    pub fn errors(&self) -> Vec<(String, u64)> {
        let c = &self.counters;
        let mut errors: Vec<(String, u64)> = Vec::new();
        errors.extend(c.failures.iter().map(|(cause, n)| (format!("connection failure: {cause}"), *n)));
        errors.push(("error replies".into(), c.ack_errors));
        errors.extend(c.reply_errors.iter().map(|(reason, n)| (format!("error reply: {reason}"), *n)));
        errors.extend(c.place_errors.iter().map(|(reason, n)| (format!("placement refused: {reason}"), *n)));
        errors.push(("updates out of order".into(), c.out_of_order));
        errors.extend(self.lost_agents.iter().map(|a| (format!("lost agent {a}"), 1)));
        if let Some(b) = &self.broadcast {
            errors.push(("broadcast messages with copies missing".into(), b.incomplete));
        }
        if let Some(g) = &self.geo {
            errors.push(("geo pushes unanswered".into(), g.unanswered));
        }
        if let Some(c) = &self.c1m {
            // The top-level counters are the broadcast phase's, already listed; the other phases' errors
            // are only here.
            for (phase, kinds) in c.errors.iter().filter(|(phase, _)| *phase != "broadcast") {
                errors.extend(
                    kinds.iter().map(|(kind, n)| (format!("{phase} phase: {}", kind.replace('_', " ")), *n)),
                );
            }
        }
        if let Some(f) = &self.firebase {
            errors.push(("firebase comparison: copies or events that never arrived".into(), f.missing()));
        }
        for c in self.db.iter().flat_map(|db| &db.configs) {
            errors.push((
                format!("{}: failed or unanswered requests, failed connections", c.title()),
                c.errors(),
            ));
            errors.push((
                format!("{}: writes refused as overloaded (storage queue full)", c.title()),
                c.overloaded(),
            ));
        }
        errors.retain(|(_, n)| *n > 0);
        errors
    }
}

/// Parses `summary.json`.
pub fn parse(text: &str) -> Result<Summary, ParseError> {
    serde_json::from_str(text).map_err(|source| ParseError::Json { line: source.line(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEO: &str = r#"{
  "agents": 1, "connect_seconds": 0.2, "connections": 1001,
  "counters": {"ack_errors": 0, "acked": 1000000, "attempted": 1001, "bytes_in": 10, "bytes_out": 20,
    "delivered": 136483, "events": [["enter", 68097]], "failures": [], "joined": 1001, "open": 0,
    "out_of_order": 0, "place_errors": [], "placed": 1000, "published": 1000000,
    "reply_errors": [["overloaded", 3]], "tcp_connected": 1001, "upgraded": 1001},
  "geo": {"batch": 1, "errors": 3, "events_per_s": 6823.9, "events_received": 136483,
    "events_by_kind": {"enter": 68097, "exit": 68135}, "unanswered": 2, "updates_per_s": 49998.4,
    "fences": {"created": 10000}},
  "kernel_slab_bytes_per_connection": 7827.8, "kernel_slab_bytes_per_connection_marginal": null,
  "kernel_slab_kb": {"before": 449068, "peak": 456720},
  "latency_us": {"event": {"count": 136483, "max": 145791, "mean": 10568.5, "min": 201, "p50": 7203,
    "p90": 23359, "p99": 52799, "p999": 113599, "p9999": 138495}},
  "lost_agents": [], "peak_connections": 1001, "rate": 5000.0,
  "scenario": {"batch": 1, "fences": 10000, "kind": "geo", "measure_s": 20, "publish_rate": 50000.0},
  "server_rss_bytes_per_connection": 1992.7, "server_rss_bytes_per_connection_marginal": null,
  "server_rss_kb": {"before": 58396, "peak": 60344}, "sources": 1, "targets": ["127.0.0.1:4851"]
}"#;

    #[test]
    fn geo_summary() {
        let s = parse(GEO).unwrap();
        assert_eq!(s.scenario.kind, "geo");
        assert_eq!(s.scenario.params["publish_rate"], 50000.0);
        assert_eq!(s.connections, 1001);
        assert_eq!(s.counters.acked, 1_000_000);
        assert_eq!(s.latency_us["event"].p99, 52799.0);
        assert_eq!(s.server_rss_kb, Some(BeforePeak { before: 58396, peak: 60344 }));
        assert_eq!(s.server_rss_bytes_per_connection_marginal, None);
        let geo = s.geo.as_ref().unwrap();
        assert_eq!(geo.events_by_kind["exit"], 68135);
        assert!((geo.updates_per_s - 49998.4).abs() < 1e-9);
        assert_eq!(
            s.errors(),
            [("error reply: overloaded".to_owned(), 3), ("geo pushes unanswered".to_owned(), 2)]
        );
    }

    #[test]
    fn connect_summary_without_scenario_figures() {
        let s = parse(
            r#"{"scenario": {"kind": "connect"}, "connections": 5,
            "counters": {"failures": [["refused", 2]]}, "lost_agents": ["local-3"]}"#,
        )
        .unwrap();
        assert_eq!(s.scenario.kind, "connect");
        assert!(s.scenario.params.is_empty());
        assert!(s.latency_us.is_empty() && s.geo.is_none() && s.broadcast.is_none());
        assert_eq!(
            s.errors(),
            [("connection failure: refused".to_owned(), 2), ("lost agent local-3".to_owned(), 1)]
        );
    }

    #[test]
    fn c1m_summary_with_the_floor_and_the_other_phases_errors() {
        let s = parse(
            r#"{"scenario": {"kind": "c1m", "connections": 6000, "hold_s": 5}, "connections": 6000,
            "counters": {"joined": 6000}, "broadcast": {"messages": 1, "complete": 1, "incomplete": 0},
            "c1m": {"held": 6000, "hold_s": 5, "server_user_bytes_per_connection": 210.5,
              "kernel_bytes_per_connection": 8800.0, "floor_kernel_bytes_per_connection": 8000.0,
              "kernel_ratio": 1.1, "establish_seconds": 3.0, "floor_establish_seconds": 2.0,
              "establish_ratio": 1.5, "broadcast_every_copy_ms": 164.0, "floor_every_copy_ms": 96.0,
              "broadcast_ratio": 1.7,
              "chat": {"rooms": 60, "room": 100, "rate": 1000, "seconds": 3, "published": 3000,
                "acked": 3000, "delivered": 299990, "expected_deliveries": 300000,
                "delivery_us": {"count": 299990, "p99": 1900.0}},
              "errors": {"floor": {"failures": 0}, "broadcast": {"failures": 0},
                "chat": {"missing_deliveries": 10, "failures": 0}},
              "errors_total": 10, "load_average_at_start": "1.5 1.2 1.0 2/100 7"}}"#,
        )
        .unwrap();
        let c = s.c1m.as_ref().unwrap();
        assert_eq!((c.held, c.hold_s), (Some(6000), 5));
        assert_eq!((c.establish_ratio, c.broadcast_ratio), (Some(1.5), Some(1.7)));
        assert_eq!(c.chat.delivery_us.unwrap().p99, 1900.0);
        assert_eq!(c.chat.ack_us, None);
        assert_eq!(s.errors(), [("chat phase: missing deliveries".to_owned(), 10)]);
    }

    #[test]
    fn a_summary_without_a_kind_is_an_error() {
        let err = parse("{\n\"scenario\": {}\n}").unwrap_err();
        assert!(matches!(err, ParseError::Json { line: 2, .. }), "{err}");
    }
}
