//! Command-line flags → a validated [`RunSpec`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::coordinator::{Agents, RunSpec};
use crate::geo::walk::Bbox;
use crate::geo::MAX_BATCH;
use crate::plan::{Plan, Scenario};
use crate::sources::{parse_sources, parse_targets};

/// rusher-loadgen: open many WebSocket connections against Rusher (or any Phoenix Channels V2
/// server), drive a scenario, and report corrected latency percentiles.
///
/// Every run is bounded in time (--max-seconds) and count, and stops by itself. A run needing more
/// sockets than one process may open is spread over local agent processes automatically.
#[derive(Parser, Debug)]
#[command(name = "rusher-loadgen", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (e.g. info, debug).
    #[arg(long, env = "RUSHER_LOADGEN_LOG", default_value = "warn", global = true)]
    pub log: String,
}

/// What to run.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Ramp to N joined connections at an arrival rate, hold them with heartbeats, tear down.
    Connect(RunArgs),
    /// The plain-TCP floor against `sink` processes (--target lists them, one port each): bare TCP
    /// connections opened and held silent, then each written to once per message (connections 0..N
    /// ask their sinks to write); measures each copy and the time until every copy arrived.
    Tcp {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// The TCP floor's server: accept and hold bare TCP connections; the 8 bytes any of them sends
    /// are written to every connection held.
    Sink {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Connections held at most (more are closed on accept). [default: open-file limit minus a reserve]
        #[arg(long)]
        capacity: Option<u64>,
        /// Exit after this many seconds.
        #[arg(long, default_value_t = 3600)]
        max_seconds: u64,
    },
    /// Rooms of --members connections; publish at --publish-rate; measure publish→ack and
    /// publish→delivery latency.
    Chat {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        chat: ChatArgs,
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// Every connection joins one topic (without presence); connection 0 publishes; measures each
    /// copy and the time until every copy of a message arrived.
    Broadcast {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// y-websocket editors typing real Yjs updates on /collab/<doc> (--per-topic editors per document);
    /// measures update propagation to the other editors.
    Collab {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// Geofencing on geo:<TENANT>: --connections connections moving --batch objects each (random
    /// walks in --bbox), --publish-rate location updates per second in all for --measure seconds,
    /// --fences fences created first, --subscribers connections receiving every fence event; measures
    /// update → reply and update → event.
    Geo {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        traffic: TrafficArgs,
        #[command(flatten)]
        geo: GeoArgs,
    },
    /// The websocket-shootout protocol (any server that speaks it, e.g. `rusher --shootout` on
    /// /shootout): echo round trips, or broadcasts from connection 0 to every client with the time
    /// each copy, and every copy of a message, arrived.
    Shootout {
        #[command(flatten)]
        run: RunArgs,
        /// echo or broadcast.
        #[arg(long, value_enum, default_value = "echo")]
        mode: ShootoutMode,
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// Coordinate a fleet: wait for --agents agents (started with `agent --coordinator`) and run the
    /// scenario across them.
    Coordinator {
        /// Address agents connect to.
        #[arg(long)]
        listen: SocketAddr,
        /// Agents to wait for.
        #[arg(long)]
        agents: usize,
        /// Scenario to run.
        #[arg(long, value_enum)]
        scenario: ScenarioKind,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        chat: ChatArgs,
        #[command(flatten)]
        traffic: TrafficArgs,
        #[command(flatten)]
        geo: GeoArgs,
        /// Shootout mode, with --scenario shootout.
        #[arg(long, value_enum, default_value = "echo")]
        mode: ShootoutMode,
    },
    /// The storage layer alone: open a store as `rusher --store` does and drive the server's storage
    /// thread (its queue and group commit) with chat, Yjs and geofence writes, history pages and
    /// room heads; report latency and throughput. Server flags (durability) go after `--`.
    Store(crate::storebench::StoreArgs),
    /// Gather a database comparison (scripts/bench-db) into one result folder: summary.json,
    /// RESULTS.md with the ratios to the first configuration, SETUP.md; move it to RESULTS/<date>-db.
    DbSummary(crate::dbsummary::DbSummaryArgs),
    /// Live bets on bet:<market> (an open server, no secret): an operator funds --bettors users and
    /// changes odds at --odds-rate; bets at --rate; measures place→ack and odds change→delivery.
    Bets(BetsArgs),
    /// Serve a coordinator: take a share of its run.
    Agent {
        /// The coordinator's address.
        #[arg(long)]
        coordinator: SocketAddr,
        /// Name in reports. [default: hostname-pid]
        #[arg(long)]
        name: Option<String>,
        /// This machine's source addresses (overrides the coordinator's).
        #[arg(long)]
        source_ips: Option<String>,
        /// Connections this agent may hold. [default: open-file limit minus a reserve]
        #[arg(long)]
        capacity: Option<u64>,
    },
}

/// Scenarios a coordinator can run.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScenarioKind {
    Connect,
    Tcp,
    Chat,
    Shootout,
    Broadcast,
    Collab,
    Geo,
}

/// What shootout clients send.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ShootoutMode {
    Echo,
    Broadcast,
}

/// Flags every scenario shares.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Servers, host:port, comma separated; connection i goes to target i mod N.
    #[arg(long, required = true)]
    pub target: String,
    /// Upgrade path. [default: /socket/websocket?vsn=2.0.0, or /shootout]
    #[arg(long)]
    pub path: Option<String>,
    /// Source addresses: ranges and lists, e.g. 127.0.0.2-127.0.0.201 (bound with IP_BIND_ADDRESS_NO_PORT).
    #[arg(long)]
    pub source_ips: Option<String>,
    /// Connections in the run (chat: derived from --rooms × --members when given; geo: the ones
    /// moving objects, with --subscribers on top).
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    /// Arrival rate, connections per second (open model).
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Connections in progress (opened, not yet joined) at most per agent, 0 for no bound: with a
    /// bound the ramp goes as fast as the server takes connections (up to --rate), and each
    /// connection's establish time counts from when it was opened.
    #[arg(long, default_value_t = 0)]
    pub max_pending: u64,
    /// Times a connection whose connect, upgrade or join fails or times out is opened again (after 1 s,
    /// 2 s, 4 s, then 8 s, plus up to 1 s of spread), as a reconnecting client does, before it counts as
    /// failed. Its establish time counts from its first attempt; retries are counted in the results.
    #[arg(long, default_value_t = 0)]
    pub connect_retries: u32,
    /// Seconds to hold the connections after the ramp, heartbeating.
    #[arg(long, default_value_t = 10)]
    pub hold: u64,
    /// Topic prefix; connection i joins PREFIX(i / --per-topic).
    #[arg(long, default_value = "room:lg-")]
    pub topic_prefix: String,
    /// Connections per topic; 0 joins nothing (upgrade only).
    #[arg(long, default_value_t = 100)]
    pub per_topic: u64,
    /// Join with `{"presence": false}`: members are not listed in presence and get no presence
    /// events, so large topics cost no presence traffic.
    #[arg(long)]
    pub no_presence: bool,
    /// Event-loop threads per agent. [default: available cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds each step (connect, upgrade, join) may take.
    #[arg(long, default_value_t = 15)]
    pub step_timeout: u64,
    /// Seconds between heartbeats of one connection.
    #[arg(long, default_value_t = 30)]
    pub heartbeat: u64,
    /// Local agent processes. [default: enough for --connections under the open-file limit]
    #[arg(long)]
    pub local_agents: Option<usize>,
    /// Write a result folder under this directory (e.g. results).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Server process to sample (RSS, CPU); repeat for several.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Hard bound on the run, seconds.
    #[arg(long, default_value_t = 3600)]
    pub max_seconds: u64,
    /// A note for SETUP.md; repeat for several.
    #[arg(long = "note")]
    pub notes: Vec<String>,
}

/// Chat scenario flags.
#[derive(Args, Debug, Clone)]
pub struct ChatArgs {
    /// Rooms (with --members, sets --connections).
    #[arg(long)]
    pub rooms: Option<u64>,
    /// Members per room.
    #[arg(long, default_value_t = 10)]
    pub members: u64,
}

/// The traffic phase of chat and shootout.
#[derive(Args, Debug, Clone)]
pub struct TrafficArgs {
    /// Messages published per second across the run (open model: latency counts from the intended
    /// send time).
    #[arg(long, default_value_t = 1000.0)]
    pub publish_rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub measure: u64,
    /// Bytes per message body.
    #[arg(long, default_value_t = 64)]
    pub body_bytes: usize,
}

/// The geo scenario's flags.
#[derive(Args, Debug, Clone)]
pub struct GeoArgs {
    /// Tenant: every connection joins geo:<TENANT>.
    #[arg(long, default_value = "bench")]
    pub tenant: String,
    /// Fences created before the connections open (f-0, f-1, ...): half circles of 50–2,000 m, half
    /// small polygons, placed in --bbox.
    #[arg(long, default_value_t = 1000)]
    pub fences: u64,
    /// Connections, besides the moving ones, that join with {"fences": "*"} and receive every event.
    #[arg(long, default_value_t = 1)]
    pub subscribers: u64,
    /// Metres an object moves per update.
    #[arg(long, default_value_t = 30.0)]
    pub step: f64,
    /// The area objects walk in (bouncing at its edges) and fences are placed in:
    /// min_lon,min_lat,max_lon,max_lat.
    #[arg(long, default_value = "2.0,48.5,3.0,49.5", allow_hyphen_values = true)]
    pub bbox: Bbox,
    /// Seed of the walks and the fences: the same seed gives the same paths and fences.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Updates per push (1–1000). 1 sends each update as a `location` push; N > 1 makes each moving
    /// connection move N objects (obj-<i>-<k>) and send one `locations` push with an update of each,
    /// all with the same ts. --publish-rate stays in updates per second.
    #[arg(long, default_value_t = 1)]
    pub batch: u64,
}

/// Most fences one run creates (the server's own default limit is 100,000 per tenant).
pub const MAX_FENCES: u64 = 1_000_000;
/// Longest step, metres: beyond this an update is a jump, not a move.
pub const MAX_STEP_M: f64 = 100_000.0;

impl GeoArgs {
    fn check(&self) -> anyhow::Result<()> {
        let t = &self.tenant;
        if t.is_empty() || t.len() > 128 || t.chars().any(char::is_control) {
            anyhow::bail!("--tenant must be 1–128 bytes without control characters");
        }
        if self.fences > MAX_FENCES {
            anyhow::bail!("--fences must be at most {MAX_FENCES}");
        }
        if !(self.step > 0.0 && self.step <= MAX_STEP_M) {
            anyhow::bail!("--step must be a number of metres in (0, {MAX_STEP_M}]");
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            anyhow::bail!("--batch must be 1–{MAX_BATCH} updates per push");
        }
        Ok(())
    }
}

/// Flag values for scenarios that do not take chat, traffic or geo flags: the flags' defaults.
pub fn defaults() -> (ChatArgs, TrafficArgs, GeoArgs) {
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        chat: ChatArgs,
        #[command(flatten)]
        traffic: TrafficArgs,
        #[command(flatten)]
        geo: GeoArgs,
    }
    let d = Defaults::parse_from(["defaults"]);
    (d.chat, d.traffic, d.geo)
}

impl TrafficArgs {
    fn check(&self) -> anyhow::Result<()> {
        if !(self.publish_rate > 0.0 && self.publish_rate.is_finite()) {
            anyhow::bail!("--publish-rate must be a positive number");
        }
        Ok(())
    }
}

fn plan_from(run: &RunArgs, scenario: Scenario, per_topic: u64) -> anyhow::Result<Plan> {
    let presence = !run.no_presence && !matches!(scenario, Scenario::Broadcast { .. });
    let path = run.path.clone().unwrap_or_else(|| match scenario {
        Scenario::Shootout { .. } => "/shootout".into(),
        Scenario::Collab { .. } => "/collab".into(),
        _ => "/socket/websocket?vsn=2.0.0".into(),
    });
    let targets = parse_targets(&run.target).map_err(anyhow::Error::msg)?;
    let sources = match &run.source_ips {
        Some(s) => parse_sources(s).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    Ok(Plan {
        scenario,
        targets,
        path,
        presence,
        sources,
        topic_prefix: run.topic_prefix.clone(),
        per_topic,
        first: 0,
        count: 0,
        rate: 0.0,
        threads: run.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        step_timeout_s: run.step_timeout,
        heartbeat_s: run.heartbeat,
        max_pending: run.max_pending,
        connect_retries: run.connect_retries,
    })
}

/// Build the run of a scenario command.
pub fn spec(
    kind: ScenarioKind,
    run: &RunArgs,
    chat: &ChatArgs,
    traffic: &TrafficArgs,
    geo: &GeoArgs,
    mode: ShootoutMode,
    agents: Option<Agents>,
) -> anyhow::Result<RunSpec> {
    if run.rate <= 0.0 || !run.rate.is_finite() {
        anyhow::bail!("--rate must be a positive number");
    }
    let (scenario, per_topic, connections) = match kind {
        ScenarioKind::Connect => (Scenario::Connect, run.per_topic, run.connections),
        ScenarioKind::Tcp => {
            traffic.check()?;
            let s = Scenario::Tcp { publish_rate: traffic.publish_rate, measure_s: traffic.measure };
            (s, 0, run.connections)
        }
        ScenarioKind::Chat => {
            traffic.check()?;
            if chat.members == 0 {
                anyhow::bail!("--members must be at least 1");
            }
            let connections = chat.rooms.map_or(run.connections, |r| r * chat.members);
            let s = Scenario::Chat {
                publish_rate: traffic.publish_rate,
                measure_s: traffic.measure,
                body_bytes: traffic.body_bytes.max(32),
            };
            (s, chat.members, connections)
        }
        ScenarioKind::Shootout => {
            traffic.check()?;
            let s = Scenario::Shootout {
                broadcast: matches!(mode, ShootoutMode::Broadcast),
                publish_rate: traffic.publish_rate,
                measure_s: traffic.measure,
                body_bytes: traffic.body_bytes,
            };
            (s, 0, run.connections)
        }
        ScenarioKind::Collab => {
            traffic.check()?;
            if run.per_topic == 0 {
                anyhow::bail!("--per-topic (editors per document) must be at least 1");
            }
            let s = Scenario::Collab {
                publish_rate: traffic.publish_rate,
                measure_s: traffic.measure,
                body_bytes: traffic.body_bytes,
            };
            (s, run.per_topic, run.connections)
        }
        ScenarioKind::Broadcast => {
            traffic.check()?;
            let s = Scenario::Broadcast {
                publish_rate: traffic.publish_rate,
                measure_s: traffic.measure,
                body_bytes: traffic.body_bytes.max(32),
            };
            (s, run.connections, run.connections)
        }
        ScenarioKind::Geo => {
            traffic.check()?;
            geo.check()?;
            if run.connections == 0 {
                anyhow::bail!("--connections (moving connections) must be at least 1");
            }
            let s = Scenario::Geo {
                publish_rate: traffic.publish_rate,
                measure_s: traffic.measure,
                tenant: geo.tenant.clone(),
                movers: run.connections,
                subscribers: geo.subscribers,
                fences: geo.fences,
                step_m: geo.step,
                seed: geo.seed,
                bbox: geo.bbox,
                batch: geo.batch,
            };
            let connections = run.connections + geo.subscribers;
            (s, connections, connections)
        }
    };
    if connections == 0 {
        anyhow::bail!("nothing to do: --connections is 0");
    }
    let plan = plan_from(run, scenario, per_topic)?;
    let pairs = (plan.sources.len().max(1) * plan.targets.len()) as u64;
    if connections / pairs > 10_000 {
        eprintln!(
            "note: {} connections per (source address, target) pair; the kernel's port search slows down \
             as a pair's ports fill, which shows as connect latency. Add --source-ips (e.g. 127.0.0.2-127.0.0.{}).",
            connections / pairs,
            (connections / 2000 + 2).min(254)
        );
    }
    let agents = match agents {
        Some(a) => a,
        None => {
            let capacity = crate::agent::capacity();
            let needed = connections.div_ceil(capacity) as usize;
            let count = run.local_agents.unwrap_or(needed).max(1);
            Agents::Local { count, exe: std::env::current_exe()? }
        }
    };
    Ok(RunSpec {
        plan,
        connections,
        rate: run.rate,
        hold_s: run.hold,
        agents,
        results: run.results.clone(),
        server_pids: run.server_pids.clone(),
        max_seconds: run.max_seconds,
        command_line: std::env::args().map(|a| shell_quote(&a)).collect::<Vec<_>>().join(" "),
        notes: run.notes.clone(),
    })
}

/// Quote an argument so the command line in SETUP.md can be pasted back into a shell.
fn shell_quote(arg: &str) -> String {
    let plain =
        !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@+%".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_flags_defaults() {
        let (chat, traffic, geo) = defaults();
        assert_eq!((chat.rooms, chat.members), (None, 10));
        assert_eq!((traffic.publish_rate, traffic.measure, traffic.body_bytes), (1000.0, 10, 64));
        assert_eq!((geo.tenant.as_str(), geo.fences, geo.subscribers, geo.seed), ("bench", 1000, 1, 1));
        assert_eq!((geo.step, geo.bbox, geo.batch), (30.0, Bbox::DEFAULT, 1));
    }

    #[test]
    fn a_geo_command_line_becomes_a_geo_plan() {
        let cli = Cli::parse_from([
            "rusher-loadgen",
            "geo",
            "--target",
            "127.0.0.1:4000",
            "--connections",
            "50",
            "--publish-rate",
            "500",
            "--measure",
            "3",
            "--fences",
            "50",
            "--subscribers",
            "2",
            "--tenant",
            "city",
            "--bbox",
            "-0.5,51.3,0.3,51.7",
            "--local-agents",
            "1",
            "--batch",
            "10",
        ]);
        let Command::Geo { run, traffic, geo } = cli.command else { panic!("the geo command") };
        let s =
            spec(ScenarioKind::Geo, &run, &defaults().0, &traffic, &geo, ShootoutMode::Echo, None).unwrap();
        assert_eq!(s.connections, 52, "movers and subscribers");
        assert_eq!(s.plan.topic_of(51).as_deref(), Some("geo:city"));
        assert_eq!(s.plan.scenario.traffic(), Some((50.0, 3, 0)), "500 updates/s in pushes of 10");
        let Scenario::Geo { publish_rate, measure_s, movers, subscribers, fences, bbox, batch, .. } =
            s.plan.scenario
        else {
            panic!("a geo scenario")
        };
        assert_eq!((publish_rate, measure_s, movers, subscribers, fences, batch), (500.0, 3, 50, 2, 50, 10));
        assert_eq!(bbox, Bbox { min_lon: -0.5, min_lat: 51.3, max_lon: 0.3, max_lat: 51.7 });

        let bad = |flag: &str, value: &str| {
            let mut g = geo.clone();
            match flag {
                "tenant" => g.tenant = value.into(),
                "step" => g.step = value.parse().unwrap(),
                "batch" => g.batch = value.parse().unwrap(),
                _ => g.fences = value.parse().unwrap(),
            }
            spec(ScenarioKind::Geo, &run, &defaults().0, &traffic, &g, ShootoutMode::Echo, None).unwrap_err()
        };
        assert!(bad("tenant", "").to_string().contains("--tenant"));
        assert!(bad("tenant", "a\nb").to_string().contains("--tenant"));
        assert!(bad("step", "0").to_string().contains("--step"));
        assert!(bad("fences", "2000000").to_string().contains("--fences"));
        assert!(bad("batch", "0").to_string().contains("--batch"));
        assert!(bad("batch", "1001").to_string().contains("--batch"));
        assert!(Cli::try_parse_from(["rusher-loadgen", "geo", "--target", "127.0.0.1:1", "--bbox", "1,2,3"])
            .is_err());
    }

    #[test]
    fn arguments_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("--rate"), "--rate");
        assert_eq!(shell_quote("127.0.0.2-127.0.0.9"), "127.0.0.2-127.0.0.9");
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}

/// Flags of the live-bets scenario.
#[derive(clap::Args, Debug, Clone)]
pub struct BetsArgs {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:4000")]
    pub target: SocketAddr,
    /// Market id (also the prefix of the users' names). [default: loadgen-PID]
    #[arg(long)]
    pub market: Option<String>,
    /// Connections placing bets, one user each.
    #[arg(long, default_value_t = 4)]
    pub bettors: usize,
    /// Bets per second, all bettors together.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Odds changes per second.
    #[arg(long, default_value_t = 5.0)]
    pub odds_rate: f64,
    /// Seconds of betting.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
}

impl BetsArgs {
    /// The run these flags describe.
    pub fn plan(&self) -> crate::bets::BetsPlan {
        crate::bets::BetsPlan {
            target: self.target,
            market: self.market.clone().unwrap_or_else(|| format!("loadgen-{}", std::process::id())),
            bettors: self.bettors,
            rate: self.rate,
            odds_rate: self.odds_rate,
            duration: std::time::Duration::from_secs(self.duration),
        }
    }
}
