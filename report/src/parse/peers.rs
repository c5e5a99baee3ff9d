//! The `peers` key of a peer comparison's `summary.json` (written by `bench/peers/gather.py` for
//! `scripts/compare-peers`): Rusher and the servers users would pick instead, measured by the same
//! load generator runs, one figure at a time.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One comparison run.
#[derive(Debug, Clone, Deserialize)]
pub struct Comparison {
    /// The server every ratio is taken to (`rusher`).
    pub baseline: String,
    /// How the servers were given the same cores.
    #[serde(default)]
    pub cores: String,
    /// The p95 broadcast latency a client count must stay under to count as held, ms.
    #[serde(default)]
    pub limit_ms: Option<f64>,
    /// The servers, in the order of every table and chart.
    pub servers: Vec<Server>,
    /// Every figure, in the harness's order.
    pub figures: Vec<Figure>,
}

/// One server.
#[derive(Debug, Clone, Deserialize)]
pub struct Server {
    /// Key of the server in every figure's `values` (`rusher`, `actix`, `node-ws`, ...).
    pub id: String,
    /// What it is, e.g. `Node.js + ws`.
    pub label: String,
    /// Versions of what ran.
    #[serde(default)]
    pub version: String,
}

/// What a figure measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FigureKind {
    /// Durations in ms: percentiles per server.
    Latency,
    /// Bytes.
    Size,
    /// Per second.
    Rate,
    /// A count (clients).
    Count,
}

/// Whether less or more of a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
}

/// One figure measured on some of the servers.
#[derive(Debug, Clone, Deserialize)]
pub struct Figure {
    /// Unique within the run, e.g. `broadcast_10000`.
    pub id: String,
    /// What it measures, in words.
    pub title: String,
    /// Latency, size, rate or count.
    pub kind: FigureKind,
    /// Whether lower or higher values are better.
    pub better: Better,
    /// Server id → what it measured; `null` when the server has no valid figure (failed run).
    pub values: BTreeMap<String, Option<Measured>>,
}

/// A server's result for one figure.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Measured {
    /// Percentiles of the samples, in ms.
    Latency {
        /// Samples.
        count: u64,
        /// Median.
        p50: f64,
        /// 90th percentile.
        p90: f64,
        /// 99th percentile.
        p99: f64,
        /// Largest.
        max: f64,
    },
    /// A single amount in the figure's unit.
    Value(f64),
}

/// How to read one statistic from a [`Measured`]; `None` if it has none.
pub type Statistic = fn(&Measured) -> Option<f64>;

/// The statistics a figure of this kind shows, as (label, how to read it).
pub fn statistics(kind: FigureKind) -> &'static [(&'static str, Statistic)] {
    match kind {
        FigureKind::Latency => &[
            ("p50", |m| m.latency().map(|l| l.0)),
            ("p99", |m| m.latency().map(|l| l.1)),
            ("max", |m| m.latency().map(|l| l.2)),
        ],
        FigureKind::Size => &[("bytes", Measured::value)],
        FigureKind::Rate => &[("per second", Measured::value)],
        FigureKind::Count => &[("clients", Measured::value)],
    }
}

impl Measured {
    /// (p50, p99, max) of a latency.
    fn latency(&self) -> Option<(f64, f64, f64)> {
        match *self {
            Measured::Latency { p50, p99, max, .. } => Some((p50, p99, max)),
            Measured::Value(_) => None,
        }
    }

    /// The amount of a size, rate or count.
    pub fn value(&self) -> Option<f64> {
        match *self {
            Measured::Value(v) => Some(v),
            Measured::Latency { .. } => None,
        }
    }
}

impl Figure {
    /// What `server` measured, if anything.
    pub fn value(&self, server: &str) -> Option<&Measured> {
        self.values.get(server)?.as_ref()
    }

    /// `server`'s statistic divided by the baseline's.
    pub fn ratio(&self, server: &str, baseline: &str, stat: Statistic) -> Option<f64> {
        let v = stat(self.value(server)?)?;
        let b = stat(self.value(baseline)?)?;
        (b > 0.0).then(|| v / b)
    }

    /// Whether `server` did at least as well as the baseline on the headline statistic (p99 of a
    /// latency), or `None` when either has no value.
    pub fn ahead(&self, baseline: &str, server: &str) -> Option<bool> {
        let stat = headline(self.kind);
        let (b, v) = (stat(self.value(baseline)?)?, stat(self.value(server)?)?);
        Some(match self.better {
            Better::Lower => b <= v,
            Better::Higher => b >= v,
        })
    }
}

/// The statistic a figure is summed up by: p99 of a latency, the value of anything else.
pub fn headline(kind: FigureKind) -> Statistic {
    let stats = statistics(kind);
    stats[if kind == FigureKind::Latency { 1 } else { 0 }].1
}

/// A comparison's summary.json for the report's tests.
#[cfg(test)]
pub const TEST_SUMMARY: &str = r#"{
  "scenario": {"kind": "peers", "baseline": "rusher", "command": "scripts/compare-peers 1000"},
  "connections": 1000,
  "peers": {"baseline": "rusher", "cores": "each server pinned to CPU 1", "limit_ms": 500.0,
    "servers": [{"id": "rusher", "label": "Rusher", "version": "rusher-server 0.1.0"},
                {"id": "node-ws", "label": "Node.js + ws", "version": "ws 8.23.0"},
                {"id": "python-websockets", "label": "Python asyncio + websockets"}],
    "figures": [
      {"id": "rss_per_connection", "title": "Server memory per held connection", "kind": "size", "unit": "bytes",
       "better": "lower", "values": {"rusher": 400.0, "node-ws": 6000.0, "python-websockets": null}},
      {"id": "echo_1000", "title": "Echo round trip at 1,000 messages/s", "kind": "latency", "unit": "ms",
       "better": "lower", "values": {"rusher": {"count": 5000, "p50": 0.2, "p90": 0.3, "p99": 0.5, "max": 2.0},
                                     "node-ws": {"count": 5000, "p50": 0.4, "p90": 0.6, "p99": 0.4, "max": 9.0}}},
      {"id": "max_clients", "title": "Most clients held", "kind": "count", "unit": "clients", "better": "higher",
       "values": {"rusher": 19000, "node-ws": 10000, "python-websockets": 0}}
    ],
    "broadcast": {"rusher": {"1000": {"held": true}}}}
}"#;

#[cfg(test)]
pub(crate) mod tests {
    use super::super::summary;
    use super::*;

    pub fn comparison() -> Comparison {
        summary::parse(TEST_SUMMARY).unwrap().peers.unwrap()
    }

    #[test]
    fn a_peer_summary_parses_with_missing_values() {
        let c = comparison();
        assert_eq!((c.baseline.as_str(), c.servers[0].label.as_str()), ("rusher", "Rusher"));
        assert_eq!(c.servers[2].version, "", "a version may be missing");
        let [rss, echo, max] = &c.figures[..] else { panic!("three figures") };
        assert_eq!(rss.kind, FigureKind::Size);
        assert_eq!(rss.value("rusher"), Some(&Measured::Value(400.0)));
        assert_eq!(rss.value("python-websockets"), None, "null: no valid figure");
        assert_eq!(rss.ratio("node-ws", "rusher", headline(rss.kind)), Some(15.0));
        assert_eq!(echo.value("node-ws").and_then(|m| statistics(echo.kind)[2].1(m)), Some(9.0));
        assert_eq!(echo.value("python-websockets"), None, "absent: not measured");
        assert_eq!(max.better, Better::Higher);
        assert_eq!(max.ahead("rusher", "node-ws"), Some(true));
        assert_eq!(echo.ahead("rusher", "node-ws"), Some(false), "node's p99 is lower");
        assert_eq!(rss.ahead("rusher", "python-websockets"), None);
    }
}
