//! Start and stop a whole server: storage thread, workers, and the graceful drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::{Poll, Waker};

use crate::cluster::{self, Cluster};
use crate::config::Config;
use crate::mailbox::{Mailbox, Msg, Outbox};
use crate::metrics::{Registry, WorkerStats};
use crate::runtime::worker::{Worker, WorkerParts, WAKER};
use crate::store::{self, StoreHandle};

/// A server that is running.
#[derive(Debug)]
pub struct Running {
    /// The address bound (with the real port when the configured one was 0).
    pub addr: SocketAddr,
    /// This node's id in cluster mode.
    pub node: Option<Arc<str>>,
    mailbox: Mailbox,
    workers: Vec<JoinHandle<()>>,
    store: Option<StoreHandle>,
    store_thread: Option<JoinHandle<()>>,
    cluster: Option<cluster::Link>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open storage: {0}")]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot set up worker: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
}

/// Open storage, bind every worker's listener and start the threads.
pub fn start(cfg: Config) -> Result<Running, StartError> {
    let cfg = Arc::new(cfg);
    let backend = store::open(&cfg.store_url, cfg.durability())?;

    let mut polls = Vec::with_capacity(cfg.workers);
    let mut wakers = Vec::with_capacity(cfg.workers);
    for _ in 0..cfg.workers {
        let poll = Poll::new()?;
        wakers.push(Arc::new(Waker::new(poll.registry(), WAKER)?));
        polls.push(poll);
    }
    let (mailbox, inboxes) = Mailbox::new(wakers, cfg.inbox_capacity);

    // The first listener fixes the port (it may be 0); the others bind that same port.
    let mut addr = cfg.listen;
    let mut listeners = Vec::with_capacity(cfg.workers);
    for _ in 0..cfg.workers {
        let l = crate::sys::reuseport_listener(addr).map_err(|source| StartError::Listen { addr, source })?;
        addr = l.local_addr()?;
        listeners.push(l);
    }

    let to_workers = mailbox.clone();
    let (store, store_thread) = store::spawn(
        backend,
        cfg.store_queue,
        Box::new(move |worker, result| {
            let _ = to_workers.send_blocking(worker, Msg::Store(result));
        }),
    );
    let (cluster, link) = match &cfg.cluster {
        Some(settings) => {
            let (c, l) = cluster::start(settings, mailbox.clone())?;
            (Some(c), Some(l))
        }
        None => (None, None),
    };
    let stats: Arc<[WorkerStats]> = (0..cfg.workers).map(|_| WorkerStats::default()).collect();
    let registry = Registry {
        workers: stats,
        store: store.clone(),
        cluster: cluster.as_ref().map(|c: &Cluster| c.stats_arc()),
    };

    let mut workers = Vec::with_capacity(cfg.workers);
    for (id, ((poll, listener), inbox)) in polls.into_iter().zip(listeners).zip(inboxes).enumerate() {
        let parts = WorkerParts {
            id,
            poll,
            listener,
            inbox,
            out: Outbox { me: id, mailbox: mailbox.clone(), local: Default::default(), dropped: 0 },
            cfg: cfg.clone(),
            store: store.clone(),
            cluster: cluster.clone(),
            registry: registry.clone(),
        };
        let worker = Worker::new(parts)?;
        let handle = std::thread::Builder::new().name(format!("rusher-w{id}")).spawn(move || {
            if let Err(e) = worker.run() {
                tracing::error!(worker = id, error = %e, "worker stopped on an error");
            }
        })?;
        workers.push(handle);
    }
    Ok(Running {
        addr,
        node: cluster.map(|c| c.node().clone()),
        mailbox,
        workers,
        store: Some(store),
        store_thread: Some(store_thread),
        cluster: link,
    })
}

impl Running {
    /// Graceful drain: stop accepting, close every connection with 1001, flush storage, return.
    pub fn shutdown(mut self) {
        for w in 0..self.mailbox.workers() {
            let _ = self.mailbox.send_blocking(w, Msg::Shutdown);
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        // After the workers: what they published while draining (presence leaves) goes out, then
        // this node's leases are released so another node takes its rooms over at once.
        if let Some(link) = self.cluster.take() {
            link.stop();
        }
        // Workers held the other handles; this last one going closes the queue, and the storage
        // thread commits what is queued before it exits.
        self.store.take();
        if let Some(h) = self.store_thread.take() {
            let _ = h.join();
        }
    }
}
