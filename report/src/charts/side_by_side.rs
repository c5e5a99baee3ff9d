//! Side-by-side bars for a comparison of sides (the firebase SDK against `@rusher/client`): one chart per
//! figure, one group of bars per statistic (p50, p90, p99 and max of a latency, or the one value of a
//! size), one bar per side with its value printed, and the ratio of the first side to the second printed
//! beside each group.

use std::fmt::Write as _;

use super::axis::{nice_ticks, tick_label};
use super::svg::{color, legend, open_svg, Scale, BOTTOM, RIGHT, TOP, WIDTH};
use super::BarSeries;
use crate::page::format::{escape, ms, thousands};
use crate::parse::firebase::{statistics, Comparison, Figure, FigureKind};

/// One figure, side by side.
#[derive(Debug, Clone, PartialEq)]
pub struct SideBySide {
    /// Unique in the page; the `data-chart` attribute of the SVG.
    pub id: String,
    /// Heading drawn above the plot.
    pub title: String,
    /// Value axis label with its unit.
    pub value_label: String,
    /// The figure's kind, which says how values are printed.
    pub kind: FigureKind,
    /// Statistic names, top to bottom (`p50`, ..., or `value`).
    pub categories: Vec<String>,
    /// One series per side that measured the figure, in the sides' order.
    pub series: Vec<BarSeries>,
    /// Heading of the ratio column, e.g. `firebase ÷ rusher`.
    pub ratio_heading: String,
    /// The ratio per category, `None` where a side has no value.
    pub ratios: Vec<Option<f64>>,
}

/// The chart of figure `f` of `run`'s comparison `c`; `None` when no side measured it.
pub fn figure_chart(run: &str, c: &Comparison, f: &Figure) -> Option<SideBySide> {
    let stats = statistics(f.kind);
    let series: Vec<BarSeries> = c
        .sides
        .iter()
        .filter(|s| f.value(&s.id).is_some())
        .map(|s| BarSeries {
            name: s.id.clone(),
            values: stats.iter().map(|(_, stat)| f.value(&s.id).and_then(stat)).collect(),
        })
        .collect();
    if series.is_empty() {
        return None;
    }
    let (a, b) = c.ratio_sides()?;
    Some(SideBySide {
        id: format!("firebase-{run}-{}", f.id),
        title: f.title.clone(),
        value_label: match f.kind {
            FigureKind::Latency => format!("latency ({})", f.unit),
            FigureKind::Size => f.unit.clone(),
        },
        kind: f.kind,
        categories: stats.iter().map(|(name, _)| (*name).to_owned()).collect(),
        series,
        ratio_heading: format!("{} ÷ {}", a.id, b.id),
        ratios: stats.iter().map(|(_, stat)| f.ratio(&a.id, &b.id, *stat)).collect(),
    })
}

/// A value as printed on its bar: `5.45 ms`, `51,536 B`.
fn printed(kind: FigureKind, v: f64) -> String {
    match kind {
        FigureKind::Latency => format!("{} ms", ms(v * 1000.0)),
        FigureKind::Size => format!("{} B", thousands(v.round().max(0.0) as u64)),
    }
}

/// Draws the chart: horizontal bars, values printed after them, ratios in a column on the right.
pub fn draw(chart: &SideBySide) -> String {
    const LABELS: f64 = 90.0;
    const BAR: f64 = 14.0;
    const GAP: f64 = 12.0;
    /// Room after a bar for its printed value.
    const VALUE_W: f64 = 84.0;
    const RATIO_W: f64 = 120.0;
    let group = chart.series.len() as f64 * BAR + GAP;
    let legend_h = 8.0 + chart.series.len() as f64 * 18.0;
    let plot_top = TOP + legend_h + 24.0;
    let height = plot_top + chart.categories.len() as f64 * group + BOTTOM;
    let plot_bottom = height - BOTTOM;
    let bars_end = WIDTH - RIGHT - RATIO_W - VALUE_W;
    let max = chart.series.iter().flat_map(|s| s.values.iter().flatten()).fold(0.0, |a: f64, b| a.max(*b));
    let ticks = nice_ticks(max);
    let sx = Scale { from: (0.0, *ticks.last().unwrap_or(&1.0)), to: (LABELS, bars_end) };
    let ratio_x = WIDTH - RIGHT - RATIO_W / 2.0;

    let mut out = String::new();
    open_svg(&mut out, &chart.id, &chart.title, WIDTH, height, chart.series.len());
    out.push_str(r#"<g class="axes">"#);
    for t in &ticks {
        let px = sx.at(*t);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{px:.1}" y1="{plot_top:.1}" x2="{px:.1}" y2="{plot_bottom:.1}"/>"#
        );
        let _ = write!(
            out,
            r#"<text class="tick" x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            plot_bottom + 16.0,
            tick_label(*t)
        );
    }
    let _ = write!(
        out,
        r#"<text class="axis-label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        (LABELS + bars_end) / 2.0,
        height - 14.0,
        escape(&chart.value_label)
    );
    let _ = write!(
        out,
        r#"<text class="axis-label" x="{ratio_x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        plot_top - 8.0,
        escape(&chart.ratio_heading)
    );
    for (c, category) in chart.categories.iter().enumerate() {
        let mid = plot_top + c as f64 * group + group / 2.0;
        let _ = write!(
            out,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LABELS - 8.0,
            mid + 4.0,
            escape(category)
        );
    }
    out.push_str("</g>");
    for (i, s) in chart.series.iter().enumerate() {
        let _ = write!(
            out,
            r#"<g class="series" data-series="{name}" fill="{c}"><title>{name}</title>"#,
            name = escape(&s.name),
            c = color(i)
        );
        for (c, value) in s.values.iter().enumerate() {
            let y = plot_top + c as f64 * group + GAP / 2.0 + i as f64 * BAR;
            let Some(v) = value else {
                let _ = write!(
                    out,
                    r#"<text class="bar-value" x="{:.1}" y="{:.1}">not measured</text>"#,
                    LABELS + 4.0,
                    y + BAR - 4.0
                );
                continue;
            };
            let text = printed(chart.kind, *v);
            // A bar too thin to see still marks where it starts.
            let w = (sx.at(*v) - LABELS).max(1.0);
            let _ = write!(
                out,
                r#"<rect class="bar" x="{LABELS}" y="{y:.1}" width="{w:.1}" height="{:.1}"><title>{} {}: {}</title></rect>"#,
                BAR - 2.0,
                escape(&s.name),
                escape(&chart.categories[c]),
                escape(&text)
            );
            let _ = write!(
                out,
                r#"<text class="bar-value" x="{:.1}" y="{:.1}">{}</text>"#,
                LABELS + w + 4.0,
                y + BAR - 4.0,
                escape(&text)
            );
        }
        out.push_str("</g>");
    }
    out.push_str(r#"<g class="ratios">"#);
    for (c, ratio) in chart.ratios.iter().enumerate() {
        let mid = plot_top + c as f64 * group + group / 2.0;
        let text = ratio.map_or_else(|| "n/a".to_owned(), crate::parse::firebase::ratio_label);
        let _ = write!(
            out,
            r#"<text class="ratio" data-category="{}" x="{ratio_x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            escape(&chart.categories[c]),
            mid + 5.0,
            escape(&text)
        );
    }
    out.push_str("</g>");
    legend(&mut out, chart.series.iter().map(|s| s.name.as_str()), LABELS, TOP, false);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::summary;

    fn comparison() -> Comparison {
        summary::parse(crate::parse::firebase::tests::SUMMARY).unwrap().firebase.unwrap()
    }

    #[test]
    fn a_latency_figure_is_four_groups_of_the_sides_that_ran_it() {
        let c = comparison();
        let chart = figure_chart("run", &c, &c.figures[0]).unwrap();
        assert_eq!(chart.id, "firebase-run-write_ack");
        assert_eq!(chart.categories, ["p50", "p90", "p99", "max"]);
        let names: Vec<_> = chart.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["firebase", "rusher", "rusher-full"]);
        assert_eq!(chart.series[1].values, [Some(0.27), Some(0.5), Some(2.95), Some(9.0)]);
        assert_eq!(chart.ratio_heading, "firebase ÷ rusher");
        assert!((chart.ratios[0].unwrap() - 5.45 / 0.27).abs() < 1e-9);
        assert_eq!(chart.value_label, "latency (ms)");

        let svg = draw(&chart);
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 12);
        assert!(svg.contains(">5.45 ms</text>") && svg.contains(">188 ms</text>"));
        assert!(svg.contains(">20×</text>"), "firebase ÷ rusher at p50 printed");
        assert!(svg.contains(">firebase ÷ rusher</text>") && svg.contains(">latency (ms)</text>"));
        assert!(svg.contains("data-series=\"rusher-full\""));
    }

    #[test]
    fn a_side_without_samples_is_left_out_and_its_ratio_is_na() {
        let c = comparison();
        let chart = figure_chart("run", &c, &c.figures[1]).unwrap();
        let names: Vec<_> = chart.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["firebase"]);
        assert!(chart.ratios.iter().all(Option::is_none));
        assert!(draw(&chart).contains(">n/a</text>"));
    }

    #[test]
    fn a_size_figure_is_one_group_in_bytes() {
        let c = comparison();
        let chart = figure_chart("run", &c, &c.figures[2]).unwrap();
        assert_eq!(chart.categories, ["value"]);
        assert_eq!(chart.value_label, "bytes");
        let svg = draw(&chart);
        assert!(svg.contains(">51,536 B</text>") && svg.contains(">36,614 B</text>"));
        assert!(svg.contains(">1.4×</text>"));
    }
}
