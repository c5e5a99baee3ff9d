//! `samples.jsonl`: one JSON object per second of a run, from the load generator's `/proc`
//! samplers. Server figures are sums over every `--server-pid`.

use serde::Deserialize;

use super::ParseError;

/// One second of a run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Sample {
    /// Milliseconds since the run started.
    pub t_ms: u64,
    /// Connections the load generator held open.
    pub connections: u64,
    /// Resident memory of the server processes, in KiB; absent without `--server-pid`.
    #[serde(default)]
    pub server_rss_kb: Option<u64>,
    /// Kernel slab memory of the whole machine (`/proc/meminfo` Slab), in KiB.
    #[serde(default)]
    pub slab_kb: Option<u64>,
    /// Busy share of all CPUs of the machine, in percent.
    #[serde(default)]
    pub cpu_busy_pct: Option<f64>,
    /// CPU used by the server processes, in percent of one CPU.
    #[serde(default)]
    pub server_cpu_pct: Option<f64>,
}

/// Parses JSON lines; blank lines are skipped, unknown fields ignored.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|source| ParseError::Json { line: i + 1, source }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_and_without_server_figures() {
        let text = r#"{"t_ms":1008,"connections":0,"server_rss_kb":257860,"slab_kb":268844,"sockstat":{"tcp_inuse":19925,"tcp_orphan":0,"tcp_tw":6,"tcp_alloc":19925,"tcp_mem_pages":694},"cpu_busy_pct":98.5,"server_cpu_pct":83.3}

{"t_ms":2014,"connections":11868,"slab_kb":352104}
"#;
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].t_ms, 1008);
        assert_eq!(samples[0].server_rss_kb, Some(257860));
        assert_eq!(samples[0].cpu_busy_pct, Some(98.5));
        assert_eq!(samples[1].connections, 11868);
        assert_eq!(samples[1].server_rss_kb, None);
        assert_eq!(samples[1].slab_kb, Some(352104));
    }

    #[test]
    fn a_bad_line_is_reported_by_number() {
        let err = parse("{\"t_ms\":1,\"connections\":0}\n{\"t_ms\":\"x\"}\n").unwrap_err();
        assert!(matches!(err, ParseError::Json { line: 2, .. }), "{err}");
    }
}
