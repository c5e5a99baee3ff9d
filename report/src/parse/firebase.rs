//! The `firebase` key of a Firebase comparison's `summary.json` (written by `bench/firebase/run.mjs`):
//! the same figures measured through the firebase SDK and through `@rusher/client`, side by side.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One comparison run.
#[derive(Debug, Clone, Deserialize)]
pub struct Comparison {
    /// What the figures measure and what they do not, in the harness's words.
    pub what: String,
    /// The sides, in the order of every table and chart; the first two make the ratio.
    pub sides: Vec<Side>,
    /// Every figure, in the harness's order.
    pub figures: Vec<Figure>,
    /// Whether the firebase side ran against a real project.
    #[serde(default)]
    pub real_firebase: RealFirebase,
}

/// A client SDK and the server it talked to.
#[derive(Debug, Clone, Deserialize)]
pub struct Side {
    /// Key of the side in every figure's `values` (`firebase`, `rusher`, `rusher-full`).
    pub id: String,
    /// What ran, e.g. `firebase SDK → firebase-server (in memory)`.
    pub label: String,
    /// What an acknowledgement means on this side.
    #[serde(default)]
    pub durability: String,
}

/// Whether the real-Firebase layer ran.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RealFirebase {
    /// True when the firebase side talked to a real project.
    #[serde(default)]
    pub ran: bool,
    /// Why it did not run.
    #[serde(default)]
    pub reason: Option<String>,
    /// The project's database when it ran.
    #[serde(default)]
    pub database_url: Option<String>,
}

/// What a figure measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FigureKind {
    /// Durations: percentiles per side.
    Latency,
    /// One amount per side (bytes).
    Size,
}

/// One figure measured on some of the sides.
#[derive(Debug, Clone, Deserialize)]
pub struct Figure {
    /// Unique within the run, e.g. `fanout_1000`.
    pub id: String,
    /// What it measures, in words.
    pub title: String,
    /// `ms` for latencies, `bytes` for sizes.
    pub unit: String,
    /// Latency or size.
    pub kind: FigureKind,
    /// Side id → what it measured; `null` when the side took no sample.
    pub values: BTreeMap<String, Option<Measured>>,
    /// Side id → copies or events that never arrived (fan-out and geo figures).
    #[serde(default)]
    pub missing: BTreeMap<String, u64>,
}

/// A side's result for one figure.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Measured {
    /// Percentiles of the samples, in the figure's unit.
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
    /// A single amount.
    Size {
        /// In the figure's unit.
        value: f64,
    },
}

/// How to read one statistic (p50, max, the size, ...) from a [`Measured`]; `None` if it has none.
pub type Statistic = fn(&Measured) -> Option<f64>;

/// The statistics a figure of this kind shows, as (label, how to read it).
pub fn statistics(kind: FigureKind) -> &'static [(&'static str, Statistic)] {
    match kind {
        FigureKind::Latency => &[
            ("p50", |m| m.percentile(50)),
            ("p90", |m| m.percentile(90)),
            ("p99", |m| m.percentile(99)),
            ("max", |m| m.percentile(100)),
        ],
        FigureKind::Size => &[("size", |m| match m {
            Measured::Size { value } => Some(*value),
            Measured::Latency { .. } => None,
        })],
    }
}

impl Measured {
    /// The 50th, 90th, 99th or 100th (max) percentile of a latency.
    fn percentile(&self, p: u8) -> Option<f64> {
        match (self, p) {
            (Measured::Latency { p50, .. }, 50) => Some(*p50),
            (Measured::Latency { p90, .. }, 90) => Some(*p90),
            (Measured::Latency { p99, .. }, 99) => Some(*p99),
            (Measured::Latency { max, .. }, 100) => Some(*max),
            _ => None,
        }
    }

    /// Samples behind a latency; `None` for a size.
    pub fn count(&self) -> Option<u64> {
        match self {
            Measured::Latency { count, .. } => Some(*count),
            Measured::Size { .. } => None,
        }
    }
}

impl Figure {
    /// What `side` measured, if it ran this figure and took samples.
    pub fn value(&self, side: &str) -> Option<&Measured> {
        self.values.get(side).and_then(Option::as_ref)
    }

    /// `a ÷ b` of one statistic, when both sides measured a positive value.
    pub fn ratio(&self, a: &str, b: &str, stat: Statistic) -> Option<f64> {
        let x = stat(self.value(a)?)?;
        let y = stat(self.value(b)?)?;
        (x > 0.0 && y > 0.0 && x.is_finite() && y.is_finite()).then(|| x / y)
    }
}

impl Comparison {
    /// The two sides whose ratio is printed: the first ÷ the second (firebase ÷ rusher).
    pub fn ratio_sides(&self) -> Option<(&Side, &Side)> {
        Some((self.sides.first()?, self.sides.get(1)?))
    }

    /// Copies and events that never arrived, over every figure and side.
    pub fn missing(&self) -> u64 {
        self.figures.iter().flat_map(|f| f.missing.values()).sum()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::parse::summary;

    /// A trimmed summary.json as bench/firebase/run.mjs writes it.
    pub const SUMMARY: &str = r#"{
  "scenario": {"kind": "firebase", "scale": "full", "firebase_target": "firebase-server",
    "write": {"count": 2000, "warmup": 50}},
  "connections": 1001,
  "firebase": {
    "what": "SDK and protocol cost on loopback, not Google's servers",
    "versions": {"firebase": "12.19.0"},
    "sides": [
      {"id": "firebase", "label": "firebase SDK → firebase-server (in memory)", "durability": "in memory"},
      {"id": "rusher", "label": "@rusher/client → rusher, SQLite synchronous=normal", "durability": "committed"},
      {"id": "rusher-full", "label": "@rusher/client → rusher, SQLite synchronous=full", "durability": "fsynced"}
    ],
    "servers": [{"name": "firebase-server", "pid": 1, "command": ["node", "lib/firebase-server.mjs"]}],
    "figures": [
      {"id": "write_ack", "title": "Write until acknowledged", "unit": "ms", "kind": "latency",
       "values": {"firebase": {"count": 2000, "min": 2.1, "mean": 6.0, "p50": 5.45, "p90": 9.0, "p99": 20.5, "max": 40.0},
                  "rusher": {"count": 2000, "min": 0.1, "mean": 0.4, "p50": 0.27, "p90": 0.5, "p99": 2.95, "max": 9.0},
                  "rusher-full": {"count": 2000, "min": 0.9, "mean": 2.0, "p50": 1.24, "p90": 3.0, "p99": 188.0, "max": 200.0}}},
      {"id": "fanout_10", "title": "Fan-out to 10 listeners", "unit": "ms", "kind": "latency",
       "values": {"firebase": {"count": 998, "min": 1, "mean": 5, "p50": 4.6, "p90": 9, "p99": 27.8, "max": 30},
                  "rusher": null},
       "missing": {"firebase": 2, "rusher": 0}},
      {"id": "bundle_gzip", "title": "Client bundle, minified and gzipped", "unit": "bytes", "kind": "size",
       "values": {"firebase": {"value": 51536}, "rusher": {"value": 36614}}}
    ],
    "details": {"bundle": {"rusher": {"packages": {"phoenix": 27211}}}},
    "real_firebase": {"ran": false, "reason": "FIREBASE_CONFIG not given"}
  }
}"#;

    #[test]
    fn a_firebase_summary_parses_with_its_comparison() {
        let s = summary::parse(SUMMARY).unwrap();
        assert_eq!(s.scenario.kind, "firebase");
        assert_eq!(s.connections, 1001);
        let c = s.firebase.as_ref().unwrap();
        assert_eq!(c.what, "SDK and protocol cost on loopback, not Google's servers");
        let ids: Vec<_> = c.sides.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["firebase", "rusher", "rusher-full"]);
        assert!(!c.real_firebase.ran);
        assert_eq!(c.real_firebase.reason.as_deref(), Some("FIREBASE_CONFIG not given"));

        let write = &c.figures[0];
        assert_eq!((write.kind, write.unit.as_str()), (FigureKind::Latency, "ms"));
        assert_eq!(write.value("rusher-full").and_then(Measured::count), Some(2000));
        let p50 = statistics(FigureKind::Latency)[0].1;
        let p99 = statistics(FigureKind::Latency)[2].1;
        assert!((write.ratio("firebase", "rusher", p50).unwrap() - 5.45 / 0.27).abs() < 1e-9);
        assert!((write.ratio("firebase", "rusher", p99).unwrap() - 20.5 / 2.95).abs() < 1e-9);

        let fanout = &c.figures[1];
        assert!(fanout.value("rusher").is_none(), "null: the side took no sample");
        assert_eq!(fanout.ratio("firebase", "rusher", p50), None);
        assert_eq!(c.missing(), 2);
        assert_eq!(s.errors(), [("firebase comparison: copies or events that never arrived".to_owned(), 2)]);

        let bundle = &c.figures[2];
        let value = statistics(FigureKind::Size)[0].1;
        assert_eq!(bundle.value("firebase").and_then(value), Some(51536.0));
        assert_eq!(bundle.value("firebase").and_then(Measured::count), None);
        assert!((bundle.ratio("firebase", "rusher", value).unwrap() - 51536.0 / 36614.0).abs() < 1e-9);
        let (a, b) = c.ratio_sides().unwrap();
        assert_eq!((a.id.as_str(), b.id.as_str()), ("firebase", "rusher"));
    }

    #[test]
    fn other_summaries_have_no_comparison() {
        let s = summary::parse(r#"{"scenario": {"kind": "geo"}}"#).unwrap();
        assert!(s.firebase.is_none());
    }

    #[test]
    fn a_figure_of_unknown_kind_is_an_error() {
        let text = SUMMARY.replace(r#""kind": "size""#, r#""kind": "colour""#);
        assert!(summary::parse(&text).is_err());
        let text = SUMMARY.replace(r#"{"value": 51536}"#, r#"{"amount": 51536}"#);
        assert!(summary::parse(&text).is_err(), "a value that is neither percentiles nor a size");
    }
}
