//! One worker: a `mio::Poll`, its own `SO_REUSEPORT` listener, a slab of connections, an inbox, a
//! timer wheel and the topic state it owns. Nothing here is shared with other workers except through
//! the mailbox.

mod input;

use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::bufpool::{BufPool, ReadBuf};
use super::conn::{Conn, Phase, Sent, Stage};
use super::subs::LocalTopics;
use super::timer::TimerWheel;
use super::Ctx;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::http::{self, Route};
use crate::mailbox::{ConnId, Inbox, Msg, Outbox};
use crate::metrics::{Registry, WorkerStats};
use crate::phoenix::{self, JoinRef, Session};
use crate::store::StoreHandle;
use crate::topics::{collab, shootout, OwnerCtx, Topics};
use crate::wire::frame::{self, FrameError, Incoming, OpCode};
use crate::wire::handshake;
use crate::wire::phoenix as pwire;

/// Token of the listener; connection tokens are below 2^56.
pub const LISTENER: Token = Token(usize::MAX);
/// Token of the inbox waker.
pub const WAKER: Token = Token(usize::MAX - 1);

/// Seconds to wait for the peer's close frame after sending ours.
const CLOSE_TIMEOUT: u32 = 5;
/// Seconds a draining worker waits for output to flush.
const DRAIN_TIMEOUT: u32 = 3;
/// Bytes read from one connection per turn of the loop. A client that sends faster than the worker
/// handles its frames would otherwise keep the worker reading it forever: no inbox (acks, broadcasts,
/// shutdown), no timers, no other connection. What is left is read on the next turn.
const READ_BUDGET: usize = 256 * 1024;
/// Read buffer size handed out by the pool.
const READ_BUF: usize = 16 * 1024;
/// Inbox messages handled per loop turn before polling sockets again.
const INBOX_BATCH: usize = 4096;

/// Why a connection is being closed, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseWhy {
    Done,
    SlowConsumer,
}

/// Everything a worker owns.
#[derive(Debug)]
pub struct Worker {
    id: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    next_gen: u32,
    pool: BufPool,
    wheel: TimerWheel,
    inbox: Inbox,
    out: Outbox,
    local: LocalTopics,
    topics: Topics,
    cfg: Arc<Config>,
    store: StoreHandle,
    /// The cluster link, in cluster mode only.
    cluster: Option<Cluster>,
    registry: Registry,
    started: Instant,
    now: u32,
    accept_paused_until: Option<u32>,
    draining_until: Option<u32>,
    to_close: Vec<(usize, u32, CloseWhy)>,
    /// Connections (key, generation) that used their read budget with input still waiting: read
    /// again on the next turn, since the edge-triggered poll reports no new readiness for them.
    read_again: Vec<(usize, u32)>,
    replies: Vec<Vec<u8>>,
    anon_counter: u64,
    /// Slots of shootout clients in the local subscriber list, by slab key.
    shootout_slots: std::collections::HashMap<usize, u32>,
    /// Collab connections: their document and slot in its local subscriber list, by slab key.
    collab_slots: std::collections::HashMap<usize, (Arc<str>, u32)>,
    /// The second the collab tick last ran.
    last_topic_tick: u32,
}

/// What a worker needs at start; built by the runtime before threads start.
#[derive(Debug)]
pub struct WorkerParts {
    pub id: usize,
    pub poll: Poll,
    pub listener: TcpListener,
    pub inbox: Inbox,
    pub out: Outbox,
    pub cfg: Arc<Config>,
    pub store: StoreHandle,
    pub cluster: Option<Cluster>,
    pub registry: Registry,
}

impl Worker {
    /// Set up a worker from its parts.
    pub fn new(parts: WorkerParts) -> io::Result<Self> {
        let WorkerParts { id, poll, mut listener, inbox, out, cfg, store, cluster, registry } = parts;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Worker {
            id,
            poll,
            listener: Some(listener),
            conns: Slab::new(),
            next_gen: 0,
            pool: BufPool::new(READ_BUF, 256),
            wheel: TimerWheel::new(),
            inbox,
            out,
            local: LocalTopics::default(),
            topics: Topics::new(id),
            cfg,
            store,
            cluster,
            registry,
            started: Instant::now(),
            now: 0,
            accept_paused_until: None,
            draining_until: None,
            to_close: Vec::new(),
            read_again: Vec::new(),
            replies: Vec::new(),
            anon_counter: 0,
            shootout_slots: std::collections::HashMap::new(),
            collab_slots: std::collections::HashMap::new(),
            last_topic_tick: 0,
        })
    }

    fn stats(&self) -> &WorkerStats {
        &self.registry.workers[self.id]
    }

    /// Run until drained after a shutdown message.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut busy = false;
        loop {
            let timeout = if busy { Duration::ZERO } else { Duration::from_millis(250) };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.now = self.started.elapsed().as_secs() as u32;
            let again = std::mem::take(&mut self.read_again);
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => self.conn_event(
                        t,
                        ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                        ev.is_writable(),
                    ),
                }
            }
            for (key, gen) in again {
                if self.conns.get(key).is_some_and(|c| c.gen == gen) {
                    self.on_readable(key);
                }
            }
            self.drain_local();
            busy = self.drain_inbox() || !self.read_again.is_empty();
            self.close_pending();
            self.tick();
            if let Some(until) = self.draining_until {
                if self.conns.is_empty() || self.now >= until {
                    tracing::debug!(worker = self.id, left = self.conns.len(), "worker drained");
                    return Ok(());
                }
            }
        }
    }

    // ---- accepting ----

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            if self.accept_paused_until.is_some() {
                return;
            }
            if self.conns.len() >= self.cfg.max_connections {
                tracing::warn!(
                    worker = self.id,
                    max = self.cfg.max_connections,
                    "connection limit reached: accepting paused"
                );
                self.pause_accept();
                return;
            }
            match listener.accept() {
                Ok((stream, _addr)) => self.register(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    tracing::warn!(worker = self.id, error = %e, conns = self.conns.len(), "out of file descriptors: accepting paused for 1 s");
                    WorkerStats::add(&self.stats().accept_pauses, 1);
                    self.pause_accept();
                    return;
                }
                Err(e) => {
                    tracing::warn!(worker = self.id, error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn pause_accept(&mut self) {
        if let Some(l) = &mut self.listener {
            let _ = self.poll.registry().deregister(l);
        }
        self.accept_paused_until = Some(self.now + 1);
    }

    fn resume_accept(&mut self) {
        self.accept_paused_until = None;
        if let Some(l) = &mut self.listener {
            if let Err(e) = self.poll.registry().register(l, LISTENER, Interest::READABLE) {
                tracing::error!(worker = self.id, error = %e, "cannot re-register listener");
                return;
            }
        }
        self.accept();
    }

    fn register(&mut self, mut stream: mio::net::TcpStream) {
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.next_gen = (self.next_gen + 1) & ConnId::GEN_MASK;
        let id = ConnId::new(self.id, self.next_gen, key);
        if let Err(e) = self.poll.registry().register(&mut stream, Token(id.token()), Interest::READABLE) {
            tracing::warn!(error = %e, "cannot register connection");
            return;
        }
        entry.insert(Conn::new(stream, self.next_gen, self.now));
        self.wheel.schedule(id.0, self.now + self.cfg.handshake_timeout.as_secs() as u32);
        let s = self.stats();
        WorkerStats::add(&s.accepted, 1);
        WorkerStats::add(&s.connections, 1);
    }

    // ---- connection events ----

    fn conn_id(&self, key: usize) -> ConnId {
        ConnId::new(self.id, self.conns[key].gen, key)
    }

    /// The slab key of a live connection for a token or id, or None if it is stale.
    fn live(&self, token: usize) -> Option<usize> {
        let id = ConnId(token as u64 | ((self.id as u64) << 56));
        let conn = self.conns.get(id.key())?;
        (conn.gen == id.gen()).then_some(id.key())
    }

    fn conn_event(&mut self, token: usize, readable: bool, writable: bool) {
        let Some(key) = self.live(token) else { return };
        if writable {
            self.on_writable(key);
        }
        if readable && self.conns.contains(key) {
            self.on_readable(key);
        }
    }

    fn on_writable(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        match conn.flush() {
            Ok(true) => {
                let token = Token(ConnId::new(self.id, conn.gen, key).token());
                let _ = self.poll.registry().reregister(&mut conn.stream, token, Interest::READABLE);
                if matches!(conn.phase, Phase::Other(Stage::Closing)) {
                    self.remove(key);
                }
            }
            Ok(false) => {}
            Err(_) => self.remove(key),
        }
    }

    fn on_readable(&mut self, key: usize) {
        let mut buf = match self.conns[key].take_rbuf() {
            Some(b) => b,
            None => self.pool.get(),
        };
        let mut open = true;
        let mut read = 0;
        loop {
            if read >= READ_BUDGET {
                self.read_again.push((key, self.conns[key].gen));
                break;
            }
            let want = self.read_want(key, &buf);
            if want == 0 {
                break;
            }
            buf.reserve(want);
            let conn = &mut self.conns[key];
            match conn.stream.read(buf.spare()) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => {
                    buf.end += n;
                    read += n;
                    WorkerStats::add(&self.registry.workers[self.id].bytes_in, n as u64);
                    if !self.process(key, &mut buf) {
                        open = self.conns.contains(key);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    open = false;
                    break;
                }
            }
        }
        if !open || !self.conns.contains(key) {
            self.pool.put(buf);
            if self.conns.contains(key) {
                self.remove(key);
            }
            return;
        }
        if buf.is_empty() {
            self.pool.put(buf);
        } else {
            self.conns[key].io_mut().rbuf = Some(buf);
        }
    }

    fn send_owned(&mut self, key: usize, bytes: Vec<u8>) -> bool {
        self.send_owned_limit(key, bytes, self.cfg.max_outbound_bytes)
    }

    /// Send to one connection; false when it had to be closed.
    fn send_owned_limit(&mut self, key: usize, bytes: Vec<u8>, limit: usize) -> bool {
        let s = &self.registry.workers[self.id];
        WorkerStats::add(&s.frames_out, 1);
        WorkerStats::add(&s.bytes_out, bytes.len() as u64);
        let sent = self.conns[key].send_owned(bytes, limit);
        self.after_send(key, sent)
    }

    fn after_send(&mut self, key: usize, sent: Sent) -> bool {
        match sent {
            Sent::Ok => true,
            Sent::NowBackpressured => {
                let conn = &mut self.conns[key];
                let token = Token(ConnId::new(self.id, conn.gen, key).token());
                let _ = self.poll.registry().reregister(
                    &mut conn.stream,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                );
                true
            }
            Sent::Overflow => {
                WorkerStats::add(&self.stats().slow_consumer_closes, 1);
                tracing::debug!(worker = self.id, key, "slow consumer closed");
                self.remove(key);
                false
            }
            Sent::Failed => {
                self.remove(key);
                false
            }
        }
    }

    /// A protocol violation: send the close code and wait briefly for the peer's close.
    fn fail(&mut self, key: usize, e: &FrameError) {
        WorkerStats::add(&self.stats().protocol_closes, 1);
        tracing::debug!(worker = self.id, key, error = %e, "closing on protocol error");
        self.start_close(key, e.close_code(), &e.to_string());
    }

    /// Start a close handshake we initiate.
    fn start_close(&mut self, key: usize, code: u16, reason: &str) {
        self.detach_session(key);
        let conn = &mut self.conns[key];
        conn.phase = Phase::Other(Stage::AwaitingClose);
        conn.since = self.now;
        conn.take_frag();
        let id = ConnId::new(self.id, conn.gen, key);
        self.wheel.schedule(id.0, self.now + CLOSE_TIMEOUT);
        let frame = frame::close_frame(code, reason);
        self.send_owned(key, frame);
    }

    /// Answer the peer's close and close once it is written.
    fn close_reply(&mut self, key: usize, code: u16) {
        self.detach_session(key);
        let conn = &mut self.conns[key];
        conn.phase = Phase::Other(Stage::Closing);
        conn.since = self.now;
        if self.send_owned(key, frame::close_frame(code, "")) && !self.conns[key].backpressured() {
            self.remove(key);
        }
    }

    fn detach_session(&mut self, key: usize) {
        if matches!(self.conns[key].phase, Phase::Other(Stage::Collab)) {
            if let Some((doc, slot)) = self.collab_slots.remove(&key) {
                self.local.leave(&collab::list_name(&doc), slot);
                let conn = self.conn_id(key);
                collab::send(&mut self.out, collab::CollabMsg::Close { doc, conn });
            }
        }
        if matches!(self.conns[key].phase, Phase::Other(Stage::Shootout)) {
            if let Some(slot) = self.shootout_slots.remove(&key) {
                self.local.leave(shootout::TOPIC, slot);
            }
        }
        let me = self.conn_id(key);
        let Worker { conns, out, local, topics, cfg, store, registry, replies, .. } = self;
        if let Phase::Phoenix(session) = &mut conns[key].phase {
            let mut ctx =
                Ctx { me, out, local, topics, cfg, store, stats: &registry.workers[me.worker()], replies };
            phoenix::on_close(&mut ctx, session);
        }
        self.replies.clear();
    }

    /// Drop a connection now.
    fn remove(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        self.detach_session(key);
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if let Some(buf) = conn.take_rbuf() {
            self.pool.put(buf);
        }
        WorkerStats::sub(&self.stats().connections, 1);
    }

    fn close_pending(&mut self) {
        while let Some((key, gen, why)) = self.to_close.pop() {
            if self.conns.get(key).is_some_and(|c| c.gen == gen) {
                if why == CloseWhy::SlowConsumer {
                    WorkerStats::add(&self.stats().slow_consumer_closes, 1);
                }
                self.remove(key);
            }
        }
    }

    // ---- the inbox ----

    fn drain_local(&mut self) {
        while let Some(msg) = self.out.local.pop_front() {
            self.on_msg(msg);
        }
    }

    /// Handle inbox messages; true if more are waiting than one turn takes.
    fn drain_inbox(&mut self) -> bool {
        self.inbox.notified.store(false, std::sync::atomic::Ordering::Release);
        for _ in 0..INBOX_BATCH {
            match self.inbox.rx.try_recv() {
                Ok(msg) => {
                    self.on_msg(msg);
                    self.drain_local();
                }
                Err(_) => return false,
            }
        }
        true
    }

    fn on_msg(&mut self, msg: Msg) {
        let limit = self.cfg.max_outbound_bytes;
        match msg {
            Msg::Broadcast { topic, frame, except } => {
                let Some(members) = self.local.members(&topic) else {
                    return;
                };
                let s = &self.registry.workers[self.id];
                for key in members.keys() {
                    let conn = &mut self.conns[key];
                    if except == Some(ConnId::new(self.id, conn.gen, key)) {
                        continue;
                    }
                    WorkerStats::add(&s.frames_out, 1);
                    WorkerStats::add(&s.bytes_out, frame.len() as u64);
                    match conn.send_shared(&frame, limit) {
                        Sent::Ok => {}
                        Sent::NowBackpressured => {
                            let token = Token(ConnId::new(self.id, conn.gen, key).token());
                            let _ = self.poll.registry().reregister(
                                &mut conn.stream,
                                token,
                                Interest::READABLE | Interest::WRITABLE,
                            );
                        }
                        Sent::Overflow => self.to_close.push((key, conn.gen, CloseWhy::SlowConsumer)),
                        Sent::Failed => self.to_close.push((key, conn.gen, CloseWhy::Done)),
                    }
                }
            }
            Msg::ToConn { conn, frame } => self.write_to(conn, &frame),
            Msg::ToConns { conns, frame } => {
                for conn in conns {
                    self.write_to(conn, &frame);
                }
            }
            Msg::Joined { conn, topic, join_ref, ok, presence, frames } => {
                self.on_joined(conn, topic, join_ref, ok, presence, frames)
            }
            Msg::Topic(m) => self.with_owner(|topics, ctx| topics.on_msg(ctx, m)),
            Msg::Store(r) => self.with_owner(|topics, ctx| topics.on_store(ctx, r)),
            Msg::Cluster(m) => self.with_owner(|topics, ctx| topics.on_cluster(ctx, m)),
            Msg::CloseConn { conn, code, reason } => {
                if let Some(key) = self.live(conn.token()) {
                    if !matches!(self.conns[key].phase, Phase::Other(Stage::Closing | Stage::AwaitingClose)) {
                        WorkerStats::add(&self.stats().protocol_closes, 1);
                        self.start_close(key, code, &reason);
                    }
                }
            }
            Msg::HttpReply { conn, bytes } => {
                if let Some(key) = self.live(conn.token()) {
                    if matches!(self.conns[key].phase, Phase::Other(Stage::AwaitingReply)) {
                        self.respond_and_close(key, bytes);
                    }
                }
            }
            Msg::Shutdown => self.begin_drain(),
        }
    }

    /// Write a shared frame to one connection of this worker, if it still exists.
    fn write_to(&mut self, conn: ConnId, frame: &crate::mailbox::Frame) {
        let Some(key) = self.live(conn.token()) else {
            return;
        };
        let sent = self.conns[key].send_shared(frame, self.cfg.max_outbound_bytes);
        let s = &self.registry.workers[self.id];
        WorkerStats::add(&s.frames_out, 1);
        WorkerStats::add(&s.bytes_out, frame.len() as u64);
        self.after_send(key, sent);
    }

    /// Run owner-side topic code with what it may touch.
    fn with_owner(&mut self, f: impl FnOnce(&mut Topics, &mut OwnerCtx<'_>)) {
        let Worker { out, store, cfg, registry, topics, id, cluster, .. } = self;
        let mut ctx = OwnerCtx { out, store, cfg, stats: &registry.workers[*id], cluster: cluster.as_ref() };
        f(topics, &mut ctx);
    }

    fn on_joined(
        &mut self,
        conn: ConnId,
        topic: Arc<str>,
        join_ref: JoinRef,
        ok: bool,
        presence: bool,
        frames: Vec<crate::mailbox::Frame>,
    ) {
        let key = self.live(conn.token());
        let session = key.and_then(|k| match &mut self.conns[k].phase {
            Phase::Phoenix(s) => Some(s),
            _ => None,
        });
        let Some(session) = session else {
            if ok {
                self.undo_join(conn, topic, join_ref);
            }
            return;
        };
        let key = key.expect("session implies key");
        if ok {
            if !phoenix::on_joined(session, &mut self.local, key, &topic, &join_ref, presence) {
                self.undo_join(conn, topic, join_ref);
                return;
            }
        } else {
            phoenix::on_join_refused(session, &topic, &join_ref);
        }
        let limit = self.cfg.max_outbound_bytes;
        for f in frames {
            let sent = self.conns[key].send_shared(&f, limit);
            if !self.after_send(key, sent) {
                return;
            }
        }
    }

    fn undo_join(&mut self, conn: ConnId, topic: Arc<str>, join_ref: JoinRef) {
        let owner = self.out.owner(&topic);
        self.out.send(owner, Msg::Topic(crate::topics::leave_msg(topic, conn, join_ref)));
    }

    // ---- time ----

    fn tick(&mut self) {
        if self.accept_paused_until.is_some_and(|t| self.now >= t) && self.draining_until.is_none() {
            self.resume_accept();
        }
        if self.now != self.last_topic_tick {
            self.last_topic_tick = self.now;
            // The outbox counts its drops itself (it has no access to the stats); publish them.
            self.registry.workers[self.id]
                .drops
                .store(self.out.dropped, std::sync::atomic::Ordering::Relaxed);
            self.with_owner(|topics, ctx| topics.tick(ctx));
        }
        let mut due = Vec::new();
        self.wheel.expire(self.now, &mut due);
        for id in due {
            let id = ConnId(id);
            let Some(key) = self.live(id.token()) else {
                continue;
            };
            let conn = &self.conns[key];
            let limit = match conn.phase {
                Phase::Other(Stage::Handshake | Stage::AwaitingReply) => {
                    self.cfg.handshake_timeout.as_secs() as u32
                }
                Phase::Phoenix(_) | Phase::Other(Stage::Echo | Stage::Shootout | Stage::Collab) => {
                    self.cfg.heartbeat_timeout.as_secs() as u32
                }
                Phase::Other(Stage::Closing) | Phase::Other(Stage::AwaitingClose) => CLOSE_TIMEOUT,
            };
            let deadline = conn.since.saturating_add(limit);
            // The clock has whole seconds: `since` may be up to a second old already, so a
            // connection is expired only strictly after its deadline second. Timeouts land
            // between `limit` and `limit + 1` seconds of silence, never before.
            if self.now <= deadline {
                self.wheel.schedule(id.0, deadline + 1);
                continue;
            }
            WorkerStats::add(&self.stats().timeouts, 1);
            match conn.phase {
                Phase::Phoenix(_) | Phase::Other(Stage::Echo | Stage::Shootout | Stage::Collab) => {
                    tracing::debug!(worker = self.id, key, "closing silent connection");
                    self.detach_session(key);
                    self.conns[key].phase = Phase::Other(Stage::Closing);
                    let _ = self.send_owned(key, frame::close_frame(1000, "heartbeat timeout"));
                    self.remove(key);
                }
                _ => self.remove(key),
            }
        }
    }

    // ---- shutdown ----

    fn begin_drain(&mut self) {
        if self.draining_until.is_some() {
            return;
        }
        tracing::info!(worker = self.id, conns = self.conns.len(), "draining");
        self.with_owner(|topics, ctx| topics.drain(ctx));
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.draining_until = Some(self.now + DRAIN_TIMEOUT);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if !self.conns.contains(key) {
                continue;
            }
            match self.conns[key].phase {
                // The close handshake, as for any close the server starts: the client's frames are read
                // and dropped until its close arrives (or the drain times out). Dropping the socket with
                // frames of a busy client still unread would reset the connection, and the client
                // could lose the 1001 and see an abnormal close instead.
                Phase::Phoenix(_) | Phase::Other(Stage::Echo | Stage::Shootout | Stage::Collab) => {
                    self.start_close(key, 1001, "server shutting down");
                }
                Phase::Other(Stage::Handshake | Stage::AwaitingReply) => self.remove(key),
                Phase::Other(Stage::Closing) | Phase::Other(Stage::AwaitingClose) => {}
            }
        }
    }
}
