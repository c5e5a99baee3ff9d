//! Persistence behind one interface, run on a storage thread so no database call ever blocks a worker.
//!
//! Workers send [`StoreRequest`]s through a bounded channel; the storage thread drains it in groups,
//! commits all appends of a group in one transaction (group commit), runs reads after the writes that
//! were queued before them, and sends each result back to the requesting worker's inbox.

mod sqlite;
mod thread;

use std::sync::Arc;

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

/// One Yjs update of a collaborative document, in the order the document's owner applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollabUpdate {
    pub doc: Arc<str>,
    pub seq: u64,
    pub update: Box<[u8]>,
}

/// A document as stored: the latest snapshot (a full-state Yjs update, with the seq it covers) and
/// every update after it, ascending.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CollabState {
    pub snapshot: Option<(u64, Box<[u8]>)>,
    pub updates: Vec<(u64, Box<[u8]>)>,
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
    /// Store a batch of collab updates in ONE transaction (durable on return, per the sync
    /// setting). A duplicate (doc, seq) is an error and nothing of the batch is stored.
    fn collab_append(&mut self, batch: &[CollabUpdate]) -> Result<(), StoreError>;
    /// The document's snapshot and the updates after it.
    fn collab_load(&mut self, doc: &str) -> Result<CollabState, StoreError>;
    /// Replace the snapshot with `snapshot` covering every update with seq <= `upto_seq`, and delete
    /// those updates, in one transaction. An older snapshot than the stored one is ignored.
    fn collab_compact(&mut self, doc: &str, upto_seq: u64, snapshot: &[u8]) -> Result<(), StoreError>;
    /// Bytes stored for collab documents (snapshots + updates), for metrics.
    fn collab_bytes(&mut self) -> Result<u64, StoreError>;
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
    /// Make a collab update durable.
    CollabAppend { update: CollabUpdate, tag: u64 },
    /// Load a document's snapshot and later updates.
    CollabLoad { doc: Arc<str>, tag: u64 },
    /// Store a snapshot covering updates up to `upto_seq` and drop those updates.
    CollabCompact { doc: Arc<str>, upto_seq: u64, snapshot: Box<[u8]>, tag: u64 },
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
    /// A collab update is durable (or failed).
    CollabAppended { doc: Arc<str>, seq: u64, tag: u64, result: Result<(), Arc<StoreError>> },
    /// A document's stored state.
    CollabLoaded { doc: Arc<str>, tag: u64, result: Result<CollabState, Arc<StoreError>> },
    /// A compaction finished (or failed).
    CollabCompacted { doc: Arc<str>, tag: u64, result: Result<(), Arc<StoreError>> },
}

/// Open the backend named by a store URL. Only `sqlite://PATH` exists so far; `sqlite://:memory:` is
/// an in-memory database (lost at exit; for tests).
pub fn open(url: &str, sync: Synchronous) -> Result<Box<dyn Backend>, StoreError> {
    match url.split_once("://") {
        Some(("sqlite", path)) if !path.is_empty() => {
            Ok(Box::new(SqliteStore::open(std::path::Path::new(path), sync)?))
        }
        _ => Err(StoreError::Unavailable(format!("unsupported store URL {url:?}: expected sqlite://PATH"))),
    }
}
