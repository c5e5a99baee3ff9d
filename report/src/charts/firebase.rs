//! The charts of a Firebase comparison, one per figure: a group of bars per side (the firebase SDK,
//! `@rusher/client` with each durability setting), one bar per statistic (p50, p90, p99 and max of a
//! latency, or the one value of a size), each printed with its ratio to the second side's (rusher).

use super::{BarChart, BarSeries, BarUnit};
use crate::parse::firebase::{statistics, Comparison, Figure, FigureKind, Side};

/// The chart of figure `f` of `run`'s comparison `c`; `None` when no side measured it.
pub fn figure_chart(run: &str, c: &Comparison, f: &Figure) -> Option<BarChart> {
    let sides: Vec<&Side> = c.sides.iter().filter(|s| f.value(&s.id).is_some()).collect();
    if sides.is_empty() {
        return None;
    }
    let (_, base) = c.ratio_sides()?;
    let series = statistics(f.kind)
        .iter()
        .map(|(name, stat)| BarSeries {
            name: (*name).to_owned(),
            values: sides.iter().map(|s| f.value(&s.id).and_then(stat)).collect(),
        })
        .collect();
    Some(BarChart {
        id: format!("firebase-{run}-{}", f.id),
        title: f.title.clone(),
        value_label: match f.kind {
            FigureKind::Latency => format!("latency ({})", f.unit),
            FigureKind::Size => f.unit.clone(),
        },
        // The harness writes latencies in ms and sizes in bytes.
        unit: match f.kind {
            FigureKind::Latency => BarUnit::Ms,
            FigureKind::Size => BarUnit::Bytes,
        },
        categories: sides.iter().map(|s| s.id.clone()).collect(),
        // A side that did not measure the figure leaves its bars without a ratio.
        baseline: sides.iter().position(|s| s.id == base.id),
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::svg::bar_chart;
    use crate::parse::summary;

    fn comparison() -> Comparison {
        summary::parse(crate::parse::firebase::tests::SUMMARY).unwrap().firebase.unwrap()
    }

    #[test]
    fn a_latency_figure_is_a_group_per_side_with_ratios_to_rusher() {
        let c = comparison();
        let chart = figure_chart("run", &c, &c.figures[0]).unwrap();
        assert_eq!(chart.id, "firebase-run-write_ack");
        assert_eq!(chart.categories, ["firebase", "rusher", "rusher-full"]);
        let names: Vec<_> = chart.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["p50", "p90", "p99", "max"]);
        assert_eq!(chart.series[0].values, [Some(5.45), Some(0.27), Some(1.24)]);
        assert_eq!(chart.baseline, Some(1));
        assert!((chart.ratio(0, 0).unwrap() - 5.45 / 0.27).abs() < 1e-9);
        assert_eq!(chart.value_label, "latency (ms)");

        let svg = bar_chart(&chart);
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 12);
        assert!(svg.contains(">5.45 ms ×20</text>"), "firebase ÷ rusher at p50 printed: {svg}");
        assert!(svg.contains(">0.27 ms ×1.00</text>") && svg.contains(">188 ms ×64</text>"), "{svg}");
        assert!(svg.contains(">latency (ms)</text>") && svg.contains("data-series=\"max\""));
    }

    #[test]
    fn a_side_without_samples_is_left_out_and_nothing_has_a_ratio() {
        let c = comparison();
        let chart = figure_chart("run", &c, &c.figures[1]).unwrap();
        assert_eq!(chart.categories, ["firebase"]);
        assert_eq!(chart.baseline, None);
        let svg = bar_chart(&chart);
        assert!(svg.contains(">4.60 ms</text>") && !svg.contains('×'), "{svg}");
    }

    #[test]
    fn a_size_figure_is_one_bar_per_side_in_bytes() {
        let c = comparison();
        let chart = figure_chart("run", &c, &c.figures[2]).unwrap();
        assert_eq!(chart.series.len(), 1);
        assert_eq!(chart.value_label, "bytes");
        let svg = bar_chart(&chart);
        assert!(svg.contains(">51,536 B ×1.41</text>") && svg.contains(">36,614 B ×1.00</text>"), "{svg}");
    }
}
