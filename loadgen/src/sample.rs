//! System samples taken while a run is going: connections held, server memory and CPU, kernel
//! slab and TCP socket memory. They become the "connections over time" and "memory per
//! connection" charts of the report, so they are read from `/proc` on a fixed tick and written as
//! JSON lines as they are taken.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The kernel's TCP socket counters from `/proc/net/sockstat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SockStat {
    /// TCP sockets in use (established and listening, not TIME_WAIT).
    pub tcp_inuse: u64,
    /// Sockets closed by their process but still holding kernel state.
    pub tcp_orphan: u64,
    /// Sockets in TIME_WAIT.
    pub tcp_tw: u64,
    /// TCP sockets allocated, including those not yet accounted as in use.
    pub tcp_alloc: u64,
    /// Memory used by TCP buffers, in pages (compare with the `net.ipv4.tcp_mem` thresholds).
    pub tcp_mem_pages: u64,
}

/// One tick's view of the machine. Rates (`*_pct`) cover the time since the previous tick.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Milliseconds since the sampler started.
    pub t_ms: u64,
    /// Connections the load generator held at this tick.
    pub connections: u64,
    /// Resident memory of the server processes, summed; exited processes count as 0.
    pub server_rss_kb: u64,
    /// Kernel slab memory (`Slab:` in `/proc/meminfo`), where socket structures live.
    pub slab_kb: u64,
    /// TCP socket counters of the whole machine.
    pub sockstat: SockStat,
    /// Busy share of all CPUs of the machine, 0..=100.
    pub cpu_busy_pct: f64,
    /// CPU used by the server processes, summed, in % of one core (200 = two cores busy).
    pub server_cpu_pct: f64,
}

/// `VmRSS` in kB from `/proc/PID/status`; 0 when absent (kernel threads, zombies).
pub fn parse_vmrss_kb(status: &str) -> u64 {
    kb_field(status, "VmRSS")
}

/// `Slab` in kB from `/proc/meminfo`; 0 when absent.
pub fn parse_slab_kb(meminfo: &str) -> u64 {
    kb_field(meminfo, "Slab")
}

fn kb_field(text: &str, field: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// The `TCP: inuse N orphan N tw N alloc N mem N` line of `/proc/net/sockstat`; counters that
/// are missing read as 0.
pub fn parse_sockstat(text: &str) -> SockStat {
    let mut s = SockStat::default();
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("TCP:")) else {
        return s;
    };
    let mut words = line.split_whitespace();
    while let (Some(key), Some(value)) = (words.next(), words.next()) {
        let value = value.parse().unwrap_or(0);
        match key {
            "inuse" => s.tcp_inuse = value,
            "orphan" => s.tcp_orphan = value,
            "tw" => s.tcp_tw = value,
            "alloc" => s.tcp_alloc = value,
            "mem" => s.tcp_mem_pages = value,
            _ => {}
        }
    }
    s
}

/// `(busy_ticks, total_ticks)` of the aggregate `cpu` line of `/proc/stat`; `(0, 0)` if absent.
///
/// Total is user + nice + system + idle + iowait + irq + softirq + steal; guest time is already
/// inside user and nice, so adding it would count it twice. Busy is total minus idle and iowait.
pub fn parse_cpu_line(stat: &str) -> (u64, u64) {
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let f: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|v| v.parse().unwrap_or(0)).collect();
    let total: u64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// utime + stime, in clock ticks, from the single line of `/proc/PID/stat`; 0 if malformed.
///
/// The second field is the command name in parentheses, which may itself contain spaces and
/// parentheses, so the fields are counted from the *last* `)`.
pub fn parse_pid_cpu_ticks(stat_line: &str) -> u64 {
    let Some((_, rest)) = stat_line.rsplit_once(')') else {
        return 0;
    };
    // After the comm come field 3 (state) onwards; utime and stime are fields 14 and 15.
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = || fields.next().and_then(|v| v.parse::<u64>().ok());
    match (next(), next()) {
        (Some(utime), Some(stime)) => utime + stime,
        _ => 0,
    }
}

/// Raw counters read at one instant; samples are differences of two of these.
#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    cpu: (u64, u64),
    /// utime + stime per watched pid, in the order given to `start`; `None` when not running.
    pid_ticks: Vec<Option<u64>>,
    rss_kb: u64,
    slab_kb: u64,
    sockstat: SockStat,
}

/// Server RSS (summed over `pids`) and kernel slab, in kB, right now: the baseline that per-connection
/// memory is measured from.
pub fn memory_now(pids: &[u32]) -> (u64, u64) {
    let r = read_now(pids);
    (r.rss_kb, r.slab_kb)
}

fn read_now(pids: &[u32]) -> Reading {
    let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
    let mut rss_kb = 0;
    let mut pid_ticks = Vec::with_capacity(pids.len());
    for pid in pids {
        rss_kb += parse_vmrss_kb(&read(&format!("/proc/{pid}/status")));
        let ticks = fs::read_to_string(format!("/proc/{pid}/stat")).ok().map(|s| parse_pid_cpu_ticks(&s));
        pid_ticks.push(ticks);
    }
    Reading {
        at: Instant::now(),
        cpu: parse_cpu_line(&read("/proc/stat")),
        pid_ticks,
        rss_kb,
        slab_kb: parse_slab_kb(&read("/proc/meminfo")),
        sockstat: parse_sockstat(&read("/proc/net/sockstat")),
    }
}

fn make_sample(
    prev: &Reading,
    cur: &Reading,
    start: Instant,
    connections: u64,
    ticks_per_sec: f64,
) -> Sample {
    let (busy, total) = (cur.cpu.0.saturating_sub(prev.cpu.0), cur.cpu.1.saturating_sub(prev.cpu.1));
    let cpu_busy_pct = if total == 0 { 0.0 } else { 100.0 * busy as f64 / total as f64 };
    // A pid seen at only one of the two readings started or exited in between (or was reused),
    // so its lifetime ticks say nothing about this interval.
    let server_ticks: u64 = prev
        .pid_ticks
        .iter()
        .zip(&cur.pid_ticks)
        .map(|pair| match pair {
            (Some(p), Some(c)) => c.saturating_sub(*p),
            _ => 0,
        })
        .sum();
    let secs = cur.at.saturating_duration_since(prev.at).as_secs_f64();
    let server_cpu_pct = if secs > 0.0 { 100.0 * server_ticks as f64 / ticks_per_sec / secs } else { 0.0 };
    Sample {
        t_ms: u64::try_from(cur.at.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX),
        connections,
        server_rss_kb: cur.rss_kb,
        slab_kb: cur.slab_kb,
        sockstat: cur.sockstat,
        cpu_busy_pct,
        server_cpu_pct,
    }
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // USER_HZ is 100 on every Linux architecture; fall back to it if sysconf cannot say.
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A background thread that takes one `Sample` per tick, appends it as a JSON line to a file and
/// keeps it in memory. It stops on `stop`, when dropped, or by itself after `max_samples`.
pub struct Sampler {
    /// Dropping this ends the thread at its next wait, so a forgotten sampler does not outlive
    /// its run.
    stop_tx: mpsc::Sender<()>,
    handle: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling every `every` (typically one second) for at most `max_samples` ticks.
    /// `pids` are the server processes to watch (any of them may exit; it then counts as 0),
    /// `connections` is read at each tick, and `out` is created or truncated and receives one
    /// JSON object per line.
    pub fn start(
        pids: Vec<u32>,
        connections: Arc<AtomicU64>,
        out: PathBuf,
        every: Duration,
        max_samples: usize,
    ) -> io::Result<Sampler> {
        if every.is_zero() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "sampling interval must be positive"));
        }
        let file = BufWriter::new(File::create(&out)?);
        let (stop_tx, stop_rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("loadgen-sampler".to_owned())
            .spawn(move || run(&pids, &connections, file, &out, every, max_samples, &stop_rx))?;
        Ok(Sampler { stop_tx, handle })
    }

    /// True once the thread has ended, by `max_samples` or otherwise.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Stops sampling and returns every sample taken, in order.
    pub fn stop(self) -> Vec<Sample> {
        // A send error only means the thread already ended on its own.
        let _ = self.stop_tx.send(());
        self.handle.join().unwrap_or_else(|_| {
            tracing::error!("sampler thread panicked; its samples are lost");
            Vec::new()
        })
    }
}

fn run(
    pids: &[u32],
    connections: &AtomicU64,
    file: BufWriter<File>,
    path: &std::path::Path,
    every: Duration,
    max_samples: usize,
    stop_rx: &mpsc::Receiver<()>,
) -> Vec<Sample> {
    let ticks_per_sec = clock_ticks_per_sec();
    let start = Instant::now();
    let mut file = Some(file);
    let mut samples = Vec::new();
    let mut prev = read_now(pids);
    let mut next = start + every;
    while samples.len() < max_samples {
        match stop_rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
        let cur = read_now(pids);
        let sample = make_sample(&prev, &cur, start, connections.load(Ordering::Relaxed), ticks_per_sec);
        if let Some(f) = file.as_mut() {
            // Flushed per line so the progress of a long run can be followed with `tail -f`.
            let written = serde_json::to_writer(&mut *f, &sample)
                .map_err(io::Error::from)
                .and_then(|()| f.write_all(b"\n"))
                .and_then(|()| f.flush());
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), error = %e, "cannot write samples; keeping them in memory only");
                file = None;
            }
        }
        samples.push(sample);
        prev = cur;
        next += every;
        // After a stall (a suspended machine, a slow /proc), skip the missed ticks rather than
        // firing them back to back: samples close together only add noise.
        let now = Instant::now();
        if next < now {
            next = now + every;
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\trusher\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  123456 kB\n\
                          VmSize:\t  120000 kB\nVmHWM:\t   40000 kB\nVmRSS:\t   35124 kB\nRssAnon:\t   30000 kB\n";
    const MEMINFO: &str =
        "MemTotal:       24683656 kB\nMemFree:        20000000 kB\nSlab:             812344 kB\n\
                           SReclaimable:     300000 kB\nSUnreclaim:       512344 kB\n";
    const SOCKSTAT: &str =
        "sockets: used 2000123\nTCP: inuse 2000004 orphan 3 tw 17 alloc 2000010 mem 245760\n\
                            UDP: inuse 2 mem 4\nUDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 0\n";
    const STAT: &str = "cpu  1000 20 300 5000 100 10 5 7 50 0\ncpu0 500 10 150 2500 50 5 2 3 25 0\n\
                        cpu1 500 10 150 2500 50 5 3 4 25 0\nintr 123456\nctxt 98765\n";

    #[test]
    fn parses_proc_text() {
        assert_eq!(parse_vmrss_kb(STATUS), 35_124);
        assert_eq!(parse_vmrss_kb("Name:\tkthreadd\nState:\tS\n"), 0);
        assert_eq!(parse_slab_kb(MEMINFO), 812_344);
        assert_eq!(parse_slab_kb(""), 0);
        assert_eq!(
            parse_sockstat(SOCKSTAT),
            SockStat {
                tcp_inuse: 2_000_004,
                tcp_orphan: 3,
                tcp_tw: 17,
                tcp_alloc: 2_000_010,
                tcp_mem_pages: 245_760,
            }
        );
        assert_eq!(parse_sockstat("sockets: used 1\n"), SockStat::default());
        // total = 1000+20+300+5000+100+10+5+7, guest excluded; busy = total - idle - iowait
        assert_eq!(parse_cpu_line(STAT), (1_342, 6_442));
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4\n"), (0, 0));
    }

    #[test]
    fn pid_ticks_survive_hostile_command_names() {
        let fields = "S 1 1234 1234 0 -1 4194560 2000 0 0 0 1500 250 0 0 20 0 4 0 987654 1000000 8000";
        assert_eq!(parse_pid_cpu_ticks(&format!("1234 (rusher) {fields}")), 1_750);
        assert_eq!(parse_pid_cpu_ticks(&format!("1234 (a) b (c) ) ) d) {fields}")), 1_750);
        assert_eq!(parse_pid_cpu_ticks(&format!("1234 (x 1 2 3 4 5 6 7 8 9 10 11 12) {fields}")), 1_750);
        assert_eq!(parse_pid_cpu_ticks("1234 (truncated) S 1 2"), 0);
        assert_eq!(parse_pid_cpu_ticks("garbage"), 0);
    }

    #[test]
    fn samples_are_differences_of_readings() {
        let t0 = Instant::now();
        let prev = Reading {
            at: t0,
            cpu: (100, 1_000),
            pid_ticks: vec![Some(10), Some(5), None, Some(900)],
            rss_kb: 1,
            slab_kb: 1,
            sockstat: SockStat::default(),
        };
        let cur = Reading {
            at: t0 + Duration::from_secs(2),
            cpu: (150, 1_100),
            // Running, exited, started, restarted under the same pid.
            pid_ticks: vec![Some(210), None, Some(1_000), Some(3)],
            rss_kb: 4_096,
            slab_kb: 800,
            sockstat: SockStat { tcp_inuse: 7, ..SockStat::default() },
        };
        let s = make_sample(&prev, &cur, t0, 42, 100.0);
        assert_eq!(s.t_ms, 2_000);
        assert_eq!(s.connections, 42);
        assert_eq!(s.server_rss_kb, 4_096);
        assert_eq!(s.slab_kb, 800);
        assert_eq!(s.sockstat.tcp_inuse, 7);
        assert!((s.cpu_busy_pct - 50.0).abs() < 1e-9);
        // 200 ticks at 100 Hz over 2 s: one core fully busy.
        assert!((s.server_cpu_pct - 100.0).abs() < 1e-9);

        let same = make_sample(&cur, &cur, t0, 0, 100.0);
        assert_eq!((same.cpu_busy_pct, same.server_cpu_pct), (0.0, 0.0));
    }

    fn temp_path(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        std::env::temp_dir().join(format!("rusher-sample-{tag}-{}-{nanos}.jsonl", std::process::id()))
    }

    #[test]
    fn sampler_stops_by_itself_and_writes_json_lines() {
        let out = temp_path("bounded");
        let connections = Arc::new(AtomicU64::new(42));
        // Our own pid is alive; a pid above any pid_max never is.
        let pids = vec![std::process::id(), 999_999_999];
        let sampler =
            Sampler::start(pids, Arc::clone(&connections), out.clone(), Duration::from_millis(20), 4)
                .unwrap();
        // Keep this process busy so its CPU shows up in the samples.
        let watchdog = Instant::now() + Duration::from_secs(30);
        let mut spin = 0u64;
        while !sampler.is_finished() {
            assert!(Instant::now() < watchdog, "sampler did not stop by itself");
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let samples = sampler.stop();
        assert_eq!(samples.len(), 4);
        assert!(samples.windows(2).all(|w| w[0].t_ms < w[1].t_ms));
        assert!(samples.iter().all(|s| s.connections == 42));
        assert!(samples.iter().all(|s| s.server_rss_kb > 0));
        assert!(samples.iter().all(|s| (0.0..=100.0).contains(&s.cpu_busy_pct)));
        assert!(samples.iter().map(|s| s.server_cpu_pct).sum::<f64>() > 0.0);

        let text = fs::read_to_string(&out).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["connections"], 42);
        assert_eq!(lines[3]["t_ms"], samples[3].t_ms);
        assert!(lines[0]["sockstat"]["tcp_inuse"].is_u64());
        fs::remove_file(&out).unwrap();
    }

    #[test]
    fn stop_is_prompt() {
        let out = temp_path("prompt");
        let sampler =
            Sampler::start(vec![], Arc::new(AtomicU64::new(0)), out.clone(), Duration::from_secs(3_600), 10)
                .unwrap();
        let t = Instant::now();
        assert!(sampler.stop().is_empty());
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(fs::read_to_string(&out).unwrap(), "");
        fs::remove_file(&out).unwrap();

        let bad = Sampler::start(vec![], Arc::new(AtomicU64::new(0)), out, Duration::ZERO, 1);
        assert!(bad.is_err());
    }
}
