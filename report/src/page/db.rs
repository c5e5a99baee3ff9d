//! A database comparison on the page: its configurations, its charts (in the run's section), and a
//! table of the headline ratios (in the comparisons).

use std::fmt::Write as _;

use super::format::{escape, ms, ratio, thousands};
use super::{anchor, figure};
use crate::charts::{self, svg};
use crate::parse::db::{Config, Db};
use crate::parse::Run;

/// The run section's part for a comparison: configurations, then every chart.
pub fn section(html: &mut String, run: &Run, db: &Db) {
    html.push_str(
        "<h3>Configurations</h3>\n<table class=\"db-configs\">\n<tr><th>store</th><th>setting</th>\
                   <th>what an acknowledged write survives</th><th>version</th><th>ran</th></tr>\n",
    );
    for c in &db.configs {
        let ran = match &c.skipped {
            None => {
                let errors = c.errors() + c.overloaded();
                if errors == 0 {
                    "<span class=\"ok\">yes, no errors</span>".to_owned()
                } else {
                    format!(
                        "yes; <span class=\"bad\">{} errors, {} refused as overloaded</span>",
                        thousands(c.errors()),
                        thousands(c.overloaded())
                    )
                }
            }
            Some(why) => format!("<span class=\"bad\">skipped: {}</span>", escape(why)),
        };
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{ran}</td></tr>",
            escape(&c.label),
            escape(&c.setting),
            escape(&c.meaning),
            escape(c.version.as_deref().unwrap_or("not recorded"))
        );
    }
    html.push_str("</table>\n");

    let (bars, lines) = charts::db::charts(run, db);
    let geo = charts::db::geo_charts(&run.name, db);
    if bars.is_empty() && lines.is_empty() && geo.is_empty() {
        html.push_str("<p class=\"empty\">No configuration of this comparison has figures.</p>\n");
        return;
    }
    let baseline =
        db.configs.iter().find(|c| c.name == db.baseline).map_or_else(|| db.baseline.clone(), Config::title);
    let caption = format!(
        "Each bar is printed with its ratio to {} (×2: twice its value). Open-loop latencies count from the intended \
         send time (coordinated omission corrected); capacities are closed loops with a fixed number of writes in \
         flight.",
        escape(&baseline)
    );
    for chart in &bars {
        figure(html, &svg::bar_chart(chart), &caption);
    }
    for chart in &lines {
        figure(
            html,
            &svg::line_chart(chart),
            "The whole distribution of each configuration, from the <code>.hgrm</code> files of its folder.",
        );
    }
    if !geo.is_empty() {
        html.push_str("<h3>Geofence evaluators</h3>\n");
    }
    for chart in &geo {
        figure(
            html,
            &svg::bar_chart(chart),
            "<code>server/examples/geo_evaluators</code>: the server's R-tree, GeoFire-style geohash cells and PostGIS \
             over loopback, on the same fences, points and queries; wall time of one query at a time, with the ratio to \
             the R-tree's. Batches and load times: <code>geo/</code> in the run's folder.",
        );
    }
}

/// A latency in ms with its ratio to the baseline's.
fn cell(value: Option<f64>, base: Option<f64>, text: fn(f64) -> String) -> String {
    let Some(v) = value else { return "<td class=\"num\">—</td>".into() };
    let r =
        base.filter(|b| *b > 0.0).map_or_else(String::new, |b| format!(" <small>{}</small>", ratio(v / b)));
    format!("<td class=\"num\">{}{r}</td>", text(v))
}

/// A headline column: its heading, the figure of a configuration, how the figure reads.
type Column = (&'static str, fn(&Config) -> Option<f64>, fn(f64) -> String);

/// The headline figures of the latest comparison, for the comparisons section.
pub fn headline_table(html: &mut String, run: &Run, db: &Db) {
    let configs = charts::db::ran(db);
    let rows: [Column; 4] = [
        (
            "chat write → ack p99",
            |c| Some(c.store.as_ref()?.chat.open.latency_us).filter(|l| l.count > 0).map(|l| l.p99),
            |v| ms(v),
        ),
        (
            "chat writes/s at capacity",
            |c| Some(c.store.as_ref()?.chat.max.per_s).filter(|v| *v > 0.0),
            |v| format!("{}/s", thousands(v as u64)),
        ),
        (
            "history page p99",
            |c| Some(c.store.as_ref()?.history.reads.latency_us).filter(|l| l.count > 0).map(|l| l.p99),
            |v| ms(v),
        ),
        (
            "end to end publish → ack p99",
            |c| c.chat.as_ref()?.ack_us.filter(|l| l.count > 0).map(|l| l.p99),
            |v| ms(v),
        ),
    ];
    let base = configs.iter().find(|c| c.name == db.baseline);
    let _ = writeln!(
        html,
        "<p>The latest comparison, <a href=\"#{}\">{}</a>: in small type, the ratio to {} (latencies in ms). Its section \
         has every chart.</p>",
        escape(&anchor(run)),
        escape(&run.name),
        escape(&base.map_or_else(|| db.baseline.clone(), |c| c.title()))
    );
    html.push_str("<table class=\"db-headline\">\n<tr><th>store</th>");
    for (label, _, _) in &rows {
        let _ = write!(html, "<th class=\"num\">{}</th>", escape(label));
    }
    html.push_str("</tr>\n");
    for c in &configs {
        let _ = write!(html, "<tr><td>{}</td>", escape(&c.title()));
        for (_, get, text) in &rows {
            html.push_str(&cell(get(c), base.and_then(|b| get(b)), *text));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
    let skipped: Vec<String> = db
        .configs
        .iter()
        .filter_map(|c| Some(format!("{} ({})", c.title(), c.skipped.as_deref()?)))
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(html, "<p>Not measured: {}.</p>", escape(&skipped.join(", ")));
    }
}
