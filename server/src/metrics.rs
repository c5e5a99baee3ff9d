//! Counters for `/metrics` (Prometheus text format).
//!
//! Each worker writes only its own [`WorkerStats`] (relaxed atomics on its own cache lines, so no
//! contention on the hot path); a scrape sums them.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::store::{StoreHandle, StoreStats};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident : $kind:literal, $help:literal; )*) => {
        /// One worker's counters.
        #[derive(Debug, Default)]
        #[repr(align(64))]
        pub struct WorkerStats {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        impl WorkerStats {
            fn families() -> &'static [(&'static str, &'static str, &'static str)] {
                &[$( (stringify!($name), $kind, $help), )*]
            }
            fn values(&self) -> Vec<u64> {
                vec![$( self.$name.load(Ordering::Relaxed), )*]
            }
        }
    };
}

counters! {
    /// Open connections (gauge).
    connections: "gauge", "Open connections, WebSocket or still in the HTTP handshake.";
    accepted: "counter", "Connections accepted.";
    upgrades: "counter", "Successful WebSocket upgrades.";
    http_errors: "counter", "Requests answered with an HTTP error status (4xx).";
    joins: "counter", "Channel joins requested.";
    frames_in: "counter", "WebSocket frames received.";
    frames_out: "counter", "WebSocket frames sent or queued.";
    bytes_in: "counter", "Bytes read from sockets.";
    bytes_out: "counter", "Bytes written or queued to sockets.";
    phoenix_msgs: "counter", "Phoenix messages handled.";
    chat_messages: "counter", "Chat messages made durable and broadcast.";
    broadcasts: "counter", "Broadcast frames handed to workers.";
    drops: "counter", "Cross-worker messages dropped because an inbox was full.";
    slow_consumer_closes: "counter", "Connections closed because their outbound queue passed its bound.";
    timeouts: "counter", "Connections closed by the handshake or heartbeat timeout.";
    protocol_closes: "counter", "Connections closed for a protocol violation (1002, 1007, 1009).";
    accept_pauses: "counter", "Times accepting paused because the process ran out of file descriptors.";
    collab_docs: "gauge", "Collaborative documents in memory.";
    collab_editors: "gauge", "Connections editing collaborative documents.";
    collab_updates: "counter", "Document updates applied and relayed.";
    collab_snapshots: "counter", "Document snapshots merged and stored.";
    geo_tenants: "gauge", "Geofencing tenants in memory.";
    geo_objects: "gauge", "Objects tracked by the geofencing tenants in memory.";
    geo_fences: "gauge", "Fences of the geofencing tenants in memory.";
    geo_updates: "counter", "Location updates applied.";
    geo_out_of_order: "counter", "Location updates ignored because they were older than the object's last one.";
    geo_events: "counter", "Geofence events delivered to subscribers (each event once, however many subscribers).";
}

impl WorkerStats {
    /// Count one joined-or-requested channel.
    pub fn inc_joins(&self) {
        self.joins.fetch_add(1, Ordering::Relaxed);
    }
    /// Count one Phoenix message.
    pub fn inc_phoenix_msgs(&self) {
        self.phoenix_msgs.fetch_add(1, Ordering::Relaxed);
    }
    /// Count one durable chat message.
    pub fn inc_chat_messages(&self) {
        self.chat_messages.fetch_add(1, Ordering::Relaxed);
    }
    /// Count one broadcast handed to a worker.
    pub fn inc_broadcasts(&self) {
        self.broadcasts.fetch_add(1, Ordering::Relaxed);
    }
    /// Add to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    /// Subtract from a gauge.
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Everything `/metrics` reports.
#[derive(Debug, Clone)]
pub struct Registry {
    pub workers: Arc<[WorkerStats]>,
    pub store: StoreHandle,
    /// The cluster link's counters, in cluster mode only.
    pub cluster: Option<Arc<crate::cluster::ClusterStats>>,
}

impl Registry {
    /// Render the Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut sums = vec![0u64; WorkerStats::families().len()];
        for w in self.workers.iter() {
            for (s, v) in sums.iter_mut().zip(w.values()) {
                *s += v;
            }
        }
        for ((name, kind, help), v) in WorkerStats::families().iter().zip(sums) {
            let suffix = if *kind == "counter" { "_total" } else { "" };
            let _ = writeln!(out, "# HELP rusher_{name}{suffix} {help}\n# TYPE rusher_{name}{suffix} {kind}\nrusher_{name}{suffix} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP rusher_workers Worker threads.\n# TYPE rusher_workers gauge\nrusher_workers {}",
            self.workers.len()
        );
        render_store(&mut out, &self.store);
        if let Some(c) = &self.cluster {
            for (name, kind, help, v) in c.families() {
                let _ = writeln!(
                    out,
                    "# HELP rusher_cluster_{name} {help}\n# TYPE rusher_cluster_{name} {kind}\nrusher_cluster_{name} {v}"
                );
            }
        }
        out
    }
}

fn render_store(out: &mut String, store: &StoreHandle) {
    let s: &StoreStats = store.stats();
    let b = store.backend();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let _ = writeln!(out, "# HELP rusher_store_queue_depth Requests waiting for the storage thread.\n# TYPE rusher_store_queue_depth gauge\nrusher_store_queue_depth{{backend=\"{b}\"}} {}", store.queue_depth());
    let _ = writeln!(out, "# HELP rusher_store_appended_total Messages made durable.\n# TYPE rusher_store_appended_total counter\nrusher_store_appended_total{{backend=\"{b}\"}} {}", load(&s.appended));
    let _ = writeln!(out, "# HELP rusher_store_errors_total Failed storage operations.\n# TYPE rusher_store_errors_total counter\nrusher_store_errors_total{{backend=\"{b}\"}} {}", load(&s.errors));
    let _ = writeln!(out, "# HELP rusher_store_collab_bytes_written_total Bytes of collab updates and snapshots written.\n# TYPE rusher_store_collab_bytes_written_total counter\nrusher_store_collab_bytes_written_total{{backend=\"{b}\"}} {}", load(&s.collab_bytes));
    let _ = writeln!(out, "# HELP rusher_store_collab_bytes Bytes of collab snapshots and updates stored, as of the last snapshot merge.\n# TYPE rusher_store_collab_bytes gauge\nrusher_store_collab_bytes{{backend=\"{b}\"}} {}", load(&s.collab_stored));
    let _ = writeln!(out, "# HELP rusher_store_commit_seconds Time to commit one group of writes.\n# TYPE rusher_store_commit_seconds histogram");
    let mut cumulative = 0;
    for (i, le) in crate::store::COMMIT_BUCKETS.iter().enumerate() {
        cumulative += load(&s.commit_buckets[i]);
        let _ =
            writeln!(out, "rusher_store_commit_seconds_bucket{{backend=\"{b}\",le=\"{le}\"}} {cumulative}");
    }
    cumulative += load(&s.commit_buckets[crate::store::COMMIT_BUCKETS.len()]);
    let _ = writeln!(out, "rusher_store_commit_seconds_bucket{{backend=\"{b}\",le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(
        out,
        "rusher_store_commit_seconds_sum{{backend=\"{b}\"}} {}",
        load(&s.commit_micros) as f64 / 1e6
    );
    let _ = writeln!(out, "rusher_store_commit_seconds_count{{backend=\"{b}\"}} {}", load(&s.commits));
}
