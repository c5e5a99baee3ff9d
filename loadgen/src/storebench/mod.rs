//! `rusher-loadgen store`: the storage layer on its own. Opens a store exactly as `rusher` does (the
//! same URL and flags, so every backend the server accepts works), starts the server's storage
//! thread on it, and drives it the way the workers do:
//!
//! 1. chat appends: open loop at `--chat-rate`, a rate every backend should sustain, so latencies
//!    compare (ack latency from the intended send time); open loop at `--chat-target-rate`, the
//!    throughput target; then closed loop with `--in-flight` per submitter (capacity);
//! 2. Yjs update appends, the same two ways, with one update in `--large-every` large;
//! 3. geofence event logs, the same two ways;
//! 4. history pages of 50 from a room filled with `--history-messages` messages, one read at a time;
//! 5. room heads (highest seq and the latest 50 messages) of the chat rooms, one at a time.
//!
//! Every phase is bounded by `--seconds` (reads also by `--reads`), and the answers still
//! outstanding at its end are waited for at most [`drive::DRAIN`].

pub mod drive;
pub mod workload;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser as _};
use hdrhistogram::Histogram;
use rusher_server::config::Cli as ServerCli;
use rusher_server::store::{self, StoreRequest, StoreResult};
use serde_json::{json, Value};

use crate::geo::walk::Rng;
use crate::hist;
use crate::results::{self, RunDir};
use drive::{Harness, Phase};
use workload::{Chat, Geo, Shape, Yjs};

/// Messages per history page and per room head, as the server loads on join.
pub const PAGE: usize = 50;
/// Longest time filling the history room may take.
const FILL_LIMIT: Duration = Duration::from_secs(120);
/// Longest `--seconds`.
pub const MAX_SECONDS: f64 = 3600.0;
/// Highest rate of any phase, requests per second.
pub const MAX_RATE: f64 = 10_000_000.0;

/// The storage benchmark's flags.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The store, as `rusher --store` takes it: sqlite://PATH, postgres://USER@HOST:PORT/DB, ...
    #[arg(long)]
    pub store: String,
    /// Seconds of each timed phase (seven of them), and the longest each of the two read phases takes.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Submitter threads, standing in for the server's workers. [default: available cores]
    #[arg(long)]
    pub submitters: Option<usize>,
    /// Chat messages per second offered in the first open-loop phase: a rate to compare latencies at.
    #[arg(long, default_value_t = 10_000.0)]
    pub chat_rate: f64,
    /// Chat messages per second offered in the second open-loop phase: the throughput target.
    #[arg(long, default_value_t = 100_000.0)]
    pub chat_target_rate: f64,
    /// Yjs updates per second offered in the open-loop phase.
    #[arg(long, default_value_t = 20_000.0)]
    pub yjs_rate: f64,
    /// Geofence event logs per second offered in the open-loop phase.
    #[arg(long, default_value_t = 10_000.0)]
    pub geo_rate: f64,
    /// Requests each submitter keeps in flight in the closed-loop (capacity) phases; all of them
    /// together must fit the storage queue (`--store-queue`, 65,536 by default).
    #[arg(long, default_value_t = 2048)]
    pub in_flight: u64,
    /// Chat rooms written to.
    #[arg(long, default_value_t = 1000)]
    pub rooms: u64,
    /// Collaborative documents written to.
    #[arg(long, default_value_t = 100)]
    pub docs: u64,
    /// Objects crossing fences in the geofence event log.
    #[arg(long, default_value_t = 10_000)]
    pub objects: u64,
    /// Messages in the room the history pages are read from.
    #[arg(long, default_value_t = 10_000)]
    pub history_messages: u64,
    /// Reads of each kind (history pages, room heads).
    #[arg(long, default_value_t = 2000)]
    pub reads: u64,
    /// One Yjs update in this many is large (4–64 KiB, a paste); 0 for none. The others are
    /// 20–200 bytes, a few typed characters.
    #[arg(long, default_value_t = 1000)]
    pub large_every: u64,
    /// Seed of the generated content.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write store.json and the .hgrm percentile files into this folder (created if missing).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Further `rusher` flags, after `--`: the backend's durability (--sqlite-synchronous,
    /// --postgres-synchronous-commit, ...) and --store-queue.
    #[arg(last = true)]
    pub server: Vec<String>,
}

/// What a run measured: the summary (as written to store.json) and the histograms by file name.
#[derive(Debug)]
pub struct Outcome {
    pub summary: Value,
    pub hists: Vec<(&'static str, Histogram<u64>)>,
}

impl StoreArgs {
    fn check(&self, submitters: usize, queue: usize) -> anyhow::Result<()> {
        if !(self.seconds > 0.0 && self.seconds <= MAX_SECONDS) {
            anyhow::bail!("--seconds must be in (0, {MAX_SECONDS}]");
        }
        for (flag, rate) in [
            ("--chat-rate", self.chat_rate),
            ("--chat-target-rate", self.chat_target_rate),
            ("--yjs-rate", self.yjs_rate),
            ("--geo-rate", self.geo_rate),
        ] {
            if !(rate > 0.0 && rate <= MAX_RATE) {
                anyhow::bail!("{flag} must be in (0, {MAX_RATE}] requests per second");
            }
        }
        if !(1..=256).contains(&submitters) {
            anyhow::bail!("--submitters must be 1–256");
        }
        let total = self.in_flight.saturating_mul(submitters as u64);
        if self.in_flight == 0 || total > queue as u64 {
            anyhow::bail!(
                "--in-flight must be at least 1, and --in-flight × submitters ({total}) at most the storage queue ({queue})"
            );
        }
        for (flag, n) in [("--rooms", self.rooms), ("--docs", self.docs), ("--objects", self.objects)] {
            if n < submitters as u64 || n > 10_000_000 {
                anyhow::bail!(
                    "{flag} must be between the number of submitters ({submitters}) and 10,000,000"
                );
            }
        }
        if !((PAGE as u64 + 1)..=10_000_000).contains(&self.history_messages) {
            anyhow::bail!("--history-messages must be {}–10,000,000", PAGE + 1);
        }
        if !(1..=10_000_000).contains(&self.reads) {
            anyhow::bail!("--reads must be 1–10,000,000");
        }
        Ok(())
    }
}

/// Runs every phase against the store and returns the figures.
pub fn run(args: &StoreArgs) -> anyhow::Result<Outcome> {
    let argv = ["rusher".to_owned(), "--store".to_owned(), args.store.clone()]
        .into_iter()
        .chain(args.server.iter().cloned());
    let cli =
        ServerCli::try_parse_from(argv).map_err(|e| anyhow::anyhow!("the rusher flags after --: {e}"))?;
    anyhow::ensure!(cli.command.is_none(), "only server flags go after --, not a subcommand");
    let cfg = cli.serve.resolve()?;
    let submitters =
        args.submitters.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    args.check(submitters, cfg.store_queue)?;
    let url = store::redact_url(&cfg.store_url).into_owned();
    let backend = store::open(&cfg.store_url, cfg.durability())
        .map_err(|e| anyhow::anyhow!("cannot open the store {url}: {e}"))?;

    let shape = Shape {
        prefix: Shape::fresh_prefix(),
        rooms: args.rooms,
        body_bytes: 20..=200,
        docs: args.docs,
        update_bytes: 20..=200,
        large_bytes: 4096..=65_536,
        large_every: args.large_every,
        objects: args.objects,
        seed: args.seed,
    };
    let harness = Harness::start(backend, cfg.store_queue, submitters);
    let backend = harness.backend();
    let n = submitters;
    let secs = args.seconds;
    let in_flight = args.in_flight;

    eprintln!("store {url} ({backend}), {n} submitters, phases of {secs} s");
    let mut chats: Vec<Chat> = (0..n).map(|i| Chat::new(&shape, i, n)).collect();
    let chat_open = progress("chat, open loop", harness.open_loop(&mut chats, args.chat_rate, secs));
    let chat_target =
        progress("chat, target rate", harness.open_loop(&mut chats, args.chat_target_rate, secs));
    let chat_max = progress("chat, closed loop", harness.closed_loop(&mut chats, in_flight, secs));
    let mut docs: Vec<Yjs> = (0..n).map(|i| Yjs::new(&shape, i, n)).collect();
    let yjs_open = progress("yjs, open loop", harness.open_loop(&mut docs, args.yjs_rate, secs));
    let yjs_max = progress("yjs, closed loop", harness.closed_loop(&mut docs, in_flight, secs));
    let mut geos: Vec<Geo> = (0..n).map(|i| Geo::new(&shape, i, n)).collect();
    let geo_open = progress("geo log, open loop", harness.open_loop(&mut geos, args.geo_rate, secs));
    let geo_max = progress("geo log, closed loop", harness.closed_loop(&mut geos, in_flight, secs));

    let history_room: Arc<str> = Arc::from(shape.history_room());
    let mut filler = Chat::single(&history_room, &shape, 0);
    let fill = progress(
        "history room fill",
        harness.fill(&mut filler, args.history_messages, in_flight, FILL_LIMIT),
    );
    let top = filler.heads().map(|(_, seq)| seq).max().unwrap_or(0);
    let mut rng = Rng::new(args.seed, 4, 0);
    let history = progress(
        "history pages",
        harness.reads(
            args.reads,
            secs,
            |_, tag| {
                // Any page that has PAGE messages before it: before_seq in PAGE+1 ..= top+1.
                let before = PAGE as u64 + 1 + rng.next_u64() % top.saturating_sub(PAGE as u64).max(1);
                StoreRequest::History {
                    room: Arc::clone(&history_room),
                    before_seq: Some(before),
                    after_seq: None,
                    limit: PAGE,
                    tag,
                }
            },
            check_page,
        ),
    );

    let heads: Vec<(Arc<str>, u64)> =
        chats.iter().flat_map(|c| c.heads().map(|(room, seq)| (Arc::clone(room), seq))).collect();
    anyhow::ensure!(!heads.is_empty(), "no chat room was written to, so there is no room head to read");
    let mut rng = Rng::new(args.seed, 5, 0);
    let head = progress(
        "room heads",
        harness.reads(
            args.reads,
            secs,
            |_, tag| {
                let (room, _) = &heads[(rng.next_u64() % heads.len() as u64) as usize];
                StoreRequest::RoomHead { room: Arc::clone(room), recent: PAGE, tag }
            },
            |r| check_head(r, &heads),
        ),
    );
    harness.stop();

    let open = |rate: f64| json!({"mode": "open", "offered_per_s": rate, "seconds": secs});
    let closed = json!({"mode": "closed", "in_flight_per_submitter": in_flight, "in_flight": in_flight * n as u64, "seconds": secs});
    let summary = json!({
        "kind": "store",
        "store": url,
        "backend": backend,
        "durability": format!("{:?}", cfg.durability()),
        "store_queue": cfg.store_queue,
        "sqlite_version": (backend == "sqlite").then(rusqlite::version),
        "submitters": n,
        "seconds": secs,
        "seed": args.seed,
        "chat": {
            "rooms": args.rooms,
            "body_bytes": [20, 200],
            "open": phase_json(&chat_open, open(args.chat_rate)),
            "target": phase_json(&chat_target, open(args.chat_target_rate)),
            "max": phase_json(&chat_max, closed.clone()),
        },
        "yjs": {
            "docs": args.docs,
            "update_bytes": [20, 200],
            "large_bytes": [4096, 65_536],
            "large_every": args.large_every,
            "open": phase_json(&yjs_open, open(args.yjs_rate)),
            "large": {"count": yjs_open.large.len(), "latency_us": hist::percentiles(&yjs_open.large)},
            "max": phase_json(&yjs_max, closed.clone()),
        },
        "geo": {
            "objects": args.objects,
            "open": phase_json(&geo_open, open(args.geo_rate)),
            "max": phase_json(&geo_max, closed),
        },
        "history": {
            "room_messages": fill.acked,
            "fill_errors": fill.errors + fill.overloaded + fill.unanswered,
            "page": PAGE,
            "reads": phase_json(&history, json!({"mode": "one at a time"})),
        },
        "head": {
            "rooms": heads.len(),
            "recent": PAGE,
            "reads": phase_json(&head, json!({"mode": "one at a time"})),
        },
    });
    let hists = vec![
        ("chat", chat_open.latency),
        ("chat-target", chat_target.latency),
        ("chat-max", chat_max.latency),
        ("yjs", yjs_open.latency),
        ("yjs-large", yjs_open.large),
        ("yjs-max", yjs_max.latency),
        ("geo", geo_open.latency),
        ("geo-max", geo_max.latency),
        ("history", history.latency),
        ("head", head.latency),
    ];
    Ok(Outcome { summary, hists })
}

fn progress(what: &str, phase: Phase) -> Phase {
    let p = hist::percentiles(&phase.latency);
    eprintln!(
        "  {what:<20} {:>9} ok {:>7.0}/s  p50 {:>8.3} ms  p99 {:>8.3} ms  ({} errors, {} overloaded, {} unanswered)",
        phase.acked,
        phase.per_s(),
        p.p50 as f64 / 1e3,
        p.p99 as f64 / 1e3,
        phase.errors,
        phase.overloaded,
        phase.unanswered
    );
    phase
}

/// A history page must be full: every page read has PAGE messages before its bound.
fn check_page(r: &StoreResult) -> Result<u64, String> {
    match r {
        StoreResult::History { result: Ok(page), .. } if page.messages.len() == PAGE => Ok(PAGE as u64),
        StoreResult::History { result: Ok(page), .. } => {
            Err(format!("a page of {} messages, expected {PAGE}", page.messages.len()))
        }
        other => Err(format!("unexpected answer to a history read: {other:?}")),
    }
}

/// A room head must be the highest seq written to the room (or below it, if the last writes were
/// refused), and the page must end with it.
fn check_head(r: &StoreResult, heads: &[(Arc<str>, u64)]) -> Result<u64, String> {
    let StoreResult::RoomHead { room, result: Ok((head, page)), .. } = r else {
        return Err(format!("unexpected answer to a room head read: {r:?}"));
    };
    let written = heads.iter().find(|(r, _)| r == room).map_or(0, |(_, seq)| *seq);
    let last = page.messages.last().map(|m| m.seq);
    if *head == 0 || *head > written || last != Some(*head) {
        return Err(format!("room {room}: head {head}, page ending at {last:?}, {written} written"));
    }
    Ok(page.messages.len() as u64)
}

/// A phase as store.json records it: `mode` (how it was driven) with the counts and latency.
fn phase_json(p: &Phase, mode: Value) -> Value {
    let mut v = mode;
    let mean_group = (p.commits > 0).then(|| p.acked as f64 / p.commits as f64);
    let fields = json!({
        "sent": p.sent,
        "acked": p.acked,
        "errors": p.errors,
        "overloaded": p.overloaded,
        "unanswered": p.unanswered,
        "error_reasons": p.reasons,
        "per_s": p.per_s(),
        "window_s": p.window_s,
        "commits": p.commits,
        "mean_group": mean_group,
        "messages_read": p.messages_read,
        "latency_us": hist::percentiles(&p.latency),
    });
    if let (Some(v), Value::Object(fields)) = (v.as_object_mut(), fields) {
        v.extend(fields);
    }
    v
}

/// Writes store.json and one `.hgrm` per non-empty histogram (values in ms) into `dir`.
pub fn write(dir: &std::path::Path, outcome: &Outcome) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let run = RunDir { path: dir.to_path_buf() };
    results::write_json(&run, "store", &outcome.summary)?;
    for (name, h) in outcome.hists.iter().filter(|(_, h)| !h.is_empty()) {
        results::write_hgrm_file(&run, name, h, 1000.0)?;
    }
    Ok(())
}

/// The figures in words, one line per phase.
pub fn describe(summary: &Value) -> String {
    let mut out = String::new();
    let ms = |v: &Value| v.as_f64().unwrap_or(0.0) / 1e3;
    let rows = [
        ("chat, open loop", &summary["chat"]["open"]),
        ("chat, target rate", &summary["chat"]["target"]),
        ("chat, closed loop", &summary["chat"]["max"]),
        ("yjs, open loop", &summary["yjs"]["open"]),
        ("yjs, closed loop", &summary["yjs"]["max"]),
        ("geo log, open loop", &summary["geo"]["open"]),
        ("geo log, closed loop", &summary["geo"]["max"]),
        ("history pages", &summary["history"]["reads"]),
        ("room heads", &summary["head"]["reads"]),
    ];
    let _ = writeln!(
        out,
        "store {} ({})",
        summary["store"].as_str().unwrap_or("?"),
        summary["backend"].as_str().unwrap_or("?")
    );
    for (what, p) in rows {
        let l = &p["latency_us"];
        let _ = writeln!(
            out,
            "{what:<22} {:>10.0}/s  p50 {:>8.3} ms  p99 {:>8.3} ms  p99.9 {:>8.3} ms  errors {} overloaded {} unanswered {}",
            p["per_s"].as_f64().unwrap_or(0.0),
            ms(&l["p50"]),
            ms(&l["p99"]),
            ms(&l["p999"]),
            p["errors"],
            p["overloaded"],
            p["unanswered"]
        );
    }
    out
}
