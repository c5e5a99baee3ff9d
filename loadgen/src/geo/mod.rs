//! The geo scenario (docs/geo.md): moving objects on `geo:<tenant>`, each connection moving one
//! object with `location` pushes (or, batched, several objects with one `locations` push carrying an
//! update of each), fences created once before the run, and subscribers receiving every
//! `geofence_event`.
//!
//! Before the measure, every object is placed at the start of its walk (one push per connection,
//! `ts` = the time it is sent), so the measure sees objects moving, not arriving: an object's first
//! update fires `enter` for every fence it starts in. Events whose `ts` is earlier than the measure's
//! start come from that placement and are counted apart (`placement_events`).
//!
//! Latency is measured from the intended send time: each update's `ts` *is* that time (milliseconds
//! with a microsecond fraction), so the reply latency and the event latency (receive time − `ts`)
//! both count the time an update waited behind a stall.

pub mod setup;
pub mod walk;

use std::borrow::Cow;
use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Deserialize;

use crate::counters::Snapshot;
use crate::{hist, phoenix};
use setup::FenceSetup;
use walk::{Bbox, Walker};

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

/// Unix µs as the milliseconds `ts` of docs/geo.md, with the microseconds as a fraction:
/// `1764320000123456` → `1764320000123.456`.
pub fn ts_ms(unix_us: u64) -> String {
    format!("{}.{:03}", unix_us / 1000, unix_us % 1000)
}

/// Most updates in one `locations` push (docs/geo.md).
pub const MAX_BATCH: u64 = 1000;

/// The objects of connection `idx`, `batch` of them, at the start of their walks: object `k` walks as
/// object `idx × batch + k` of the seed.
pub fn walkers(seed: u64, idx: u64, batch: u64, area: &Bbox) -> Vec<Walker> {
    (0..batch).map(|k| Walker::new(seed, idx * batch + k, area)).collect()
}

/// The push of connection `idx` carrying an update of each of its objects, at their walkers'
/// positions, intended for `due` (Unix µs), which is both its ref (`p<due>`, read back from the reply)
/// and every update's `ts`. One walker: a `location` push of object `obj-<idx>`; more: a `locations`
/// push of objects `obj-<idx>-<k>`, in walker order.
pub fn location_push(topic_json: &str, idx: u64, objects: &[Walker], due: u64) -> String {
    push(topic_json, &format!("p{due}"), idx, objects, due)
}

/// The ref of placement pushes, which are told apart from the measured ones by it.
pub const PLACE_REF: &str = "place";

/// The placement push of connection `idx`: its objects at their walkers' positions (the start of
/// their walks), with `ts` = `now` (Unix µs) and the ref [`PLACE_REF`]; otherwise as
/// [`location_push`].
pub fn placement_push(topic_json: &str, idx: u64, objects: &[Walker], now: u64) -> String {
    push(topic_json, PLACE_REF, idx, objects, now)
}

fn push(topic_json: &str, reference: &str, idx: u64, objects: &[Walker], ts_us: u64) -> String {
    let ts = ts_ms(ts_us);
    let mut text = String::with_capacity(64 + topic_json.len() + 80 * objects.len());
    // Writing to a String cannot fail.
    let update = |text: &mut String, k: Option<usize>, at: &Walker| {
        let _ = write!(text, r#"{{"id":"obj-{idx}"#);
        if let Some(k) = k {
            let _ = write!(text, "-{k}");
        }
        let _ = write!(text, r#"","lat":{:.7},"lon":{:.7},"ts":{ts}}}"#, at.lat, at.lon);
    };
    let _ = write!(text, r#"["1","{reference}",{topic_json},"#);
    if let [at] = objects {
        text.push_str(r#""location","#);
        update(&mut text, None, at);
    } else {
        text.push_str(r#""locations",{"updates":["#);
        for (k, at) in objects.iter().enumerate() {
            if k > 0 {
                text.push(',');
            }
            update(&mut text, Some(k), at);
        }
        text.push_str("]}");
    }
    text.push(']');
    text
}

/// Reasons listed when the placement fails.
const REASONS_SHOWN: usize = 5;

/// Whether the placement put every object it sent: `Err` says how many were refused (and why) or
/// got no reply.
pub fn placement_outcome(c: &Snapshot) -> Result<(), String> {
    let refused: u64 = c.place_errors.iter().map(|(_, n)| n).sum();
    let unanswered = c.placing.saturating_sub(c.placed + refused);
    if refused == 0 && unanswered == 0 {
        return Ok(());
    }
    let mut reasons = c.place_errors.clone();
    reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let shown: Vec<String> =
        reasons.iter().take(REASONS_SHOWN).map(|(r, n)| format!("{n} × {r:?}")).collect();
    let why = if shown.is_empty() { String::new() } else { format!(" ({})", shown.join(", ")) };
    Err(format!(
        "{} of {} objects placed, {refused} refused{why}, {unanswered} unanswered",
        c.placed, c.placing
    ))
}

/// What the `ok` reply to a `locations` push says of its updates.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub applied: u64,
    /// Out of order: older than their object's last update.
    pub ignored: u64,
    /// The reason of each refused update.
    pub errors: Vec<String>,
}

#[derive(Deserialize)]
struct AppliedReply<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    response: AppliedResponse<'a>,
}

#[derive(Deserialize)]
struct AppliedResponse<'a> {
    applied: u64,
    ignored: u64,
    #[serde(borrow, default)]
    errors: Vec<Refused<'a>>,
}

#[derive(Deserialize)]
struct Refused<'a> {
    #[serde(borrow)]
    reason: Cow<'a, str>,
}

/// Read the `phx_reply` payload of a `locations` push: its counts, or the reason the whole push was
/// refused (an `error` reply, or an `ok` one without `applied` and `ignored`).
pub fn locations_reply(payload: &str) -> Result<Applied, String> {
    match serde_json::from_str::<AppliedReply<'_>>(payload) {
        Ok(r) if r.status == "ok" => Ok(Applied {
            applied: r.response.applied,
            ignored: r.response.ignored,
            errors: r.response.errors.into_iter().map(|e| phoenix::cut(e.reason.into_owned())).collect(),
        }),
        _ => match phoenix::reply(payload) {
            phoenix::Reply::Error(reason) => Err(reason),
            _ => Err("malformed locations reply".into()),
        },
    }
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

/// The `geo` section of summary.json: fence setup, the placement (`placement_s` from its first push to
/// its last reply) and the events it caused, updates (`batch` per push) and their replies, events,
/// and the two latencies. Replies and rates count updates; the reply latency has one sample per push
/// answered `ok`. `window_s` is the time from the first intended update to the last reply.
pub fn summary(
    setup: &FenceSetup,
    batch: u64,
    c: &Snapshot,
    placement_s: f64,
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
        "objects_placed": c.placed,
        "placement_seconds": placement_s,
        "placement_events": c.placement_events,
        "batch": batch,
        "updates_sent": c.published,
        "pushes_sent": c.pushes,
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
    use super::*;

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
        let text = location_push(
            &phoenix::json_str("geo:bench"),
            42,
            std::slice::from_ref(&w),
            1_764_320_000_123_456,
        );
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
    fn batched_pushes_carry_an_update_of_each_object_with_one_ts() {
        let a = Bbox::DEFAULT;
        let objects: Vec<Walker> = (0..10).map(|k| Walker::new(1, 70 + k, &a)).collect();
        let text = location_push(&phoenix::json_str("geo:a \"b\""), 7, &objects, 1_764_320_000_123_456);
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v.as_array().unwrap().len(), 5);
        assert_eq!(
            (&v[0], &v[1], &v[2], &v[3]),
            (&"1".into(), &"p1764320000123456".into(), &"geo:a \"b\"".into(), &"locations".into())
        );
        let p = v[4].as_object().unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["updates"]);
        let updates = p["updates"].as_array().unwrap();
        assert_eq!(updates.len(), 10);
        for (k, (u, w)) in updates.iter().zip(&objects).enumerate() {
            let mut keys: Vec<&str> = u.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["id", "lat", "lon", "ts"]);
            assert_eq!(u["id"], format!("obj-7-{k}"));
            assert!((u["lat"].as_f64().unwrap() - w.lat).abs() < 1e-7);
            assert!((u["lon"].as_f64().unwrap() - w.lon).abs() < 1e-7);
            assert_eq!(u["ts"].as_f64(), Some(1_764_320_000_123.456));
        }
        assert_eq!(text.matches(r#""ts":1764320000123.456}"#).count(), 10, "{text}");

        // The largest batch stays valid JSON, with distinct ids.
        let objects: Vec<Walker> = (0..MAX_BATCH).map(|k| Walker::new(1, k, &a)).collect();
        let text = location_push(&phoenix::json_str("geo:bench"), 999_999, &objects, 1);
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let mut ids: Vec<&str> =
            v[4]["updates"].as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap()).collect();
        assert_eq!(ids[999], "obj-999999-999");
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), MAX_BATCH as usize);
        assert!(text.len() < 100 * MAX_BATCH as usize, "{} bytes", text.len());
    }

    #[test]
    fn placement_pushes_put_objects_at_the_start_of_their_walks() {
        let a = Bbox::DEFAULT;
        let topic = phoenix::json_str("geo:bench");
        let one = [Walker::new(1, 42, &a)];
        let text = placement_push(&topic, 42, &one, 1_764_320_000_123_456);
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!((&v[1], &v[3]), (&PLACE_REF.into(), &"location".into()));
        assert_eq!(v[4]["id"], "obj-42");
        assert!(text.contains(r#""ts":1764320000123.456}"#), "{text}");
        // The same update as the measured push of the same time, but for its ref.
        let measured = location_push(&topic, 42, &one, 1_764_320_000_123_456);
        assert_eq!(text.replacen(PLACE_REF, "p1764320000123456", 1), measured);

        let objects: Vec<Walker> = (0..3).map(|k| Walker::new(1, 30 + k, &a)).collect();
        let v: serde_json::Value =
            serde_json::from_str(&placement_push(&topic, 10, &objects, 5_000)).expect("valid JSON");
        assert_eq!((&v[1], &v[3]), (&PLACE_REF.into(), &"locations".into()));
        let updates = v[4]["updates"].as_array().unwrap();
        let ids: Vec<&str> = updates.iter().map(|u| u["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["obj-10-0", "obj-10-1", "obj-10-2"]);
        for (u, w) in updates.iter().zip(&objects) {
            assert!((u["lat"].as_f64().unwrap() - w.lat).abs() < 1e-7);
            assert_eq!(u["ts"].as_f64(), Some(5.0));
        }
    }

    #[test]
    fn a_placement_short_of_any_object_says_why() {
        let c = Snapshot { placing: 100, placed: 100, ..Snapshot::default() };
        assert_eq!(placement_outcome(&c), Ok(()));
        assert_eq!(placement_outcome(&Snapshot::default()), Ok(()), "nothing to place");
        let c = Snapshot { placing: 100, placed: 90, ..Snapshot::default() };
        assert_eq!(placement_outcome(&c), Err("90 of 100 objects placed, 0 refused, 10 unanswered".into()));
        let c = Snapshot {
            placing: 100,
            placed: 93,
            place_errors: vec![("forbidden".into(), 2), ("lat out of range".into(), 4)],
            ..Snapshot::default()
        };
        assert_eq!(
            placement_outcome(&c),
            Err(r#"93 of 100 objects placed, 6 refused (4 × "lat out of range", 2 × "forbidden"), 1 unanswered"#
                .into())
        );
    }

    #[test]
    fn locations_replies_count_each_update() {
        let ok = |r: &str| locations_reply(&format!(r#"{{"status":"ok","response":{r}}}"#));
        assert_eq!(ok(r#"{"applied":10,"ignored":0}"#), Ok(Applied { applied: 10, ..Applied::default() }));
        assert_eq!(
            ok(
                r#"{"ignored":2,"applied":5,"errors":[{"index":1,"reason":"lat out of range"},{"index":4,"reason":"ts is in the future"},{"index":8,"reason":"lat out of range"}]}"#
            ),
            Ok(Applied {
                applied: 5,
                ignored: 2,
                errors: vec![
                    "lat out of range".into(),
                    "ts is in the future".into(),
                    "lat out of range".into()
                ],
            })
        );
        assert_eq!(
            locations_reply(r#"{"status":"error","response":{"reason":"too many updates"}}"#),
            Err("too many updates".into())
        );
        assert_eq!(ok("{}"), Err("malformed locations reply".into()), "an ok reply says what it applied");
        assert_eq!(ok(r#"{"ignored":"out_of_order"}"#), Err("malformed locations reply".into()));
        assert_eq!(locations_reply("[]"), Err("malformed reply".into()));
        let long =
            format!(r#"{{"applied":0,"ignored":0,"errors":[{{"index":0,"reason":"{}"}}]}}"#, "x".repeat(500));
        assert_eq!(ok(&long).unwrap().errors[0].len(), phoenix::MAX_REASON_BYTES);
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
            placing: 100,
            placed: 100,
            placement_events: 450,
            ..Snapshot::default()
        };
        let setup = FenceSetup { targets: 1, fences: 50, created: 50, ..FenceSetup::default() };
        let mut h = hist::new_hist();
        hist::record(&mut h, 1500);
        let s = summary(&setup, 10, &Snapshot { pushes: 100, ..c }, 0.5, 2.0, Some(&h), None);
        assert_eq!(
            (s["batch"].as_u64(), s["updates_sent"].as_u64(), s["pushes_sent"].as_u64()),
            (Some(10), Some(1000), Some(100))
        );
        assert_eq!(s["replies"], 996);
        assert_eq!(s["unanswered"], 4);
        assert_eq!(s["updates_per_s"], 498.0);
        assert_eq!(s["events_per_s"], 150.0);
        assert_eq!(s["events_received"], 300, "placement events are not among them");
        assert_eq!(
            (s["objects_placed"].as_u64(), s["placement_seconds"].as_f64(), s["placement_events"].as_u64()),
            (Some(100), Some(0.5), Some(450))
        );
        assert_eq!(s["errors_by_reason"]["ts is in the future"], 2);
        assert_eq!(s["events_by_kind"]["exit"], 100);
        assert_eq!(s["fences"]["created"], 50);
        assert_eq!(s["reply_latency_us"]["count"], 1);
        assert!(s["event_latency_us"].is_null());
    }
}
