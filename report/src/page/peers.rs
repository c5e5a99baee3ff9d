//! The peer comparison on the page: in the comparisons, the servers and every figure with its ratio
//! to Rusher's; in the comparison run's own section, the same table and a chart per figure.

use std::fmt::Write as _;

use super::format::{escape, ms, ratio, thousands};
use super::{anchor, figure};
use crate::charts::{self, svg};
use crate::parse::peers::{headline, Better, Comparison, Figure, FigureKind};
use crate::parse::Run;

/// The id of the comparisons' peer heading.
pub const HEADING_ID: &str = "peer-comparison";

/// The runs that hold a peer comparison, in page order.
fn comparisons(runs: &[Run]) -> Vec<(&Run, &Comparison)> {
    runs.iter().filter_map(|r| Some((r, r.summary.as_ref()?.peers.as_ref()?))).collect()
}

/// A server's headline value as printed: `0.42 ms` (p99), `6,000 B`, `4,210/s`, `19,000`.
fn value_text(f: &Figure, server: &str) -> Option<String> {
    let v = headline(f.kind)(f.value(server)?)?;
    Some(match f.kind {
        FigureKind::Latency => format!("{} ms", ms(v * 1000.0)),
        FigureKind::Size => format!("{} B", thousands(v.round().max(0.0) as u64)),
        FigureKind::Rate => format!("{}/s", thousands(v.round().max(0.0) as u64)),
        FigureKind::Count => thousands(v.round().max(0.0) as u64),
    })
}

/// The comparisons' peer subsection: the latest comparison run's table, linked to its section.
pub fn comparison(html: &mut String, runs: &[Run]) {
    let _ = writeln!(html, "<h3 id=\"{HEADING_ID}\">Peer comparison</h3>");
    let Some((run, c)) = comparisons(runs).pop() else {
        html.push_str(
            "<p class=\"empty\">No peer comparison has been run yet (<code>scripts/compare-peers</code> runs \
             Rusher and the servers of <code>bench/peers</code> through the same load generator runs).</p>\n",
        );
        return;
    };
    let _ = writeln!(
        html,
        "<p>From <a href=\"#{}\">{}</a>, where every figure is charted side by side. {}</p>",
        escape(&anchor(run)),
        escape(&run.name),
        escape(&c.cores)
    );
    table(html, run, c);
}

/// The servers, then a row per figure: each server's headline value and its ratio to the baseline's,
/// marked where the baseline is not ahead.
fn table(html: &mut String, run: &Run, c: &Comparison) {
    html.push_str("<ul class=\"sides\">\n");
    for s in &c.servers {
        let version =
            if s.version.is_empty() { String::new() } else { format!(" — {}", escape(&s.version)) };
        let _ = writeln!(html, "<li><code>{}</code>: {}{version}</li>", escape(&s.id), escape(&s.label));
    }
    html.push_str("</ul>\n");
    let _ = write!(
        html,
        "<table class=\"peer-figures\" data-run=\"{}\">\n<tr><th>figure</th>",
        escape(&run.name)
    );
    for s in &c.servers {
        let _ = write!(html, "<th class=\"num\">{}</th>", escape(&s.id));
    }
    html.push_str("</tr>\n");
    for f in &c.figures {
        let _ = write!(html, "<tr data-figure=\"{}\"><td>{}</td>", escape(&f.id), escape(&f.title));
        for s in &c.servers {
            let text = match value_text(f, &s.id) {
                None => "–".to_owned(),
                Some(v) if s.id == c.baseline => v,
                Some(v) => match f.ratio(&s.id, &c.baseline, headline(f.kind)) {
                    Some(r) => format!("{v} ({})", ratio(r)),
                    None => v,
                },
            };
            let behind = s.id != c.baseline && f.ahead(&c.baseline, &s.id) == Some(false);
            let class = if behind { "num bad" } else { "num" };
            let _ = write!(html, "<td class=\"{class}\">{}</td>", escape(&text));
        }
        html.push_str("</tr>\n");
    }
    let limit = c.limit_ms.map_or_else(String::new, |l| {
        format!(" A client count is held when every copy of every broadcast arrived and p95 stayed under {l:.0} ms.")
    });
    let _ = writeln!(
        html,
        "</table>\n<p>Latencies are p99; the ratio is the server's figure divided by {}'s (for latency and memory \
         lower is better, for rates and client counts higher). Red: {} is not ahead there.{}</p>",
        escape(&c.baseline),
        escape(&c.baseline),
        escape(&limit)
    );
}

/// A comparison run's figures, in its own section: the table, then one chart per figure.
pub fn run_figures(html: &mut String, run: &Run, c: &Comparison) {
    html.push_str("<h3>Figures, server by server</h3>\n");
    let _ = writeln!(html, "<p>{}</p>", escape(&c.cores));
    table(html, run, c);
    let caption = format!(
        "One group of bars per server. Each bar is printed with its ratio to {}'s (×2: twice its value).",
        escape(&c.baseline)
    );
    for f in &c.figures {
        if let Some(chart) = charts::peers::figure_chart(&run.name, c, f) {
            let better = match f.better {
                Better::Lower => "Lower is better.",
                Better::Higher => "Higher is better.",
            };
            figure(html, &svg::bar_chart(&chart), &format!("{caption} {better}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{peers, summary};

    fn run() -> Run {
        Run {
            name: "2026-11-28-peers".into(),
            setup: None,
            summary: Some(summary::parse(peers::TEST_SUMMARY).unwrap()),
            histograms: Vec::new(),
            samples: Vec::new(),
            db_distributions: Vec::new(),
        }
    }

    #[test]
    fn comparisons_show_every_figure_with_ratios_and_where_rusher_is_behind() {
        let mut html = String::new();
        comparison(&mut html, &[run()]);
        assert!(html.contains("href=\"#run-2026-11-28-peers\""));
        assert!(html.contains("<li><code>node-ws</code>: Node.js + ws — ws 8.23.0</li>"), "{html}");
        assert!(
            html.contains(
                "<tr data-figure=\"rss_per_connection\"><td>Server memory per held connection</td>\
             <td class=\"num\">400 B</td><td class=\"num\">6,000 B (×15)</td><td class=\"num\">–</td></tr>"
            ),
            "{html}"
        );
        assert!(
            html.contains("<td class=\"num bad\">0.40 ms (×0.800)</td>"),
            "node's p99 beats rusher's: {html}"
        );
        assert!(
            html.contains("<td class=\"num\">10,000 (×0.526)</td><td class=\"num\">0 (×0.000)</td>"),
            "{html}"
        );
    }

    #[test]
    fn without_a_comparison_run_it_says_so() {
        let mut html = String::new();
        comparison(&mut html, &[]);
        assert!(html.contains("No peer comparison has been run yet"));
    }

    #[test]
    fn a_run_charts_every_figure() {
        let r = run();
        let mut html = String::new();
        run_figures(&mut html, &r, r.summary.as_ref().unwrap().peers.as_ref().unwrap());
        assert_eq!(html.matches("<svg class=\"chart\"").count(), 3);
        assert!(html.contains("data-chart=\"peers-2026-11-28-peers-max_clients\""));
        assert!(html.contains("Higher is better.") && html.contains("Lower is better."));
    }
}
