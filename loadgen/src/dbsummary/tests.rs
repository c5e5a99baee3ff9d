use std::time::{SystemTime, UNIX_EPOCH};

use super::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!("rusher-dbsum-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn lat(p50: u64, p99: u64) -> Value {
    json!({"count": 100, "min": 1, "mean": 1.0, "p50": p50, "p90": p99, "p99": p99, "p999": p99, "p9999": p99, "max": p99})
}

fn phase(per_s: f64, p50: u64, p99: u64, overloaded: u64) -> Value {
    json!({"mode": "open", "offered_per_s": 10000.0, "per_s": per_s, "acked": 100, "errors": 0,
           "overloaded": overloaded, "unanswered": 0, "latency_us": lat(p50, p99)})
}

fn store(scale: u64) -> Value {
    json!({
        "seconds": 5.0, "submitters": 2,
        "chat": {"rooms": 1000, "open": phase(10000.0, 500 * scale, 2000 * scale, 0),
                 "target": {"offered_per_s": 100000.0, "per_s": 100000.0 / scale as f64, "acked": 9,
                            "overloaded": 7 * (scale - 1), "latency_us": lat(900, 9000 * scale)},
                 "max": {"in_flight": 4096, "per_s": 120000.0 / scale as f64, "latency_us": lat(1, 2)}},
        "yjs": {"open": {"offered_per_s": 20000.0, "latency_us": lat(300, 900)},
                "large": {"count": 0, "latency_us": {"count": 0, "p99": 0}}, "max": {"per_s": 50000.0}},
        "geo": {"open": {"offered_per_s": 10000.0, "latency_us": lat(300, 900)}, "max": {"per_s": 40000.0}},
        "history": {"reads": {"latency_us": lat(80, 120), "errors": 1}},
        "head": {"reads": {"latency_us": lat(90, 130)}},
    })
}

fn config(dir: &Path, name: &str, label: &str, setting: &str, skipped: Option<&str>) -> PathBuf {
    let sub = dir.join(name);
    fs::create_dir_all(&sub).unwrap();
    let c = json!({"backend": label.to_lowercase(), "label": label, "setting": setting,
                   "meaning": format!("{label} means it"), "version": format!("{label} 1.0"), "skipped": skipped});
    fs::write(sub.join("config.json"), c.to_string()).unwrap();
    sub
}

/// A comparison of three configurations: a baseline, one twice as slow, one skipped.
fn comparison(dir: &Path) {
    let a = config(dir, "sqlite-full", "SQLite", "synchronous=full", None);
    let b = config(dir, "postgres-on", "PostgreSQL", "synchronous_commit=on", None);
    config(dir, "redis-always", "Redis", "appendfsync=always", Some("backend not built"));
    for (sub, scale) in [(&a, 1), (&b, 2)] {
        fs::create_dir_all(sub.join("store")).unwrap();
        fs::write(sub.join("store/store.json"), store(scale).to_string()).unwrap();
    }
    fs::create_dir_all(a.join("chat")).unwrap();
    let chat = json!({"connections": 2000, "scenario": {"kind": "chat", "publish_rate": 2000.0, "measure_s": 20},
        "counters": {"joined": 2000, "published": 40000, "acked": 40000, "ack_errors": 2, "delivered": 800000,
                     "failures": [["refused", 3]]},
        "latency_us": {"ack": lat(1100, 2800), "delivery": lat(1200, 2900)}});
    fs::write(a.join("chat/summary.json"), chat.to_string()).unwrap();
    fs::create_dir_all(dir.join("geo")).unwrap();
    fs::write(dir.join("geo/evaluators-10000.json"), r#"{"fences": 10000}"#).unwrap();
    let rows = json!([
        {"evaluator": "rtree", "fences": 10000, "query": "fences_at", "mode": "single", "batch_size": 1,
         "p50_us": 1.5, "p99_us": 4.0, "queries_per_s": 500000.0, "time_per_query_vs_rtree": 1.0, "load_ms": 12.0},
        {"evaluator": "postgis", "fences": 10000, "query": "fences_at", "mode": "batch", "batch_size": 100,
         "p50_us": 900.0, "p99_us": 2500.0, "queries_per_s": 90000.0, "time_per_query_vs_rtree": 5.5, "load_ms": 3400.0},
    ]);
    fs::write(dir.join("geo/evaluators.json"), rows.to_string()).unwrap();
}

fn names() -> Vec<String> {
    ["sqlite-full", "postgres-on", "redis-always"].map(String::from).to_vec()
}

#[test]
fn summary_gathers_every_configuration_in_order() {
    let tmp = TempDir::new("sum");
    comparison(&tmp.0);
    let s = summarize(&tmp.0, &names()).unwrap();
    assert_eq!(s["scenario"]["kind"], "db");
    assert_eq!(s["scenario"]["baseline"], "sqlite-full");
    assert_eq!(s["scenario"]["chat_target_rate"], 100000.0);
    assert_eq!(s["scenario"]["e2e_connections"], 2000);
    let configs = s["db"]["configs"].as_array().unwrap();
    let order: Vec<&str> = configs.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(order, ["sqlite-full", "postgres-on", "redis-always"]);
    assert_eq!(configs[0]["chat"]["ack_us"]["p99"], 2800);
    assert_eq!(configs[0]["chat"]["connection_failures"], 3);
    assert!(configs[1]["chat"].is_null() && configs[2]["store"].is_null());
    assert_eq!(configs[2]["skipped"], "backend not built");
    // Sorted by file name.
    assert_eq!(s["db"]["geo_evaluators"][0]["file"], "evaluators-10000.json");
    assert_eq!(s["db"]["geo_evaluators"][0]["figures"]["fences"], 10000);
    assert_eq!(s["db"]["geo_evaluators"][1]["figures"][1]["evaluator"], "postgis");
}

#[test]
fn results_print_ratios_to_the_baseline() {
    let tmp = TempDir::new("md");
    comparison(&tmp.0);
    let s = summarize(&tmp.0, &names()).unwrap();
    let md = markdown::results(&s, "2026-11-28-db");
    assert!(md.starts_with("# Storage comparison: 2026-11-28-db"), "{md}");
    assert!(md.contains("| | SQLite synchronous=full | PostgreSQL synchronous_commit=on |"), "{md}");
    assert!(md.contains("| chat ack p99, 10,000/s offered | 2.00 ms (×1.00) | 4.00 ms (×2.00) |"), "{md}");
    assert!(md.contains("| chat capacity (closed loop) | 120,000/s (×1.00) | 60,000/s (×0.500) |"), "{md}");
    assert!(md.contains("| history page of 50, p50 | 0.080 ms (×1.00) | 0.080 ms (×1.00) |"), "{md}");
    // The large Yjs updates had no sample: no figure rather than a zero.
    assert!(md.contains("| large Yjs update (4–64 KiB) ack p99 | — | — |"), "{md}");
    // End to end ran for the baseline only.
    assert!(md.contains("| publish → ack p99 | 2.80 ms (×1.00) |"), "{md}");
    assert!(md.contains("every member of its room (20 copies per message)"), "{md}");
    // 1 failed history read, 2 error replies and 3 failed connections end to end.
    assert!(md.contains("is met; 6 errors, 0 requests refused"), "{md}");
    assert!(md.contains("PostgreSQL synchronous_commit=on: 50,000 chat messages/s acked at the target rate, ack p99 18.0 ms: the target (≥ 100,000/s, p99 ≤ 10 ms) is not met; 1 errors, 7 requests refused"), "{md}");
    assert!(md.contains("- Redis appendfsync=always: skipped (backend not built)."), "{md}");
    assert!(md.contains("| Redis | appendfsync=always | Redis means it |"), "{md}");
    assert!(
        md.contains("- `geo/evaluators-10000.json`: figures in a form this summary does not tabulate"),
        "{md}"
    );
    assert!(
        md.contains(
            "| 10,000 | fences_at | single | rtree | 1.50 µs | 4.00 µs | 500,000 | ×1.00 | 12.0 ms |"
        ),
        "{md}"
    );
    assert!(md.contains("| 10,000 | fences_at | batches of 100 | postgis | 900 µs | 2.50 ms | 90,000 | ×5.50 | 3,400 ms |"), "{md}");
    let facts = markdown::durability_facts(&s);
    assert_eq!(
        facts[1],
        (
            "durability postgres-on".into(),
            "PostgreSQL synchronous_commit=on: PostgreSQL means it; PostgreSQL 1.0".into()
        )
    );
}

#[test]
fn run_moves_the_folder_under_results_and_writes_its_files() {
    let tmp = TempDir::new("run");
    let from = tmp.0.join("work");
    comparison(&from);
    let commands = tmp.0.join("commands.txt");
    fs::write(&commands, "scripts/with-postgres x\n\nrusher-loadgen store --store sqlite://a\n").unwrap();
    let args = DbSummaryArgs {
        from: from.clone(),
        results: Some(tmp.0.join("results")),
        commands: Some(commands),
        notes: vec!["a note".into()],
        facts: vec!["PostgreSQL=15.10".into()],
        configs: names(),
    };
    let dest = run(&args).unwrap();
    assert!(!from.exists(), "moved");
    let name = dest.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.ends_with("-db"), "{name}");
    for file in [
        "summary.json",
        "RESULTS.md",
        "SETUP.md",
        "sqlite-full/store/store.json",
        "geo/evaluators-10000.json",
    ] {
        assert!(dest.join(file).is_file(), "{file}");
    }
    let setup = fs::read_to_string(dest.join("SETUP.md")).unwrap();
    assert!(setup.starts_with(&format!("# Setup: {name}")), "{setup}");
    assert!(
        setup.contains("rusher-loadgen store --store sqlite://a") && setup.contains("| PostgreSQL | 15.10 |"),
        "{setup}"
    );
    assert!(
        setup.contains("| durability sqlite-full | SQLite synchronous=full: SQLite means it; SQLite 1.0 |"),
        "{setup}"
    );
    assert!(fs::read_to_string(dest.join("RESULTS.md"))
        .unwrap()
        .starts_with(&format!("# Storage comparison: {name}")));
}

#[test]
fn bad_input_is_refused_before_anything_moves() {
    let tmp = TempDir::new("bad");
    comparison(&tmp.0);
    let err = summarize(&tmp.0, &["../x".to_owned()]).unwrap_err();
    assert!(err.to_string().contains("configuration name"), "{err}");
    let err = summarize(&tmp.0, &["missing".to_owned()]).unwrap_err();
    assert!(err.to_string().contains("no config.json"), "{err}");
    fs::write(tmp.0.join("sqlite-full/store/store.json"), "{").unwrap();
    let err = summarize(&tmp.0, &names()).unwrap_err();
    assert!(err.to_string().contains("store.json"), "{err}");
}
