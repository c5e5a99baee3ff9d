//! The `rusher-loadgen` binary.

use clap::Parser;

use rusher_loadgen::cli::{self, Cli, Command, ScenarioKind, ShootoutMode};
use rusher_loadgen::coordinator::{self, Agents, Outcome};
use rusher_loadgen::sources::{parse_sources, Failure};
use rusher_loadgen::{agent, dbsummary, hist, sink, storebench};

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
        Command::Sink { listen, capacity, max_seconds } => {
            let capacity = capacity.unwrap_or_else(agent::capacity);
            return sink::run(*listen, capacity, std::time::Duration::from_secs(*max_seconds));
        }
        Command::Tcp { run, traffic } => {
            let (chat, _, geo) = cli::defaults();
            cli::spec(ScenarioKind::Tcp, run, &chat, traffic, &geo, ShootoutMode::Echo, None)?
        }
        Command::Store(args) => {
            let outcome = storebench::run(args)?;
            if let Some(dir) = &args.out {
                storebench::write(dir, &outcome)?;
            }
            print!("{}", storebench::describe(&outcome.summary));
            return Ok(());
        }
        Command::Bets(args) => {
            let summary = rusher_loadgen::bets::run(&args.plan())?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            return Ok(());
        }
        Command::DbSummary(args) => {
            println!("{}", dbsummary::run(args)?.display());
            return Ok(());
        }
        Command::Connect(run) => {
            let (chat, traffic, geo) = cli::defaults();
            cli::spec(ScenarioKind::Connect, run, &chat, &traffic, &geo, ShootoutMode::Echo, None)?
        }
        Command::Chat { run, chat, traffic } => {
            let (_, _, geo) = cli::defaults();
            cli::spec(ScenarioKind::Chat, run, chat, traffic, &geo, ShootoutMode::Echo, None)?
        }
        Command::Collab { run, traffic } => {
            let (chat, _, geo) = cli::defaults();
            cli::spec(ScenarioKind::Collab, run, &chat, traffic, &geo, ShootoutMode::Echo, None)?
        }
        Command::Broadcast { run, traffic } => {
            let (chat, _, geo) = cli::defaults();
            cli::spec(ScenarioKind::Broadcast, run, &chat, traffic, &geo, ShootoutMode::Echo, None)?
        }
        Command::Geo { run, traffic, geo } => {
            let (chat, _, _) = cli::defaults();
            cli::spec(ScenarioKind::Geo, run, &chat, traffic, geo, ShootoutMode::Echo, None)?
        }
        Command::Shootout { run, mode, traffic } => {
            let (chat, _, geo) = cli::defaults();
            cli::spec(ScenarioKind::Shootout, run, &chat, traffic, &geo, *mode, None)?
        }
        Command::Coordinator { listen, agents, scenario, run, chat, traffic, geo, mode } => {
            let fleet = Agents::Fleet { listen: *listen, count: *agents };
            cli::spec(*scenario, run, chat, traffic, geo, *mode, Some(fleet))?
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
    if let Some(geo) = o.summary.get("geo") {
        print_geo(geo);
    } else if c.published > 0 {
        println!(
            "messages: {} published, {} acked, {} ack errors, {} delivered",
            c.published, c.acked, c.ack_errors, c.delivered
        );
    }
    for (reason, n) in &c.reply_errors {
        println!("  {n} × error reply {reason:?}");
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

/// The geo figures of summary.json, in words.
fn print_geo(g: &serde_json::Value) {
    let n = |k: &str| g[k].as_u64().unwrap_or(0);
    let f = &g["fences"];
    println!(
        "fences: {} per target on {} target(s), {} created, {} replaced, in {:.1} s",
        f["fences"],
        f["targets"],
        f["created"],
        f["replaced"],
        f["seconds"].as_f64().unwrap_or(0.0)
    );
    println!(
        "placement: {} objects placed at the start of their walks in {:.1} s; {} events it caused, not counted below",
        n("objects_placed"),
        g["placement_seconds"].as_f64().unwrap_or(0.0),
        n("placement_events")
    );
    println!(
        "updates: {} sent in {} pushes of {}, {} answered ({} ok, {} out_of_order, {} errors, {} unanswered); {:.0} updates/s over {:.1} s",
        n("updates_sent"),
        n("pushes_sent"),
        n("batch"),
        n("replies"),
        n("replies_ok"),
        n("out_of_order"),
        n("errors"),
        n("unanswered"),
        g["updates_per_s"].as_f64().unwrap_or(0.0),
        g["window_seconds"].as_f64().unwrap_or(0.0)
    );
    let kinds = g["events_by_kind"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    println!(
        "events: {} received ({kinds}); {:.0} events/s",
        n("events_received"),
        g["events_per_s"].as_f64().unwrap_or(0.0)
    );
}
