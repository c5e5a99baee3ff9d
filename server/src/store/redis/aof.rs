//! Durability of the Redis backend: the append-only file on, with the configured `appendfsync`.

use std::time::{Duration, Instant};

use redis::{Connection, RedisError, Value};

use super::redis_err;
use crate::store::{AppendFsync, StoreError};

/// How long switching the AOF on may take: Redis first rewrites its data set into a new AOF in the
/// background, and writes are not in an AOF until that is done.
const AOF_READY_WAIT: Duration = Duration::from_secs(30);

/// How often the rewrite's progress is polled meanwhile.
const AOF_POLL: Duration = Duration::from_millis(10);

/// Switches the server's AOF on with `want` as its fsync policy and waits until writes go to it; returns
/// how: `"set"` (by `CONFIG SET`) or `"verified"` (`CONFIG SET` was refused — renamed, or denied by an
/// ACL — but `CONFIG GET` shows the settings already as wanted). Fails with
/// [`StoreError::Unavailable`] naming the mismatch when the settings differ and cannot be changed, or
/// cannot be read.
pub(super) fn ensure(
    conn: &mut Connection,
    want: AppendFsync,
    label: &str,
) -> Result<&'static str, StoreError> {
    let set =
        config_set(conn, "appendonly", "yes").and_then(|()| config_set(conn, "appendfsync", want.as_str()));
    let how = match set {
        Ok(()) => "set",
        Err(e) if is_reply(&e) => {
            verify(conn, want, label, &e)?;
            "verified"
        }
        Err(e) => return Err(redis_err(e)),
    };
    wait_until_aof_is_on(conn, label)?;
    Ok(how)
}

fn config_set(conn: &mut Connection, name: &str, value: &str) -> Result<(), RedisError> {
    redis::cmd("CONFIG").arg("SET").arg(name).arg(value).query::<Value>(conn).map(drop)
}

/// Whether `e` is the server's answer (a refusal), not a failure to reach it.
fn is_reply(e: &RedisError) -> bool {
    matches!(e.kind(), redis::ErrorKind::Server(_) | redis::ErrorKind::Extension)
}

/// With `CONFIG SET` refused (`why`): the settings must already be as wanted.
fn verify(conn: &mut Connection, want: AppendFsync, label: &str, why: &RedisError) -> Result<(), StoreError> {
    let refused = |detail: String| {
        StoreError::Unavailable(format!(
            "redis {label} refused CONFIG SET ({why}), and {detail}; --redis-appendfsync {} needs \
             appendonly yes and appendfsync {}: set them in the server's configuration",
            want.as_str(),
            want.as_str()
        ))
    };
    let get = |conn: &mut Connection, name: &str| -> Result<String, RedisError> {
        let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(conn)?;
        Ok(pair.get(1).cloned().unwrap_or_default())
    };
    match get(conn, "appendonly").and_then(|on| Ok((on, get(conn, "appendfsync")?))) {
        Ok((on, fsync)) if on == "yes" && fsync == want.as_str() => Ok(()),
        Ok((on, fsync)) => {
            Err(refused(format!("its settings differ: appendonly is {on:?}, appendfsync is {fsync:?}")))
        }
        Err(e) if is_reply(&e) => match info_persistence(conn).map_err(redis_err)?.get("aof_enabled") {
            Some("0") => Err(refused(format!("CONFIG GET was refused too ({e}); INFO says the AOF is off"))),
            _ => Err(refused(format!("CONFIG GET was refused too ({e}), so appendfsync cannot be checked"))),
        },
        Err(e) => Err(redis_err(e)),
    }
}

/// Waits (at most [`AOF_READY_WAIT`]) until the AOF is on and no rewrite that switches it on is pending.
fn wait_until_aof_is_on(conn: &mut Connection, label: &str) -> Result<(), StoreError> {
    let deadline = Instant::now() + AOF_READY_WAIT;
    loop {
        let info = info_persistence(conn).map_err(redis_err)?;
        let field = |name: &str| info.get(name).unwrap_or("?");
        if field("aof_enabled") == "0" {
            return Err(StoreError::Unavailable(format!("redis {label}: the append-only file is off")));
        }
        if field("aof_enabled") == "1"
            && field("aof_rewrite_in_progress") == "0"
            && field("aof_rewrite_scheduled") == "0"
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Unavailable(format!(
                "redis {label}: the append-only file is not on after {} s (aof_enabled {}, \
                 aof_rewrite_in_progress {}, aof_rewrite_scheduled {})",
                AOF_READY_WAIT.as_secs(),
                field("aof_enabled"),
                field("aof_rewrite_in_progress"),
                field("aof_rewrite_scheduled")
            )));
        }
        std::thread::sleep(AOF_POLL);
    }
}

/// The fields of `INFO persistence`.
pub(super) fn info_persistence(conn: &mut Connection) -> Result<Info, RedisError> {
    info(conn, "persistence")
}

/// The server's version, from `INFO server`.
pub(super) fn server_version(conn: &mut Connection) -> Result<String, RedisError> {
    Ok(info(conn, "server")?.get("redis_version").unwrap_or("unknown").to_owned())
}

fn info(conn: &mut Connection, section: &str) -> Result<Info, RedisError> {
    Ok(Info(redis::cmd("INFO").arg(section).query(conn)?))
}

/// The text of an `INFO` reply: `name:value` lines.
#[derive(Debug)]
pub(super) struct Info(String);

impl Info {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':').map(str::trim))
    }
}
