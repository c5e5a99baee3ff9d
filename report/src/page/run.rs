//! One run's section: notes, headline figures, errors, latency, charts, how to reproduce, setup.

use std::fmt::Write as _;

use super::format::{bytes, escape, mib, ms, number, thousands};
use super::{anchor, figure};
use crate::charts::{self, svg};
use crate::parse::setup::{Block, Section};
use crate::parse::summary::{Latency, Summary};
use crate::parse::{Run, Setup};
use crate::reproduce;

/// Appends the section of `run`.
pub fn section(html: &mut String, run: &Run) {
    let _ = writeln!(
        html,
        "<section class=\"run\" id=\"{}\" data-run=\"{}\"><h2>{} <small>{} scenario</small></h2>",
        escape(&anchor(run)),
        escape(&run.name),
        escape(&run.name),
        escape(run.kind())
    );
    if let Some(notes) = run.setup.as_ref().and_then(|s| s.section("Notes")) {
        blocks(html, &notes.blocks, "notes");
    }
    match &run.summary {
        Some(s) => match (&s.db, &s.firebase) {
            // A comparison's figures are per configuration, in its folders: it has its own layout.
            (Some(db), _) => {
                errors(html, s);
                super::db::section(html, run, db);
            }
            // A peer comparison's runs are in its folders: its charts are its figures.
            (None, None) if s.peers.is_some() => {
                if let Some(c) = &s.peers {
                    super::peers::run_figures(html, run, c);
                }
                errors(html, s);
            }
            // A Firebase comparison has no histograms or samples: its charts are its figures.
            (None, Some(c)) => {
                super::firebase::run_figures(html, run, c);
                errors(html, s);
                latency_table(html, run, s);
            }
            (None, None) => {
                headline(html, s);
                if let Some(c) = &s.c1m {
                    super::c1m::table(html, c);
                }
                errors(html, s);
                latency_table(html, run, s);
                charts_of(html, run);
            }
        },
        None => {
            html.push_str(
                "<p class=\"bad\">This folder has no <code>summary.json</code>: the run did not finish, \
                               so it has no figures.</p>\n",
            );
            charts_of(html, run);
        }
    }
    reproduce_block(html, run);
    match &run.setup {
        Some(setup) => setup_block(html, setup),
        None => html.push_str(
            "<h3>Setup</h3>\n<p class=\"bad\">This folder has no <code>SETUP.md</code>: the \
                               machine and command lines of this run were not recorded.</p>\n",
        ),
    }
    html.push_str("</section>\n");
}

fn row(html: &mut String, key: &str, value: &str) {
    let _ = writeln!(html, "<tr><th>{}</th><td>{value}</td></tr>", escape(key));
}

fn headline(html: &mut String, s: &Summary) {
    html.push_str("<h3>Headline figures</h3>\n<table class=\"headline\">\n");
    if !s.scenario.params.is_empty() {
        let params: Vec<String> = s
            .scenario
            .params
            .iter()
            .map(|(k, v)| format!("<code>{}</code> {}", escape(k), escape(&v.to_string())))
            .collect();
        row(html, "scenario parameters", &params.join(", "));
    }
    let peak = s.peak_connections.map_or(String::new(), |p| format!(" (peak open {})", thousands(p)));
    row(html, "connections", &format!("{}{peak}", thousands(s.connections)));
    let c = &s.counters;
    let retried = match c.retried {
        0 => String::new(),
        n => format!(" ({} failed attempts made again)", thousands(n)),
    };
    row(
        html,
        "connection steps",
        &format!(
            "{} attempted, {} TCP connected, {} upgraded, {} joined{retried}",
            thousands(c.attempted),
            thousands(c.tcp_connected),
            thousands(c.upgraded),
            thousands(c.joined)
        ),
    );
    if let Some(secs) = s.connect_seconds {
        let rate = s.rate.map_or(String::new(), |r| format!(" (asked for {} connections/s)", number(r)));
        row(html, "ramp", &format!("{secs:.1} s to open every connection{rate}"));
    }
    let spread: Vec<String> = [(s.agents, "load generator processes"), (s.sources, "source addresses")]
        .iter()
        .filter_map(|(n, what)| n.map(|n| format!("{} {what}", thousands(n))))
        .collect();
    if !spread.is_empty() {
        row(html, "load generator", &spread.join(", "));
    }
    if c.published > 0 || c.acked > 0 || c.delivered > 0 {
        row(
            html,
            "messages",
            &format!(
                "{} sent, {} answered, {} copies delivered",
                thousands(c.published),
                thousands(c.acked),
                thousands(c.delivered)
            ),
        );
    }
    if let Some(b) = &s.broadcast {
        row(
            html,
            "broadcast",
            &format!(
                "{} listeners; {} of {} messages reached every listener",
                thousands(b.subscribers),
                thousands(b.complete),
                thousands(b.messages)
            ),
        );
    }
    if let Some(g) = &s.geo {
        row(
            html,
            "geo throughput",
            &format!(
                "{} updates/s answered, {} fence events/s",
                number(g.updates_per_s),
                number(g.events_per_s)
            ),
        );
        let kinds: Vec<String> =
            g.events_by_kind.iter().map(|(k, n)| format!("{} {k}", thousands(*n))).collect();
        row(
            html,
            "geo events",
            &format!(
                "{} received ({}); {} caused by placing the objects, left out",
                thousands(g.events_received),
                escape(&kinds.join(", ")),
                thousands(g.placement_events)
            ),
        );
    }
    if let Some(rss) = s.server_rss_kb {
        row(html, "server RSS", &format!("{} before, {} at the peak", mib(rss.before), mib(rss.peak)));
    }
    per_connection(
        html,
        "server RSS per connection",
        s.server_rss_bytes_per_connection,
        s.server_rss_bytes_per_connection_marginal,
    );
    if let Some(slab) = s.kernel_slab_kb {
        row(
            html,
            "kernel slab (whole machine)",
            &format!("{} before, {} at the peak", mib(slab.before), mib(slab.peak)),
        );
    }
    per_connection(
        html,
        "kernel slab per connection",
        s.kernel_slab_bytes_per_connection,
        s.kernel_slab_bytes_per_connection_marginal,
    );
    row(
        html,
        "load generator traffic",
        &format!("{} bytes received, {} bytes sent", thousands(c.bytes_in), thousands(c.bytes_out)),
    );
    html.push_str("</table>\n");
}

fn per_connection(html: &mut String, key: &str, all_in: Option<f64>, marginal: Option<f64>) {
    let Some(all_in) = all_in else { return };
    let marginal = marginal.map_or_else(
        || "marginal not computed (too few samples during the ramp)".to_owned(),
        |m| format!("{} marginal (growth over the ramp)", bytes(m)),
    );
    row(html, key, &format!("{} all-in; {marginal}", bytes(all_in)));
}

fn errors(html: &mut String, s: &Summary) {
    html.push_str("<h3>Errors</h3>\n");
    let errors = s.errors();
    if errors.is_empty() {
        html.push_str(
            "<p class=\"ok errors\">None: no failed connection, error reply, lost agent or missing \
                       message.</p>\n",
        );
        return;
    }
    html.push_str("<ul class=\"bad errors\">\n");
    for (what, n) in errors {
        let _ = writeln!(html, "<li>{}: {}</li>", escape(&what), thousands(n));
    }
    html.push_str("</ul>\n");
}

fn latency_table(html: &mut String, run: &Run, s: &Summary) {
    let mut metrics: Vec<(String, Latency)> = s.latency_us.iter().map(|(k, v)| (k.clone(), *v)).collect();
    if let Some(every) = s.broadcast.as_ref().and_then(|b| b.every_copy_us) {
        metrics.push(("every-copy".into(), every));
    }
    if metrics.is_empty() {
        return;
    }
    metrics.sort_by(|(a, _), (b, _)| {
        crate::parse::hgrm::metric_order(a).cmp(&crate::parse::hgrm::metric_order(b))
    });
    html.push_str(
        "<h3>Latency</h3>\n<table class=\"latency\">\n<tr><th>what</th><th class=\"num\">samples</th>",
    );
    for p in ["p50", "p90", "p99", "p99.9", "p99.99", "max"] {
        let _ = write!(html, "<th class=\"num\">{p} (ms)</th>");
    }
    html.push_str("</tr>\n");
    for (metric, l) in metrics {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"num\">{}</td>",
            escape(&charts::metric_label(run.kind(), &metric)),
            thousands(l.count)
        );
        for v in [l.p50, l.p90, l.p99, l.p999, l.p9999, l.max] {
            let _ = write!(html, "<td class=\"num\">{}</td>", ms(v));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
}

fn charts_of(html: &mut String, run: &Run) {
    if let Some(chart) = charts::run_latency_chart(run) {
        figure(
            html,
            &svg::line_chart(&chart),
            "From the run's <code>.hgrm</code> files. The percentile axis is logarithmic in 1/(1 − p), as \
             HdrHistogram plots it: each step right adds a nine.",
        );
    } else {
        html.push_str(
            "<p class=\"empty\">No <code>.hgrm</code> files in this run's folder, so no latency \
                       distribution to draw.</p>\n",
        );
    }
    let connections = charts::run_connections_chart(run);
    let memory = charts::run_memory_chart(run);
    if connections.is_none() && memory.is_none() {
        html.push_str(
            "<p class=\"empty\">No <code>samples.jsonl</code> in this run's folder (or fewer than two \
                       samples), so no connections or memory over time.</p>\n",
        );
    }
    if let Some(chart) = connections {
        figure(
            html,
            &svg::line_chart(&chart),
            "Connections the load generator held open, sampled each second.",
        );
    }
    if let Some(chart) = memory {
        figure(
            html,
            &svg::line_chart(&chart),
            "Server RSS sums every server process; kernel slab is the whole machine's (both ends of loopback \
             sockets when clients share the machine).",
        );
    }
}

fn reproduce_block(html: &mut String, run: &Run) {
    html.push_str("<h3>How to reproduce</h3>\n");
    let at = run.setup.as_ref().and_then(reproduce::commit).map(|(hash, dirty)| {
        let dirty = if dirty { " (the working tree also had uncommitted changes)" } else { "" };
        format!(" Measured at commit <code>{}</code>{dirty}.", escape(hash))
    });
    match reproduce::bench_command(run) {
        Some(cmd) => {
            let runs = if run.kind() == "firebase" {
                "starts the servers and runs the comparison harness"
            } else {
                "starts the server and runs the load generator"
            };
            let _ = writeln!(
                html,
                "<pre class=\"reproduce\"><code>{}</code></pre>\n<p>The script builds the release binaries, \
                 {runs} with the command lines in the setup below, then writes a new folder under \
                 <code>results/</code>.{}</p>",
                escape(&cmd),
                at.unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(
                html,
                "<p>No <code>scripts/bench-*</code> script produces this kind of run: start the server processes, \
                 then run the load generator's command line, both as recorded in the setup below.{}</p>",
                at.unwrap_or_default()
            );
        }
    }
}

fn setup_block(html: &mut String, setup: &Setup) {
    html.push_str("<h3>Setup</h3>\n<div class=\"setup\">\n<section><h4>Machine</h4>\n");
    blocks(html, &setup.facts.blocks, "facts");
    html.push_str("</section>\n");
    for section in setup.sections.iter().filter(|s| s.heading != "Notes") {
        setup_section(html, section);
    }
    html.push_str("</div>\n");
}

fn setup_section(html: &mut String, section: &Section) {
    // Code, lists and tables of long values (sentences, not numbers) take the whole width.
    let long_cells = |rows: &[Vec<String>]| rows.iter().flatten().any(|cell| cell.chars().count() > 60);
    let wide = section.blocks.iter().any(|b| match b {
        Block::Code(_) | Block::List(_) => true,
        Block::Table { rows, .. } => long_cells(rows),
        Block::Text(_) => false,
    });
    let _ = writeln!(
        html,
        "<section{}><h4>{}</h4>",
        if wide { " class=\"wide\"" } else { "" },
        escape(&section.heading)
    );
    blocks(html, &section.blocks, "");
    html.push_str("</section>\n");
}

/// Renders SETUP.md blocks; text inside backticks becomes code.
fn blocks(html: &mut String, blocks: &[Block], class: &str) {
    for block in blocks {
        match block {
            Block::Table { header, rows } => {
                html.push_str("<table>\n");
                if header.iter().any(|h| !h.is_empty()) {
                    html.push_str("<tr>");
                    for h in header {
                        let _ = write!(html, "<th>{}</th>", inline(h));
                    }
                    html.push_str("</tr>\n");
                }
                for r in rows {
                    html.push_str("<tr>");
                    for (i, cell) in r.iter().enumerate() {
                        let tag = if i == 0 && header.iter().all(String::is_empty) { "th" } else { "td" };
                        let _ = write!(html, "<{tag}>{}</{tag}>", inline(cell));
                    }
                    html.push_str("</tr>\n");
                }
                html.push_str("</table>\n");
            }
            Block::List(items) => {
                let _ = write!(html, "<ul class=\"{class}\">");
                for item in items {
                    let _ = write!(html, "<li>{}</li>", inline(item).replace('\n', "<br>"));
                }
                html.push_str("</ul>\n");
            }
            Block::Code(lines) => {
                let _ = writeln!(html, "<pre><code>{}</code></pre>", escape(&lines.join("\n")));
            }
            Block::Text(text) => {
                let _ = writeln!(html, "<p>{}</p>", inline(text));
            }
        }
    }
}

/// Escapes Markdown text and turns `code spans` into `<code>`.
fn inline(text: &str) -> String {
    let parts: Vec<&str> = text.split('`').collect();
    // An odd number of parts means the backticks pair up; otherwise leave them as they are.
    if parts.len().is_multiple_of(2) {
        return escape(text);
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| if i % 2 == 1 { format!("<code>{}</code>", escape(p)) } else { escape(p) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{headline, inline};
    use crate::parse::summary::Summary;

    fn steps_row(counters: &str) -> String {
        let s: Summary = serde_json::from_str(&format!(
            r#"{{"scenario": {{"kind": "connect"}}, "connections": 10, "counters": {counters}}}"#
        ))
        .unwrap();
        let mut html = String::new();
        headline(&mut html, &s);
        let at = html.find("connection steps").expect("the steps row");
        html[at..].lines().next().unwrap().to_string()
    }

    #[test]
    fn retried_attempts_are_shown_only_when_there_were_some() {
        let row = steps_row(
            r#"{"attempted": 10, "tcp_connected": 10, "upgraded": 10, "joined": 10, "retried": 1234}"#,
        );
        assert!(row.contains("10 joined (1,234 failed attempts made again)"), "{row}");
        let row = steps_row(r#"{"attempted": 10, "joined": 10}"#);
        assert!(!row.contains("again"), "{row}");
    }

    #[test]
    fn inline_code_spans() {
        assert_eq!(inline("one `location` push"), "one <code>location</code> push");
        assert_eq!(inline("a ` b <c>"), "a ` b &lt;c&gt;");
    }
}
