//! Collaborative documents across nodes (cluster mode).
//!
//! **A replica per node, one writer.** Every node with editors of a document holds a replica of
//! it, loaded from the shared store, and subscribes the document's channel. One node at a time owns
//! the document, through the lease every owned topic uses ([`crate::cluster::ownership`]): only it
//! gives updates their seq and stores them and the snapshots, so each update is persisted once. A
//! node asks for the lease when an editor's update arrives and nobody is known to own the document;
//! the node that gets it reads what is stored (merging it into its replica) and continues the
//! stored seqs. Other nodes do not apply their editors' updates: they forward them to the owner,
//! which applies, stores and — once the update is durable, the rule of a single node — relays it to
//! its own editors, publishes it on the document's channel and answers the forwarding node. Every
//! node applies what is published to its replica and relays it to its editors, so each editor gets
//! each update once, the sender included. An update whose owner does not answer within the cluster
//! timeout is sent again once the owner is looked up anew; after three tries the editor's
//! connection is closed (1013), and y-websocket reconnects and syncs, sending what the server lacks.
//!
//! **Late joiners** sync from their node's replica. A replica misses nothing published: a node reads
//! the store again, and merges it, whenever the document's channel is (re)subscribed — at first and
//! after Redis comes back — so what was stored and published before the subscription took effect is
//! merged too (Yjs updates merge in any order, any number of times); what it brings is relayed to
//! the node's editors.
//!
//! **Awareness** (cursors, names) is applied on the node of the editor that sent it, relayed there,
//! and published; other nodes apply and relay it. A node that (re)subscribes publishes its editors'
//! states again and asks the others for theirs, so states published before a subscription took
//! effect are not missed either way. When a node falls silent for the timeout, the states it
//! announced are removed on the others, as when its editors disconnect.
//!
//! **Owner handover.** An owner whose document leaves its memory (no editor there for
//! `--collab-idle-secs`, after a last snapshot) releases the lease; the next update, on any node,
//! makes a new owner, which reads the stored updates and snapshot first. An owner killed with
//! `kill -9` loses only updates it had applied but not stored: their forwarding nodes time out and
//! send them to the next owner, and editors connected to the dead node reconnect elsewhere and send
//! what the server lacks. An owner that lost its lease without noticing yet (a Redis outage longer
//! than the timeout) may store a seq the new owner also stores: the store refuses the duplicate,
//! that owner asks for the lease again, and the update, already relayed, reaches the store with the
//! next snapshot of a replica that has it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::doc::MAX_AWARENESS_CLIENTS;
use super::{binary_frame, fan_out, proto, Collab, Origin, Pending, MAX_QUEUED_WHILE_LOADING};
use crate::cluster::ownership::{self, HeadRead, Lease, Owned, Route};
use crate::cluster::{Cluster, Envelope, Inbound, Kind};
use crate::mailbox::ConnId;
use crate::store::{LogState, StoreRequest};
use crate::topics::OwnerCtx;
use crate::wire::frame;

/// Published on a document's channel: a durable update, as the y-websocket message relayed.
const EVENT_UPDATE: u8 = 0;
/// Published: an awareness message, as relayed.
const EVENT_AWARENESS: u8 = 1;
/// Published: "send me the awareness states of your editors".
const EVENT_AWARENESS_QUERY: u8 = 2;

/// The owner's answers to a forwarded update: stored (or nothing new), not the owner, or close the
/// editor (`u16` code, little endian, then the reason).
const REPLY_OK: u8 = 0;
const REPLY_NOT_OWNER: u8 = 1;
const REPLY_CLOSE: u8 = 2;

/// Times an update is sent to an owner that is not one or does not answer, before its editor is
/// closed to sync again.
const MAX_ATTEMPTS: u8 = 3;

/// An editor's update on its way to the owner.
#[derive(Debug)]
pub(super) struct Update {
    origin: Origin,
    update: Box<[u8]>,
    attempts: u8,
}

/// Updates forwarded to owner nodes, by request id.
pub(super) type Forwards = ownership::Forwards<Update>;

/// A document's state across nodes, on its home worker.
#[derive(Debug)]
pub(super) struct ClusterDoc {
    /// Who owns the document, and the updates waiting for the owner to be known or ready.
    pub(super) own: Owned<Update>,
    /// A store read merging what owners stored is in flight.
    merging: bool,
    /// Another such read is wanted once this one ends (the channel was subscribed again, or the
    /// last read failed and the next tick retries).
    merge_again: bool,
    /// Awareness clients announced through other nodes, by node: removed when the node goes down.
    remote_clients: HashMap<Arc<str>, HashSet<u64>>,
}

impl ClusterDoc {
    /// A document opened on this node: listen to its channel.
    pub(super) fn open(cluster: &Cluster, topic: &Arc<str>) -> Box<Self> {
        cluster.subscribe(topic.clone());
        Box::new(ClusterDoc {
            own: Owned::new(MAX_QUEUED_WHILE_LOADING),
            merging: false,
            merge_again: false,
            remote_clients: HashMap::new(),
        })
    }
}

/// Publish an awareness message of this node's editors to the other nodes.
pub(super) fn publish_awareness(ctx: &mut OwnerCtx<'_>, name: &str, message: &[u8]) {
    publish(ctx, name, EVENT_AWARENESS, message);
}

/// Publish a durable update (the frame relayed to this node's editors) to the other nodes.
pub(super) fn publish_update(ctx: &mut OwnerCtx<'_>, name: &str, frame: &[u8]) {
    if let Some(message) = frame::payload_of(frame) {
        publish(ctx, name, EVENT_UPDATE, message);
    }
}

fn publish(ctx: &mut OwnerCtx<'_>, name: &str, tag: u8, message: &[u8]) {
    let Some(cluster) = ctx.cluster else { return };
    let mut body = Vec::with_capacity(1 + message.len());
    body.push(tag);
    body.extend_from_slice(message);
    // A full link queue drops the copy for other nodes only; it is counted there.
    let _ = cluster.publish(name, Kind::Event, 0, &body);
}

/// Tell the node that forwarded an update how it ended: `None` stored (or nothing new), or close
/// its editor with this code and reason. Nothing for an editor of this node.
pub(super) fn answer(ctx: &mut OwnerCtx<'_>, name: &str, origin: &Origin, close: Option<(u16, &str)>) {
    let (Some(cluster), Origin::Remote { node, req_id }) = (ctx.cluster, origin) else { return };
    let body = match close {
        None => vec![REPLY_OK],
        Some((code, reason)) => {
            let mut b = vec![REPLY_CLOSE];
            b.extend_from_slice(&code.to_le_bytes());
            b.extend_from_slice(reason.as_bytes());
            b
        }
    };
    // A full queue drops the answer; the forwarding node sends the update again at the timeout.
    let _ = cluster.send(node, name, Kind::Reply, *req_id, &body);
}

impl Collab {
    /// An update from an editor of this node: to the owner, which relays it back once durable.
    pub(super) fn cluster_update(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        name: &Arc<str>,
        conn: ConnId,
        update: &[u8],
    ) {
        // y-websocket answers the server's sync step 1 with an empty update when it has nothing new.
        if update == yrs::Update::EMPTY_V1 {
            return;
        }
        self.route(ctx, name, Update { origin: Origin::Local(conn), update: update.into(), attempts: 0 });
    }

    fn route(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, u: Update) {
        let Some(cluster) = ctx.cluster else { return };
        let Some(cd) = self.docs.get_mut(name).and_then(|d| d.cluster.as_mut()) else {
            return refuse(ctx, name, u, "the document is not open here");
        };
        let route = cd.own.route(cluster, name, u);
        self.follow(ctx, name, route);
    }

    /// Carry out where the document's ownership sends an update.
    fn follow(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, route: Route<Update>) {
        match route {
            Route::Here(u) => self.apply(ctx, name, &u.update, u.origin),
            Route::Held => {}
            Route::Forward(owner, u) => match u.origin {
                // A forwarded update is never forwarded again: its node asks for the lease anew.
                Origin::Remote { node, req_id } => reply(ctx, &node, name, req_id, &[REPLY_NOT_OWNER]),
                Origin::Local(_) => self.forward(ctx, name, owner, u),
            },
            Route::Refused(us, reason) => {
                for u in us {
                    refuse(ctx, name, u, reason);
                }
            }
        }
    }

    fn forward(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, owner: Arc<str>, u: Update) {
        let Some(cluster) = ctx.cluster else { return };
        let body = u.update.clone();
        match self.forwards.send(cluster, owner, name, &body, u) {
            Ok(()) => {
                if let Some(cd) = self.docs.get_mut(name).and_then(|d| d.cluster.as_mut()) {
                    cd.own.forwarded();
                }
            }
            Err(u) => refuse(ctx, name, u, "overloaded"),
        }
    }

    /// The owner did not take an update (not the owner, or no answer): look it up and try again,
    /// a bounded number of times.
    fn retry(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, mut u: Update) {
        u.attempts += 1;
        if u.attempts >= MAX_ATTEMPTS {
            return refuse(ctx, name, u, "no node owns this document now: sync again");
        }
        self.route(ctx, name, u);
    }

    /// Read what is stored and merge it into the replica (`head`: this node just became the owner).
    fn read_stored(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, head: bool) -> bool {
        let Some(state) = self.docs.get(name) else { return false };
        let doc = state.stored.clone();
        self.submit(ctx, name, Pending::Merge { head }, |tag| StoreRequest::LogLoad { stream: doc, tag })
    }

    /// Merge the store into the replica now, or after the read in flight.
    fn catch_up(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>) {
        let Some(cd) = self.docs.get_mut(name).and_then(|d| d.cluster.as_mut()) else { return };
        if cd.merging {
            cd.merge_again = true;
            return;
        }
        cd.merging = true;
        cd.merge_again = false;
        if !self.read_stored(ctx, name, false) {
            if let Some(cd) = self.docs.get_mut(name).and_then(|d| d.cluster.as_mut()) {
                (cd.merging, cd.merge_again) = (false, true);
            }
        }
    }

    /// A read of the store came back: merge it, relay what it brought to this node's editors, and
    /// for a new owner continue the stored seqs and serve the updates that waited.
    pub(super) fn merged(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        name: &Arc<str>,
        head: bool,
        stored: Result<LogState, String>,
    ) {
        let Some(state) = self.docs.get_mut(name) else { return };
        let before = state.doc.state_vector();
        let result = super::merge(state, stored);
        if let Err(why) = &result {
            tracing::warn!(doc = %name, error = %why, "stored document not merged");
            if state.doc.is_poisoned() {
                super::poisoned(ctx, state);
            }
        }
        if state.doc.state_vector() != before {
            if let Ok(diff) = state.doc.diff_for(&before) {
                fan_out(ctx, &state.per_worker, &state.list, binary_frame(&proto::update(&diff)), None);
            }
        }
        if !head {
            let Some(cd) = state.cluster.as_mut() else { return };
            cd.merging = false;
            if result.is_err() {
                // Retried by the next tick rather than at once.
                cd.merge_again = true;
            } else if cd.merge_again {
                self.catch_up(ctx, name);
            }
            return;
        }
        let seqs = result.as_ref().ok().map(super::stored_seqs);
        let Some(cd) = state.cluster.as_mut() else { return };
        match cd.own.head_read(seqs.is_some()) {
            HeadRead::Stale => self.resolve(ctx, name),
            HeadRead::Ready(waiting) => {
                (state.snapshot_seq, state.last_seq) = seqs.unwrap_or_default();
                for u in waiting {
                    self.route(ctx, name, u);
                }
            }
            HeadRead::Failed(waiting) => {
                for u in waiting {
                    refuse(ctx, name, u, "storage failed");
                }
            }
        }
    }

    /// Once a second: send again the updates whose owner did not answer, and retry failed reads.
    pub(super) fn cluster_tick(&mut self, ctx: &mut OwnerCtx<'_>) {
        let Some(cluster) = ctx.cluster else { return };
        for f in self.forwards.expired(cluster) {
            if let Some(cd) = self.docs.get_mut(&f.topic).and_then(|d| d.cluster.as_mut()) {
                cd.own.answered();
                cd.own.forget(&f.owner);
            }
            self.retry(ctx, &f.topic, f.payload);
        }
        let again: Vec<Arc<str>> = self
            .docs
            .iter()
            .filter(|(_, d)| d.cluster.as_ref().is_some_and(|c| c.merge_again && !c.merging))
            .map(|(n, _)| n.clone())
            .collect();
        for name in again {
            self.catch_up(ctx, &name);
        }
    }

    /// A message from the cluster link about a document.
    pub fn on_cluster(&mut self, ctx: &mut OwnerCtx<'_>, msg: Inbound) {
        match msg {
            Inbound::Remote(env) => self.on_remote(ctx, env),
            Inbound::Lease { topic, owner } => self.on_lease(ctx, &topic, owner),
            Inbound::LeaseLost { topic } => {
                if let Some(cd) = self.docs.get_mut(&topic).and_then(|d| d.cluster.as_mut()) {
                    cd.own.lease_lost();
                }
                self.resolve(ctx, &topic);
            }
            Inbound::Subscribed { topic } => {
                if self.docs.contains_key(&topic) {
                    // What was published before the subscription took effect is missed both ways:
                    // this node's editors' states go out again, and the others are asked for theirs.
                    self.publish_local_awareness(ctx, &topic);
                    publish(ctx, &topic, EVENT_AWARENESS_QUERY, &[]);
                    self.catch_up(ctx, &topic);
                }
            }
            Inbound::NodeDown { node } => self.node_down(ctx, &node),
            // Its editors' awareness comes back with their next renewal (every 15 s).
            Inbound::NodeUp { .. } => {}
        }
    }

    fn on_lease(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, owner: Option<Arc<str>>) {
        let Some(cluster) = ctx.cluster else { return };
        let mine = owner.as_deref() == Some(&**cluster.node());
        let Some(cd) = self.docs.get_mut(name).and_then(|d| d.cluster.as_mut()) else {
            if mine {
                cluster.release(name.clone());
            }
            return;
        };
        match cd.own.on_lease(mine, owner) {
            Lease::Ignored => {}
            Lease::ReadHead => {
                if !self.read_stored(ctx, name, true) {
                    if let Some(cd) = self.docs.get_mut(name).and_then(|d| d.cluster.as_mut()) {
                        for u in cd.own.fail() {
                            refuse(ctx, name, u, "storage is overloaded");
                        }
                    }
                }
            }
            Lease::Reroute(waiting) => {
                for u in waiting {
                    self.route(ctx, name, u);
                }
            }
            Lease::Refused(waiting) => {
                for u in waiting {
                    refuse(ctx, name, u, "cluster unavailable");
                }
            }
        }
    }

    /// Updates wait but nobody is known to own the document: ask for the lease.
    fn resolve(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>) {
        let Some(cluster) = ctx.cluster else { return };
        let Some(cd) = self.docs.get_mut(name).and_then(|d| d.cluster.as_mut()) else { return };
        let route = cd.own.resolve(cluster, name);
        self.follow(ctx, name, route);
    }

    fn on_remote(&mut self, ctx: &mut OwnerCtx<'_>, env: Envelope) {
        let name = env.topic.clone();
        match env.kind {
            Kind::Request => {
                if !self.docs.contains_key(&name) {
                    // Not open here, so not owned here either.
                    return reply(ctx, &env.origin, &name, env.req_id, &[REPLY_NOT_OWNER]);
                }
                let origin = Origin::Remote { node: env.origin.clone(), req_id: env.req_id };
                self.route(ctx, &name, Update { origin, update: env.body, attempts: 0 });
            }
            Kind::Reply => self.on_reply(ctx, env),
            Kind::Event => self.on_event(ctx, &name, &env.origin, &env.body),
            Kind::Frame | Kind::Heartbeat => {}
        }
    }

    fn on_reply(&mut self, ctx: &mut OwnerCtx<'_>, env: Envelope) {
        // A reply after the timeout finds nothing: the update was sent again already.
        let Some(f) = self.forwards.answer(env.req_id) else { return };
        let name = f.topic;
        if let Some(cd) = self.docs.get_mut(&name).and_then(|d| d.cluster.as_mut()) {
            cd.own.answered();
        }
        match env.body.first() {
            Some(&REPLY_OK) => {}
            Some(&REPLY_NOT_OWNER) => {
                if let Some(cd) = self.docs.get_mut(&name).and_then(|d| d.cluster.as_mut()) {
                    cd.own.forget(&f.owner);
                }
                self.retry(ctx, &name, f.payload);
            }
            Some(&REPLY_CLOSE) if env.body.len() >= 3 => {
                let code = u16::from_le_bytes([env.body[1], env.body[2]]);
                let reason = String::from_utf8_lossy(&env.body[3..]);
                if let Origin::Local(conn) = f.payload.origin {
                    super::close(ctx, conn, code, &reason);
                }
            }
            _ => tracing::warn!(node = %env.origin, doc = %name, "malformed answer from a document's owner"),
        }
    }

    fn on_event(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, node: &Arc<str>, body: &[u8]) {
        let Some(state) = self.docs.get_mut(name) else { return };
        let (tag, message) = match body.split_first() {
            Some((tag, message)) => (*tag, message),
            None => return tracing::warn!(node = %node, doc = %name, "empty document event dropped"),
        };
        match (tag, proto::decode(message)) {
            (EVENT_UPDATE, Ok(proto::Inbound::Update { update })) => match state.doc.apply_update(update) {
                // Nothing new: a read of the store brought it, and relayed it, already.
                Ok(false) => {}
                Ok(true) => fan_out(ctx, &state.per_worker, &state.list, binary_frame(message), None),
                Err(e) => {
                    tracing::warn!(node = %node, doc = %name, error = %e, "published update not applied");
                    if state.doc.is_poisoned() {
                        super::poisoned(ctx, state);
                    }
                }
            },
            (EVENT_AWARENESS, Ok(proto::Inbound::Awareness { update })) => {
                match state.doc.apply_awareness(update) {
                    // States already known (sent again after a subscription) are not relayed again.
                    Ok(ids) if ids.is_empty() => {}
                    Ok(ids) => {
                        if let Some(cd) = state.cluster.as_mut() {
                            let known = cd.remote_clients.entry(node.clone()).or_default();
                            for id in ids {
                                if known.len() < MAX_AWARENESS_CLIENTS {
                                    known.insert(id);
                                }
                            }
                        }
                        fan_out(ctx, &state.per_worker, &state.list, binary_frame(message), None);
                    }
                    Err(e) => {
                        tracing::warn!(node = %node, doc = %name, error = %e, "published awareness not applied")
                    }
                }
            }
            (EVENT_AWARENESS_QUERY, _) => self.publish_local_awareness(ctx, name),
            _ => tracing::warn!(node = %node, doc = %name, tag, "malformed document event dropped"),
        }
    }

    /// Publish the awareness states of this node's editors.
    fn publish_local_awareness(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>) {
        let Some(state) = self.docs.get(name) else { return };
        let local: Vec<u64> = state.conns.values().flatten().copied().collect();
        if let Some(update) = state.doc.awareness_update_for(&local) {
            publish_awareness(ctx, name, &proto::awareness(&update));
        }
    }

    /// A node fell silent: it owns no document any more, and the cursors it announced go.
    fn node_down(&mut self, ctx: &mut OwnerCtx<'_>, node: &Arc<str>) {
        for state in self.docs.values_mut() {
            let Some(cd) = state.cluster.as_mut() else { continue };
            cd.own.forget(node);
            let Some(ids) = cd.remote_clients.remove(node) else { continue };
            let ids: Vec<u64> = ids.into_iter().collect();
            if let Some(gone) = state.doc.remove_clients(&ids) {
                fan_out(ctx, &state.per_worker, &state.list, binary_frame(&proto::awareness(&gone)), None);
            }
        }
    }
}

/// Refuse an update: an editor here is closed so that it reconnects and syncs again (sending what
/// the server lacks); a forwarding node is told to do that to its editor.
fn refuse(ctx: &mut OwnerCtx<'_>, name: &str, u: Update, reason: &str) {
    match u.origin {
        Origin::Local(conn) => super::close(ctx, conn, 1013, reason),
        remote => answer(ctx, name, &remote, Some((1013, reason))),
    }
}

fn reply(ctx: &mut OwnerCtx<'_>, node: &str, name: &str, req_id: u64, body: &[u8]) {
    if let Some(cluster) = ctx.cluster {
        let _ = cluster.send(node, name, Kind::Reply, req_id, body);
    }
}
