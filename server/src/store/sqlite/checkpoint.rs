//! WAL checkpoints off the commit path.
//!
//! With SQLite's default `wal_autocheckpoint` the connection whose commit pushes the WAL past 1,000 pages
//! runs the checkpoint itself, before that commit returns: every page the WAL holds is written back into
//! the database file at its place and the file is fsynced. A group of chat messages spread over many rooms
//! dirties one leaf page per room, so nearly every commit paid for a checkpoint and the acks waited on
//! random writes into the main file.
//!
//! Here the writer's automatic checkpoint is only a backstop ([`BACKSTOP_PAGES`]) and a thread with its
//! own connection copies the WAL back instead: a PASSIVE checkpoint every [`INTERVAL`], which never
//! blocks the writer (and writes each page once, however many commits changed it since the last one).
//! Under steady writes a passive checkpoint never catches up with the last frame, so SQLite never starts
//! the WAL over by itself: once the WAL holds [`LIMIT_PAGES`] frames the thread asks the writer to, and the
//! writer runs a TRUNCATE checkpoint before its next transaction — on its own connection, so it waits for no
//! lock, and only the few frames written since the last passive checkpoint are left to copy. The WAL file
//! therefore stays near [`LIMIT_PAGES`] pages; the backstop bounds it even if this thread stopped.
//! Durability is untouched: a commit's frames are in the WAL (fsynced at commit under
//! `synchronous = FULL`) before its ack, and a checkpoint only moves committed pages into the database
//! file, which it syncs before the WAL is emptied.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};
use rusqlite::Connection;

use super::{db_err, BUSY_TIMEOUT};
use crate::store::StoreError;

/// Time between passive checkpoints.
pub const INTERVAL: Duration = Duration::from_millis(50);
/// WAL frames (pages) at which the writer is asked to truncate the WAL: 64 MiB of 4 KiB pages.
pub const LIMIT_PAGES: i64 = 16_384;
/// The writer connection's `wal_autocheckpoint`: it checkpoints by itself only when the WAL has grown to
/// this many pages, which the thread prevents while it runs.
pub const BACKSTOP_PAGES: i64 = 4 * LIMIT_PAGES;

/// The checkpoint thread of one database file. Dropping it stops the thread and waits for it.
#[derive(Debug)]
pub struct Checkpointer {
    /// Set by the thread when the WAL is at its limit; taken by the writer, which then truncates it.
    restart: Arc<AtomicBool>,
    stop: Option<Sender<()>>,
    join: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a second connection to `path` (already in WAL mode) and starts checkpointing it, with the
    /// writer's `synchronous` setting so the database file is synced as the operator configured.
    pub fn start(path: &Path, synchronous: &str) -> Result<Self, StoreError> {
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
        conn.pragma_update(None, "synchronous", synchronous).map_err(db_err)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(db_err)?;
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let label = path.display().to_string();
        let restart = Arc::new(AtomicBool::new(false));
        let wanted = Arc::clone(&restart);
        let join = std::thread::Builder::new()
            .name("rusher-sqlite-ckpt".into())
            .spawn(move || loop {
                match checkpoint(&conn, "PASSIVE") {
                    Ok((_, frames, _)) if frames >= LIMIT_PAGES => wanted.store(true, Ordering::Relaxed),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(db = label, error = %e, "sqlite checkpoint failed"),
                }
                match stopped.recv_timeout(INTERVAL) {
                    Err(RecvTimeoutError::Timeout) => {}
                    // Stopped, or the store is gone: a last checkpoint leaves the WAL short for the next open.
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                        if let Err(e) = checkpoint(&conn, "TRUNCATE") {
                            tracing::debug!(db = label, error = %e, "final sqlite checkpoint incomplete");
                        }
                        break;
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self { restart, stop: Some(stop), join: Some(join) })
    }

    /// Called by the writer outside any transaction: if the WAL is at its limit, copies the rest of it
    /// back and empties it, on the writer's connection `conn`. A failure is logged, not returned: what
    /// was committed stays committed, and the thread asks again after its next checkpoint.
    pub fn restart_if_due(&self, conn: &Connection) {
        if !self.restart.swap(false, Ordering::Relaxed) {
            return;
        }
        match checkpoint(conn, "TRUNCATE") {
            Ok((0, _, _)) => {}
            Ok((_, frames, copied)) => tracing::debug!(frames, copied, "sqlite WAL truncation incomplete"),
            Err(e) => tracing::warn!(error = %e, "sqlite WAL truncation failed"),
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(join) = self.join.take() {
            if join.join().is_err() {
                tracing::warn!("sqlite checkpoint thread panicked");
            }
        }
    }
}

/// `PRAGMA wal_checkpoint(MODE)`: (1 if it could not finish, frames in the WAL, frames copied back).
pub fn checkpoint(conn: &Connection, mode: &str) -> Result<(i64, i64, i64), StoreError> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
    })
    .map_err(db_err)
}
