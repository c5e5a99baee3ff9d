//! The owner side of `geo:<tenant>`: each tenant lives on one worker, which loads it from storage,
//! applies updates, answers queries, and delivers events to subscribers in order — the logged ones
//! (`enter`, `exit`, `cross`, `dwell`) only once durable. In cluster mode one node's home worker owns
//! the tenant and the others keep only their members (see [`cluster`]).

mod cluster;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write;
use std::sync::Arc;

use super::detect::{LatLon, Shape};
use super::fence::{FenceDef, Limits};
use super::tenant::{Fired, Fix, Ix, Kind, Located, Props, Tenant};
use super::{now_ms, Access, Fences, MAX_LIMIT};
use crate::mailbox::{ConnId, Frame, Msg};
use crate::metrics::WorkerStats;
use crate::phoenix::JoinRef;
use crate::store::{
    GeoEvent, GeoFenceChange, GeoLog, GeoLogKind, GeoState, StoreError, StoreRequest, StoreResult,
    SubmitError,
};
use crate::topics::{text_frame, OwnerCtx, MAX_QUEUED_WHILE_LOADING};
use crate::wire::phoenix as wire;

/// Work for a tenant's owner.
#[derive(Debug)]
pub enum GeoMsg {
    Join {
        tenant: Arc<str>,
        conn: ConnId,
        join_ref: JoinRef,
        msg_ref: Option<Box<str>>,
        access: Access,
        fences: Option<Fences>,
    },
    Leave {
        tenant: Arc<str>,
        conn: ConnId,
        join_ref: JoinRef,
    },
    Push {
        tenant: Arc<str>,
        conn: ConnId,
        join_ref: JoinRef,
        msg_ref: Option<Box<str>>,
        op: Op,
        /// The push as sent, in cluster mode: what is forwarded when another node owns the tenant.
        raw: Option<Raw>,
    },
}

/// A push as its client sent it.
#[derive(Debug)]
pub struct Raw {
    pub event: Box<str>,
    /// The JSON payload.
    pub payload: Box<str>,
}

impl GeoMsg {
    fn tenant(&self) -> &Arc<str> {
        match self {
            GeoMsg::Join { tenant, .. } | GeoMsg::Leave { tenant, .. } | GeoMsg::Push { tenant, .. } => {
                tenant
            }
        }
    }
}

/// One checked position report.
#[derive(Debug)]
pub struct Loc {
    pub id: Box<str>,
    pub fix: Fix,
    /// The object's new properties, JSON.
    pub props: Option<Box<str>>,
}

/// A checked push.
#[derive(Debug)]
pub enum Op {
    Location(Loc),
    /// Each update checked on its own.
    Locations(Vec<Result<Loc, String>>),
    FencePut {
        def: FenceDef,
        create: bool,
    },
    FenceDelete {
        id: Box<str>,
    },
    FenceList {
        after: Option<Box<str>>,
        limit: usize,
    },
    Subscribe {
        fences: Fences,
        on: bool,
    },
    /// Create or move a live query.
    Query {
        key: Box<str>,
        at: LatLon,
        radius: f64,
    },
    QueryCancel {
        key: Box<str>,
    },
    Nearby {
        at: LatLon,
        radius: f64,
        limit: usize,
    },
    Within {
        shape: Shape,
        limit: usize,
    },
    Object {
        id: Box<str>,
    },
    History {
        id: Box<str>,
        limit: usize,
    },
}

/// Where a reply goes: a connection of this node, or (cluster mode) the node that forwarded the
/// request for one of its connections.
#[derive(Debug)]
enum ReplyTo {
    Local { conn: ConnId, join_ref: JoinRef, msg_ref: Option<Box<str>> },
    Remote { node: Arc<str>, req_id: u64, conn: ConnId },
}

impl ReplyTo {
    fn send(&self, ctx: &mut OwnerCtx<'_>, topic: &str, status: &str, response: &str) {
        match self {
            ReplyTo::Local { conn, join_ref, msg_ref } => ctx.to_conn(
                *conn,
                &wire::encode_reply(Some(join_ref), msg_ref.as_deref(), topic, status, response),
            ),
            ReplyTo::Remote { node, req_id, .. } => {
                cluster::reply(ctx, node, topic, *req_id, status, response)
            }
        }
    }
    /// Who holds the live queries the request makes.
    fn endpoint(&self) -> Endpoint {
        match self {
            ReplyTo::Local { conn, .. } => Endpoint { node: None, conn: *conn },
            ReplyTo::Remote { node, conn, .. } => Endpoint { node: Some(node.clone()), conn: *conn },
        }
    }
    fn ok(&self, ctx: &mut OwnerCtx<'_>, topic: &str, response: &str) {
        self.send(ctx, topic, "ok", response);
    }
    fn error(&self, ctx: &mut OwnerCtx<'_>, topic: &str, reason: &str) {
        self.send(ctx, topic, "error", &serde_json::json!({ "reason": reason }).to_string());
    }
}

#[derive(Debug)]
struct Member {
    join_ref: JoinRef,
    access: Access,
    /// Fence ids subscribed one by one.
    fences: HashSet<Arc<str>>,
}

/// A connection of this node (`node: None`) or of another node: who holds live queries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Endpoint {
    node: Option<Arc<str>>,
    conn: ConnId,
}

/// Who an event goes to.
#[derive(Debug)]
enum To {
    /// The subscribers of a fence, on every node.
    Fence(Arc<str>),
    /// The connection that owns a live query.
    Query(Endpoint),
}

/// Events of one step, in order; `waiting` for the log write that makes them durable.
#[derive(Debug)]
struct Outgoing {
    waiting: Option<u64>,
    events: Vec<(To, Frame)>,
}

/// A tenant on its owner.
#[derive(Debug)]
struct TenantState {
    /// Messages that arrived while the tenant loads.
    loading: Option<Vec<GeoMsg>>,
    t: Tenant,
    members: HashMap<ConnId, Member>,
    subs_all: HashSet<ConnId>,
    subs: HashMap<Arc<str>, HashSet<ConnId>>,
    /// Live queries by their holder and key.
    queries: HashMap<Endpoint, HashMap<Arc<str>, Ix>>,
    /// The holder and key of each live query.
    query_owner: HashMap<Ix, (Endpoint, Arc<str>)>,
    outq: VecDeque<Outgoing>,
    /// Storage requests in flight.
    inflight: u32,
    /// Fence ids with a change waiting for storage; another change of the same id is refused meanwhile.
    changing: HashSet<Arc<str>>,
    /// Fences counted against the bound before they are stored.
    creating: usize,
    /// Gauges this tenant has added to the worker's stats.
    counted: (u64, u64),
    /// The tenant across nodes, in cluster mode only.
    cluster: Option<Box<cluster::ClusterTenant>>,
}

impl TenantState {
    /// An empty tenant, counted in the worker's stats.
    fn new(
        ctx: &mut OwnerCtx<'_>,
        loading: Option<Vec<GeoMsg>>,
        cluster: Option<Box<cluster::ClusterTenant>>,
    ) -> Self {
        WorkerStats::add(&ctx.stats.geo_tenants, 1);
        TenantState {
            loading,
            t: Tenant::new(ctx.cfg.geo_history),
            members: HashMap::new(),
            subs_all: HashSet::new(),
            subs: HashMap::new(),
            queries: HashMap::new(),
            query_owner: HashMap::new(),
            outq: VecDeque::new(),
            inflight: 0,
            changing: HashSet::new(),
            creating: 0,
            counted: (0, 0),
            cluster,
        }
    }
}

#[derive(Debug)]
enum Pending {
    /// The tenant's stored state; in cluster mode, the head a new owner reads.
    Load,
    Fence {
        to: ReplyTo,
        change: FenceChange,
    },
    Log,
    Positions,
}

#[derive(Debug)]
enum FenceChange {
    Put(Box<FenceDef>, bool),
    Delete(Arc<str>),
}

/// Geofencing on one worker: the tenants it owns.
#[derive(Debug)]
pub struct Geo {
    me: usize,
    tenants: HashMap<Arc<str>, TenantState>,
    pending: HashMap<u64, (Arc<str>, Pending)>,
    next_tag: u64,
    fired: Vec<Fired>,
    /// Requests forwarded to other nodes (cluster mode).
    forwards: cluster::Forwards,
}

impl Geo {
    /// State for worker `me`.
    pub fn new(me: usize) -> Self {
        Geo {
            me,
            tenants: HashMap::new(),
            pending: HashMap::new(),
            next_tag: 0,
            fired: Vec::new(),
            forwards: cluster::Forwards::default(),
        }
    }

    fn submit(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        tenant: &Arc<str>,
        p: Pending,
        req: impl FnOnce(u64) -> StoreRequest,
    ) -> Result<u64, (Pending, SubmitError)> {
        self.next_tag += 1;
        let tag = self.next_tag;
        match ctx.store.submit(self.me, req(tag)) {
            Ok(()) => {
                self.pending.insert(tag, (tenant.clone(), p));
                if let Some(ts) = self.tenants.get_mut(tenant) {
                    ts.inflight += 1;
                }
                Ok(tag)
            }
            Err(e) => Err((p, e)),
        }
    }

    /// A message for a tenant this worker owns.
    pub fn on_msg(&mut self, ctx: &mut OwnerCtx<'_>, msg: GeoMsg) {
        if ctx.cluster.is_some() {
            return self.cluster_msg(ctx, msg);
        }
        let name = msg.tenant().clone();
        let Some(ts) = self.tenants.get_mut(&name) else {
            match msg {
                GeoMsg::Join { .. } => self.load(ctx, name, msg),
                GeoMsg::Push { conn, join_ref, msg_ref, .. } => {
                    ReplyTo::Local { conn, join_ref, msg_ref }.error(ctx, &name, "not joined")
                }
                GeoMsg::Leave { .. } => {}
            }
            return;
        };
        if let Some(queue) = &mut ts.loading {
            if queue.len() < MAX_QUEUED_WHILE_LOADING || matches!(msg, GeoMsg::Leave { .. }) {
                queue.push(msg);
            } else {
                refuse(ctx, &name, msg, "overloaded");
            }
            return;
        }
        match msg {
            GeoMsg::Join { conn, join_ref, msg_ref, access, fences, .. } => {
                let to = ReplyTo::Local { conn, join_ref, msg_ref };
                self.join_here(ctx, &name, to, access, fences);
            }
            GeoMsg::Leave { conn, join_ref, .. } => {
                self.leave(&name, conn, join_ref);
            }
            GeoMsg::Push { conn, join_ref, msg_ref, op, .. } => {
                let to = ReplyTo::Local { conn, join_ref, msg_ref };
                let ts = self.tenants.get(&name).expect("checked");
                match ts.members.get(&conn) {
                    Some(m) if m.join_ref == join_ref => {
                        let access = m.access.clone();
                        match op {
                            Op::Subscribe { fences, on } => self.subscribe_op(ctx, &name, &to, fences, on),
                            op => self.push(ctx, &name, to, &access, op),
                        }
                    }
                    _ => to.error(ctx, &name, "not joined"),
                }
            }
        }
    }

    /// A join served by the tenant's owner: a member of this node is admitted; one of another node
    /// is recorded (the tenant stays while it is there) and its node admits it.
    fn join_here(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        name: &Arc<str>,
        to: ReplyTo,
        access: Access,
        fences: Option<Fences>,
    ) {
        let Some(ts) = self.tenants.get_mut(name) else { return };
        let reply = format!(r#"{{"fences":{},"objects":{}}}"#, ts.t.fence_count(), ts.t.object_count());
        match to {
            ReplyTo::Local { conn, join_ref, msg_ref } => {
                admit(ctx, name, ts, conn, join_ref, msg_ref, access, fences, &reply)
            }
            remote @ ReplyTo::Remote { .. } => {
                cluster::remote_joined(ts, &remote);
                remote.ok(ctx, name, &reply);
            }
        }
    }

    /// A member of this node leaves; true if it was one.
    fn leave(&mut self, name: &Arc<str>, conn: ConnId, join_ref: JoinRef) -> bool {
        let Some(ts) = self.tenants.get_mut(name) else { return false };
        if !ts.members.get(&conn).is_some_and(|m| m.join_ref == join_ref) {
            return false;
        }
        let m = ts.members.remove(&conn).expect("checked");
        unsubscribe_all(ts, conn, &m);
        true
    }

    /// `subscribe` and `unsubscribe`: kept by the member's own node.
    fn subscribe_op(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        name: &Arc<str>,
        to: &ReplyTo,
        fences: Fences,
        on: bool,
    ) {
        let (Some(ts), ReplyTo::Local { conn, .. }) = (self.tenants.get_mut(name), to) else { return };
        match subscribe(ts, *conn, fences, on) {
            Ok(()) => to.ok(ctx, name, "{}"),
            Err(reason) => to.error(ctx, name, &reason),
        }
    }

    fn load(&mut self, ctx: &mut OwnerCtx<'_>, name: Arc<str>, join: GeoMsg) {
        self.tenants.insert(name.clone(), TenantState::new(ctx, Some(vec![join]), None));
        let tenant = name.clone();
        if let Err((_, e)) =
            self.submit(ctx, &name, Pending::Load, |tag| StoreRequest::GeoLoad { tenant, tag })
        {
            let ts = self.tenants.remove(&name).expect("just inserted");
            WorkerStats::sub(&ctx.stats.geo_tenants, 1);
            for msg in ts.loading.unwrap_or_default() {
                refuse(ctx, &name, msg, overloaded(&e));
            }
        }
    }

    fn loaded(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, result: Result<GeoState, Arc<StoreError>>) {
        let Some(ts) = self.tenants.get_mut(name) else { return };
        if ts.cluster.is_some() {
            return self.cluster_loaded(ctx, name, result);
        }
        let queued = ts.loading.take().unwrap_or_default();
        match result {
            Ok(state) => {
                restore(ctx, name, ts, state);
                for msg in queued {
                    self.on_msg(ctx, msg);
                }
            }
            Err(e) => {
                tracing::warn!(tenant = %name, error = %e, "geofencing tenant not loaded");
                self.tenants.remove(name);
                WorkerStats::sub(&ctx.stats.geo_tenants, 1);
                for msg in queued {
                    refuse(ctx, name, msg, "storage failed");
                }
            }
        }
    }

    fn push(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, to: ReplyTo, access: &Access, op: Op) {
        let now = now_ms();
        let ts = self.tenants.get_mut(name).expect("caller checked");
        if matches!(op, Op::Location(_) | Op::Locations(_)) && ts.outq.len() >= MAX_WAITING_STEPS {
            // Events wait in order behind a log write storage has not finished: take no more updates
            // until it catches up, rather than holding their events without bound.
            return to.error(ctx, name, "overloaded: geofence events are waiting for storage");
        }
        match op {
            Op::Location(loc) => {
                let mut fired = std::mem::take(&mut self.fired);
                fired.clear();
                match locate(ctx, &mut ts.t, access, loc, now, &mut fired) {
                    Ok(Located::Applied) => to.ok(ctx, name, "{}"),
                    Ok(_) => to.ok(ctx, name, r#"{"ignored":"out_of_order"}"#),
                    Err(reason) => to.error(ctx, name, &reason),
                }
                recount(ctx, ts);
                self.emit(ctx, name, &fired, now);
                self.fired = fired;
            }
            Op::Locations(items) => {
                let mut fired = std::mem::take(&mut self.fired);
                fired.clear();
                let (mut applied, mut ignored, mut errors) = (0, 0, String::new());
                for (i, item) in items.into_iter().enumerate() {
                    match item.and_then(|loc| locate(ctx, &mut ts.t, access, loc, now, &mut fired)) {
                        Ok(Located::Applied) => applied += 1,
                        Ok(_) => ignored += 1,
                        Err(reason) => {
                            errors.push_str(if errors.is_empty() { "" } else { "," });
                            let _ = write!(errors, r#"{{"index":{i},"reason":{}}}"#, json_str(&reason));
                        }
                    }
                }
                let mut reply = format!(r#"{{"applied":{applied},"ignored":{ignored}"#);
                if !errors.is_empty() {
                    let _ = write!(reply, r#","errors":[{errors}]"#);
                }
                reply.push('}');
                to.ok(ctx, name, &reply);
                recount(ctx, ts);
                self.emit(ctx, name, &fired, now);
                self.fired = fired;
            }
            Op::FencePut { def, create } => {
                if !access.may_admin() {
                    return to.error(ctx, name, "changing fences needs a grant token with geo_admin");
                }
                if ts.changing.contains(&def.id) {
                    return to.error(ctx, name, "this fence is being changed; try again");
                }
                let exists = ts.t.has_fence(&def.id);
                if create && exists {
                    return to.error(ctx, name, &format!("fence {:?} exists (use fence_update)", &*def.id));
                }
                if !create && !exists {
                    return to.error(ctx, name, &format!("no fence {:?} (use fence_create)", &*def.id));
                }
                if create && ts.t.fence_count() + ts.creating >= ctx.cfg.geo_max_fences {
                    return to.error(
                        ctx,
                        name,
                        &format!("the tenant has {} fences, its limit", ctx.cfg.geo_max_fences),
                    );
                }
                let (tenant, id, json) = (name.clone(), def.id.clone(), def.json.clone());
                ts.changing.insert(id.clone());
                ts.creating += usize::from(create);
                let fid = id.clone();
                let change = Pending::Fence { to, change: FenceChange::Put(Box::new(def), create) };
                let write = GeoFenceChange { tenant, id: fid, json: Some(json), fresh: create };
                let r = self.submit(ctx, name, change, |tag| StoreRequest::GeoFence { change: write, tag });
                if let Err((p, e)) = r {
                    let ts = self.tenants.get_mut(name).expect("live");
                    ts.changing.remove(&id);
                    ts.creating -= usize::from(create);
                    if let Pending::Fence { to, .. } = p {
                        to.error(ctx, name, overloaded(&e));
                    }
                }
            }
            Op::FenceDelete { id } => {
                if !access.may_admin() {
                    return to.error(ctx, name, "changing fences needs a grant token with geo_admin");
                }
                if ts.changing.contains(&*id) {
                    return to.error(ctx, name, "this fence is being changed; try again");
                }
                if !ts.t.has_fence(&id) {
                    return to.error(ctx, name, &format!("no fence {:?}", &*id));
                }
                let id: Arc<str> = id.into();
                ts.changing.insert(id.clone());
                let (tenant, fid) = (name.clone(), id.clone());
                let change = Pending::Fence { to, change: FenceChange::Delete(id.clone()) };
                let write = GeoFenceChange { tenant, id: fid, json: None, fresh: false };
                if let Err((p, e)) =
                    self.submit(ctx, name, change, |tag| StoreRequest::GeoFence { change: write, tag })
                {
                    self.tenants.get_mut(name).expect("live").changing.remove(&id);
                    if let Pending::Fence { to, .. } = p {
                        to.error(ctx, name, overloaded(&e));
                    }
                }
            }
            Op::FenceList { after, limit } => {
                let (fences, more) = ts.t.fences_after(after.as_deref(), limit);
                let mut out = String::from(r#"{"fences":["#);
                for (i, f) in fences.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&f.json);
                }
                let _ = write!(out, r#"],"more":{more}}}"#);
                to.ok(ctx, name, &out);
            }
            // Kept by the member's node; never forwarded.
            Op::Subscribe { .. } => to.error(ctx, name, "subscriptions are kept by the member's node"),
            Op::Query { key, at, radius } => {
                let who = to.endpoint();
                let mine = ts.queries.get(&who);
                let existing = mine.and_then(|m| m.get(&*key)).copied();
                if existing.is_none() && mine.map_or(0, HashMap::len) >= MAX_QUERIES {
                    return to.error(ctx, name, &format!("a member has at most {MAX_QUERIES} live queries"));
                }
                let (q, inside) = ts.t.put_query(existing, at, radius);
                let key: Arc<str> = key.into();
                ts.query_owner.insert(q, (who.clone(), key.clone()));
                ts.queries.entry(who).or_default().insert(key, q);
                let mut out = objects_json(&ts.t, &inside[..inside.len().min(MAX_LIMIT)]);
                out.pop();
                let _ = write!(out, r#","more":{}}}"#, inside.len() > MAX_LIMIT);
                to.ok(ctx, name, &out);
                self.emit(ctx, name, &[], now);
            }
            Op::QueryCancel { key } => {
                let who = to.endpoint();
                match ts.queries.get_mut(&who).and_then(|m| m.remove(&*key)) {
                    Some(q) => {
                        ts.t.drop_query(q);
                        ts.query_owner.remove(&q);
                        if ts.queries.get(&who).is_some_and(HashMap::is_empty) {
                            ts.queries.remove(&who);
                        }
                        to.ok(ctx, name, "{}");
                    }
                    None => to.error(ctx, name, &format!("no live query {:?}", &*key)),
                }
            }
            Op::Nearby { at, radius, limit } => {
                let found = ts.t.nearby(at, radius, limit);
                let out = objects_json(&ts.t, &found);
                to.ok(ctx, name, &out);
            }
            Op::Within { shape, limit } => {
                let (found, more) = ts.t.within(&shape, limit);
                let mut out = String::from(r#"{"objects":["#);
                for (i, o) in found.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let o = ts.t.object(*o);
                    let _ = write!(
                        out,
                        r#"{{"id":{},"lat":{},"lon":{},"ts":{}}}"#,
                        json_str(&o.name),
                        o.fix.pos.lat,
                        o.fix.pos.lon,
                        o.fix.ts
                    );
                }
                let _ = write!(out, r#"],"more":{more}}}"#);
                to.ok(ctx, name, &out);
            }
            Op::Object { id } => match ts.t.object_ix(&id) {
                None => to.error(ctx, name, &format!("no object {:?}", &*id)),
                Some(ix) => {
                    let o = ts.t.object(ix);
                    let mut out = format!(r#"{{"id":{},"#, json_str(&o.name));
                    fix_json(&mut out, &o.fix);
                    let props = o.props.as_ref().map_or("{}", |p| &p.raw);
                    let fences: Vec<&str> = ts.t.inside_of(ix).into_iter().map(|f| &**f).collect();
                    let _ = write!(
                        out,
                        r#","props":{props},"fences":{}}}"#,
                        serde_json::to_string(&fences).expect("strings")
                    );
                    to.ok(ctx, name, &out);
                }
            },
            Op::History { id, limit } => match ts.t.object_ix(&id) {
                None => to.error(ctx, name, &format!("no object {:?}", &*id)),
                Some(ix) => {
                    let o = ts.t.object(ix);
                    let mut out = format!(r#"{{"id":{},"positions":["#, json_str(&o.name));
                    let skip = o.history.len().saturating_sub(limit);
                    for (i, f) in o.history.iter().skip(skip).enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push('{');
                        fix_json(&mut out, f);
                        out.push('}');
                    }
                    out.push_str("]}");
                    to.ok(ctx, name, &out);
                }
            },
        }
    }

    /// Turns fired events into frames, logs the ones that are logged, and queues them for delivery.
    fn emit(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>, fired: &[Fired], now: u64) {
        let Some(ts) = self.tenants.get_mut(name) else { return };
        if fired.is_empty() && ts.t.query_events.is_empty() {
            return;
        }
        let mut events = query_frames(ts, name);
        let mut log = Vec::new();
        for e in fired {
            let fence = ts.t.fence(e.fence).id.clone();
            let object = ts.t.object(e.object).name.clone();
            let mut payload = format!(
                r#"{{"fence":{},"object":{},"event":"{}","lat":{},"lon":{},"ts":{}"#,
                json_str(&fence),
                json_str(&object),
                e.event.as_str(),
                e.pos.lat,
                e.pos.lon,
                e.ts
            );
            if let Some((c, dist)) = e.near {
                let _ = write!(
                    payload,
                    r#","center":{},"dist":{}"#,
                    json_str(&ts.t.object(c).name),
                    round_m(dist)
                );
            }
            payload.push('}');
            let frame = text_frame(&wire::encode(None, None, name, "geofence_event", &payload));
            let kind = match e.event {
                Kind::Enter => Some(GeoLogKind::Enter),
                Kind::Exit => Some(GeoLogKind::Exit),
                Kind::Cross => Some(GeoLogKind::Cross),
                Kind::Dwell => Some(GeoLogKind::Dwell),
                Kind::Inside | Kind::Outside => None,
            };
            if let Some(kind) = kind {
                log.push(GeoEvent {
                    fence: fence.clone(),
                    object,
                    kind,
                    lat: e.pos.lat,
                    lon: e.pos.lon,
                    ts: e.ts,
                    at_ms: now,
                });
            }
            events.push((To::Fence(fence), frame));
        }
        let mut waiting = None;
        if !log.is_empty() {
            let l = GeoLog { tenant: name.clone(), events: log };
            match self.submit(ctx, name, Pending::Log, |tag| StoreRequest::GeoLog { log: l, tag }) {
                Ok(tag) => waiting = Some(tag),
                Err((_, e)) => {
                    tracing::warn!(tenant = %name, error = %e, "geofence events delivered without being logged")
                }
            }
        }
        let ts = self.tenants.get_mut(name).expect("live");
        ts.outq.push_back(Outgoing { waiting, events });
        deliver(ctx, name, ts);
    }

    /// A storage result for this worker.
    pub fn on_store(&mut self, ctx: &mut OwnerCtx<'_>, result: StoreResult) {
        let tag = match &result {
            StoreResult::GeoLoaded { tag, .. } | StoreResult::GeoDone { tag, .. } => *tag,
            _ => return,
        };
        let Some((name, pending)) = self.pending.remove(&tag) else {
            tracing::error!(tag, "geofencing storage result for an unknown request");
            return;
        };
        if let Some(ts) = self.tenants.get_mut(&name) {
            ts.inflight -= 1;
        }
        match (pending, result) {
            (Pending::Load, StoreResult::GeoLoaded { result, .. }) => self.loaded(ctx, &name, result),
            (Pending::Log, StoreResult::GeoDone { result, .. }) => {
                if let Err(e) = result {
                    tracing::warn!(tenant = %name, error = %e, "geofence events delivered without being logged");
                }
                if let Some(ts) = self.tenants.get_mut(&name) {
                    if let Some(o) = ts.outq.iter_mut().find(|o| o.waiting == Some(tag)) {
                        o.waiting = None;
                    }
                    deliver(ctx, &name, ts);
                }
            }
            (Pending::Positions, StoreResult::GeoDone { result, .. }) => {
                if let Err(e) = result {
                    tracing::warn!(tenant = %name, error = %e, "positions not stored");
                }
            }
            (Pending::Fence { to, change }, StoreResult::GeoDone { result, .. }) => {
                self.fence_done(ctx, &name, to, change, result);
            }
            (p, r) => tracing::error!(?p, ?r, "geofencing storage result does not match its request"),
        }
    }

    fn fence_done(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        name: &Arc<str>,
        to: ReplyTo,
        change: FenceChange,
        result: Result<(), Arc<StoreError>>,
    ) {
        let now = now_ms();
        let Some(ts) = self.tenants.get_mut(name) else { return };
        let mut fired = std::mem::take(&mut self.fired);
        fired.clear();
        match change {
            FenceChange::Put(def, create) => {
                ts.changing.remove(&def.id);
                ts.creating -= usize::from(create);
                if result.is_err() {
                    to.error(ctx, name, "storage failed");
                } else {
                    let reply = format!(r#"{{"fence":{}}}"#, def.json);
                    ts.t.put_fence(*def, now, &mut fired);
                    to.ok(ctx, name, &reply);
                }
            }
            FenceChange::Delete(id) => {
                ts.changing.remove(&id);
                if result.is_err() {
                    to.error(ctx, name, "storage failed");
                } else {
                    ts.t.delete_fence(&id);
                    to.ok(ctx, name, "{}");
                }
            }
        }
        recount(ctx, ts);
        self.emit(ctx, name, &fired, now);
        self.fired = fired;
    }

    /// Once a second: fire due dwell timers, write positions behind, let idle tenants go (in
    /// cluster mode, answer forwarded pushes whose owner did not answer in time).
    pub fn tick(&mut self, ctx: &mut OwnerCtx<'_>) {
        self.cluster_tick(ctx);
        let now = now_ms();
        let names: Vec<Arc<str>> = self.tenants.keys().cloned().collect();
        for name in names {
            let ts = self.tenants.get_mut(&name).expect("listed");
            if ts.loading.is_some() {
                continue;
            }
            if ts.cluster.as_ref().is_none_or(|c| c.owns()) {
                let mut fired = std::mem::take(&mut self.fired);
                fired.clear();
                ts.t.due_dwells(now, &mut fired);
                self.emit(ctx, &name, &fired, now);
                self.fired = fired;
                self.flush_positions(ctx, &name);
            }
            let ts = self.tenants.get(&name).expect("listed");
            if ts.members.is_empty()
                && ts.inflight == 0
                && ts.outq.is_empty()
                && ts.cluster.as_ref().is_none_or(|c| c.idle())
            {
                let ts = self.tenants.remove(&name).expect("listed");
                WorkerStats::sub(&ctx.stats.geo_tenants, 1);
                WorkerStats::sub(&ctx.stats.geo_fences, ts.counted.0);
                WorkerStats::sub(&ctx.stats.geo_objects, ts.counted.1);
                if let (Some(c), Some(ct)) = (ctx.cluster, ts.cluster) {
                    ct.own.unloaded(c, name);
                }
            }
        }
    }

    /// The server is draining: write every position behind now.
    pub fn drain(&mut self, ctx: &mut OwnerCtx<'_>) {
        let names: Vec<Arc<str>> = self.tenants.keys().cloned().collect();
        for name in names {
            self.flush_positions(ctx, &name);
        }
    }

    fn flush_positions(&mut self, ctx: &mut OwnerCtx<'_>, name: &Arc<str>) {
        let Some(ts) = self.tenants.get_mut(name) else { return };
        if ts.loading.is_some() {
            return;
        }
        let rows = ts.t.take_dirty();
        if rows.is_empty() {
            return;
        }
        let tenant = name.clone();
        if let Err((_, e)) =
            self.submit(ctx, name, Pending::Positions, |tag| StoreRequest::GeoPositions { tenant, rows, tag })
        {
            tracing::warn!(tenant = %name, error = %e, "positions not written behind");
        }
    }
}

/// Puts the stored state in place of the tenant's (live queries end: they refer to the old one).
fn restore(ctx: &mut OwnerCtx<'_>, name: &Arc<str>, ts: &mut TenantState, state: GeoState) {
    let limits = Limits { max_vertices: usize::MAX };
    let (t, skipped) = Tenant::restore(state, ctx.cfg.geo_history, |json| {
        let v = serde_json::from_str(json).map_err(|e| e.to_string())?;
        super::fence::parse(&v, limits)
    });
    for why in skipped {
        tracing::warn!(tenant = %name, why, "stored geofencing data skipped");
    }
    ts.t = t;
    ts.queries.clear();
    ts.query_owner.clear();
    recount(ctx, ts);
}

/// Applies one position report; `Err` is the reason it was refused.
fn locate(
    ctx: &mut OwnerCtx<'_>,
    t: &mut Tenant,
    access: &Access,
    loc: Loc,
    now: u64,
    fired: &mut Vec<Fired>,
) -> Result<Located, String> {
    if !access.may_move(&loc.id) {
        return Err(format!("not allowed to move {:?}", &*loc.id));
    }
    let props = match loc.props.as_deref().map(Props::parse) {
        Some(None) => return Err("props must be a JSON object".into()),
        Some(p) => p,
        None => None,
    };
    match t.locate(&loc.id, loc.fix, props, ctx.cfg.geo_max_objects, now, fired) {
        Located::Applied => {
            WorkerStats::add(&ctx.stats.geo_updates, 1);
            Ok(Located::Applied)
        }
        Located::OutOfOrder => {
            WorkerStats::add(&ctx.stats.geo_out_of_order, 1);
            Ok(Located::OutOfOrder)
        }
        Located::TooManyObjects => {
            Err(format!("the tenant tracks {} objects, its limit", ctx.cfg.geo_max_objects))
        }
    }
}

/// Sends the events at the front of the queue whose log write is done, in order: to this node's
/// subscribers and query holders, and in cluster mode, in one message per step and node, to the
/// other nodes'.
fn deliver(ctx: &mut OwnerCtx<'_>, name: &Arc<str>, ts: &mut TenantState) {
    while ts.outq.front().is_some_and(|o| o.waiting.is_none()) {
        let out = ts.outq.pop_front().expect("checked");
        let mut published = cluster::Batch::default();
        for (to, frame) in out.events {
            match to {
                To::Query(Endpoint { node: None, conn }) => {
                    ctx.out.send(conn.worker(), Msg::ToConn { conn, frame });
                }
                To::Query(Endpoint { node: Some(node), conn }) => published.query(node, conn, frame),
                To::Fence(fence) => {
                    WorkerStats::add(&ctx.stats.geo_events, 1);
                    to_subscribers(ctx, ts, &fence, &frame);
                    if ctx.cluster.is_some() {
                        published.fence(fence, frame);
                    }
                }
            }
        }
        published.send(ctx, name);
    }
}

/// Sends an event of `fence` to this node's members subscribed to it.
fn to_subscribers(ctx: &mut OwnerCtx<'_>, ts: &TenantState, fence: &str, frame: &Frame) {
    let mut per_worker: Vec<Vec<ConnId>> = vec![Vec::new(); ctx.out.workers()];
    for &c in &ts.subs_all {
        per_worker[c.worker()].push(c);
    }
    if let Some(subs) = ts.subs.get(fence) {
        for &c in subs.iter().filter(|c| !ts.subs_all.contains(c)) {
            per_worker[c.worker()].push(c);
        }
    }
    for (w, conns) in per_worker.into_iter().enumerate() {
        if !conns.is_empty() {
            ctx.out.send(w, Msg::ToConns { conns, frame: frame.clone() });
        }
    }
}

/// Updates whose events a tenant holds for in-order delivery behind log writes not yet durable; past
/// this, location updates are refused as overloaded.
const MAX_WAITING_STEPS: usize = 65_536;

/// Live queries one member may hold.
const MAX_QUERIES: usize = 10;

/// Fence ids one member may subscribe to one by one; beyond, `"*"` is the way.
const MAX_SUBSCRIBED: usize = 10_000;

fn subscribe(ts: &mut TenantState, conn: ConnId, fences: Fences, on: bool) -> Result<(), String> {
    let Some(m) = ts.members.get_mut(&conn) else { return Ok(()) };
    match (fences, on) {
        (Fences::All, true) => {
            ts.subs_all.insert(conn);
        }
        (Fences::All, false) => {
            ts.subs_all.remove(&conn);
            for id in m.fences.drain() {
                drop_sub(&mut ts.subs, &id, conn);
            }
        }
        (Fences::Ids(ids), true) => {
            if m.fences.len() + ids.len() > MAX_SUBSCRIBED {
                return Err(format!(
                    "a member subscribes to at most {MAX_SUBSCRIBED} fences by id; subscribe to \"*\" instead"
                ));
            }
            for id in ids {
                ts.subs.entry(id.clone()).or_default().insert(conn);
                m.fences.insert(id);
            }
        }
        (Fences::Ids(ids), false) => {
            for id in ids {
                if m.fences.remove(&id) {
                    drop_sub(&mut ts.subs, &id, conn);
                }
            }
        }
    }
    Ok(())
}

/// Forgets what a member that left had asked for: subscriptions and live queries.
fn unsubscribe_all(ts: &mut TenantState, conn: ConnId, m: &Member) {
    ts.subs_all.remove(&conn);
    for id in &m.fences {
        drop_sub(&mut ts.subs, id, conn);
    }
    drop_queries(ts, &Endpoint { node: None, conn });
}

/// Ends the live queries of one holder.
fn drop_queries(ts: &mut TenantState, who: &Endpoint) {
    for (_, q) in ts.queries.remove(who).unwrap_or_default() {
        ts.t.drop_query(q);
        ts.query_owner.remove(&q);
    }
}

/// Frames for what the live queries saw, each to the query's connection.
fn query_frames(ts: &mut TenantState, name: &str) -> Vec<(To, Frame)> {
    let mut out = Vec::new();
    for e in std::mem::take(&mut ts.t.query_events) {
        let Some((who, key)) = ts.query_owner.get(&e.query) else { continue };
        let o = ts.t.object(e.object);
        let payload = format!(
            r#"{{"query":{},"id":{},"lat":{},"lon":{},"ts":{},"dist":{}}}"#,
            json_str(key),
            json_str(&o.name),
            o.fix.pos.lat,
            o.fix.pos.lon,
            o.fix.ts,
            round_m(e.dist)
        );
        out.push((
            To::Query(who.clone()),
            text_frame(&wire::encode(None, None, name, e.kind.event(), &payload)),
        ));
    }
    out
}

fn drop_sub(subs: &mut HashMap<Arc<str>, HashSet<ConnId>>, id: &str, conn: ConnId) {
    if let Some(set) = subs.get_mut(id) {
        set.remove(&conn);
        if set.is_empty() {
            subs.remove(id);
        }
    }
}

/// Brings the worker's fence and object gauges up to date with this tenant.
fn recount(ctx: &mut OwnerCtx<'_>, ts: &mut TenantState) {
    let now = (ts.t.fence_count() as u64, ts.t.object_count() as u64);
    let (f, o) = ts.counted;
    WorkerStats::add(&ctx.stats.geo_fences, now.0.wrapping_sub(f));
    WorkerStats::add(&ctx.stats.geo_objects, now.1.wrapping_sub(o));
    ts.counted = now;
}

/// Makes a connection of this node a member, subscribed to `fences`, and tells it `reply`.
#[allow(clippy::too_many_arguments)] // The parts of a join; a struct would only repeat GeoMsg::Join.
fn admit(
    ctx: &mut OwnerCtx<'_>,
    name: &Arc<str>,
    ts: &mut TenantState,
    conn: ConnId,
    join_ref: JoinRef,
    msg_ref: Option<Box<str>>,
    access: Access,
    fences: Option<Fences>,
    reply: &str,
) {
    let member = Member { join_ref, access, fences: HashSet::new() };
    if let Some(old) = ts.members.insert(conn, member) {
        unsubscribe_all(ts, conn, &old);
    }
    if let Some(f) = fences {
        // At most a thousand ids arrive with a join: within the bound.
        let _ = subscribe(ts, conn, f, true);
    }
    joined(ctx, name, conn, join_ref, msg_ref, true, reply);
}

/// Tells the joiner's worker how its join ended, with the reply to send.
fn joined(
    ctx: &mut OwnerCtx<'_>,
    name: &Arc<str>,
    conn: ConnId,
    join_ref: JoinRef,
    msg_ref: Option<Box<str>>,
    ok: bool,
    response: &str,
) {
    let status = if ok { "ok" } else { "error" };
    let reply = wire::encode_reply(Some(&join_ref), msg_ref.as_deref(), name, status, response);
    let frames = vec![text_frame(&reply)];
    ctx.out.send(
        conn.worker(),
        Msg::Joined { conn, topic: name.clone(), join_ref, ok, presence: false, frames },
    );
}

/// Answers a join or push that cannot be served.
fn refuse(ctx: &mut OwnerCtx<'_>, name: &Arc<str>, msg: GeoMsg, reason: &str) {
    let response = serde_json::json!({ "reason": reason }).to_string();
    match msg {
        GeoMsg::Join { conn, join_ref, msg_ref, .. } => {
            joined(ctx, name, conn, join_ref, msg_ref, false, &response)
        }
        GeoMsg::Push { conn, join_ref, msg_ref, .. } => {
            ReplyTo::Local { conn, join_ref, msg_ref }.error(ctx, name, reason)
        }
        GeoMsg::Leave { .. } => {}
    }
}

fn overloaded(e: &SubmitError) -> &'static str {
    match e {
        SubmitError::Full => "overloaded",
        SubmitError::Closed => "shutting down",
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// `{"objects":[{id, lat, lon, ts, dist}, ...]}` for objects with their distances.
fn objects_json(t: &Tenant, objects: &[(Ix, f64)]) -> String {
    let mut out = String::from(r#"{"objects":["#);
    for (i, (o, dist)) in objects.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let o = t.object(*o);
        let (lat, lon, ts, id) = (o.fix.pos.lat, o.fix.pos.lon, o.fix.ts, json_str(&o.name));
        let _ = write!(out, r#"{{"id":{id},"lat":{lat},"lon":{lon},"ts":{ts},"dist":{}}}"#, round_m(*dist));
    }
    out.push_str("]}");
    out
}

/// Distances to the centimetre.
fn round_m(m: f64) -> f64 {
    (m * 100.0).round() / 100.0
}

/// `"lat":..,"lon":..,"ts":..` and speed and heading when known.
fn fix_json(out: &mut String, f: &Fix) {
    let _ = write!(out, r#""lat":{},"lon":{},"ts":{}"#, f.pos.lat, f.pos.lon, f.ts);
    if let Some(s) = f.speed {
        let _ = write!(out, r#","speed":{s}"#);
    }
    if let Some(h) = f.heading {
        let _ = write!(out, r#","heading":{h}"#);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;
    use crate::mailbox::{Mailbox, Outbox};
    use crate::store::{self, testing::Scripted};
    use crate::topics::geo::detect::LatLon;
    use crate::topics::geo::fence::{self, Limits};

    #[test]
    fn events_held_behind_an_unfinished_log_write_are_bounded() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (mailbox, _inboxes) = Mailbox::new(vec![waker], 1 << 16);
        // Storage results are dropped: the first log write never reports back, as when storage stalls.
        let (handle, storage) = store::spawn(Box::new(Scripted::default()), 64, Box::new(|_, _| {}));
        let cfg = ServeArgs::default().resolve().unwrap();
        let stats = WorkerStats::default();
        let mut out = Outbox { me: 0, mailbox, local: Default::default(), dropped: 0 };
        let mut ctx = OwnerCtx { out: &mut out, store: &handle, cfg: &cfg, stats: &stats, cluster: None };
        let mut geo = Geo::new(0);
        let tenant: Arc<str> = "geo:slow".into();
        let conn = ConnId::new(0, 1, 7);
        let join_ref = JoinRef::new("\"1\"").unwrap();
        let join = GeoMsg::Join {
            tenant: tenant.clone(),
            conn,
            join_ref,
            msg_ref: None,
            access: Access::Open,
            fences: None,
        };
        geo.on_msg(&mut ctx, join);
        geo.on_store(
            &mut ctx,
            StoreResult::GeoLoaded { tenant: tenant.clone(), tag: 1, result: Ok(GeoState::default()) },
        );
        let v = serde_json::json!({"id": "zone", "geometry": {"type": "Point", "coordinates": [2.35, 48.85], "radius": 1000},
            "detect": ["enter", "inside"]});
        let def = fence::parse(&v, Limits { max_vertices: 100 }).unwrap();
        let push = |op| GeoMsg::Push { tenant: tenant.clone(), conn, join_ref, msg_ref: None, op, raw: None };
        geo.on_msg(&mut ctx, push(Op::FencePut { def, create: true }));
        geo.on_store(&mut ctx, StoreResult::GeoDone { tenant: tenant.clone(), tag: 2, result: Ok(()) });
        let at = |i: usize| Loc {
            id: "car".into(),
            fix: Fix { pos: LatLon::new(48.85, 2.35).unwrap(), ts: i as f64, speed: None, heading: None },
            props: None,
        };
        // The first update enters (logged, never acked); every later one is an `inside` queued behind it.
        for i in 0..MAX_WAITING_STEPS {
            geo.on_msg(&mut ctx, push(Op::Location(at(i))));
        }
        ctx.out.local.clear();
        assert_eq!(geo.tenants[&tenant].outq.len(), MAX_WAITING_STEPS);
        geo.on_msg(&mut ctx, push(Op::Location(at(MAX_WAITING_STEPS))));
        let replies: Vec<String> = std::iter::from_fn(|| ctx.out.local.pop_front())
            .filter_map(|m| match m {
                Msg::ToConn { frame, .. } => Some(String::from_utf8_lossy(&frame).into_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(replies.len(), 1);
        assert!(replies[0].contains("overloaded: geofence events are waiting for storage"), "{}", replies[0]);
        assert_eq!(geo.tenants[&tenant].outq.len(), MAX_WAITING_STEPS, "nothing more was queued");
        drop(handle);
        storage.join().unwrap();
    }
}
