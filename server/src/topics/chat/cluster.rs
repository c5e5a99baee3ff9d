//! Chat rooms across nodes (cluster mode).
//!
//! **Order from one owner.** One node at a time owns a room, through the lease every owned topic
//! uses ([`crate::cluster::ownership`]); a node asks for it when a message must be assigned and
//! nobody is known to own the room. The node that gets it reads the room's head from the shared
//! store before it assigns a seq, so it continues where the previous owner stopped; a stale owner
//! that still assigns a seq taken meanwhile is refused by the store (a duplicate (room, seq)),
//! answers "storage failed" and asks for the lease again. Other nodes forward pushes to the owner's
//! node channel; the owner stores, answers the forwarding node once the message is durable, and
//! only then publishes `new_msg` to the room's channel. A forwarded push unanswered within the
//! cluster timeout gets an error reply.
//!
//! **Presence.** Each node's home worker of a room publishes its members' presence changes; every
//! other node keeps them per origin node and tells its own members. When a node (re)subscribes a
//! room's channel it publishes its whole presence there, and the others answer with theirs. When a
//! node falls silent for the timeout, the others drop its presences.
//!
//! **Joins** read their page from the shared store.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{fan_out, refuse, Chat, JoinReq, Origin, OwnerCtx, Pending, Room};
use crate::cluster::ownership::{self, HeadRead, Lease, Owned, Route};
use crate::cluster::{Cluster, Envelope, Inbound, Kind};
use crate::phoenix::presence::{self, Meta};
use crate::store::{ChatMessage, StoreRequest};
use crate::topics::MAX_QUEUED_WHILE_LOADING;
use crate::wire::phoenix as wire;

/// Times a push is sent to an owner that turns out not to own the room, before it is refused.
const MAX_ATTEMPTS: u8 = 3;

/// A new message on its way to the owner.
#[derive(Debug)]
pub(super) struct Publish {
    pub origin: Origin,
    pub user: Arc<str>,
    pub body: Box<str>,
    /// Owners that answered "not the owner" so far.
    pub attempts: u8,
}

/// A room's state across nodes, on its home worker.
#[derive(Debug)]
pub(super) struct ClusterRoom {
    /// Who owns the room, and the messages waiting for the owner to be known or ready.
    own: Owned<Publish>,
    /// Presences of the room's members on other nodes: by node, phx_ref → user.
    remote: HashMap<Arc<str>, HashMap<u64, Arc<str>>>,
}

impl ClusterRoom {
    fn new() -> Self {
        ClusterRoom { own: Owned::new(MAX_QUEUED_WHILE_LOADING), remote: HashMap::new() }
    }

    /// Whether the room may leave memory (no member left is checked by the caller).
    pub(super) fn idle(&self) -> bool {
        self.own.idle()
    }

    /// The presences of other nodes.
    pub(super) fn remote_metas(&self) -> impl Iterator<Item = Meta<'_>> {
        self.remote.values().flat_map(|m| m.iter().map(|(r, u)| Meta { user: u, phx_ref: *r }))
    }

    /// The room left memory: stop listening and let another node own it.
    pub(super) fn unloaded(&self, cluster: &Cluster, name: Arc<str>) {
        self.own.unloaded(cluster, name);
    }
}

/// Pushes forwarded to owner nodes, by request id.
pub(super) type Forwards = ownership::Forwards<Publish>;

/// A presence change between nodes: (user, phx_ref) pairs.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum PresenceEvent {
    /// Members joined and left on the sending node.
    Diff { joins: Vec<(String, u64)>, leaves: Vec<(String, u64)> },
    /// Every member on the sending node; answer with `State`.
    Sync(Vec<(String, u64)>),
    /// Every member on the sending node.
    State(Vec<(String, u64)>),
}

/// A push forwarded to the owner.
#[derive(Debug, Serialize, Deserialize)]
struct ForwardRequest {
    user: String,
    body: String,
}

/// The owner's answer to a forwarded push.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ForwardReply {
    /// Stored: the ack.
    Ok { seq: u64, id: u64, ts: u64 },
    /// The receiving node does not own the room: ask for the lease again.
    NotOwner,
    /// Refused, with the reason for the pusher.
    Error(String),
}

/// The top 24 bits of presence refs made on this node.
pub(super) fn node_salt(cluster: &Cluster) -> u64 {
    let node = cluster.node();
    u64::from_str_radix(&node[..node.len().min(6)], 16).unwrap_or(0)
}

fn send_reply(ctx: &mut OwnerCtx<'_>, node: &str, room: &str, req_id: u64, reply: &ForwardReply) {
    if let Some(c) = ctx.cluster {
        let body = serde_json::to_vec(reply).expect("replies serialise");
        // A full queue drops the reply; the forwarding node answers its pusher at the timeout.
        let _ = c.send(node, room, Kind::Reply, req_id, &body);
    }
}

/// Tell the node that forwarded a message that it is stored.
pub(super) fn reply_ok(ctx: &mut OwnerCtx<'_>, node: &str, room: &str, req_id: u64, msg: &ChatMessage) {
    send_reply(ctx, node, room, req_id, &ForwardReply::Ok { seq: msg.seq, id: msg.id, ts: msg.ts_ms });
}

/// Tell the node that forwarded a message why it was refused.
pub(super) fn reply_error(ctx: &mut OwnerCtx<'_>, node: &str, room: &str, req_id: u64, reason: &str) {
    send_reply(ctx, node, room, req_id, &ForwardReply::Error(reason.into()));
}

fn metas_of(room: &Room) -> Vec<(String, u64)> {
    room.members.values().filter(|m| m.phx_ref != 0).map(|m| (m.user.to_string(), m.phx_ref)).collect()
}

impl Chat {
    /// The first local member of a room: no head read (joins read their page, the owner its head),
    /// but the room's channel is subscribed.
    pub(super) fn cluster_load(&mut self, ctx: &mut OwnerCtx<'_>, name: Arc<str>, req: JoinReq) {
        let Some(cluster) = ctx.cluster else { return };
        self.rooms.insert(
            name.clone(),
            Room {
                loading: None,
                last_seq: 0,
                recent: Default::default(),
                has_older: false,
                members: HashMap::new(),
                per_worker: vec![0; ctx.out.workers()],
                inflight: 0,
                presence_list: crate::phoenix::presence_list(&name).into(),
                cluster: Some(Box::new(ClusterRoom::new())),
            },
        );
        cluster.subscribe(name.clone());
        self.cluster_join(ctx, &name, req);
    }

    /// A join reads its page from the shared store: the latest messages (with the head), or those
    /// after the client's `last_seq`.
    pub(super) fn cluster_join(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, req: JoinReq) {
        let (pending, request) = match req.last_seq {
            None => (Pending::JoinHead(req), None),
            Some(after) => (Pending::JoinHistory(req), Some(after)),
        };
        let tag = self.tag(pending);
        let limit = ctx.cfg.history_on_join;
        let request = match request {
            None => StoreRequest::RoomHead { room: name.clone(), recent: limit, tag },
            Some(after) => StoreRequest::History {
                room: name.clone(),
                before_seq: None,
                after_seq: Some(after),
                limit,
                tag,
            },
        };
        match ctx.store.submit(self.me, request) {
            Ok(()) => {
                if let Some(room) = self.rooms.get_mut(name) {
                    room.inflight += 1;
                }
            }
            Err(e) => {
                if let Some(Pending::JoinHead(req) | Pending::JoinHistory(req)) = self.pending.remove(&tag) {
                    refuse(ctx, name, &req, super::overloaded(e));
                }
                self.maybe_unload(ctx, name);
            }
        }
    }

    /// A new message: assign it if this node owns the room, else find the owner and forward.
    pub(super) fn cluster_publish(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, p: Publish) {
        let Some(cluster) = ctx.cluster else { return };
        let Some(cr) = self.rooms.get_mut(name).and_then(|r| r.cluster.as_mut()) else {
            return self.refuse_publish(ctx, name, p.origin, "not joined");
        };
        let route = cr.own.route(cluster, name, p);
        self.follow(ctx, name, route);
    }

    /// Carry out where the room's ownership sends a message.
    fn follow(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, route: Route<Publish>) {
        match route {
            Route::Here(p) => self.assign(ctx, name, p.origin, p.user, p.body),
            Route::Held => {}
            Route::Forward(owner, p) => match p.origin {
                // A forwarded message is never forwarded again: its node asks for the lease anew.
                Origin::Remote { node, req_id } => {
                    send_reply(ctx, &node, name, req_id, &ForwardReply::NotOwner)
                }
                Origin::Local { .. } => self.forward(ctx, name, owner, p),
            },
            Route::Refused(ps, reason) => {
                for p in ps {
                    self.refuse_publish(ctx, name, p.origin, reason);
                }
            }
        }
    }

    fn forward(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, owner: Arc<str>, p: Publish) {
        let Some(cluster) = ctx.cluster else { return };
        let request = ForwardRequest { user: p.user.to_string(), body: p.body.to_string() };
        let body = serde_json::to_vec(&request).expect("requests serialise");
        match self.forwards.send(cluster, owner, name, &body, p) {
            Ok(()) => {
                if let Some(cr) = self.rooms.get_mut(name).and_then(|r| r.cluster.as_mut()) {
                    cr.own.forwarded();
                }
            }
            Err(p) => self.refuse_publish(ctx, name, p.origin, "overloaded"),
        }
    }

    /// The owner's head was read (or not): assign what waited.
    pub(super) fn cluster_owner_head(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        name: &Arc<str>,
        head: Result<u64, Arc<crate::store::StoreError>>,
    ) {
        let Some(room) = self.rooms.get_mut(name) else { return };
        room.inflight -= 1;
        let Some(cr) = room.cluster.as_mut() else { return };
        match cr.own.head_read(head.is_ok()) {
            // The lease was lost while the head loaded: ask again for what waits.
            HeadRead::Stale => self.resolve(ctx, name),
            HeadRead::Ready(waiting) => {
                room.last_seq = head.unwrap_or(0);
                for p in waiting {
                    self.cluster_publish(ctx, name, p);
                }
            }
            HeadRead::Failed(waiting) => {
                for p in waiting {
                    self.refuse_publish(ctx, name, p.origin, "storage failed");
                }
            }
        }
    }

    /// A store error on the owner: it may be stale. Ask for the lease again; if it is still this
    /// node's, the head is read anew before the next seq.
    pub(super) fn cluster_recheck_owner(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>) {
        let (Some(cluster), Some(cr)) =
            (ctx.cluster, self.rooms.get_mut(name).and_then(|r| r.cluster.as_mut()))
        else {
            return;
        };
        cr.own.recheck(cluster, name);
    }

    /// Once a second: answer forwarded pushes whose owner did not answer in time.
    pub fn tick(&mut self, ctx: &mut OwnerCtx<'_>) {
        let Some(cluster) = ctx.cluster else { return };
        for f in self.forwards.expired(cluster) {
            if let Some(cr) = self.rooms.get_mut(&f.topic).and_then(|r| r.cluster.as_mut()) {
                cr.own.answered();
                cr.own.forget(&f.owner);
            }
            self.refuse_publish(ctx, &f.topic, f.payload.origin, "the room's owner did not answer");
            self.maybe_unload(ctx, &f.topic);
        }
    }

    /// A message from the cluster link.
    pub fn on_cluster(&mut self, ctx: &mut OwnerCtx<'_>, msg: Inbound) {
        match msg {
            Inbound::Remote(env) => self.on_remote(ctx, env),
            Inbound::Lease { topic, owner } => self.on_lease(ctx, &topic, owner),
            Inbound::LeaseLost { topic } => {
                if let Some(cr) = self.rooms.get_mut(&topic).and_then(|r| r.cluster.as_mut()) {
                    cr.own.lease_lost();
                }
                self.resolve(ctx, &topic);
            }
            Inbound::Subscribed { topic } => {
                if let Some(room) = self.rooms.get(&topic) {
                    let sync = PresenceEvent::Sync(metas_of(room));
                    publish_event(ctx, &topic, &sync);
                }
            }
            Inbound::NodeDown { node } => self.node_down(ctx, &node),
            Inbound::NodeUp { .. } => {
                // It may have been told this node was down too: both sides send their presences.
                let syncs: Vec<(Arc<str>, PresenceEvent)> = self
                    .rooms
                    .iter()
                    .filter(|(_, r)| r.cluster.is_some())
                    .map(|(name, r)| (name.clone(), PresenceEvent::Sync(metas_of(r))))
                    .collect();
                for (name, sync) in syncs {
                    publish_event(ctx, &name, &sync);
                }
            }
        }
    }

    fn on_lease(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, owner: Option<Arc<str>>) {
        let Some(cluster) = ctx.cluster else { return };
        let mine = owner.as_deref() == Some(&**cluster.node());
        let Some(room) = self.rooms.get_mut(name) else {
            if mine {
                cluster.release(name.clone());
            }
            return;
        };
        let Some(cr) = room.cluster.as_mut() else { return };
        match cr.own.on_lease(mine, owner) {
            Lease::Ignored => {}
            Lease::ReadHead => {
                let tag = self.tag(Pending::OwnerHead);
                let read = StoreRequest::RoomHead { room: name.clone(), recent: 0, tag };
                match ctx.store.submit(self.me, read) {
                    Ok(()) => {
                        if let Some(room) = self.rooms.get_mut(name) {
                            room.inflight += 1;
                        }
                    }
                    Err(e) => {
                        self.pending.remove(&tag);
                        self.fail_waiting(ctx, name, super::overloaded(e));
                    }
                }
            }
            Lease::Reroute(waiting) => {
                for p in waiting {
                    self.cluster_publish(ctx, name, p);
                }
            }
            Lease::Refused(waiting) => {
                for p in waiting {
                    self.refuse_publish(ctx, name, p.origin, "cluster unavailable");
                }
            }
        }
        self.maybe_unload(ctx, name);
    }

    /// Messages wait but nobody is known to own the room: ask for the lease.
    fn resolve(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>) {
        let Some(cluster) = ctx.cluster else { return };
        let Some(cr) = self.rooms.get_mut(name).and_then(|r| r.cluster.as_mut()) else { return };
        let route = cr.own.resolve(cluster, name);
        self.follow(ctx, name, route);
    }

    /// Give up on the messages waiting for an owner.
    fn fail_waiting(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, reason: &str) {
        let Some(cr) = self.rooms.get_mut(name).and_then(|r| r.cluster.as_mut()) else { return };
        for p in cr.own.fail() {
            self.refuse_publish(ctx, name, p.origin, reason);
        }
    }

    fn on_remote(&mut self, ctx: &mut OwnerCtx<'_>, env: Envelope) {
        let name = env.topic.clone();
        match env.kind {
            Kind::Frame => {
                if let Some(room) = self.rooms.get(&name) {
                    fan_out(ctx, &room.per_worker, &name, env.body.into(), None);
                }
            }
            Kind::Event => match serde_json::from_slice::<PresenceEvent>(&env.body) {
                Ok(event) => self.on_presence(ctx, &name, env.origin, event),
                Err(e) => tracing::warn!(node = %env.origin, error = %e, "malformed presence event dropped"),
            },
            Kind::Request => {
                let request = match serde_json::from_slice::<ForwardRequest>(&env.body) {
                    Ok(r) => r,
                    Err(e) => {
                        return tracing::warn!(node = %env.origin, error = %e, "malformed request dropped")
                    }
                };
                let origin = Origin::Remote { node: env.origin.clone(), req_id: env.req_id };
                if !self.rooms.contains_key(&name) {
                    return send_reply(ctx, &env.origin, &name, env.req_id, &ForwardReply::NotOwner);
                }
                let p = Publish { origin, user: request.user.into(), body: request.body.into(), attempts: 0 };
                self.cluster_publish(ctx, &name, p);
            }
            Kind::Reply => self.on_reply(ctx, env),
            Kind::Heartbeat => {}
        }
    }

    fn on_reply(&mut self, ctx: &mut OwnerCtx<'_>, env: Envelope) {
        // A reply after the timeout finds nothing: the pusher had its error already.
        let Some(f) = self.forwards.answer(env.req_id) else { return };
        let name = f.topic;
        if let Some(cr) = self.rooms.get_mut(&name).and_then(|r| r.cluster.as_mut()) {
            cr.own.answered();
        }
        let reply = serde_json::from_slice::<ForwardReply>(&env.body)
            .unwrap_or_else(|_| ForwardReply::Error("malformed answer from the room's owner".into()));
        match reply {
            ForwardReply::Ok { seq, id, ts } => {
                if let Origin::Local { conn, join_ref, msg_ref } = f.payload.origin {
                    let ack = super::ack_json(seq, id, ts);
                    ctx.to_conn(
                        conn,
                        &wire::encode_reply(Some(&join_ref), msg_ref.as_deref(), &name, "ok", &ack),
                    );
                }
            }
            ForwardReply::NotOwner => {
                let mut p = f.payload;
                p.attempts += 1;
                if let Some(cr) = self.rooms.get_mut(&name).and_then(|r| r.cluster.as_mut()) {
                    cr.own.forget(&f.owner);
                }
                if p.attempts >= MAX_ATTEMPTS {
                    self.refuse_publish(ctx, &name, p.origin, "no node owns this room");
                } else {
                    self.cluster_publish(ctx, &name, p);
                }
            }
            ForwardReply::Error(reason) => self.refuse_publish(ctx, &name, f.payload.origin, &reason),
        }
        self.maybe_unload(ctx, &name);
    }

    fn on_presence(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, node: Arc<str>, event: PresenceEvent) {
        let Some(room) = self.rooms.get_mut(name) else { return };
        let Some(cr) = room.cluster.as_mut() else { return };
        let table = cr.remote.entry(node).or_default();
        let mut joins = Vec::new();
        let mut leaves = Vec::new();
        let answer = matches!(event, PresenceEvent::Sync(_));
        match event {
            PresenceEvent::Diff { joins: j, leaves: l } => {
                for (_, r) in l {
                    if let Some(user) = table.remove(&r) {
                        leaves.push((user, r));
                    }
                }
                for (user, r) in j {
                    let user: Arc<str> = user.into();
                    if table.insert(r, user.clone()).is_none() {
                        joins.push((user, r));
                    }
                }
            }
            PresenceEvent::Sync(metas) | PresenceEvent::State(metas) => {
                // The sender's whole presence replaces what this node knew of it.
                let new: HashMap<u64, Arc<str>> = metas.into_iter().map(|(u, r)| (r, u.into())).collect();
                leaves
                    .extend(table.iter().filter(|(r, _)| !new.contains_key(r)).map(|(r, u)| (u.clone(), *r)));
                joins
                    .extend(new.iter().filter(|(r, _)| !table.contains_key(r)).map(|(r, u)| (u.clone(), *r)));
                *table = new;
            }
        }
        cr.remote.retain(|_, t| !t.is_empty());
        let state = answer.then(|| PresenceEvent::State(metas_of(room)));
        if let Some(state) = state {
            publish_event(ctx, name, &state);
        }
        self.presence_changed(ctx, name, &joins, &leaves);
    }

    /// Tell this node's presence members what changed on other nodes.
    fn presence_changed(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        name: &Arc<str>,
        joins: &[(Arc<str>, u64)],
        leaves: &[(Arc<str>, u64)],
    ) {
        if joins.is_empty() && leaves.is_empty() {
            return;
        }
        let jm: Vec<Meta<'_>> = joins.iter().map(|(u, r)| Meta { user: u, phx_ref: *r }).collect();
        let lm: Vec<Meta<'_>> = leaves.iter().map(|(u, r)| Meta { user: u, phx_ref: *r }).collect();
        let diff = presence::diff_json(&jm, &lm);
        self.broadcast_presence(ctx, name, &diff);
    }

    /// Publish this node's presence changes in a room to the other nodes.
    pub(super) fn publish_presence(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        name: &Arc<str>,
        joins: Vec<(Arc<str>, u64)>,
        leaves: Vec<(Arc<str>, u64)>,
    ) {
        if joins.is_empty() && leaves.is_empty() {
            return;
        }
        let owned = |v: Vec<(Arc<str>, u64)>| v.into_iter().map(|(u, r)| (u.to_string(), r)).collect();
        publish_event(ctx, name, &PresenceEvent::Diff { joins: owned(joins), leaves: owned(leaves) });
    }

    /// A node fell silent: its presences leave every room, and it owns none any more.
    fn node_down(&mut self, ctx: &mut OwnerCtx<'_>, node: &Arc<str>) {
        let mut gone = Vec::new();
        for (name, room) in &mut self.rooms {
            let Some(cr) = room.cluster.as_mut() else { continue };
            cr.own.forget(node);
            if let Some(table) = cr.remote.remove(node) {
                let leaves: Vec<(Arc<str>, u64)> = table.into_iter().map(|(r, u)| (u, r)).collect();
                gone.push((name.clone(), leaves));
            }
        }
        for (name, leaves) in gone {
            self.presence_changed(ctx, &name, &[], &leaves);
        }
    }
}

fn publish_event(ctx: &mut OwnerCtx<'_>, name: &str, event: &PresenceEvent) {
    if let Some(c) = ctx.cluster {
        let body = serde_json::to_vec(event).expect("presence events serialise");
        let _ = c.publish(name, Kind::Event, 0, &body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_events_round_trip_as_json() {
        let e = PresenceEvent::Diff { joins: vec![("alice".into(), 1 << 41)], leaves: vec![] };
        let bytes = serde_json::to_vec(&e).unwrap();
        assert_eq!(serde_json::from_slice::<PresenceEvent>(&bytes).unwrap(), e);
        let s = PresenceEvent::Sync(vec![("bob".into(), 7)]);
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"sync":[["bob",7]]}"#);
    }
}
