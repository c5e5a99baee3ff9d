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
