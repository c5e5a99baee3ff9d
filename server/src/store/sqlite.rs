//! The embedded SQLite backend: one file, WAL, `synchronous` set explicitly, one transaction per batch.
//!
//! SQLite integers are signed 64-bit, so every `u64` (seq, id, timestamp) is stored as an `i64`. The server
//! assigns values below 2^63; a larger value is refused with an error instead of wrapping into a negative
//! number that would sort wrongly and read back as a different value.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

mod geo;

use super::{
    from_i64, seq_to_i64, to_i64, Backend, ChatMessage, GeoFenceChange, GeoLog, GeoPosition, GeoState,
    LogEntry, LogState, Page, StoreError, Synchronous,
};

/// How long a statement waits for a lock held by another connection (a backup tool, the `sqlite3` shell)
/// before giving up with [`StoreError::Unavailable`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema steps, applied in order; `PRAGMA user_version` records how many have run. Append new steps at the
/// end and never edit a released one: existing databases have already applied it.
const MIGRATIONS: &[&str] = &[
    // STRICT makes SQLite refuse a value of the wrong type instead of silently storing it, so a row that
    // reads back is a row this code wrote. WITHOUT ROWID clusters rows by (room, seq): a room's history is
    // one contiguous range of the primary key, which is exactly what `history` scans.
    "CREATE TABLE chat_messages (
        room  TEXT    NOT NULL,
        seq   INTEGER NOT NULL CHECK (seq >= 0),
        id    INTEGER NOT NULL CHECK (id >= 0),
        user  TEXT    NOT NULL,
        body  TEXT    NOT NULL,
        ts_ms INTEGER NOT NULL CHECK (ts_ms >= 0),
        PRIMARY KEY (room, seq)
    ) STRICT, WITHOUT ROWID;",
    // The journal (first written for collaborative documents, whose names the tables keep; `doc` is the
    // stream). Entries are small (a Yjs update per edit, a wallet operation) and read as one key range per
    // stream, so they are clustered by (doc, seq) like chat messages. Snapshots hold a whole state and
    // can be large; SQLite advises a rowid table for rows that big.
    "CREATE TABLE collab_updates (
        doc  TEXT    NOT NULL,
        seq  INTEGER NOT NULL CHECK (seq >= 0),
        data BLOB    NOT NULL,
        PRIMARY KEY (doc, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE collab_snapshots (
        doc  TEXT    NOT NULL PRIMARY KEY,
        seq  INTEGER NOT NULL CHECK (seq >= 0),
        data BLOB    NOT NULL
    ) STRICT;",
    // Geofencing. Fences keep their definition as JSON, parsed by the server on load. Positions are
    // upserted behind the updates; the inside table is kept by the event log's transactions, so it says
    // exactly what subscribers were told. Events are appended in rowid order, with no secondary index:
    // nothing reads them by tenant yet, and every index is one more B-tree insert per event.
    "CREATE TABLE geo_fences (
        tenant TEXT NOT NULL,
        id     TEXT NOT NULL,
        json   TEXT NOT NULL,
        PRIMARY KEY (tenant, id)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE geo_objects (
        tenant  TEXT NOT NULL,
        id      TEXT NOT NULL,
        lat     REAL NOT NULL,
        lon     REAL NOT NULL,
        ts      REAL NOT NULL,
        speed   REAL,
        heading REAL,
        props   TEXT,
        PRIMARY KEY (tenant, id)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE geo_inside (
        tenant   TEXT    NOT NULL,
        fence    TEXT    NOT NULL,
        object   TEXT    NOT NULL,
        since_ms INTEGER NOT NULL,
        dwelled  INTEGER NOT NULL CHECK (dwelled IN (0, 1)),
        PRIMARY KEY (tenant, fence, object)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE geo_events (
        id     INTEGER PRIMARY KEY,
        tenant TEXT    NOT NULL,
        fence  TEXT    NOT NULL,
        object TEXT    NOT NULL,
        event  TEXT    NOT NULL CHECK (event IN ('enter', 'exit', 'cross', 'dwell')),
        lat    REAL    NOT NULL,
        lon    REAL    NOT NULL,
        ts     REAL    NOT NULL,
        at_ms  INTEGER NOT NULL
    ) STRICT;",
];

/// The schema version this build writes: the number of [`MIGRATIONS`].
const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Chat history and collaborative documents in a SQLite database.
///
/// Owns a single connection; the storage thread is its only user, so no pool and no locking are needed.
#[derive(Debug)]
pub struct SqliteStore {
    /// Always in WAL mode (unless in memory) and at [`SCHEMA_VERSION`].
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    ///
    /// The path `:memory:` opens a private in-memory database.
    pub fn open(path: &Path, sync: Synchronous) -> Result<Self, StoreError> {
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        Self::init(conn, sync, &path.display().to_string())
    }

    /// Opens a private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()
            .map_err(|e| StoreError::Unavailable(format!("cannot open in-memory database: {e}")))?;
        Self::init(conn, Synchronous::Off, ":memory:")
    }

    fn init(mut conn: Connection, sync: Synchronous, label: &str) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
        // In WAL readers never block the writer and a commit is one sequential append to the log.
        let journal_mode: String =
            conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)).map_err(db_err)?;
        if !journal_mode.eq_ignore_ascii_case("wal") && !journal_mode.eq_ignore_ascii_case("memory") {
            tracing::warn!(db = label, journal_mode, "sqlite refused WAL mode");
        }
        // Set even when it matches SQLite's default: durability must be what the operator configured, not
        // what the library was compiled with.
        let sync_value = match sync {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync_value).map_err(db_err)?;
        // 64 MiB of page cache instead of SQLite's 2 MiB: the geofencing tables are written in random key
        // order (positions, who is inside), and pages read again from the OS cost the storage thread.
        conn.pragma_update(None, "cache_size", -65_536).map_err(db_err)?;
        let (from, to) = migrate(&mut conn)?;
        tracing::info!(
            db = label,
            journal_mode,
            synchronous = sync_value,
            schema_from = from,
            schema_to = to,
            "sqlite store open"
        );
        Ok(Self { conn })
    }
}

/// Applies the pending [`MIGRATIONS`] in one transaction; returns the schema version before and after.
fn migrate(conn: &mut Connection) -> Result<(u32, u32), StoreError> {
    // IMMEDIATE takes the write lock before reading the version, so two processes opening the same new
    // file cannot both decide to create the table.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let current: u32 = tx.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(db_err)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Db(format!(
            "database schema version {current} is newer than this build understands ({SCHEMA_VERSION})"
        )));
    }
    for (done, step) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(step).map_err(|e| StoreError::Db(format!("schema migration {}: {e}", done + 1)))?;
    }
    if current != SCHEMA_VERSION {
        // user_version lives in the database header, which is written under the same transaction as the
        // steps: either all of them and the new version are stored, or none.
        tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(db_err)?;
    }
    tx.commit().map_err(db_err)?;
    Ok((current, SCHEMA_VERSION))
}

impl Backend for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn append(&mut self, batch: &[ChatMessage]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Checked before the transaction so a bad value costs no write lock and stores nothing.
        let rows = batch
            .iter()
            .map(|m| Ok((to_i64(m.seq, "seq", m)?, to_i64(m.id, "id", m)?, to_i64(m.ts_ms, "ts_ms", m)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        // IMMEDIATE so a competing writer makes us wait out the busy timeout here, instead of failing the
        // batch halfway when a deferred transaction tries to upgrade its lock.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO chat_messages (room, seq, id, user, body, ts_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(db_err)?;
            for (m, (seq, id, ts_ms)) in batch.iter().zip(rows) {
                insert.execute(params![&*m.room, seq, id, &*m.user, &*m.body, ts_ms]).map_err(|e| match e
                    .sqlite_error_code()
                {
                    Some(ErrorCode::ConstraintViolation) => StoreError::Db(format!(
                        "message {}#{} not stored, batch rolled back: {e}",
                        m.room, m.seq
                    )),
                    _ => db_err(e),
                })?;
            }
        }
        // Dropping an uncommitted transaction rolls it back, so any `?` above leaves nothing behind.
        tx.commit().map_err(db_err)
    }

    fn room_head(&mut self, room: &str, recent: usize) -> Result<(u64, Page), StoreError> {
        let page = self.history(room, None, None, recent)?;
        let head = super::head_of(&page, room, || {
            Ok(self
                .conn
                .prepare_cached("SELECT MAX(seq) FROM chat_messages WHERE room = ?1")
                .and_then(|mut stmt| stmt.query_row([room], |row| row.get(0)).optional())
                .map_err(db_err)?
                .flatten())
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
        let Some((lower, upper, fetch)) = super::history_bounds(before_seq, after_seq, limit) else {
            return Ok(Page::default());
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, id, user, body, ts_ms FROM chat_messages
                 WHERE room = ?1 AND seq > ?2 AND seq <= ?3
                 ORDER BY seq DESC LIMIT ?4",
            )
            .map_err(db_err)?;
        let mut rows = stmt.query(params![room, lower, upper, fetch]).map_err(db_err)?;
        let room_arc: Arc<str> = Arc::from(room);
        let mut messages = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        while let Some(row) = rows.next().map_err(db_err)? {
            if messages.len() == limit {
                more = true;
                break;
            }
            messages.push(decode_row(row, &room_arc)?);
        }
        messages.reverse();
        Ok(Page { messages, more })
    }

    fn log_append(&mut self, batch: &[LogEntry]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let seqs = batch.iter().map(|u| seq_to_i64(u.seq, &u.stream)).collect::<Result<Vec<_>, _>>()?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        {
            // A seq at or below the snapshot's was stored before and compacted away; taking it again would
            // leave a row that no load returns, so it counts as a duplicate too.
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO collab_updates (doc, seq, data)
                     SELECT ?1, ?2, ?3
                     WHERE NOT EXISTS (SELECT 1 FROM collab_snapshots WHERE doc = ?1 AND seq >= ?2)",
                )
                .map_err(db_err)?;
            for (u, seq) in batch.iter().zip(seqs) {
                let inserted = insert.execute(params![&*u.stream, seq, &*u.data]).map_err(|e| {
                    match e.sqlite_error_code() {
                        Some(ErrorCode::ConstraintViolation) => StoreError::Db(format!(
                            "journal entry {}#{} not stored, batch rolled back: {e}",
                            u.stream, u.seq
                        )),
                        _ => db_err(e),
                    }
                })?;
                if inserted == 0 {
                    return Err(StoreError::Db(format!(
                        "journal entry {}#{} not stored, batch rolled back: the stored snapshot covers it",
                        u.stream, u.seq
                    )));
                }
            }
        }
        tx.commit().map_err(db_err)
    }

    fn log_load(&mut self, doc: &str) -> Result<LogState, StoreError> {
        // One read transaction, so the snapshot and the updates come from the same state of the database.
        let tx = self.conn.transaction().map_err(db_err)?;
        let corrupt = |e: rusqlite::Error| StoreError::Corrupt(format!("journal stream {doc}: {e}"));
        // Stored seqs are never negative, so -1 means "no snapshot: every update".
        let (after, snapshot) = {
            let mut stmt =
                tx.prepare_cached("SELECT seq, data FROM collab_snapshots WHERE doc = ?1").map_err(db_err)?;
            let mut rows = stmt.query([doc]).map_err(db_err)?;
            match rows.next().map_err(db_err)? {
                Some(row) => {
                    let seq: i64 = row.get(0).map_err(corrupt)?;
                    let data: Vec<u8> = row.get(1).map_err(corrupt)?;
                    (seq, Some((from_i64(seq, "seq", doc)?, data.into_boxed_slice())))
                }
                None => (-1, None),
            }
        };
        let mut updates = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, data FROM collab_updates WHERE doc = ?1 AND seq > ?2 ORDER BY seq ASC",
                )
                .map_err(db_err)?;
            let mut rows = stmt.query(params![doc, after]).map_err(db_err)?;
            while let Some(row) = rows.next().map_err(db_err)? {
                let seq = from_i64(row.get(0).map_err(corrupt)?, "seq", doc)?;
                let data: Vec<u8> = row.get(1).map_err(corrupt)?;
                updates.push((seq, data.into_boxed_slice()));
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(LogState { snapshot, entries: updates })
    }

    fn log_compact(&mut self, doc: &str, upto_seq: u64, snapshot: &[u8]) -> Result<(), StoreError> {
        let upto = seq_to_i64(upto_seq, doc)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        // The conditional upsert changes no row when the stored snapshot is newer; an equal seq replaces it.
        let replaced = tx
            .prepare_cached(
                "INSERT INTO collab_snapshots (doc, seq, data) VALUES (?1, ?2, ?3)
                 ON CONFLICT (doc) DO UPDATE SET seq = excluded.seq, data = excluded.data
                 WHERE excluded.seq >= collab_snapshots.seq",
            )
            .and_then(|mut stmt| stmt.execute(params![doc, upto, snapshot]))
            .map_err(db_err)?;
        if replaced == 0 {
            tracing::debug!(doc, upto_seq, "journal snapshot older than the stored one ignored");
            return Ok(());
        }
        tx.prepare_cached("DELETE FROM collab_updates WHERE doc = ?1 AND seq <= ?2")
            .and_then(|mut stmt| stmt.execute(params![doc, upto]))
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    fn log_bytes(&mut self) -> Result<u64, StoreError> {
        // length() of a BLOB comes from the record header; the blob itself is not read.
        let total: i64 = self
            .conn
            .prepare_cached(
                "SELECT (SELECT COALESCE(SUM(length(data)), 0) FROM collab_updates)
                      + (SELECT COALESCE(SUM(length(data)), 0) FROM collab_snapshots)",
            )
            .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
            .map_err(db_err)?;
        u64::try_from(total).map_err(|_| StoreError::Corrupt(format!("negative collab byte total {total}")))
    }

    fn geo_load(&mut self, tenant: &str) -> Result<GeoState, StoreError> {
        geo::load(&mut self.conn, tenant)
    }

    fn geo_fences(&mut self, batch: &[GeoFenceChange]) -> Result<(), StoreError> {
        geo::fences(&mut self.conn, batch)
    }

    fn geo_log(&mut self, batch: &[GeoLog]) -> Result<(), StoreError> {
        geo::log(&mut self.conn, batch)
    }

    fn geo_positions(&mut self, tenant: &str, rows: &[GeoPosition]) -> Result<(), StoreError> {
        geo::positions(&mut self.conn, tenant, rows)
    }
}

/// Builds a message from a `seq, id, user, body, ts_ms` row of `room`.
fn decode_row(row: &rusqlite::Row<'_>, room: &Arc<str>) -> Result<ChatMessage, StoreError> {
    let corrupt = |e: rusqlite::Error| StoreError::Corrupt(format!("room {room}: {e}"));
    let seq = from_i64(row.get(0).map_err(corrupt)?, "seq", room)?;
    let id = from_i64(row.get(1).map_err(corrupt)?, "id", room)?;
    let user: String = row.get(2).map_err(corrupt)?;
    let body: String = row.get(3).map_err(corrupt)?;
    let ts_ms = from_i64(row.get(4).map_err(corrupt)?, "ts_ms", room)?;
    Ok(ChatMessage {
        room: Arc::clone(room),
        seq,
        id,
        user: Arc::from(user),
        body: body.into_boxed_str(),
        ts_ms,
    })
}

/// Classifies a SQLite error: conditions an operator can fix or that pass by themselves (locks, a full
/// disk, I/O) are `Unavailable`, a damaged file is `Corrupt`, the rest is `Db`.
fn db_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::OutOfMemory,
        ) => StoreError::Unavailable(e.to_string()),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt(format!("database file: {e}"))
        }
        _ => StoreError::Db(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{conformance_suite, entry, msg, seqs, upd, update_seqs, Inspect, Store};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    impl Inspect for SqliteStore {
        fn stored_updates(&mut self, doc: Option<&str>) -> u64 {
            let sql = "SELECT COUNT(*) FROM collab_updates WHERE ?1 IS NULL OR doc = ?1";
            self.conn.query_row(sql, [doc], |r| r.get(0)).unwrap()
        }
        fn logged_events(&mut self, tenant: &str) -> u64 {
            let sql = "SELECT COUNT(*) FROM geo_events WHERE tenant = ?1";
            self.conn.query_row(sql, [tenant], |r| r.get(0)).unwrap()
        }
    }

    conformance_suite!(|| -> Store { Box::new(SqliteStore::open_in_memory().unwrap()) });

    /// A fresh directory under the system temp dir, removed with everything in it on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
            let dir = std::env::temp_dir().join(format!(
                "rusher-sqlite-{}-{}-{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn user_version(store: &SqliteStore) -> u32 {
        store.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn name_is_sqlite() {
        assert_eq!(SqliteStore::open_in_memory().unwrap().name(), "sqlite");
    }

    #[test]
    fn negative_stored_value_reads_as_corrupt() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        store.conn.execute("INSERT INTO chat_messages VALUES ('r', 1, 7, 'u', 'b', 0)", []).unwrap();
        // Bypass the CHECK constraint the way a damaged file or a foreign writer could.
        store
            .conn
            .execute_batch("PRAGMA ignore_check_constraints = ON; UPDATE chat_messages SET id = -7;")
            .unwrap();
        let err = store.history("r", None, None, 10).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn file_database_survives_reopen_and_uses_wal() {
        let dir = TempDir::new();
        let path = dir.0.join("chat.db");
        let batch: Vec<_> = (1..=5).map(|s| msg("room:a", s, "kept")).collect();
        {
            let mut store = SqliteStore::open(&path, Synchronous::Full).unwrap();
            let mode: String = store.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
            assert_eq!(mode, "wal");
            let sync: i64 = store.conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
            assert_eq!(sync, 2);
            store.append(&batch).unwrap();
        }
        assert!(path.exists());
        let mut store = SqliteStore::open(&path, Synchronous::Normal).unwrap();
        let sync: i64 = store.conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, 1);
        let (head, page) = store.room_head("room:a", 10).unwrap();
        assert_eq!(head, 5);
        assert_eq!(page.messages, batch);
        store.append(&[msg("room:a", 6, "later")]).unwrap();
        drop(store);
        let mut store = SqliteStore::open(&path, Synchronous::Off).unwrap();
        assert_eq!(store.room_head("room:a", 0).unwrap().0, 6);
    }

    #[test]
    fn migrations_run_once_and_record_version() {
        let dir = TempDir::new();
        let path = dir.0.join("chat.db");
        let store = SqliteStore::open(&path, Synchronous::Normal).unwrap();
        assert_eq!(user_version(&store), SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION as usize, MIGRATIONS.len());
        drop(store);
        // A second open must not try to re-create the table (that would fail) and must keep the version.
        let store = SqliteStore::open(&path, Synchronous::Normal).unwrap();
        assert_eq!(user_version(&store), SCHEMA_VERSION);
        drop(store);
        let store = SqliteStore::open(&path, Synchronous::Normal).unwrap();
        assert_eq!(user_version(&store), SCHEMA_VERSION);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = TempDir::new();
        let path = dir.0.join("chat.db");
        drop(SqliteStore::open(&path, Synchronous::Normal).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        let err = SqliteStore::open(&path, Synchronous::Normal).unwrap_err();
        assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    }

    #[test]
    fn memory_path_opens_a_private_database() {
        let mut a = SqliteStore::open(Path::new(":memory:"), Synchronous::Normal).unwrap();
        let mut b = SqliteStore::open(Path::new(":memory:"), Synchronous::Normal).unwrap();
        a.append(&[msg("r", 1, "only in a")]).unwrap();
        assert_eq!(a.room_head("r", 1).unwrap().0, 1);
        assert_eq!(b.room_head("r", 1).unwrap().0, 0);
        assert_eq!(user_version(&b), SCHEMA_VERSION);
    }

    #[test]
    fn unopenable_path_is_unavailable() {
        let dir = TempDir::new();
        let path = dir.0.join("missing-dir").join("chat.db");
        let err = SqliteStore::open(&path, Synchronous::Full).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }

    #[test]
    fn collab_negative_stored_seq_reads_as_corrupt() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        store.log_append(&[upd("d", 2, b"b")]).unwrap();
        store.log_compact("d", 1, b"state@1").unwrap();
        store
            .conn
            .execute_batch("PRAGMA ignore_check_constraints = ON; UPDATE collab_snapshots SET seq = -1;")
            .unwrap();
        let err = store.log_load("d").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn collab_data_survives_reopen() {
        let dir = TempDir::new();
        let path = dir.0.join("chat.db");
        {
            let mut store = SqliteStore::open(&path, Synchronous::Full).unwrap();
            store.log_append(&[upd("d", 1, b"a"), upd("d", 2, b"b"), upd("d", 3, b"c")]).unwrap();
            store.log_compact("d", 2, b"state@2").unwrap();
        }
        let expected = LogState { snapshot: Some(entry(2, b"state@2")), entries: vec![entry(3, b"c")] };
        let mut store = SqliteStore::open(&path, Synchronous::Normal).unwrap();
        assert_eq!(store.log_load("d").unwrap(), expected);
        assert_eq!(store.log_bytes().unwrap(), 8);
        store.log_append(&[upd("d", 4, b"d")]).unwrap();
        drop(store);
        let mut store = SqliteStore::open(&path, Synchronous::Off).unwrap();
        assert_eq!(update_seqs(&store.log_load("d").unwrap()), [3, 4]);
    }

    #[test]
    fn migration_from_schema_version_one_keeps_chat_and_adds_collab_and_geo() {
        let dir = TempDir::new();
        let path = dir.0.join("chat.db");
        {
            // A database exactly as the build before collab documents left it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO chat_messages VALUES ('room:a', 1, 1000001, 'alice', 'old', 1700000000001)",
                [],
            )
            .unwrap();
        }
        let mut store = SqliteStore::open(&path, Synchronous::Normal).unwrap();
        assert_eq!(user_version(&store), SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION, 3);
        let (head, page) = store.room_head("room:a", 10).unwrap();
        assert_eq!(head, 1);
        assert_eq!(page.messages, [msg("room:a", 1, "old")]);
        store.append(&[msg("room:a", 2, "new")]).unwrap();
        store.log_append(&[upd("d", 1, b"a"), upd("d", 2, b"b")]).unwrap();
        store.log_compact("d", 1, b"state@1").unwrap();
        drop(store);

        let mut store = SqliteStore::open(&path, Synchronous::Normal).unwrap();
        assert_eq!(user_version(&store), SCHEMA_VERSION);
        assert_eq!(seqs(&store.history("room:a", None, None, 10).unwrap()), [1, 2]);
        assert_eq!(
            store.log_load("d").unwrap(),
            LogState { snapshot: Some(entry(1, b"state@1")), entries: vec![entry(2, b"b")] }
        );
        let tables: i64 = store
            .conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema
                 WHERE type = 'table' AND name LIKE 'collab_%' AND sql LIKE '%STRICT%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 2);
        let geo: i64 = store
            .conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name LIKE 'geo_%' AND sql LIKE '%STRICT%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(geo, 4, "geo_fences, geo_objects, geo_inside, geo_events");
    }

    #[test]
    fn store_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<SqliteStore>();
    }
}
