//! What the charts show: series extracted from the parsed results, independent of drawing.
//! [`svg`] turns them into inline SVG.

pub mod axis;
pub mod db;
pub mod firebase;
pub mod peers;
pub mod svg;

use crate::parse::{Hgrm, Run, Sample};

/// How a line chart's x values are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// Plain numbers from 0.
    Linear,
    /// Positions from [`axis::percentile_x`], labelled as percentiles.
    Percentile,
}

/// One line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text; also the `data-series` attribute of the drawn path.
    pub name: String,
    /// (x, y) in chart units, x increasing.
    pub points: Vec<(f64, f64)>,
}

/// A chart of lines sharing both axes.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// Unique in the page; the `data-chart` attribute of the SVG.
    pub id: String,
    /// Heading drawn above the plot.
    pub title: String,
    /// X axis label with its unit.
    pub x_label: String,
    /// Y axis label with its unit.
    pub y_label: String,
    /// Layout of x.
    pub x_axis: XAxis,
    /// Lines, in legend order; never empty.
    pub series: Vec<Series>,
}

/// Horizontal bars: one group per category, one bar per series in each group.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    /// Unique in the page; the `data-chart` attribute of the SVG.
    pub id: String,
    /// Heading drawn above the plot.
    pub title: String,
    /// Value axis label with its unit.
    pub value_label: String,
    /// How the value printed beside each bar reads.
    pub unit: BarUnit,
    /// Category names (runs), top to bottom.
    pub categories: Vec<String>,
    /// Series in legend order; `values[i]` belongs to `categories[i]`, `None` if not measured.
    pub series: Vec<BarSeries>,
    /// The category every bar is compared with: its ratio to that category's bar of the same series
    /// is printed beside it.
    pub baseline: Option<usize>,
}

/// The unit of a bar chart's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarUnit {
    /// Bytes: `8,360 B`.
    Bytes,
    /// Milliseconds: `0.42 ms`.
    Ms,
    /// A rate: `45,210/s`.
    PerSecond,
    /// Microseconds, as `1.50 µs`, `900 µs` or, from a millisecond up, `2.50 ms`.
    Us,
    /// A plain count: `19,000`.
    Count,
}

impl BarUnit {
    /// A value as printed beside its bar.
    pub fn format(self, v: f64) -> String {
        use crate::page::format::{ms, thousands};
        match self {
            BarUnit::Bytes => format!("{} B", thousands(v.round().max(0.0) as u64)),
            BarUnit::Ms => format!("{} ms", ms(v * 1000.0)),
            BarUnit::PerSecond => format!("{}/s", thousands(v.round().max(0.0) as u64)),
            BarUnit::Us if v < 10.0 => format!("{v:.2} µs"),
            BarUnit::Us if v < 1000.0 => format!("{v:.0} µs"),
            BarUnit::Us => format!("{} ms", ms(v)),
            BarUnit::Count => thousands(v.round().max(0.0) as u64),
        }
    }
}

impl BarChart {
    /// The ratio of series `s`'s bar in category `c` to the baseline category's bar of that series.
    pub fn ratio(&self, s: usize, c: usize) -> Option<f64> {
        let values = &self.series.get(s)?.values;
        let base = (*values.get(self.baseline?)?)?;
        let v = (*values.get(c)?)?;
        (base > 0.0).then(|| v / base)
    }
}

/// The bars of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct BarSeries {
    /// Legend text; also the `data-series` attribute of its bars.
    pub name: String,
    /// One value per category.
    pub values: Vec<Option<f64>>,
}

/// A latency distribution as HdrHistogram plots it: x = percentile position, y = ms. The
/// 100% row is left out: it lies at infinity on this axis.
pub fn latency_series(name: &str, h: &Hgrm) -> Series {
    let points =
        h.points.iter().filter_map(|p| axis::percentile_x(p.percentile).map(|x| (x, p.value_ms))).collect();
    Series { name: name.to_owned(), points }
}

/// One value per sample over time: x = seconds since the run started. Samples without the value
/// are skipped.
pub fn time_series(name: &str, samples: &[Sample], value: impl Fn(&Sample) -> Option<f64>) -> Series {
    let points = samples.iter().filter_map(|s| Some((s.t_ms as f64 / 1000.0, value(s)?))).collect();
    Series { name: name.to_owned(), points }
}

const KIB_PER_MIB: f64 = 1024.0;

/// What a metric file measures, for titles and legends.
pub fn metric_label(kind: &str, metric: &str) -> String {
    match (kind, metric) {
        (_, "tcp") => "TCP connect".into(),
        (_, "establish") => "establish (TCP + upgrade + join)".into(),
        ("geo", "ack") => "update → reply".into(),
        ("collab", "ack") => "update → relayed back to its sender".into(),
        (_, "ack") => "publish → ack".into(),
        ("collab", "delivery") => "update → other editors".into(),
        (_, "delivery") => "publish → each copy".into(),
        (_, "event") => "update → geofence event".into(),
        (_, "every-copy") => "publish → every copy delivered".into(),
        (_, other) => other.into(),
    }
}

/// Every latency distribution of one run, overlaid.
pub fn run_latency_chart(run: &Run) -> Option<LineChart> {
    let series: Vec<Series> = run
        .histograms
        .iter()
        .map(|(metric, h)| latency_series(&metric_label(run.kind(), metric), h))
        .filter(|s| !s.points.is_empty())
        .collect();
    (!series.is_empty()).then(|| LineChart {
        id: format!("latency-{}", run.name),
        title: format!("Latency by percentile — {}", run.name),
        x_label: "percentile".into(),
        y_label: "latency (ms)".into(),
        x_axis: XAxis::Percentile,
        series,
    })
}

/// Open connections over the run, from `samples.jsonl`.
pub fn run_connections_chart(run: &Run) -> Option<LineChart> {
    let series = time_series("connections open", &run.samples, |s| Some(s.connections as f64));
    (series.points.len() >= 2).then(|| LineChart {
        id: format!("connections-{}", run.name),
        title: format!("Connections over time — {}", run.name),
        x_label: "time since start (s)".into(),
        y_label: "connections".into(),
        x_axis: XAxis::Linear,
        series: vec![series],
    })
}

/// Server RSS and kernel slab over the run, from `samples.jsonl`.
pub fn run_memory_chart(run: &Run) -> Option<LineChart> {
    let mib = |kb: Option<u64>| kb.map(|kb| kb as f64 / KIB_PER_MIB);
    let series: Vec<Series> = [
        time_series("server RSS (all server processes)", &run.samples, |s| mib(s.server_rss_kb)),
        time_series("kernel slab (whole machine)", &run.samples, |s| mib(s.slab_kb)),
    ]
    .into_iter()
    .filter(|s| s.points.len() >= 2)
    .collect();
    (!series.is_empty()).then(|| LineChart {
        id: format!("memory-{}", run.name),
        title: format!("Memory over time — {}", run.name),
        x_label: "time since start (s)".into(),
        y_label: "memory (MiB)".into(),
        x_axis: XAxis::Linear,
        series,
    })
}

/// Runs of one scenario kind overlaid, one chart per metric that at least two of them measured.
pub fn comparison_charts(kind: &str, runs: &[&Run]) -> Vec<LineChart> {
    let mut metrics: Vec<&str> =
        runs.iter().flat_map(|r| r.histograms.iter().map(|(m, _)| m.as_str())).collect();
    metrics.sort_by_key(|m| crate::parse::hgrm::metric_order(m));
    metrics.dedup();
    metrics
        .into_iter()
        .filter_map(|metric| {
            let series: Vec<Series> = runs
                .iter()
                .filter_map(|r| {
                    r.histograms.iter().find(|(m, _)| m == metric).map(|(_, h)| latency_series(&r.name, h))
                })
                .filter(|s| !s.points.is_empty())
                .collect();
            (series.len() >= 2).then(|| LineChart {
                id: format!("compare-{kind}-{metric}"),
                title: format!("{kind} runs compared: {}", metric_label(kind, metric)),
                x_label: "percentile".into(),
                y_label: "latency (ms)".into(),
                x_axis: XAxis::Percentile,
                series,
            })
        })
        .collect()
}

/// Server RSS and kernel slab per connection for every run that reported them.
pub fn bytes_per_connection_chart(runs: &[Run]) -> Option<BarChart> {
    let measured: Vec<&Run> = runs
        .iter()
        .filter(|r| {
            r.summary.as_ref().is_some_and(|s| {
                s.server_rss_bytes_per_connection.is_some() || s.kernel_slab_bytes_per_connection.is_some()
            })
        })
        .collect();
    if measured.is_empty() {
        return None;
    }
    let values = |f: fn(&crate::parse::Summary) -> Option<f64>| {
        measured.iter().map(|r| r.summary.as_ref().and_then(f)).collect()
    };
    Some(BarChart {
        id: "bytes-per-connection".into(),
        title: "Memory per connection at the peak, by run".into(),
        value_label: "bytes per connection".into(),
        unit: BarUnit::Bytes,
        baseline: None,
        categories: measured.iter().map(|r| r.name.clone()).collect(),
        series: vec![
            BarSeries { name: "server RSS".into(), values: values(|s| s.server_rss_bytes_per_connection) },
            BarSeries {
                name: "kernel slab growth".into(),
                values: values(|s| s.kernel_slab_bytes_per_connection),
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{hgrm, samples, summary};

    fn run(name: &str, kind: &str, hgrms: &[(&str, &str)], samples_text: &str) -> Run {
        Run {
            name: name.into(),
            setup: None,
            summary: Some(
                summary::parse(&format!(
                    r#"{{"scenario": {{"kind": "{kind}"}}, "server_rss_bytes_per_connection": 391.0, "kernel_slab_bytes_per_connection": 8360.2}}"#
                ))
                .unwrap(),
            ),
            histograms: hgrms.iter().map(|(m, t)| (m.to_string(), hgrm::parse(t).unwrap())).collect(),
            samples: samples::parse(samples_text).unwrap(),
            db_distributions: Vec::new(),
        }
    }

    const H: &str = "Value Percentile TotalCount 1/(1-Percentile)\n\n1.0 0.0 1 1.00\n2.0 0.5 5 2.00\n9.0 0.99 10 100.00\n12.0 1.0 10\n";
    const SAMPLES: &str = "{\"t_ms\":1000,\"connections\":0,\"server_rss_kb\":2048,\"slab_kb\":10240}\n\
                           {\"t_ms\":2500,\"connections\":5000,\"server_rss_kb\":3072}\n\
                           {\"t_ms\":3000,\"connections\":10000,\"server_rss_kb\":4096,\"slab_kb\":20480}\n";

    #[test]
    fn latency_series_drops_the_point_at_infinity() {
        let s = latency_series("x", &hgrm::parse(H).unwrap());
        assert_eq!(s.points.len(), 3);
        assert_eq!(s.points[0], (0.0, 1.0));
        assert!((s.points[2].0 - 2.0).abs() < 1e-9 && s.points[2].1 == 9.0);
    }

    #[test]
    fn memory_series_are_mib_over_seconds_and_skip_gaps() {
        let r = run("r", "connect", &[], SAMPLES);
        let mem = run_memory_chart(&r).unwrap();
        assert_eq!(mem.series[0].points, [(1.0, 2.0), (2.5, 3.0), (3.0, 4.0)]);
        assert_eq!(mem.series[1].points, [(1.0, 10.0), (3.0, 20.0)], "the sample without slab is skipped");
        let conns = run_connections_chart(&r).unwrap();
        assert_eq!(conns.series[0].points, [(1.0, 0.0), (2.5, 5000.0), (3.0, 10000.0)]);
        assert!(run_connections_chart(&run("r", "connect", &[], "")).is_none());
    }

    #[test]
    fn run_chart_uses_scenario_labels() {
        let r = run("g", "geo", &[("tcp", H), ("ack", H)], "");
        let chart = run_latency_chart(&r).unwrap();
        let names: Vec<_> = chart.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["TCP connect", "update → reply"]);
        assert_eq!(chart.x_axis, XAxis::Percentile);
    }

    #[test]
    fn comparisons_need_two_runs_with_the_metric() {
        let a = run("geo", "geo", &[("event", H), ("ack", H)], "");
        let b = run("geo-2", "geo", &[("event", H)], "");
        let charts = comparison_charts("geo", &[&a, &b]);
        assert_eq!(charts.len(), 1, "only `event` is in both runs");
        assert_eq!(charts[0].id, "compare-geo-event");
        let names: Vec<_> = charts[0].series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["geo", "geo-2"]);
        assert!(comparison_charts("geo", &[&a]).is_empty());
    }

    #[test]
    fn bytes_per_connection_by_run() {
        let runs = [run("a", "chat", &[], ""), run("b", "connect", &[], "")];
        let chart = bytes_per_connection_chart(&runs).unwrap();
        assert_eq!(chart.categories, ["a", "b"]);
        assert_eq!(chart.series[0].values, [Some(391.0), Some(391.0)]);
        assert_eq!(chart.series[1].values, [Some(8360.2), Some(8360.2)]);
        assert!(bytes_per_connection_chart(&[]).is_none());
    }
}
