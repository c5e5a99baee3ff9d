//! The results folder of one run: `results/<YYYY-MM-DD>-<scenario>/` with `SETUP.md` (machine,
//! kernel, commit, limits, sysctls, command lines), JSON summaries and raw histograms, so that a
//! reviewer can trust a run without asking how it was made.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use crate::hist;

/// How many same-day runs of one scenario get their own folder (`-2` .. `-N`) before `create`
/// gives up; far more than anyone runs by hand, small enough to fail fast on a broken root.
pub const MAX_RUNS_PER_DAY: u32 = 10_000;

/// The kernel settings that bound how many connections a machine can hold, in the order
/// `SETUP.md` lists them.
pub const SYSCTLS: [&str; 10] = [
    "fs.file-max",
    "fs.nr_open",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_mem",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.netfilter.nf_conntrack_max",
    "net.core.netdev_max_backlog",
];

/// The folder holding everything one run leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    /// The folder; it exists once `RunDir::create` has returned it.
    pub path: PathBuf,
}

impl RunDir {
    /// Creates `root/<YYYY-MM-DD>-<scenario>/` (UTC date), or `...-2`, `...-3`, ... when earlier
    /// runs of the day already took that name. Characters of `scenario` other than ASCII letters,
    /// digits, `-` and `_` become `-`, so the name is always a single path component.
    pub fn create(root: &Path, scenario: &str) -> io::Result<RunDir> {
        Self::create_at(root, scenario, SystemTime::now())
    }

    fn create_at(root: &Path, scenario: &str, now: SystemTime) -> io::Result<RunDir> {
        fs::create_dir_all(root)?;
        let (y, m, d) = civil_from_days(unix_secs(now) / 86_400);
        let base = format!("{y:04}-{m:02}-{d:02}-{}", sanitize(scenario));
        for n in 1..=MAX_RUNS_PER_DAY {
            let name = if n == 1 { base.clone() } else { format!("{base}-{n}") };
            let path = root.join(name);
            // create_dir, not exists() + create: two runs starting together must not share.
            match fs::create_dir(&path) {
                Ok(()) => return Ok(RunDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already holds {MAX_RUNS_PER_DAY} runs named {base}", root.display()),
        ))
    }
}

/// What the load generator knows about a run that the machine cannot tell: how it was started.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Every command line involved (load generator, server, agents), one per entry.
    pub command_lines: Vec<String>,
    /// Free-form remarks, one bullet each.
    pub notes: Vec<String>,
    /// Server processes under test; their command lines are read from `/proc` when still alive.
    pub server_pids: Vec<u32>,
    /// Further key/value facts (scenario parameters, peer versions, ...), in order.
    pub extra: Vec<(String, String)>,
}

/// Writes `SETUP.md` into the run folder: UTC date, host, CPU, memory, kernel, the git commit of
/// the working directory, open-file limits, the connection-related sysctls, then the command
/// lines, extra facts and notes from `setup`. Facts that cannot be read show as "unknown"/"n/a".
pub fn write_setup(run: &RunDir, setup: &Setup) -> io::Result<()> {
    write_setup_with_git_dir(run, setup, Path::new("."))
}

fn write_setup_with_git_dir(run: &RunDir, setup: &Setup, git_dir: &Path) -> io::Result<()> {
    let facts = MachineFacts::gather(SystemTime::now(), git_dir, &setup.server_pids);
    write_atomically(&run.path.join("SETUP.md"), render_setup(run, setup, &facts).as_bytes())
}

/// Writes `value` pretty-printed to `<name>` in the run folder, adding `.json` if `name` lacks it.
pub fn write_json(run: &RunDir, name: &str, value: &serde_json::Value) -> io::Result<()> {
    let path = run.path.join(file_name(name, ".json")?);
    let mut text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    text.push('\n');
    write_atomically(&path, text.as_bytes())
}

/// Writes the histogram's percentile distribution (HdrHistogram `.hgrm` text, values divided by
/// `unit_scale`) to `<name>` in the run folder, adding `.hgrm` if `name` lacks it.
pub fn write_hgrm_file(run: &RunDir, name: &str, h: &Histogram<u64>, unit_scale: f64) -> io::Result<()> {
    let path = run.path.join(file_name(name, ".hgrm")?);
    let mut text = Vec::new();
    hist::write_hgrm(h, &mut text, unit_scale)?;
    write_atomically(&path, &text)
}

/// Rejects names that would escape the run folder and adds the extension when missing.
fn file_name(name: &str, ext: &str) -> io::Result<String> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(if name.ends_with(ext) { name.to_owned() } else { format!("{name}{ext}") })
}

/// Writes through a temporary file and a rename, so a report script never reads half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)
}

fn sanitize(scenario: &str) -> String {
    let s: String = scenario
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    if s.is_empty() {
        "run".to_owned()
    } else {
        s
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    // A clock before 1970 is broken; dating the run 1970-01-01 makes that visible.
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Gregorian (year, month, day) of a count of days since 1970-01-01, after Howard Hinnant's
/// `civil_from_days`, valid for every day a `u64` of seconds can name.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of each 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

fn utc_timestamp(t: SystemTime) -> String {
    let secs = unix_secs(t);
    let (y, m, d) = civil_from_days(secs / 86_400);
    let s = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", s / 3_600, s / 60 % 60, s % 60)
}

/// Everything `SETUP.md` reports about the machine, gathered before rendering so that rendering
/// stays a pure function.
#[derive(Debug, Clone)]
struct MachineFacts {
    utc: String,
    hostname: Option<String>,
    cpu_model: Option<String>,
    cpu_count: usize,
    mem_total_kb: Option<u64>,
    kernel: Option<String>,
    commit: Option<String>,
    /// (soft, hard); `None` stands for RLIM_INFINITY.
    nofile: Option<(Option<u64>, Option<u64>)>,
    sysctls: Vec<(&'static str, Option<String>)>,
    /// (pid, command line), `None` when the process is gone.
    servers: Vec<(u32, Option<String>)>,
}

impl MachineFacts {
    fn gather(now: SystemTime, git_dir: &Path, pids: &[u32]) -> MachineFacts {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let (cpu_model, mut cpu_count) = parse_cpuinfo(&cpuinfo);
        if cpu_count == 0 {
            cpu_count = std::thread::available_parallelism().map_or(0, usize::from);
        }
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        MachineFacts {
            utc: utc_timestamp(now),
            hostname: read_trimmed("/proc/sys/kernel/hostname"),
            cpu_model,
            cpu_count,
            mem_total_kb: meminfo_kb(&meminfo, "MemTotal"),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            commit: git_commit(git_dir),
            nofile: nofile_limits(),
            sysctls: SYSCTLS.iter().map(|&name| (name, read_sysctl(name))).collect(),
            servers: pids.iter().map(|&pid| (pid, read_cmdline(pid))).collect(),
        }
    }
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// Reads `/proc/sys/<name with dots as slashes>`, with runs of whitespace (the tabs in
/// `tcp_rmem` and friends) collapsed to single spaces.
fn read_sysctl(name: &str) -> Option<String> {
    let raw = fs::read_to_string(Path::new("/proc/sys").join(name.replace('.', "/"))).ok()?;
    let value = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    (!value.is_empty()).then_some(value)
}

fn read_cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

/// `(model name, logical CPU count)` from `/proc/cpuinfo`. ARM kernels have no "model name", so
/// the other keys they use for it are tried too.
fn parse_cpuinfo(text: &str) -> (Option<String>, usize) {
    let mut model = None;
    let mut count = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => count += 1,
            "model name" | "Hardware" | "cpu model" | "Model" if model.is_none() && !value.is_empty() => {
                model = Some(value.to_owned());
            }
            _ => {}
        }
    }
    (model, count)
}

/// The value in kB of one `/proc/meminfo` field (`MemTotal:   24536789 kB`).
fn meminfo_kb(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `git rev-parse HEAD` in `dir`, with " (dirty)" when the work tree has uncommitted changes.
fn git_commit(dir: &Path) -> Option<String> {
    let head = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(dir).output().ok()?;
    if !head.status.success() {
        return None;
    }
    let commit = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    if commit.is_empty() {
        return None;
    }
    // --no-optional-locks: a status query must not take the index lock from a concurrent git
    // command in the same checkout.
    let status = Command::new("git")
        .args(["--no-optional-locks", "status", "--porcelain"])
        .current_dir(dir)
        .output()
        .ok();
    let dirty = status.is_some_and(|s| s.status.success() && !s.stdout.trim_ascii().is_empty());
    Some(if dirty { format!("{commit} (dirty)") } else { commit })
}

fn nofile_limits() -> Option<(Option<u64>, Option<u64>)> {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct we pass, which is valid and exclusively borrowed.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    if rc != 0 {
        return None;
    }
    // rlim_t is u64 on 64-bit Linux but narrower on some 32-bit targets, so the cast is kept.
    #[allow(clippy::unnecessary_cast)]
    let finite = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v as u64);
    Some((finite(rl.rlim_cur), finite(rl.rlim_max)))
}

/// Makes a value safe inside a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn or_unknown(v: &Option<String>) -> String {
    v.as_deref().map_or_else(|| "unknown".to_owned(), cell)
}

fn render_setup(run: &RunDir, setup: &Setup, facts: &MachineFacts) -> String {
    let mut md = String::new();
    let title = run
        .path
        .file_name()
        .map_or_else(|| run.path.display().to_string(), |n| n.to_string_lossy().into_owned());
    // Writing to a String cannot fail; the results are ignored for that reason alone.
    let _ = writeln!(md, "# Setup: {title}\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| Date (UTC) | {} |", facts.utc);
    let _ = writeln!(md, "| Host | {} |", or_unknown(&facts.hostname));
    let _ = writeln!(md, "| CPU | {} × {} |", or_unknown(&facts.cpu_model), facts.cpu_count);
    let memory = facts.mem_total_kb.map_or_else(
        || "unknown".to_owned(),
        |kb| format!("{:.1} GiB (MemTotal {kb} kB)", kb as f64 / (1024.0 * 1024.0)),
    );
    let _ = writeln!(md, "| Memory | {memory} |");
    let _ = writeln!(md, "| Kernel | {} |", or_unknown(&facts.kernel));
    let _ = writeln!(md, "| Commit | {} |", or_unknown(&facts.commit));
    let limit = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
    let nofile = facts.nofile.map_or_else(
        || "unknown".to_owned(),
        |(soft, hard)| format!("soft {}, hard {}", limit(soft), limit(hard)),
    );
    let _ = writeln!(md, "| Open files (RLIMIT_NOFILE) | {nofile} |");

    let _ = writeln!(md, "\n## Sysctls\n\n| sysctl | value |\n|---|---|");
    for (name, value) in &facts.sysctls {
        let value = value.as_deref().map_or_else(|| "n/a".to_owned(), cell);
        let _ = writeln!(md, "| {name} | {value} |");
    }

    let _ = writeln!(md, "\n## Server processes\n");
    if facts.servers.is_empty() {
        let _ = writeln!(md, "(none given)");
    }
    for (pid, cmdline) in &facts.servers {
        let cmd = cmdline.as_deref().unwrap_or("(not running)");
        let _ = writeln!(md, "- {pid}: `{}`", cmd.replace('`', "'"));
    }

    let _ = writeln!(md, "\n## Command lines\n");
    let body = setup.command_lines.join("\n");
    let fence = "`".repeat(longest_backtick_run(&body).max(2) + 1);
    let _ = writeln!(md, "{fence}text\n{body}\n{fence}");

    let _ = writeln!(md, "\n## Extra\n");
    if setup.extra.is_empty() {
        let _ = writeln!(md, "(none)");
    } else {
        let _ = writeln!(md, "| key | value |\n|---|---|");
        for (k, v) in &setup.extra {
            let _ = writeln!(md, "| {} | {} |", cell(k), cell(v));
        }
    }

    let _ = writeln!(md, "\n## Notes\n");
    if setup.notes.is_empty() {
        let _ = writeln!(md, "(none)");
    }
    for note in &setup.notes {
        let _ = writeln!(md, "- {}", note.replace('\n', "\n  "));
    }
    md
}

/// A code fence must be longer than any backtick run inside it or the block ends early.
fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
            let p = std::env::temp_dir().join(format!("rusher-results-{tag}-{}-{nanos}", std::process::id()));
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
        assert_eq!(civil_from_days(20_088), (2024, 12, 31));
        assert_eq!(utc_timestamp(UNIX_EPOCH + Duration::from_secs(1_709_210_096)), "2024-02-29 12:34:56 UTC");
    }

    #[test]
    fn run_folders_are_dated_and_deduplicated() {
        let tmp = TempDir::new("naming");
        let root = tmp.0.join("results");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        let a = RunDir::create_at(&root, "chat", t).unwrap();
        let b = RunDir::create_at(&root, "chat", t).unwrap();
        let c = RunDir::create_at(&root, "chat", t).unwrap();
        let other = RunDir::create_at(&root, "../echo 1", t).unwrap();
        assert_eq!(a.path, root.join("2024-02-29-chat"));
        assert_eq!(b.path, root.join("2024-02-29-chat-2"));
        assert_eq!(c.path, root.join("2024-02-29-chat-3"));
        assert_eq!(other.path, root.join("2024-02-29----echo-1"));
        assert!(a.path.is_dir() && b.path.is_dir() && c.path.is_dir() && other.path.is_dir());

        let today = RunDir::create(&root, "hold").unwrap();
        let name = today.path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.ends_with("-hold") && name.len() == "YYYY-MM-DD-hold".len(), "{name}");
    }

    #[test]
    fn setup_md_reports_kernel_and_sysctls() {
        let tmp = TempDir::new("setup");
        let run = RunDir::create(&tmp.0, "hold").unwrap();
        let setup = Setup {
            command_lines: vec!["rusher-loadgen hold --connections 1000000".to_owned()],
            notes: vec!["server pinned to core 0".to_owned()],
            server_pids: vec![std::process::id()],
            extra: vec![("source ips".to_owned(), "127.0.0.2-127.0.0.61".to_owned())],
        };
        // A folder outside any repository, so the test never runs git in a shared checkout.
        write_setup_with_git_dir(&run, &setup, &tmp.0).unwrap();

        let md = fs::read_to_string(run.path.join("SETUP.md")).unwrap();
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert!(md.contains(&format!("| Kernel | {} |", kernel.trim())), "{md}");
        for name in SYSCTLS {
            let row = md
                .lines()
                .find(|l| l.starts_with(&format!("| {name} | ")))
                .unwrap_or_else(|| panic!("no row for {name} in\n{md}"));
            match read_sysctl(name) {
                Some(v) => assert_eq!(row, format!("| {name} | {v} |")),
                None => assert_eq!(row, format!("| {name} | n/a |")),
            }
        }
        let somaxconn = fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
        assert!(md.contains(&format!("| net.core.somaxconn | {} |", somaxconn.trim())));
        assert!(md.contains("```text\nrusher-loadgen hold --connections 1000000\n```"));
        assert!(md.contains("| source ips | 127.0.0.2-127.0.0.61 |"));
        assert!(md.contains("- server pinned to core 0"));
        assert!(md.contains(&format!("- {}: `", std::process::id())));
        assert!(md.contains("| Open files (RLIMIT_NOFILE) | soft "));
        assert!(md.contains("\n| Commit | "));
        assert!(!run.path.join("SETUP.md.tmp").exists());
    }

    #[test]
    fn setup_md_marks_missing_facts() {
        let run = RunDir { path: PathBuf::from("/results/2024-02-29-chat") };
        let facts = MachineFacts {
            utc: "2024-02-29 12:34:56 UTC".to_owned(),
            hostname: None,
            cpu_model: Some("Intel(R) Xeon(R) | fast".to_owned()),
            cpu_count: 2,
            mem_total_kb: Some(25_165_824),
            kernel: Some("6.8.0-1".to_owned()),
            commit: Some("0123abcd (dirty)".to_owned()),
            nofile: Some((Some(1_024), None)),
            sysctls: vec![("fs.file-max", Some("2466177".to_owned())), ("fs.nr_open", None)],
            servers: vec![(4_000_000, None)],
        };
        let setup = Setup { command_lines: vec!["echo ```".to_owned()], ..Setup::default() };
        let md = render_setup(&run, &setup, &facts);
        assert!(md.starts_with("# Setup: 2024-02-29-chat\n"));
        assert!(md.contains("| Host | unknown |"));
        assert!(md.contains("| CPU | Intel(R) Xeon(R) \\| fast × 2 |"));
        assert!(md.contains("| Memory | 24.0 GiB (MemTotal 25165824 kB) |"));
        assert!(md.contains("| Commit | 0123abcd (dirty) |"));
        assert!(md.contains("| Open files (RLIMIT_NOFILE) | soft 1024, hard unlimited |"));
        assert!(md.contains("| fs.file-max | 2466177 |\n| fs.nr_open | n/a |\n"));
        assert!(md.contains("- 4000000: `(not running)`"));
        assert!(md.contains("````text\necho ```\n````"));
        assert!(md.contains("## Extra\n\n(none)"));
        assert!(md.contains("## Notes\n\n(none)"));
    }

    #[test]
    fn cpuinfo_and_meminfo_parsing() {
        let cpuinfo =
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n\n\
                       processor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(parse_cpuinfo(cpuinfo), (Some("Intel(R) Xeon(R) CPU @ 2.20GHz".to_owned()), 2));
        assert_eq!(parse_cpuinfo("processor : 0\nBogoMIPS : 50.00\n"), (None, 1));
        let meminfo = "MemTotal:       24536789 kB\nMemFree:         1234 kB\n";
        assert_eq!(meminfo_kb(meminfo, "MemTotal"), Some(24_536_789));
        assert_eq!(meminfo_kb(meminfo, "MemFre"), None);
        assert_eq!(meminfo_kb(meminfo, "Slab"), None);
    }

    #[test]
    fn json_and_hgrm_files() {
        let tmp = TempDir::new("files");
        let run = RunDir::create(&tmp.0, "echo").unwrap();
        let v = serde_json::json!({ "connections": 1_000_000, "p99_us": 812 });
        write_json(&run, "summary", &v).unwrap();
        write_json(&run, "agents.json", &v).unwrap();
        let text = fs::read_to_string(run.path.join("summary.json")).unwrap();
        assert!(text.contains("\n  \"connections\": 1000000"), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
        assert!(run.path.join("agents.json").is_file());
        assert!(write_json(&run, "../escape", &v).is_err());
        assert!(write_json(&run, "", &v).is_err());

        let mut h = hist::new_hist();
        for v in 1..=1_000 {
            hist::record(&mut h, v);
        }
        write_hgrm_file(&run, "latency", &h, 1000.0).unwrap();
        let hgrm = fs::read_to_string(run.path.join("latency.hgrm")).unwrap();
        assert!(hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n"));
        assert!(hgrm.contains("Total count    =         1000]"));
    }
}
