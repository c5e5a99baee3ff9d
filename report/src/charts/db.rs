//! The charts of a database comparison: one group of bars per configuration (a backend with one
//! durability setting), each bar printed with its ratio to the baseline's, and the latency
//! distributions of every configuration overlaid.

use super::{latency_series, BarChart, BarSeries, BarUnit, LineChart, XAxis};
use crate::page::format::thousands;
use crate::parse::db::{Config, Db, GeoRow, Store, DISTRIBUTIONS};
use crate::parse::summary::Latency;
use crate::parse::Run;

/// A percentile in ms, or `None` when the latency has no sample.
fn pct(l: &Latency, p: fn(&Latency) -> f64) -> Option<f64> {
    (l.count > 0).then(|| p(l) / 1000.0)
}

fn p50(l: &Latency) -> f64 {
    l.p50
}

fn p99(l: &Latency) -> f64 {
    l.p99
}

fn p999(l: &Latency) -> f64 {
    l.p999
}

/// The configurations that ran, in order.
pub fn ran(db: &Db) -> Vec<&Config> {
    db.configs.iter().filter(|c| c.skipped.is_none()).collect()
}

/// One bar chart over the configurations that ran; `series` are (name, value of a configuration).
fn bars(
    id: String,
    title: String,
    value_label: &str,
    unit: BarUnit,
    db: &Db,
    series: Vec<(String, Get<'_>)>,
) -> Option<BarChart> {
    let configs = ran(db);
    let series: Vec<BarSeries> = series
        .into_iter()
        .map(|(name, get)| BarSeries { name, values: configs.iter().map(|c| get(c)).collect() })
        .filter(|s| s.values.iter().any(Option::is_some))
        .collect();
    (!series.is_empty()).then(|| BarChart {
        id,
        title,
        value_label: value_label.into(),
        unit,
        categories: configs.iter().map(|c| c.title()).collect(),
        baseline: configs.iter().position(|c| c.name == db.baseline),
        series,
    })
}

type Get<'a> = Box<dyn Fn(&Config) -> Option<f64> + 'a>;

fn store<'a>(f: impl Fn(&Store) -> Option<f64> + 'a) -> Get<'a> {
    Box::new(move |c: &Config| c.store.as_ref().and_then(&f))
}

/// "10,000/s" from the baseline's (or first) configuration that has the phase.
fn offered(db: &Db, f: impl Fn(&Store) -> Option<f64>) -> String {
    ran(db)
        .iter()
        .find_map(|c| c.store.as_ref().and_then(&f))
        .map_or_else(|| "?".into(), |r| thousands(r as u64))
}

/// Chat write → ack in the storage layer at the comparison rate: p50, p99, p99.9.
pub fn write_chart(run: &str, db: &Db) -> Option<BarChart> {
    let rate = offered(db, |s| s.chat.open.offered_per_s);
    let series: Vec<(String, Get)> = [("p50", p50 as fn(&Latency) -> f64), ("p99", p99), ("p99.9", p999)]
        .into_iter()
        .map(|(name, p)| (name.to_owned(), store(move |s| pct(&s.chat.open.latency_us, p))))
        .collect();
    bars(
        format!("db-write-{run}"),
        format!("Chat write → ack, storage layer, {rate} messages/s offered"),
        "latency (ms)",
        BarUnit::Ms,
        db,
        series,
    )
}

/// Writes per second: at capacity (closed loop) for each kind, and chat at the target rate.
pub fn throughput_chart(run: &str, db: &Db) -> Option<BarChart> {
    let target = offered(db, |s| s.chat.target.as_ref().and_then(|t| t.offered_per_s));
    let series: Vec<(String, Get)> = vec![
        (format!("chat acked at {target}/s offered"), store(|s| s.chat.target.as_ref().map(|t| t.per_s))),
        ("chat at capacity".into(), store(|s| Some(s.chat.max.per_s).filter(|v| *v > 0.0))),
        ("Yjs updates at capacity".into(), store(|s| Some(s.yjs.max.per_s).filter(|v| *v > 0.0))),
        ("geofence logs at capacity".into(), store(|s| Some(s.geo.max.per_s).filter(|v| *v > 0.0))),
    ];
    bars(
        format!("db-throughput-{run}"),
        "Writes per second, storage layer".into(),
        "acknowledged writes per second",
        BarUnit::PerSecond,
        db,
        series,
    )
}

/// History pages of 50 and room heads, one read at a time: p50 and p99.
pub fn reads_chart(run: &str, db: &Db) -> Option<BarChart> {
    let series: Vec<(String, Get)> = vec![
        ("history page p50".into(), store(|s| pct(&s.history.reads.latency_us, p50))),
        ("history page p99".into(), store(|s| pct(&s.history.reads.latency_us, p99))),
        ("room head p50".into(), store(|s| pct(&s.head.reads.latency_us, p50))),
        ("room head p99".into(), store(|s| pct(&s.head.reads.latency_us, p99))),
    ];
    bars(
        format!("db-reads-{run}"),
        "Reads: a history page of 50, a room head with its latest 50".into(),
        "latency (ms)",
        BarUnit::Ms,
        db,
        series,
    )
}

/// Yjs update append → ack at the comparison rate, and the large updates' p99.
pub fn yjs_chart(run: &str, db: &Db) -> Option<BarChart> {
    let rate = offered(db, |s| s.yjs.open.offered_per_s);
    let series: Vec<(String, Get)> = vec![
        ("p50".into(), store(|s| pct(&s.yjs.open.latency_us, p50))),
        ("p99".into(), store(|s| pct(&s.yjs.open.latency_us, p99))),
        ("p99.9".into(), store(|s| pct(&s.yjs.open.latency_us, p999))),
        (
            "large updates (4–64 KiB) p99".into(),
            store(|s| s.yjs.large.as_ref().and_then(|l| pct(&l.latency_us, p99))),
        ),
    ];
    bars(
        format!("db-yjs-{run}"),
        format!("Yjs update append → ack, {rate} updates/s offered"),
        "latency (ms)",
        BarUnit::Ms,
        db,
        series,
    )
}

/// End to end through a real server: publish → ack and publish → delivery, p50 and p99.
pub fn e2e_chart(run: &str, db: &Db) -> Option<BarChart> {
    let chat = |f: fn(&crate::parse::db::Chat) -> Option<Latency>, p: fn(&Latency) -> f64| -> Get {
        Box::new(move |c: &Config| c.chat.as_ref().and_then(f).and_then(|l| pct(&l, p)))
    };
    let series: Vec<(String, Get)> = vec![
        ("publish → ack p50".into(), chat(|c| c.ack_us, p50)),
        ("publish → ack p99".into(), chat(|c| c.ack_us, p99)),
        ("publish → delivery p50".into(), chat(|c| c.delivery_us, p50)),
        ("publish → delivery p99".into(), chat(|c| c.delivery_us, p99)),
    ];
    bars(
        format!("db-e2e-{run}"),
        "End to end: rusher on each store, chat through the load generator".into(),
        "latency (ms)",
        BarUnit::Ms,
        db,
        series,
    )
}

/// The geofence evaluators at each size: latency of one query at a time, p50 and p99 of both kinds of
/// query, with the ratio to the R-tree (the server's own evaluator).
pub fn geo_charts(run: &str, db: &Db) -> Vec<BarChart> {
    let rows: Vec<GeoRow> =
        db.geo_evaluators.iter().flat_map(|g| g.rows()).filter(|r| r.mode == "single").collect();
    let mut sizes: Vec<u64> = rows.iter().map(|r| r.fences).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
        .into_iter()
        .filter_map(|n| {
            let at_size: Vec<&GeoRow> = rows.iter().filter(|r| r.fences == n).collect();
            let mut evaluators: Vec<&str> = Vec::new();
            for r in &at_size {
                if !evaluators.contains(&r.evaluator.as_str()) {
                    evaluators.push(&r.evaluator);
                }
            }
            let value = |e: &str, query: &str, p: fn(&GeoRow) -> Option<f64>| {
                at_size.iter().find(|r| r.evaluator == e && r.query == query).and_then(|r| p(r))
            };
            let series: Vec<BarSeries> = [
                (
                    "fences containing a point, p50",
                    "fences_at",
                    (|r: &GeoRow| r.p50_us) as fn(&GeoRow) -> Option<f64>,
                ),
                ("fences containing a point, p99", "fences_at", |r| r.p99_us),
                ("objects within a radius, p50", "objects_within", |r| r.p50_us),
                ("objects within a radius, p99", "objects_within", |r| r.p99_us),
            ]
            .into_iter()
            .map(|(name, query, p)| BarSeries {
                name: name.into(),
                values: evaluators.iter().map(|e| value(e, query, p)).collect(),
            })
            .filter(|s| s.values.iter().any(Option::is_some))
            .collect();
            (!series.is_empty()).then(|| BarChart {
                id: format!("db-geo-{n}-{run}"),
                title: format!(
                    "Geofence evaluators, {} fences and points: one query at a time",
                    thousands(n)
                ),
                value_label: "latency per query".into(),
                unit: BarUnit::Us,
                baseline: evaluators.iter().position(|e| *e == "rtree"),
                categories: evaluators.iter().map(|e| e.to_string()).collect(),
                series,
            })
        })
        .collect()
}

/// Each of [`DISTRIBUTIONS`] with every configuration that has it overlaid.
pub fn distribution_charts(run: &Run, db: &Db) -> Vec<LineChart> {
    DISTRIBUTIONS
        .iter()
        .filter_map(|(file, short, label)| {
            let series: Vec<_> = ran(db)
                .iter()
                .filter_map(|c| {
                    let d = run.db_distributions.iter().find(|d| d.config == c.name && d.file == *file)?;
                    Some(latency_series(&c.title(), &d.hgrm)).filter(|s| !s.points.is_empty())
                })
                .collect();
            (!series.is_empty()).then(|| LineChart {
                id: format!("db-{short}-distribution-{}", run.name),
                title: format!("{} by percentile", capitalized(label)),
                x_label: "percentile".into(),
                y_label: "latency (ms)".into(),
                x_axis: XAxis::Percentile,
                series,
            })
        })
        .collect()
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

/// The stores' charts of a comparison, in page order: bars, then distributions. The geofence
/// evaluators' are apart ([`geo_charts`]): their baseline is the R-tree, not a store.
pub fn charts(run: &Run, db: &Db) -> (Vec<BarChart>, Vec<LineChart>) {
    let name = &run.name;
    let bars = [
        write_chart(name, db),
        throughput_chart(name, db),
        yjs_chart(name, db),
        reads_chart(name, db),
        e2e_chart(name, db),
    ]
    .into_iter()
    .flatten()
    .collect();
    (bars, distribution_charts(run, db))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::db::{Distribution, TEST_SUMMARY};
    use crate::parse::{hgrm, summary};

    fn db() -> Db {
        summary::parse(TEST_SUMMARY).unwrap().db.unwrap()
    }

    #[test]
    fn skipped_configurations_are_left_out_and_values_are_ms() {
        let db = db();
        let chart = write_chart("r", &db).unwrap();
        assert_eq!(chart.id, "db-write-r");
        assert_eq!(chart.title, "Chat write → ack, storage layer, 10,000 messages/s offered");
        assert_eq!(chart.categories, ["SQLite synchronous=full"]);
        let values: Vec<_> = chart.series.iter().map(|s| (s.name.as_str(), s.values[0])).collect();
        assert_eq!(values, [("p50", Some(0.8)), ("p99", Some(3.0)), ("p99.9", Some(9.0))]);
        assert_eq!(chart.baseline, Some(0));
        assert_eq!(chart.ratio(1, 0), Some(1.0));
    }

    #[test]
    fn ratios_are_to_the_baseline_of_the_same_series() {
        let mut db = db();
        let mut slower = db.configs[0].clone();
        slower.name = "postgres-on".into();
        slower.label = "PostgreSQL".into();
        slower.setting = "synchronous_commit=on".into();
        let store = slower.store.as_mut().unwrap();
        store.chat.max.per_s = 90_000.0;
        store.history.reads.latency_us.p99 = 360.0;
        db.configs.insert(1, slower);
        let t = throughput_chart("r", &db).unwrap();
        assert_eq!(t.categories, ["SQLite synchronous=full", "PostgreSQL synchronous_commit=on"]);
        let names: Vec<_> = t.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "chat acked at 100,000/s offered",
                "chat at capacity",
                "Yjs updates at capacity",
                "geofence logs at capacity"
            ]
        );
        assert_eq!(t.ratio(1, 1), Some(2.0), "90,000/s against 45,000/s");
        let r = reads_chart("r", &db).unwrap();
        assert_eq!(r.series[1].name, "history page p99");
        assert_eq!(r.series[1].values, [Some(0.12), Some(0.36)]);
        assert!((r.ratio(1, 1).unwrap() - 3.0).abs() < 1e-9);
    }

    #[test]
    fn series_without_any_value_are_dropped() {
        let mut db = db();
        let y = yjs_chart("r", &db).unwrap();
        let names: Vec<_> = y.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["p50", "p99", "p99.9", "large updates (4–64 KiB) p99"]);
        assert_eq!(y.series[3].values, [Some(5.0)]);
        // Without large updates (a count of 0), their series goes rather than showing a zero.
        db.configs[0].store.as_mut().unwrap().yjs.large.as_mut().unwrap().latency_us.count = 0;
        assert_eq!(yjs_chart("r", &db).unwrap().series.len(), 3);
        let e = e2e_chart("r", &db).unwrap();
        assert_eq!(e.series.len(), 4);
        assert_eq!(e.series[3].values, [Some(2.9)]);
        db.configs.retain(|c| c.skipped.is_some());
        assert!(write_chart("r", &db).is_none() && e2e_chart("r", &db).is_none());
    }

    #[test]
    fn geo_evaluators_one_chart_per_size_against_the_rtree() {
        let charts = geo_charts("r", &db());
        let ids: Vec<_> = charts.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["db-geo-10000-r", "db-geo-100000-r"]);
        let c = &charts[0];
        assert_eq!(c.title, "Geofence evaluators, 10,000 fences and points: one query at a time");
        assert_eq!(c.categories, ["rtree", "postgis"]);
        assert_eq!(c.baseline, Some(0));
        let names: Vec<_> = c.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "fences containing a point, p50",
                "fences containing a point, p99",
                "objects within a radius, p50",
                "objects within a radius, p99"
            ]
        );
        // Batch rows are left out; PostGIS did not answer radius queries here.
        assert_eq!(c.series[1].values, [Some(4.0), Some(900.0)]);
        assert_eq!(c.series[3].values, [Some(5.0), None]);
        assert_eq!(c.ratio(1, 1), Some(225.0));
        assert_eq!(BarUnit::Us.format(1.5), "1.50 µs");
        assert_eq!(BarUnit::Us.format(900.0), "900 µs");
        assert_eq!(BarUnit::Us.format(2500.0), "2.50 ms");
    }

    #[test]
    fn distributions_overlay_the_configurations() {
        let db = db();
        let h = hgrm::parse(
            "Value Percentile TotalCount 1/(1-Percentile)\n\n1.0 0.0 1 1.00\n2.0 0.5 5 2.00\n3.0 1.0 10\n",
        )
        .unwrap();
        let run = Run {
            name: "r".into(),
            setup: None,
            summary: None,
            histograms: Vec::new(),
            samples: Vec::new(),
            db_distributions: vec![Distribution {
                config: "sqlite-full".into(),
                file: "chat/ack.hgrm",
                hgrm: h,
            }],
        };
        let charts = distribution_charts(&run, &db);
        assert_eq!(charts.len(), 1, "only the end-to-end distribution is there");
        assert_eq!(charts[0].id, "db-e2e-distribution-r");
        assert_eq!(charts[0].title, "End to end: publish → ack by percentile");
        assert_eq!(charts[0].series[0].name, "SQLite synchronous=full");
        assert_eq!(charts[0].series[0].points.len(), 2);
    }
}
