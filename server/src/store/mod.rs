//! Persistence behind one interface, run on a storage thread so no database call ever blocks a worker.
//!
//! Workers send [`StoreRequest`]s through a bounded channel; the storage thread drains it in groups,
//! commits all appends of a group in one transaction (group commit), runs reads after the writes that
//! were queued before them, and sends each result back to the requesting worker's inbox.

#[cfg(test)]
mod conformance;
mod postgres;
mod reconnect;
mod redis;
mod sqlite;
/// Also the storage behind the fuzz targets' sessions (`crate::fuzzing`).
pub(crate) mod testing;
mod thread;

use std::borrow::Cow;
use std::sync::Arc;

pub(crate) use self::postgres::describe as postgres_error_text;
pub use self::postgres::PostgresStore;
pub use self::redis::RedisStore;
pub use sqlite::SqliteStore;
pub use thread::{spawn, StoreHandle, StoreStats, SubmitError, COMMIT_BUCKETS};

/// One chat message as stored. `seq` is unique and increasing per room; `id` is a globally unique u64
/// assigned by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub room: Arc<str>,
    pub seq: u64,
    pub id: u64,
    pub user: Arc<str>,
    pub body: Box<str>,
    pub ts_ms: u64,
}

/// A page of messages in ascending `seq` order; `more` says older messages exist in the requested range
/// beyond this page.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    pub messages: Vec<ChatMessage>,
    pub more: bool,
}

/// One entry of a journal stream, in the order the stream's owner wrote it.
///
/// The journal is an append-only log per stream plus a snapshot that covers a prefix of it: each
/// topic family keeps its state as entries and replays its stream on load (collab documents store Yjs
/// updates; wallets and bet markets store their operations). Stream names: a collab document is its
/// bare name, which never contains `/` (the names written before the journal served other families);
/// every other family names its streams `<family>/<id>` (see [`log_stream`]), so they never meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub stream: Arc<str>,
    pub seq: u64,
    pub data: Box<[u8]>,
}

/// A journal stream as stored: the latest snapshot (with the seq it covers) and every entry after it,
/// ascending.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogState {
    pub snapshot: Option<(u64, Box<[u8]>)>,
    pub entries: Vec<(u64, Box<[u8]>)>,
}

/// The journal stream of `id` in `family` (`"wallet"`, `"bet"`): `family/id`. Family names hold no
/// `/`, so the family of a stream is the text before its first `/`.
pub fn log_stream(family: &str, id: &str) -> Arc<str> {
    debug_assert!(!family.contains('/'));
    format!("{family}/{id}").into()
}

/// The family of a journal stream (`"wallet"` for `wallet/alice`); `None` for a collab document.
pub fn log_family(stream: &str) -> Option<&str> {
    stream.split_once('/').map(|(family, _)| family)
}

/// An object's last known position in a geofencing tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoPosition {
    pub id: Arc<str>,
    pub lat: f64,
    pub lon: f64,
    /// Milliseconds since the Unix epoch, fractions allowed.
    pub ts: f64,
    pub speed: Option<f64>,
    pub heading: Option<f64>,
    /// The object's properties as a JSON object.
    pub props: Option<Arc<str>>,
}

/// What a logged geofence event was. `Enter`, `Exit` and `Dwell` also keep the table of which objects
/// are inside which fences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoLogKind {
    Enter,
    Exit,
    Cross,
    Dwell,
}

impl GeoLogKind {
    /// The event's name on the wire and in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            GeoLogKind::Enter => "enter",
            GeoLogKind::Exit => "exit",
            GeoLogKind::Cross => "cross",
            GeoLogKind::Dwell => "dwell",
        }
    }
}

/// One geofence event as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoEvent {
    pub fence: Arc<str>,
    pub object: Arc<str>,
    pub kind: GeoLogKind,
    pub lat: f64,
    pub lon: f64,
    /// The update's timestamp (milliseconds since the epoch).
    pub ts: f64,
    /// Server time of the event, milliseconds since the epoch: the `since` of an enter.
    pub at_ms: u64,
}

/// The logged events of one tenant's update, written together.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoLog {
    pub tenant: Arc<str>,
    pub events: Vec<GeoEvent>,
}

/// An object inside a fence, as stored: since when (server milliseconds) and whether its dwell fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoInside {
    pub fence: Arc<str>,
    pub object: Arc<str>,
    pub since_ms: u64,
    pub dwelled: bool,
}

/// A change to one fence: create (`fresh`, forgetting any inside rows left under its id), replace, or
/// delete (`json: None`).
#[derive(Debug, Clone, PartialEq)]
pub struct GeoFenceChange {
    pub tenant: Arc<str>,
    pub id: Arc<str>,
    pub json: Option<Arc<str>>,
    pub fresh: bool,
}

/// A geofencing tenant as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GeoState {
    /// Fence id and definition (JSON), by id.
    pub fences: Vec<(Arc<str>, Box<str>)>,
    pub objects: Vec<GeoPosition>,
    pub inside: Vec<GeoInside>,
}

/// The bounds of a history query in `i64`: an exclusive lower and an inclusive upper seq (stored seqs
/// are never negative, so -1 means "no lower bound"), and the rows to fetch — one past `limit`, which
/// tells whether older messages remain without a COUNT. `None` when the range is empty.
pub(crate) fn history_bounds(
    before_seq: Option<u64>,
    after_seq: Option<u64>,
    limit: usize,
) -> Option<(i64, i64, i64)> {
    let upper = match before_seq {
        Some(0) => return None,
        Some(before) => i64::try_from(before - 1).unwrap_or(i64::MAX),
        None => i64::MAX,
    };
    let lower = match after_seq {
        Some(after) => i64::try_from(after).ok()?,
        None => -1,
    };
    Some((lower, upper, i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)))
}

/// A room's head (highest seq) from its latest page: an unbounded page ends at the newest message, so its
/// last seq is the head and an empty, complete page means an empty room; only a page that asked for no
/// messages at all needs `max_seq`, the backend's own `MAX(seq)` query.
pub(crate) fn head_of(
    page: &Page,
    room: &str,
    max_seq: impl FnOnce() -> Result<Option<i64>, StoreError>,
) -> Result<u64, StoreError> {
    match page.messages.last() {
        Some(last) => Ok(last.seq),
        None if !page.more => Ok(0),
        None => match max_seq()? {
            Some(seq) => from_i64(seq, "seq", room),
            None => Ok(0),
        },
    }
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Db(String),
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The backend cannot be reached or is shutting down.
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
}

/// SQLite `synchronous` setting. `Full`: every commit is fsynced and survives power loss. `Normal` (in WAL
/// mode): survives a process crash, may lose the last commits on power loss. `Off`: no fsync at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    Off,
    Normal,
    Full,
}

/// PostgreSQL `synchronous_commit` setting. `On`: a commit returns once its WAL is flushed to disk, so
/// it survives a crash of the database server or the machine. `Off`: a commit returns before the flush;
/// a crash of the database server may lose the last commits (never half of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynchronousCommit {
    On,
    Off,
}

impl SynchronousCommit {
    /// The setting's value as PostgreSQL spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SynchronousCommit::On => "on",
            SynchronousCommit::Off => "off",
        }
    }
}

/// Redis `appendfsync` policy, applied with the append-only file switched on. `Always`: Redis fsyncs
/// the AOF before it replies to a write, so an acked write survives a crash of Redis or the machine.
/// `EverySec`: fsync once a second; a crash may lose about the last second of acked writes (two when the
/// disk is slow). `No`: the OS decides when the AOF reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendFsync {
    Always,
    EverySec,
    No,
}

impl AppendFsync {
    /// The policy as Redis spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AppendFsync::Always => "always",
            AppendFsync::EverySec => "everysec",
            AppendFsync::No => "no",
        }
    }
}

/// The durability settings of every backend; the one matching the store URL applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    pub sqlite: Synchronous,
    pub postgres: SynchronousCommit,
    pub redis: AppendFsync,
}

/// A storage backend. Called only from the storage thread, never from a worker.
pub trait Backend: Send {
    /// Short name for logs and metrics ("sqlite").
    fn name(&self) -> &'static str;
    /// Store a batch of messages in ONE transaction; when this returns Ok they are durable per the
    /// configured setting. A duplicate (room, seq) is an error and nothing of the batch is stored.
    fn append(&mut self, batch: &[ChatMessage]) -> Result<(), StoreError>;
    /// The room's highest seq (0 when empty) and its latest `recent` messages (ascending; `more` = older
    /// exist).
    fn room_head(&mut self, room: &str, recent: usize) -> Result<(u64, Page), StoreError>;
    /// The LATEST `limit` messages with after_seq < seq < before_seq (each bound optional), ascending;
    /// `more` = there are older messages in that range not included.
    fn history(
        &mut self,
        room: &str,
        before_seq: Option<u64>,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Page, StoreError>;
    /// Store a batch of journal entries in ONE transaction (durable on return, per the sync
    /// setting). A duplicate (stream, seq), or a seq the stream's snapshot covers, is an error and
    /// nothing of the batch is stored.
    fn log_append(&mut self, batch: &[LogEntry]) -> Result<(), StoreError>;
    /// The stream's snapshot and the entries after it.
    fn log_load(&mut self, stream: &str) -> Result<LogState, StoreError>;
    /// Replace the snapshot with `snapshot` covering every entry with seq <= `upto_seq`, and delete
    /// those entries, in one transaction. An older snapshot than the stored one is ignored.
    fn log_compact(&mut self, stream: &str, upto_seq: u64, snapshot: &[u8]) -> Result<(), StoreError>;
    /// Bytes stored in every journal stream (snapshots + entries), for metrics.
    fn log_bytes(&mut self) -> Result<u64, StoreError>;
    /// A geofencing tenant's fences, last positions and inside table.
    fn geo_load(&mut self, tenant: &str) -> Result<GeoState, StoreError>;
    /// Apply fence changes in ONE transaction; deleting a fence deletes its rows of the inside table.
    fn geo_fences(&mut self, batch: &[GeoFenceChange]) -> Result<(), StoreError>;
    /// Append events to the log in ONE transaction, keeping the inside table: `enter` inserts (or
    /// replaces) the pair, `exit` deletes it, `dwell` marks it dwelled.
    fn geo_log(&mut self, batch: &[GeoLog]) -> Result<(), StoreError>;
    /// Upsert last positions.
    fn geo_positions(&mut self, tenant: &str, rows: &[GeoPosition]) -> Result<(), StoreError>;
}

/// What a worker asks of the storage thread. `tag` is the worker's own correlation value, returned
/// unchanged in the matching [`StoreResult`].
#[derive(Debug)]
pub enum StoreRequest {
    /// Make a message durable.
    Append { msg: ChatMessage, tag: u64 },
    /// Load a room's head (highest seq and recent messages).
    RoomHead { room: Arc<str>, recent: usize, tag: u64 },
    /// Fetch a page of history.
    History { room: Arc<str>, before_seq: Option<u64>, after_seq: Option<u64>, limit: usize, tag: u64 },
    /// Make a journal entry durable (group-committed).
    LogAppend { entry: LogEntry, tag: u64 },
    /// Load a journal stream's snapshot and later entries.
    LogLoad { stream: Arc<str>, tag: u64 },
    /// Store a snapshot covering entries up to `upto_seq` and drop those entries.
    LogCompact { stream: Arc<str>, upto_seq: u64, snapshot: Box<[u8]>, tag: u64 },
    /// Load a geofencing tenant.
    GeoLoad { tenant: Arc<str>, tag: u64 },
    /// Change a fence (group-committed).
    GeoFence { change: GeoFenceChange, tag: u64 },
    /// Make a tenant's events durable (group-committed).
    GeoLog { log: GeoLog, tag: u64 },
    /// Write last positions behind.
    GeoPositions { tenant: Arc<str>, rows: Vec<GeoPosition>, tag: u64 },
}

/// The answer to one [`StoreRequest`], delivered to the worker that asked.
#[derive(Debug)]
pub enum StoreResult {
    /// The message is durable (or failed); it comes back so the owner need not keep a copy.
    Appended { msg: ChatMessage, tag: u64, result: Result<(), Arc<StoreError>> },
    /// A room head.
    RoomHead { room: Arc<str>, tag: u64, result: Result<(u64, Page), Arc<StoreError>> },
    /// A history page.
    History { room: Arc<str>, tag: u64, result: Result<Page, Arc<StoreError>> },
    /// A journal entry is durable (or failed).
    LogAppended { stream: Arc<str>, seq: u64, tag: u64, result: Result<(), Arc<StoreError>> },
    /// A journal stream's stored state.
    LogLoaded { stream: Arc<str>, tag: u64, result: Result<LogState, Arc<StoreError>> },
    /// A compaction finished (or failed).
    LogCompacted { stream: Arc<str>, tag: u64, result: Result<(), Arc<StoreError>> },
    /// A tenant's stored state.
    GeoLoaded { tenant: Arc<str>, tag: u64, result: Result<GeoState, Arc<StoreError>> },
    /// A fence change, a batch of events or of positions is durable (or failed).
    GeoDone { tenant: Arc<str>, tag: u64, result: Result<(), Arc<StoreError>> },
}

impl StoreResult {
    /// The tag of a journal result (append, load or compaction of a stream); `None` for other kinds.
    pub fn log_tag(&self) -> Option<u64> {
        match self {
            StoreResult::LogAppended { tag, .. }
            | StoreResult::LogLoaded { tag, .. }
            | StoreResult::LogCompacted { tag, .. } => Some(*tag),
            _ => None,
        }
    }
}

/// Open the backend named by a store URL: `sqlite://PATH` (`sqlite://:memory:` is an in-memory database,
/// lost at exit; for tests), `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?PARAM=VALUE...]` (also
/// `postgresql://`) or `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=PREFIX]`.
pub fn open(url: &str, durability: Durability) -> Result<Box<dyn Backend>, StoreError> {
    match url.split_once("://") {
        Some(("sqlite", path)) if !path.is_empty() => {
            Ok(Box::new(SqliteStore::open(std::path::Path::new(path), durability.sqlite)?))
        }
        Some(("postgres" | "postgresql", _)) => Ok(Box::new(PostgresStore::open(url, durability.postgres)?)),
        Some(("redis", _)) => Ok(Box::new(RedisStore::open(url, durability.redis)?)),
        _ => Err(StoreError::Unavailable(format!(
            "unsupported store URL {:?}: expected sqlite://PATH, postgres://USER@HOST:PORT/DB or \
             redis://HOST:PORT[/DB]",
            redact_url(url)
        ))),
    }
}

/// The store URL with any password (in the user info or a `password` parameter) replaced by `***`, for
/// logs and error messages.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else { return Cow::Borrowed(url) };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    // The last '@' ends the user info: a password may itself hold an '@' that was not percent-encoded.
    let authority = match authority.rfind('@').and_then(|at| Some((authority[..at].split_once(':')?.0, at))) {
        Some((user, at)) => Cow::Owned(format!("{user}:***{}", &authority[at..])),
        None => Cow::Borrowed(authority),
    };
    let is_password = |kv: &&str| kv.starts_with("password=");
    let tail = match tail.split_once('?') {
        Some((path, query)) if query.split('&').any(|kv| is_password(&kv)) => {
            let query: Vec<&str> =
                query.split('&').map(|kv| if is_password(&kv) { "password=***" } else { kv }).collect();
            Cow::Owned(format!("{path}?{}", query.join("&")))
        }
        _ => Cow::Borrowed(tail),
    };
    match (authority, tail) {
        (Cow::Borrowed(_), Cow::Borrowed(_)) => Cow::Borrowed(url),
        (authority, tail) => Cow::Owned(format!("{scheme}://{authority}{tail}")),
    }
}

/// Converts a `u64` field of `m` for storage, refusing values a signed 64-bit column cannot hold.
fn to_i64(value: u64, field: &str, m: &ChatMessage) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        StoreError::Db(format!(
            "message {}#{}: {field} {value} exceeds the storable maximum {}",
            m.room,
            m.seq,
            i64::MAX
        ))
    })
}

/// Converts the seq of a journal stream for storage, refusing values a signed 64-bit column cannot
/// hold.
fn seq_to_i64(seq: u64, stream: &str) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| {
        StoreError::Db(format!(
            "journal stream {stream}: seq {seq} exceeds the storable maximum {}",
            i64::MAX
        ))
    })
}

/// Converts a stored integer back; a negative one was not written by this code.
fn from_i64(value: i64, field: &str, room: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("room {room}: negative {field} {value}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgresql://u:p@ss@h/db?x=1"), "postgresql://u:***@h/db?x=1");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db?a=1&password=x:y@z"), "postgres://h/db?a=1&password=***");
        assert_eq!(redact_url("sqlite://rusher.db"), "sqlite://rusher.db");
        assert_eq!(redact_url("redis://:secret@127.0.0.1:6379/2"), "redis://:***@127.0.0.1:6379/2");
        assert_eq!(redact_url("redis://rusher:p@ss@h?prefix=a:"), "redis://rusher:***@h?prefix=a:");
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("nonsense"), "nonsense");
    }

    #[test]
    fn unknown_schemes_are_refused() {
        let durability = Durability {
            sqlite: Synchronous::Off,
            postgres: SynchronousCommit::On,
            redis: AppendFsync::Always,
        };
        let err = open("mysql://u:pw@h", durability).err().unwrap();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(!err.to_string().contains("pw"), "{err}");
        assert!(open("sqlite://", durability).is_err());
    }
}
