//! `/collab/<doc>`: Yjs documents for the unmodified y-websocket client, held with yrs on the
//! document's owner worker and persisted as an update log plus snapshots.
//!
//! Connections on any worker forward their protocol messages to the owner; the owner applies
//! updates, answers sync steps, and fans updates and awareness out to every connection of the
//! document (the sender included, as the reference server does), one message per frame. A document
//! is loaded completely from storage before any client is synced.
//!
//! An update is relayed to the other editors, and shows in `/text`, only once it is durable: what
//! anyone has seen survives a crash. (The sender's own document already has it.)
//!
//! A document is known by its topic, `collab:<doc>`: the key of its state here and its name across
//! the cluster, where every node with editors holds a replica and one node persists (see
//! [`cluster`]).

mod cluster;
pub mod doc;
pub mod proto;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::doc::{CollabDoc, DocError};
use super::{binary_frame, fan_out, OwnerCtx, TopicMsg, MAX_QUEUED_WHILE_LOADING};
use crate::mailbox::{ConnId, Msg};
use crate::metrics::WorkerStats;
use crate::store::{LogEntry, LogState, StoreRequest, StoreResult};
use crate::wire::handshake;

/// Longest document name, in bytes.
pub const MAX_DOC_NAME: usize = 128;

/// Whether `name` may name a document.
pub fn valid_doc_name(name: &str) -> bool {
    (1..=MAX_DOC_NAME).contains(&name.len()) && !name.chars().any(|c| c.is_control() || c == '/')
}

/// What a document's topic starts with.
const PREFIX: &str = "collab:";

/// A document's topic: `collab:<doc>`.
pub fn topic(doc: &str) -> Arc<str> {
    format!("{PREFIX}{doc}").into()
}

/// Whether a topic names a document.
pub fn is_topic(topic: &str) -> bool {
    topic.starts_with(PREFIX)
}

/// The name of a document's subscriber list on each worker, from its topic; not a valid Phoenix
/// topic.
pub fn list_name(topic: &str) -> String {
    format!("\0{topic}")
}

/// Work for a document's owner worker; `doc` is the document's topic.
#[derive(Debug)]
pub enum CollabMsg {
    /// A connection upgraded on `/collab/<doc>`.
    Open { doc: Arc<str>, conn: ConnId },
    /// One y-websocket protocol message from a connection.
    Frame { doc: Arc<str>, conn: ConnId, data: Box<[u8]> },
    /// The connection is gone.
    Close { doc: Arc<str>, conn: ConnId },
    /// `GET /collab/<doc>/text`: answer with the plain text of the shared type `name`.
    Text { doc: Arc<str>, conn: ConnId, name: Box<str> },
}

impl CollabMsg {
    fn doc(&self) -> &Arc<str> {
        match self {
            CollabMsg::Open { doc, .. }
            | CollabMsg::Frame { doc, .. }
            | CollabMsg::Close { doc, .. }
            | CollabMsg::Text { doc, .. } => doc,
        }
    }
}

/// A document on its owner worker.
#[derive(Debug)]
struct DocState {
    /// The document's name in the store.
    stored: Arc<str>,
    /// Messages that arrived while the document was loading.
    loading: Option<Vec<CollabMsg>>,
    doc: CollabDoc,
    /// Seq of the last update applied (and queued for storage).
    last_seq: u64,
    /// Seq the stored snapshot covers.
    snapshot_seq: u64,
    compacting: bool,
    /// Editors, with the awareness client ids each announced.
    conns: HashMap<ConnId, Vec<u64>>,
    per_worker: Vec<u32>,
    list: Arc<str>,
    /// Storage requests in flight.
    inflight: u32,
    /// Updates applied but not yet durable, to relay once they are; seqs ascending.
    unrelayed: std::collections::VecDeque<Unrelayed>,
    /// `/text` requests waiting for the updates before them to become durable.
    text_waiters: Vec<(ConnId, Box<str>)>,
    idle_since: Option<Instant>,
    /// The document across nodes, in cluster mode only.
    cluster: Option<Box<cluster::ClusterDoc>>,
}

impl DocState {
    /// Whether this node stores the document's updates and snapshots: always alone, and in cluster
    /// mode only while it owns the document.
    fn may_write(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.own.is_ready_owner())
    }
}

/// An update applied on the owner, waiting to become durable.
#[derive(Debug)]
struct Unrelayed {
    seq: u64,
    /// The y-websocket message for every editor.
    frame: crate::mailbox::Frame,
    /// Who sent it: a node that forwarded it hears once it is durable.
    origin: Origin,
}

/// Who sent an update, and hears how it ended.
#[derive(Debug, Clone)]
enum Origin {
    /// An editor connected to this node.
    Local(ConnId),
    /// Another node forwarded it to this one, the document's owner.
    Remote { node: Arc<str>, req_id: u64 },
}

#[derive(Debug)]
enum Pending {
    Load,
    Append,
    Compact {
        upto: u64,
    },
    /// Cluster mode: a read of what is stored, merged into the replica; `head` when this node just
    /// became the owner and continues the stored seqs.
    Merge {
        head: bool,
    },
}

/// Collab state on one worker: the documents it owns.
#[derive(Debug)]
pub struct Collab {
    me: usize,
    docs: HashMap<Arc<str>, DocState>,
    pending: HashMap<u64, (Arc<str>, Pending)>,
    next_tag: u64,
    /// Updates forwarded to other nodes (cluster mode).
    forwards: cluster::Forwards,
}

impl Collab {
    /// State for worker `me`.
    pub fn new(me: usize) -> Self {
        Collab {
            me,
            docs: HashMap::new(),
            pending: HashMap::new(),
            next_tag: 0,
            forwards: cluster::Forwards::default(),
        }
    }

    fn submit(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        doc: &Arc<str>,
        p: Pending,
        req: impl FnOnce(u64) -> StoreRequest,
    ) -> bool {
        self.next_tag += 1;
        let tag = self.next_tag;
        match ctx.store.submit(self.me, req(tag)) {
            Ok(()) => {
                self.pending.insert(tag, (doc.clone(), p));
                if let Some(d) = self.docs.get_mut(doc) {
                    d.inflight += 1;
                }
                true
            }
            Err(e) => {
                tracing::warn!(doc = %doc, error = %e, "collab storage request refused");
                false
            }
        }
    }

    /// A message for a document this worker owns.
    pub fn on_msg(&mut self, ctx: &mut OwnerCtx<'_>, msg: CollabMsg) {
        let name = msg.doc().clone();
        let Some(state) = self.docs.get_mut(&name) else {
            match msg {
                CollabMsg::Open { .. } | CollabMsg::Text { .. } => self.load(ctx, name, msg),
                // Nothing to do for a document that is not open.
                CollabMsg::Frame { .. } | CollabMsg::Close { .. } => {}
            }
            return;
        };
        if let Some(queue) = &mut state.loading {
            if queue.len() < MAX_QUEUED_WHILE_LOADING || matches!(msg, CollabMsg::Close { .. }) {
                queue.push(msg);
                return;
            }
            match msg {
                CollabMsg::Open { conn, .. } | CollabMsg::Frame { conn, .. } => {
                    close(ctx, conn, 1013, "document is loading: try again later")
                }
                CollabMsg::Text { conn, .. } => {
                    let bytes =
                        handshake::response(503, "text/plain; charset=utf-8", &[], b"document is loading\n");
                    ctx.out.send(conn.worker(), Msg::HttpReply { conn, bytes });
                }
                CollabMsg::Close { .. } => {}
            }
            return;
        }
        match msg {
            CollabMsg::Open { conn, .. } => self.open(ctx, &name, conn),
            CollabMsg::Frame { conn, data, .. } => self.frame(ctx, &name, conn, &data),
            CollabMsg::Close { conn, .. } => self.close(ctx, &name, conn),
            CollabMsg::Text { conn, name: shared, .. } => {
                if state.unrelayed.is_empty() {
                    reply_text(ctx, state, conn, &shared);
                } else if state.text_waiters.len() < 1024 {
                    state.text_waiters.push((conn, shared));
                } else {
                    let bytes = handshake::response(503, "text/plain; charset=utf-8", &[], b"busy\n");
                    ctx.out.send(conn.worker(), Msg::HttpReply { conn, bytes });
                }
            }
        }
    }

    fn load(&mut self, ctx: &mut OwnerCtx<'_>, name: Arc<str>, first: CollabMsg) {
        let stored: Arc<str> = name.strip_prefix(PREFIX).unwrap_or(&name).into();
        let state = DocState {
            stored: stored.clone(),
            loading: Some(vec![first]),
            doc: CollabDoc::new().with_max_len(ctx.cfg.max_doc_bytes),
            last_seq: 0,
            snapshot_seq: 0,
            compacting: false,
            conns: HashMap::new(),
            per_worker: vec![0; ctx.out.workers()],
            list: list_name(&name).into(),
            inflight: 0,
            unrelayed: Default::default(),
            text_waiters: Vec::new(),
            idle_since: None,
            cluster: ctx.cluster.map(|c| cluster::ClusterDoc::open(c, &name)),
        };
        self.docs.insert(name.clone(), state);
        WorkerStats::add(&ctx.stats.collab_docs, 1);
        if !self.submit(ctx, &name, Pending::Load, |tag| StoreRequest::LogLoad { stream: stored, tag }) {
            self.fail_load(ctx, &name, "storage is overloaded");
        }
    }

    /// Loading failed: refuse everything queued and forget the document.
    fn fail_load(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, why: &str) {
        let Some(state) = self.docs.remove(name) else { return };
        WorkerStats::sub(&ctx.stats.collab_docs, 1);
        if let (Some(c), Some(cd)) = (ctx.cluster, &state.cluster) {
            cd.own.unloaded(c, name.clone());
        }
        for msg in state.loading.unwrap_or_default() {
            match msg {
                CollabMsg::Open { conn, .. } => {
                    ctx.out.send(conn.worker(), Msg::CloseConn { conn, code: 1011, reason: why.into() })
                }
                CollabMsg::Text { conn, .. } => {
                    let bytes = handshake::response(
                        503,
                        "text/plain; charset=utf-8",
                        &[],
                        format!("{why}\n").as_bytes(),
                    );
                    ctx.out.send(conn.worker(), Msg::HttpReply { conn, bytes });
                }
                CollabMsg::Frame { .. } | CollabMsg::Close { .. } => {}
            }
        }
    }

    fn open(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, conn: ConnId) {
        let Some(state) = self.docs.get_mut(name) else { return };
        if state.conns.insert(conn, Vec::new()).is_none() {
            state.per_worker[conn.worker()] += 1;
            WorkerStats::add(&ctx.stats.collab_editors, 1);
        }
        state.idle_since = None;
        // The server speaks first, as the reference server does: its state vector, then every
        // known awareness state.
        to_conn(ctx, conn, &proto::sync_step1(&state.doc.state_vector()));
        if let Some(a) = state.doc.awareness_update_all() {
            to_conn(ctx, conn, &proto::awareness(&a));
        }
    }

    fn frame(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, conn: ConnId, data: &[u8]) {
        let Some(state) = self.docs.get_mut(name) else { return };
        if !state.conns.contains_key(&conn) {
            return;
        }
        let msg = match proto::decode(data) {
            Ok(m) => m,
            Err(e) => return close(ctx, conn, e.close_code(), &e.to_string()),
        };
        match msg {
            proto::Inbound::SyncStep1 { state_vector } => match state.doc.diff_for(state_vector) {
                Ok(diff) => to_conn(ctx, conn, &proto::sync_step2(&diff)),
                Err(e) => close(ctx, conn, e.close_code(), &e.to_string()),
            },
            proto::Inbound::SyncStep2 { update } | proto::Inbound::Update { update } => {
                if state.cluster.is_some() {
                    self.cluster_update(ctx, name, conn, update);
                } else {
                    self.apply(ctx, name, update, Origin::Local(conn));
                }
            }
            proto::Inbound::Awareness { update } => match state.doc.apply_awareness(update) {
                Ok(ids) => {
                    if let Some(mine) = state.conns.get_mut(&conn) {
                        for id in ids {
                            if !mine.contains(&id) && mine.len() < 16 {
                                mine.push(id);
                            }
                        }
                    }
                    let message = proto::awareness(update);
                    fan_out(ctx, &state.per_worker, &state.list, binary_frame(&message), None);
                    cluster::publish_awareness(ctx, name, &message);
                }
                Err(e) => close(ctx, conn, e.close_code(), &e.to_string()),
            },
            proto::Inbound::QueryAwareness => {
                if let Some(a) = state.doc.awareness_update_all() {
                    to_conn(ctx, conn, &proto::awareness(&a));
                }
            }
            // Authentication happens at the upgrade; nothing to do with the client's auth message.
            proto::Inbound::Auth => {}
        }
    }

    /// Apply an update on the document's owner: give it the next seq, store it, and relay it once
    /// it is durable.
    fn apply(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, update: &[u8], origin: Origin) {
        let Some(state) = self.docs.get_mut(name) else { return };
        match state.doc.apply_update(update) {
            Ok(true) => {
                state.last_seq += 1;
                WorkerStats::add(&ctx.stats.collab_updates, 1);
                let seq = state.last_seq;
                let frame = binary_frame(&proto::update(update));
                if matches!(origin, Origin::Remote { .. }) && state.conns.is_empty() {
                    // Editors on other nodes keep the document busy here, its owner.
                    state.idle_since = Some(Instant::now());
                }
                state.unrelayed.push_back(Unrelayed { seq, frame, origin });
                let u = LogEntry { stream: state.stored.clone(), seq, data: update.into() };
                if !self.submit(ctx, name, Pending::Append, |tag| StoreRequest::LogAppend { entry: u, tag }) {
                    // Relay anyway so editors converge; the next snapshot stores it.
                    tracing::warn!(doc = %name, seq, "storage queue full: update relayed before it is durable");
                    if let Some(state) = self.docs.get_mut(name) {
                        relay_durable(ctx, state, name, seq);
                    }
                }
                self.maybe_compact(ctx, name);
            }
            Ok(false) => cluster::answer(ctx, name, &origin, None),
            Err(DocError::Poisoned(why)) => {
                // yrs failed inside an update: this copy cannot be trusted. Everyone
                // reconnects and the document reloads from what is stored.
                tracing::error!(doc = %name, error = %why, "document poisoned: closing its editors");
                cluster::answer(
                    ctx,
                    name,
                    &origin,
                    Some((1011, "document reloading after an internal error")),
                );
                poisoned(ctx, state);
            }
            Err(e) => match origin {
                Origin::Local(conn) => close(ctx, conn, e.close_code(), &e.to_string()),
                remote => cluster::answer(ctx, name, &remote, Some((e.close_code(), &e.to_string()))),
            },
        }
    }

    fn close(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, conn: ConnId) {
        let Some(state) = self.docs.get_mut(name) else { return };
        let Some(ids) = state.conns.remove(&conn) else { return };
        state.per_worker[conn.worker()] -= 1;
        WorkerStats::sub(&ctx.stats.collab_editors, 1);
        if let Some(gone) = state.doc.remove_clients(&ids) {
            let message = proto::awareness(&gone);
            fan_out(ctx, &state.per_worker, &state.list, binary_frame(&message), None);
            cluster::publish_awareness(ctx, name, &message);
        }
        if state.conns.is_empty() {
            state.idle_since = Some(Instant::now());
        }
    }

    /// Snapshot when enough updates piled up since the last one.
    fn maybe_compact(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>) {
        let every = ctx.cfg.collab_snapshot_every;
        let Some(state) = self.docs.get_mut(name) else { return };
        if state.compacting || !state.may_write() || state.last_seq.saturating_sub(state.snapshot_seq) < every
        {
            return;
        }
        self.compact(ctx, name);
    }

    fn compact(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>) {
        let Some(state) = self.docs.get_mut(name) else { return };
        let upto = state.last_seq;
        let snapshot: Box<[u8]> = state.doc.snapshot().into();
        state.compacting = true;
        let doc = state.stored.clone();
        let ok = self.submit(ctx, name, Pending::Compact { upto }, |tag| StoreRequest::LogCompact {
            stream: doc,
            upto_seq: upto,
            snapshot,
            tag,
        });
        if !ok {
            if let Some(state) = self.docs.get_mut(name) {
                state.compacting = false;
            }
        }
    }

    /// Once a second: snapshot idle documents and let them leave memory; in cluster mode, look
    /// forwarded updates up again when their owner did not answer, and retry failed store reads.
    pub fn tick(&mut self, ctx: &mut OwnerCtx<'_>) {
        self.cluster_tick(ctx);
        let idle = Duration::from_secs(ctx.cfg.collab_idle_secs);
        let due: Vec<Arc<str>> = self
            .docs
            .iter()
            .filter(|(_, d)| d.loading.is_none() && d.idle_since.is_some_and(|t| t.elapsed() >= idle))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let Some(state) = self.docs.get(&name) else { continue };
            if state.last_seq > state.snapshot_seq && state.may_write() {
                if !state.compacting {
                    self.compact(ctx, &name);
                }
            } else if state.inflight == 0 && state.cluster.as_ref().is_none_or(|c| c.own.idle()) {
                if let Some(state) = self.docs.remove(&name) {
                    WorkerStats::sub(&ctx.stats.collab_docs, 1);
                    if let (Some(c), Some(cd)) = (ctx.cluster, state.cluster) {
                        cd.own.unloaded(c, name);
                    }
                }
            }
        }
    }

    /// A storage result for a document this worker owns; false if it was not a collab result.
    pub fn on_store(&mut self, ctx: &mut OwnerCtx<'_>, result: StoreResult) {
        let Some(tag) = result.log_tag() else { return };
        let Some((name, pending)) = self.pending.remove(&tag) else { return };
        if let Some(state) = self.docs.get_mut(&name) {
            state.inflight -= 1;
        }
        match (pending, result) {
            (Pending::Load, StoreResult::LogLoaded { result, .. }) => {
                let Some(state) = self.docs.get_mut(&name) else { return };
                match merge(state, result.map_err(|e| e.to_string())) {
                    Ok(stored) => {
                        if state.cluster.is_none() {
                            (state.snapshot_seq, state.last_seq) = stored_seqs(&stored);
                        }
                        let queued = state.loading.take().unwrap_or_default();
                        for msg in queued {
                            self.on_msg(ctx, msg);
                        }
                    }
                    Err(why) => {
                        tracing::error!(doc = %name, error = %why, "cannot load document");
                        self.fail_load(ctx, &name, "the document cannot be loaded");
                    }
                }
            }
            (Pending::Merge { head }, StoreResult::LogLoaded { result, .. }) => {
                self.merged(ctx, &name, head, result.map_err(|e| e.to_string()));
            }
            (Pending::Append, StoreResult::LogAppended { seq, result, .. }) => {
                let failed = result.is_err();
                if let Err(e) = result {
                    // Still relayed so editors converge; the next snapshot tries to store it again.
                    tracing::error!(doc = %name, seq, error = %e, "collab update not stored");
                }
                if let Some(state) = self.docs.get_mut(&name) {
                    relay_durable(ctx, state, &name, seq);
                    if failed {
                        if let (Some(c), Some(cd)) = (ctx.cluster, state.cluster.as_mut()) {
                            // Perhaps another node owns the document now and stored this seq:
                            // ask for the lease again, and read the head anew if it is still ours.
                            cd.own.recheck(c, &name);
                        }
                    }
                }
            }
            (Pending::Compact { upto }, StoreResult::LogCompacted { result, .. }) => {
                let Some(state) = self.docs.get_mut(&name) else { return };
                state.compacting = false;
                match result {
                    Ok(()) => {
                        WorkerStats::add(&ctx.stats.collab_snapshots, 1);
                        state.snapshot_seq = state.snapshot_seq.max(upto);
                    }
                    Err(e) => tracing::error!(doc = %name, error = %e, "snapshot not stored"),
                }
            }
            (p, _) => {
                tracing::error!(doc = %name, pending = ?p, "collab storage result does not match its request")
            }
        }
    }
}

/// Relay every update up to `seq` (acks arrive in order) to this node's editors, and in cluster mode
/// to the other nodes' (answering nodes that forwarded them), then answer `/text` requests that
/// waited for them.
fn relay_durable(ctx: &mut OwnerCtx<'_>, state: &mut DocState, name: &Arc<str>, seq: u64) {
    while state.unrelayed.front().is_some_and(|u| u.seq <= seq) {
        let u = state.unrelayed.pop_front().expect("checked");
        if state.cluster.is_some() {
            cluster::publish_update(ctx, name, &u.frame);
            cluster::answer(ctx, name, &u.origin, None);
        }
        fan_out(ctx, &state.per_worker, &state.list, u.frame, None);
    }
    if state.unrelayed.is_empty() {
        for (conn, shared) in std::mem::take(&mut state.text_waiters) {
            reply_text(ctx, state, conn, &shared);
        }
    }
}

/// Merge what the store holds into the document (a fresh one at load, a replica in cluster mode).
fn merge(state: &mut DocState, stored: Result<LogState, String>) -> Result<LogState, String> {
    let stored = stored?;
    let updates: Vec<&[u8]> = stored.entries.iter().map(|(_, u)| &u[..]).collect();
    state
        .doc
        .merge_stored(stored.snapshot.as_ref().map(|(_, s)| &s[..]), &updates)
        .map_err(|e| e.to_string())?;
    Ok(stored)
}

/// The seq the stored snapshot covers and the last stored seq.
fn stored_seqs(stored: &LogState) -> (u64, u64) {
    let snapshot_seq = stored.snapshot.as_ref().map_or(0, |(seq, _)| *seq);
    (snapshot_seq, stored.entries.last().map_or(snapshot_seq, |(seq, _)| *seq))
}

/// The document's copy here cannot be trusted: close its editors here and let it leave memory
/// (it reloads from the store on the next open), storing nothing more from it.
fn poisoned(ctx: &mut OwnerCtx<'_>, state: &mut DocState) {
    for c in state.conns.keys() {
        close(ctx, *c, 1011, "document reloading after an internal error");
    }
    WorkerStats::sub(&ctx.stats.collab_editors, state.conns.len() as u64);
    state.conns.clear();
    state.per_worker.iter_mut().for_each(|n| *n = 0);
    state.idle_since = Some(Instant::now() - Duration::from_secs(ctx.cfg.collab_idle_secs));
    state.last_seq = state.snapshot_seq;
}

fn reply_text(ctx: &mut OwnerCtx<'_>, state: &DocState, conn: ConnId, shared: &str) {
    let text = state.doc.text(shared);
    let bytes = handshake::response(200, "text/plain; charset=utf-8", &[], text.as_bytes());
    ctx.out.send(conn.worker(), Msg::HttpReply { conn, bytes });
}

fn to_conn(ctx: &mut OwnerCtx<'_>, conn: ConnId, message: &[u8]) {
    ctx.out.send(conn.worker(), Msg::ToConn { conn, frame: binary_frame(message) });
}

fn close(ctx: &mut OwnerCtx<'_>, conn: ConnId, code: u16, reason: &str) {
    ctx.out.send(conn.worker(), Msg::CloseConn { conn, code, reason: reason.into() });
}

/// Forward a message to the document's owner.
pub fn send(out: &mut crate::mailbox::Outbox, msg: CollabMsg) {
    let owner = out.owner(msg.doc());
    out.send(owner, Msg::Topic(TopicMsg::Collab(msg)));
}
