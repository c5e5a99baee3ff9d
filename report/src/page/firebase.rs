//! The Firebase comparison on the page: in the comparisons, what was compared and the ratios of every
//! comparison run; in a comparison run's own section, every figure side by side as a table and as a
//! chart with every bar's ratio to rusher's printed.

use std::fmt::Write as _;

use super::format::{escape, ms, ratio, thousands};
use super::{anchor, figure};
use crate::charts::{self, svg};
use crate::parse::firebase::{statistics, Comparison, Figure, FigureKind, Statistic};
use crate::parse::Run;

/// The id of the comparisons' Firebase heading, linked from the overview.
pub const HEADING_ID: &str = "firebase-comparison";

/// The runs that hold a Firebase comparison, in page order.
fn comparisons(runs: &[Run]) -> Vec<(&Run, &Comparison)> {
    runs.iter().filter_map(|r| Some((r, r.summary.as_ref()?.firebase.as_ref()?))).collect()
}

/// `firebase ÷ rusher` of a statistic as printed, `n/a` when a side has no value.
fn ratio_text(c: &Comparison, f: &Figure, stat: Statistic) -> String {
    c.ratio_sides().and_then(|(a, b)| f.ratio(&a.id, &b.id, stat)).map_or_else(|| "n/a".to_owned(), ratio)
}

/// The statistics a table row shows: p50 and p99 of a latency, the value of a size.
fn headline_stats(f: &Figure) -> Vec<Statistic> {
    let stats = statistics(f.kind);
    match f.kind {
        FigureKind::Latency => vec![stats[0].1, stats[2].1],
        FigureKind::Size => vec![stats[0].1],
    }
}

/// A side's cell: `5.45 / 20.5 ms` (p50 / p99), `51,536 B`, or `–` when it did not run the figure.
fn cell(f: &Figure, side: &str) -> String {
    let Some(m) = f.value(side) else { return "–".to_owned() };
    let values: Vec<String> =
        headline_stats(f).iter().filter_map(|stat| stat(m)).map(|v| number(f.kind, v)).collect();
    match f.kind {
        FigureKind::Latency => format!("{} ms", values.join(" / ")),
        FigureKind::Size => format!("{} B", values.join(" / ")),
    }
}

fn number(kind: FigureKind, v: f64) -> String {
    match kind {
        FigureKind::Latency => ms(v * 1000.0),
        FigureKind::Size => thousands(v.round().max(0.0) as u64),
    }
}

/// The comparisons' Firebase subsection.
pub fn comparison(html: &mut String, runs: &[Run]) {
    let _ = writeln!(html, "<h3 id=\"{HEADING_ID}\">Firebase comparison</h3>");
    let found = comparisons(runs);
    if found.is_empty() {
        html.push_str(
            "<p class=\"empty\">No Firebase comparison has been run yet: none of the runs here measured \
             Firebase (<code>scripts/bench-firebase</code> runs one).</p>\n",
        );
        return;
    }
    for (run, c) in found {
        let _ = writeln!(
            html,
            "<p class=\"what\"><strong>{}.</strong> From <a href=\"#{}\">{}</a>, where every figure is charted \
             side by side:</p>",
            escape(&c.what),
            escape(&anchor(run)),
            escape(&run.name)
        );
        sides(html, c);
        let Some((a, b)) = c.ratio_sides() else { continue };
        let _ = writeln!(
            html,
            "<table class=\"firebase-ratios\" data-run=\"{}\">\n<tr><th>figure</th><th class=\"num\">{} ÷ {} \
             (p50 / p99, or the size)</th></tr>",
            escape(&run.name),
            escape(&a.id),
            escape(&b.id)
        );
        for f in &c.figures {
            let ratios: Vec<String> =
                headline_stats(f).into_iter().map(|stat| ratio_text(c, f, stat)).collect();
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
                escape(&f.title),
                escape(&ratios.join(" / "))
            );
        }
        html.push_str("</table>\n");
    }
}

/// The sides, what each acknowledgement means, and whether the real-Firebase layer ran.
fn sides(html: &mut String, c: &Comparison) {
    html.push_str("<ul class=\"sides\">\n");
    for s in &c.sides {
        let _ = writeln!(
            html,
            "<li><code>{}</code>: {}{}</li>",
            escape(&s.id),
            escape(&s.label),
            if s.durability.is_empty() { String::new() } else { format!(" — {}", escape(&s.durability)) }
        );
    }
    let real = &c.real_firebase;
    let line = match (&real.database_url, &real.reason) {
        (Some(url), _) if real.ran => {
            format!("The firebase side ran against the Firebase project at {}.", escape(url))
        }
        (_, reason) => format!(
            "The real-Firebase layer did not run{}; <code>bench/firebase/README.md</code> says how to run it \
             against a project.",
            reason.as_deref().map_or(String::new(), |r| format!(": {}", escape(r)))
        ),
    };
    let _ = writeln!(html, "<li>{line}</li>\n</ul>");
}

/// A comparison run's figures, in its own section: the table, then one chart per figure.
pub fn run_figures(html: &mut String, run: &Run, c: &Comparison) {
    let _ = writeln!(
        html,
        "<h3>Figures, side by side</h3>\n<p class=\"what\"><strong>{}.</strong></p>",
        escape(&c.what)
    );
    sides(html, c);
    html.push_str("<table class=\"firebase-figures\">\n<tr><th>figure</th>");
    for s in &c.sides {
        let _ = write!(html, "<th class=\"num\">{}</th>", escape(&s.id));
    }
    let ratio_heading = c.ratio_sides().map_or_else(String::new, |(a, b)| format!("{} ÷ {}", a.id, b.id));
    let _ = writeln!(
        html,
        "<th class=\"num\">{}</th><th class=\"num\">samples</th></tr>",
        escape(&ratio_heading)
    );
    for f in &c.figures {
        let _ = write!(html, "<tr><td>{}</td>", escape(&f.title));
        for s in &c.sides {
            let _ = write!(html, "<td class=\"num\">{}</td>", escape(&cell(f, &s.id)));
        }
        let ratios: Vec<String> = headline_stats(f).into_iter().map(|stat| ratio_text(c, f, stat)).collect();
        let counts: Vec<String> =
            c.sides.iter().filter_map(|s| f.value(&s.id)?.count()).map(thousands).collect();
        let missing: u64 = f.missing.values().sum();
        let samples = match (counts.is_empty(), missing) {
            (true, _) => "–".to_owned(),
            (false, 0) => counts.join(" / "),
            (false, n) => format!("{}, {} missing", counts.join(" / "), thousands(n)),
        };
        let _ = writeln!(
            html,
            "<td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&ratios.join(" / ")),
            escape(&samples)
        );
    }
    html.push_str(
        "</table>\n<p>Latencies as p50 / p99, sizes in bytes; the ratio is the first side's figure divided by \
         the second's, so above ×1 the first took longer or more.</p>\n",
    );
    let caption = c.ratio_sides().map_or_else(String::new, |(_, b)| {
        format!(
            "One group of bars per side: the percentiles of its samples, or its size. Each bar is printed with its \
             ratio to {}'s (×2: twice its value).",
            escape(&b.id)
        )
    });
    for f in &c.figures {
        if let Some(chart) = charts::firebase::figure_chart(&run.name, c, f) {
            figure(html, &svg::bar_chart(&chart), &caption);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{firebase, summary};

    fn run() -> Run {
        Run {
            name: "2026-11-28-firebase".into(),
            setup: None,
            summary: Some(summary::parse(firebase::tests::SUMMARY).unwrap()),
            histograms: Vec::new(),
            samples: Vec::new(),
            db_distributions: Vec::new(),
        }
    }

    #[test]
    fn comparisons_show_what_and_the_ratios_with_a_link() {
        let mut html = String::new();
        comparison(&mut html, &[run()]);
        assert!(
            html.contains("<strong>SDK and protocol cost on loopback, not Google&#39;s servers.</strong>")
        );
        assert!(html.contains("href=\"#run-2026-11-28-firebase\""));
        assert!(html.contains("The real-Firebase layer did not run: FIREBASE_CONFIG not given"));
        assert!(
            html.contains("<td>Write until acknowledged</td><td class=\"num\">×20 / ×6.95</td>"),
            "{html}"
        );
        assert!(html.contains("<td>Client bundle, minified and gzipped</td><td class=\"num\">×1.41</td>"));
        assert!(html.contains("<td>Fan-out to 10 listeners</td><td class=\"num\">n/a / n/a</td>"));
    }

    #[test]
    fn without_a_comparison_run_it_says_so() {
        let mut html = String::new();
        comparison(&mut html, &[]);
        assert!(html.contains("No Firebase comparison has been run yet"));
    }

    #[test]
    fn a_run_shows_every_figure_as_a_row_and_a_chart() {
        let r = run();
        let mut html = String::new();
        run_figures(&mut html, &r, r.summary.as_ref().unwrap().firebase.as_ref().unwrap());
        assert!(html.contains(
            "<tr><td>Write until acknowledged</td><td class=\"num\">5.45 / 20.5 ms</td><td class=\"num\">0.27 / 2.95 ms</td>\
             <td class=\"num\">1.24 / 188 ms</td><td class=\"num\">×20 / ×6.95</td><td class=\"num\">2,000 / 2,000 / 2,000</td></tr>"
        ), "{html}");
        assert!(html.contains("<td class=\"num\">–</td>"), "a side that did not run a figure");
        assert!(html.contains("998, 2 missing"));
        assert!(html.contains("<td class=\"num\">51,536 B</td>"));
        assert_eq!(html.matches("<svg class=\"chart\"").count(), 3);
        assert!(html.contains("data-chart=\"firebase-2026-11-28-firebase-fanout_10\""));
    }
}
