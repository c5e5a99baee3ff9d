//! The coordinator ↔ agent protocol: JSON, one message per line, over TCP. The same protocol runs a
//! fleet of machines and the local agents one machine needs under a per-process file cap.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpStream};

use serde::{Deserialize, Serialize};

use crate::counters::Snapshot;
use crate::plan::Plan;

/// Longest line accepted, so a confused peer cannot make the other side buffer without bound.
const MAX_LINE: usize = 64 << 20;

/// Phases of a run, in order.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Open every connection at the planned rate.
    Connect,
    /// Geo: put every object at the start of its walk, and wait for the replies.
    Place,
    /// Run the scenario's traffic from this shared Unix time (µs).
    Measure { start_unix_us: u64 },
    /// Close everything and report.
    Teardown,
}

/// Coordinator → agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToAgent {
    /// This agent's share of the run (boxed: a plan is large, phases are small).
    Plan { plan: Box<Plan> },
    /// Start a phase.
    Phase { phase: Phase },
}

/// Agent → coordinator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToCoordinator {
    /// First message: who the agent is and how many connections it can hold.
    Hello { name: String, pid: u32, capacity: u64, sources: Vec<IpAddr> },
    /// The plan is accepted and the threads are up.
    Ready,
    /// Once a second: counters, and the latency samples of the last second (HdrHistogram V2,
    /// compressed, base64) for the time series and the progress display.
    Progress {
        counters: Snapshot,
        #[serde(default)]
        interval: Vec<(String, String)>,
    },
    /// A phase finished on every thread (`complete`) or its time ran out.
    PhaseDone { phase: String, complete: bool, counters: Snapshot },
    /// The end: counters and histograms (HdrHistogram V2, compressed, base64). Broadcast runs add,
    /// per message (by send time, Unix µs): copies received and the last copy's latency (µs).
    Report {
        counters: Snapshot,
        hists: Vec<(String, String)>,
        #[serde(default)]
        completions: Vec<(u64, u64, u64)>,
    },
    /// The agent cannot go on.
    Error { message: String },
}

/// Read one message from a split reader.
pub fn read_msg<T: for<'de> Deserialize<'de>>(reader: &mut BufReader<TcpStream>) -> io::Result<Option<T>> {
    let mut line = String::new();
    let n = reader.take(MAX_LINE as u64).read_line(&mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with('\n') {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "control message too long or cut short"));
    }
    serde_json::from_str(&line).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Write one message to a split writer.
pub fn write_msg<T: Serialize>(writer: &mut TcpStream, msg: &T) -> io::Result<()> {
    let mut text = serde_json::to_string(msg).map_err(io::Error::other)?;
    text.push('\n');
    writer.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json_lines() {
        let m = ToAgent::Phase { phase: Phase::Measure { start_unix_us: 42 } };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"type":"phase","phase":{"phase":"measure","start_unix_us":42}}"#);
        assert_eq!(serde_json::from_str::<ToAgent>(&text).unwrap(), m);
        let m = ToAgent::Phase { phase: Phase::Place };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"type":"phase","phase":{"phase":"place"}}"#);
        assert_eq!(serde_json::from_str::<ToAgent>(&text).unwrap(), m);
        let h = ToCoordinator::Hello { name: "a".into(), pid: 1, capacity: 5, sources: vec![] };
        let back: ToCoordinator = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }
}
