//! Which node owns a topic, as the topic's home worker on one node sees it, and the requests it
//! forwarded to owners on other nodes. Shared by every kind of topic that needs one owner across
//! the cluster (chat rooms assign `seq`, documents persist updates, geofencing tenants hold their
//! state).
//!
//! **The lease.** One node at a time owns a topic: the node whose id is in the topic's lease key in
//! Redis (`SET NX PX`, renewed by the cluster link while the node lives, see [`super::Cluster::acquire`]).
//! A node asks for the lease when a request needs the owner and nobody is known to own the topic.
//! The node that gets it reads the topic's state from the shared store first ("the head"), so it
//! continues where the previous owner stopped; only then is it ready. Other nodes forward requests
//! to the owner's node channel; a request unanswered within the cluster timeout gets an error, and
//! the owner is looked up again. A request forwarded to a node that turns out not to own the topic
//! is answered "not the owner" (never forwarded again), and its node asks for the lease anew.
//!
//! The owner changes when its node releases the lease (the topic left its memory, or the node shut
//! down), when the node falls silent for the cluster timeout (killed: its lease expires and others
//! declare it down), or when it cannot renew the lease (Redis away for that long).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::{Cluster, Kind};

/// This node's place in a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Nobody known to own it; the next request asks for the lease.
    Unknown,
    /// The lease was asked for.
    Acquiring,
    /// This node holds the lease; `ready` once the head was read from the store.
    Owner { ready: bool },
    /// Another node holds the lease.
    Follower(Arc<str>),
}

/// Where a request that needs the owner goes.
#[derive(Debug)]
pub enum Route<P> {
    /// This node owns the topic and is ready: serve it here.
    Here(P),
    /// Held until the owner is known, or ready.
    Held,
    /// Another node owns the topic: forward it there. A request that came from another node must
    /// not be forwarded again: answer it "not the owner".
    Forward(Arc<str>, P),
    /// Refused with a reason: every request in the list gets it.
    Refused(Vec<P>, &'static str),
}

/// What the answer to a lease request means for the held requests.
#[derive(Debug)]
pub enum Lease<P> {
    /// Not waiting for a lease: nothing to do.
    Ignored,
    /// This node owns the topic now: read the head, then call [`Owned::head_read`].
    ReadHead,
    /// Another node owns it: route these again.
    Reroute(Vec<P>),
    /// Redis could not be asked: refuse these ("cluster unavailable").
    Refused(Vec<P>),
}

/// What the end of the owner's head read means for the held requests.
#[derive(Debug)]
pub enum HeadRead<P> {
    /// The lease was lost while the head loaded: call [`Owned::resolve`] for what is held.
    Stale,
    /// Ready: route these again (they are served here now).
    Ready(Vec<P>),
    /// The read failed and the owner is forgotten: refuse these ("storage failed").
    Failed(Vec<P>),
}

/// A topic's ownership on its home worker, with the requests held until the owner is known and
/// ready. `P` is what a request carries.
#[derive(Debug)]
pub struct Owned<P> {
    role: Role,
    /// Requests waiting for the owner to be known or ready; at most `max_held`.
    held: Vec<P>,
    max_held: usize,
    /// Requests of this topic forwarded and not answered yet.
    forwards: u32,
}

impl<P> Owned<P> {
    /// Nobody known to own the topic; at most `max_held` requests wait for an owner.
    pub fn new(max_held: usize) -> Self {
        Owned { role: Role::Unknown, held: Vec::new(), max_held, forwards: 0 }
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    /// This node holds the lease (ready or not).
    pub fn is_owner(&self) -> bool {
        matches!(self.role, Role::Owner { .. })
    }

    /// This node holds the lease and has read the head.
    pub fn is_ready_owner(&self) -> bool {
        self.role == Role::Owner { ready: true }
    }

    /// Nothing waits on this topic's ownership: it may leave memory (as far as ownership goes).
    pub fn idle(&self) -> bool {
        self.held.is_empty()
            && self.forwards == 0
            && !matches!(self.role, Role::Acquiring | Role::Owner { ready: false })
    }

    /// Route a request that needs the owner.
    pub fn route(&mut self, cluster: &Cluster, topic: &Arc<str>, p: P) -> Route<P> {
        match &self.role {
            Role::Owner { ready: true } => Route::Here(p),
            Role::Follower(owner) => Route::Forward(owner.clone(), p),
            Role::Owner { ready: false } | Role::Acquiring => self.hold(p),
            Role::Unknown => match self.hold(p) {
                Route::Held => self.resolve(cluster, topic),
                refused => refused,
            },
        }
    }

    fn hold(&mut self, p: P) -> Route<P> {
        if self.held.len() >= self.max_held {
            return Route::Refused(vec![p], "overloaded");
        }
        self.held.push(p);
        Route::Held
    }

    /// Requests wait but nobody is known to own the topic: ask for the lease. `Refused` when the
    /// cluster link's queue is full.
    pub fn resolve(&mut self, cluster: &Cluster, topic: &Arc<str>) -> Route<P> {
        if self.role != Role::Unknown || self.held.is_empty() {
            return Route::Held;
        }
        match cluster.acquire(topic.clone()) {
            Ok(()) => {
                self.role = Role::Acquiring;
                Route::Held
            }
            Err(_) => Route::Refused(self.fail(), "cluster unavailable"),
        }
    }

    /// The answer to this node's lease request: the node holding it, `mine` when it is this node.
    pub fn on_lease(&mut self, mine: bool, owner: Option<Arc<str>>) -> Lease<P> {
        if self.role != Role::Acquiring {
            return Lease::Ignored;
        }
        match owner {
            Some(_) if mine => {
                self.role = Role::Owner { ready: false };
                Lease::ReadHead
            }
            Some(owner) => {
                self.role = Role::Follower(owner);
                Lease::Reroute(std::mem::take(&mut self.held))
            }
            None => Lease::Refused(self.fail()),
        }
    }

    /// The owner's head read finished (`ok`) or failed.
    pub fn head_read(&mut self, ok: bool) -> HeadRead<P> {
        if self.role != (Role::Owner { ready: false }) {
            return HeadRead::Stale;
        }
        if ok {
            self.role = Role::Owner { ready: true };
            HeadRead::Ready(std::mem::take(&mut self.held))
        } else {
            HeadRead::Failed(self.fail())
        }
    }

    /// Give up on the held requests (they are returned, to refuse) and forget the owner.
    pub fn fail(&mut self) -> Vec<P> {
        self.role = Role::Unknown;
        std::mem::take(&mut self.held)
    }

    /// The lease could not be renewed: another node may own the topic now.
    pub fn lease_lost(&mut self) {
        if self.is_owner() {
            self.role = Role::Unknown;
        }
    }

    /// `node` is down or said it is not the owner: look the owner up again next time.
    pub fn forget(&mut self, node: &str) {
        if matches!(&self.role, Role::Follower(o) if **o == *node) {
            self.role = Role::Unknown;
        }
    }

    /// A store write failed on the owner: perhaps another node owns the topic now and wrote there.
    /// Ask for the lease again; if it is still this node's, the head is read anew.
    pub fn recheck(&mut self, cluster: &Cluster, topic: &Arc<str>) {
        if self.is_ready_owner() {
            self.role = if cluster.acquire(topic.clone()).is_ok() { Role::Acquiring } else { Role::Unknown };
        }
    }

    /// A request of this topic was forwarded.
    pub fn forwarded(&mut self) {
        self.forwards += 1;
    }

    /// A forwarded request was answered or timed out.
    pub fn answered(&mut self) {
        self.forwards = self.forwards.saturating_sub(1);
    }

    /// The topic left this node's memory: stop listening to it and let another node own it.
    pub fn unloaded(&self, cluster: &Cluster, topic: Arc<str>) {
        if self.is_owner() {
            cluster.release(topic.clone());
        }
        cluster.unsubscribe(topic);
    }
}

/// A request forwarded to an owner node.
#[derive(Debug)]
pub struct Forwarded<P> {
    pub topic: Arc<str>,
    pub owner: Arc<str>,
    pub payload: P,
    deadline: Instant,
}

/// Requests one worker forwarded to owner nodes and not yet answered, by request id; at most
/// [`Forwards::MAX`].
#[derive(Debug)]
pub struct Forwards<P> {
    pending: HashMap<u64, Forwarded<P>>,
    next_id: u64,
}

impl<P> Default for Forwards<P> {
    fn default() -> Self {
        Forwards { pending: HashMap::new(), next_id: 0 }
    }
}

impl<P> Forwards<P> {
    /// Requests one worker may have forwarded and not yet seen answered.
    pub const MAX: usize = 65_536;

    /// Send `body` as a request to `owner`; the answer comes back as a `Reply` envelope with the
    /// same request id, for [`Forwards::answer`]. `Err` gives the payload back when too many are in
    /// flight or the cluster link's queue is full.
    pub fn send(
        &mut self,
        cluster: &Cluster,
        owner: Arc<str>,
        topic: &Arc<str>,
        body: &[u8],
        p: P,
    ) -> Result<(), P> {
        if self.pending.len() >= Self::MAX {
            return Err(p);
        }
        let req_id = self.next_id + 1;
        if cluster.send(&owner, topic, Kind::Request, req_id, body).is_err() {
            return Err(p);
        }
        self.next_id = req_id;
        let deadline = Instant::now() + cluster.timeout();
        self.pending.insert(req_id, Forwarded { topic: topic.clone(), owner, payload: p, deadline });
        Ok(())
    }

    /// The request a reply answers; `None` after its timeout (its sender had an error already).
    pub fn answer(&mut self, req_id: u64) -> Option<Forwarded<P>> {
        self.pending.remove(&req_id)
    }

    /// The requests whose owner did not answer in time, counted as forward timeouts.
    pub fn expired(&mut self, cluster: &Cluster) -> Vec<Forwarded<P>> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        let ids: Vec<u64> =
            self.pending.iter().filter(|(_, f)| f.deadline <= now).map(|(id, _)| *id).collect();
        let expired: Vec<Forwarded<P>> = ids.into_iter().filter_map(|id| self.pending.remove(&id)).collect();
        for f in &expired {
            cluster.count_forward_timeout();
            tracing::warn!(topic = %f.topic, owner = %f.owner, "a forwarded request got no answer from the topic's owner");
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cluster::publisher::Cmd;

    fn topic() -> Arc<str> {
        "room:t".into()
    }

    #[test]
    fn the_first_request_asks_for_the_lease_and_is_served_once_the_head_is_read() {
        let (cluster, pubs, _subs) = Cluster::detached("me", Duration::from_secs(5), 16);
        let mut own = Owned::new(8);
        assert!(matches!(own.route(&cluster, &topic(), 1), Route::Held));
        assert!(matches!(pubs.try_recv(), Ok(Cmd::Acquire { topic }) if &*topic == "room:t"));
        assert!(matches!(own.route(&cluster, &topic(), 2), Route::Held));
        assert!(pubs.try_recv().is_err(), "one lease request at a time");
        assert!(!own.idle());
        assert!(matches!(own.on_lease(true, Some("me".into())), Lease::ReadHead));
        assert!(own.is_owner() && !own.is_ready_owner());
        assert!(matches!(own.route(&cluster, &topic(), 3), Route::Held));
        match own.head_read(true) {
            HeadRead::Ready(held) => assert_eq!(held, [1, 2, 3]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(own.route(&cluster, &topic(), 4), Route::Here(4)));
        assert!(own.idle());
        assert!(matches!(own.on_lease(true, Some("me".into())), Lease::Ignored), "not asked");
    }

    #[test]
    fn another_owner_gets_the_requests_until_it_is_forgotten() {
        let (cluster, pubs, _subs) = Cluster::detached("me", Duration::from_secs(5), 16);
        let mut own = Owned::new(8);
        let _ = own.route(&cluster, &topic(), 1);
        match own.on_lease(false, Some("other".into())) {
            Lease::Reroute(held) => assert_eq!(held, [1]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(own.route(&cluster, &topic(), 2), Route::Forward(o, 2) if &*o == "other"));
        own.forget("someone else");
        assert_eq!(own.role(), &Role::Follower("other".into()));
        own.forget("other");
        assert_eq!(own.role(), &Role::Unknown);
        let _ = pubs.try_recv();
        assert!(matches!(own.route(&cluster, &topic(), 3), Route::Held));
        assert!(matches!(pubs.try_recv(), Ok(Cmd::Acquire { .. })), "asked again");
    }

    #[test]
    fn held_requests_are_bounded_and_refused_when_redis_cannot_be_asked() {
        let (cluster, _pubs, _subs) = Cluster::detached("me", Duration::from_secs(5), 16);
        let mut own = Owned::new(2);
        let _ = own.route(&cluster, &topic(), 1);
        let _ = own.route(&cluster, &topic(), 2);
        assert!(matches!(own.route(&cluster, &topic(), 3), Route::Refused(v, "overloaded") if v == [3]));
        match own.on_lease(false, None) {
            Lease::Refused(held) => assert_eq!(held, [1, 2]),
            other => panic!("{other:?}"),
        }
        assert_eq!(own.role(), &Role::Unknown);
        // A full link queue refuses at once.
        let (full, _pubs, _subs) = Cluster::detached("me", Duration::from_secs(5), 1);
        let mut own = Owned::new(8);
        full.publish("x", Kind::Frame, 0, b"").unwrap();
        assert!(
            matches!(own.route(&full, &topic(), 1), Route::Refused(v, "cluster unavailable") if v == [1])
        );
    }

    #[test]
    fn a_lease_lost_while_the_head_loads_asks_again() {
        let (cluster, pubs, _subs) = Cluster::detached("me", Duration::from_secs(5), 16);
        let mut own = Owned::new(8);
        let _ = own.route(&cluster, &topic(), 1);
        let _ = own.on_lease(true, Some("me".into()));
        own.lease_lost();
        assert!(matches!(own.head_read(true), HeadRead::Stale));
        let _ = pubs.try_recv();
        assert!(matches!(own.resolve(&cluster, &topic()), Route::Held));
        assert!(matches!(pubs.try_recv(), Ok(Cmd::Acquire { .. })));
        assert_eq!(own.role(), &Role::Acquiring);
        // A failed head read gives the held requests back to refuse.
        let _ = own.on_lease(true, Some("me".into()));
        assert!(matches!(own.head_read(false), HeadRead::Failed(v) if v == [1]));
        // A ready owner whose write failed asks for the lease again.
        let _ = own.route(&cluster, &topic(), 2);
        let _ = own.on_lease(true, Some("me".into()));
        let _ = own.head_read(true);
        own.recheck(&cluster, &topic());
        assert_eq!(own.role(), &Role::Acquiring);
    }

    #[test]
    fn forwarded_requests_are_answered_by_id_or_expire() {
        let (cluster, pubs, _subs) = Cluster::detached("me", Duration::ZERO, 16);
        let mut fw = Forwards::default();
        fw.send(&cluster, "owner".into(), &topic(), b"body", "a").unwrap();
        fw.send(&cluster, "owner".into(), &topic(), b"body", "b").unwrap();
        let Ok(Cmd::Publish { channel, payload }) = pubs.try_recv() else { panic!("nothing published") };
        assert_eq!(channel, crate::cluster::envelope::node_channel("owner"));
        let env = crate::cluster::envelope::decode(&payload).unwrap();
        assert_eq!((env.kind, &*env.origin, env.req_id, &*env.body), (Kind::Request, "me", 1, &b"body"[..]));
        assert_eq!(fw.answer(1).map(|f| f.payload), Some("a"));
        assert!(fw.answer(1).is_none(), "answered once");
        let expired: Vec<&str> = fw.expired(&cluster).into_iter().map(|f| f.payload).collect();
        assert_eq!(expired, ["b"]);
        assert_eq!(cluster.stats().forward_timeouts.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(fw.answer(2).is_none());
    }
}
