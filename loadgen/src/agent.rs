//! An agent: connects to its coordinator, takes a plan, runs the engine through the phases the
//! coordinator calls, and reports counters and histograms.

use std::io::{self, BufReader};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, Receiver};

use crate::control::{read_msg, write_msg, Phase, ToAgent, ToCoordinator};
use crate::counters::Counters;
use crate::engine::{Cmd, Engine, Event};
use crate::hist;

/// File descriptors an agent keeps for itself (control connection, epoll, stdio, ...).
const FD_RESERVE: u64 = 64;

/// How many connections this process can hold: the open-file limit (raised to the hard limit first)
/// minus a reserve.
pub fn capacity() -> u64 {
    let limit = raise_nofile_limit();
    limit.saturating_sub(FD_RESERVE).max(1)
}

/// Raise the soft open-file limit to the hard one; returns the soft limit in force (1024, the usual
/// default, if it cannot be read).
pub fn raise_nofile_limit() -> u64 {
    rusher_server::sys::raise_nofile_limit().unwrap_or(1024)
}

/// Run as an agent of the coordinator at `coordinator` until it says teardown or goes away.
pub fn run(coordinator: SocketAddr, name: String, sources: Vec<IpAddr>, capacity: u64) -> anyhow::Result<()> {
    let stream = connect_retrying(coordinator)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    write_msg(
        &mut writer,
        &ToCoordinator::Hello { name: name.clone(), pid: std::process::id(), capacity, sources },
    )?;

    let plan = match read_msg::<ToAgent>(&mut reader)? {
        Some(ToAgent::Plan { plan }) => *plan,
        other => anyhow::bail!("expected a plan from the coordinator, got {other:?}"),
    };
    if plan.count > capacity {
        let message =
            format!("share of {} connections exceeds this agent's capacity of {capacity}", plan.count);
        write_msg(&mut writer, &ToCoordinator::Error { message: message.clone() })?;
        anyhow::bail!(message);
    }
    let counters = Arc::new(Counters::default());
    let engine = Engine::start(plan, counters.clone())?;
    write_msg(&mut writer, &ToCoordinator::Ready)?;

    let commands = spawn_reader(reader);
    let threads = engine.threads();
    let mut waiting: Option<(Event, &'static str, usize)> = None;
    let tick = crossbeam_channel::tick(Duration::from_secs(1));
    loop {
        select! {
            recv(commands) -> msg => match msg {
                Ok(ToAgent::Phase { phase: Phase::Connect }) => {
                    engine.command(Cmd::Connect);
                    waiting = Some((Event::ConnectDone, "connect", 0));
                }
                Ok(ToAgent::Phase { phase: Phase::Place }) => {
                    engine.command(Cmd::Place);
                    waiting = Some((Event::PlaceDone, "place", 0));
                }
                Ok(ToAgent::Phase { phase: Phase::Measure { start_unix_us } }) => {
                    engine.command(Cmd::Measure { start_unix_us });
                    waiting = Some((Event::MeasureDone, "measure", 0));
                }
                Ok(ToAgent::Phase { phase: Phase::Teardown }) | Err(_) => break,
                Ok(ToAgent::Plan { .. }) => tracing::warn!(agent = %name, "ignoring a second plan"),
            },
            recv(engine.events) -> ev => {
                if let (Ok(ev), Some((want, phase, n))) = (ev, waiting.as_mut()) {
                    if ev == *want {
                        *n += 1;
                        if *n == threads {
                            let counters = counters.snapshot();
                            write_msg(&mut writer, &ToCoordinator::PhaseDone { phase: phase.to_string(), complete: true, counters })?;
                            waiting = None;
                        }
                    }
                }
            },
            recv(tick) -> _ => {
                let interval = encode_nonempty(&engine.take_interval());
                if write_msg(&mut writer, &ToCoordinator::Progress { counters: counters.snapshot(), interval }).is_err() {
                    break;
                }
            },
        }
    }
    let (hists, completion) = engine.finish();
    let encoded = hists.named().iter().map(|(n, h)| (n.to_string(), hist::encode(h))).collect();
    let completions = completion.into_iter().map(|(sent, (n, max))| (sent, n, max)).collect();
    let report = ToCoordinator::Report { counters: counters.snapshot(), hists: encoded, completions };
    // The coordinator may be gone already (it failed or gave up on us): nothing more to do then.
    let _ = write_msg(&mut writer, &report);
    Ok(())
}

fn encode_nonempty(h: &crate::engine::Hists) -> Vec<(String, String)> {
    h.named().iter().filter(|(_, h)| !h.is_empty()).map(|(n, h)| (n.to_string(), hist::encode(h))).collect()
}

fn connect_retrying(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut last = None;
    for _ in 0..50 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last.unwrap_or_else(|| io::Error::other("cannot reach the coordinator")))
}

fn spawn_reader(mut reader: BufReader<TcpStream>) -> Receiver<ToAgent> {
    let (tx, rx) = crossbeam_channel::bounded(16);
    std::thread::spawn(move || {
        while let Ok(Some(msg)) = read_msg::<ToAgent>(&mut reader) {
            if tx.send(msg).is_err() {
                break;
            }
        }
    });
    rx
}
