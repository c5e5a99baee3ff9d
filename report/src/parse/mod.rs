//! Reading a results folder: `summary.json`, the `.hgrm` percentile files, `samples.jsonl` and
//! `SETUP.md`, as `rusher-loadgen` writes them (see `loadgen/src/results.rs` and `hist.rs`), or
//! `bench/firebase/run.mjs` for a Firebase comparison, or `bench/peers/gather.py` for a peer comparison.

pub mod db;
pub mod firebase;
pub mod hgrm;
pub mod peers;
pub mod samples;
pub mod setup;
pub mod summary;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use hgrm::Hgrm;
pub use samples::Sample;
pub use setup::Setup;
pub use summary::Summary;

/// Why the text of one results file could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// A JSON document or line does not have the expected shape.
    #[error("line {line}: {source}")]
    Json {
        /// 1-based line of the JSON text (1 for a whole document).
        line: usize,
        /// What serde_json found.
        source: serde_json::Error,
    },
    /// A line of a text format does not have the expected shape.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What was wrong with it.
        reason: String,
    },
}

/// Why a results folder could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or folder could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file was read but its content is malformed.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: ParseError,
    },
}

/// One run: the content of one `results/<date>-<scenario>/` folder.
#[derive(Debug)]
pub struct Run {
    /// The folder's name, e.g. `2026-11-28-geo-2`; unique within `results/`.
    pub name: String,
    /// `SETUP.md`, if the folder has one.
    pub setup: Option<Setup>,
    /// `summary.json`, if the folder has one (a run that died early may leave none).
    pub summary: Option<Summary>,
    /// Every `<name>.hgrm`, in the order of [`hgrm::metric_order`].
    pub histograms: Vec<(String, Hgrm)>,
    /// `samples.jsonl`, one sample per second; empty if the file is missing.
    pub samples: Vec<Sample>,
    /// A database comparison's distributions, from its configurations' folders.
    pub db_distributions: Vec<db::Distribution>,
}

impl Run {
    /// The scenario kind (`connect`, `chat`, `geo`, ...), or `unknown` for a run without a summary.
    pub fn kind(&self) -> &str {
        self.summary.as_ref().map_or("unknown", |s| s.scenario.kind.as_str())
    }
}

/// Loads every run folder (every directory holding a `summary.json` or `SETUP.md`) under `root`,
/// sorted by name, which sorts them by date.
pub fn load_runs(root: &Path) -> Result<Vec<Run>, LoadError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LoadError::Io { path, source }
    };
    let mut runs = Vec::new();
    for entry in fs::read_dir(root).map_err(io_err(root))? {
        let entry = entry.map_err(io_err(root))?;
        let dir = entry.path();
        if !dir.is_dir() || !(dir.join("summary.json").is_file() || dir.join("SETUP.md").is_file()) {
            continue;
        }
        runs.push(load_run(&dir)?);
    }
    runs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(runs)
}

/// Loads one run folder.
pub fn load_run(dir: &Path) -> Result<Run, LoadError> {
    let name =
        dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    let setup = read_optional(&dir.join("SETUP.md"))?.map(|text| setup::parse(&text));
    let summary = parse_optional(&dir.join("summary.json"), summary::parse)?;
    let samples = parse_optional(&dir.join("samples.jsonl"), samples::parse)?.unwrap_or_default();

    let mut histograms = Vec::new();
    for entry in fs::read_dir(dir).map_err(|source| LoadError::Io { path: dir.to_path_buf(), source })? {
        let path = entry.map_err(|source| LoadError::Io { path: dir.to_path_buf(), source })?.path();
        let Some(metric) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".hgrm"))
        else {
            continue;
        };
        let metric = metric.to_owned();
        if let Some(h) = parse_optional(&path, hgrm::parse)? {
            histograms.push((metric, h));
        }
    }
    histograms.sort_by(|(a, _), (b, _)| hgrm::metric_order(a).cmp(&hgrm::metric_order(b)));
    let db_distributions = match summary.as_ref().and_then(|s| s.db.as_ref()) {
        Some(db) => db::load_distributions(dir, db)?,
        None => Vec::new(),
    };
    Ok(Run { name, setup, summary, histograms, samples, db_distributions })
}

fn read_optional(path: &Path) -> Result<Option<String>, LoadError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LoadError::Io { path: path.to_path_buf(), source }),
    }
}

fn parse_optional<T>(path: &Path, parse: fn(&str) -> Result<T, ParseError>) -> Result<Option<T>, LoadError> {
    let Some(text) = read_optional(path)? else { return Ok(None) };
    parse(&text).map(Some).map_err(|source| LoadError::Parse { path: path.to_path_buf(), source })
}
