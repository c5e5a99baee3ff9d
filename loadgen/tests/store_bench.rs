//! The storage benchmark, briefly, against an in-memory SQLite database: `rusher-loadgen store` must
//! run every phase through the server's storage thread and leave sane figures and histograms. No
//! timing thresholds: the figures only have to exist and agree with each other.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_phase(name: &str, p: &Value) {
    let n = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("{name}: no {k} in {p}"));
    assert!(n("acked") > 0, "{name}: nothing acknowledged: {p}");
    assert_eq!(n("acked"), n("sent"), "{name}: every request answered with success: {p}");
    assert_eq!((n("errors"), n("overloaded"), n("unanswered")), (0, 0, 0), "{name}: {p}");
    assert!(p["per_s"].as_f64().unwrap() > 0.0, "{name}: throughput {p}");
    assert!(p["window_s"].as_f64().unwrap() > 0.0, "{name}: window {p}");
    let l = &p["latency_us"];
    let large = if name == "yjs open" { n("large_count") } else { 0 };
    assert_eq!(l["count"].as_u64().unwrap() + large, n("acked"), "{name}: one latency sample per answer");
    let (p50, p99, max) =
        (l["p50"].as_u64().unwrap(), l["p99"].as_u64().unwrap(), l["max"].as_u64().unwrap());
    assert!(0 < p50 && p50 <= p99 && p99 <= max, "{name}: percentiles {l}");
}

/// The Yjs open-loop phase with its count of large updates, which have a histogram of their own.
fn with_large(yjs: &Value) -> Value {
    let mut p = yjs["open"].clone();
    p["large_count"] = yjs["large"]["count"].clone();
    p
}

#[test]
fn the_storage_benchmark_measures_every_phase_on_sqlite() {
    let dir = TempDir(std::env::temp_dir().join(format!("rusher-store-bench-{}", std::process::id())));
    let out = dir.0.join("out");
    let exe = env!("CARGO_BIN_EXE_rusher-loadgen");
    let output = Command::new(exe)
        .args(["store", "--store", "sqlite://:memory:", "--seconds", "0.15", "--submitters", "2"])
        .args([
            "--chat-rate",
            "1000",
            "--chat-target-rate",
            "3000",
            "--yjs-rate",
            "1000",
            "--geo-rate",
            "1000",
            "--in-flight",
            "64",
        ])
        .args([
            "--rooms",
            "20",
            "--docs",
            "4",
            "--objects",
            "50",
            "--history-messages",
            "300",
            "--reads",
            "40",
        ])
        .args(["--large-every", "5", "--out"])
        .arg(&out)
        .args(["--", "--sqlite-synchronous", "off", "--store-queue", "1024"])
        .output()
        .expect("run rusher-loadgen store");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {:?}\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("chat, open loop") && stdout.contains("room heads"), "{stdout}");

    let s: Value = serde_json::from_str(&std::fs::read_to_string(out.join("store.json")).unwrap()).unwrap();
    assert_eq!(s["backend"], "sqlite");
    assert_eq!(s["submitters"], 2);
    assert!(s["sqlite_version"].as_str().is_some_and(|v| v.starts_with('3')), "{}", s["sqlite_version"]);
    assert!(s["durability"].as_str().unwrap().contains("Off"), "{}", s["durability"]);
    for (name, p) in [
        ("chat open", &s["chat"]["open"]),
        ("chat target", &s["chat"]["target"]),
        ("chat max", &s["chat"]["max"]),
        ("yjs open", &with_large(&s["yjs"])),
        ("yjs max", &s["yjs"]["max"]),
        ("geo open", &s["geo"]["open"]),
        ("geo max", &s["geo"]["max"]),
        ("history", &s["history"]["reads"]),
        ("head", &s["head"]["reads"]),
    ] {
        assert_phase(name, p);
    }
    assert_eq!(s["chat"]["open"]["mode"], "open");
    assert_eq!(s["chat"]["target"]["offered_per_s"], 3000.0);
    assert_eq!(s["chat"]["max"]["mode"], "closed");
    assert_eq!(s["chat"]["max"]["in_flight"], 128);
    // Appends are group-committed: never more commits than acknowledged writes.
    for kind in ["chat", "yjs", "geo"] {
        let p = &s[kind]["max"];
        let commits = p["commits"].as_u64().unwrap();
        assert!(commits > 0 && commits <= p["acked"].as_u64().unwrap(), "{kind}: {p}");
        assert!(p["mean_group"].as_f64().unwrap() >= 1.0, "{kind}: {p}");
    }
    // One Yjs update in five is a large one, recorded apart.
    let large = s["yjs"]["large"]["count"].as_u64().unwrap();
    let small = s["yjs"]["open"]["latency_us"]["count"].as_u64().unwrap();
    assert!(large > 0 && large * 3 < small, "{large} large, {small} small");
    // Every history page is full, and the room was filled before reading.
    assert_eq!(s["history"]["room_messages"], 300);
    let reads = &s["history"]["reads"];
    assert_eq!(reads["messages_read"].as_u64(), reads["acked"].as_u64().map(|n| n * 50));
    assert!(s["head"]["reads"]["messages_read"].as_u64().unwrap() > 0);

    for name in [
        "chat",
        "chat-target",
        "chat-max",
        "yjs",
        "yjs-large",
        "yjs-max",
        "geo",
        "geo-max",
        "history",
        "head",
    ] {
        let text = std::fs::read_to_string(out.join(format!("{name}.hgrm"))).unwrap();
        assert!(text.trim_start().starts_with("Value") && text.contains("#[Mean"), "{name}.hgrm:\n{text}");
    }
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let exe = env!("CARGO_BIN_EXE_rusher-loadgen");
    let run = |args: &[&str]| {
        let o = Command::new(exe).args(args).output().unwrap();
        assert!(!o.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = run(&["store", "--store", "sqlite://:memory:", "--seconds", "0"]);
    assert!(err.contains("--seconds"), "{err}");
    let err = run(&["store", "--store", "sqlite://:memory:", "--in-flight", "100000"]);
    assert!(err.contains("storage queue"), "{err}");
    let err = run(&["store", "--store", "mysql://h/db"]);
    assert!(err.contains("unsupported store URL"), "{err}");
    let err = run(&["store", "--store", "sqlite://:memory:", "--", "--sqlite-synchronous", "sometimes"]);
    assert!(err.contains("--sqlite-synchronous"), "{err}");
}
