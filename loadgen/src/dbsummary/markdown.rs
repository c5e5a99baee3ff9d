//! RESULTS.md of a database comparison: one table per layer, a column per configuration, every
//! figure with its ratio to the first (baseline) configuration.

use std::fmt::Write as _;

use serde_json::Value;

/// How a figure is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Microseconds in the data, printed as ms.
    Ms,
    /// Per second.
    PerS,
}

/// Reads one figure from a configuration's entry of summary.json.
type Getter = Box<dyn Fn(&Value) -> Option<f64>>;

/// One row: a label and where the figure is in a configuration's entry.
struct Row {
    label: String,
    unit: Unit,
    get: Getter,
}

fn row(label: impl Into<String>, unit: Unit, get: impl Fn(&Value) -> Option<f64> + 'static) -> Row {
    Row { label: label.into(), unit, get: Box::new(get) }
}

/// A latency percentile of `entry[section][a][b]...["latency_us"][p]`; absent when it had no sample.
fn latency(entry: &Value, path: &[&str], p: &'static str) -> Option<f64> {
    let l = path.iter().fold(entry, |v, k| &v[*k]);
    let l = if l.get("latency_us").is_some() { &l["latency_us"] } else { l };
    (l["count"].as_u64()? > 0).then(|| l[p].as_f64()).flatten()
}

fn value(entry: &Value, path: &[&str]) -> Option<f64> {
    path.iter().fold(entry, |v, k| &v[*k]).as_f64()
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds as milliseconds with about three significant digits.
pub fn ms(us: f64) -> String {
    let ms = us / 1000.0;
    if ms < 1.0 {
        format!("{ms:.3} ms")
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{} ms", thousands(ms))
    }
}

/// Microseconds below one millisecond as µs (`1.50 µs`, `900 µs`), longer ones as [`ms`].
pub fn short(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.2} µs")
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        ms(us)
    }
}

/// `value / baseline` as `×1.9`; nothing when either is missing or the baseline is zero.
pub fn ratio(value: f64, baseline: Option<f64>) -> Option<String> {
    let b = baseline.filter(|b| *b > 0.0)?;
    let r = value / b;
    Some(if r >= 10.0 {
        format!("×{r:.0}")
    } else if r >= 1.0 {
        format!("×{r:.2}")
    } else {
        format!("×{r:.3}")
    })
}

fn cell(unit: Unit, v: Option<f64>, baseline: Option<f64>) -> String {
    let Some(v) = v else { return "—".into() };
    let text = match unit {
        Unit::Ms => ms(v),
        Unit::PerS => format!("{}/s", thousands(v)),
    };
    match ratio(v, baseline) {
        Some(r) => format!("{text} ({r})"),
        None => text,
    }
}

/// The configuration's name as a column heading: `SQLite synchronous=full`.
fn heading(entry: &Value) -> String {
    let label = entry["label"].as_str().or(entry["name"].as_str()).unwrap_or("?");
    match entry["setting"].as_str() {
        Some(s) => format!("{label} {s}"),
        None => label.to_owned(),
    }
}

fn table(md: &mut String, entries: &[&Value], rows: &[Row]) {
    let _ = write!(md, "| |");
    for e in entries {
        let _ = write!(md, " {} |", heading(e));
    }
    let _ = write!(md, "\n|---|");
    for _ in entries {
        let _ = write!(md, "---:|");
    }
    md.push('\n');
    for r in rows {
        let baseline = entries.first().and_then(|e| (r.get)(e));
        let _ = write!(md, "| {} |", r.label);
        for e in entries {
            let _ = write!(md, " {} |", cell(r.unit, (r.get)(e), baseline));
        }
        md.push('\n');
    }
}

fn rate(scenario: &Value, key: &str) -> String {
    scenario[key].as_f64().map_or_else(|| "?".into(), thousands)
}

fn store_rows(scenario: &Value) -> Vec<Row> {
    let at = rate(scenario, "chat_rate");
    let target = rate(scenario, "chat_target_rate");
    let yjs = rate(scenario, "yjs_rate");
    let geo = rate(scenario, "geo_rate");
    let s = |path: &'static [&'static str], p: &'static str| move |e: &Value| latency(&e["store"], path, p);
    let v = |path: &'static [&'static str]| move |e: &Value| value(&e["store"], path);
    vec![
        row(format!("chat ack p50, {at}/s offered"), Unit::Ms, s(&["chat", "open"], "p50")),
        row(format!("chat ack p99, {at}/s offered"), Unit::Ms, s(&["chat", "open"], "p99")),
        row(format!("chat ack p99.9, {at}/s offered"), Unit::Ms, s(&["chat", "open"], "p999")),
        row(format!("chat acked at {target}/s offered"), Unit::PerS, v(&["chat", "target", "per_s"])),
        row(format!("chat ack p99, {target}/s offered"), Unit::Ms, s(&["chat", "target"], "p99")),
        row("chat capacity (closed loop)", Unit::PerS, v(&["chat", "max", "per_s"])),
        row(format!("Yjs update ack p50, {yjs}/s offered"), Unit::Ms, s(&["yjs", "open"], "p50")),
        row(format!("Yjs update ack p99, {yjs}/s offered"), Unit::Ms, s(&["yjs", "open"], "p99")),
        row("large Yjs update (4–64 KiB) ack p99", Unit::Ms, s(&["yjs", "large"], "p99")),
        row("Yjs capacity (closed loop)", Unit::PerS, v(&["yjs", "max", "per_s"])),
        row(format!("geofence log ack p99, {geo}/s offered"), Unit::Ms, s(&["geo", "open"], "p99")),
        row("geofence log capacity (closed loop)", Unit::PerS, v(&["geo", "max", "per_s"])),
        row("history page of 50, p50", Unit::Ms, s(&["history", "reads"], "p50")),
        row("history page of 50, p99", Unit::Ms, s(&["history", "reads"], "p99")),
        row("room head (+ latest 50), p50", Unit::Ms, s(&["head", "reads"], "p50")),
        row("room head (+ latest 50), p99", Unit::Ms, s(&["head", "reads"], "p99")),
    ]
}

fn e2e_rows() -> Vec<Row> {
    let l = |key: &'static str, p: &'static str| move |e: &Value| latency(&e["chat"], &[key], p);
    vec![
        row("publish → ack p50", Unit::Ms, l("ack_us", "p50")),
        row("publish → ack p99", Unit::Ms, l("ack_us", "p99")),
        row("publish → ack p99.9", Unit::Ms, l("ack_us", "p999")),
        row("publish → delivery p50", Unit::Ms, l("delivery_us", "p50")),
        row("publish → delivery p99", Unit::Ms, l("delivery_us", "p99")),
        row("publish → delivery p99.9", Unit::Ms, l("delivery_us", "p999")),
    ]
}

/// Copies delivered per acknowledged message end to end: the room size, the sender included.
fn copies(entry: &Value) -> String {
    let c = &entry["chat"];
    match (c["delivered"].as_f64(), c["acked"].as_f64()) {
        (Some(d), Some(a)) if a > 0.0 => format!("{:.0}", d / a),
        _ => "?".into(),
    }
}

/// Every error a configuration's steps counted, summed.
pub fn errors(entry: &Value) -> u64 {
    let store = &entry["store"];
    let phases = [
        &store["chat"]["open"],
        &store["chat"]["target"],
        &store["chat"]["max"],
        &store["yjs"]["open"],
        &store["yjs"]["max"],
        &store["geo"]["open"],
        &store["geo"]["max"],
        &store["history"]["reads"],
        &store["head"]["reads"],
    ];
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let store_errors: u64 = phases.iter().map(|p| n(p, "errors") + n(p, "unanswered")).sum();
    let chat = &entry["chat"];
    store_errors + n(chat, "ack_errors") + n(chat, "connection_failures")
}

/// Requests refused with a full storage queue ("overloaded"), summed over the open-loop phases.
pub fn overloaded(entry: &Value) -> u64 {
    let store = &entry["store"];
    [&store["chat"]["open"], &store["chat"]["target"], &store["yjs"]["open"], &store["geo"]["open"]]
        .iter()
        .map(|p| p["overloaded"].as_u64().unwrap_or(0))
        .sum()
}

/// SETUP.md facts: each configuration's durability setting and what it means.
pub fn durability_facts(summary: &Value) -> Vec<(String, String)> {
    let configs = summary["db"]["configs"].as_array().map(Vec::as_slice).unwrap_or_default();
    configs
        .iter()
        .map(|e| {
            let mut v = format!("{}: {}", heading(e), e["meaning"].as_str().unwrap_or("(not recorded)"));
            if let Some(version) = e["version"].as_str() {
                let _ = write!(v, "; {version}");
            }
            if let Some(why) = e["skipped"].as_str() {
                let _ = write!(v, "; skipped: {why}");
            }
            (format!("durability {}", e["name"].as_str().unwrap_or("?")), v)
        })
        .collect()
}

/// The whole RESULTS.md.
pub fn results(summary: &Value, name: &str) -> String {
    let scenario = &summary["scenario"];
    let configs = summary["db"]["configs"].as_array().map(Vec::as_slice).unwrap_or_default();
    let ran: Vec<&Value> = configs.iter().filter(|e| e["skipped"].is_null()).collect();
    let baseline = ran.first().map_or_else(|| "?".to_owned(), |e| heading(e));
    let mut md = String::new();
    let _ = writeln!(md, "# Storage comparison: {name}\n");
    let _ = writeln!(
        md,
        "One machine, one run, one backend and durability setting at a time, each on a fresh database. In \
         parentheses: the ratio to {baseline} (×2 = twice its value: twice the latency, or twice the throughput). \
         Machine, commands and versions: SETUP.md; every figure: summary.json; distributions: the .hgrm files \
         of each configuration's folder.\n"
    );

    let _ = writeln!(md, "## Storage layer\n");
    let with_store: Vec<&Value> = ran.iter().copied().filter(|e| !e["store"].is_null()).collect();
    if with_store.is_empty() {
        let _ = writeln!(md, "Not measured.\n");
    } else {
        let _ = writeln!(
            md,
            "`rusher-loadgen store`: the server's storage thread (bounded queue, group commit) driven by {} \
             submitter threads standing in for the workers, {} s per phase, {} chat rooms, bodies of 20–200 \
             bytes. Open loop: latency from the intended send time, so stalls count (coordinated omission \
             corrected). Capacity: {} requests in flight in all (closed loop). Reads: one at a time on an idle \
             store.\n",
            scenario["store_submitters"],
            scenario["store_seconds"],
            rate(scenario, "chat_rooms"),
            rate(scenario, "in_flight"),
        );
        table(&mut md, &with_store, &store_rows(scenario));
        md.push('\n');
    }

    let _ = writeln!(md, "## End to end\n");
    let with_chat: Vec<&Value> = ran.iter().copied().filter(|e| !e["chat"].is_null()).collect();
    if with_chat.is_empty() {
        let _ = writeln!(md, "Not measured.\n");
    } else {
        let _ = writeln!(
            md,
            "`rusher` on each store and `rusher-loadgen chat`: {} connections in rooms with presence, {} \
             messages per second in all for {} s (open model, from the intended send time). A message is acked \
             once its group is committed, and delivered to every member of its room ({} copies per message).\n",
            rate(scenario, "e2e_connections"),
            rate(scenario, "e2e_publish_rate"),
            scenario["e2e_measure_s"],
            copies(with_chat[0]),
        );
        table(&mut md, &with_chat, &e2e_rows());
        md.push('\n');
    }

    let _ = writeln!(md, "## Targets and errors\n");
    for e in &ran {
        let target = &e["store"]["chat"]["target"];
        let achieved = target["per_s"].as_f64();
        let p99 = latency(&e["store"], &["chat", "target"], "p99");
        let verdict = match (achieved, p99) {
            (Some(a), Some(p)) => {
                let met = a >= 100_000.0 && p <= 10_000.0;
                format!(
                    "{} chat messages/s acked at the target rate, ack p99 {}: the target (≥ 100,000/s, p99 ≤ 10 ms) is {}",
                    thousands(a),
                    ms(p),
                    if met { "met" } else { "not met" }
                )
            }
            _ => "the target rate was not measured".to_owned(),
        };
        let _ = writeln!(
            md,
            "- {}: {verdict}; {} errors, {} requests refused with a full queue (\"overloaded\").",
            heading(e),
            thousands(errors(e) as f64),
            thousands(overloaded(e) as f64)
        );
    }
    for e in configs.iter().filter(|e| !e["skipped"].is_null()) {
        let _ = writeln!(md, "- {}: skipped ({}).", heading(e), e["skipped"].as_str().unwrap_or("?"));
    }
    md.push('\n');

    let _ = writeln!(
        md,
        "## Durability settings\n\n| store | setting | what an acknowledged write survives |\n|---|---|---|"
    );
    for e in configs {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            e["label"].as_str().unwrap_or("?"),
            e["setting"].as_str().unwrap_or("?"),
            e["meaning"].as_str().unwrap_or("?")
        );
    }
    md.push('\n');

    let _ = writeln!(md, "## Geofence evaluators\n");
    let geo = summary["db"]["geo_evaluators"].as_array().map(Vec::as_slice).unwrap_or_default();
    if geo.is_empty() {
        let _ = writeln!(md, "Not measured in this run.");
    }
    for g in geo {
        geo_table(&mut md, g);
    }
    md
}

/// One file of `server/examples/geo_evaluators` figures: an array with one object per evaluator,
/// size, query and mode. Anything else is only pointed to.
fn geo_table(md: &mut String, g: &Value) {
    let file = g["file"].as_str().unwrap_or("?");
    let rows = g["figures"].as_array().map(Vec::as_slice).unwrap_or_default();
    if rows.is_empty() || rows.iter().any(|r| r["evaluator"].as_str().is_none()) {
        let _ =
            writeln!(md, "- `geo/{file}`: figures in a form this summary does not tabulate; see the file.");
        return;
    }
    let _ = writeln!(
        md,
        "`geo/{file}` (`server/examples/geo_evaluators`, R-tree vs geohash vs PostGIS; latency per query, or per \
         batch in batch mode; ratios of time per query to the R-tree's):\n"
    );
    let _ = writeln!(
        md,
        "| fences | query | mode | evaluator | p50 | p99 | queries/s | time per query vs R-tree | load |\n|---:|---|---|---|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let num = |k: &str| r[k].as_f64();
        let mode = match (r["mode"].as_str(), r["batch_size"].as_u64()) {
            (Some("batch"), Some(n)) => format!("batches of {n}"),
            (Some(m), _) => m.to_owned(),
            _ => "?".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {mode} | {} | {} | {} | {} | {} | {} |",
            num("fences").map_or_else(|| "?".into(), thousands),
            r["query"].as_str().unwrap_or("?"),
            r["evaluator"].as_str().unwrap_or("?"),
            num("p50_us").map_or_else(|| "—".into(), short),
            num("p99_us").map_or_else(|| "—".into(), short),
            num("queries_per_s").map_or_else(|| "—".into(), thousands),
            num("time_per_query_vs_rtree").map_or_else(|| "—".into(), |v| format!("×{v:.2}")),
            num("load_ms").map_or_else(|| "—".into(), |v| ms(v * 1000.0)),
        );
    }
    md.push('\n');
}
