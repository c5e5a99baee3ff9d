//! The HTML page: one self-contained document (inline CSS and SVG, no scripts, no links to
//! anything outside the file), with an overview, the comparisons, then one section per run.

mod c1m;
mod db;
mod firebase;
pub mod format;
mod peers;
mod run;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::charts::{self, svg};
use crate::parse::Run;
use crate::reproduce::{flag_value, shell_words};
use format::{escape, ms, thousands};

const STYLE: &str = include_str!("style.css");

/// Renders the whole page for `runs` (sorted by name).
pub fn render(runs: &[Run]) -> String {
    let mut html = String::new();
    html.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    html.push_str("<title>Rusher load-test results</title>\n");
    let _ = writeln!(html, "<style>\n{STYLE}</style>\n</head>\n<body>\n<main>");
    html.push_str("<h1>Rusher load-test results</h1>\n");
    let _ = writeln!(
        html,
        "<p>{} runs from <code>results/</code>. Every figure and chart here is computed from the files in the run's \
         folder: <code>summary.json</code>, the <code>.hgrm</code> percentile files, <code>samples.jsonl</code> (one \
         sample per second) and <code>SETUP.md</code>. Latencies are measured from the intended send time, so a stall \
         in the server or the load generator shows in the percentiles (coordinated omission corrected). Regenerate \
         this page with <code>scripts/report</code>.</p>",
        runs.len()
    );
    if runs.is_empty() {
        html.push_str("<p class=\"empty\">There are no runs in <code>results/</code> yet: a run of any \
                       <code>scripts/bench-*</code> script, or of <code>rusher-loadgen --results results</code>, \
                       adds one.</p>\n");
    } else {
        contents(&mut html, runs);
        overview(&mut html, runs);
        comparisons(&mut html, runs);
        for r in runs {
            run::section(&mut html, r);
        }
    }
    html.push_str("</main>\n</body>\n</html>\n");
    html
}

/// The anchor of a run's section.
fn anchor(run: &Run) -> String {
    format!("run-{}", run.name)
}

fn contents(html: &mut String, runs: &[Run]) {
    html.push_str("<nav><h2>Contents</h2><ul>\n<li><a href=\"#overview\">Overview of the runs</a></li>\n");
    html.push_str("<li><a href=\"#comparisons\">Comparisons</a></li>\n");
    for r in runs {
        let _ = writeln!(
            html,
            "<li><a href=\"#{}\">{}</a> ({})</li>",
            escape(&anchor(r)),
            escape(&r.name),
            escape(r.kind())
        );
    }
    html.push_str("</ul></nav>\n");
}

/// The metric that best sums up a run of this kind, as (summary key, label).
fn main_metric(run: &Run) -> Option<(String, crate::parse::summary::Latency)> {
    let s = run.summary.as_ref()?;
    if let Some(db) = &s.db {
        let base = db.configs.iter().find(|c| c.name == db.baseline)?;
        let l = base.store.as_ref()?.chat.open.latency_us;
        return Some((format!("chat write → ack, {}", base.title()), l));
    }
    if let Some(every) = s.broadcast.as_ref().and_then(|b| b.every_copy_us) {
        return Some((charts::metric_label(run.kind(), "every-copy"), every));
    }
    ["event", "delivery", "ack", "establish"]
        .iter()
        .find_map(|m| s.latency_us.get(*m).map(|l| (charts::metric_label(run.kind(), m), *l)))
}

fn overview(html: &mut String, runs: &[Run]) {
    html.push_str("<section id=\"overview\"><h2>Overview of the runs</h2>\n<table>\n<tr><th>run</th><th>scenario</th>\
                   <th class=\"num\">connections</th><th>errors</th><th>main latency</th><th class=\"num\">p50 (ms)</th>\
                   <th class=\"num\">p99 (ms)</th></tr>\n");
    for r in runs {
        let _ = write!(
            html,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td>",
            escape(&anchor(r)),
            escape(&r.name),
            escape(r.kind())
        );
        match &r.summary {
            Some(s) => {
                let errors: u64 = s.errors().iter().map(|(_, n)| n).sum();
                let errors = if errors == 0 {
                    "<span class=\"ok\">0</span>".to_owned()
                } else {
                    format!("<span class=\"bad\">{}</span>", thousands(errors))
                };
                let _ = write!(
                    html,
                    "<td class=\"num\">{}</td><td>{errors}</td>",
                    thousands(s.peak_connections.unwrap_or(s.connections))
                );
                match main_metric(r) {
                    Some((label, l)) => {
                        let _ = write!(
                            html,
                            "<td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
                            escape(&label),
                            ms(l.p50),
                            ms(l.p99)
                        );
                    }
                    None if s.firebase.is_some() => {
                        let _ = write!(
                            html,
                            "<td colspan=\"3\">side by side: see the <a href=\"#{}\">Firebase comparison</a></td>",
                            firebase::HEADING_ID
                        );
                    }
                    None if s.peers.is_some() => {
                        let _ = write!(
                            html,
                            "<td colspan=\"3\">server by server: see the <a href=\"#{}\">peer comparison</a></td>",
                            peers::HEADING_ID
                        );
                    }
                    None => html.push_str("<td colspan=\"3\">no latency recorded</td>"),
                }
            }
            None => {
                html.push_str("<td colspan=\"5\" class=\"bad\">no summary.json: the run did not finish</td>")
            }
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table></section>\n");
}

fn figure(html: &mut String, svg: &str, caption: &str) {
    let _ = writeln!(html, "<figure>{svg}<figcaption>{caption}</figcaption></figure>");
}

fn comparisons(html: &mut String, runs: &[Run]) {
    html.push_str("<section id=\"comparisons\"><h2>Comparisons</h2>\n<h3>Memory per connection</h3>\n");
    match charts::bytes_per_connection_chart(runs) {
        Some(chart) => figure(
            html,
            &svg::bar_chart(&chart),
            "Server RSS: resident memory of all server processes at the peak, divided by the connections held. \
             Kernel slab growth: the machine's slab memory from before the run to its peak, per connection; with \
             server and clients on one machine it counts both ends of every loopback socket. Runs that keep other \
             state (documents, moving objects) hold more than connections.",
        ),
        None => html.push_str("<p class=\"empty\">No run reported memory per connection (runs need \
                               <code>--server-pid</code> for it).</p>\n"),
    }

    html.push_str("<h3>Latency of comparable runs</h3>\n");
    let mut by_kind: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    // The database, Firebase and peer comparisons have subsections of their own, below.
    let own_subsection = |r: &Run| {
        r.summary.as_ref().is_some_and(|s| s.db.is_some() || s.firebase.is_some() || s.peers.is_some())
    };
    for r in runs.iter().filter(|r| r.summary.is_some() && !own_subsection(r)) {
        by_kind.entry(r.kind()).or_default().push(r);
    }
    let mut single = Vec::new();
    for (kind, group) in &by_kind {
        let charts = charts::comparison_charts(kind, group);
        if charts.is_empty() {
            single.push(*kind);
            continue;
        }
        for chart in charts {
            figure(
                html,
                &svg::line_chart(&chart),
                &format!(
                    "Runs of the <code>{}</code> scenario overlaid; see each run's setup for how they differ.",
                    escape(kind)
                ),
            );
        }
    }
    if !single.is_empty() {
        let kinds: Vec<String> = single.iter().map(|k| format!("<code>{}</code>", escape(k))).collect();
        let _ = writeln!(
            html,
            "<p class=\"empty\">One run each of {}: nothing to overlay yet; their distributions are in their own sections.</p>",
            kinds.join(", ")
        );
    }

    html.push_str("<h3>Database comparison</h3>\n");
    let latest = runs.iter().rev().find_map(|r| Some((r, r.summary.as_ref()?.db.as_ref()?)));
    match latest {
        Some((run, db)) => db::headline_table(html, run, db),
        None => {
            let stores = stores(runs);
            let listed: Vec<String> = stores.iter().map(|s| format!("<code>{}</code>", escape(s))).collect();
            let _ = writeln!(
                html,
                "<p class=\"empty\">No database comparison has been run yet (<code>scripts/bench-db</code>). The runs \
                 here store their data in: {}.</p>",
                if listed.is_empty() { "(not recorded)".to_owned() } else { listed.join(", ") }
            );
        }
    }
    firebase::comparison(html, runs);
    peers::comparison(html, runs);
    html.push_str("</section>\n");
}

/// The distinct `--store` schemes of the runs' server processes (`sqlite`, ...).
fn stores(runs: &[Run]) -> Vec<String> {
    let mut stores: Vec<String> = runs
        .iter()
        .filter_map(|r| r.setup.as_ref())
        .flat_map(|s| s.server_commands().into_iter().map(shell_words).collect::<Vec<_>>())
        .filter_map(|words| flag_value(&words, "--store"))
        .map(|store| store.split_once("://").map_or(store.clone(), |(scheme, _)| scheme.to_owned()))
        .collect();
    stores.sort();
    stores.dedup();
    stores
}
