//! `rusher-report`: renders every run folder under `results/` into one self-contained HTML page.

mod charts;
mod page;
mod parse;
mod reproduce;

use std::fs;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// Renders results/index.html from every results/<run>/ folder.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The folder holding one sub-folder per run.
    #[arg(default_value = "results")]
    results: PathBuf,
    /// Where to write the page; default `<RESULTS>/index.html`.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runs = parse::load_runs(&args.results).context("reading the results")?;
    let html = page::render(&runs);
    let output = args.output.unwrap_or_else(|| args.results.join("index.html"));
    // Written beside the target and renamed, so a reader never sees half a page.
    let tmp = output.with_extension("html.tmp");
    fs::write(&tmp, &html).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &output)
        .with_context(|| format!("renaming {} to {}", tmp.display(), output.display()))?;
    println!("{}: {} runs, {} bytes", output.display(), runs.len(), html.len());
    Ok(())
}
