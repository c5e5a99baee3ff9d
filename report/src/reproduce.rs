//! The `scripts/bench-*` or `scripts/c1m` command that reproduces a run, rebuilt from the parameters the run
//! recorded: the scenario in `summary.json`, the load generator's and the server's command lines
//! in `SETUP.md`. Each script's positional arguments are listed in its `# usage:` line.

use crate::parse::{Run, Setup};

/// The bench script invocation for `run`, or `None` when no script produces its kind of run or a
/// parameter the script needs was not recorded.
pub fn bench_command(run: &Run) -> Option<String> {
    let summary = run.summary.as_ref()?;
    let setup = run.setup.as_ref()?;
    let loadgen = setup.command_lines().first().map(|l| shell_words(l)).unwrap_or_default();
    let flag = |name: &str| flag_value(&loadgen, name);
    let param = |name: &str| summary.scenario.params.get(name).map(number);
    let args: Vec<String> = match summary.scenario.kind.as_str() {
        // usage: scripts/bench-connect [COUNT] [PER_TOPIC] [RATE] [HOLD]
        "connect" => vec![flag("--connections")?, flag("--per-topic")?, flag("--rate")?, flag("--hold")?],
        // usage: scripts/bench-chat [CONNS] [MEMBERS] [RATE] [MEASURE] [SYNC]
        "chat" => vec![
            summary.connections.to_string(),
            flag("--members")?,
            param("publish_rate")?,
            param("measure_s")?,
            sqlite_sync(setup),
        ],
        // usage: scripts/bench-collab [DOCS] [EDITORS] [RATE] [MEASURE] [SYNC]
        "collab" => {
            let editors = flag("--per-topic")?;
            let per_doc: u64 = editors.parse().ok().filter(|n| *n > 0)?;
            vec![
                (summary.connections / per_doc).to_string(),
                editors,
                param("publish_rate")?,
                param("measure_s")?,
                sqlite_sync(setup),
            ]
        }
        // usage: scripts/bench-broadcast [COUNT] [RATE] [MEASURE]
        "broadcast" => vec![summary.connections.to_string(), param("publish_rate")?, param("measure_s")?],
        // usage: scripts/bench-geo [CONNS] [RATE] [SECS] [FENCES] [SUBSCRIBERS] [SYNC] [BATCH]
        "geo" => vec![
            flag("--connections")?,
            param("publish_rate")?,
            param("measure_s")?,
            param("fences")?,
            param("subscribers")?,
            sqlite_sync(setup),
            param("batch")?,
        ],
        // usage: scripts/c1m [CONNS] [HOLD] [CHAT_RATE] [CHAT_SECS] [ROOM]
        "c1m" => {
            let args = ["connections", "hold_s", "chat_rate", "chat_seconds", "room"].map(param);
            return Some(format!("scripts/c1m {}", args.into_iter().collect::<Option<Vec<_>>>()?.join(" ")));
        }
        // usage: scripts/bench-db [SECONDS]
        "db" => vec![param("e2e_measure_s")?],
        // usage: scripts/bench-firebase [SCALE]; against a real project, FIREBASE_CONFIG names its config.
        "firebase" => {
            let scale = summary.scenario.params.get("scale")?.as_str()?;
            let real =
                summary.scenario.params.get("firebase_target").and_then(|t| t.as_str()) == Some("firebase");
            let env = if real { "FIREBASE_CONFIG=<the project's web config> " } else { "" };
            return Some(format!("{env}scripts/bench-firebase {scale}"));
        }
        // The command as run, with its environment: scripts/compare-peers [COUNT...]
        "peers" => return summary.scenario.params.get("command")?.as_str().map(str::to_owned),
        _ => return None,
    };
    Some(format!("scripts/bench-{} {}", summary.scenario.kind, args.join(" ")))
}

/// The commit the run was measured at, and whether its tree had uncommitted changes.
pub fn commit(setup: &Setup) -> Option<(&str, bool)> {
    let fact = setup.fact("Commit")?;
    let (hash, rest) = fact.split_once(' ').unwrap_or((fact, ""));
    (hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit())).then_some((hash, rest.contains("dirty")))
}

/// The server's `--sqlite-synchronous` mode; `full` is the server's default.
fn sqlite_sync(setup: &Setup) -> String {
    setup
        .server_commands()
        .first()
        .and_then(|cmd| flag_value(&shell_words(cmd), "--sqlite-synchronous"))
        .unwrap_or_else(|| "full".to_owned())
}

/// A JSON number as a script argument: `50000.0` → `50000`.
fn number(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => v.to_string(),
    }
}

/// The value after `--name` (or in `--name=value`), the first time it appears.
pub fn flag_value(words: &[String], name: &str) -> Option<String> {
    words.iter().enumerate().find_map(|(i, w)| {
        if w == name {
            words.get(i + 1).cloned()
        } else {
            w.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')).map(str::to_owned)
        }
    })
}

/// Splits a command line as a POSIX shell would (quotes and backslashes; no expansions).
pub fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                w.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{setup, summary};

    fn run(summary: &str, setup: &str) -> Run {
        Run {
            name: "r".into(),
            setup: Some(setup::parse(setup)),
            summary: Some(summary::parse(summary).unwrap()),
            histograms: Vec::new(),
            samples: Vec::new(),
            db_distributions: Vec::new(),
        }
    }

    #[test]
    fn shell_words_handle_quotes() {
        assert_eq!(
            shell_words(r#"a --note 'it'\''s' "x \"y\"" b\ c  --k=v"#),
            ["a", "--note", "it's", "x \"y\"", "b c", "--k=v"]
        );
        assert_eq!(flag_value(&shell_words("x --k=v --n 3"), "--k").as_deref(), Some("v"));
        assert_eq!(flag_value(&shell_words("x --k=v --n 3"), "--n").as_deref(), Some("3"));
        assert_eq!(flag_value(&shell_words("x --n"), "--n"), None);
    }

    #[test]
    fn geo_run_gives_its_bench_geo_line() {
        let summary = r#"{"connections": 1001, "scenario": {"kind": "geo", "publish_rate": 100000.0,
            "measure_s": 20, "fences": 10000, "subscribers": 1, "batch": 10}}"#;
        let setup = "# Setup: x\n\n## Server processes\n\n- 1: `target/release/rusher --sqlite-synchronous normal`\n\n\
                     ## Command lines\n\n```text\ntarget/release/rusher-loadgen geo --connections 1000 --note 'has --connections 5'\n```\n";
        assert_eq!(
            bench_command(&run(summary, setup)).as_deref(),
            Some("scripts/bench-geo 1000 100000 20 10000 1 normal 10")
        );
    }

    #[test]
    fn collab_and_connect_runs() {
        let collab = r#"{"connections": 100, "scenario": {"kind": "collab", "publish_rate": 5000.0, "measure_s": 20}}"#;
        let setup =
            "## Command lines\n\n```text\nrusher-loadgen collab --connections 100 --per-topic 10\n```\n";
        // Without --sqlite-synchronous the server runs with its default, full.
        assert_eq!(
            bench_command(&run(collab, setup)).as_deref(),
            Some("scripts/bench-collab 10 10 5000 20 full")
        );

        let connect = r#"{"connections": 200000, "scenario": {"kind": "connect"}}"#;
        let setup = "## Command lines\n\n```text\nrusher-loadgen connect --connections 200000 --rate 10000 --hold 30 --per-topic 10\n```\n";
        assert_eq!(
            bench_command(&run(connect, setup)).as_deref(),
            Some("scripts/bench-connect 200000 10 10000 30")
        );
    }

    #[test]
    fn c1m_runs_give_their_scripts_c1m_line() {
        let c1m = r#"{"connections": 1000000, "scenario": {"kind": "c1m", "connections": 1000000,
            "hold_s": 120, "chat_rate": 10000, "chat_seconds": 60, "room": 100, "nodes": 57}}"#;
        let setup = "## Command lines\n\n```text\nscripts/c1m 1000000 120 10000 60 100\n```\n";
        assert_eq!(bench_command(&run(c1m, setup)).as_deref(), Some("scripts/c1m 1000000 120 10000 60 100"));
        let partial = r#"{"scenario": {"kind": "c1m", "connections": 6000, "hold_s": 5}}"#;
        assert_eq!(bench_command(&run(partial, setup)), None, "a parameter missing");
    }

    #[test]
    fn firebase_runs_give_the_scale_and_say_when_a_project_config_is_needed() {
        let setup = "## Command lines\n\n```text\nnode bench/firebase/run.mjs --scale full\n```\n";
        let local =
            r#"{"scenario": {"kind": "firebase", "scale": "full", "firebase_target": "firebase-server"}}"#;
        assert_eq!(bench_command(&run(local, setup)).as_deref(), Some("scripts/bench-firebase full"));
        let real = r#"{"scenario": {"kind": "firebase", "scale": "tiny", "firebase_target": "firebase"}}"#;
        assert_eq!(
            bench_command(&run(real, setup)).as_deref(),
            Some("FIREBASE_CONFIG=<the project's web config> scripts/bench-firebase tiny")
        );
        assert_eq!(bench_command(&run(r#"{"scenario": {"kind": "firebase"}}"#, setup)), None);
    }

    #[test]
    fn a_database_comparison_gives_its_bench_db_line() {
        let summary = r#"{"scenario": {"kind": "db", "e2e_measure_s": 20, "store_seconds": 5.0}}"#;
        assert_eq!(bench_command(&run(summary, "")).as_deref(), Some("scripts/bench-db 20"));
    }

    #[test]
    fn unknown_kinds_and_missing_parameters_give_nothing() {
        let setup = "## Command lines\n\n```text\nrusher-loadgen shootout --connections 10\n```\n";
        assert_eq!(bench_command(&run(r#"{"scenario": {"kind": "shootout"}}"#, setup)), None);
        assert_eq!(bench_command(&run(r#"{"scenario": {"kind": "broadcast"}}"#, setup)), None);
    }

    #[test]
    fn commit_and_dirty_flag() {
        let s =
            setup::parse("| | |\n|---|---|\n| Commit | 3cdce54ab2f8cb7451af4c2fa248c470668f90cc (dirty) |\n");
        assert_eq!(commit(&s), Some(("3cdce54ab2f8cb7451af4c2fa248c470668f90cc", true)));
        let s = setup::parse("| | |\n|---|---|\n| Commit | unknown |\n");
        assert_eq!(commit(&s), None);
    }
}
