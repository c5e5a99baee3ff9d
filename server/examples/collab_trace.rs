//! The standard CRDT editing benchmark: replay the automerge-paper trace (259,778 single-character
//! edits typing one LaTeX paper) into a yrs document and time what the collab server does with it:
//! integrating every edit as a client update, encoding the snapshot, loading the snapshot back.
//!
//! ```text
//! cargo run --release -p rusher-server --example collab_trace [-- PATH/automerge-paper.json.gz]
//! ```
//!
//! The trace is `{startContent, endContent, txns: [{patches: [[position, deleted, inserted]]}]}`
//! with positions in Unicode code points. Every replay is checked against `endContent`; a mismatch
//! exits non-zero.

use std::error::Error;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;
use rusher_server::topics::collab::doc::CollabDoc;
use yrs::{Doc, GetString, OffsetKind, Options, ReadTxn, Text, TextRef, Transact, TransactionMut};

/// The shared type the edits go to; y-quill's examples bind this name.
const TEXT: &str = "quill";

/// One edit: at `pos` (code points), delete `del` code points, then insert `ins`.
struct Patch {
    pos: usize,
    del: usize,
    ins: String,
}

/// The trace: the text before and after, and the edits grouped as the author's transactions.
struct Trace {
    start: String,
    end: String,
    txns: Vec<Vec<Patch>>,
}

impl Trace {
    fn patches(&self) -> usize {
        self.txns.iter().map(Vec::len).sum()
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("collab_trace: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let wall = Instant::now();
    let path = trace_path()?;
    let started = Instant::now();
    let trace = read_trace(&path)?;
    let read = started.elapsed();
    let patches = trace.patches();
    println!(
        "trace {}: {} patches in {} transactions, {} chars at the end, read in {}",
        path.display(),
        patches,
        trace.txns.len(),
        trace.end.chars().count(),
        ms(read)
    );

    // 1. The edits made locally, as the author's editor makes them. (One transaction for the whole
    // trace is not measured: yrs merges blocks only at commit and finds a position by walking the
    // blocks from the start, so that run takes minutes.)
    for (label, grouping) in [
        ("one transaction per patch", Grouping::PerPatch),
        ("one transaction per trace txn", Grouping::PerTxn),
    ] {
        let (doc, text, elapsed) = replay(&trace, grouping);
        check(&trace, &text.get_string(&doc.transact()), label)?;
        println!("local edits, {label}: {}", rate(patches, elapsed));
    }

    // 2. The server's side: every transaction arrives as a v1 update and is integrated.
    let started = Instant::now();
    let updates = client_updates(&trace);
    let update_bytes: usize = updates.iter().map(Vec::len).sum();
    println!("client updates: {} encoded while replaying in {}", updates.len(), ms(started.elapsed()));
    let mut server = CollabDoc::new().with_max_len(usize::MAX);
    let started = Instant::now();
    for u in &updates {
        server.apply_update(u)?;
    }
    let elapsed = started.elapsed();
    check(&trace, &server.text(TEXT), "server apply_update")?;
    println!(
        "server apply_update: {} updates ({} bytes) in {}",
        updates.len(),
        update_bytes,
        rate(updates.len(), elapsed)
    );

    // 3. Snapshot, reload, and the full-state reply a joining client gets.
    let started = Instant::now();
    let snapshot = server.snapshot();
    let encode = started.elapsed();
    println!("snapshot: {} bytes, encoded in {}", snapshot.len(), ms(encode));

    let started = Instant::now();
    let loaded = CollabDoc::load(Some(&snapshot), &[])?;
    let load = started.elapsed();
    check(&trace, &loaded.text(TEXT), "load(snapshot)")?;
    println!("load(snapshot): {}", ms(load));

    let log: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
    let started = Instant::now();
    let replayed = CollabDoc::load(None, &log)?;
    let load_log = started.elapsed();
    check(&trace, &replayed.text(TEXT), "load(update log)")?;
    println!("load(update log of {} updates): {}", log.len(), ms(load_log));

    let started = Instant::now();
    let full = loaded.diff_for(&[0])?;
    println!("diff_for(empty state vector): {} bytes in {}", full.len(), ms(started.elapsed()));
    println!("all replays match endContent; total wall time {}", ms(wall.elapsed()));
    Ok(())
}

/// The trace file: argv[1], else `shared/data/` beside the repository, from the repository root or
/// from `server/`.
fn trace_path() -> Result<PathBuf, Box<dyn Error>> {
    if let Some(arg) = std::env::args_os().nth(1) {
        return Ok(arg.into());
    }
    let candidates = [
        PathBuf::from("../shared/data/automerge-paper.json.gz"),
        PathBuf::from("../../shared/data/automerge-paper.json.gz"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/automerge-paper.json.gz"),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!("trace not found (tried {candidates:?}); pass its path as the first argument").into()
    })
}

fn read_trace(path: &Path) -> Result<Trace, Box<dyn Error>> {
    let mut json = String::new();
    GzDecoder::new(BufReader::new(File::open(path)?)).read_to_string(&mut json)?;
    let value: serde_json::Value = serde_json::from_str(&json)?;
    let text = |key: &str| value[key].as_str().map(str::to_owned).ok_or(format!("`{key}` is not a string"));
    let as_usize =
        |v: &serde_json::Value| v.as_u64().map(|n| n as usize).ok_or("a patch field is not a count");
    let mut txns = Vec::new();
    for txn in value["txns"].as_array().ok_or("`txns` is not an array")? {
        let mut patches = Vec::new();
        for p in txn["patches"].as_array().ok_or("a txn has no `patches` array")? {
            let ins = p[2].as_str().ok_or("a patch's inserted text is not a string")?.to_owned();
            patches.push(Patch { pos: as_usize(&p[0])?, del: as_usize(&p[1])?, ins });
        }
        txns.push(patches);
    }
    Ok(Trace { start: text("startContent")?, end: text("endContent")?, txns })
}

/// How patches are grouped into yrs transactions.
#[derive(Clone, Copy)]
enum Grouping {
    PerPatch,
    PerTxn,
}

/// A document indexed like Yjs (UTF-16 code units), holding the trace's start text.
fn new_doc(trace: &Trace) -> (Doc, TextRef) {
    let doc = Doc::with_options(Options { offset_kind: OffsetKind::Utf16, ..Options::default() });
    let text = doc.get_or_insert_text(TEXT);
    text.insert(&mut doc.transact_mut(), 0, &trace.start);
    (doc, text)
}

/// Applies the whole trace and returns the document and the time the edits took.
fn replay(trace: &Trace, grouping: Grouping) -> (Doc, TextRef, Duration) {
    let (doc, text) = new_doc(trace);
    let mut offsets = Offsets::new(trace);
    let started = Instant::now();
    match grouping {
        Grouping::PerPatch => {
            for p in trace.txns.iter().flatten() {
                apply(&mut doc.transact_mut(), &text, &mut offsets, p);
            }
        }
        Grouping::PerTxn => {
            for txn in &trace.txns {
                let mut t = doc.transact_mut();
                for p in txn {
                    apply(&mut t, &text, &mut offsets, p);
                }
            }
        }
    }
    let elapsed = started.elapsed();
    (doc, text, elapsed)
}

/// The v1 update of every trace transaction, as a client would send them; the first one carries the
/// start text.
fn client_updates(trace: &Trace) -> Vec<Vec<u8>> {
    let (doc, text) = new_doc(trace);
    let mut offsets = Offsets::new(trace);
    let mut updates = vec![doc.transact().encode_state_as_update_v1(&Default::default())];
    for txn in &trace.txns {
        let mut t = doc.transact_mut();
        for p in txn {
            apply(&mut t, &text, &mut offsets, p);
        }
        // yrs hands back its encoder's whole buffer (1 KiB); kept as is, 260k of them spread the
        // document's items over a few hundred MiB and the position walks above slow down threefold.
        updates.push(t.encode_update_v1().into_boxed_slice().into_vec());
    }
    updates
}

fn apply(txn: &mut TransactionMut, text: &TextRef, offsets: &mut Offsets, p: &Patch) {
    let (at, del) = offsets.edit(p);
    if del > 0 {
        text.remove_range(txn, at, del);
    }
    if !p.ins.is_empty() {
        text.insert(txn, at, &p.ins);
    }
}

/// Turns the trace's code-point positions into the UTF-16 offsets yrs is configured for. While every
/// character is in the Basic Multilingual Plane the two agree; otherwise a copy of the text is kept
/// to count the UTF-16 units before each position (linear per edit, only on that path).
enum Offsets {
    Same,
    Counted(Vec<char>),
}

impl Offsets {
    fn new(trace: &Trace) -> Self {
        let astral = |s: &str| s.chars().any(|c| c.len_utf16() == 2);
        if astral(&trace.start) || trace.txns.iter().flatten().any(|p| astral(&p.ins)) {
            Offsets::Counted(trace.start.chars().collect())
        } else {
            Offsets::Same
        }
    }

    /// The UTF-16 offset and deleted length of a patch, updating the copy.
    fn edit(&mut self, p: &Patch) -> (u32, u32) {
        match self {
            Offsets::Same => (p.pos as u32, p.del as u32),
            Offsets::Counted(chars) => {
                let units = |cs: &[char]| cs.iter().map(|c| c.len_utf16() as u32).sum::<u32>();
                let at = units(&chars[..p.pos]);
                let del = units(&chars[p.pos..p.pos + p.del]);
                chars.splice(p.pos..p.pos + p.del, p.ins.chars());
                (at, del)
            }
        }
    }
}

fn check(trace: &Trace, got: &str, what: &str) -> Result<(), Box<dyn Error>> {
    if got == trace.end {
        return Ok(());
    }
    let at = got.chars().zip(trace.end.chars()).take_while(|(a, b)| a == b).count();
    Err(format!(
        "{what}: final text differs from endContent at char {at} ({} vs {} chars)",
        got.chars().count(),
        trace.end.chars().count()
    )
    .into())
}

fn rate(n: usize, elapsed: Duration) -> String {
    format!("{} ({:.0}/s)", ms(elapsed), n as f64 / elapsed.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
