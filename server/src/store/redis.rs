//! The Redis backend: one connection owned by the storage thread, one round trip per call, the
//! append-only file (AOF) switched on with the configured `appendfsync`.
//!
//! # Data model
//!
//! Every key starts with a prefix (`rusher:` unless the URL's `prefix` parameter names another, so
//! several servers or tests can share one Redis database), then a kind and the name it belongs to:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `chat:ROOM` | sorted set | the room's messages |
//! | `collab:u:STREAM` | sorted set | a journal stream's entries after its snapshot (a collab document's updates) |
//! | `collab:s:STREAM` | string | the stream's snapshot: seq (8 bytes) then the state |
//! | `collab-bytes` | integer | bytes of every stored snapshot and entry, kept by the scripts that write them |
//! | `geo:fences:TENANT` | hash | fence id → definition (JSON) |
//! | `geo:objects:TENANT` | hash | object id → last position, `ts\nlat\nlon\nspeed\nheading[\nprops]` |
//! | `geo:inside:LEN:TENANT:FENCE` | hash | object → `since_ms:dwelled` (0 or 1); LEN is the tenant's length in bytes |
//! | `geo:inside-fences:TENANT` | set | the fences that have an inside hash, so a load finds them without a scan |
//! | `geo:events:TENANT` | stream | the event log: fence, object, event, lat, lon, ts, at_ms per entry |
//!
//! A name is always the rest of its key, or is preceded by its length, so no two names share a key. The
//! sorted sets give every member score 0 and order members by their bytes, which start with the seq as 8
//! bytes big-endian: byte order is seq order, a history page is one `ZREVRANGEBYLEX`, and a seq is never
//! rounded (a score is a double, exact only up to 2^53). A chat member is seq, id and ts_ms (8 bytes
//! each), the user's length (4 bytes), the user and the body; a journal member is seq then the entry.
//! The journal keys keep the `collab:` names they had when only collab documents used them (see
//! [`super::LogEntry`] for how stream names stay apart).
//! As in the SQL backends every `u64` must fit in an `i64`; larger values are refused. Positions are
//! decimal, written by Rust's shortest round-trip formatting, so they read back exactly and a script can
//! compare timestamps. The event log keeps every event, like the SQL table; trim it with `XTRIM` if it
//! should not.
//!
//! # Batches and durability
//!
//! Every write is one `EVALSHA` of a Lua script (loaded again after a `NOSCRIPT`, e.g. once Redis
//! restarted). Redis runs a script alone, and each script checks every item of a batch before it writes
//! any, so a batch with a duplicate stores nothing. Reads are one command, or a `MULTI`/`EXEC` pipeline
//! (one round trip, one state of the data). Only a call after an idle spell costs one more round trip,
//! the `PING` that checks the connection.
//!
//! Redis writes a command to the AOF before it sends the reply, and with `appendfsync always` fsyncs it
//! too, so acking after the reply is correct: with `always` an acked write survives any crash; with
//! `everysec` a crash of the machine may lose about the last second of acked writes (Redis may also hold
//! a write back for up to two seconds while an fsync is slow, and reply meanwhile); with `no`, whatever
//! the OS had not flushed. [`aof::ensure`] sets AOF and fsync policy on every connection (a restarted
//! Redis forgets a runtime `CONFIG SET`), or, when Redis refuses `CONFIG SET`, checks that they already
//! are as configured and refuses to work otherwise.
//!
//! The geofencing load reads keys it derives from the ones it is given, which a Redis Cluster would
//! refuse: this backend needs one Redis server (with replicas, if wanted). Redis 5 or newer.
//!
//! # Failures
//!
//! As with PostgreSQL: a call that finds the connection broken fails with [`StoreError::Unavailable`]
//! and the next call connects again (connect timeout [`CONNECT_TIMEOUT`], at most one attempt per
//! [`RECONNECT_BACKOFF`](super::reconnect::RECONNECT_BACKOFF)); reads and writes time out after [`IO_TIMEOUT`], so a hung server turns into
//! errors instead of a stalled storage thread. A connection idle for [`IDLE_CHECK_AFTER`] is checked with
//! a `PING` first, so a Redis restart during a quiet spell fails no request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Connection, ErrorKind, RedisError, Script, Value};

mod aof;
mod geo;

use super::reconnect::Reconnect;
use super::{
    from_i64, head_of, history_bounds, redact_url, seq_to_i64, to_i64, AppendFsync, Backend, ChatMessage,
    GeoFenceChange, GeoLog, GeoPosition, GeoState, LogEntry, LogState, Page, StoreError,
};

/// How long opening a connection (TCP, and `AUTH`/`SELECT` if the URL asks for them) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest a command may take to be sent or answered. The storage thread is blocked meanwhile and the
/// storage queue fills, so a hung server must turn into errors rather than a silent stall.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection idle for this long is checked with a `PING` before use. Under steady load no call pays
/// for the check.
const IDLE_CHECK_AFTER: Duration = Duration::from_millis(100);

/// Where keys go unless the URL's `prefix` parameter says otherwise.
const DEFAULT_PREFIX: &str = "rusher:";

/// Compares two 8-byte big-endian numbers byte by byte: Lua's `<` on strings follows the server's
/// locale, not byte order.
const LUA_AT_LEAST: &str = r"
local function at_least(a, b)
  for j = 1, 8 do
    local x, y = string.byte(a, j), string.byte(b, j)
    if x ~= y then return x > y end
  end
  return true
end
";

/// KEYS[i]: the room of message i; ARGV[i]: its member. Returns false, or {i, why} for the first
/// message refused (nothing is written then).
const APPEND: &str = r"
local seen = {}
for i = 1, #KEYS do
  local seq = string.sub(ARGV[i], 1, 8)
  local id = KEYS[i] .. seq
  if seen[id] then return {i, 'the batch repeats it'} end
  seen[id] = true
  local r = redis.call('ZRANGEBYLEX', KEYS[i], '[' .. seq, '+', 'LIMIT', 0, 1)
  if r[1] and string.sub(r[1], 1, 8) == seq then return {i, 'already stored'} end
end
for i = 1, #KEYS do redis.call('ZADD', KEYS[i], 0, ARGV[i]) end
return false
";

/// KEYS[1]: the byte counter; KEYS[2i], KEYS[2i+1]: the updates and the snapshot of update i's
/// document; ARGV[i]: its member. A seq at or below the snapshot's was stored before and compacted away;
/// taking it again would leave an update no load returns, so it is refused too.
const COLLAB_APPEND: &str = r"
local seen, added = {}, 0
for i = 1, #ARGV do
  local updates, seq = KEYS[2 * i], string.sub(ARGV[i], 1, 8)
  local id = updates .. seq
  if seen[id] then return {i, 'the batch repeats it'} end
  seen[id] = true
  local r = redis.call('ZRANGEBYLEX', updates, '[' .. seq, '+', 'LIMIT', 0, 1)
  if r[1] and string.sub(r[1], 1, 8) == seq then return {i, 'already stored'} end
  local snap = redis.call('GETRANGE', KEYS[2 * i + 1], 0, 7)
  if #snap == 8 and at_least(snap, seq) then return {i, 'the stored snapshot covers it'} end
end
for i = 1, #ARGV do
  redis.call('ZADD', KEYS[2 * i], 0, ARGV[i])
  added = added + #ARGV[i] - 8
end
redis.call('INCRBY', KEYS[1], added)
return false
";

/// KEYS: the document's updates, its snapshot, the byte counter; ARGV[1]: the new snapshot (seq, then
/// state), ARGV[2]: the exclusive upper lex bound of the updates it covers. Returns 1, or 0 when the
/// stored snapshot is newer (an equal seq replaces it).
const COLLAB_COMPACT: &str = r"
local seq = string.sub(ARGV[1], 1, 8)
local old = redis.call('GETRANGE', KEYS[2], 0, 7)
if #old == 8 and not at_least(seq, old) then return 0 end
local gone = 0
for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], '-', ARGV[2])) do gone = gone + #m - 8 end
redis.call('ZREMRANGEBYLEX', KEYS[1], '-', ARGV[2])
local old_len = redis.call('STRLEN', KEYS[2])
if old_len > 0 then old_len = old_len - 8 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('INCRBY', KEYS[3], #ARGV[1] - 8 - old_len - gone)
return 1
";

/// The scripts, hashed once; each call sends only the hash unless Redis has forgotten the script.
struct Scripts {
    append: Script,
    collab_append: Script,
    collab_compact: Script,
    geo: geo::Scripts,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            append: Script::new(APPEND),
            collab_append: Script::new(&format!("{LUA_AT_LEAST}{COLLAB_APPEND}")),
            collab_compact: Script::new(&format!("{LUA_AT_LEAST}{COLLAB_COMPACT}")),
            geo: geo::Scripts::new(),
        }
    }
}

/// The keys of every kind under one prefix (see the module docs).
#[derive(Debug)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn chat(&self, room: &str) -> String {
        format!("{}chat:{room}", self.prefix)
    }
    fn collab_updates(&self, doc: &str) -> String {
        format!("{}collab:u:{doc}", self.prefix)
    }
    fn collab_snapshot(&self, doc: &str) -> String {
        format!("{}collab:s:{doc}", self.prefix)
    }
    fn collab_bytes(&self) -> String {
        format!("{}collab-bytes", self.prefix)
    }
    fn geo_fences(&self, tenant: &str) -> String {
        format!("{}geo:fences:{tenant}", self.prefix)
    }
    fn geo_objects(&self, tenant: &str) -> String {
        format!("{}geo:objects:{tenant}", self.prefix)
    }
    /// What every inside hash of `tenant` starts with; a fence id completes it.
    fn geo_inside_prefix(&self, tenant: &str) -> String {
        format!("{}geo:inside:{}:{tenant}:", self.prefix, tenant.len())
    }
    fn geo_inside(&self, tenant: &str, fence: &str) -> String {
        format!("{}{fence}", self.geo_inside_prefix(tenant))
    }
    fn geo_inside_fences(&self, tenant: &str) -> String {
        format!("{}geo:inside-fences:{tenant}", self.prefix)
    }
    fn geo_events(&self, tenant: &str) -> String {
        format!("{}geo:events:{tenant}", self.prefix)
    }
}

/// Chat history, collaborative documents and geofences in a Redis database.
///
/// Owns a single connection; the storage thread is its only user, so no pool and no locking are needed.
pub struct RedisStore {
    client: redis::Client,
    appendfsync: AppendFsync,
    /// Where the database is, for messages (no password).
    label: String,
    keys: Keys,
    scripts: Scripts,
    /// `None` once the connection was found broken: the next call connects again.
    conn: Option<Conn>,
    /// Throttles connection attempts while the database is away.
    reconnect: Reconnect,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("db", &self.label)
            .field("prefix", &self.keys.prefix)
            .field("appendfsync", &self.appendfsync)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

/// A live connection: timeouts set, AOF checked.
struct Conn {
    conn: Connection,
    /// When the last call on this connection finished.
    last_used: Instant,
}

/// A store URL taken apart: what the `redis` crate connects to, and the key prefix.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// The URL without the `prefix` parameter.
    url: String,
    prefix: String,
}

/// Splits the `prefix` parameter off `url` (other parameters stay for the `redis` crate).
fn parse_url(url: &str) -> Result<Target, StoreError> {
    let invalid =
        |why: &str| StoreError::Unavailable(format!("invalid Redis URL {:?}: {why}", redact_url(url)));
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut prefix = None;
    let mut rest = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.strip_prefix("prefix=") {
            Some(p) if prefix.is_some() => return Err(invalid(&format!("prefix given twice ({p:?})"))),
            Some("") => return Err(invalid("the prefix is empty")),
            Some(p) if p.contains(|c: char| c.is_whitespace() || c.is_control() || c == '#') => {
                return Err(invalid("the prefix may not hold spaces, control characters or '#'"))
            }
            Some(p) => prefix = Some(p.to_owned()),
            None => rest.push(kv),
        }
    }
    let url = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
    Ok(Target { url, prefix: prefix.unwrap_or_else(|| DEFAULT_PREFIX.into()) })
}

impl RedisStore {
    /// Connects to the Redis server of `url` (`redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=P]`),
    /// switches its AOF on with `appendfsync` (or checks it is, see [`aof::ensure`]) and logs the setting.
    /// Fails with [`StoreError::Unavailable`] if the server cannot be reached or its durability cannot
    /// be made what was asked.
    pub fn open(url: &str, appendfsync: AppendFsync) -> Result<Self, StoreError> {
        let target = parse_url(url)?;
        let client = redis::Client::open(target.url.as_str())
            .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL {:?}: {e}", redact_url(url))))?;
        let label = label(client.get_connection_info());
        let mut store = RedisStore {
            client,
            appendfsync,
            label,
            keys: Keys { prefix: target.prefix },
            scripts: Scripts::new(),
            conn: None,
            reconnect: Reconnect::default(),
        };
        let (mut conn, how) = store.connect()?;
        let version = aof::server_version(&mut conn).unwrap_or_else(|e| format!("unknown ({e})"));
        tracing::info!(
            db = %store.label,
            redis_version = version,
            prefix = store.keys.prefix,
            appendonly = "yes",
            appendfsync = appendfsync.as_str(),
            how,
            "redis store open"
        );
        store.conn = Some(Conn { conn, last_used: Instant::now() });
        Ok(store)
    }

    /// Opens a connection, sets its timeouts and makes sure of the AOF; returns how (see
    /// [`aof::ensure`]).
    fn connect(&self) -> Result<(Connection, &'static str), StoreError> {
        let unavailable =
            |e: RedisError| StoreError::Unavailable(format!("cannot connect to {}: {e}", self.label));
        let mut conn = self.client.get_connection_with_timeout(CONNECT_TIMEOUT).map_err(unavailable)?;
        conn.set_read_timeout(Some(IO_TIMEOUT)).map_err(unavailable)?;
        conn.set_write_timeout(Some(IO_TIMEOUT)).map_err(unavailable)?;
        // Whatever fails here (a missing password answers NOAUTH only now) leaves no usable connection.
        let how = aof::ensure(&mut conn, self.appendfsync, &self.label).map_err(|e| match e {
            StoreError::Unavailable(_) => e,
            other => StoreError::Unavailable(format!("cannot use {}: {other}", self.label)),
        })?;
        Ok((conn, how))
    }

    /// Runs `op` on the connection, connecting first if there is none (one attempt, unless the last one
    /// failed less than [`RECONNECT_BACKOFF`](super::reconnect::RECONNECT_BACKOFF) ago). A connection that turns out broken is dropped, so the
    /// next call connects afresh.
    fn with<T>(
        &mut self,
        op: impl FnOnce(&mut Connection, &Scripts, &Keys) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(c) = &mut self.conn {
            // A server that restarted while we were idle closed this connection; finding out with a PING
            // lets the call go to a fresh connection instead of failing on the dead one.
            if c.last_used.elapsed() >= IDLE_CHECK_AFTER
                && redis::cmd("PING").query::<Value>(&mut c.conn).is_err()
            {
                tracing::warn!(db = %self.label, "redis connection lost; reconnecting");
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            self.reconnect.ready()?;
            let attempt = self.connect();
            self.reconnect.record(&attempt);
            let (conn, how) = attempt?;
            tracing::info!(db = %self.label, appendfsync = self.appendfsync.as_str(), how, "redis connection re-established");
            self.conn = Some(Conn { conn, last_used: Instant::now() });
        }
        let c = self.conn.as_mut().expect("connected above");
        let result = op(&mut c.conn, &self.scripts, &self.keys);
        c.last_used = Instant::now();
        if matches!(result, Err(StoreError::Unavailable(_))) {
            self.conn = None;
        }
        result
    }

    /// Up to `fetch` members of `room`'s sorted set with seq in (`lower`, `upper`], newest first.
    fn newest(&mut self, room: &str, lower: i64, upper: i64, fetch: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        let key = self.keys.chat(room);
        // Stored seqs are at most i64::MAX, so one past `upper` still fits a u64.
        let max = lex_bound(b'(', upper as u64 + 1);
        let min = if lower < 0 { b"-".to_vec() } else { lex_bound(b'[', lower as u64 + 1) };
        self.with(|conn, _, _| {
            let rows = redis::cmd("ZREVRANGEBYLEX")
                .arg(&key)
                .arg(&max)
                .arg(&min)
                .arg("LIMIT")
                .arg(0)
                .arg(fetch)
                .query::<Value>(conn)
                .map_err(redis_err)?;
            decode::<Vec<Vec<u8>>>(rows, room)
        })
    }
}

impl Backend for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn append(&mut self, batch: &[ChatMessage]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Encoded (and checked) before anything is sent, so a bad value stores nothing.
        let members = batch.iter().map(encode_message).collect::<Result<Vec<_>, _>>()?;
        let keys: Vec<String> = batch.iter().map(|m| self.keys.chat(&m.room)).collect();
        let refused = self.with(|conn, scripts, _| {
            let mut call = scripts.append.prepare_invoke();
            for (key, member) in keys.iter().zip(&members) {
                call.key(key).arg(member);
            }
            refusal(call.invoke::<Value>(conn).map_err(redis_err)?)
        })?;
        match refused {
            None => Ok(()),
            Some((i, why)) => {
                let m = &batch[i];
                Err(StoreError::Db(format!(
                    "message {}#{} not stored, batch rolled back: {why}",
                    m.room, m.seq
                )))
            }
        }
    }

    fn room_head(&mut self, room: &str, recent: usize) -> Result<(u64, Page), StoreError> {
        let (lower, upper, fetch) =
            history_bounds(None, None, recent).expect("an unbounded range is never empty");
        // One past `recent`, and at least one: the newest member is the head even when no page is asked for.
        let rows = self.newest(room, lower, upper, fetch)?;
        let room_arc: Arc<str> = Arc::from(room);
        let page = page_of(&rows, recent, &room_arc)?;
        let head = head_of(&page, room, || {
            rows.first().map(|m| decode_message(m, &room_arc).map(|m| m.seq as i64)).transpose()
        })?;
        Ok((head, page))
    }

    fn history(
        &mut self,
        room: &str,
        before_seq: Option<u64>,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let Some((lower, upper, fetch)) = history_bounds(before_seq, after_seq, limit) else {
            return Ok(Page::default());
        };
        let rows = self.newest(room, lower, upper, fetch)?;
        page_of(&rows, limit, &Arc::from(room))
    }

    fn log_append(&mut self, batch: &[LogEntry]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let members = batch
            .iter()
            .map(|u| Ok(seq_bytes(u.seq, &u.stream)?.into_iter().chain(u.data.iter().copied()).collect()))
            .collect::<Result<Vec<Vec<u8>>, StoreError>>()?;
        let counter = self.keys.collab_bytes();
        let keys: Vec<(String, String)> = batch
            .iter()
            .map(|u| (self.keys.collab_updates(&u.stream), self.keys.collab_snapshot(&u.stream)))
            .collect();
        let refused = self.with(|conn, scripts, _| {
            let mut call = scripts.collab_append.prepare_invoke();
            call.key(&counter);
            for ((updates, snapshot), member) in keys.iter().zip(&members) {
                call.key(updates).key(snapshot).arg(member);
            }
            refusal(call.invoke::<Value>(conn).map_err(redis_err)?)
        })?;
        match refused {
            None => Ok(()),
            Some((i, why)) => {
                let u = &batch[i];
                Err(StoreError::Db(format!(
                    "journal entry {}#{} not stored, batch rolled back: {why}",
                    u.stream, u.seq
                )))
            }
        }
    }

    fn log_load(&mut self, doc: &str) -> Result<LogState, StoreError> {
        let (snapshot_key, updates_key) = (self.keys.collab_snapshot(doc), self.keys.collab_updates(doc));
        let (snapshot, updates) = self.with(|conn, _, _| {
            let replies = redis::pipe()
                .atomic()
                .get(&snapshot_key)
                .cmd("ZRANGEBYLEX")
                .arg(&updates_key)
                .arg("-")
                .arg("+")
                .query::<Value>(conn)
                .map_err(redis_err)?;
            decode::<(Option<Vec<u8>>, Vec<Vec<u8>>)>(replies, doc)
        })?;
        let snapshot = snapshot.map(|s| split_seq(s, doc)).transpose()?;
        let after = snapshot.as_ref().map(|(seq, _)| *seq);
        let mut state = LogState { snapshot, entries: Vec::with_capacity(updates.len()) };
        for member in updates {
            let (seq, data) = split_seq(member, doc)?;
            if after.is_none_or(|after| seq > after) {
                state.entries.push((seq, data));
            }
        }
        Ok(state)
    }

    fn log_compact(&mut self, doc: &str, upto_seq: u64, snapshot: &[u8]) -> Result<(), StoreError> {
        let seq = seq_bytes(upto_seq, doc)?;
        let value: Vec<u8> = seq.iter().chain(snapshot).copied().collect();
        // upto_seq fits an i64 (checked above), so one past it fits a u64.
        let covered = lex_bound(b'(', upto_seq + 1);
        let keys = [self.keys.collab_updates(doc), self.keys.collab_snapshot(doc), self.keys.collab_bytes()];
        let replaced = self.with(|conn, scripts, _| {
            let reply = scripts
                .collab_compact
                .key(&keys[0])
                .key(&keys[1])
                .key(&keys[2])
                .arg(&value)
                .arg(&covered)
                .invoke::<Value>(conn)
                .map_err(redis_err)?;
            decode::<i64>(reply, doc)
        })?;
        if replaced == 0 {
            tracing::debug!(doc, upto_seq, "journal snapshot older than the stored one ignored");
        }
        Ok(())
    }

    fn log_bytes(&mut self) -> Result<u64, StoreError> {
        let key = self.keys.collab_bytes();
        let total = self.with(|conn, _, _| {
            decode::<Option<i64>>(redis::cmd("GET").arg(&key).query(conn).map_err(redis_err)?, "collab")
        })?;
        let total = total.unwrap_or(0);
        u64::try_from(total).map_err(|_| StoreError::Corrupt(format!("negative collab byte total {total}")))
    }

    fn geo_load(&mut self, tenant: &str) -> Result<GeoState, StoreError> {
        self.with(|conn, scripts, keys| geo::load(conn, &scripts.geo, keys, tenant))
    }

    fn geo_fences(&mut self, batch: &[GeoFenceChange]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.with(|conn, scripts, keys| geo::fences(conn, &scripts.geo, keys, batch))
    }

    fn geo_log(&mut self, batch: &[GeoLog]) -> Result<(), StoreError> {
        if batch.iter().all(|l| l.events.is_empty()) {
            return Ok(());
        }
        self.with(|conn, scripts, keys| geo::log(conn, &scripts.geo, keys, batch))
    }

    fn geo_positions(&mut self, tenant: &str, rows: &[GeoPosition]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.with(|conn, scripts, keys| geo::positions(conn, &scripts.geo, keys, tenant, rows))
    }
}

/// A lex range bound: `[` (inclusive) or `(` (exclusive) and `seq` as 8 bytes big-endian.
fn lex_bound(kind: u8, seq: u64) -> Vec<u8> {
    let mut bound = Vec::with_capacity(9);
    bound.push(kind);
    bound.extend_from_slice(&seq.to_be_bytes());
    bound
}

/// A document's seq as stored (8 bytes big-endian), refusing values past `i64::MAX`.
fn seq_bytes(seq: u64, doc: &str) -> Result<[u8; 8], StoreError> {
    seq_to_i64(seq, doc).map(|seq| seq.to_be_bytes())
}

/// Splits a stored seq-prefixed value (an update member or a snapshot) into seq and bytes.
fn split_seq(mut value: Vec<u8>, doc: &str) -> Result<(u64, Box<[u8]>), StoreError> {
    let Some(seq) = value.first_chunk::<8>() else {
        return Err(StoreError::Corrupt(format!(
            "journal stream {doc}: a stored value of {} bytes",
            value.len()
        )));
    };
    let seq = from_i64(i64::from_be_bytes(*seq), "seq", doc)?;
    value.drain(..8);
    Ok((seq, value.into_boxed_slice()))
}

/// A message as a sorted-set member: seq, id, ts_ms, user length, user, body.
fn encode_message(m: &ChatMessage) -> Result<Vec<u8>, StoreError> {
    let user_len = u32::try_from(m.user.len())
        .map_err(|_| StoreError::Db(format!("message {}#{}: the user name is too long", m.room, m.seq)))?;
    let mut member = Vec::with_capacity(28 + m.user.len() + m.body.len());
    member.extend_from_slice(&to_i64(m.seq, "seq", m)?.to_be_bytes());
    member.extend_from_slice(&to_i64(m.id, "id", m)?.to_be_bytes());
    member.extend_from_slice(&to_i64(m.ts_ms, "ts_ms", m)?.to_be_bytes());
    member.extend_from_slice(&user_len.to_be_bytes());
    member.extend_from_slice(m.user.as_bytes());
    member.extend_from_slice(m.body.as_bytes());
    Ok(member)
}

/// The inverse of [`encode_message`].
fn decode_message(member: &[u8], room: &Arc<str>) -> Result<ChatMessage, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt(format!("room {room}: a stored message {why}"));
    let (head, rest) = member.split_first_chunk::<28>().ok_or_else(|| corrupt("is too short"))?;
    let field = |at: usize, name: &str| {
        let bytes: [u8; 8] = head[at..at + 8].try_into().expect("8 bytes");
        from_i64(i64::from_be_bytes(bytes), name, room)
    };
    let user_len = u32::from_be_bytes(head[24..28].try_into().expect("4 bytes")) as usize;
    if rest.len() < user_len {
        return Err(corrupt("is shorter than its user name"));
    }
    let (user, body) = rest.split_at(user_len);
    let user = std::str::from_utf8(user).map_err(|_| corrupt("has a user name that is not UTF-8"))?;
    let body = std::str::from_utf8(body).map_err(|_| corrupt("has a body that is not UTF-8"))?;
    Ok(ChatMessage {
        room: Arc::clone(room),
        seq: field(0, "seq")?,
        id: field(8, "id")?,
        user: Arc::from(user),
        body: body.into(),
        ts_ms: field(16, "ts_ms")?,
    })
}

/// A page of at most `limit` messages from members fetched newest first (one more than `limit` tells
/// that older ones remain).
fn page_of(rows: &[Vec<u8>], limit: usize, room: &Arc<str>) -> Result<Page, StoreError> {
    let mut messages =
        rows.iter().take(limit).map(|m| decode_message(m, room)).collect::<Result<Vec<_>, _>>()?;
    messages.reverse();
    Ok(Page { messages, more: rows.len() > limit })
}

/// What a writing script answered: `None` when it wrote the batch, else the (0-based) index of the item
/// it refused and why.
fn refusal(reply: Value) -> Result<Option<(usize, String)>, StoreError> {
    match decode::<Option<(i64, String)>>(reply, "script reply")? {
        None => Ok(None),
        Some((i, why)) => match usize::try_from(i - 1) {
            Ok(i) => Ok(Some((i, why))),
            Err(_) => Err(StoreError::Corrupt(format!("script refused item {i}: {why}"))),
        },
    }
}

/// Converts a reply to `T`; a reply of another shape is data this code did not write.
fn decode<T: redis::FromRedisValue>(reply: Value, what: &str) -> Result<T, StoreError> {
    redis::from_redis_value(reply).map_err(|e| StoreError::Corrupt(format!("{what}: unexpected reply: {e}")))
}

/// `host:port/db` of a connection, for messages.
fn label(info: &redis::ConnectionInfo) -> String {
    format!("{}/{}", info.addr(), info.redis_settings().db())
}

/// Classifies a Redis error: a lost, refused or timed-out connection and conditions that pass by
/// themselves or that an operator fixes (loading, out of memory, a failed disk write, a read-only
/// replica, a busy script) are `Unavailable`; the rest is `Db`.
fn redis_err(e: RedisError) -> StoreError {
    let text = e.to_string();
    match e.kind() {
        ErrorKind::Io | ErrorKind::Parse => StoreError::Unavailable(text),
        _ if e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal() => {
            StoreError::Unavailable(text)
        }
        _ => match e.code() {
            Some("LOADING" | "OOM" | "MISCONF" | "READONLY" | "MASTERDOWN" | "TRYAGAIN" | "BUSY") => {
                StoreError::Unavailable(text)
            }
            _ => StoreError::Db(text),
        },
    }
}

#[cfg(test)]
mod tests;
