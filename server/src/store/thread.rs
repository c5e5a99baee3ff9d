//! The storage thread: group commit over a bounded queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::{Backend, ChatMessage, GeoFenceChange, GeoLog, LogEntry, StoreError, StoreRequest, StoreResult};

/// Most requests taken from the queue for one group; bounds the time before the first ack of a group.
const MAX_GROUP: usize = 4096;

/// Upper bounds (seconds) of the commit-latency histogram buckets exported on `/metrics`.
pub const COMMIT_BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Counters the storage thread keeps for `/metrics`. Written only by the storage thread.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Transactions committed (one per group that had appends).
    pub commits: AtomicU64,
    /// Messages made durable.
    pub appended: AtomicU64,
    /// Failed operations (appends and reads).
    pub errors: AtomicU64,
    /// Commit latency histogram: per-bucket counts (not cumulative), the last slot is +Inf.
    pub commit_buckets: [AtomicU64; COMMIT_BUCKETS.len() + 1],
    /// Sum of commit latencies in microseconds.
    pub commit_micros: AtomicU64,
    /// Bytes of collab updates and snapshots written.
    pub collab_bytes: AtomicU64,
    /// Bytes of collab data stored (snapshots plus the updates after them), measured after each
    /// compaction.
    pub collab_stored: AtomicU64,
}

impl StoreStats {
    fn observe_commit(&self, secs: f64) {
        let slot = COMMIT_BUCKETS.iter().position(|&b| secs <= b).unwrap_or(COMMIT_BUCKETS.len());
        self.commit_buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.commit_micros.fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a request was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is at its bound: the caller answers "overloaded" instead of waiting.
    #[error("storage queue is full")]
    Full,
    /// The storage thread has stopped.
    #[error("storage has stopped")]
    Closed,
}

/// The workers' side of the storage thread. Cloned into every worker.
#[derive(Clone, Debug)]
pub struct StoreHandle {
    tx: Sender<(usize, StoreRequest)>,
    stats: Arc<StoreStats>,
    backend: &'static str,
}

impl StoreHandle {
    /// Queue a request whose result goes to worker `worker`. Never blocks.
    pub fn submit(&self, worker: usize, req: StoreRequest) -> Result<(), SubmitError> {
        self.tx.try_send((worker, req)).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::Full,
            TrySendError::Disconnected(_) => SubmitError::Closed,
        })
    }

    /// Requests waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }

    /// The counters the storage thread keeps.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// The backend's name ("sqlite").
    pub fn backend(&self) -> &'static str {
        self.backend
    }
}

/// Start the storage thread. `deliver(worker, result)` hands each result to a worker's inbox; it may
/// block (the storage thread is not a worker). The thread exits once every [`StoreHandle`] is dropped
/// and the queue is drained, so dropping the handles and joining flushes everything queued.
pub fn spawn(
    mut backend: Box<dyn Backend>,
    capacity: usize,
    deliver: Box<dyn Fn(usize, StoreResult) + Send>,
) -> (StoreHandle, JoinHandle<()>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let stats = Arc::new(StoreStats::default());
    let handle = StoreHandle { tx, stats: stats.clone(), backend: backend.name() };
    let join = std::thread::Builder::new()
        .name("rusher-store".into())
        .spawn(move || run(&mut *backend, &rx, &stats, &*deliver))
        .expect("spawn storage thread");
    (handle, join)
}

fn run(
    backend: &mut dyn Backend,
    rx: &Receiver<(usize, StoreRequest)>,
    stats: &StoreStats,
    deliver: &dyn Fn(usize, StoreResult),
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut pending = Appends::default();
    while let Ok(first) = rx.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(req) => group.push(req),
                Err(_) => break,
            }
        }
        for (worker, req) in group.drain(..) {
            match req {
                StoreRequest::Append { msg, tag } => pending.chat.push(worker, tag, msg),
                StoreRequest::LogAppend { entry, tag } => {
                    stats.collab_bytes.fetch_add(entry.data.len() as u64, Ordering::Relaxed);
                    pending.log.push(worker, tag, entry)
                }
                StoreRequest::LogLoad { stream, tag } => {
                    commit(backend, &mut pending, stats, deliver);
                    let result = backend.log_load(&stream).map_err(|e| failed(stats, e));
                    deliver(worker, StoreResult::LogLoaded { stream, tag, result });
                }
                StoreRequest::LogCompact { stream, upto_seq, snapshot, tag } => {
                    commit(backend, &mut pending, stats, deliver);
                    stats.collab_bytes.fetch_add(snapshot.len() as u64, Ordering::Relaxed);
                    let result =
                        backend.log_compact(&stream, upto_seq, &snapshot).map_err(|e| failed(stats, e));
                    if let Ok(bytes) = backend.log_bytes() {
                        stats.collab_stored.store(bytes, Ordering::Relaxed);
                    }
                    deliver(worker, StoreResult::LogCompacted { stream, tag, result });
                }
                StoreRequest::GeoLog { log, tag } => pending.geo.push(worker, tag, log),
                StoreRequest::GeoLoad { tenant, tag } => {
                    commit(backend, &mut pending, stats, deliver);
                    let result = backend.geo_load(&tenant).map_err(|e| failed(stats, e));
                    deliver(worker, StoreResult::GeoLoaded { tenant, tag, result });
                }
                StoreRequest::GeoFence { change, tag } => pending.fences.push(worker, tag, change),
                StoreRequest::GeoPositions { tenant, rows, tag } => {
                    let result = backend.geo_positions(&tenant, &rows).map_err(|e| failed(stats, e));
                    deliver(worker, StoreResult::GeoDone { tenant, tag, result });
                }
                StoreRequest::RoomHead { room, recent, tag } => {
                    // Reads see every write queued before them.
                    commit(backend, &mut pending, stats, deliver);
                    let result = backend.room_head(&room, recent).map_err(|e| failed(stats, e));
                    deliver(worker, StoreResult::RoomHead { room, tag, result });
                }
                StoreRequest::History { room, before_seq, after_seq, limit, tag } => {
                    commit(backend, &mut pending, stats, deliver);
                    let result =
                        backend.history(&room, before_seq, after_seq, limit).map_err(|e| failed(stats, e));
                    deliver(worker, StoreResult::History { room, tag, result });
                }
            }
        }
        commit(backend, &mut pending, stats, deliver);
    }
    tracing::debug!("storage thread drained and stopped");
}

fn failed(stats: &StoreStats, e: StoreError) -> Arc<StoreError> {
    stats.errors.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(error = %e, "storage operation failed");
    Arc::new(e)
}

/// Appends waiting for the group's commit, each with the worker and tag its ack goes to.
#[derive(Default)]
struct Appends {
    chat: Batch<ChatMessage>,
    log: Batch<LogEntry>,
    geo: Batch<GeoLog>,
    /// Committed after the events of the same group, which were queued before.
    fences: Batch<GeoFenceChange>,
}

/// Items to write together, and at the same index where each ack goes.
struct Batch<T> {
    items: Vec<T>,
    routes: Vec<(usize, u64)>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch { items: Vec::new(), routes: Vec::new() }
    }
}

impl<T> Batch<T> {
    fn push(&mut self, worker: usize, tag: u64, item: T) {
        self.items.push(item);
        self.routes.push((worker, tag));
    }
}

/// Commit the pending appends (one transaction per kind) and ack each.
fn commit(
    backend: &mut dyn Backend,
    pending: &mut Appends,
    stats: &StoreStats,
    deliver: &dyn Fn(usize, StoreResult),
) {
    commit_batch(&mut pending.chat, &mut |b| backend.append(b), stats, &mut |worker, tag, msg, result| {
        deliver(worker, StoreResult::Appended { msg, tag, result })
    });
    commit_batch(
        &mut pending.log,
        &mut |b| backend.log_append(b),
        stats,
        &mut |worker, tag, entry, result| {
            let LogEntry { stream, seq, .. } = entry;
            deliver(worker, StoreResult::LogAppended { stream, seq, tag, result })
        },
    );
    commit_batch(&mut pending.geo, &mut |b| backend.geo_log(b), stats, &mut |worker, tag, log, result| {
        deliver(worker, StoreResult::GeoDone { tenant: log.tenant, tag, result })
    });
    commit_batch(
        &mut pending.fences,
        &mut |b| backend.geo_fences(b),
        stats,
        &mut |worker, tag, c, result| deliver(worker, StoreResult::GeoDone { tenant: c.tenant, tag, result }),
    );
}

/// Write a batch as one group. If the group fails, each item is retried alone so one bad item (say,
/// a duplicate seq) does not fail its neighbours — unless the storage is unavailable, which no item
/// causes: then every item fails with that error at once, instead of each waiting for the database
/// again.
fn commit_batch<T>(
    batch: &mut Batch<T>,
    append: &mut dyn FnMut(&[T]) -> Result<(), StoreError>,
    stats: &StoreStats,
    done: &mut dyn FnMut(usize, u64, T, Result<(), Arc<StoreError>>),
) {
    if batch.items.is_empty() {
        return;
    }
    let started = Instant::now();
    let group = append(&batch.items);
    let group_ok = group.is_ok();
    if group_ok {
        stats.observe_commit(started.elapsed().as_secs_f64());
        stats.appended.fetch_add(batch.items.len() as u64, Ordering::Relaxed);
    }
    let unavailable = match group {
        Err(e @ StoreError::Unavailable(_)) => {
            stats.errors.fetch_add(batch.items.len() as u64 - 1, Ordering::Relaxed);
            Some(failed(stats, e))
        }
        _ => None,
    };
    for (item, (worker, tag)) in batch.items.drain(..).zip(batch.routes.drain(..)) {
        let result = if group_ok {
            Ok(())
        } else if let Some(e) = &unavailable {
            Err(Arc::clone(e))
        } else {
            let one = Instant::now();
            match append(std::slice::from_ref(&item)) {
                Ok(()) => {
                    stats.observe_commit(one.elapsed().as_secs_f64());
                    stats.appended.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => Err(failed(stats, e)),
            }
        };
        done(worker, tag, item, result);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::store::testing::Scripted;

    /// Queues `n` appends before the storage thread starts taking them, so they form one group; returns
    /// the backend's append calls and the errors delivered.
    fn run_group(n: u64, error: fn() -> StoreError) -> (u64, Vec<Arc<StoreError>>) {
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let backend = Box::new(Scripted {
            append: Box::new(move |_| {
                counted.fetch_add(1, Ordering::Relaxed);
                Err(error())
            }),
            ..Scripted::default()
        });
        let (tx, rx) = crossbeam_channel::bounded(64);
        for tag in 0..n {
            let msg = ChatMessage {
                room: "r".into(),
                seq: tag + 1,
                id: tag,
                user: "u".into(),
                body: "b".into(),
                ts_ms: 0,
            };
            tx.send((0, StoreRequest::Append { msg, tag })).unwrap();
        }
        drop(tx);
        let (results, out) = mpsc::channel();
        let stats = StoreStats::default();
        let mut backend: Box<dyn Backend> = backend;
        run(&mut *backend, &rx, &stats, &move |_, r| results.send(r).unwrap());
        let errors = out
            .try_iter()
            .map(|r| match r {
                StoreResult::Appended { result, .. } => result.unwrap_err(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(stats.errors.load(Ordering::Relaxed), n);
        (calls.load(Ordering::Relaxed), errors)
    }

    #[test]
    fn an_unavailable_store_fails_the_whole_group_with_one_call() {
        let (calls, errors) = run_group(5, || StoreError::Unavailable("down".into()));
        assert_eq!(calls, 1);
        assert_eq!(errors.len(), 5);
        assert!(errors.iter().all(|e| matches!(**e, StoreError::Unavailable(_))));
    }

    #[test]
    fn other_group_errors_retry_each_item_alone() {
        let (calls, errors) = run_group(5, || StoreError::Db("duplicate".into()));
        assert_eq!(calls, 1 + 5);
        assert_eq!(errors.len(), 5);
    }
}
