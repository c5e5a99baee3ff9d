//! The geo scenario (docs/geo.md): moving objects on `geo:<tenant>`, each connection moving one
//! object with `location` pushes, fences created once before the run, and subscribers receiving every
//! `geofence_event`.
//!
//! Latency is measured from the intended send time: each update's `ts` *is* that time (milliseconds
//! with a microsecond fraction), so the reply latency and the event latency (receive time − `ts`)
//! both count the time an update waited behind a stall.

pub mod setup;
pub mod walk;

use std::borrow::Cow;

use hdrhistogram::Histogram;
use serde::Deserialize;

use crate::counters::Snapshot;
use crate::hist;
use setup::FenceSetup;
use walk::Walker;

/// Kinds of `geofence_event`, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Enter,
    Exit,
    Cross,
    Inside,
    Outside,
    Dwell,
    /// A kind docs/geo.md does not list.
    Other,
}

impl EventKind {
    /// Every kind, in counter order.
    pub const ALL: [EventKind; 7] = [
        EventKind::Enter,
        EventKind::Exit,
        EventKind::Cross,
        EventKind::Inside,
        EventKind::Outside,
        EventKind::Dwell,
        EventKind::Other,
    ];

    /// The kind named in an event's `event` field.
    pub fn of(name: &str) -> EventKind {
        match name {
            "enter" => EventKind::Enter,
            "exit" => EventKind::Exit,
            "cross" => EventKind::Cross,
            "inside" => EventKind::Inside,
            "outside" => EventKind::Outside,
            "dwell" => EventKind::Dwell,
            _ => EventKind::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Enter => "enter",
            EventKind::Exit => "exit",
            EventKind::Cross => "cross",
            EventKind::Inside => "inside",
            EventKind::Outside => "outside",
            EventKind::Dwell => "dwell",
            EventKind::Other => "other",
        }
    }

    /// Index into counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The topic of a tenant.
pub fn topic(tenant: &str) -> String {
    format!("geo:{tenant}")
}

/// The object connection `idx` moves.
pub fn object_id(idx: u64) -> String {
    format!("obj-{idx}")
}

/// Unix µs as the milliseconds `ts` of docs/geo.md, with the microseconds as a fraction:
/// `1764320000123456` → `1764320000123.456`.
pub fn ts_ms(unix_us: u64) -> String {
    format!("{}.{:03}", unix_us / 1000, unix_us % 1000)
}

/// The `location` push of object `idx` at its walker's position, intended for `due` (Unix µs), which
/// is both its ref (`p<due>`, read back from the reply) and its `ts`.
pub fn location_push(topic_json: &str, idx: u64, at: &Walker, due: u64) -> String {
    format!(
        r#"["1","p{due}",{topic_json},"location",{{"id":"{}","lat":{:.7},"lon":{:.7},"ts":{}}}]"#,
        object_id(idx),
        at.lat,
        at.lon,
        ts_ms(due)
    )
}

#[derive(Deserialize)]
struct EventPayload<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default)]
    ts: Option<f64>,
}

/// A `geofence_event` payload's kind and `ts` in Unix µs (`None` when absent or not a time).
pub fn parse_event(payload: &str) -> Option<(EventKind, Option<u64>)> {
    let e = serde_json::from_str::<EventPayload<'_>>(payload).ok()?;
    // An f64 holds today's Unix time in ms to within 0.25 µs, so rounding recovers the microseconds.
    let ts_us = e.ts.filter(|t| t.is_finite() && *t >= 0.0).map(|t| (t * 1000.0).round() as u64);
    Some((EventKind::of(&e.event), ts_us))
}

/// The `geo` section of summary.json: fence setup, updates and their replies, events, and the two
/// latencies. `window_s` is the time from the first intended update to the last reply.
pub fn summary(
    setup: &FenceSetup,
    c: &Snapshot,
    window_s: f64,
    reply: Option<&Histogram<u64>>,
    event: Option<&Histogram<u64>>,
) -> serde_json::Value {
    let replies = c.acked + c.out_of_order + c.ack_errors;
    let per_s = |n: u64| if window_s > 0.0 { n as f64 / window_s } else { 0.0 };
    let map = |v: &[(String, u64)]| {
        v.iter().map(|(k, n)| (k.clone(), (*n).into())).collect::<serde_json::Map<_, _>>()
    };
    let percentiles = |h: Option<&Histogram<u64>>| h.filter(|h| !h.is_empty()).map(hist::percentiles);
    serde_json::json!({
        "fences": setup,
        "updates_sent": c.published,
        "replies": replies,
        "replies_ok": c.acked,
        "out_of_order": c.out_of_order,
        "errors": c.ack_errors,
        "errors_by_reason": map(&c.reply_errors),
        "unanswered": c.published.saturating_sub(replies),
        "window_seconds": window_s,
        "updates_per_s": per_s(replies),
        "events_received": c.delivered,
        "events_per_s": per_s(c.delivered),
        "events_by_kind": map(&c.events),
        "reply_latency_us": percentiles(reply),
        "event_latency_us": percentiles(event),
    })
}

#[cfg(test)]
mod tests {
    use super::walk::Bbox;
    use super::*;
    use crate::phoenix;

    #[test]
    fn ts_keeps_the_microseconds_as_a_fraction() {
        assert_eq!(ts_ms(1_764_320_000_123_456), "1764320000123.456");
        assert_eq!(ts_ms(1_764_320_000_123_004), "1764320000123.004");
        assert_eq!(ts_ms(1_764_320_000_123_000), "1764320000123.000");
        assert_eq!(ts_ms(999), "0.999");
    }

    #[test]
    fn location_pushes_follow_the_protocol() {
        let w = Walker::new(1, 42, &Bbox::DEFAULT);
        let text = location_push(&phoenix::json_str("geo:bench"), 42, &w, 1_764_320_000_123_456);
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v[0], "1");
        assert_eq!(v[1], "p1764320000123456");
        assert_eq!(v[2], "geo:bench");
        assert_eq!(v[3], "location");
        let p = v[4].as_object().unwrap();
        let mut keys: Vec<&str> = p.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["id", "lat", "lon", "ts"]);
        assert_eq!(p["id"], "obj-42");
        assert!((p["lat"].as_f64().unwrap() - w.lat).abs() < 1e-7);
        assert!((p["lon"].as_f64().unwrap() - w.lon).abs() < 1e-7);
        assert!(text.contains(r#""ts":1764320000123.456}"#), "{text}");
        // The fraction survives the server's f64 and comes back in events as the same microseconds.
        let ts = p["ts"].as_f64().unwrap();
        let event =
            format!(r#"{{"fence":"f-1","object":"obj-42","event":"enter","lat":1,"lon":2,"ts":{ts}}}"#);
        assert_eq!(parse_event(&event), Some((EventKind::Enter, Some(1_764_320_000_123_456))));
    }

    #[test]
    fn events_are_read_by_kind_with_their_time() {
        let e = r#"{"fence":"depot","object":"truck-7","event":"exit","lat":48.853,"lon":2.351,"ts":1764320000123.5}"#;
        assert_eq!(parse_event(e), Some((EventKind::Exit, Some(1_764_320_000_123_500))));
        let roam =
            r#"{"fence":"r","object":"a","event":"enter","center":"b","dist":12.5,"ts":1764320000000}"#;
        assert_eq!(parse_event(roam), Some((EventKind::Enter, Some(1_764_320_000_000_000))));
        assert_eq!(parse_event(r#"{"event":"dwell"}"#), Some((EventKind::Dwell, None)));
        assert_eq!(parse_event(r#"{"event":"teleport","ts":-1}"#), Some((EventKind::Other, None)));
        assert_eq!(parse_event(r#"{"ts":1}"#), None);
        assert_eq!(parse_event("[]"), None);
        for k in EventKind::ALL {
            assert_eq!(EventKind::of(k.name()), k);
            assert_eq!(EventKind::ALL[k.index()], k);
        }
    }

    #[test]
    fn the_summary_adds_replies_up_and_rates_them_over_the_window() {
        let c = Snapshot {
            published: 1000,
            acked: 990,
            out_of_order: 4,
            ack_errors: 2,
            reply_errors: vec![("ts is in the future".into(), 2)],
            delivered: 300,
            events: vec![("enter".into(), 200), ("exit".into(), 100)],
            ..Snapshot::default()
        };
        let setup = FenceSetup { targets: 1, fences: 50, created: 50, ..FenceSetup::default() };
        let mut h = hist::new_hist();
        hist::record(&mut h, 1500);
        let s = summary(&setup, &c, 2.0, Some(&h), None);
        assert_eq!(s["replies"], 996);
        assert_eq!(s["unanswered"], 4);
        assert_eq!(s["updates_per_s"], 498.0);
        assert_eq!(s["events_per_s"], 150.0);
        assert_eq!(s["errors_by_reason"]["ts is in the future"], 2);
        assert_eq!(s["events_by_kind"]["exit"], 100);
        assert_eq!(s["fences"]["created"], 50);
        assert_eq!(s["reply_latency_us"]["count"], 1);
        assert!(s["event_latency_us"].is_null());
    }
}
