//! `rusher-loadgen db-summary`: gathers a database comparison (`scripts/bench-db`) into one result
//! folder: `summary.json` with every figure, `RESULTS.md` with the tables and the ratios to the
//! first configuration, `SETUP.md`; then moves the folder to `results/<date>-db/`.
//!
//! The folder it reads has one sub-folder per configuration (a backend with one durability setting):
//! `config.json` (what it is), `store/` (`rusher-loadgen store --out`) and `chat/` (a `chat` run's
//! result folder), either missing if that step did not run; and `geo/*.json`, the geofence evaluator
//! figures, when they were measured.

mod markdown;

use std::fs;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Map, Value};

use crate::results::{self, RunDir, Setup};

/// The flags of `db-summary`.
#[derive(Args, Debug, Clone)]
pub struct DbSummaryArgs {
    /// The folder the comparison was written to: one sub-folder per configuration.
    #[arg(long)]
    pub from: PathBuf,
    /// Move the finished folder to ROOT/<date>-db (e.g. results) and print its path.
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// A file with the command lines that ran, one per line, for SETUP.md.
    #[arg(long)]
    pub commands: Option<PathBuf>,
    /// A note for SETUP.md; repeat for several.
    #[arg(long = "note")]
    pub notes: Vec<String>,
    /// A fact for SETUP.md as KEY=VALUE (database versions, the disk, ...); repeat for several.
    #[arg(long = "fact")]
    pub facts: Vec<String>,
    /// The configurations in order (sub-folder names); the first is the baseline of the ratios.
    #[arg(required = true)]
    pub configs: Vec<String>,
}

/// Why the comparison could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum DbSummaryError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DbSummaryError + '_ {
    move |source| DbSummaryError::Io { path: path.to_path_buf(), source }
}

/// Reads a JSON file; `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<Value>, DbSummaryError> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| DbSummaryError::Json { path: path.to_path_buf(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// What the end-to-end chat run measured, from its summary.json.
fn chat_figures(summary: &Value) -> Value {
    let c = &summary["counters"];
    let s = &summary["scenario"];
    let failures: u64 = c["failures"].as_array().map_or(0, |f| f.iter().filter_map(|p| p[1].as_u64()).sum());
    json!({
        "connections": summary["connections"],
        "joined": c["joined"],
        "connection_failures": failures,
        "publish_rate": s["publish_rate"],
        "measure_s": s["measure_s"],
        "body_bytes": s["body_bytes"],
        "published": c["published"],
        "acked": c["acked"],
        "ack_errors": c["ack_errors"],
        "reply_errors": c["reply_errors"],
        "delivered": c["delivered"],
        "ack_us": summary["latency_us"]["ack"],
        "delivery_us": summary["latency_us"]["delivery"],
        "server_rss_kb": summary["server_rss_kb"],
    })
}

/// One configuration's entry of summary.json.
fn config_entry(dir: &Path, name: &str) -> Result<Value, DbSummaryError> {
    let sub = dir.join(name);
    let mut entry = match read_json(&sub.join("config.json"))? {
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(DbSummaryError::Invalid(format!("{}/config.json is not an object", sub.display())))
        }
        None => {
            return Err(DbSummaryError::Invalid(format!(
                "{} has no config.json: every configuration needs one",
                sub.display()
            )))
        }
    };
    entry.insert("name".into(), json!(name));
    let store = read_json(&sub.join("store/store.json"))?.unwrap_or(Value::Null);
    // The SQLite library is compiled in: the storage benchmark knows its exact version.
    if let Some(v) = store["sqlite_version"].as_str() {
        entry.insert("version".into(), json!(format!("SQLite {v} (bundled with rusqlite)")));
    }
    entry.insert("store".into(), store);
    let chat = match read_json(&sub.join("chat/summary.json"))? {
        Some(s) => chat_figures(&s),
        None => Value::Null,
    };
    entry.insert("chat".into(), chat);
    Ok(Value::Object(entry))
}

/// The geofence evaluator figures in `dir/geo/*.json`, by file name.
fn geo_evaluators(dir: &Path) -> Result<Vec<Value>, DbSummaryError> {
    let geo = dir.join("geo");
    let entries = match fs::read_dir(&geo) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&geo)(e)),
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_err(&geo))?.path();
        if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    files.sort();
    let mut out = Vec::new();
    for path in files {
        if let Some(figures) = read_json(&path)? {
            let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            out.push(json!({"file": file, "figures": figures}));
        }
    }
    Ok(out)
}

/// A plain folder name: no path separators, not `.` or `..`.
fn check_name(name: &str) -> Result<(), DbSummaryError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DbSummaryError::Invalid(format!("configuration name {name:?}: use letters, digits, - and _")))
    }
}

/// The whole summary.json of the comparison in `dir`.
pub fn summarize(dir: &Path, configs: &[String]) -> Result<Value, DbSummaryError> {
    let mut entries = Vec::new();
    for name in configs {
        check_name(name)?;
        entries.push(config_entry(dir, name)?);
    }
    let baseline = configs.first().cloned().unwrap_or_default();
    // The parameters every configuration ran with, from the first one that ran each step.
    let store = entries.iter().map(|e| &e["store"]).find(|s| !s.is_null()).cloned().unwrap_or(Value::Null);
    let chat = entries.iter().map(|e| &e["chat"]).find(|c| !c.is_null()).cloned().unwrap_or(Value::Null);
    let mut scenario = Map::new();
    scenario.insert("kind".into(), json!("db"));
    scenario.insert("baseline".into(), json!(baseline));
    scenario.insert("configs".into(), json!(configs));
    let params = [
        ("store_seconds", &store["seconds"]),
        ("store_submitters", &store["submitters"]),
        ("chat_rooms", &store["chat"]["rooms"]),
        ("chat_rate", &store["chat"]["open"]["offered_per_s"]),
        ("chat_target_rate", &store["chat"]["target"]["offered_per_s"]),
        ("in_flight", &store["chat"]["max"]["in_flight"]),
        ("yjs_rate", &store["yjs"]["open"]["offered_per_s"]),
        ("geo_rate", &store["geo"]["open"]["offered_per_s"]),
        ("e2e_connections", &chat["connections"]),
        ("e2e_publish_rate", &chat["publish_rate"]),
        ("e2e_measure_s", &chat["measure_s"]),
    ];
    for (k, v) in params {
        if !v.is_null() {
            scenario.insert(k.into(), v.clone());
        }
    }
    Ok(json!({
        "scenario": Value::Object(scenario),
        "db": {
            "baseline": baseline,
            "configs": entries,
            "geo_evaluators": geo_evaluators(dir)?,
        },
    }))
}

/// Writes summary.json, RESULTS.md and SETUP.md into the comparison's folder, after moving it to
/// `args.results/<date>-db/` when that is given. Returns where the folder ends up.
pub fn run(args: &DbSummaryArgs) -> anyhow::Result<PathBuf> {
    // Everything is read and checked before anything moves, so bad input leaves results/ alone.
    let summary = summarize(&args.from, &args.configs)?;
    let command_lines = match &args.commands {
        Some(path) => fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };
    let mut extra = Vec::new();
    for fact in &args.facts {
        let (k, v) =
            fact.split_once('=').ok_or_else(|| anyhow::anyhow!("--fact {fact:?}: expected KEY=VALUE"))?;
        extra.push((k.to_owned(), v.to_owned()));
    }
    extra.extend(markdown::durability_facts(&summary));
    let setup = Setup { command_lines, notes: args.notes.clone(), server_pids: Vec::new(), extra };

    let run = match &args.results {
        Some(root) => {
            let run = RunDir::create(root, "db")?;
            // `run` is an empty folder, just made to reserve the name, and a directory may be renamed
            // onto an empty one. Both must be on one file system: scripts/bench-db works under target/.
            fs::rename(&args.from, &run.path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot move {} to {}: {e} (they must be on one file system)",
                    args.from.display(),
                    run.path.display()
                )
            })?;
            run
        }
        None => RunDir { path: args.from.clone() },
    };
    let name =
        run.path.file_name().map_or_else(|| "this run".to_owned(), |n| n.to_string_lossy().into_owned());
    results::write_json(&run, "summary", &summary)?;
    let md = run.path.join("RESULTS.md");
    fs::write(&md, markdown::results(&summary, &name))
        .map_err(|e| anyhow::anyhow!("{}: {e}", md.display()))?;
    results::write_setup(&run, &setup)?;
    Ok(run.path)
}

#[cfg(test)]
mod tests;
