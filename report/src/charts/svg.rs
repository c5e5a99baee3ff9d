//! Inline SVG for [`LineChart`] and [`BarChart`]: fixed-size drawings scaled by the browser
//! through `viewBox`. Every series is drawn with `class="series"`, a `data-series` attribute and a
//! `<title>`, so a reader can hover it and a test can find it.

use std::fmt::Write as _;

use super::axis::{self, nice_ticks, percentile_label, tick_label, PERCENTILE_TICKS};
use super::{BarChart, LineChart, XAxis};
use crate::page::format::{escape, ratio};

/// Colours distinguishable with the common colour-vision deficiencies (Okabe and Ito).
const PALETTE: [&str; 7] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 58.0;
/// Rough width of a character of the 12 px legend font, to size the legend box.
const CHAR_WIDTH: f64 = 6.6;

/// A linear map from data to pixels.
#[derive(Clone, Copy)]
struct Scale {
    from: (f64, f64),
    to: (f64, f64),
}

impl Scale {
    fn at(self, v: f64) -> f64 {
        let span = self.from.1 - self.from.0;
        let t = if span > 0.0 { (v - self.from.0) / span } else { 0.0 };
        self.to.0 + t * (self.to.1 - self.to.0)
    }
}

fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

fn open_svg(out: &mut String, id: &str, title: &str, width: f64, height: f64, series: usize) {
    let _ = write!(
        out,
        r#"<svg class="chart" data-chart="{id}" data-series-count="{series}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" aria-label="{title}">"#,
        id = escape(id),
        title = escape(title),
    );
    let _ = write!(out, "<title>{}</title>", escape(title));
    let _ = write!(
        out,
        r#"<text class="chart-title" x="{}" y="24" text-anchor="middle">{}</text>"#,
        width / 2.0,
        escape(title)
    );
}

/// Draws a line chart.
pub fn line_chart(chart: &LineChart) -> String {
    let max_x = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(0.0, f64::max);
    let max_y = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max);
    let x_ticks: Vec<(f64, String)> = match chart.x_axis {
        XAxis::Linear => nice_ticks(max_x).into_iter().map(|t| (t, tick_label(t))).collect(),
        XAxis::Percentile => {
            let end = axis::percentile_axis_end(max_x);
            PERCENTILE_TICKS
                .iter()
                .filter_map(|p| Some((axis::percentile_x(*p)?, percentile_label(*p))))
                .filter(|(x, _)| *x <= end + 1e-9)
                .collect()
        }
    };
    let y_ticks = nice_ticks(max_y);
    let x_end = x_ticks.last().map_or(1.0, |t| t.0);
    let y_end = *y_ticks.last().unwrap_or(&1.0);
    let sx = Scale { from: (0.0, x_end), to: (LEFT, WIDTH - RIGHT) };
    let sy = Scale { from: (0.0, y_end), to: (HEIGHT - BOTTOM, TOP) };

    let mut out = String::new();
    open_svg(&mut out, &chart.id, &chart.title, WIDTH, HEIGHT, chart.series.len());
    out.push_str(r#"<g class="axes">"#);
    for (x, label) in &x_ticks {
        let px = sx.at(*x);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}"/>"#,
            HEIGHT - BOTTOM
        );
        let _ = write!(
            out,
            r#"<text class="tick" x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            HEIGHT - BOTTOM + 16.0,
            escape(label)
        );
    }
    for y in &y_ticks {
        let py = sy.at(*y);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}"/>"#,
            WIDTH - RIGHT
        );
        let _ = write!(
            out,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            py + 4.0,
            tick_label(*y)
        );
    }
    let _ = write!(
        out,
        r#"<rect class="frame" x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}"/>"#,
        WIDTH - LEFT - RIGHT,
        HEIGHT - TOP - BOTTOM
    );
    axis_labels(&mut out, &chart.x_label, &chart.y_label);
    out.push_str("</g>");

    for (i, s) in chart.series.iter().enumerate() {
        let mut d = String::new();
        for (j, (x, y)) in s.points.iter().enumerate() {
            let _ = write!(d, "{}{:.1},{:.1}", if j == 0 { "M" } else { "L" }, sx.at(*x), sy.at(*y));
        }
        let _ = write!(
            out,
            r#"<path class="series" data-series="{name}" data-points="{n}" d="{d}" stroke="{c}"><title>{name}</title></path>"#,
            name = escape(&s.name),
            n = s.points.len(),
            c = color(i),
        );
    }
    legend(&mut out, chart.series.iter().map(|s| s.name.as_str()), LEFT + 10.0, TOP + 10.0, true);
    out.push_str("</svg>");
    out
}

fn axis_labels(out: &mut String, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        r#"<text class="axis-label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - 14.0,
        escape(x_label)
    );
    let cy = TOP + (HEIGHT - TOP - BOTTOM) / 2.0;
    let _ = write!(
        out,
        r#"<text class="axis-label" x="18" y="{cy:.1}" text-anchor="middle" transform="rotate(-90 18 {cy:.1})">{}</text>"#,
        escape(y_label)
    );
}

/// A legend box at (x, y): a swatch (a line, or a square for bars) and the name of each series.
fn legend<'a>(out: &mut String, names: impl Iterator<Item = &'a str> + Clone, x: f64, y: f64, lines: bool) {
    let count = names.clone().count();
    let longest = names.clone().map(|n| n.chars().count()).max().unwrap_or(0);
    let (w, h) = (36.0 + longest as f64 * CHAR_WIDTH, 8.0 + count as f64 * 18.0);
    let _ = write!(
        out,
        r#"<g class="legend"><rect class="legend-box" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}"/>"#
    );
    for (i, name) in names.enumerate() {
        let ly = y + 14.0 + i as f64 * 18.0;
        if lines {
            let _ = write!(
                out,
                r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="3"/>"#,
                x + 8.0,
                x + 28.0,
                color(i)
            );
        } else {
            let _ = write!(
                out,
                r#"<rect x="{:.1}" y="{:.1}" width="14" height="10" fill="{}"/>"#,
                x + 10.0,
                ly - 5.0,
                color(i)
            );
        }
        let _ = write!(
            out,
            r#"<text class="legend-item" x="{:.1}" y="{:.1}">{}</text>"#,
            x + 34.0,
            ly + 4.0,
            escape(name)
        );
    }
    out.push_str("</g>");
}

/// The text printed beside bar `c` of series `s`: the value, and its ratio to the baseline's.
fn bar_text(chart: &BarChart, s: usize, c: usize) -> Option<String> {
    let v = chart.series.get(s)?.values.get(c).copied().flatten()?;
    let text = chart.unit.format(v);
    Some(match chart.ratio(s, c) {
        Some(r) => format!("{text} {}", ratio(r)),
        None => text,
    })
}

/// Draws horizontal grouped bars with their values printed.
pub fn bar_chart(chart: &BarChart) -> String {
    const BAR: f64 = 14.0;
    const GAP: f64 = 12.0;
    // Room for the category names on the left, and for the printed values right of the longest bar
    // (the 11 px value font is narrower than the legend's).
    let longest = |texts: &mut dyn Iterator<Item = usize>| texts.max().unwrap_or(0) as f64;
    let labels = (longest(&mut chart.categories.iter().map(|c| c.chars().count())) * CHAR_WIDTH + 16.0)
        .clamp(170.0, 320.0);
    let texts = &mut (0..chart.series.len())
        .flat_map(|s| (0..chart.categories.len()).map(move |c| (s, c)))
        .filter_map(|(s, c)| bar_text(chart, s, c))
        .map(|t| t.chars().count());
    let value_room = (longest(texts) * CHAR_WIDTH * 0.92 + 8.0).max(70.0);
    let group = chart.series.len() as f64 * BAR + GAP;
    let legend_h = 8.0 + chart.series.len() as f64 * 18.0;
    let plot_top = TOP + legend_h + 8.0;
    let height = plot_top + chart.categories.len() as f64 * group + BOTTOM;
    let max = chart.series.iter().flat_map(|s| s.values.iter().flatten()).fold(0.0, |a: f64, b| a.max(*b));
    let ticks = nice_ticks(max);
    let sx = Scale { from: (0.0, *ticks.last().unwrap_or(&1.0)), to: (labels, WIDTH - RIGHT - value_room) };
    let plot_bottom = height - BOTTOM;

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
        (labels + WIDTH - RIGHT - value_room) / 2.0,
        height - 14.0,
        escape(&chart.value_label)
    );
    for (c, category) in chart.categories.iter().enumerate() {
        let gy = plot_top + c as f64 * group + GAP / 2.0;
        let _ = write!(
            out,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            labels - 8.0,
            gy + group / 2.0 - 2.0,
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
            match value {
                Some(v) => {
                    let w = sx.at(*v) - labels;
                    let text = bar_text(chart, i, c).unwrap_or_default();
                    let _ = write!(
                        out,
                        r#"<rect class="bar" x="{labels}" y="{y:.1}" width="{w:.1}" height="{:.1}"><title>{}: {}</title></rect>"#,
                        BAR - 2.0,
                        escape(&chart.categories[c]),
                        escape(&text)
                    );
                    let _ = write!(
                        out,
                        r#"<text class="bar-value" x="{:.1}" y="{:.1}">{}</text>"#,
                        labels + w + 4.0,
                        y + BAR - 4.0,
                        escape(&text)
                    );
                }
                None => {
                    let _ = write!(
                        out,
                        r#"<text class="bar-value" x="{:.1}" y="{:.1}">not measured</text>"#,
                        labels + 4.0,
                        y + BAR - 4.0
                    );
                }
            }
        }
        out.push_str("</g>");
    }
    legend(&mut out, chart.series.iter().map(|s| s.name.as_str()), labels, TOP, false);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::{BarSeries, Series};

    fn chart(x_axis: XAxis) -> LineChart {
        LineChart {
            id: "c<1>".into(),
            title: "T & t".into(),
            x_label: "percentile".into(),
            y_label: "latency (ms)".into(),
            x_axis,
            series: vec![
                Series { name: "a".into(), points: vec![(0.0, 1.0), (1.0, 2.0), (3.0, 40.0)] },
                Series { name: "b".into(), points: vec![(0.0, 2.0), (2.0, 3.0)] },
            ],
        }
    }

    #[test]
    fn line_chart_has_a_path_per_series_and_escapes_text() {
        let svg = line_chart(&chart(XAxis::Percentile));
        assert!(
            svg.starts_with("<svg class=\"chart\" data-chart=\"c&lt;1&gt;\" data-series-count=\"2\""),
            "{svg}"
        );
        assert_eq!(svg.matches("class=\"series\"").count(), 2);
        assert!(svg.contains("data-series=\"a\" data-points=\"3\""));
        assert!(svg.contains("<title>T &amp; t</title>"));
        for label in ["0%", "50%", "90%", "99%", "99.9%", "99.99%"] {
            assert!(svg.contains(&format!(">{label}</text>")), "tick {label}");
        }
        assert!(!svg.contains(">99.999%<"), "the axis ends at 99.99% for data up to 99.9%");
        assert!(svg.contains(">latency (ms)</text>") && svg.contains(">percentile</text>"));
        // y ticks step by 10 up to the maximum, 40.
        for tick in ["0", "10", "20", "30", "40"] {
            assert!(svg.contains(&format!(">{tick}</text>")), "tick {tick}");
        }
    }

    #[test]
    fn linear_axes_start_at_zero() {
        let svg = line_chart(&chart(XAxis::Linear));
        // The first point of each series is at x = 0, the left edge of the plot.
        assert!(svg.contains(&format!("d=\"M{LEFT:.1},")));
    }

    #[test]
    fn bar_chart_prints_values_and_gaps() {
        let svg = bar_chart(&BarChart {
            id: "bars".into(),
            title: "Bytes".into(),
            value_label: "bytes per connection".into(),
            unit: crate::charts::BarUnit::Bytes,
            baseline: None,
            categories: vec!["r1".into(), "r2".into()],
            series: vec![
                BarSeries { name: "rss".into(), values: vec![Some(391.0), None] },
                BarSeries { name: "slab".into(), values: vec![Some(8360.2), Some(12.0)] },
            ],
        });
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 3);
        assert!(svg.contains(">8,360 B</text>") && svg.contains(">391 B</text>"));
        assert!(svg.contains(">not measured</text>"));
        assert!(svg.contains("data-series=\"rss\"") && svg.contains("data-series=\"slab\""));
    }

    #[test]
    fn bars_compared_with_a_baseline_print_their_ratio() {
        let svg = bar_chart(&BarChart {
            id: "db".into(),
            title: "Write ack".into(),
            value_label: "latency (ms)".into(),
            unit: crate::charts::BarUnit::Ms,
            baseline: Some(0),
            categories: vec!["SQLite synchronous=full".into(), "PostgreSQL synchronous_commit=on".into()],
            series: vec![BarSeries { name: "p99".into(), values: vec![Some(2.0), Some(4.0)] }],
        });
        assert!(svg.contains(">2.00 ms ×1.00</text>") && svg.contains(">4.00 ms ×2.00</text>"), "{svg}");
        assert!(svg.contains("<title>PostgreSQL synchronous_commit=on: 4.00 ms ×2.00</title>"), "{svg}");
        // The longest category name fits left of the bars: they start further right than the default.
        assert!(svg.contains("<rect class=\"bar\" x=\"227.2\""), "{svg}");
    }
}
