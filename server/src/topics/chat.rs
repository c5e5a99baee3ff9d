//! `room:<id>` chat: per-room sequence numbers from the room's owner, durable before acked, history on
//! join and by page, presence, typing indicators and binary blobs.
//!
//! Flow of a message: the connection's worker validates `new_msg` and forwards it to the owner; the
//! owner assigns the next `seq` and queues it for storage; when the storage thread reports it durable
//! the owner acks the sender and broadcasts `new_msg` to every worker with members. Acks come back in
//! queue order, so broadcasts go out in `seq` order.
//!
//! In cluster mode one node at a time owns a room (see [`cluster`]); the room's home worker on each
//! other node forwards pushes to it, and presence spans the nodes.

mod cluster;

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::{binary_frame, fan_out, text_frame, OwnerCtx, Push, TopicMsg, MAX_QUEUED_WHILE_LOADING};
use crate::mailbox::{ConnId, Frame, Msg};
use crate::phoenix::presence::{self, Meta};
use crate::phoenix::JoinRef;
use crate::runtime::Ctx;
use crate::store::{ChatMessage, Page, StoreRequest, StoreResult, SubmitError};
use crate::wire::phoenix::{self as wire, Payload};

/// Longest room id, in bytes.
pub const MAX_ROOM_ID: usize = 128;

/// Work for a room's owner.
#[derive(Debug)]
pub enum ChatMsg {
    Join {
        room: Arc<str>,
        req: JoinReq,
    },
    Leave {
        room: Arc<str>,
        conn: ConnId,
        join_ref: JoinRef,
    },
    Publish {
        room: Arc<str>,
        conn: ConnId,
        join_ref: JoinRef,
        msg_ref: Option<Box<str>>,
        user: Arc<str>,
        body: Box<str>,
    },
    Typing {
        room: Arc<str>,
        conn: ConnId,
        user: Arc<str>,
        typing: bool,
    },
    Blob {
        room: Arc<str>,
        conn: ConnId,
        frame: crate::mailbox::Frame,
    },
}

/// A join waiting for the owner.
#[derive(Debug)]
pub struct JoinReq {
    conn: ConnId,
    join_ref: JoinRef,
    msg_ref: Option<Box<str>>,
    user: Arc<str>,
    last_seq: Option<u64>,
    presence: bool,
}

#[derive(Deserialize)]
struct JoinParams {
    #[serde(default)]
    last_seq: Option<u64>,
    /// `false`: a listener that is neither listed in presence nor sent presence events.
    #[serde(default = "yes")]
    presence: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    #[serde(default)]
    before_seq: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

/// A member of a room, as its owner knows it.
#[derive(Debug)]
struct Member {
    join_ref: JoinRef,
    user: Arc<str>,
    /// The presence ref; 0 for a member that joined with `presence: false`.
    phx_ref: u64,
}

impl Member {
    fn meta(&self) -> Meta<'_> {
        Meta { user: &self.user, phx_ref: self.phx_ref }
    }
}

/// A room on its owner.
#[derive(Debug)]
struct Room {
    /// Joins and pushes that arrived while the room's head was loading.
    loading: Option<Vec<ChatMsg>>,
    /// Highest seq assigned (durable or in flight).
    last_seq: u64,
    /// The latest durable messages, ascending, at most `history_on_join`.
    recent: VecDeque<ChatMessage>,
    /// Whether durable messages older than `recent` exist.
    has_older: bool,
    members: HashMap<ConnId, Member>,
    /// Members per worker: who gets a broadcast.
    per_worker: Vec<u32>,
    /// Appends and history reads in flight for this room.
    inflight: u32,
    /// Name of the subscriber list of members that take presence events.
    presence_list: Arc<str>,
    /// The room's state across nodes, in cluster mode only.
    cluster: Option<Box<cluster::ClusterRoom>>,
}

/// Storage requests in flight, by tag.
#[derive(Debug)]
enum Pending {
    Append(Origin),
    Head,
    /// Cluster mode: the page for a join without `last_seq`, with the room's head.
    JoinHead(JoinReq),
    /// Cluster mode: the head a node reads once it owns the room, before it assigns a seq.
    OwnerHead,
    JoinHistory(JoinReq),
    History {
        conn: ConnId,
        join_ref: JoinRef,
        msg_ref: Option<Box<str>>,
    },
}

/// Who sent a new message and gets its ack.
#[derive(Debug)]
enum Origin {
    /// A connection of this node.
    Local { conn: ConnId, join_ref: JoinRef, msg_ref: Option<Box<str>> },
    /// Another node forwarded it to this one, the room's owner; the ack goes back to that node.
    Remote { node: Arc<str>, req_id: u64 },
}

/// Chat state on one worker: the rooms it owns and its storage requests in flight.
#[derive(Debug)]
pub struct Chat {
    me: usize,
    rooms: HashMap<Arc<str>, Room>,
    pending: HashMap<u64, Pending>,
    next_tag: u64,
    last_id: u64,
    next_phx_ref: u64,
    /// Pushes forwarded to other nodes (cluster mode).
    forwards: cluster::Forwards,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// 2024-01-01T00:00:00Z, the epoch of message ids.
const ID_EPOCH_MS: u64 = 1_704_067_200_000;

impl Chat {
    /// State for worker `me`.
    pub fn new(me: usize) -> Self {
        Chat {
            me,
            rooms: HashMap::new(),
            pending: HashMap::new(),
            next_tag: 0,
            last_id: 0,
            // Presence refs are unique per server: the worker index sits in the low byte.
            next_phx_ref: 0,
            forwards: cluster::Forwards::default(),
        }
    }

    /// Rooms this worker owns.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    fn tag(&mut self, p: Pending) -> u64 {
        self.next_tag += 1;
        self.pending.insert(self.next_tag, p);
        self.next_tag
    }

    /// A unique, increasing id: milliseconds since 2024 above 22 bits of counter and worker index, so
    /// ids from different workers never collide and stay below 2^63 for a few thousand years.
    fn next_id(&mut self, ts_ms: u64) -> u64 {
        let base = (ts_ms.saturating_sub(ID_EPOCH_MS) << 22) | self.me as u64;
        self.last_id = base.max(self.last_id + 256);
        self.last_id
    }

    /// A presence ref unique on this server: the worker index in the low byte; in cluster mode the
    /// node's salt in the top 24 bits keeps refs of different nodes apart.
    fn phx_ref(&mut self, node_salt: u64) -> u64 {
        self.next_phx_ref += 1;
        (node_salt << 40) | ((self.next_phx_ref & 0xffff_ffff) << 8) | self.me as u64
    }

    /// A message for a room this worker owns.
    pub fn on_owner_msg(&mut self, ctx: &mut OwnerCtx<'_>, msg: ChatMsg) {
        let room_name = match &msg {
            ChatMsg::Join { room, .. }
            | ChatMsg::Leave { room, .. }
            | ChatMsg::Publish { room, .. }
            | ChatMsg::Typing { room, .. }
            | ChatMsg::Blob { room, .. } => room.clone(),
        };
        let Some(room) = self.rooms.get_mut(&room_name) else {
            match msg {
                // Nothing to load a room for.
                ChatMsg::Leave { .. } | ChatMsg::Typing { .. } | ChatMsg::Blob { .. } => {}
                ChatMsg::Publish { conn, join_ref, msg_ref, room, .. } => {
                    ctx.error_to(conn, &join_ref, msg_ref.as_deref(), &room, "not joined");
                }
                ChatMsg::Join { room, req } => match ctx.cluster {
                    Some(_) => self.cluster_load(ctx, room, req),
                    None => self.load(ctx, room, req),
                },
            }
            return;
        };
        if let Some(queue) = &mut room.loading {
            if queue.len() < MAX_QUEUED_WHILE_LOADING {
                queue.push(msg);
                return;
            }
            match msg {
                ChatMsg::Join { room, req } => refuse(ctx, &room, &req, "overloaded"),
                ChatMsg::Publish { conn, join_ref, msg_ref, room, .. } => {
                    ctx.error_to(conn, &join_ref, msg_ref.as_deref(), &room, "overloaded")
                }
                // Leaves must not be lost: a queued join would otherwise stay a member forever.
                leave @ ChatMsg::Leave { .. } => queue.push(leave),
                ChatMsg::Typing { .. } | ChatMsg::Blob { .. } => {}
            }
            return;
        }
        self.apply(ctx, &room_name, msg);
    }

    fn load(&mut self, ctx: &mut OwnerCtx<'_>, room: Arc<str>, req: JoinReq) {
        let tag = self.tag(Pending::Head);
        let submit = ctx.store.submit(
            self.me,
            StoreRequest::RoomHead { room: room.clone(), recent: ctx.cfg.history_on_join, tag },
        );
        if let Err(e) = submit {
            self.pending.remove(&tag);
            refuse(ctx, &room, &req, overloaded(e));
            return;
        }
        let workers = ctx.out.workers();
        self.rooms.insert(
            room.clone(),
            Room {
                loading: Some(vec![ChatMsg::Join { room: room.clone(), req }]),
                last_seq: 0,
                recent: VecDeque::new(),
                has_older: false,
                members: HashMap::new(),
                per_worker: vec![0; workers],
                inflight: 1,
                presence_list: crate::phoenix::presence_list(&room).into(),
                cluster: None,
            },
        );
    }

    fn apply(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, msg: ChatMsg) {
        match msg {
            ChatMsg::Join { req, .. } => self.join(ctx, name, req),
            ChatMsg::Leave { conn, join_ref, .. } => self.leave(ctx, name, conn, &join_ref),
            ChatMsg::Publish { conn, join_ref, msg_ref, user, body, .. } => {
                self.publish(ctx, name, conn, join_ref, msg_ref, user, body)
            }
            ChatMsg::Typing { conn, user, typing, .. } => {
                let payload = format!(r#"{{"user":{},"typing":{typing}}}"#, json_str(&user));
                self.broadcast(ctx, name, "typing", &payload, Some(conn));
            }
            ChatMsg::Blob { conn, frame, .. } => self.spread(ctx, name, frame, Some(conn)),
        }
    }

    fn join(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, req: JoinReq) {
        if ctx.cluster.is_some() {
            return self.cluster_join(ctx, name, req);
        }
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let page = match req.last_seq {
            None => Some(Page { messages: room.recent.iter().cloned().collect(), more: room.has_older }),
            Some(after) => {
                let covered = after >= room.last_seq
                    || room.recent.front().is_some_and(|m| m.seq <= after + 1)
                    || (!room.has_older && room.recent.len() as u64 == room.last_seq);
                covered.then(|| Page {
                    messages: room.recent.iter().filter(|m| m.seq > after).cloned().collect(),
                    more: false,
                })
            }
        };
        match page {
            Some(page) => self.admit(ctx, name, req, &page),
            None => {
                // Older than the cache: read it. Storage runs reads after every write queued before,
                // and acks those writes first, so nothing falls between this page and the broadcasts.
                let after = req.last_seq;
                let tag = self.tag(Pending::JoinHistory(req));
                let r = ctx.store.submit(
                    self.me,
                    StoreRequest::History {
                        room: name.clone(),
                        before_seq: None,
                        after_seq: after,
                        limit: ctx.cfg.history_on_join,
                        tag,
                    },
                );
                if let Err(e) = r {
                    if let Some(Pending::JoinHistory(req)) = self.pending.remove(&tag) {
                        refuse(ctx, name, &req, overloaded(e));
                    }
                } else if let Some(room) = self.rooms.get_mut(name) {
                    room.inflight += 1;
                }
            }
        }
    }

    /// Make `req` a member: reply with the page, send presence, tell the others.
    fn admit(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, req: JoinReq, page: &Page) {
        let phx_ref = self.phx_ref(ctx.cluster.map_or(0, cluster::node_salt));
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let mut replaced = None;
        if let Some(old) = room.members.remove(&req.conn) {
            // The same connection joined again before its leave arrived: replace it quietly (other
            // nodes are told, so they do not keep its old presence).
            room.per_worker[req.conn.worker()] -= 1;
            replaced = (old.phx_ref != 0).then_some((old.user, old.phx_ref));
        }
        let member = Member {
            join_ref: req.join_ref,
            user: req.user.clone(),
            phx_ref: if req.presence { phx_ref } else { 0 },
        };
        let reply = wire::encode_reply(
            Some(&req.join_ref),
            req.msg_ref.as_deref(),
            name,
            "ok",
            &page_json(page, room.last_seq),
        );
        let diff = req.presence.then(|| presence::diff_json(&[member.meta()], &[]));
        room.members.insert(req.conn, member);
        room.per_worker[req.conn.worker()] += 1;
        let mut frames = vec![text_frame(&reply)];
        if req.presence {
            let mut metas: Vec<Meta<'_>> =
                room.members.values().filter(|m| m.phx_ref != 0).map(Member::meta).collect();
            if let Some(c) = &room.cluster {
                metas.extend(c.remote_metas());
            }
            let state = presence::state_json(metas.iter());
            frames.push(text_frame(&wire::encode(Some(&req.join_ref), None, name, "presence_state", &state)));
        }
        send_joined(ctx, name, &req, true, frames);
        if let Some(diff) = diff {
            self.broadcast_presence(ctx, name, &diff);
        }
        if ctx.cluster.is_some() {
            let joins = req.presence.then(|| (req.user.clone(), phx_ref));
            self.publish_presence(ctx, name, joins.into_iter().collect(), replaced.into_iter().collect());
        }
    }

    fn leave(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, conn: ConnId, join_ref: &str) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if room.members.get(&conn).is_none_or(|m| &*m.join_ref != join_ref) {
            return;
        }
        let member = room.members.remove(&conn).expect("checked above");
        room.per_worker[conn.worker()] -= 1;
        if member.phx_ref != 0 {
            let diff = presence::diff_json(&[], &[member.meta()]);
            self.broadcast_presence(ctx, name, &diff);
            if ctx.cluster.is_some() {
                self.publish_presence(ctx, name, Vec::new(), vec![(member.user, member.phx_ref)]);
            }
        }
        self.maybe_unload(ctx, name);
    }

    #[allow(clippy::too_many_arguments)] // One call site; a struct would only repeat ChatMsg::Publish.
    fn publish(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        name: &Arc<str>,
        conn: ConnId,
        join_ref: JoinRef,
        msg_ref: Option<Box<str>>,
        user: Arc<str>,
        body: Box<str>,
    ) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if room.members.get(&conn).is_none_or(|m| m.join_ref != join_ref) {
            ctx.error_to(conn, &join_ref, msg_ref.as_deref(), name, "not joined");
            return;
        }
        let origin = Origin::Local { conn, join_ref, msg_ref };
        match ctx.cluster {
            Some(_) => self.cluster_publish(ctx, name, cluster::Publish { origin, user, body, attempts: 0 }),
            None => self.assign(ctx, name, origin, user, body),
        }
    }

    /// Give a message the room's next seq and queue it for storage; the owner does this.
    fn assign(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        name: &Arc<str>,
        origin: Origin,
        user: Arc<str>,
        body: Box<str>,
    ) {
        let ts_ms = now_ms();
        let id = self.next_id(ts_ms);
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let seq = room.last_seq + 1;
        let msg = ChatMessage { room: name.clone(), seq, id, user, body, ts_ms };
        self.next_tag += 1;
        let tag = self.next_tag;
        match ctx.store.submit(self.me, StoreRequest::Append { msg, tag }) {
            Ok(()) => {
                room.last_seq = seq;
                room.inflight += 1;
                self.pending.insert(tag, Pending::Append(origin));
            }
            Err(e) => self.refuse_publish(ctx, name, origin, overloaded(e)),
        }
    }

    /// Answer a new message with an error, on this node or on the node that forwarded it.
    fn refuse_publish(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, origin: Origin, reason: &str) {
        match origin {
            Origin::Local { conn, join_ref, msg_ref } => {
                ctx.error_to(conn, &join_ref, msg_ref.as_deref(), name, reason)
            }
            Origin::Remote { node, req_id } => cluster::reply_error(ctx, &node, name, req_id, reason),
        }
    }

    /// A storage result for this worker.
    pub fn on_store(&mut self, ctx: &mut OwnerCtx<'_>, result: StoreResult) {
        let (room_name, tag) = match &result {
            StoreResult::Appended { msg, tag, .. } => (msg.room.clone(), *tag),
            StoreResult::RoomHead { room, tag, .. } | StoreResult::History { room, tag, .. } => {
                (room.clone(), *tag)
            }
            StoreResult::LogAppended { .. }
            | StoreResult::LogLoaded { .. }
            | StoreResult::LogCompacted { .. }
            | StoreResult::GeoLoaded { .. }
            | StoreResult::GeoDone { .. } => return,
        };
        let Some(pending) = self.pending.remove(&tag) else {
            tracing::error!(tag, "storage result for an unknown request");
            return;
        };
        match (pending, result) {
            (Pending::Append(origin), StoreResult::Appended { msg, result, .. }) => {
                let Some(room) = self.rooms.get_mut(&room_name) else {
                    return;
                };
                room.inflight -= 1;
                match result {
                    Ok(()) => {
                        ctx.stats.inc_chat_messages();
                        let payload = message_json(&msg);
                        match origin {
                            Origin::Local { conn, join_ref, msg_ref } => {
                                let ack = ack_json(msg.seq, msg.id, msg.ts_ms);
                                let reply = wire::encode_reply(
                                    Some(&join_ref),
                                    msg_ref.as_deref(),
                                    &room_name,
                                    "ok",
                                    &ack,
                                );
                                ctx.to_conn(conn, &reply);
                            }
                            Origin::Remote { node, req_id } => {
                                cluster::reply_ok(ctx, &node, &room_name, req_id, &msg)
                            }
                        }
                        // In cluster mode joins read their page from the shared store.
                        if ctx.cluster.is_none() {
                            room.recent.push_back(msg);
                            if room.recent.len() > ctx.cfg.history_on_join {
                                room.recent.pop_front();
                                room.has_older = true;
                            }
                        }
                        self.broadcast(ctx, &room_name, "new_msg", &payload, None);
                    }
                    Err(e) => {
                        tracing::warn!(room = %room_name, seq = msg.seq, error = %e, "message not stored");
                        self.refuse_publish(ctx, &room_name, origin, "storage failed");
                        if ctx.cluster.is_some() {
                            // Perhaps another node owns the room now and stored this seq already:
                            // ask for the lease again, and read the head anew if it is still ours.
                            self.cluster_recheck_owner(ctx, &room_name);
                        }
                    }
                }
                self.maybe_unload(ctx, &room_name);
            }
            (Pending::Head, StoreResult::RoomHead { result, .. }) => self.loaded(ctx, &room_name, result),
            (Pending::JoinHead(req), StoreResult::RoomHead { result, .. }) => {
                let Some(room) = self.rooms.get_mut(&room_name) else {
                    return;
                };
                room.inflight -= 1;
                match result {
                    Ok((head, page)) => {
                        room.last_seq = room.last_seq.max(head);
                        self.admit(ctx, &room_name, req, &page);
                    }
                    Err(_) => refuse(ctx, &room_name, &req, "storage failed"),
                }
                self.maybe_unload(ctx, &room_name);
            }
            (Pending::OwnerHead, StoreResult::RoomHead { result, .. }) => {
                self.cluster_owner_head(ctx, &room_name, result.map(|(head, _)| head));
                self.maybe_unload(ctx, &room_name);
            }
            (Pending::JoinHistory(req), StoreResult::History { result, .. }) => {
                if let Some(room) = self.rooms.get_mut(&room_name) {
                    room.inflight -= 1;
                    if let Ok(page) = &result {
                        // Never lowers the owner's head; gives other nodes' joins the latest seq seen.
                        room.last_seq = room.last_seq.max(page.messages.last().map_or(0, |m| m.seq));
                    }
                }
                match result {
                    Ok(page) => self.admit(ctx, &room_name, req, &page),
                    Err(_) => refuse(ctx, &room_name, &req, "storage failed"),
                }
                self.maybe_unload(ctx, &room_name);
            }
            (Pending::History { conn, join_ref, msg_ref }, StoreResult::History { result, .. }) => {
                let text = match result {
                    Ok(page) => wire::encode_reply(
                        Some(&join_ref),
                        msg_ref.as_deref(),
                        &room_name,
                        "ok",
                        &page_json(&page, 0),
                    ),
                    Err(_) => wire::encode_reply(
                        Some(&join_ref),
                        msg_ref.as_deref(),
                        &room_name,
                        "error",
                        r#"{"reason":"storage failed"}"#,
                    ),
                };
                ctx.to_conn(conn, &text);
            }
            (p, r) => tracing::error!(?p, ?r, "storage result does not match its request"),
        }
    }

    fn loaded(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        name: &Arc<str>,
        result: Result<(u64, Page), Arc<crate::store::StoreError>>,
    ) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        room.inflight -= 1;
        let queued = room.loading.take().unwrap_or_default();
        match result {
            Ok((last_seq, page)) => {
                room.last_seq = last_seq;
                room.has_older = page.more;
                room.recent = page.messages.into();
                // Through the front door: an early leave may unload the room again, and a later join
                // then loads it anew instead of finding nothing.
                for msg in queued {
                    self.on_owner_msg(ctx, msg);
                }
            }
            Err(_) => {
                self.rooms.remove(name);
                for msg in queued {
                    match msg {
                        ChatMsg::Join { req, .. } => refuse(ctx, name, &req, "storage failed"),
                        ChatMsg::Publish { conn, join_ref, msg_ref, .. } => {
                            ctx.error_to(conn, &join_ref, msg_ref.as_deref(), name, "storage failed");
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn broadcast(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        name: &Arc<str>,
        event: &str,
        payload: &str,
        except: Option<ConnId>,
    ) {
        let frame = text_frame(&wire::encode(None, None, name, event, payload));
        self.spread(ctx, name, frame, except);
    }

    /// Send a frame to every member of the room (but `except`), on this node and, in cluster mode,
    /// on every other node with members.
    fn spread(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, frame: Frame, except: Option<ConnId>) {
        let Some(room) = self.rooms.get(name) else {
            return;
        };
        if let Some(c) = ctx.cluster {
            // A full link queue drops the copy for other nodes only; it is counted there.
            let _ = c.publish(name, crate::cluster::Kind::Frame, 0, &frame);
        }
        fan_out(ctx, &room.per_worker, name, frame, except);
    }

    /// Presence diffs go to the members that take presence, on their own subscriber list.
    fn broadcast_presence(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, diff: &str) {
        let Some(room) = self.rooms.get(name) else {
            return;
        };
        let frame = text_frame(&wire::encode(None, None, name, "presence_diff", diff));
        fan_out(ctx, &room.per_worker, &room.presence_list, frame, None);
    }

    fn maybe_unload(&mut self, ctx: &mut OwnerCtx<'_>, name: &str) {
        let idle = |r: &Room| {
            r.members.is_empty()
                && r.inflight == 0
                && r.loading.is_none()
                && r.cluster.as_ref().is_none_or(|c| c.idle())
        };
        if self.rooms.get(name).is_some_and(idle) {
            if let Some((name, room)) = self.rooms.remove_entry(name) {
                if let (Some(c), Some(state)) = (ctx.cluster, room.cluster) {
                    state.unloaded(c, name);
                }
            }
        }
    }
}

/// Tell the joiner's worker how its join ended; `frames` go to the joiner in order.
fn send_joined(
    ctx: &mut OwnerCtx<'_>,
    name: &Arc<str>,
    req: &JoinReq,
    ok: bool,
    frames: Vec<crate::mailbox::Frame>,
) {
    let presence = ok && req.presence;
    let msg =
        Msg::Joined { conn: req.conn, topic: name.clone(), join_ref: req.join_ref, ok, presence, frames };
    ctx.out.send(req.conn.worker(), msg);
}

fn refuse(ctx: &mut OwnerCtx<'_>, name: &Arc<str>, req: &JoinReq, reason: &str) {
    let response = serde_json::json!({ "reason": reason }).to_string();
    let reply = wire::encode_reply(Some(&req.join_ref), req.msg_ref.as_deref(), name, "error", &response);
    send_joined(ctx, name, req, false, vec![text_frame(&reply)]);
}

fn overloaded(e: SubmitError) -> &'static str {
    match e {
        SubmitError::Full => "overloaded",
        SubmitError::Closed => "shutting down",
    }
}

/// The ack of a stored message: `{"seq":..,"id":"..","ts":..}`.
fn ack_json(seq: u64, id: u64, ts_ms: u64) -> String {
    format!(r#"{{"seq":{seq},"id":"{id}","ts":{ts_ms}}}"#)
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// `{"seq":..,"id":"..","user":..,"body":..,"ts":..}`
pub fn message_json(m: &ChatMessage) -> String {
    format!(
        r#"{{"seq":{},"id":"{}","user":{},"body":{},"ts":{}}}"#,
        m.seq,
        m.id,
        json_str(&m.user),
        json_str(&m.body),
        m.ts_ms
    )
}

fn page_json(page: &Page, last_seq: u64) -> String {
    let mut out = String::from(r#"{"messages":["#);
    for (i, m) in page.messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&message_json(m));
    }
    let _ = write!(out, r#"],"more":{}"#, page.more);
    if last_seq > 0 {
        let _ = write!(out, r#","last_seq":{last_seq}"#);
    }
    out.push('}');
    out
}

/// A join of a chat room on the connection's worker.
pub fn on_join(
    ctx: &mut Ctx<'_>,
    topic: &Arc<str>,
    join_ref: JoinRef,
    msg_ref: Option<&str>,
    params_json: &str,
    user: &Arc<str>,
) -> Result<(), String> {
    let params: JoinParams = serde_json::from_str(params_json).map_err(|_| {
        "join params: last_seq must be a non-negative integer, presence a boolean".to_string()
    })?;
    let req = JoinReq {
        conn: ctx.me,
        join_ref,
        msg_ref: msg_ref.map(Into::into),
        user: user.clone(),
        last_seq: params.last_seq,
        presence: params.presence,
    };
    let owner = ctx.out.owner(topic);
    ctx.out.send(owner, Msg::Topic(TopicMsg::Chat(ChatMsg::Join { room: topic.clone(), req })));
    Ok(())
}

/// A push on a joined room, on the connection's worker.
pub fn on_push(ctx: &mut Ctx<'_>, push: &Push<'_>) {
    let owner = ctx.out.owner(push.topic);
    let room = push.topic.clone();
    match (push.event, push.payload) {
        ("new_msg", Payload::Json(p)) => {
            #[derive(Deserialize)]
            struct NewMsg {
                body: Option<serde_json::Value>,
            }
            let body = match serde_json::from_str::<NewMsg>(p.get()).ok().and_then(|m| m.body) {
                Some(serde_json::Value::String(s)) => s,
                _ => return push.error(ctx, "body must be a string"),
            };
            if body.trim().is_empty() {
                return push.error(ctx, "body must not be empty");
            }
            if body.len() > ctx.cfg.max_body_bytes {
                return push.error(ctx, &format!("body is longer than {} bytes", ctx.cfg.max_body_bytes));
            }
            let msg = ChatMsg::Publish {
                room,
                conn: ctx.me,
                join_ref: push.join_ref,
                msg_ref: push.msg_ref.map(Into::into),
                user: push.user.clone(),
                body: body.into(),
            };
            ctx.out.send(owner, Msg::Topic(TopicMsg::Chat(msg)));
        }
        ("history", Payload::Json(p)) => {
            let Ok(h) = serde_json::from_str::<HistoryParams>(p.get()) else {
                return push.error(ctx, "history takes {before_seq?, limit?} with non-negative integers");
            };
            let limit = h.limit.unwrap_or(ctx.cfg.history_on_join);
            if limit == 0 || limit > ctx.cfg.history_max_page {
                return push.error(ctx, &format!("limit must be between 1 and {}", ctx.cfg.history_max_page));
            }
            let pending = Pending::History {
                conn: ctx.me,
                join_ref: push.join_ref,
                msg_ref: push.msg_ref.map(Into::into),
            };
            let chat = &mut ctx.topics.chat;
            let tag = chat.tag(pending);
            let req = StoreRequest::History { room, before_seq: h.before_seq, after_seq: None, limit, tag };
            if let Err(e) = ctx.store.submit(ctx.out.me, req) {
                chat.pending.remove(&tag);
                push.error(ctx, overloaded(e));
            }
        }
        ("typing", Payload::Json(p)) => {
            let typing = serde_json::from_str::<serde_json::Value>(p.get())
                .ok()
                .and_then(|v| v.get("typing").and_then(|t| t.as_bool()))
                .unwrap_or(true);
            let msg = ChatMsg::Typing { room, conn: ctx.me, user: push.user.clone(), typing };
            ctx.out.send(owner, Msg::Topic(TopicMsg::Chat(msg)));
        }
        ("blob", Payload::Binary(data)) => {
            let Ok(bytes) = wire::encode_binary_broadcast(push.topic, "blob", data) else {
                return push.error(ctx, "topic too long for a binary frame");
            };
            let frame = binary_frame(&bytes);
            match wire::encode_binary_reply(
                &wire::ref_as_plain(&push.join_ref),
                &push.msg_ref.map(wire::ref_as_plain).unwrap_or_default(),
                push.topic,
                "ok",
                &[],
            ) {
                Ok(reply) => ctx.reply_binary(&reply),
                Err(_) => return push.error(ctx, "refs too long for a binary reply"),
            }
            ctx.out.send(owner, Msg::Topic(TopicMsg::Chat(ChatMsg::Blob { room, conn: ctx.me, frame })));
        }
        ("new_msg" | "history" | "typing", Payload::Binary(_)) => {
            push.error(ctx, "this event takes a JSON payload")
        }
        ("blob", Payload::Json(_)) => push.error(ctx, "blob takes a binary payload"),
        (other, _) => push.error(ctx, &format!("unknown event {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::config::ServeArgs;
    use crate::mailbox::{Mailbox, Outbox};
    use crate::metrics::WorkerStats;
    use crate::store::testing::Scripted;
    use crate::store::{self, Page};

    #[test]
    fn a_loading_room_queues_a_bounded_number_of_joins_and_refuses_the_rest() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (mailbox, inboxes) = Mailbox::new(vec![waker], 1 << 16);
        let (release, stalled) = mpsc::channel();
        // The room's first read waits until the test lets it go: the room stays loading.
        let backend = Scripted {
            room_head: Box::new(move || {
                let _ = stalled.recv();
                Ok((0, Page::default()))
            }),
            ..Scripted::default()
        };
        let (handle, join) = store::spawn(Box::new(backend), 64, Box::new(|_, _| {}));
        let cfg = ServeArgs::default().resolve().unwrap();
        let stats = WorkerStats::default();
        let mut out = Outbox { me: 0, mailbox, local: Default::default(), dropped: 0 };
        let mut ctx = OwnerCtx { out: &mut out, store: &handle, cfg: &cfg, stats: &stats, cluster: None };
        let mut chat = Chat::new(0);
        let room: Arc<str> = "room:slow".into();
        let joins = MAX_QUEUED_WHILE_LOADING + 10;
        for key in 0..joins {
            let req = JoinReq {
                conn: ConnId::new(0, 1, key),
                join_ref: JoinRef::new("\"1\"").unwrap(),
                msg_ref: None,
                user: "u".into(),
                last_seq: None,
                presence: false,
            };
            chat.on_owner_msg(&mut ctx, ChatMsg::Join { room: room.clone(), req });
        }
        let queued = chat.rooms[&room].loading.as_ref().map_or(0, Vec::len);
        assert_eq!(queued, MAX_QUEUED_WHILE_LOADING, "the queue stops at its bound");
        let refused = std::iter::from_fn(|| out.local.pop_front())
            .filter(|m| matches!(m, Msg::Joined { ok: false, .. }))
            .count();
        assert_eq!(refused, 10, "every join past the bound is refused at once");
        assert!(inboxes[0].rx.is_empty());
        release.send(()).unwrap();
        drop(handle);
        join.join().unwrap();
    }
}
