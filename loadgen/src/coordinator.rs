//! The coordinator: gathers agents (local child processes or a fleet), gives each its share, runs the
//! phases in lock-step, merges the agents' histograms exactly, and writes the result folder.

use std::io::{BufReader, IsTerminal, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use hdrhistogram::Histogram;

use crate::control::{read_msg, write_msg, Phase, ToAgent, ToCoordinator};
use crate::counters::Snapshot;
use crate::engine::{unix_us, PLACE_WAIT};
use crate::geo::setup::{self as fence_setup, FenceSetup};
use crate::hist;
use crate::plan::{Plan, Scenario};
use crate::results::{self, RunDir, Setup};
use crate::sample::Sampler;

/// Where the agents come from.
#[derive(Debug, Clone)]
pub enum Agents {
    /// Start this many agent processes on this machine (`exe agent ...`).
    Local { count: usize, exe: PathBuf },
    /// Wait for this many agents to connect to `listen`.
    Fleet { listen: SocketAddr, count: usize },
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Template for every agent's plan; `first`, `count` and the rates are filled per agent.
    pub plan: Plan,
    /// Connections in the whole run, and their arrival rate per second.
    pub connections: u64,
    pub rate: f64,
    /// Seconds to hold the connections after the ramp.
    pub hold_s: u64,
    pub agents: Agents,
    /// Root of the result folders; `None` writes none.
    pub results: Option<PathBuf>,
    /// Server processes whose memory and CPU are sampled.
    pub server_pids: Vec<u32>,
    /// Hard bound on the whole run.
    pub max_seconds: u64,
    /// The command line, for SETUP.md.
    pub command_line: String,
    /// Free-text notes for SETUP.md.
    pub notes: Vec<String>,
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    pub counters: Snapshot,
    pub hists: Vec<(String, Histogram<u64>)>,
    /// Seconds from the start of the connect phase until every agent reported it done.
    pub connect_seconds: f64,
    pub lost_agents: Vec<String>,
    pub run_dir: Option<PathBuf>,
    pub summary: serde_json::Value,
}

/// How long a geo or chat run waits, after the placement and after the measure's last reply, for events
/// or copies still on their way: until none arrived for `EVENTS_QUIET`, at most `EVENTS_WAIT`.
const EVENTS_QUIET: Duration = Duration::from_secs(2);
const EVENTS_WAIT: Duration = Duration::from_secs(10);

/// An agent's final report: counters, encoded histograms, broadcast completions.
type Report = (Snapshot, Vec<(String, String)>, Vec<(u64, u64, u64)>);

struct AgentConn {
    name: String,
    writer: TcpStream,
    capacity: u64,
    sources: Vec<IpAddr>,
    last: Snapshot,
    done: Option<String>,
    report: Option<Report>,
    lost: bool,
}

/// Run a whole load test.
pub fn run(spec: RunSpec) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + Duration::from_secs(spec.max_seconds.max(10));
    let (listener, count) = match &spec.agents {
        Agents::Local { count, .. } => (TcpListener::bind("127.0.0.1:0")?, *count),
        Agents::Fleet { listen, count } => {
            (TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?, *count)
        }
    };
    let addr = listener.local_addr()?;
    let mut children = Children(Vec::new());
    if let Agents::Local { exe, .. } = &spec.agents {
        for i in 0..count {
            let child = Command::new(exe)
                .args(["agent", "--coordinator", &addr.to_string(), "--name", &format!("local-{i}")])
                .stdin(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start agent {}", exe.display()))?;
            children.0.push(child);
        }
    } else {
        eprintln!("waiting for {count} agents on {addr}");
    }

    let (mut agents, rx) = accept_agents(&listener, count, deadline)?;
    assign(&spec, &mut agents)?;
    for a in &agents {
        if a.lost {
            bail!("agent {} went away before it was ready", a.name);
        }
    }
    let fences = match &spec.plan.scenario {
        Scenario::Geo { fences, tenant, .. } => {
            eprintln!("creating {fences} fences in geo:{tenant}");
            let setup = fence_setup::create_fences(&spec.plan, deadline)?;
            eprintln!(
                "{} fences created, {} replaced, on {} target(s) in {:.1} s",
                setup.created, setup.replaced, setup.targets, setup.seconds
            );
            Some(setup)
        }
        _ => None,
    };

    let open_gauge = Arc::new(AtomicU64::new(0));
    let run_dir = match &spec.results {
        Some(root) => Some(RunDir::create(root, spec.plan.scenario.name())?),
        None => None,
    };
    let sampler = match &run_dir {
        Some(dir) => Some(Sampler::start(
            spec.server_pids.clone(),
            open_gauge.clone(),
            dir.path.join("samples.jsonl"),
            Duration::from_secs(1),
            spec.max_seconds as usize + 60,
        )?),
        None => None,
    };

    let baseline = crate::sample::memory_now(&spec.server_pids);
    let log = match &run_dir {
        Some(dir) => Some(hist::IntervalLog::new(dir.path.join("latency.hlog"), SystemTime::now())?),
        None => None,
    };
    let mut progress = Progress::new(spec.connections, log);
    let connect_started = Instant::now();
    broadcast(&mut agents, &ToAgent::Phase { phase: Phase::Connect });
    let ramp = spec.connections as f64 / spec.rate.max(1.0);
    // A closed ramp (--max-pending) takes as long as the machine needs: only the run's bound applies.
    let connect_deadline = if spec.plan.max_pending > 0 {
        deadline
    } else {
        // Each retry may add its backoff (at most 9 s) and another three steps.
        let per_attempt = 3.0 * spec.plan.step_timeout_s as f64;
        let retries = f64::from(spec.plan.connect_retries) * (per_attempt + 9.0);
        deadline.min(Instant::now() + Duration::from_secs_f64(ramp + per_attempt + retries + 30.0))
    };
    wait_phase(&mut agents, &rx, "connect", connect_deadline, &mut progress, &open_gauge);
    let connect_seconds = connect_started.elapsed().as_secs_f64();

    // Geo: every agent puts its objects at the start of their walks, so the measure sees them move
    // rather than arrive (an object's first update enters every fence it starts in). Then the events
    // this caused are let through before anything is measured.
    let mut placement_seconds = 0.0;
    if let Scenario::Geo { subscribers, .. } = &spec.plan.scenario {
        let started = Instant::now();
        broadcast(&mut agents, &ToAgent::Phase { phase: Phase::Place });
        let until = deadline.min(Instant::now() + PLACE_WAIT + Duration::from_secs(10));
        wait_phase(&mut agents, &rx, "place", until, &mut progress, &open_gauge);
        placement_seconds = started.elapsed().as_secs_f64();
        let placed = match placement(&agents) {
            Ok(placed) => placed,
            Err(why) => {
                // As when the fence setup fails: the run stops, and leaves no result folder.
                progress.finish();
                drop(sampler.map(Sampler::stop));
                if let Some(dir) = &run_dir {
                    let _ = std::fs::remove_dir_all(&dir.path);
                }
                bail!(
                    "placing the objects at the start of their walks (after {placement_seconds:.1} s): {why}"
                );
            }
        };
        eprintln!("{placed} objects placed in {placement_seconds:.1} s");
        if *subscribers > 0 {
            let until = deadline.min(Instant::now() + EVENTS_WAIT);
            wait_quiet(&mut agents, &rx, until, &mut progress, &open_gauge, |c| c.placement_events);
        }
    }

    let hold_until = deadline.min(Instant::now() + Duration::from_secs(spec.hold_s));
    while Instant::now() < hold_until {
        pump(&mut agents, &rx, hold_until, &mut progress, &open_gauge);
    }

    // From the first intended send to the last reply.
    let mut measure_seconds = 0.0;
    if let Some((_, measure_s, _)) = spec.plan.scenario.traffic() {
        let start_unix_us = unix_us() + 500_000;
        broadcast(&mut agents, &ToAgent::Phase { phase: Phase::Measure { start_unix_us } });
        let until = deadline.min(Instant::now() + Duration::from_secs(measure_s + 40));
        wait_phase(&mut agents, &rx, "measure", until, &mut progress, &open_gauge);
        measure_seconds = unix_us().saturating_sub(start_unix_us) as f64 / 1e6;
    }
    // Copies may still be on their way after the last reply: a geo event, and in cluster mode a chat
    // message, which the room's owner acks before the other nodes deliver it.
    if fences.is_some() || matches!(spec.plan.scenario, Scenario::Chat { .. }) {
        let until = deadline.min(Instant::now() + EVENTS_WAIT);
        wait_quiet(&mut agents, &rx, until, &mut progress, &open_gauge, |c| c.delivered);
    }

    broadcast(&mut agents, &ToAgent::Phase { phase: Phase::Teardown });
    // Closing a million sockets at once keeps the kernel busy for a while: a minute, and 10 s more per
    // 100,000 connections, for the reports to come in.
    let until = Instant::now() + Duration::from_secs(60 + spec.connections / 10_000);
    while agents.iter().any(|a| a.report.is_none() && !a.lost) && Instant::now() < until {
        pump(&mut agents, &rx, until, &mut progress, &open_gauge);
    }
    progress.finish();
    let samples = sampler.map(Sampler::stop).unwrap_or_default();

    let mut counters = Snapshot::default();
    let mut merged: Vec<(String, Histogram<u64>)> = Vec::new();
    let mut lost_agents = Vec::new();
    let mut completion = crate::engine::Completion::new();
    for a in &agents {
        let Some((c, hists, completions)) = &a.report else {
            lost_agents.push(a.name.clone());
            counters.add(&a.last);
            continue;
        };
        counters.add(c);
        for (sent, n, max) in completions {
            let e = completion.entry(*sent).or_insert((0, 0));
            e.0 += n;
            e.1 = e.1.max(*max);
        }
        for (name, text) in hists {
            let h = hist::decode(text).with_context(|| format!("agent {} sent a bad histogram", a.name))?;
            match merged.iter_mut().find(|(n, _)| n == name) {
                Some((_, m)) => hist::merge(m, &h)?,
                None => merged.push((name.clone(), h)),
            }
        }
    }

    let mut summary = summarize(&spec, &counters, &merged, connect_seconds, &lost_agents, &samples, baseline);
    if !completion.is_empty() {
        // A message is complete when every joined connection got its copy; its time is the
        // latest copy's latency.
        let mut complete = hist::new_hist();
        let mut incomplete = 0u64;
        for (n, max) in completion.values() {
            if *n >= counters.joined {
                hist::record(&mut complete, *max);
            } else {
                incomplete += 1;
            }
        }
        summary["broadcast"] = serde_json::json!({
            "messages": completion.len(),
            "complete": complete.len(),
            "incomplete": incomplete,
            "subscribers": counters.joined,
            "every_copy_us": hist::percentiles(&complete),
        });
        merged.push(("every-copy".to_string(), complete));
    }
    if let Some(setup) = &fences {
        let find = |name: &str| merged.iter().find(|(n, _)| n == name).map(|(_, h)| h);
        let batch = spec.plan.scenario.batch();
        summary["geo"] = crate::geo::summary(
            setup,
            batch,
            &counters,
            placement_seconds,
            measure_seconds,
            find("ack"),
            find("event"),
        );
    }
    if let Some(dir) = &run_dir {
        write_results(dir, &spec, &agents, &summary, &merged, fences.as_ref())?;
    }
    Ok(Outcome {
        counters,
        hists: merged,
        connect_seconds,
        lost_agents,
        run_dir: run_dir.map(|d| d.path),
        summary,
    })
}

/// Local agent processes, stopped (by PID, through their handles) however the run ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // Agents exit by themselves after the teardown; give them a moment before ending them.
            for _ in 0..50 {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

type Inbox = Receiver<(usize, Option<ToCoordinator>)>;

fn accept_agents(
    listener: &TcpListener,
    count: usize,
    deadline: Instant,
) -> anyhow::Result<(Vec<AgentConn>, Inbox)> {
    listener.set_nonblocking(true)?;
    // Bounded: an agent that floods the coordinator blocks its own reader thread, nothing more.
    let (tx, rx) = crossbeam_channel::bounded(4096);
    let mut agents = Vec::new();
    let hello_by = deadline.min(Instant::now() + Duration::from_secs(60));
    while agents.len() < count {
        if Instant::now() > hello_by {
            bail!("only {} of {count} agents connected in time", agents.len());
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        stream.set_nonblocking(false)?;
        let _ = stream.set_nodelay(true);
        let mut reader = BufReader::new(stream.try_clone()?);
        let hello = read_msg::<ToCoordinator>(&mut reader)?;
        let Some(ToCoordinator::Hello { name, pid, capacity, sources }) = hello else {
            bail!("an agent did not introduce itself: {hello:?}");
        };
        tracing::info!(agent = %name, pid, capacity, "agent connected");
        let idx = agents.len();
        let tx = tx.clone();
        std::thread::spawn(move || loop {
            match read_msg::<ToCoordinator>(&mut reader) {
                Ok(Some(m)) => {
                    if tx.send((idx, Some(m))).is_err() {
                        break;
                    }
                }
                _ => {
                    let _ = tx.send((idx, None));
                    break;
                }
            }
        });
        agents.push(AgentConn {
            name,
            writer: stream,
            capacity,
            sources,
            last: Snapshot::default(),
            done: None,
            report: None,
            lost: false,
        });
    }
    Ok((agents, rx))
}

/// Give each agent its share, proportional to capacity, and wait until all are ready.
fn assign(spec: &RunSpec, agents: &mut [AgentConn]) -> anyhow::Result<()> {
    let total_cap: u64 = agents.iter().map(|a| a.capacity).sum();
    if total_cap < spec.connections {
        bail!(
            "{} agents can hold {total_cap} connections in all, fewer than {}: add agents (--local-agents) or raise their open-file limit",
            agents.len(),
            spec.connections
        );
    }
    let n = agents.len() as u64;
    let mut first = 0;
    for (i, a) in agents.iter_mut().enumerate() {
        let count = spec.connections / n + u64::from((i as u64) < spec.connections % n);
        if count > a.capacity {
            bail!("agent {} can hold {} connections, its share is {count}: add agents", a.name, a.capacity);
        }
        let share = count as f64 / spec.connections.max(1) as f64;
        // The publish rate follows the connections that send (all but geo subscribers).
        let senders = spec.plan.senders(0, 1, spec.connections).max(1);
        let send_share = spec.plan.senders(first, 1, count) as f64 / senders as f64;
        let mut plan = spec.plan.clone();
        plan.first = first;
        plan.count = count;
        plan.rate = spec.rate * share;
        plan.scenario.scale_rate(send_share);
        if !a.sources.is_empty() {
            plan.sources = a.sources.clone();
        }
        first += count;
        write_msg(&mut a.writer, &ToAgent::Plan { plan: Box::new(plan) })?;
    }
    Ok(())
}

fn broadcast(agents: &mut [AgentConn], msg: &ToAgent) {
    for a in agents.iter_mut().filter(|a| !a.lost) {
        a.done = None;
        if write_msg(&mut a.writer, msg).is_err() {
            lost(a, "its control connection broke");
        }
    }
}

fn lost(a: &mut AgentConn, why: &str) {
    if !a.lost {
        a.lost = true;
        eprintln!("\nagent {} lost: {why}", a.name);
    }
}

/// Handle agent messages until `until`.
fn pump(agents: &mut [AgentConn], rx: &Inbox, until: Instant, progress: &mut Progress, open: &AtomicU64) {
    let wait = until.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
    match rx.recv_timeout(wait) {
        Ok((i, Some(msg))) => match msg {
            ToCoordinator::Progress { counters, interval } => {
                agents[i].last = counters;
                progress.absorb(&interval);
            }
            ToCoordinator::PhaseDone { phase, counters, .. } => {
                agents[i].last = counters;
                agents[i].done = Some(phase);
            }
            ToCoordinator::Report { counters, hists, completions } => {
                agents[i].report = Some((counters, hists, completions))
            }
            ToCoordinator::Error { message } => lost(&mut agents[i], &message),
            ToCoordinator::Hello { .. } | ToCoordinator::Ready => {}
        },
        Ok((i, None)) => {
            if agents[i].report.is_none() {
                lost(&mut agents[i], "it disconnected");
            }
        }
        Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
    }
    let mut total = Snapshot::default();
    for a in agents.iter() {
        total.add(&a.last);
    }
    open.store(total.open, Ordering::Relaxed);
    progress.show(&total, agents.iter().filter(|a| a.lost).count());
}

fn wait_phase(
    agents: &mut [AgentConn],
    rx: &Inbox,
    phase: &str,
    until: Instant,
    progress: &mut Progress,
    open: &AtomicU64,
) {
    while Instant::now() < until && agents.iter().any(|a| !a.lost && a.done.as_deref() != Some(phase)) {
        pump(agents, rx, until, progress, open);
    }
    for a in agents.iter() {
        if !a.lost && a.done.as_deref() != Some(phase) {
            eprintln!("\nagent {} did not finish the {phase} phase in time", a.name);
        }
    }
}

/// The objects the agents placed, or why the placement failed: an agent that did not finish it in
/// time, or updates refused or unanswered. Lost agents are left out (they are reported as lost).
fn placement(agents: &[AgentConn]) -> Result<u64, String> {
    let mut total = Snapshot::default();
    for a in agents.iter().filter(|a| !a.lost) {
        total.add(&a.last);
    }
    let late: Vec<&str> = agents
        .iter()
        .filter(|a| !a.lost && a.done.as_deref() != Some("place"))
        .map(|a| a.name.as_str())
        .collect();
    let outcome = crate::geo::placement_outcome(&total);
    if !late.is_empty() {
        let counts = outcome.err().map(|e| format!(": {e}")).unwrap_or_default();
        return Err(format!(
            "agent(s) {} did not have every reply within {} s{counts}",
            late.join(", "),
            PLACE_WAIT.as_secs()
        ));
    }
    outcome.map(|()| total.placed)
}

/// Pump until the counter `count` did not move for [`EVENTS_QUIET`], or `until`.
fn wait_quiet(
    agents: &mut [AgentConn],
    rx: &Inbox,
    until: Instant,
    progress: &mut Progress,
    open: &AtomicU64,
    count: fn(&Snapshot) -> u64,
) {
    let total = |agents: &[AgentConn]| agents.iter().map(|a| count(&a.last)).sum::<u64>();
    let (mut last, mut since) = (total(agents), Instant::now());
    while Instant::now() < until && since.elapsed() < EVENTS_QUIET {
        pump(agents, rx, until, progress, open);
        let now = total(agents);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

/// The one-line progress display (rewritten in place on a terminal, a line every 5 s otherwise),
/// and the latency time series: the agents' per-second histograms, merged and appended to an
/// HdrHistogram interval log once a second.
struct Progress {
    started: Instant,
    last_shown: Instant,
    last_joined: u64,
    last_at: Instant,
    target: u64,
    tty: bool,
    /// Every sample so far, by histogram name.
    so_far: Vec<(String, Histogram<u64>)>,
    /// Samples since the last interval-log line.
    pending: Vec<(String, Histogram<u64>)>,
    last_logged: Instant,
    log: Option<hist::IntervalLog>,
}

impl Progress {
    fn new(target: u64, log: Option<hist::IntervalLog>) -> Self {
        let now = Instant::now();
        Progress {
            started: now,
            last_shown: now,
            last_joined: 0,
            last_at: now,
            target,
            tty: std::io::stderr().is_terminal(),
            so_far: Vec::new(),
            pending: Vec::new(),
            last_logged: now,
            log,
        }
    }

    fn absorb(&mut self, interval: &[(String, String)]) {
        for (name, text) in interval {
            let Ok(h) = hist::decode(text) else {
                tracing::warn!(%name, "an agent sent an undecodable interval histogram");
                continue;
            };
            for set in [&mut self.so_far, &mut self.pending] {
                match set.iter_mut().find(|(n, _)| n == name) {
                    Some((_, m)) => {
                        let _ = hist::merge(m, &h);
                    }
                    None => set.push((name.clone(), h.clone())),
                }
            }
        }
    }

    fn log_interval(&mut self) {
        if self.last_logged.elapsed() < Duration::from_secs(1) {
            return;
        }
        let start = self.last_logged.duration_since(self.started);
        let duration = self.last_logged.elapsed();
        self.last_logged = Instant::now();
        if let Some(log) = &mut self.log {
            for (name, h) in self.pending.iter().filter(|(_, h)| !h.is_empty()) {
                if let Err(e) = log.append(name, start, duration, h) {
                    tracing::warn!(error = %e, "cannot write the interval log");
                }
            }
        }
        for (_, h) in &mut self.pending {
            h.reset();
        }
    }

    /// p50 and p99 so far, in ms, of the most telling histogram: delivery, else event, else ack, else
    /// establish.
    fn latency_so_far(&self) -> String {
        for name in ["delivery", "event", "ack", "establish"] {
            if let Some((_, h)) = self.so_far.iter().find(|(n, h)| n == name && !h.is_empty()) {
                let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
                return format!(" | {name} p50 {:.2} ms p99 {:.2} ms", ms(0.5), ms(0.99));
            }
        }
        String::new()
    }

    fn show(&mut self, c: &Snapshot, lost: usize) {
        self.log_interval();
        let every = if self.tty { Duration::from_millis(500) } else { Duration::from_secs(5) };
        if self.last_shown.elapsed() < every {
            return;
        }
        let dt = self.last_at.elapsed().as_secs_f64().max(1e-3);
        let rate = (c.joined.saturating_sub(self.last_joined)) as f64 / dt;
        self.last_joined = c.joined;
        self.last_at = Instant::now();
        self.last_shown = Instant::now();
        let line = format!(
            "[{:>5.0}s] open {}/{} joined {} ({:.0}/s) failed {} published {} acked {} delivered {}{}{}",
            self.started.elapsed().as_secs_f64(),
            c.open,
            self.target,
            c.joined,
            rate,
            c.failed(),
            c.published,
            c.acked,
            c.delivered,
            self.latency_so_far(),
            if lost > 0 { format!(" LOST AGENTS {lost}") } else { String::new() }
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{line:<140}");
        } else {
            let _ = writeln!(err, "{line}");
        }
    }

    fn finish(&mut self) {
        self.last_logged -= Duration::from_secs(1);
        self.log_interval();
        if self.tty {
            eprintln!();
        }
    }
}

fn summarize(
    spec: &RunSpec,
    c: &Snapshot,
    hists: &[(String, Histogram<u64>)],
    connect_seconds: f64,
    lost: &[String],
    samples: &[crate::sample::Sample],
    (rss0_kb, slab0_kb): (u64, u64),
) -> serde_json::Value {
    let percentiles: serde_json::Map<String, serde_json::Value> = hists
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(n, h)| (n.clone(), serde_json::to_value(hist::percentiles(h)).unwrap_or_default()))
        .collect();
    // The sample with the most connections held, late in the hold when several tie.
    let peak = samples.iter().rev().max_by_key(|s| s.connections);
    let per_conn = |now_kb: u64, base_kb: u64| -> Option<f64> {
        let p = peak?;
        (p.connections > 0).then(|| (now_kb as f64 - base_kb as f64) * 1024.0 / p.connections as f64)
    };
    // The marginal cost: growth between the first sample past 10% of the peak and the peak, which
    // leaves out one-time costs (allocator arenas, database caches) that the all-in figure includes.
    let marginal = |f: fn(&crate::sample::Sample) -> u64| -> Option<f64> {
        let p = peak?;
        let early =
            samples.iter().find(|s| s.connections * 10 >= p.connections && s.connections < p.connections)?;
        // With too short a ramp between the two samples the figure is mostly noise.
        let dc = (p.connections - early.connections) as f64;
        (dc * 2.0 >= p.connections as f64).then(|| (f(p) as f64 - f(early) as f64) * 1024.0 / dc)
    };
    serde_json::json!({
        "scenario": spec.plan.scenario,
        "connections": spec.connections,
        "rate": spec.rate,
        "hold_s": spec.hold_s,
        "targets": spec.plan.targets,
        "sources": spec.plan.sources.len(),
        "agents": match &spec.agents { Agents::Local { count, .. } => *count, Agents::Fleet { count, .. } => *count },
        "lost_agents": lost,
        "connect_seconds": connect_seconds,
        "counters": c,
        "latency_us": percentiles,
        "peak_connections": peak.map(|s| s.connections),
        "server_rss_bytes_per_connection": if spec.server_pids.is_empty() { None } else { peak.and_then(|p| per_conn(p.server_rss_kb, rss0_kb)) },
        "kernel_slab_bytes_per_connection": peak.and_then(|p| per_conn(p.slab_kb, slab0_kb)),
        "server_rss_bytes_per_connection_marginal": if spec.server_pids.is_empty() { None } else { marginal(|s| s.server_rss_kb) },
        "kernel_slab_bytes_per_connection_marginal": marginal(|s| s.slab_kb),
        "server_rss_kb": { "before": rss0_kb, "peak": peak.map(|p| p.server_rss_kb) },
        "kernel_slab_kb": { "before": slab0_kb, "peak": peak.map(|p| p.slab_kb) },
    })
}

fn write_results(
    dir: &RunDir,
    spec: &RunSpec,
    agents: &[AgentConn],
    summary: &serde_json::Value,
    hists: &[(String, Histogram<u64>)],
    fences: Option<&FenceSetup>,
) -> anyhow::Result<()> {
    let mut extra = vec![
        (
            "agents".to_string(),
            agents
                .iter()
                .map(|a| format!("{} (capacity {})", a.name, a.capacity))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("targets".to_string(), format!("{:?}", spec.plan.targets)),
        ("source addresses".to_string(), spec.plan.sources.len().to_string()),
    ];
    if let (Some(f), Scenario::Geo { tenant, movers, subscribers, step_m, seed, bbox, .. }) =
        (fences, &spec.plan.scenario)
    {
        let batch = spec.plan.scenario.batch();
        let per_connection = if batch == 1 {
            "one per connection, one `location` push per update".to_string()
        } else {
            format!("{batch} per connection, one `locations` push of {batch} updates")
        };
        extra.push(("geo tenant".to_string(), format!("geo:{tenant}")));
        extra.push((
            "geo objects".to_string(),
            format!(
                "{} ({per_connection}), random walks of {step_m} m per update in lon {}..{}, lat {}..{}, seed {seed}",
                movers * batch,
                bbox.min_lon,
                bbox.max_lon,
                bbox.min_lat,
                bbox.max_lat
            ),
        ));
        let g = &summary["geo"];
        extra.push((
            "geo placement".to_string(),
            format!(
                "before the measure, each connection sent its objects once at the start of their walks (ts = the time sent) and waited for the replies: {} placed in {:.1} s; the {} events this caused (ts before the measure's start) are left out of the figures",
                g["objects_placed"],
                g["placement_seconds"].as_f64().unwrap_or(0.0),
                g["placement_events"]
            ),
        ));
        extra.push((
            "geo subscribers".to_string(),
            format!("{subscribers}, joined with {{\"fences\": \"*\"}}"),
        ));
        extra.push((
            "geo fences".to_string(),
            format!(
                "{} per target (half circles of {}–{} m, half polygons), detect enter/exit/cross; {} created, {} replaced in {:.1} s",
                f.fences,
                crate::geo::walk::RADIUS_M.0,
                crate::geo::walk::RADIUS_M.1,
                f.created,
                f.replaced,
                f.seconds
            ),
        ));
    }
    if let Some(lost) = summary["lost_agents"].as_array().filter(|l| !l.is_empty()) {
        extra.push(("LOST AGENTS".to_string(), format!("{lost:?}")));
    }
    let setup = Setup {
        command_lines: vec![spec.command_line.clone()],
        notes: spec.notes.clone(),
        server_pids: spec.server_pids.clone(),
        extra,
    };
    results::write_setup(dir, &setup)?;
    results::write_json(dir, "summary", summary)?;
    for (name, h) in hists.iter().filter(|(_, h)| !h.is_empty()) {
        results::write_hgrm_file(dir, name, h, 1000.0)?;
    }
    Ok(())
}
