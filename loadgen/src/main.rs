//! The `rusher-loadgen` binary.

use clap::Parser;

use rusher_loadgen::cli::{self, Cli, Command, ScenarioKind, ShootoutMode};
use rusher_loadgen::coordinator::{self, Agents, Outcome};
use rusher_loadgen::sources::{parse_sources, Failure};
use rusher_loadgen::{agent, hist};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log)?)
        .with_writer(std::io::stderr)
        .init();
    let spec = match &cli.command {
        Command::Agent { coordinator, name, source_ips, capacity } => {
            let sources = match source_ips {
                Some(s) => parse_sources(s).map_err(anyhow::Error::msg)?,
                None => Vec::new(),
            };
            let name = name.clone().unwrap_or_else(|| format!("agent-{}", std::process::id()));
            let capacity = capacity.unwrap_or_else(agent::capacity);
            return agent::run(*coordinator, name, sources, capacity);
        }
        Command::Connect(run) => {
            let (chat, traffic) = cli::defaults();
            cli::spec(ScenarioKind::Connect, run, &chat, &traffic, ShootoutMode::Echo, None)?
        }
        Command::Chat { run, chat, traffic } => {
            cli::spec(ScenarioKind::Chat, run, chat, traffic, ShootoutMode::Echo, None)?
        }
        Command::Collab { run, traffic } => {
            let (chat, _) = cli::defaults();
            cli::spec(ScenarioKind::Collab, run, &chat, traffic, ShootoutMode::Echo, None)?
        }
        Command::Broadcast { run, traffic } => {
            let (chat, _) = cli::defaults();
            cli::spec(ScenarioKind::Broadcast, run, &chat, traffic, ShootoutMode::Echo, None)?
        }
        Command::Shootout { run, mode, traffic } => {
            let (chat, _) = cli::defaults();
            cli::spec(ScenarioKind::Shootout, run, &chat, traffic, *mode, None)?
        }
        Command::Coordinator { listen, agents, scenario, run, chat, traffic, mode } => {
            let fleet = Agents::Fleet { listen: *listen, count: *agents };
            cli::spec(*scenario, run, chat, traffic, *mode, Some(fleet))?
        }
    };
    agent::raise_nofile_limit();
    let outcome = coordinator::run(spec)?;
    print_outcome(&outcome);
    if !outcome.lost_agents.is_empty() || outcome.counters.joined == 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn print_outcome(o: &Outcome) {
    let c = &o.counters;
    println!(
        "connections: {} attempted, {} joined, {} failed; ramp took {:.1} s",
        c.attempted,
        c.joined,
        c.failed(),
        o.connect_seconds
    );
    for (f, n) in &c.failures {
        println!("  {n} × {f:?}: {}", Failure::hint(*f));
    }
    if c.published > 0 {
        println!(
            "messages: {} published, {} acked, {} ack errors, {} delivered",
            c.published, c.acked, c.ack_errors, c.delivered
        );
    }
    for (name, h) in &o.hists {
        if h.is_empty() {
            continue;
        }
        let p = hist::percentiles(h);
        println!(
            "{name:>10} latency (ms): p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  ({} samples)",
            p.p50 as f64 / 1e3,
            p.p90 as f64 / 1e3,
            p.p99 as f64 / 1e3,
            p.p999 as f64 / 1e3,
            p.max as f64 / 1e3,
            p.count
        );
    }
    if !o.lost_agents.is_empty() {
        println!("LOST AGENTS: {}", o.lost_agents.join(", "));
    }
    if let Some(dir) = &o.run_dir {
        println!("results: {}", dir.display());
    }
}
