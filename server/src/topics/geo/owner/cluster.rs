//! Geofencing tenants across nodes (cluster mode).
//!
//! **One owner holds the tenant.** One node at a time owns a tenant, through the lease every owned
//! topic uses ([`crate::cluster::ownership`]): it loads the tenant from the shared store (its
//! "head") and holds the objects, fences, detection state, dwell timers and live queries. A node
//! asks for the lease when a join or push needs the owner and nobody is known to own the tenant.
//! Every other node with members keeps only them: their access, their fence subscriptions (handled
//! there, never forwarded), and the tenant's channel subscribed.
//!
//! **Forwarding.** Joins and pushes on another node go to the owner as they were sent (event and
//! JSON payload, so a `locations` batch stays one request), with the member's access; the owner
//! checks and applies them as its own members', and its answer becomes the reply. A join reply
//! admits the member on its node, and the owner records it, so it keeps the tenant while members
//! are anywhere; a node tells the owner when its members leave, and sends it the list of its
//! members when it learns who the owner is. A request unanswered within the cluster timeout gets an
//! error reply (`the tenant's owner did not answer`).
//!
//! **Events.** The owner delivers each step's `geofence_event`s to its own subscribers and publishes
//! them on the tenant's channel in one message (in order, once their log write is durable); every
//! other node delivers them to its subscribers of those fences. Live-query events go to the node of
//! the query's connection, one message per step and node.
//!
//! **Handover.** An owner whose tenant has no member left anywhere lets it go (writing positions
//! behind first) and releases the lease. An owner killed with `kill -9` loses what a single node
//! loses at a crash (up to a second of positions written behind; never a delivered event) and its
//! live queries, which end; the next request after its lease expires makes a new owner, which
//! loads what is stored. An owner that cannot renew its lease (Redis away for the timeout) writes
//! its positions behind and drops the tenant's state; until it notices, two nodes may apply
//! updates, and an object near a fence may get an event twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    admit, drop_queries, joined, recount, to_subscribers, Access, Endpoint, Fences, Geo, GeoMsg, Op, Pending,
    Raw, ReplyTo, TenantState,
};
use crate::auth::Grants;
use crate::cluster::ownership::{self, HeadRead, Lease, Owned, Route};
use crate::cluster::{Envelope, Inbound, Kind};
use crate::mailbox::{ConnId, Frame, Msg};
use crate::store::{GeoState, StoreError, StoreRequest};
use crate::topics::geo::fence::Limits;
use crate::topics::geo::push::parse_op;
use crate::topics::geo::tenant::Tenant;
use crate::topics::{text_frame, OwnerCtx, MAX_QUEUED_WHILE_LOADING};
use crate::wire::frame;

/// Published by the owner on the tenant's channel: `geofence_event`s, each (fence id: `u16` length
/// and bytes; Phoenix message: `u32` length and bytes), little endian.
const EVENT_FENCES: u8 = 0;
/// Sent by the owner to one node: live-query events, each (connection: `u64`; message: `u32`
/// length and bytes).
const EVENT_QUERIES: u8 = 1;
/// Sent to the owner: a member of the sending node left (connection: `u64`).
const EVENT_LEFT: u8 = 2;
/// Sent to the owner: every member of the sending node (connections: `u64` each).
const EVENT_MEMBERS: u8 = 3;

/// Times a request is sent to a node that turns out not to own the tenant, before it is refused.
const MAX_ATTEMPTS: u8 = 3;

/// A join or push that needs the tenant's owner.
#[derive(Debug)]
pub(super) struct Request {
    to: ReplyTo,
    access: Access,
    what: What,
    attempts: u8,
}

#[derive(Debug)]
enum What {
    /// A join, with the fences its member subscribes to on its own node.
    Join(Option<Fences>),
    /// A push, with what was sent when it came from a connection of this node.
    Push(Op, Option<Raw>),
}

/// Requests forwarded to owner nodes, by request id.
pub(super) type Forwards = ownership::Forwards<Request>;

/// A tenant's state across nodes, on its home worker.
#[derive(Debug)]
pub(super) struct ClusterTenant {
    /// Who owns the tenant, and the requests waiting for the owner to be known or ready.
    pub(super) own: Owned<Request>,
    /// On the owner: members of other nodes, as their nodes said (each node has at most its
    /// connection limit).
    remote: HashMap<Arc<str>, HashSet<ConnId>>,
}

impl ClusterTenant {
    /// This node owns the tenant and has loaded it.
    pub(super) fn owns(&self) -> bool {
        self.own.is_ready_owner()
    }

    /// Nothing across nodes keeps the tenant here.
    pub(super) fn idle(&self) -> bool {
        self.own.idle() && self.remote.is_empty()
    }
}

/// A forwarded request as it travels: the member's connection and access, and for a push its event
/// and payload as sent.
#[derive(Debug, Serialize, Deserialize)]
struct WireRequest<'a> {
    conn: u64,
    /// The member's user with a secret configured; `None` in open mode.
    user: Option<String>,
    #[serde(default)]
    grants: Grants,
    #[serde(default)]
    event: Option<String>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

/// The owner's answer to a forwarded request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireAnswer {
    /// The reply for the member: "ok" or "error", and the response.
    Reply { status: String, response: Box<RawValue> },
    /// The receiving node does not own the tenant: ask for the lease again.
    NotOwner,
}

/// Answer a request another node forwarded.
pub(super) fn reply(
    ctx: &mut OwnerCtx<'_>,
    node: &str,
    topic: &str,
    req_id: u64,
    status: &str,
    response: &str,
) {
    let answer = match RawValue::from_string(response.to_owned()) {
        Ok(response) => WireAnswer::Reply { status: status.into(), response },
        Err(_) => return tracing::error!(topic, "a geofencing reply is not JSON"),
    };
    send_answer(ctx, node, topic, req_id, &answer);
}

fn send_answer(ctx: &mut OwnerCtx<'_>, node: &str, topic: &str, req_id: u64, answer: &WireAnswer) {
    if let Some(c) = ctx.cluster {
        let body = serde_json::to_vec(answer).expect("answers serialise");
        // A full queue drops the answer; the forwarding node answers its member at the timeout.
        let _ = c.send(node, topic, Kind::Reply, req_id, &body);
    }
}

/// The owner admitted a member of another node.
pub(super) fn remote_joined(ts: &mut TenantState, to: &ReplyTo) {
    if let (Some(ct), ReplyTo::Remote { node, conn, .. }) = (ts.cluster.as_mut(), to) {
        ct.remote.entry(node.clone()).or_default().insert(*conn);
    }
}

/// Events of one delivery step for other nodes: fence events for every node, query events by node.
#[derive(Debug, Default)]
pub(super) struct Batch {
    fences: Vec<u8>,
    queries: HashMap<Arc<str>, Vec<u8>>,
}

impl Batch {
    /// Add an event of `fence`.
    pub(super) fn fence(&mut self, fence: Arc<str>, frame: Frame) {
        let (Some(text), Ok(id_len)) = (frame::payload_of(&frame), u16::try_from(fence.len())) else {
            return;
        };
        if self.fences.is_empty() {
            self.fences.push(EVENT_FENCES);
        }
        self.fences.extend_from_slice(&id_len.to_le_bytes());
        self.fences.extend_from_slice(fence.as_bytes());
        put_text(&mut self.fences, text);
    }

    /// Add a live-query event for a connection of `node`.
    pub(super) fn query(&mut self, node: Arc<str>, conn: ConnId, frame: Frame) {
        let Some(text) = frame::payload_of(&frame) else { return };
        let out = self.queries.entry(node).or_insert_with(|| vec![EVENT_QUERIES]);
        out.extend_from_slice(&conn.0.to_le_bytes());
        put_text(out, text);
    }

    /// Publish the fence events on the tenant's channel and send each node its query events.
    pub(super) fn send(self, ctx: &mut OwnerCtx<'_>, name: &str) {
        let Some(c) = ctx.cluster else { return };
        // A full link queue drops copies for other nodes only; they are counted there.
        if !self.fences.is_empty() {
            let _ = c.publish(name, Kind::Event, 0, &self.fences);
        }
        for (node, body) in self.queries {
            let _ = c.send(&node, name, Kind::Event, 0, &body);
        }
    }
}

fn put_text(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text);
}

/// Reads an event body; `None` at the first truncation.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<usize> {
        Some(usize::from(u16::from_le_bytes(self.take(2)?.try_into().ok()?)))
    }
    fn u32(&mut self) -> Option<usize> {
        usize::try_from(u32::from_le_bytes(self.take(4)?.try_into().ok()?)).ok()
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self, n: usize) -> Option<&'a str> {
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

impl Geo {
    /// A join, leave or push on this node in cluster mode.
    pub(super) fn cluster_msg(&mut self, ctx: &mut OwnerCtx<'_>, msg: GeoMsg) {
        let name = msg.tenant().clone();
        match msg {
            GeoMsg::Join { conn, join_ref, msg_ref, access, fences, .. } => {
                self.open(ctx, &name);
                let to = ReplyTo::Local { conn, join_ref, msg_ref };
                self.route(ctx, &name, Request { to, access, what: What::Join(fences), attempts: 0 });
            }
            GeoMsg::Leave { conn, join_ref, .. } => {
                if self.leave(&name, conn, join_ref) {
                    self.tell_owner(ctx, &name, |body| {
                        body.push(EVENT_LEFT);
                        body.extend_from_slice(&conn.0.to_le_bytes());
                    });
                }
            }
            GeoMsg::Push { conn, join_ref, msg_ref, op, raw, .. } => {
                let member = self.tenants.get(&name).and_then(|ts| ts.members.get(&conn));
                let access = member.filter(|m| m.join_ref == join_ref).map(|m| m.access.clone());
                let to = ReplyTo::Local { conn, join_ref, msg_ref };
                let Some(access) = access else { return to.error(ctx, &name, "not joined") };
                match op {
                    Op::Subscribe { fences, on } => self.subscribe_op(ctx, &name, &to, fences, on),
                    op => {
                        self.route(ctx, &name, Request { to, access, what: What::Push(op, raw), attempts: 0 })
                    }
                }
            }
        }
    }

    /// The tenant's state on this node, with its channel subscribed.
    fn open(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>) {
        let Some(cluster) = ctx.cluster else { return };
        if self.tenants.contains_key(name) {
            return;
        }
        let ct = ClusterTenant { own: Owned::new(MAX_QUEUED_WHILE_LOADING), remote: HashMap::new() };
        let ts = TenantState::new(ctx, None, Some(Box::new(ct)));
        self.tenants.insert(name.clone(), ts);
        cluster.subscribe(name.clone());
    }

    /// Send the owner an event about this node's members, if another node owns the tenant.
    fn tell_owner(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, write: impl FnOnce(&mut Vec<u8>)) {
        let Some(cluster) = ctx.cluster else { return };
        let Some(ct) = self.tenants.get(name).and_then(|ts| ts.cluster.as_ref()) else { return };
        if let ownership::Role::Follower(owner) = ct.own.role() {
            let mut body = Vec::new();
            write(&mut body);
            // A full link queue drops it; the owner learns the members again with the next list.
            let _ = cluster.send(owner, name, Kind::Event, 0, &body);
        }
    }

    /// Tell the owner every member of this node.
    fn announce_members(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>) {
        let Some(conns) =
            self.tenants.get(name).map(|ts| ts.members.keys().copied().collect::<Vec<ConnId>>())
        else {
            return;
        };
        self.tell_owner(ctx, name, |body| {
            body.push(EVENT_MEMBERS);
            for c in conns {
                body.extend_from_slice(&c.0.to_le_bytes());
            }
        });
    }

    fn route(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, req: Request) {
        let Some(cluster) = ctx.cluster else { return };
        let Some(ct) = self.tenants.get_mut(name).and_then(|ts| ts.cluster.as_mut()) else {
            return refuse(ctx, name, req, "not joined");
        };
        let route = ct.own.route(cluster, name, req);
        self.follow(ctx, name, route);
    }

    /// Carry out where the tenant's ownership sends a request.
    fn follow(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, route: Route<Request>) {
        match route {
            Route::Here(req) => match req.what {
                What::Join(fences) => self.join_here(ctx, name, req.to, req.access, fences),
                What::Push(op, _) => self.push(ctx, name, req.to, &req.access, op),
            },
            Route::Held => {}
            Route::Forward(owner, req) => match req.to {
                // A forwarded request is never forwarded again: its node asks for the lease anew.
                ReplyTo::Remote { node, req_id, .. } => {
                    send_answer(ctx, &node, name, req_id, &WireAnswer::NotOwner)
                }
                ReplyTo::Local { .. } => self.forward(ctx, name, owner, req),
            },
            Route::Refused(reqs, reason) => {
                for req in reqs {
                    refuse(ctx, name, req, reason);
                }
            }
        }
    }

    fn forward(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, owner: Arc<str>, req: Request) {
        let Some(cluster) = ctx.cluster else { return };
        let ReplyTo::Local { conn, .. } = req.to else { return };
        let (event, payload) = match &req.what {
            What::Join(_) => (None, None),
            What::Push(_, Some(raw)) => match serde_json::from_str::<&RawValue>(&raw.payload) {
                Ok(payload) => (Some(raw.event.to_string()), Some(payload)),
                Err(_) => return refuse(ctx, name, req, "the payload must be JSON"),
            },
            What::Push(_, None) => {
                return refuse(ctx, name, req, "this push cannot reach the tenant's owner")
            }
        };
        let (user, grants) = match &req.access {
            Access::Open => (None, Grants::default()),
            Access::Granted { user, grants } => (Some(user.to_string()), grants.clone()),
        };
        let wire = WireRequest { conn: conn.0, user, grants, event, payload };
        let body = serde_json::to_vec(&wire).expect("requests serialise");
        match self.forwards.send(cluster, owner, name, &body, req) {
            Ok(()) => {
                if let Some(ct) = self.tenants.get_mut(name).and_then(|ts| ts.cluster.as_mut()) {
                    ct.own.forwarded();
                }
            }
            Err(req) => refuse(ctx, name, req, "overloaded"),
        }
    }

    fn retry(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, mut req: Request) {
        req.attempts += 1;
        if req.attempts >= MAX_ATTEMPTS {
            return refuse(ctx, name, req, "no node owns this tenant");
        }
        self.route(ctx, name, req);
    }

    /// The tenant's stored state, read by this node once it owns the tenant.
    pub(super) fn cluster_loaded(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        name: &Arc<str>,
        result: Result<GeoState, Arc<StoreError>>,
    ) {
        let Some(ts) = self.tenants.get_mut(name) else { return };
        let ok = result.is_ok();
        match result {
            Ok(state) => super::restore(ctx, name, ts, state),
            Err(e) => tracing::warn!(tenant = %name, error = %e, "geofencing tenant not loaded"),
        }
        let Some(ct) = ts.cluster.as_mut() else { return };
        match ct.own.head_read(ok) {
            HeadRead::Stale => self.resolve(ctx, name),
            HeadRead::Ready(waiting) => {
                for req in waiting {
                    self.route(ctx, name, req);
                }
            }
            HeadRead::Failed(waiting) => {
                for req in waiting {
                    refuse(ctx, name, req, "storage failed");
                }
            }
        }
    }

    /// Requests wait but nobody is known to own the tenant: ask for the lease.
    fn resolve(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>) {
        let Some(cluster) = ctx.cluster else { return };
        let Some(ct) = self.tenants.get_mut(name).and_then(|ts| ts.cluster.as_mut()) else { return };
        let route = ct.own.resolve(cluster, name);
        self.follow(ctx, name, route);
    }

    /// Once a second: answer forwarded requests whose owner did not answer in time.
    pub(super) fn cluster_tick(&mut self, ctx: &mut OwnerCtx<'_>) {
        let Some(cluster) = ctx.cluster else { return };
        for f in self.forwards.expired(cluster) {
            if let Some(ct) = self.tenants.get_mut(&f.topic).and_then(|ts| ts.cluster.as_mut()) {
                ct.own.answered();
                ct.own.forget(&f.owner);
            }
            refuse(ctx, &f.topic, f.payload, "the tenant's owner did not answer");
        }
    }

    /// A message from the cluster link about a tenant.
    pub fn on_cluster(&mut self, ctx: &mut OwnerCtx<'_>, msg: Inbound) {
        match msg {
            Inbound::Remote(env) => self.on_remote(ctx, env),
            Inbound::Lease { topic, owner } => self.on_lease(ctx, &topic, owner),
            Inbound::LeaseLost { topic } => {
                self.lease_lost(ctx, &topic);
                self.resolve(ctx, &topic);
            }
            // The owner may have dropped this node's members while Redis was away.
            Inbound::Subscribed { topic } => self.announce_members(ctx, &topic),
            Inbound::NodeDown { node } => self.node_down(&node),
            Inbound::NodeUp { node } => {
                let followed: Vec<Arc<str>> = self
                    .tenants
                    .iter()
                    .filter(|(_, ts)| {
                        ts.cluster
                            .as_ref()
                            .is_some_and(|c| *c.own.role() == ownership::Role::Follower(node.clone()))
                    })
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in followed {
                    self.announce_members(ctx, &name);
                }
            }
        }
    }

    fn on_lease(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, owner: Option<Arc<str>>) {
        let Some(cluster) = ctx.cluster else { return };
        let mine = owner.as_deref() == Some(&**cluster.node());
        let Some(ct) = self.tenants.get_mut(name).and_then(|ts| ts.cluster.as_mut()) else {
            if mine {
                cluster.release(name.clone());
            }
            return;
        };
        match ct.own.on_lease(mine, owner) {
            Lease::Ignored => {}
            Lease::ReadHead => {
                let tenant = name.clone();
                if let Err((_, e)) =
                    self.submit(ctx, name, Pending::Load, |tag| StoreRequest::GeoLoad { tenant, tag })
                {
                    if let Some(ct) = self.tenants.get_mut(name).and_then(|ts| ts.cluster.as_mut()) {
                        for req in ct.own.fail() {
                            refuse(ctx, name, req, super::overloaded(&e));
                        }
                    }
                }
            }
            Lease::Reroute(waiting) => {
                self.announce_members(ctx, name);
                for req in waiting {
                    self.route(ctx, name, req);
                }
            }
            Lease::Refused(waiting) => {
                for req in waiting {
                    refuse(ctx, name, req, "cluster unavailable");
                }
            }
        }
    }

    /// This node's lease was not renewed: another node may own the tenant now. Positions are
    /// written behind and the tenant's state dropped; the members here stay.
    fn lease_lost(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>) {
        let owned =
            self.tenants.get(name).and_then(|ts| ts.cluster.as_ref()).is_some_and(|c| c.own.is_owner());
        if !owned {
            return;
        }
        self.flush_positions(ctx, name);
        let Some(ts) = self.tenants.get_mut(name) else { return };
        ts.t = Tenant::new(ctx.cfg.geo_history);
        ts.queries.clear();
        ts.query_owner.clear();
        recount(ctx, ts);
        if let Some(ct) = ts.cluster.as_mut() {
            ct.own.lease_lost();
            ct.remote.clear();
        }
    }

    /// A node fell silent: it owns no tenant any more, and its members and their queries go.
    fn node_down(&mut self, node: &Arc<str>) {
        for ts in self.tenants.values_mut() {
            let Some(ct) = ts.cluster.as_mut() else { continue };
            ct.own.forget(node);
            if ct.remote.remove(node).is_some() {
                let theirs: Vec<Endpoint> =
                    ts.queries.keys().filter(|e| e.node.as_ref() == Some(node)).cloned().collect();
                for who in theirs {
                    drop_queries(ts, &who);
                }
            }
        }
    }

    fn on_remote(&mut self, ctx: &mut OwnerCtx<'_>, env: Envelope) {
        let name = env.topic.clone();
        match env.kind {
            Kind::Request => {
                if !self.tenants.contains_key(&name) {
                    // Not open here, so not owned here either.
                    return send_answer(ctx, &env.origin, &name, env.req_id, &WireAnswer::NotOwner);
                }
                let req = match serde_json::from_slice::<WireRequest<'_>>(&env.body) {
                    Ok(req) => req,
                    Err(e) => {
                        return tracing::warn!(node = %env.origin, error = %e, "malformed geofencing request dropped")
                    }
                };
                let access = match req.user {
                    None => Access::Open,
                    Some(user) => Access::Granted { user: user.into(), grants: req.grants },
                };
                let to =
                    ReplyTo::Remote { node: env.origin.clone(), req_id: env.req_id, conn: ConnId(req.conn) };
                let what = match (req.event, req.payload) {
                    (None, _) => What::Join(None),
                    (Some(event), Some(payload)) => {
                        let limits = Limits { max_vertices: ctx.cfg.geo_max_vertices };
                        match parse_op(&event, payload.get(), limits) {
                            Ok(op) => What::Push(op, None),
                            Err(reason) => return to.error(ctx, &name, &reason),
                        }
                    }
                    (Some(_), None) => return to.error(ctx, &name, "a push needs a payload"),
                };
                self.route(ctx, &name, Request { to, access, what, attempts: 0 });
            }
            Kind::Reply => self.on_reply(ctx, env),
            Kind::Event => self.on_event(ctx, &name, &env.origin, &env.body),
            Kind::Frame | Kind::Heartbeat => {}
        }
    }

    fn on_reply(&mut self, ctx: &mut OwnerCtx<'_>, env: Envelope) {
        // A reply after the timeout finds nothing: the member had its error already.
        let Some(f) = self.forwards.answer(env.req_id) else { return };
        let name = f.topic;
        if let Some(ct) = self.tenants.get_mut(&name).and_then(|ts| ts.cluster.as_mut()) {
            ct.own.answered();
        }
        match serde_json::from_slice::<WireAnswer>(&env.body) {
            Ok(WireAnswer::NotOwner) => {
                if let Some(ct) = self.tenants.get_mut(&name).and_then(|ts| ts.cluster.as_mut()) {
                    ct.own.forget(&f.owner);
                }
                self.retry(ctx, &name, f.payload);
            }
            Ok(WireAnswer::Reply { status, response }) => match (f.payload.to, f.payload.what) {
                (ReplyTo::Local { conn, join_ref, msg_ref }, What::Join(fences)) => {
                    let Some(ts) = self.tenants.get_mut(&name) else { return };
                    if status == "ok" {
                        admit(
                            ctx,
                            &name,
                            ts,
                            conn,
                            join_ref,
                            msg_ref,
                            f.payload.access,
                            fences,
                            response.get(),
                        );
                    } else {
                        joined(ctx, &name, conn, join_ref, msg_ref, false, response.get());
                    }
                }
                (to, _) => to.send(ctx, &name, &status, response.get()),
            },
            Err(_) => refuse(ctx, &name, f.payload, "malformed answer from the tenant's owner"),
        }
    }

    fn on_event(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, node: &Arc<str>, body: &[u8]) {
        let Some(ts) = self.tenants.get_mut(name) else { return };
        let Some((&tag, rest)) = body.split_first() else { return };
        let mut r = Reader(rest);
        let complete = match tag {
            EVENT_FENCES => loop {
                if r.done() {
                    break true;
                }
                let Some((fence, text)) = r.u16().and_then(|n| r.str(n)).zip(r.u32().and_then(|n| r.str(n)))
                else {
                    break false;
                };
                to_subscribers(ctx, ts, fence, &text_frame(text));
            },
            EVENT_QUERIES => loop {
                if r.done() {
                    break true;
                }
                let Some((conn, text)) = r.u64().map(ConnId).zip(r.u32().and_then(|n| r.str(n))) else {
                    break false;
                };
                // Only to a member here: a stale or bad id reaches nobody.
                if ts.members.contains_key(&conn) {
                    ctx.out.send(conn.worker(), Msg::ToConn { conn, frame: text_frame(text) });
                }
            },
            EVENT_LEFT => match (r.u64(), ts.cluster.as_mut()) {
                (Some(conn), Some(ct)) => {
                    if let Some(set) = ct.remote.get_mut(node) {
                        set.remove(&ConnId(conn));
                        if set.is_empty() {
                            ct.remote.remove(node);
                        }
                    }
                    drop_queries(ts, &Endpoint { node: Some(node.clone()), conn: ConnId(conn) });
                    r.done()
                }
                (conn, _) => conn.is_some(),
            },
            EVENT_MEMBERS => {
                let mut conns = HashSet::new();
                while let Some(c) = r.u64() {
                    conns.insert(ConnId(c));
                }
                let gone: Vec<Endpoint> = ts
                    .queries
                    .keys()
                    .filter(|e| e.node.as_ref() == Some(node) && !conns.contains(&e.conn))
                    .cloned()
                    .collect();
                for who in gone {
                    drop_queries(ts, &who);
                }
                if let Some(ct) = ts.cluster.as_mut().filter(|c| c.own.is_owner()) {
                    if conns.is_empty() {
                        ct.remote.remove(node);
                    } else {
                        ct.remote.insert(node.clone(), conns);
                    }
                }
                r.done()
            }
            _ => false,
        };
        if !complete {
            tracing::warn!(node = %node, tenant = %name, tag, "malformed geofencing event (the rest dropped)");
        }
    }
}

/// Answer a join or push that cannot be served, here or on the node that forwarded it.
fn refuse(ctx: &mut OwnerCtx<'_>, name: &Arc<str>, req: Request, reason: &str) {
    match (req.to, req.what) {
        (ReplyTo::Local { conn, join_ref, msg_ref }, What::Join(_)) => {
            let response = serde_json::json!({ "reason": reason }).to_string();
            joined(ctx, name, conn, join_ref, msg_ref, false, &response);
        }
        (to, _) => to.error(ctx, name, reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip() {
        let payload =
            serde_json::from_str::<&RawValue>(r#"{"updates":[{"id":"a","lat":1,"lon":2}]}"#).unwrap();
        let grants = Grants { geo_move: vec!["truck-*".into()], geo_admin: true, operator: false };
        let req = WireRequest {
            conn: 7,
            user: Some("u".into()),
            grants: grants.clone(),
            event: Some("locations".into()),
            payload: Some(payload),
        };
        let bytes = serde_json::to_vec(&req).unwrap();
        let back: WireRequest<'_> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            (back.conn, back.user.as_deref(), back.event.as_deref()),
            (7, Some("u"), Some("locations"))
        );
        assert_eq!(back.grants, grants);
        assert_eq!(back.payload.unwrap().get(), payload.get(), "the batch travels as sent");
        let join: WireRequest<'_> = serde_json::from_slice(br#"{"conn":1,"user":null}"#).unwrap();
        assert!(join.event.is_none() && join.payload.is_none());
        let answer =
            WireAnswer::Reply { status: "ok".into(), response: RawValue::from_string("{}".into()).unwrap() };
        let bytes = serde_json::to_vec(&answer).unwrap();
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), r#"{"reply":{"status":"ok","response":{}}}"#);
        assert!(matches!(serde_json::from_slice(br#""not_owner""#), Ok(WireAnswer::NotOwner)));
    }

    #[test]
    fn event_batches_decode_and_stop_at_a_truncation() {
        let mut b = Batch::default();
        let frame = text_frame(r#"[null,null,"geo:t","geofence_event",{"fence":"f"}]"#);
        b.fence("f".into(), frame.clone());
        b.fence("zone-2".into(), frame.clone());
        b.query("n".into(), ConnId(42), frame);
        let mut r = Reader(&b.fences[1..]);
        let mut seen = Vec::new();
        while !r.done() {
            let id = r.u16().and_then(|n| r.str(n)).unwrap().to_owned();
            let text = r.u32().and_then(|n| r.str(n)).unwrap();
            assert!(text.contains("geofence_event"));
            seen.push(id);
        }
        assert_eq!(seen, ["f", "zone-2"]);
        assert_eq!(b.fences[0], EVENT_FENCES);
        let q = &b.queries[&Arc::<str>::from("n")];
        let mut r = Reader(&q[1..]);
        assert_eq!(r.u64(), Some(42));
        let cut = &q[1..q.len() - 1];
        let mut r = Reader(cut);
        assert_eq!(r.u64(), Some(42));
        assert!(r.u32().and_then(|n| r.str(n)).is_none(), "a truncated text is refused");
    }
}
