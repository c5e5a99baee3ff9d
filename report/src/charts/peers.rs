//! The charts of a peer comparison, one per figure: a group of bars per server, one bar per
//! statistic (p50, p99 and max of a latency, or the one value of a size, rate or count), each
//! printed with its ratio to the baseline server's (Rusher).

use super::{BarChart, BarSeries, BarUnit};
use crate::parse::peers::{statistics, Comparison, Figure, FigureKind};

/// The chart of figure `f` of `run`'s comparison `c`; `None` when no server measured it.
pub fn figure_chart(run: &str, c: &Comparison, f: &Figure) -> Option<BarChart> {
    let servers: Vec<&str> =
        c.servers.iter().map(|s| s.id.as_str()).filter(|id| f.value(id).is_some()).collect();
    if servers.is_empty() {
        return None;
    }
    let series = statistics(f.kind)
        .iter()
        .map(|(name, stat)| BarSeries {
            name: (*name).to_owned(),
            values: servers.iter().map(|id| f.value(id).and_then(stat)).collect(),
        })
        .collect();
    let (value_label, unit) = match f.kind {
        FigureKind::Latency => ("latency (ms)", BarUnit::Ms),
        FigureKind::Size => ("bytes", BarUnit::Bytes),
        FigureKind::Rate => ("per second", BarUnit::PerSecond),
        FigureKind::Count => ("clients", BarUnit::Count),
    };
    Some(BarChart {
        id: format!("peers-{run}-{}", f.id),
        title: f.title.clone(),
        value_label: value_label.into(),
        unit,
        categories: servers.iter().map(|s| (*s).to_owned()).collect(),
        // Without the baseline's figure no bar has a ratio.
        baseline: servers.iter().position(|s| *s == c.baseline),
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::svg::bar_chart;
    use crate::parse::peers::tests::comparison;

    #[test]
    fn a_latency_figure_is_a_group_per_server_with_ratios_to_rusher() {
        let c = comparison();
        let chart = figure_chart("run", &c, &c.figures[1]).unwrap();
        assert_eq!(chart.id, "peers-run-echo_1000");
        assert_eq!(chart.categories, ["rusher", "node-ws"], "a server without the figure is left out");
        let names: Vec<_> = chart.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["p50", "p99", "max"]);
        assert_eq!(chart.series[0].values, [Some(0.2), Some(0.4)]);
        assert_eq!(chart.baseline, Some(0));
        let svg = bar_chart(&chart);
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 6);
        assert!(svg.contains(">0.40 ms ×2.00</text>") && svg.contains(">9.00 ms ×4.50</text>"), "{svg}");
    }

    #[test]
    fn sizes_and_counts_are_one_bar_per_server() {
        let c = comparison();
        let rss = figure_chart("run", &c, &c.figures[0]).unwrap();
        assert_eq!(rss.categories, ["rusher", "node-ws"]);
        assert!(bar_chart(&rss).contains(">6,000 B ×15</text>"));
        let max = figure_chart("run", &c, &c.figures[2]).unwrap();
        assert_eq!(max.categories, ["rusher", "node-ws", "python-websockets"]);
        assert_eq!(max.series[0].values, [Some(19000.0), Some(10000.0), Some(0.0)]);
        let svg = bar_chart(&max);
        assert!(svg.contains(">19,000 ×1.00</text>") && svg.contains(">10,000 ×0.526</text>"), "{svg}");
    }

    #[test]
    fn without_the_baseline_no_ratio_is_printed() {
        let mut c = comparison();
        c.baseline = "nobody".into();
        let chart = figure_chart("run", &c, &c.figures[0]).unwrap();
        assert_eq!(chart.baseline, None);
        assert!(!bar_chart(&chart).contains('×'));
    }
}
