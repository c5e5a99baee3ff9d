//! Wallets and the private `user:<name>` topic.
//!
//! A user's wallet ([`ledger::Ledger`]) lives on the owner worker of its topic `user:<name>` and
//! persists as the journal stream `wallet/<name>`: every operation that changes it is journaled, and
//! loading replays the stream. Other families ask for funds with [`WalletMsg::Op`] (reserve a stake,
//! release or settle it) and get the outcome through a [`Reply`] run on the wallet's worker once the
//! operation is durable. Operations on one wallet are journaled one at a time, in arrival order, so
//! what is stored is always a prefix of what was applied.
//!
//! `user:<name>` may be joined by `<name>` only. Its subscribers get `balance` after every change and
//! the events other families address to the user (a bet's states, an order's fills). A member whose
//! join carried a token with the `operator` grant (any member when the server runs without a secret)
//! may push `credit` to fund any user's wallet.

pub mod ledger;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::Value;

use self::ledger::{Applied, Ledger, Op, Refusal};
use super::journal::{InFlight, Request};
use super::{fan_out, text_frame, OwnerCtx, Push, TopicMsg, MAX_QUEUED_WHILE_LOADING};
use crate::mailbox::{ConnId, Msg};
use crate::phoenix::JoinRef;
use crate::runtime::Ctx;
use crate::store::{log_stream, LogEntry, StoreRequest, StoreResult};
use crate::wire::phoenix as wire;

/// What a user's private topic starts with.
pub const PREFIX: &str = "user:";

/// The journal family of wallets.
pub const FAMILY: &str = "wallet";

/// Largest amount one operation may carry, in minor units (10^15): far below `u64::MAX`, so sums of
/// many amounts stay exact in JSON clients that read numbers as doubles (2^53 ≈ 9·10^15).
pub const MAX_AMOUNT: u64 = 1_000_000_000_000_000;

/// Longest client request id, in bytes.
pub const MAX_REQ_ID: usize = 64;

/// Entries after which a wallet's stream is compacted into a snapshot.
const SNAPSHOT_EVERY: u64 = 64;

/// A wallet without members and work is dropped from memory after this long.
const IDLE: Duration = Duration::from_secs(30);

/// The topic of `user`'s wallet and private events.
pub fn topic(user: &str) -> Arc<str> {
    format!("{PREFIX}{user}").into()
}

/// A positive integer amount of at most [`MAX_AMOUNT`], from a JSON value.
pub fn parse_amount(v: Option<&Value>) -> Result<u64, String> {
    match v.and_then(Value::as_u64) {
        Some(a) if (1..=MAX_AMOUNT).contains(&a) => Ok(a),
        _ => Err(format!("amount must be an integer from 1 to {MAX_AMOUNT} (minor units)")),
    }
}

/// A client request id: 1 to [`MAX_REQ_ID`] bytes of printable characters.
pub fn parse_req_id(v: Option<&Value>) -> Result<&str, String> {
    match v.and_then(Value::as_str) {
        Some(s) if (1..=MAX_REQ_ID).contains(&s.len()) && !s.chars().any(char::is_control) => Ok(s),
        _ => Err(format!("req_id must be a string of 1 to {MAX_REQ_ID} printable bytes")),
    }
}

/// Why a wallet operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// The ledger refused it; nothing changed.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// Storage failed or is overloaded; the wallet reloads what is stored. A retry is safe.
    #[error("{0}")]
    Storage(String),
}

/// The outcome of an operation, delivered on the wallet's worker once the operation is durable (or
/// known not to need journaling).
pub type Outcome = Result<Applied, WalletError>;

/// A callback taking an operation's outcome.
type ReplyFn = Box<dyn FnOnce(&mut OwnerCtx<'_>, &Outcome) + Send>;

/// What to do with an operation's outcome, run on the wallet's owner worker.
pub struct Reply(ReplyFn);

impl Reply {
    pub fn new(f: impl FnOnce(&mut OwnerCtx<'_>, &Outcome) + Send + 'static) -> Self {
        Reply(Box::new(f))
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reply")
    }
}

/// Work for a wallet's owner. `topic` is always `user:<name>`.
#[derive(Debug)]
pub enum WalletMsg {
    Join {
        topic: Arc<str>,
        conn: ConnId,
        join_ref: JoinRef,
        msg_ref: Option<Box<str>>,
        operator: bool,
    },
    Leave {
        topic: Arc<str>,
        conn: ConnId,
        join_ref: JoinRef,
    },
    /// A push on the topic by one of its members.
    Push {
        topic: Arc<str>,
        conn: ConnId,
        join_ref: JoinRef,
        msg_ref: Option<Box<str>>,
        event: Box<str>,
        payload: Value,
    },
    /// Apply an operation; `reply` gets the outcome.
    Op {
        topic: Arc<str>,
        op: Op,
        reply: Option<Reply>,
    },
    /// Send an event to the user's subscribers (a bet's or order's state).
    Notify {
        topic: Arc<str>,
        event: Box<str>,
        payload_json: Box<str>,
    },
}

impl WalletMsg {
    fn topic(&self) -> &Arc<str> {
        match self {
            WalletMsg::Join { topic, .. }
            | WalletMsg::Leave { topic, .. }
            | WalletMsg::Push { topic, .. }
            | WalletMsg::Op { topic, .. }
            | WalletMsg::Notify { topic, .. } => topic,
        }
    }
}

/// Send `op` to `user`'s wallet; `reply` runs on the wallet's worker with the outcome.
pub fn send_op(out: &mut crate::mailbox::Outbox, user: &str, op: Op, reply: Option<Reply>) {
    let topic = topic(user);
    let owner = out.owner(&topic);
    out.send(owner, Msg::Topic(TopicMsg::Wallet(WalletMsg::Op { topic, op, reply })));
}

/// Send an event to `user`'s private topic.
pub fn notify(out: &mut crate::mailbox::Outbox, user: &str, event: &str, payload_json: String) {
    let topic = topic(user);
    let owner = out.owner(&topic);
    let msg = WalletMsg::Notify { topic, event: event.into(), payload_json: payload_json.into() };
    out.send(owner, Msg::Topic(TopicMsg::Wallet(msg)));
}

#[derive(Debug)]
struct Member {
    join_ref: JoinRef,
    operator: bool,
}

/// A wallet on its owner worker.
#[derive(Debug)]
struct Wallet {
    stream: Arc<str>,
    ledger: Ledger,
    /// Seq of the last journaled entry, and of the stored snapshot.
    last_seq: u64,
    snapshot_seq: u64,
    /// Loading, or an append in flight: new work waits here, in order.
    busy: bool,
    queue: VecDeque<WalletMsg>,
    /// The operation whose append is in flight and who waits for it.
    inflight: Option<(Op, Option<Reply>)>,
    members: HashMap<ConnId, Member>,
    per_worker: Vec<u32>,
    idle_since: Instant,
}

/// Every wallet this worker owns.
#[derive(Debug)]
pub struct Wallets {
    me: usize,
    wallets: HashMap<Arc<str>, Wallet>,
    journal: InFlight,
}

impl Wallets {
    pub fn new(me: usize) -> Self {
        Wallets { me, wallets: HashMap::new(), journal: InFlight::default() }
    }

    /// A message for a wallet this worker owns.
    pub fn on_msg(&mut self, ctx: &mut OwnerCtx<'_>, msg: WalletMsg) {
        let topic = msg.topic().clone();
        if !self.wallets.contains_key(&topic) {
            match msg {
                WalletMsg::Leave { .. } | WalletMsg::Notify { .. } => return,
                _ => self.load(ctx, &topic),
            }
        }
        let Some(w) = self.wallets.get_mut(&topic) else {
            return refuse(ctx, msg, "storage is overloaded");
        };
        w.idle_since = Instant::now();
        match msg {
            // Neither depends on the balance: never held up behind storage.
            WalletMsg::Leave { conn, join_ref, .. } => {
                if w.members.get(&conn).is_some_and(|m| m.join_ref == join_ref) {
                    w.members.remove(&conn);
                    w.per_worker[conn.worker()] -= 1;
                }
            }
            WalletMsg::Notify { event, payload_json, .. } => {
                let text = wire::encode(None, None, &topic, &event, &payload_json);
                fan_out(ctx, &w.per_worker, &topic, text_frame(&text), None);
            }
            msg if w.busy => {
                if w.queue.len() < MAX_QUEUED_WHILE_LOADING {
                    w.queue.push_back(msg);
                } else {
                    refuse(ctx, msg, "overloaded");
                }
            }
            msg => self.apply(ctx, &topic, msg),
        }
    }

    fn load(&mut self, ctx: &mut OwnerCtx<'_>, topic: &Arc<str>) {
        let user = topic.strip_prefix(PREFIX).unwrap_or(topic);
        let stream = log_stream(FAMILY, user);
        let tag = self.journal.track(topic, Request::Load);
        if ctx.store.submit(self.me, StoreRequest::LogLoad { stream: stream.clone(), tag }).is_err() {
            self.journal.cancel(tag);
            return;
        }
        let wallet = Wallet {
            stream,
            ledger: Ledger::default(),
            last_seq: 0,
            snapshot_seq: 0,
            busy: true,
            queue: VecDeque::new(),
            inflight: None,
            members: HashMap::new(),
            per_worker: vec![0; ctx.out.workers()],
            idle_since: Instant::now(),
        };
        self.wallets.insert(topic.clone(), wallet);
    }

    /// Handle one message on a wallet that is not busy.
    fn apply(&mut self, ctx: &mut OwnerCtx<'_>, topic: &Arc<str>, msg: WalletMsg) {
        let Some(w) = self.wallets.get_mut(topic) else { return };
        match msg {
            WalletMsg::Join { conn, join_ref, msg_ref, operator, .. } => {
                if w.members.insert(conn, Member { join_ref, operator }).is_none() {
                    w.per_worker[conn.worker()] += 1;
                }
                let reply =
                    wire::encode_reply(Some(&join_ref), msg_ref.as_deref(), topic, "ok", &balance_json(w));
                let frames = vec![text_frame(&reply)];
                let joined =
                    Msg::Joined { conn, topic: topic.clone(), join_ref, ok: true, presence: false, frames };
                ctx.out.send(conn.worker(), joined);
            }
            WalletMsg::Push { conn, join_ref, msg_ref, event, payload, .. } => {
                let push = PushOrigin { conn, join_ref, msg_ref, topic: topic.clone() };
                let Some(member) = w.members.get(&conn).filter(|m| m.join_ref == join_ref) else {
                    return push.error(ctx, "not joined");
                };
                match &*event {
                    "balance" => push.reply(ctx, "ok", &balance_json(w)),
                    "credit" if !member.operator => push.error(ctx, "credit needs an operator token"),
                    "credit" => credit(ctx, push, &payload),
                    other => push.error(ctx, &format!("unknown event {other:?}")),
                }
            }
            WalletMsg::Op { op, reply, .. } => match w.ledger.apply(&op) {
                Ok(Applied::Changed) => {
                    w.last_seq += 1;
                    let entry = LogEntry {
                        stream: w.stream.clone(),
                        seq: w.last_seq,
                        data: serde_json::to_vec(&op).expect("an op serialises").into(),
                    };
                    w.busy = true;
                    w.inflight = Some((op, reply));
                    let tag = self.journal.track(topic, Request::Append);
                    if ctx.store.submit(self.me, StoreRequest::LogAppend { entry, tag }).is_err() {
                        self.journal.cancel(tag);
                        self.failed(ctx, topic, "storage is overloaded");
                    }
                }
                outcome => {
                    if let Some(reply) = reply {
                        (reply.0)(ctx, &outcome.map_err(WalletError::from));
                    }
                }
            },
            WalletMsg::Leave { .. } | WalletMsg::Notify { .. } => {}
        }
    }

    /// The in-flight append failed or could not be queued: answer its requester and reload what is
    /// stored, which is the state before it (or with it, if only the answer was lost).
    fn failed(&mut self, ctx: &mut OwnerCtx<'_>, topic: &Arc<str>, why: &str) {
        let Some(w) = self.wallets.get_mut(topic) else { return };
        if let Some((_, Some(reply))) = w.inflight.take() {
            (reply.0)(ctx, &Err(WalletError::Storage(why.into())));
        }
        let tag = self.journal.track(topic, Request::Load);
        let w = self.wallets.get_mut(topic).expect("present above");
        w.busy = true;
        let stream = w.stream.clone();
        if ctx.store.submit(self.me, StoreRequest::LogLoad { stream, tag }).is_err() {
            self.journal.cancel(tag);
            // Nothing can be trusted in memory and nothing can be read: forget the wallet.
            let w = self.wallets.remove(topic).expect("present above");
            for msg in w.queue {
                refuse(ctx, msg, "storage is overloaded");
            }
            for conn in w.members.keys() {
                let close = wire::encode(None, None, topic, "phx_error", "{}");
                ctx.to_conn(*conn, &close);
            }
        }
    }

    /// A storage result for a wallet of this worker.
    pub fn on_store(&mut self, ctx: &mut OwnerCtx<'_>, result: StoreResult) {
        let Some((topic, pending)) = self.journal.take(&result) else { return };
        match (pending, result) {
            (Request::Load, StoreResult::LogLoaded { result, .. }) => {
                let Some(w) = self.wallets.get_mut(&topic) else { return };
                let loaded = result.map_err(|e| e.to_string()).and_then(|state| {
                    let snapshot_seq = state.snapshot.as_ref().map_or(0, |(seq, _)| *seq);
                    let last = state.entries.last().map_or(snapshot_seq, |(seq, _)| *seq);
                    let ledger = Ledger::replay(
                        state.snapshot.as_ref().map(|(_, s)| &s[..]),
                        state.entries.iter().map(|(_, e)| &e[..]),
                    )?;
                    Ok((ledger, snapshot_seq, last))
                });
                match loaded {
                    Ok((ledger, snapshot_seq, last_seq)) => {
                        (w.ledger, w.snapshot_seq, w.last_seq) = (ledger, snapshot_seq, last_seq);
                        w.busy = false;
                        self.drain(ctx, &topic);
                    }
                    Err(why) => {
                        tracing::error!(wallet = %topic, error = %why, "cannot load wallet");
                        let w = self.wallets.remove(&topic).expect("present above");
                        for msg in w.queue {
                            refuse(ctx, msg, "the wallet cannot be loaded");
                        }
                    }
                }
            }
            (Request::Append, StoreResult::LogAppended { result: Err(e), .. }) => {
                tracing::error!(wallet = %topic, error = %e, "wallet entry not stored");
                self.failed(ctx, &topic, "storage failed");
            }
            (Request::Append, StoreResult::LogAppended { result: Ok(()), .. }) => {
                let Some(w) = self.wallets.get_mut(&topic) else { return };
                w.busy = false;
                if let Some((_, reply)) = w.inflight.take() {
                    let balance = wire::encode(None, None, &topic, "balance", &balance_json(w));
                    fan_out(ctx, &w.per_worker, &topic, text_frame(&balance), None);
                    if let Some(reply) = reply {
                        (reply.0)(ctx, &Ok(Applied::Changed));
                    }
                }
                self.maybe_compact(ctx, &topic);
                self.drain(ctx, &topic);
            }
            (Request::Compact { upto }, StoreResult::LogCompacted { result, .. }) => match result {
                Ok(()) => {
                    if let Some(w) = self.wallets.get_mut(&topic) {
                        w.snapshot_seq = w.snapshot_seq.max(upto);
                    }
                }
                Err(e) => tracing::warn!(wallet = %topic, error = %e, "wallet snapshot not stored"),
            },
            (p, _) => tracing::error!(wallet = %topic, pending = ?p, "wallet storage result does not match"),
        }
    }

    fn maybe_compact(&mut self, ctx: &mut OwnerCtx<'_>, topic: &Arc<str>) {
        let Some(w) = self.wallets.get(topic) else { return };
        if w.last_seq - w.snapshot_seq < SNAPSHOT_EVERY {
            return;
        }
        let (stream, upto, snapshot) = (w.stream.clone(), w.last_seq, w.ledger.snapshot().into());
        let tag = self.journal.track(topic, Request::Compact { upto });
        if ctx
            .store
            .submit(self.me, StoreRequest::LogCompact { stream, upto_seq: upto, snapshot, tag })
            .is_err()
        {
            self.journal.cancel(tag);
        }
    }

    /// Run queued work until the wallet is busy again.
    fn drain(&mut self, ctx: &mut OwnerCtx<'_>, topic: &Arc<str>) {
        while let Some(w) = self.wallets.get_mut(topic) {
            if w.busy {
                return;
            }
            let Some(msg) = w.queue.pop_front() else { return };
            self.apply(ctx, topic, msg);
        }
    }

    /// Once a second: forget idle wallets.
    pub fn tick(&mut self, _ctx: &mut OwnerCtx<'_>) {
        self.wallets.retain(|_, w| w.busy || !w.members.is_empty() || w.idle_since.elapsed() < IDLE);
    }
}

/// Where a push came from, to answer it from any worker.
struct PushOrigin {
    conn: ConnId,
    join_ref: JoinRef,
    msg_ref: Option<Box<str>>,
    topic: Arc<str>,
}

impl PushOrigin {
    fn reply(&self, ctx: &mut OwnerCtx<'_>, status: &str, json: &str) {
        let text =
            wire::encode_reply(Some(&self.join_ref), self.msg_ref.as_deref(), &self.topic, status, json);
        ctx.to_conn(self.conn, &text);
    }
    fn error(&self, ctx: &mut OwnerCtx<'_>, reason: &str) {
        ctx.error_to(self.conn, &self.join_ref, self.msg_ref.as_deref(), &self.topic, reason);
    }
}

/// An operator's `credit {user, amount, req_id}`: fund `user` once per `req_id`.
fn credit(ctx: &mut OwnerCtx<'_>, push: PushOrigin, payload: &Value) {
    let parsed = (|| {
        let user = match payload.get("user").and_then(Value::as_str) {
            Some(u)
                if (1..=crate::auth::MAX_USER_LEN).contains(&u.len()) && !u.chars().any(char::is_control) =>
            {
                u
            }
            _ => return Err("user must name a user".to_string()),
        };
        Ok((
            user.to_owned(),
            parse_amount(payload.get("amount"))?,
            parse_req_id(payload.get("req_id"))?.to_owned(),
        ))
    })();
    let (user, amount, req_id) = match parsed {
        Ok(p) => p,
        Err(why) => return push.error(ctx, &why),
    };
    let op = Op::Credit { key: format!("credit:{req_id}"), amount };
    let target = user.clone();
    let reply = Reply::new(move |ctx, outcome| match outcome {
        Ok(applied) => {
            let json = serde_json::json!({ "user": user, "amount": amount, "req_id": req_id,
                "duplicate": *applied == Applied::AlreadyDone });
            push.reply(ctx, "ok", &json.to_string());
        }
        Err(e) => push.error(ctx, &e.to_string()),
    });
    send_op(ctx.out, &target, op, Some(reply));
}

fn balance_json(w: &Wallet) -> String {
    let held = w.ledger.held();
    serde_json::json!({ "balance": w.ledger.balance, "held": held, "open": w.ledger.holds.len() }).to_string()
}

/// Answer a message that cannot be handled.
fn refuse(ctx: &mut OwnerCtx<'_>, msg: WalletMsg, why: &str) {
    match msg {
        WalletMsg::Join { topic, conn, join_ref, msg_ref, .. } => {
            let response = serde_json::json!({ "reason": why }).to_string();
            let reply = wire::encode_reply(Some(&join_ref), msg_ref.as_deref(), &topic, "error", &response);
            let frames = vec![text_frame(&reply)];
            ctx.out.send(
                conn.worker(),
                Msg::Joined { conn, topic, join_ref, ok: false, presence: false, frames },
            );
        }
        WalletMsg::Push { topic, conn, join_ref, msg_ref, .. } => {
            ctx.error_to(conn, &join_ref, msg_ref.as_deref(), &topic, why)
        }
        WalletMsg::Op { reply: Some(reply), .. } => (reply.0)(ctx, &Err(WalletError::Storage(why.into()))),
        WalletMsg::Op { reply: None, .. } | WalletMsg::Leave { .. } | WalletMsg::Notify { .. } => {}
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinParams {
    #[serde(default)]
    token: Option<String>,
}

/// Whether a join carrying `token` (or none) may act as an operator: without a secret every member
/// may; with one, the token must be valid, minted for `user`, and grant `operator`.
pub fn operator_access(ctx: &Ctx<'_>, token: Option<&str>, user: &str) -> Result<bool, String> {
    match (&ctx.cfg.token_key, token) {
        (None, _) => Ok(true),
        (Some(_), None) => Ok(false),
        (Some(key), Some(token)) => {
            let claims = crate::auth::verify(key, token, SystemTime::now())
                .map_err(|e| format!("grant token: {e}"))?;
            if claims.user != user {
                return Err("grant token: minted for another user".into());
            }
            Ok(claims.grants.operator)
        }
    }
}

/// Families not yet shared across nodes refuse joins in cluster mode.
pub fn refuse_in_cluster(ctx: &Ctx<'_>) -> Result<(), String> {
    match ctx.cfg.cluster {
        Some(_) => Err("not available in cluster mode yet: run this family on a single node".into()),
        None => Ok(()),
    }
}

/// A join of `user:<name>` on the connection's worker: only `<name>` may join.
pub fn on_join(
    ctx: &mut Ctx<'_>,
    topic: &Arc<str>,
    join_ref: JoinRef,
    msg_ref: Option<&str>,
    params_json: &str,
    user: &Arc<str>,
) -> Result<(), String> {
    refuse_in_cluster(ctx)?;
    if topic.strip_prefix(PREFIX) != Some(&**user) {
        return Err("forbidden: user topics are private to their user".into());
    }
    let params: JoinParams =
        serde_json::from_str(params_json).map_err(|e| format!("join params: {e} (known: token)"))?;
    let operator = operator_access(ctx, params.token.as_deref(), user)?;
    let msg = WalletMsg::Join {
        topic: topic.clone(),
        conn: ctx.me,
        join_ref,
        msg_ref: msg_ref.map(Into::into),
        operator,
    };
    let owner = ctx.out.owner(topic);
    ctx.out.send(owner, Msg::Topic(TopicMsg::Wallet(msg)));
    Ok(())
}

/// A push on `user:<name>`.
pub fn on_push(ctx: &mut Ctx<'_>, push: &Push<'_>) {
    let crate::wire::phoenix::Payload::Json(raw) = push.payload else {
        return push.error(ctx, "this topic takes JSON payloads");
    };
    let Ok(payload) = serde_json::from_str::<Value>(raw.get()) else {
        return push.error(ctx, "payload must be a JSON object");
    };
    if !payload.is_object() {
        return push.error(ctx, "payload must be a JSON object");
    }
    let msg = WalletMsg::Push {
        topic: push.topic.clone(),
        conn: ctx.me,
        join_ref: push.join_ref,
        msg_ref: push.msg_ref.map(Into::into),
        event: push.event.into(),
        payload,
    };
    let owner = ctx.out.owner(push.topic);
    ctx.out.send(owner, Msg::Topic(TopicMsg::Wallet(msg)));
}
