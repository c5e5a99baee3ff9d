//! The PostgreSQL backend: one connection owned by the storage thread, one statement (one round trip) per
//! batch, `synchronous_commit` set explicitly.
//!
//! Every write of a batch is a single statement — a multi-row `INSERT ... SELECT FROM unnest(...)` of
//! arrays, or a call of a PL/pgSQL function created with the schema — so the batch is one transaction
//! (the statement's own) sent in one round trip, and an error anywhere rolls back all of it.
//!
//! As in the SQLite backend every `u64` is stored as a signed 64-bit integer and values past `i64::MAX`
//! are refused. Chat bodies and user names are stored as UTF-8 `bytea`: PostgreSQL text cannot hold a
//! NUL character, and a chat message may. Keys (rooms, documents, tenants, fences, objects) are text in
//! the "C" collation, so they sort bytewise as in SQLite, whatever the database's default collation.
//!
//! If the connection is lost (the server restarted, a failover, an administrator ended the session), the
//! call that finds out fails with [`StoreError::Unavailable`] and the next call connects again, once; so
//! the server answers with errors while the database is away and recovers by itself when it returns.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls, Row, Statement};

mod geo;

use super::reconnect::Reconnect;
use super::{
    from_i64, redact_url, seq_to_i64, to_i64, Backend, ChatMessage, GeoFenceChange, GeoLog, GeoPosition,
    GeoState, LogEntry, LogState, Page, StoreError, SynchronousCommit,
};

/// How long opening a connection may take (unless the URL sets `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a statement may run before the server cancels it. The storage thread is blocked meanwhile and
/// the storage queue fills, so a hung database must turn into errors rather than a silent stall.
const STATEMENT_TIMEOUT: &str = "30s";

/// Idle time before TCP keepalive probes start, and how long sent data may stay unacknowledged before the
/// kernel gives the connection up: a peer that vanished without a reset is noticed in seconds.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection idle for this long is checked before use (see [`PostgresStore::with`]). Under steady load
/// no call pays for the check; after a pause, one call pays at most [`LIVENESS_WAIT`].
const IDLE_CHECK_AFTER: Duration = Duration::from_millis(100);

/// How long the check lets the connection's event loop look for a message the server sent meanwhile.
const LIVENESS_WAIT: Duration = Duration::from_millis(1);

/// Schema steps, applied in order; the `rusher_schema` table records how many have run. Append new steps
/// at the end and never edit a released one: existing databases have already applied it.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE chat_messages (
    room   TEXT COLLATE "C" NOT NULL,
    seq    BIGINT NOT NULL CHECK (seq >= 0),
    id     BIGINT NOT NULL CHECK (id >= 0),
    "user" BYTEA  NOT NULL,
    body   BYTEA  NOT NULL,
    ts_ms  BIGINT NOT NULL CHECK (ts_ms >= 0),
    PRIMARY KEY (room, seq)
);

-- The journal: every stream's entries and snapshot (`doc` is the stream; the tables keep the names
-- they had when only collab documents used them).
CREATE TABLE collab_updates (
    doc  TEXT COLLATE "C" NOT NULL,
    seq  BIGINT NOT NULL CHECK (seq >= 0),
    data BYTEA  NOT NULL,
    PRIMARY KEY (doc, seq)
);

CREATE TABLE collab_snapshots (
    doc  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    seq  BIGINT NOT NULL CHECK (seq >= 0),
    data BYTEA  NOT NULL
);

CREATE TABLE geo_fences (
    tenant TEXT COLLATE "C" NOT NULL,
    id     TEXT COLLATE "C" NOT NULL,
    json   TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);

CREATE TABLE geo_objects (
    tenant  TEXT COLLATE "C" NOT NULL,
    id      TEXT COLLATE "C" NOT NULL,
    lat     DOUBLE PRECISION NOT NULL,
    lon     DOUBLE PRECISION NOT NULL,
    ts      DOUBLE PRECISION NOT NULL,
    speed   DOUBLE PRECISION,
    heading DOUBLE PRECISION,
    props   TEXT,
    PRIMARY KEY (tenant, id)
);

CREATE TABLE geo_inside (
    tenant   TEXT COLLATE "C" NOT NULL,
    fence    TEXT COLLATE "C" NOT NULL,
    object   TEXT COLLATE "C" NOT NULL,
    since_ms BIGINT  NOT NULL,
    dwelled  BOOLEAN NOT NULL,
    PRIMARY KEY (tenant, fence, object)
);

-- Appended in id order with no secondary index: nothing reads events by tenant yet.
CREATE TABLE geo_events (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant TEXT NOT NULL,
    fence  TEXT NOT NULL,
    object TEXT NOT NULL,
    event  TEXT NOT NULL CHECK (event IN ('enter', 'exit', 'cross', 'dwell')),
    lat    DOUBLE PRECISION NOT NULL,
    lon    DOUBLE PRECISION NOT NULL,
    ts     DOUBLE PRECISION NOT NULL,
    at_ms  BIGINT NOT NULL
);

-- A seq at or below the snapshot's was stored before and compacted away; taking it again would leave a
-- row that no load returns, so it counts as a duplicate too.
CREATE FUNCTION rusher_collab_append(p_docs TEXT[], p_seqs BIGINT[], p_data BYTEA[]) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    covered RECORD;
BEGIN
    SELECT u.doc, u.seq INTO covered
    FROM unnest(p_docs, p_seqs) AS u(doc, seq)
    JOIN collab_snapshots s ON s.doc = u.doc AND s.seq >= u.seq
    LIMIT 1;
    IF FOUND THEN
        RAISE unique_violation USING MESSAGE =
            format('collab update %s#%s: the stored snapshot covers it', covered.doc, covered.seq);
    END IF;
    INSERT INTO collab_updates (doc, seq, data) SELECT * FROM unnest(p_docs, p_seqs, p_data);
END
$$;

-- Fence changes apply in order: a batch may create, replace and delete the same fence.
CREATE FUNCTION rusher_geo_fences(p_tenants TEXT[], p_ids TEXT[], p_json TEXT[], p_fresh BOOLEAN[])
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    c RECORD;
BEGIN
    FOR c IN
        SELECT * FROM unnest(p_tenants, p_ids, p_json, p_fresh) WITH ORDINALITY
            AS u(tenant, id, json, fresh, n)
        ORDER BY n
    LOOP
        IF c.fresh OR c.json IS NULL THEN
            DELETE FROM geo_inside WHERE tenant = c.tenant AND fence = c.id;
        END IF;
        IF c.json IS NULL THEN
            DELETE FROM geo_fences WHERE tenant = c.tenant AND id = c.id;
        ELSE
            INSERT INTO geo_fences (tenant, id, json) VALUES (c.tenant, c.id, c.json)
            ON CONFLICT (tenant, id) DO UPDATE SET json = excluded.json;
        END IF;
    END LOOP;
END
$$;

-- Every event is logged; enter, exit and dwell keep the inside table, in order. The position an enter
-- reports is stored with it (unless a newer one is), so an object in the inside table always has a
-- stored position, even when the positions written behind were lost.
CREATE FUNCTION rusher_geo_log(
    p_tenants TEXT[], p_fences TEXT[], p_objects TEXT[], p_kinds TEXT[],
    p_lats DOUBLE PRECISION[], p_lons DOUBLE PRECISION[], p_ts DOUBLE PRECISION[], p_at BIGINT[]
) RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    e RECORD;
BEGIN
    INSERT INTO geo_events (tenant, fence, object, event, lat, lon, ts, at_ms)
    SELECT tenant, fence, object, kind, lat, lon, ts, at_ms
    FROM unnest(p_tenants, p_fences, p_objects, p_kinds, p_lats, p_lons, p_ts, p_at) WITH ORDINALITY
        AS u(tenant, fence, object, kind, lat, lon, ts, at_ms, n)
    ORDER BY n;
    FOR e IN
        SELECT * FROM unnest(p_tenants, p_fences, p_objects, p_kinds, p_lats, p_lons, p_ts, p_at)
            WITH ORDINALITY AS u(tenant, fence, object, kind, lat, lon, ts, at_ms, n)
        WHERE kind <> 'cross'
        ORDER BY n
    LOOP
        IF e.kind = 'enter' THEN
            INSERT INTO geo_objects (tenant, id, lat, lon, ts) VALUES (e.tenant, e.object, e.lat, e.lon, e.ts)
            ON CONFLICT (tenant, id) DO UPDATE SET lat = excluded.lat, lon = excluded.lon, ts = excluded.ts
            WHERE excluded.ts > geo_objects.ts;
            INSERT INTO geo_inside (tenant, fence, object, since_ms, dwelled)
            VALUES (e.tenant, e.fence, e.object, e.at_ms, FALSE)
            ON CONFLICT (tenant, fence, object) DO UPDATE SET since_ms = excluded.since_ms, dwelled = FALSE;
        ELSIF e.kind = 'exit' THEN
            DELETE FROM geo_inside WHERE tenant = e.tenant AND fence = e.fence AND object = e.object;
        ELSIF e.kind = 'dwell' THEN
            UPDATE geo_inside SET dwelled = TRUE
            WHERE tenant = e.tenant AND fence = e.fence AND object = e.object;
        END IF;
    END LOOP;
END
$$;

-- Last positions, in order: a row replaces the stored one unless that one is newer, so an object's
-- position never goes back in time, and the same object may appear twice in a batch.
CREATE FUNCTION rusher_geo_positions(
    p_tenant TEXT, p_ids TEXT[], p_lats DOUBLE PRECISION[], p_lons DOUBLE PRECISION[],
    p_ts DOUBLE PRECISION[], p_speeds DOUBLE PRECISION[], p_headings DOUBLE PRECISION[], p_props TEXT[]
) RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    p RECORD;
BEGIN
    FOR p IN
        SELECT * FROM unnest(p_ids, p_lats, p_lons, p_ts, p_speeds, p_headings, p_props) WITH ORDINALITY
            AS u(id, lat, lon, ts, speed, heading, props, n)
        ORDER BY n
    LOOP
        INSERT INTO geo_objects (tenant, id, lat, lon, ts, speed, heading, props)
        VALUES (p_tenant, p.id, p.lat, p.lon, p.ts, p.speed, p.heading, p.props)
        ON CONFLICT (tenant, id) DO UPDATE SET lat = excluded.lat, lon = excluded.lon, ts = excluded.ts,
            speed = excluded.speed, heading = excluded.heading, props = excluded.props
        WHERE excluded.ts >= geo_objects.ts;
    END LOOP;
END
$$;
"#];

/// The schema version this build writes: the number of [`MIGRATIONS`].
const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Chat history, collaborative documents and geofences in a PostgreSQL database.
///
/// Owns a single connection; the storage thread is its only user, so no pool and no locking are needed.
pub struct PostgresStore {
    config: postgres::Config,
    synchronous_commit: SynchronousCommit,
    /// Where the database is, for messages (no password).
    label: String,
    /// `None` once the connection was found broken: the next call connects again.
    conn: Option<Conn>,
    /// Throttles connection attempts while the database is away.
    reconnect: Reconnect,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("db", &self.label)
            .field("synchronous_commit", &self.synchronous_commit)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

/// A live session: synchronous_commit and timeouts set, statements prepared.
struct Conn {
    client: Client,
    st: Statements,
    /// When the last call on this connection finished.
    last_used: Instant,
}

/// The statements of every call, prepared once per connection (a prepared statement is one round trip
/// per execution).
struct Statements {
    append: Statement,
    history: Statement,
    max_seq: Statement,
    collab_append: Statement,
    collab_load: Statement,
    collab_compact: Statement,
    collab_bytes: Statement,
    geo: geo::Statements,
}

impl Statements {
    fn prepare(client: &mut Client) -> Result<Self, postgres::Error> {
        Ok(Statements {
            append: client.prepare(
                r#"INSERT INTO chat_messages (room, seq, id, "user", body, ts_ms)
                   SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::bytea[], $5::bytea[], $6::int8[])"#,
            )?,
            history: client.prepare(
                r#"SELECT seq, id, "user", body, ts_ms FROM chat_messages
                   WHERE room = $1 AND seq > $2 AND seq <= $3
                   ORDER BY seq DESC LIMIT $4"#,
            )?,
            max_seq: client.prepare("SELECT MAX(seq) FROM chat_messages WHERE room = $1")?,
            collab_append: client.prepare("SELECT rusher_collab_append($1::text[], $2::int8[], $3::bytea[])")?,
            // One statement, so the snapshot and the updates come from the same state of the database.
            collab_load: client.prepare(
                "WITH snap AS (SELECT seq, data FROM collab_snapshots WHERE doc = $1)
                 SELECT TRUE AS is_snapshot, seq, data FROM snap
                 UNION ALL
                 SELECT FALSE, seq, data FROM collab_updates
                 WHERE doc = $1 AND seq > COALESCE((SELECT seq FROM snap), -1)
                 ORDER BY is_snapshot DESC, seq",
            )?,
            // The conditional upsert changes no row when the stored snapshot is newer (an equal seq
            // replaces it); the delete then has no bound and removes nothing. Returns the rows upserted.
            collab_compact: client.prepare(
                "WITH snap AS (
                     INSERT INTO collab_snapshots (doc, seq, data) VALUES ($1, $2, $3)
                     ON CONFLICT (doc) DO UPDATE SET seq = excluded.seq, data = excluded.data
                     WHERE excluded.seq >= collab_snapshots.seq
                     RETURNING seq
                 ), dropped AS (
                     DELETE FROM collab_updates WHERE doc = $1 AND seq <= (SELECT seq FROM snap)
                 )
                 SELECT COUNT(*) FROM snap",
            )?,
            // octet_length of a stored bytea reads its header, not the (possibly compressed) value.
            collab_bytes: client.prepare(
                "SELECT (SELECT COALESCE(SUM(octet_length(data)), 0) FROM collab_updates)::int8
                      + (SELECT COALESCE(SUM(octet_length(data)), 0) FROM collab_snapshots)::int8",
            )?,
            geo: geo::Statements::prepare(client)?,
        })
    }
}

impl PostgresStore {
    /// Connects to the database of `url` (`postgres://` or `postgresql://`, libpq's URL form) and brings
    /// its schema up to date. Fails with [`StoreError::Unavailable`] if the database cannot be reached.
    ///
    /// Tables go to the first schema of the session's `search_path`; pass `?options=-csearch_path%3DNAME`
    /// in the URL to use another than `public`.
    pub fn open(url: &str, synchronous_commit: SynchronousCommit) -> Result<Self, StoreError> {
        let mut config: postgres::Config = url.parse().map_err(|e| {
            StoreError::Unavailable(format!("invalid PostgreSQL URL {:?}: {e}", redact_url(url)))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        config.keepalives(true).keepalives_idle(KEEPALIVE_IDLE);
        if config.get_application_name().is_none() {
            config.application_name("rusher");
        }
        let label = label(&config);
        let mut store =
            PostgresStore { config, synchronous_commit, label, conn: None, reconnect: Reconnect::default() };
        let mut client = store.connect()?;
        let (from, to) = migrate(&mut client)?;
        let st = Statements::prepare(&mut client).map_err(pg_err)?;
        let server_version = client
            .query_one("SHOW server_version", &[])
            .and_then(|row| row.try_get::<_, String>(0))
            .unwrap_or_else(|e| format!("unknown ({e})"));
        tracing::info!(
            db = %store.label,
            server_version,
            synchronous_commit = synchronous_commit.as_str(),
            schema_from = from,
            schema_to = to,
            "postgres store open"
        );
        store.conn = Some(Conn { client, st, last_used: Instant::now() });
        Ok(store)
    }

    /// Opens a session and sets what this store relies on.
    fn connect(&self) -> Result<Client, StoreError> {
        let unavailable = |e: postgres::Error| {
            StoreError::Unavailable(format!("cannot connect to {}: {}", self.label, describe(&e)))
        };
        let mut client = self.config.connect(NoTls).map_err(unavailable)?;
        // Set even when it matches the server's default: durability must be what the operator configured,
        // not what the database happens to be set to.
        client
            .batch_execute(&format!(
                "SET synchronous_commit = {}; SET statement_timeout = '{STATEMENT_TIMEOUT}'",
                self.synchronous_commit.as_str()
            ))
            .map_err(unavailable)?;
        Ok(client)
    }

    /// Runs `op` on the connection, connecting first if there is none (one attempt, unless the last one
    /// failed less than [`RECONNECT_BACKOFF`](super::reconnect::RECONNECT_BACKOFF) ago). A connection that turns out broken is dropped, so the
    /// next call connects afresh.
    fn with<T>(
        &mut self,
        op: impl FnOnce(&mut Client, &Statements) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(conn) = &mut self.conn {
            // A session the server ended while we were idle (a restart, pg_terminate_backend) has its
            // error waiting on the socket. Letting the connection's event loop run briefly reads it, so
            // the statement goes to a fresh connection instead of failing on the dead one. Only the
            // event loop sees the socket, and it only learns of new data while it waits: hence a short
            // wait rather than a non-blocking poll, and only after a pause.
            let idle = conn.last_used.elapsed() >= IDLE_CHECK_AFTER;
            if conn.client.is_closed()
                || (idle && conn.client.notifications().timeout_iter(LIVENESS_WAIT).next().is_err())
            {
                tracing::warn!(db = %self.label, "postgres connection lost; reconnecting");
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            self.reconnect.ready()?;
            let connected = self.connect().and_then(|mut client| {
                let st = Statements::prepare(&mut client).map_err(pg_err)?;
                Ok(Conn { client, st, last_used: Instant::now() })
            });
            self.reconnect.record(&connected);
            self.conn = Some(connected?);
            tracing::info!(db = %self.label, "postgres connection re-established");
        }
        let conn = self.conn.as_mut().expect("connected above");
        let result = op(&mut conn.client, &conn.st);
        conn.last_used = Instant::now();
        if result.is_err() && (conn.client.is_closed() || matches!(result, Err(StoreError::Unavailable(_)))) {
            self.conn = None;
        }
        result
    }
}

/// Applies the pending [`MIGRATIONS`] in one transaction; returns the schema version before and after.
fn migrate(client: &mut Client) -> Result<(i32, i32), StoreError> {
    let mut tx = client.transaction().map_err(pg_err)?;
    // Two processes opening the same new database must not both create the tables: the lock (per
    // schema, held to the end of the transaction) makes the second wait and then see the first's work.
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(hashtext('rusher_schema'), hashtext(current_schema()));
         CREATE TABLE IF NOT EXISTS rusher_schema (
             one     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
             version INTEGER NOT NULL
         );",
    )
    .map_err(pg_err)?;
    let current: i32 = tx
        .query_opt("SELECT version FROM rusher_schema", &[])
        .map_err(pg_err)?
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("rusher_schema: {e}")))?
        .unwrap_or(0);
    if !(0..=SCHEMA_VERSION).contains(&current) {
        return Err(StoreError::Db(format!(
            "database schema version {current} is not one this build understands (0 to {SCHEMA_VERSION})"
        )));
    }
    for (done, step) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(step)
            .map_err(|e| StoreError::Db(format!("schema migration {}: {}", done + 1, describe(&e))))?;
    }
    if current != SCHEMA_VERSION {
        tx.execute(
            "INSERT INTO rusher_schema (version) VALUES ($1)
             ON CONFLICT (one) DO UPDATE SET version = excluded.version",
            &[&SCHEMA_VERSION],
        )
        .map_err(pg_err)?;
    }
    tx.commit().map_err(pg_err)?;
    Ok((current, SCHEMA_VERSION))
}

impl Backend for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn append(&mut self, batch: &[ChatMessage]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Checked before anything is sent, so a bad value stores nothing.
        let mut seqs = Vec::with_capacity(batch.len());
        let mut ids = Vec::with_capacity(batch.len());
        let mut ts = Vec::with_capacity(batch.len());
        for m in batch {
            seqs.push(to_i64(m.seq, "seq", m)?);
            ids.push(to_i64(m.id, "id", m)?);
            ts.push(to_i64(m.ts_ms, "ts_ms", m)?);
        }
        let rooms: Vec<&str> = batch.iter().map(|m| &*m.room).collect();
        let users: Vec<&[u8]> = batch.iter().map(|m| m.user.as_bytes()).collect();
        let bodies: Vec<&[u8]> = batch.iter().map(|m| m.body.as_bytes()).collect();
        self.with(|client, st| {
            client.execute(&st.append, &[&rooms, &seqs, &ids, &users, &bodies, &ts]).map_err(|e| match e
                .code()
            {
                Some(&SqlState::UNIQUE_VIOLATION) => {
                    StoreError::Db(format!("messages not stored, batch rolled back: {}", describe(&e)))
                }
                _ => pg_err(e),
            })?;
            Ok(())
        })
    }

    fn room_head(&mut self, room: &str, recent: usize) -> Result<(u64, Page), StoreError> {
        let page = self.history(room, None, None, recent)?;
        let head = super::head_of(&page, room, || {
            self.with(|client, st| {
                client.query_one(&st.max_seq, &[&room]).map_err(pg_err)?.try_get(0).map_err(corrupt(room))
            })
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
        let rows = self
            .with(|client, st| client.query(&st.history, &[&room, &lower, &upper, &fetch]).map_err(pg_err))?;
        let room_arc: Arc<str> = Arc::from(room);
        let more = rows.len() > limit;
        let mut messages = rows
            .iter()
            .take(limit)
            .map(|row| decode_message(row, &room_arc))
            .collect::<Result<Vec<_>, _>>()?;
        messages.reverse();
        Ok(Page { messages, more })
    }

    fn log_append(&mut self, batch: &[LogEntry]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let seqs = batch.iter().map(|u| seq_to_i64(u.seq, &u.stream)).collect::<Result<Vec<_>, _>>()?;
        let docs: Vec<&str> = batch.iter().map(|u| &*u.stream).collect();
        let data: Vec<&[u8]> = batch.iter().map(|u| &*u.data).collect();
        self.with(|client, st| {
            client.execute(&st.collab_append, &[&docs, &seqs, &data]).map_err(|e| match e.code() {
                Some(&SqlState::UNIQUE_VIOLATION) => {
                    StoreError::Db(format!("journal entries not stored, batch rolled back: {}", describe(&e)))
                }
                _ => pg_err(e),
            })?;
            Ok(())
        })
    }

    fn log_load(&mut self, doc: &str) -> Result<LogState, StoreError> {
        let rows = self.with(|client, st| client.query(&st.collab_load, &[&doc]).map_err(pg_err))?;
        let corrupt = |e: postgres::Error| StoreError::Corrupt(format!("journal stream {doc}: {e}"));
        let mut state = LogState::default();
        for row in &rows {
            let is_snapshot: bool = row.try_get(0).map_err(corrupt)?;
            let seq = from_i64(row.try_get(1).map_err(corrupt)?, "seq", doc)?;
            let data: Vec<u8> = row.try_get(2).map_err(corrupt)?;
            if is_snapshot {
                state.snapshot = Some((seq, data.into_boxed_slice()));
            } else {
                state.entries.push((seq, data.into_boxed_slice()));
            }
        }
        Ok(state)
    }

    fn log_compact(&mut self, doc: &str, upto_seq: u64, snapshot: &[u8]) -> Result<(), StoreError> {
        let upto = seq_to_i64(upto_seq, doc)?;
        let replaced: i64 = self.with(|client, st| {
            client
                .query_one(&st.collab_compact, &[&doc, &upto, &snapshot])
                .map_err(pg_err)?
                .try_get(0)
                .map_err(corrupt(doc))
        })?;
        if replaced == 0 {
            tracing::debug!(doc, upto_seq, "journal snapshot older than the stored one ignored");
        }
        Ok(())
    }

    fn log_bytes(&mut self) -> Result<u64, StoreError> {
        let total: i64 = self.with(|client, st| {
            client.query_one(&st.collab_bytes, &[]).map_err(pg_err)?.try_get(0).map_err(corrupt("collab"))
        })?;
        u64::try_from(total).map_err(|_| StoreError::Corrupt(format!("negative collab byte total {total}")))
    }

    fn geo_load(&mut self, tenant: &str) -> Result<GeoState, StoreError> {
        self.with(|client, st| geo::load(client, &st.geo, tenant))
    }

    fn geo_fences(&mut self, batch: &[GeoFenceChange]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.with(|client, st| geo::fences(client, &st.geo, batch))
    }

    fn geo_log(&mut self, batch: &[GeoLog]) -> Result<(), StoreError> {
        if batch.iter().all(|l| l.events.is_empty()) {
            return Ok(());
        }
        self.with(|client, st| geo::log(client, &st.geo, batch))
    }

    fn geo_positions(&mut self, tenant: &str, rows: &[GeoPosition]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.with(|client, st| geo::positions(client, &st.geo, tenant, rows))
    }
}

/// Builds a message from a `seq, id, user, body, ts_ms` row of `room`.
fn decode_message(row: &Row, room: &Arc<str>) -> Result<ChatMessage, StoreError> {
    let corrupt = corrupt(room);
    let text = |bytes: Vec<u8>, field: &str| {
        String::from_utf8(bytes)
            .map_err(|e| StoreError::Corrupt(format!("room {room}: {field} is not UTF-8: {e}")))
    };
    Ok(ChatMessage {
        room: Arc::clone(room),
        seq: from_i64(row.try_get(0).map_err(&corrupt)?, "seq", room)?,
        id: from_i64(row.try_get(1).map_err(&corrupt)?, "id", room)?,
        user: Arc::from(text(row.try_get(2).map_err(&corrupt)?, "user")?),
        body: text(row.try_get(3).map_err(&corrupt)?, "body")?.into_boxed_str(),
        ts_ms: from_i64(row.try_get(4).map_err(&corrupt)?, "ts_ms", room)?,
    })
}

/// Maps an error decoding a column of `what` to [`StoreError::Corrupt`].
fn corrupt(what: &str) -> impl Fn(postgres::Error) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

/// `host:port/db` of a connection, for messages.
fn label(config: &postgres::Config) -> String {
    use postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().or(config.get_user()).unwrap_or("postgres"))
}

/// The message of an error with the server's detail (which row, which key) when there is one.
pub(crate) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({}): {detail}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => match e.source() {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// Classifies a PostgreSQL error: a lost or refused connection and conditions that pass by themselves or
/// that an operator fixes (shutdown, too many connections, disk full, a cancelled statement) are
/// `Unavailable`; damaged data is `Corrupt`; the rest is `Db`.
fn pg_err(e: postgres::Error) -> StoreError {
    let text = describe(&e);
    match e.code() {
        Some(code) => match code.code().get(..2) {
            // 08: connection exception, 53: insufficient resources, 57: operator intervention (shutdown,
            // cancel, statement timeout), 58: system error (I/O).
            Some("08" | "53" | "57" | "58") => StoreError::Unavailable(text),
            _ if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED => {
                StoreError::Corrupt(text)
            }
            _ => StoreError::Db(text),
        },
        None if e.is_closed() || e.source().is_some_and(|s| s.is::<std::io::Error>()) => {
            StoreError::Unavailable(text)
        }
        None => StoreError::Db(text),
    }
}

#[cfg(test)]
mod tests;
