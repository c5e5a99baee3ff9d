//! The `db` section of a database comparison's `summary.json` (`scripts/bench-db`, gathered by
//! `rusher-loadgen db-summary`), and the `.hgrm` files of its configurations' folders.
//!
//! Every figure is optional: a configuration that was skipped, or a step that did not run, leaves
//! its part out, and the report says "not measured" rather than drawing a zero.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::hgrm::{self, Hgrm};
use super::summary::Latency;
use super::{parse_optional, LoadError};

/// The comparison: configurations in order, the first being the baseline of the ratios.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Db {
    /// Name of the baseline configuration.
    pub baseline: String,
    /// One backend with one durability setting each.
    pub configs: Vec<Config>,
    /// The geofence evaluators' figures, one file each, as they wrote them.
    pub geo_evaluators: Vec<GeoEvaluators>,
}

/// One backend with one durability setting.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Folder name, e.g. `sqlite-full`.
    pub name: String,
    /// `sqlite`, `postgres`, `redis`.
    pub backend: String,
    /// `SQLite`, `PostgreSQL`, `Redis`.
    pub label: String,
    /// The durability setting, e.g. `synchronous=full`.
    pub setting: String,
    /// What an acknowledged write survives with this setting.
    pub meaning: String,
    /// The database's version.
    pub version: Option<String>,
    /// Why it did not run, if it did not.
    pub skipped: Option<String>,
    /// The storage layer's figures (`rusher-loadgen store`).
    pub store: Option<Store>,
    /// The end-to-end chat figures.
    pub chat: Option<Chat>,
}

impl Config {
    /// `SQLite synchronous=full`.
    pub fn title(&self) -> String {
        format!("{} {}", self.label, self.setting)
    }
}

/// `store`: what `rusher-loadgen store` measured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Store {
    pub submitters: u64,
    pub seconds: f64,
    pub chat: Appends,
    pub yjs: Appends,
    pub geo: Appends,
    pub history: Reads,
    pub head: Reads,
}

/// The phases of one kind of write.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Appends {
    /// Open loop at the comparison rate.
    pub open: Phase,
    /// Open loop at the throughput target (chat only).
    pub target: Option<Phase>,
    /// Closed loop: capacity.
    pub max: Phase,
    /// The large updates of the open loop (Yjs only).
    pub large: Option<Large>,
    /// Chat rooms written to (chat only).
    pub rooms: Option<u64>,
}

/// One phase's counts and latency.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Phase {
    /// Requests per second offered (open loops).
    pub offered_per_s: Option<f64>,
    /// Requests in flight in all (closed loops).
    pub in_flight: Option<u64>,
    /// Successful requests per second.
    pub per_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub overloaded: u64,
    pub unanswered: u64,
    /// Acknowledged writes per group commit.
    pub mean_group: Option<f64>,
    pub latency_us: Latency,
}

/// The large Yjs updates of the open loop.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Large {
    pub count: u64,
    pub latency_us: Latency,
}

/// A read phase.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Reads {
    pub reads: Phase,
    /// Messages in the room the history pages come from.
    pub room_messages: Option<u64>,
}

/// The end-to-end chat run's figures.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Chat {
    pub connections: u64,
    pub published: u64,
    pub acked: u64,
    pub delivered: u64,
    pub ack_errors: u64,
    pub connection_failures: u64,
    pub ack_us: Option<Latency>,
    pub delivery_us: Option<Latency>,
}

/// One file of geofence evaluator figures.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GeoEvaluators {
    /// File name under `geo/`.
    pub file: String,
    /// Its content.
    pub figures: Value,
}

/// One row of `server/examples/geo_evaluators` figures: an evaluator answering one kind of query at
/// one size, one at a time or in batches.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GeoRow {
    /// `rtree`, `geohash`, `postgis`.
    pub evaluator: String,
    /// Fences (and points) loaded.
    pub fences: u64,
    /// `fences_at` (which fences contain a point) or `objects_within` (which objects lie in a circle).
    pub query: String,
    /// `single` or `batch`.
    pub mode: String,
    /// Latency per query (per batch in batch mode), µs.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub queries_per_s: Option<f64>,
}

impl GeoEvaluators {
    /// The rows, when the file is the evaluators' array of rows; empty otherwise.
    pub fn rows(&self) -> Vec<GeoRow> {
        serde_json::from_value::<Vec<GeoRow>>(self.figures.clone())
            .map(|rows| rows.into_iter().filter(|r| !r.evaluator.is_empty()).collect())
            .unwrap_or_default()
    }
}

impl Config {
    /// Every error its steps counted: failed or unanswered requests, error replies, failed
    /// connections. Refusals of a full queue are apart: see [`Config::overloaded`].
    pub fn errors(&self) -> u64 {
        let store = self
            .store
            .as_ref()
            .map_or(0, |s| s.phases().iter().map(|p| p.errors + p.unanswered).sum::<u64>());
        let chat = self.chat.as_ref().map_or(0, |c| c.ack_errors + c.connection_failures);
        store + chat
    }

    /// Writes refused because the storage queue was full ("overloaded"), over the open loops.
    pub fn overloaded(&self) -> u64 {
        self.store.as_ref().map_or(0, |s| s.phases().iter().map(|p| p.overloaded).sum())
    }
}

impl Store {
    fn phases(&self) -> Vec<&Phase> {
        let mut phases = vec![&self.chat.open, &self.chat.max, &self.yjs.open, &self.yjs.max];
        phases.extend(self.chat.target.as_ref());
        phases.extend([&self.geo.open, &self.geo.max, &self.history.reads, &self.head.reads]);
        phases
    }
}

/// The distributions drawn per configuration: (file under the configuration's folder, short name
/// for chart ids, label).
pub const DISTRIBUTIONS: [(&str, &str, &str); 2] = [
    ("store/chat.hgrm", "write", "storage layer: chat write → ack"),
    ("chat/ack.hgrm", "e2e", "end to end: publish → ack"),
];

/// A configuration's percentile distribution, read from its folder.
#[derive(Debug, Clone)]
pub struct Distribution {
    /// The configuration's name.
    pub config: String,
    /// Which file of [`DISTRIBUTIONS`].
    pub file: &'static str,
    pub hgrm: Hgrm,
}

/// Loads the [`DISTRIBUTIONS`] of every configuration that has them.
pub fn load_distributions(dir: &Path, db: &Db) -> Result<Vec<Distribution>, LoadError> {
    let mut out = Vec::new();
    for config in &db.configs {
        // Names come from summary.json: never follow one out of the run's folder.
        if config.name.is_empty() || config.name.contains(['/', '\\']) || config.name.starts_with('.') {
            continue;
        }
        for (file, _, _) in DISTRIBUTIONS {
            if let Some(h) = parse_optional(&dir.join(&config.name).join(file), hgrm::parse)? {
                out.push(Distribution { config: config.name.clone(), file, hgrm: h });
            }
        }
    }
    Ok(out)
}

/// A comparison's summary.json for the report's tests.
#[cfg(test)]
pub const TEST_SUMMARY: &str = r#"{
  "scenario": {"kind": "db", "baseline": "sqlite-full", "store_seconds": 5},
  "connections": 2000,
  "db": {"baseline": "sqlite-full", "configs": [
    {"name": "sqlite-full", "backend": "sqlite", "label": "SQLite", "setting": "synchronous=full",
     "meaning": "fsync", "version": "SQLite 3.46.0", "skipped": null,
     "store": {"submitters": 2, "seconds": 5.0,
       "chat": {"rooms": 1000,
         "open": {"mode": "open", "offered_per_s": 10000.0, "per_s": 9990.5, "acked": 50000, "errors": 1,
                  "overloaded": 0, "unanswered": 0, "mean_group": 12.5,
                  "latency_us": {"count": 50000, "p50": 800, "p99": 3000, "p999": 9000}},
         "target": {"offered_per_s": 100000.0, "per_s": 40000.0, "overloaded": 30000,
                    "latency_us": {"count": 10, "p99": 900000}},
         "max": {"in_flight": 4096, "per_s": 45000.0, "latency_us": {"count": 10, "p50": 90000}}},
       "yjs": {"open": {"per_s": 20000.0, "latency_us": {"count": 20000, "p50": 500, "p99": 2000, "p999": 4000}},
               "large": {"count": 100, "latency_us": {"count": 100, "p99": 5000}},
               "max": {"per_s": 60000.0}},
       "geo": {"open": {"per_s": 10000.0}, "max": {"per_s": 50000.0}},
       "history": {"room_messages": 10000, "reads": {"per_s": 9000.0, "unanswered": 2,
                   "latency_us": {"count": 2000, "p50": 80, "p99": 120}}},
       "head": {"reads": {"latency_us": {"count": 2000, "p50": 90, "p99": 130}}}},
     "chat": {"connections": 2000, "acked": 40000, "delivered": 800000, "ack_errors": 3,
              "ack_us": {"count": 40000, "p50": 1100, "p99": 2800}, "delivery_us": {"count": 800000, "p50": 1200, "p99": 2900}}},
    {"name": "redis-always", "backend": "redis", "label": "Redis", "setting": "appendfsync=always",
     "meaning": "fsync", "skipped": "backend not built", "store": null, "chat": null}
  ],
  "geo_evaluators": [{"file": "evaluators-10000.json", "figures": {"fences": 10000}},
    {"file": "evaluators.json", "figures": [
      {"evaluator": "rtree", "fences": 10000, "query": "fences_at", "mode": "single", "p50_us": 1.5, "p99_us": 4.0},
      {"evaluator": "rtree", "fences": 10000, "query": "fences_at", "mode": "batch", "p50_us": 150.0, "p99_us": 400.0},
      {"evaluator": "postgis", "fences": 10000, "query": "fences_at", "mode": "single", "p50_us": 300.0, "p99_us": 900.0},
      {"evaluator": "rtree", "fences": 10000, "query": "objects_within", "mode": "single", "p50_us": 2.0, "p99_us": 5.0},
      {"evaluator": "rtree", "fences": 100000, "query": "fences_at", "mode": "single", "p50_us": 2.5, "p99_us": 6.0}]}]}
}"#;

#[cfg(test)]
mod tests {
    use super::super::summary;
    use super::TEST_SUMMARY;

    #[test]
    fn a_db_summary_parses_with_every_part_optional() {
        let s = summary::parse(TEST_SUMMARY).unwrap();
        assert_eq!(s.scenario.kind, "db");
        let db = s.db.as_ref().unwrap();
        assert_eq!(db.baseline, "sqlite-full");
        let [full, redis] = &db.configs[..] else { panic!("two configurations") };
        assert_eq!(full.title(), "SQLite synchronous=full");
        let store = full.store.as_ref().unwrap();
        assert_eq!(store.chat.open.latency_us.p99, 3000.0);
        assert_eq!(store.chat.target.as_ref().unwrap().overloaded, 30000);
        assert_eq!(store.chat.max.in_flight, Some(4096));
        assert_eq!(store.yjs.large.as_ref().unwrap().latency_us.p99, 5000.0);
        assert_eq!(store.history.room_messages, Some(10000));
        assert_eq!(full.chat.as_ref().unwrap().delivery_us.unwrap().p99, 2900.0);
        // 1 chat write error, 2 unanswered history reads, 3 error replies end to end.
        assert_eq!(full.errors(), 6);
        assert_eq!(full.overloaded(), 30000);
        assert_eq!(redis.skipped.as_deref(), Some("backend not built"));
        assert!(redis.store.is_none() && redis.chat.is_none() && redis.version.is_none());
        assert_eq!(db.geo_evaluators[0].figures["fences"], 10000);
        assert!(db.geo_evaluators[0].rows().is_empty(), "not the evaluators' array");
        let rows = db.geo_evaluators[1].rows();
        assert_eq!(rows.len(), 5);
        assert_eq!((rows[2].evaluator.as_str(), rows[2].p99_us), ("postgis", Some(900.0)));
    }
}
