//! Command-line flags → a validated [`RunSpec`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::coordinator::{Agents, RunSpec};
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
    /// The websocket-shootout protocol (any server that speaks it, e.g. `rusher --shootout` on
    /// /shootout): echo round trips, or broadcasts to every client with the time each copy arrived.
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
        /// Shootout mode, with --scenario shootout.
        #[arg(long, value_enum, default_value = "echo")]
        mode: ShootoutMode,
    },
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
    Chat,
    Shootout,
    Broadcast,
    Collab,
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
    /// Connections in the run (chat: derived from --rooms × --members when given).
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    /// Arrival rate, connections per second (open model).
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
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

/// Flag values for scenarios that do not take chat or traffic flags.
pub fn defaults() -> (ChatArgs, TrafficArgs) {
    (ChatArgs { rooms: None, members: 10 }, TrafficArgs { publish_rate: 1000.0, measure: 10, body_bytes: 64 })
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
    })
}

/// Build the run of a scenario command.
pub fn spec(
    kind: ScenarioKind,
    run: &RunArgs,
    chat: &ChatArgs,
    traffic: &TrafficArgs,
    mode: ShootoutMode,
    agents: Option<Agents>,
) -> anyhow::Result<RunSpec> {
    if run.rate <= 0.0 || !run.rate.is_finite() {
        anyhow::bail!("--rate must be a positive number");
    }
    let (scenario, per_topic, connections) = match kind {
        ScenarioKind::Connect => (Scenario::Connect, run.per_topic, run.connections),
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
    fn arguments_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("--rate"), "--rate");
        assert_eq!(shell_quote("127.0.0.2-127.0.0.9"), "127.0.0.2-127.0.0.9");
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
