//! Three geofence evaluators on the same city: the server's R-tree, GeoFire-style geohash indexes, and
//! PostGIS. For each size it loads N fences and N points into each evaluator, then times two questions —
//! which fences contain a point, which objects lie within a radius — one query at a time and in
//! batches, and checks every answer against the R-tree's.
//!
//! usage: cargo run --release -p rusher-server --example geo_evaluators -- [SIZES=10000,100000]
//!        [QUERIES=20000] [POSTGRES_URL] [--batch 100] [--json PATH]
//!
//! Data (fixed seed): fences of 20 to 500 m, one in 200 of 2 to 10 km, over 1° × 1° around Paris, as
//! `geo_bench` uses; points uniform over the same area; query points uniform, radii 50 m to 1 km
//! (log-uniform). Without a PostgreSQL URL (with PostGIS) only `rtree` and `geohash` run. Latencies are
//! wall time per query (per batch in batch mode) on a shared machine: compare ratios, not absolutes.
//! To measure PostGIS against a throwaway cluster:
//! `scripts/with-postgres sh -c 'target/release/examples/geo_evaluators 10000,100000 20000 "$RUSHER_TEST_POSTGRES_URL"'`

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use hdrhistogram::Histogram;
use rusher_server::topics::geo::detect::LatLon;
use rusher_server::topics::geo::evaluate::data::{self, Rng, CITY};
use rusher_server::topics::geo::evaluate::geofire::GeohashEval;
use rusher_server::topics::geo::evaluate::postgis::{PostgisEval, MAX_BATCH};
use rusher_server::topics::geo::evaluate::rtree::RTreeEval;
use rusher_server::topics::geo::evaluate::{Answers, Dataset, EvalError, Evaluator};
use serde_json::json;

const SEED: u64 = 0x6e0f_3ce5;

#[derive(Parser)]
#[command(about = "Compare the R-tree, GeoFire-style geohash and PostGIS geofence evaluators")]
struct Args {
    /// Sizes, comma-separated: each size N loads N fences and N points.
    #[arg(default_value = "10000,100000")]
    sizes: String,
    /// Queries of each kind per evaluator and size.
    #[arg(default_value_t = 20_000)]
    queries: usize,
    /// PostgreSQL URL of a database with PostGIS (or where the role may create it).
    postgres: Option<String>,
    /// Queries per batch (at most 10,000).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    FencesAt,
    ObjectsWithin,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::FencesAt => "fences_at",
            Kind::ObjectsWithin => "objects_within",
        }
    }
}

/// The queries of one size.
struct Workload {
    at: Vec<LatLon>,
    radius: Vec<(LatLon, f64)>,
}

impl Workload {
    fn len(&self, kind: Kind) -> usize {
        match kind {
            Kind::FencesAt => self.at.len(),
            Kind::ObjectsWithin => self.radius.len(),
        }
    }

    /// Answers queries `range` of `kind` as one batch.
    fn batch(
        &self,
        e: &mut dyn Evaluator,
        kind: Kind,
        range: std::ops::Range<usize>,
        out: &mut Answers,
    ) -> Result<(), EvalError> {
        match kind {
            Kind::FencesAt => e.fences_at_batch(&self.at[range], out),
            Kind::ObjectsWithin => e.objects_within_batch(&self.radius[range], out),
        }
    }

    /// Answers query `i` of `kind`.
    fn single(
        &self,
        e: &mut dyn Evaluator,
        kind: Kind,
        i: usize,
        out: &mut Vec<u32>,
    ) -> Result<(), EvalError> {
        match kind {
            Kind::FencesAt => e.fences_at(self.at[i], out),
            Kind::ObjectsWithin => {
                let (at, r) = self.radius[i];
                e.objects_within(at, r, out)
            }
        }
    }
}

/// What one evaluator did with one kind of query in one mode.
struct Run {
    kind: Kind,
    batch: usize,
    /// Nanoseconds per query (single) or per batch.
    hist: Histogram<u64>,
    /// Time spent in the evaluator, summed over the queries or batches.
    secs: f64,
    /// Every answer, sorted, to compare with the R-tree's.
    answers: Vec<Vec<u32>>,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("constant histogram bounds are valid")
}

/// Runs every query of `kind`, one at a time (`batch == 1`) or in batches, after an untimed warm-up.
fn measure(e: &mut dyn Evaluator, w: &Workload, kind: Kind, batch: usize) -> Result<Run, EvalError> {
    let n = w.len(kind);
    let mut out = Answers::default();
    // Warm-up: caches, and PostgreSQL's choice between custom and generic plans.
    for start in (0..n.min(1_000)).step_by(batch) {
        out.clear();
        w.batch(e, kind, start..(start + batch).min(n), &mut out)?;
    }
    let mut hist = new_hist();
    let mut answers = Vec::with_capacity(n);
    let mut single = Vec::new();
    // Queries per second count the time inside the evaluator only, not the copying of answers.
    let mut secs = 0.0;
    if batch == 1 {
        for i in 0..n {
            single.clear();
            let t = Instant::now();
            w.single(e, kind, i, &mut single)?;
            let took = t.elapsed();
            secs += took.as_secs_f64();
            let _ = hist.record((took.as_nanos() as u64).max(1));
            answers.push(single.clone());
        }
    } else {
        for start in (0..n).step_by(batch) {
            out.clear();
            let t = Instant::now();
            w.batch(e, kind, start..(start + batch).min(n), &mut out)?;
            let took = t.elapsed();
            secs += took.as_secs_f64();
            let _ = hist.record((took.as_nanos() as u64).max(1));
            answers.extend((0..out.len()).map(|i| out.get(i).to_vec()));
        }
    }
    for a in &mut answers {
        a.sort_unstable();
    }
    Ok(Run { kind, batch, hist, secs, answers })
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// Prints and collects the figures of one evaluator at one size.
fn report(
    name: &str,
    n: usize,
    load_s: f64,
    runs: &[Run],
    reference: Option<&(f64, Vec<Run>)>,
    out: &mut Vec<serde_json::Value>,
) {
    for run in runs {
        let queries = run.answers.len();
        let qps = queries as f64 / run.secs;
        let base = reference.and_then(|(_, r)| r.iter().find(|b| b.kind == run.kind && b.batch == run.batch));
        let time_ratio = base.map_or(1.0, |b| (b.answers.len() as f64 / b.secs) / qps);
        let load_ratio = reference.map_or(1.0, |(l, _)| load_s / l);
        let agree =
            base.map_or(queries, |b| b.answers.iter().zip(&run.answers).filter(|(a, b)| a == b).count());
        let results = run.answers.iter().map(Vec::len).sum::<usize>() as f64 / queries.max(1) as f64;
        let h = &run.hist;
        let mode = if run.batch == 1 { "single".to_owned() } else { format!("batch {}", run.batch) };
        println!(
            "{name:<8} {load:>10.1} {query:<15} {mode:<10} {p50:>10.2} {p99:>10.2} {p999:>10.2} {qps:>12.0} {time_ratio:>9.1}x {results:>8.2} {agree:>6}/{queries}",
            load = load_s * 1e3,
            query = run.kind.name(),
            p50 = us(h.value_at_quantile(0.5)),
            p99 = us(h.value_at_quantile(0.99)),
            p999 = us(h.value_at_quantile(0.999)),
        );
        out.push(json!({
            "evaluator": name,
            "fences": n,
            "points": n,
            "query": run.kind.name(),
            "mode": if run.batch == 1 { "single" } else { "batch" },
            "batch_size": run.batch,
            "latency_of": if run.batch == 1 { "query" } else { "batch" },
            "queries": queries,
            "load_ms": load_s * 1e3,
            "p50_us": us(h.value_at_quantile(0.5)),
            "p99_us": us(h.value_at_quantile(0.99)),
            "p999_us": us(h.value_at_quantile(0.999)),
            "max_us": us(h.max()),
            "queries_per_s": qps,
            "time_per_query_vs_rtree": time_ratio,
            "load_time_vs_rtree": load_ratio,
            "mean_results": results,
            "answers_equal_to_rtree": agree,
        }));
    }
}

fn run_all(e: &mut dyn Evaluator, w: &Workload, batch: usize) -> Result<Vec<Run>, EvalError> {
    let mut runs = Vec::new();
    for kind in [Kind::FencesAt, Kind::ObjectsWithin] {
        runs.push(measure(e, w, kind, 1)?);
        runs.push(measure(e, w, kind, batch)?);
    }
    Ok(runs)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sizes: Vec<usize> = args
        .sizes
        .split(',')
        .map(|s| s.trim().parse::<usize>().map_err(|e| anyhow::anyhow!("size {s:?}: {e}")))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(sizes.iter().all(|&n| n > 0), "sizes must be positive");
    anyhow::ensure!(args.queries > 0, "queries must be positive");
    anyhow::ensure!((2..=MAX_BATCH).contains(&args.batch), "--batch must be 2 to {MAX_BATCH}");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("geofence evaluators, {cpus} CPUs, everything on this host; times are wall time");
    if args.postgres.is_none() {
        println!(
            "no PostgreSQL URL given: running rtree and geohash only (pass a URL of a database with PostGIS)"
        );
    }
    let mut figures = Vec::new();
    for &n in &sizes {
        let data = Dataset::city(n, n, SEED);
        let mut rng = Rng(SEED ^ n as u64);
        let w = Workload {
            at: data::positions(&mut rng, &[CITY], args.queries),
            radius: data::radius_queries(&mut rng, &[CITY], args.queries, 50.0, 1_000.0),
        };
        println!(
            "\n== {n} fences and {n} points over 1° x 1° (fences 20-500 m, 1 in 200 of 2-10 km); {} queries of each kind; radii 50 m-1 km",
            args.queries
        );
        println!(
            "{:<8} {:>10} {:<15} {:<10} {:>10} {:>10} {:>10} {:>12} {:>10} {:>8} {:>6}",
            "",
            "load ms",
            "query",
            "mode",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "queries/s",
            "x rtree",
            "results",
            "agree"
        );

        let t = Instant::now();
        let mut rtree = RTreeEval::load(&data)?;
        let rtree_load = t.elapsed().as_secs_f64();
        let reference = (rtree_load, run_all(&mut rtree, &w, args.batch)?);
        drop(rtree);
        report("rtree", n, reference.0, &reference.1, None, &mut figures);

        let t = Instant::now();
        let mut geohash = GeohashEval::load(&data)?;
        let load = t.elapsed().as_secs_f64();
        let runs = run_all(&mut geohash, &w, args.batch)?;
        drop(geohash);
        report("geohash", n, load, &runs, Some(&reference), &mut figures);

        if let Some(url) = &args.postgres {
            let t = Instant::now();
            let mut pg = PostgisEval::load(url, &data)?;
            let load = t.elapsed().as_secs_f64();
            let runs = run_all(&mut pg, &w, args.batch)?;
            let versions = pg.versions()?;
            pg.drop_schema()?;
            report("postgis", n, load, &runs, Some(&reference), &mut figures);
            println!("(postgis: {versions}, over a loopback connection)");
        }
    }
    println!("\nlatency is per query for single, per batch for batch; x rtree = time per query relative to the R-tree's in the same mode; agree = answers identical to the R-tree's");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}
