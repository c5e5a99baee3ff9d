//! The C1M table: each figure of a `scripts/c1m` run next to the plain-TCP floor's and the target.

use std::fmt::Write as _;

use super::format::{bytes, escape, ms, number, thousands};
use crate::parse::summary::C1m;

/// Appends the table comparing the run with the floor.
pub fn table(html: &mut String, c: &C1m) {
    html.push_str(
        "<h3>Against the plain-TCP floor</h3>\n<table class=\"c1m\">\n\
         <tr><th></th><th>Rusher</th><th>plain TCP</th><th>ratio</th><th>target</th></tr>\n",
    );
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or_else(|| "—".to_owned(), f);
    let ratio = |r: Option<f64>| opt(r, &|r| format!("{r:.2}×"));
    let mut row = |what: &str, ours: String, floor: String, r: String, target: &str| {
        let _ = writeln!(
            html,
            "<tr><th>{}</th><td>{ours}</td><td>{floor}</td><td>{r}</td><td>{}</td></tr>",
            escape(what),
            escape(target)
        );
    };
    row(
        "joined connections held",
        format!("{} for {} s", c.held.map_or_else(|| "—".to_owned(), thousands), c.hold_s),
        String::new(),
        String::new(),
        "1,000,000 (stretch 2,000,000)",
    );
    row(
        "server user space per connection",
        opt(c.server_user_bytes_per_connection, &bytes),
        String::new(),
        String::new(),
        "≤ 300 B",
    );
    row(
        "kernel per connection (slab, both ends)",
        opt(c.kernel_bytes_per_connection, &bytes),
        opt(c.floor_kernel_bytes_per_connection, &bytes),
        ratio(c.kernel_ratio),
        "",
    );
    row(
        "establish every connection",
        opt(c.establish_seconds, &|s| format!("{s:.1} s")),
        opt(c.floor_establish_seconds, &|s| format!("{s:.1} s")),
        ratio(c.establish_ratio),
        "≤ 1.5× plain TCP",
    );
    row(
        "one message to every connection, last copy",
        opt(c.broadcast_every_copy_ms, &|m| format!("{} ms", number(m))),
        opt(c.floor_every_copy_ms, &|m| format!("{} ms", number(m))),
        ratio(c.broadcast_ratio),
        "≤ 1.5× plain TCP",
    );
    let ch = &c.chat;
    let pct = |l: Option<crate::parse::summary::Latency>| {
        l.map_or_else(
            || "—".to_owned(),
            |l| format!("p50 {} ms, p99 {} ms, max {} ms", ms(l.p50), ms(l.p99), ms(l.max)),
        )
    };
    row(
        &format!(
            "chat: {} rooms of {}, {} messages/s for {} s",
            thousands(ch.rooms),
            ch.room,
            number(ch.rate),
            ch.seconds
        ),
        format!(
            "{} sent, {} acked, {} of {} copies delivered",
            thousands(ch.published),
            thousands(ch.acked),
            thousands(ch.delivered),
            thousands(ch.expected_deliveries)
        ),
        String::new(),
        String::new(),
        "",
    );
    row("chat publish → ack", pct(ch.ack_us), String::new(), String::new(), "");
    row(
        "chat publish → delivery",
        pct(ch.delivery_us),
        String::new(),
        String::new(),
        "p99 ≤ 5 ms (at 100k connections)",
    );
    row("load average at start", escape(&c.load_average_at_start), String::new(), String::new(), "");
    html.push_str("</table>\n");
}
