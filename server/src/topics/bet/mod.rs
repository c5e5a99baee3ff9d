//! `bet:<market>`: live bet markets.
//!
//! A market ([`market::Market`]) lives on the owner worker of its topic and persists as the journal
//! stream `bet/<market>`. Operators (see [`crate::topics::wallet`]) create it and change odds,
//! suspend, resume, settle or void it; every change is broadcast to the topic. A bettor's `place`
//! first reserves the stake in their wallet (a hold named `bet:<market>:<req_id>`), then the market
//! accepts the bet — or refuses it and releases the hold. Settling pays every bet from its hold
//! exactly once: the wallet settles a hold only while it is open, and the market resends payouts
//! until each wallet confirmed (also after a restart, when the settled market loads again).
//!
//! Changes are journaled before anyone hears of them. While one entry is being stored, accepted
//! operations gather for the next one, so a busy market writes groups of operations.

pub mod market;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use self::market::{Bet, BetError, BetOp, Market, MAX_OUTCOMES};
use super::journal::{InFlight, Request};
use super::wallet::{self, ledger::Op, Outcome, Reply};
use super::{fan_out, text_frame, OwnerCtx, Push, TopicMsg, MAX_QUEUED_WHILE_LOADING};
use crate::mailbox::{ConnId, Msg};
use crate::phoenix::JoinRef;
use crate::runtime::Ctx;
use crate::store::{log_stream, LogEntry, StoreRequest, StoreResult};
use crate::wire::phoenix as wire;

/// What a market's topic starts with.
pub const PREFIX: &str = "bet:";

/// The journal family of markets.
pub const FAMILY: &str = "bet";

/// Longest market id, in bytes.
pub const MAX_MARKET_ID: usize = 64;

/// Entries after which a market's stream is compacted into a snapshot.
const SNAPSHOT_EVERY: u64 = 256;

/// Payouts resent per market and tick, at most.
const RESEND_PER_TICK: usize = 1024;

/// A market without members and work is dropped from memory after this long.
const IDLE: Duration = Duration::from_secs(30);

/// Whether `id` may name a market.
pub fn valid_market(id: &str) -> bool {
    (1..=MAX_MARKET_ID).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A bet's key: who placed it with which request id.
type BetKey = (String, String);

/// Work for a market's owner. `topic` is `bet:<market>`.
#[derive(Debug)]
pub enum BetMsg {
    Join {
        topic: Arc<str>,
        origin: Origin,
        user: Arc<str>,
        operator: bool,
    },
    Leave {
        topic: Arc<str>,
        conn: ConnId,
        join_ref: JoinRef,
    },
    Push {
        topic: Arc<str>,
        origin: Origin,
        user: Arc<str>,
        event: Box<str>,
        payload: Value,
    },
    /// The bettor's wallet answered a reserve.
    Reserved {
        topic: Arc<str>,
        key: BetKey,
        result: Result<(), String>,
    },
    /// A wallet settled (or had settled) a bet's hold.
    Paid {
        topic: Arc<str>,
        key: BetKey,
        result: Result<bool, String>,
    },
}

impl BetMsg {
    fn topic(&self) -> &Arc<str> {
        match self {
            BetMsg::Join { topic, .. }
            | BetMsg::Leave { topic, .. }
            | BetMsg::Push { topic, .. }
            | BetMsg::Reserved { topic, .. }
            | BetMsg::Paid { topic, .. } => topic,
        }
    }
}

/// A push or join to answer, from any worker.
#[derive(Debug, Clone)]
pub struct Origin {
    conn: ConnId,
    join_ref: JoinRef,
    msg_ref: Option<Box<str>>,
    topic: Arc<str>,
}

impl Origin {
    fn reply(&self, ctx: &mut OwnerCtx<'_>, json: &str) {
        let text = wire::encode_reply(Some(&self.join_ref), self.msg_ref.as_deref(), &self.topic, "ok", json);
        ctx.to_conn(self.conn, &text);
    }
    fn error(&self, ctx: &mut OwnerCtx<'_>, reason: &str) {
        ctx.error_to(self.conn, &self.join_ref, self.msg_ref.as_deref(), &self.topic, reason);
    }
    fn refuse_join(&self, ctx: &mut OwnerCtx<'_>, reason: &str) {
        let response = json!({ "reason": reason }).to_string();
        let text = wire::encode_reply(
            Some(&self.join_ref),
            self.msg_ref.as_deref(),
            &self.topic,
            "error",
            &response,
        );
        let (conn, topic, join_ref) = (self.conn, self.topic.clone(), self.join_ref);
        let msg = Msg::Joined {
            conn,
            topic,
            join_ref,
            ok: false,
            presence: false,
            frames: vec![text_frame(&text)],
        };
        ctx.out.send(conn.worker(), msg);
    }
}

/// What to do once the entry holding an operation is durable.
#[derive(Debug)]
enum Effect {
    Reply(Origin, String),
    Broadcast(&'static str, String),
    /// Tell the bettor their bet's state.
    BetEvent(Bet),
    /// The market closed: pay every bet.
    PayAll,
}

#[derive(Debug)]
struct Member {
    join_ref: JoinRef,
    operator: bool,
}

/// A bet whose stake is being reserved.
#[derive(Debug)]
struct Placing {
    outcome: String,
    stake: u64,
    odds: u64,
    origins: Vec<Origin>,
}

/// A market on its owner worker.
#[derive(Debug)]
struct Live {
    stream: Arc<str>,
    market: Market,
    last_seq: u64,
    snapshot_seq: u64,
    /// Loading: everything but leaves waits in `queue`.
    loading: bool,
    queue: VecDeque<BetMsg>,
    /// Effects of the entry being stored, if one is.
    inflight: Option<Vec<Effect>>,
    /// Operations applied since, for the next entry, and their effects.
    next_ops: Vec<BetOp>,
    next_effects: Vec<Effect>,
    placing: HashMap<BetKey, Placing>,
    /// Bets of a closed market whose wallets have not confirmed the payout; `paying` were sent.
    unpaid: BTreeSet<BetKey>,
    paying: BTreeSet<BetKey>,
    members: HashMap<ConnId, Member>,
    per_worker: Vec<u32>,
    idle_since: Instant,
}

impl Live {
    fn busy(&self) -> bool {
        self.loading || self.inflight.is_some() || !self.placing.is_empty() || !self.unpaid.is_empty()
    }
}

/// Every market this worker owns.
#[derive(Debug)]
pub struct Markets {
    me: usize,
    markets: HashMap<Arc<str>, Live>,
    journal: InFlight,
}

impl Markets {
    pub fn new(me: usize) -> Self {
        Markets { me, markets: HashMap::new(), journal: InFlight::default() }
    }

    /// A message for a market this worker owns.
    pub fn on_msg(&mut self, ctx: &mut OwnerCtx<'_>, msg: BetMsg) {
        let topic = msg.topic().clone();
        if !self.markets.contains_key(&topic) {
            if matches!(msg, BetMsg::Leave { .. }) {
                return;
            }
            if !self.load(ctx, &topic) {
                return refuse(ctx, msg, "storage is overloaded");
            }
        }
        let Some(live) = self.markets.get_mut(&topic) else { return };
        live.idle_since = Instant::now();
        match msg {
            BetMsg::Leave { conn, join_ref, .. } => {
                if live.members.get(&conn).is_some_and(|m| m.join_ref == join_ref) {
                    live.members.remove(&conn);
                    live.per_worker[conn.worker()] -= 1;
                }
            }
            msg if live.loading => {
                if live.queue.len() < MAX_QUEUED_WHILE_LOADING {
                    live.queue.push_back(msg);
                } else {
                    refuse(ctx, msg, "overloaded");
                }
            }
            msg => self.handle(ctx, &topic, msg),
        }
    }

    fn load(&mut self, ctx: &mut OwnerCtx<'_>, topic: &Arc<str>) -> bool {
        let stream = log_stream(FAMILY, topic.strip_prefix(PREFIX).unwrap_or(topic));
        let tag = self.journal.track(topic, Request::Load);
        if ctx.store.submit(self.me, StoreRequest::LogLoad { stream: stream.clone(), tag }).is_err() {
            self.journal.cancel(tag);
            return false;
        }
        let live = Live {
            stream,
            market: Market::default(),
            last_seq: 0,
            snapshot_seq: 0,
            loading: true,
            queue: VecDeque::new(),
            inflight: None,
            next_ops: Vec::new(),
            next_effects: Vec::new(),
            placing: HashMap::new(),
            unpaid: BTreeSet::new(),
            paying: BTreeSet::new(),
            members: HashMap::new(),
            per_worker: vec![0; ctx.out.workers()],
            idle_since: Instant::now(),
        };
        self.markets.insert(topic.clone(), live);
        true
    }

    fn handle(&mut self, ctx: &mut OwnerCtx<'_>, topic: &Arc<str>, msg: BetMsg) {
        let Some(live) = self.markets.get_mut(topic) else { return };
        match msg {
            BetMsg::Join { origin, user, operator, .. } => {
                if live.members.insert(origin.conn, Member { join_ref: origin.join_ref, operator }).is_none()
                {
                    live.per_worker[origin.conn.worker()] += 1;
                }
                let mine: Vec<Value> = live
                    .market
                    .bets
                    .values()
                    .filter(|b| *b.user == *user)
                    .map(|b| bet_json(topic, b))
                    .collect();
                let mut state = market_json(&live.market);
                state["bets"] = Value::Array(mine);
                let text = wire::encode_reply(
                    Some(&origin.join_ref),
                    origin.msg_ref.as_deref(),
                    topic,
                    "ok",
                    &state.to_string(),
                );
                let (conn, join_ref) = (origin.conn, origin.join_ref);
                let frames = vec![text_frame(&text)];
                let joined =
                    Msg::Joined { conn, topic: topic.clone(), join_ref, ok: true, presence: false, frames };
                ctx.out.send(conn.worker(), joined);
            }
            BetMsg::Push { origin, user, event, payload, .. } => {
                let Some(member) = live.members.get(&origin.conn).filter(|m| m.join_ref == origin.join_ref)
                else {
                    return origin.error(ctx, "not joined");
                };
                let operator = member.operator;
                match &*event {
                    "place" => self.place(ctx, topic, origin, &user, &payload),
                    "create" | "odds" | "suspend" | "resume" | "settle" | "void" if !operator => {
                        origin.error(ctx, &format!("{event} needs an operator token"))
                    }
                    "create" | "odds" | "suspend" | "resume" | "settle" | "void" => {
                        match operator_op(&event, &payload) {
                            Ok(op) => self.operate(ctx, topic, origin, op),
                            Err(why) => origin.error(ctx, &why),
                        }
                    }
                    other => origin.error(ctx, &format!("unknown event {other:?}")),
                }
            }
            BetMsg::Reserved { key, result, .. } => self.reserved(ctx, topic, key, result),
            BetMsg::Paid { key, result, .. } => {
                live.paying.remove(&key);
                match result {
                    Ok(changed) => {
                        live.unpaid.remove(&key);
                        if let (true, Some(bet)) = (changed, live.market.bets.get(&key)) {
                            wallet::notify(ctx.out, &bet.user, "bet", bet_json(topic, bet).to_string());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(market = %topic, error = %e, "payout not confirmed; resent later")
                    }
                }
            }
            BetMsg::Leave { .. } => {}
        }
    }

    /// An operator's change to the market.
    fn operate(&mut self, ctx: &mut OwnerCtx<'_>, topic: &Arc<str>, origin: Origin, op: BetOp) {
        let Some(live) = self.markets.get_mut(topic) else { return };
        if let Err(e) = live.market.apply(&op) {
            return origin.error(ctx, &e.to_string());
        }
        let state = market_json(&live.market).to_string();
        let mut effects = vec![Effect::Reply(origin, state.clone())];
        match &op {
            BetOp::Odds { outcome, odds } => {
                let change = json!({ "outcome": outcome, "odds": odds, "version": live.market.version });
                effects.push(Effect::Broadcast("odds", change.to_string()));
            }
            BetOp::Settle { .. } | BetOp::Void => {
                effects.push(Effect::Broadcast("market", state));
                effects.push(Effect::PayAll);
            }
            _ => effects.push(Effect::Broadcast("market", state)),
        }
        self.commit(ctx, topic, op, effects);
    }

    /// A bettor's `place {outcome, stake, odds, req_id}`.
    fn place(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        topic: &Arc<str>,
        origin: Origin,
        user: &str,
        payload: &Value,
    ) {
        let parsed = (|| {
            let outcome = payload.get("outcome").and_then(Value::as_str).ok_or("outcome must be a string")?;
            let stake =
                wallet::parse_amount(payload.get("stake")).map_err(|e| e.replace("amount", "stake"))?;
            let odds =
                payload.get("odds").and_then(Value::as_u64).ok_or_else(|| BetError::BadOdds.to_string())?;
            let req_id = wallet::parse_req_id(payload.get("req_id"))?;
            Ok::<_, String>((outcome.to_owned(), stake, odds, req_id.to_owned()))
        })();
        let (outcome, stake, odds, req_id) = match parsed {
            Ok(p) => p,
            Err(why) => return origin.error(ctx, &why),
        };
        let Some(live) = self.markets.get_mut(topic) else { return };
        let key = (user.to_owned(), req_id);
        if let Some(bet) = live.market.bets.get(&key) {
            // A retry of a bet already taken: the same answer again.
            return origin.reply(ctx, &bet_json(topic, bet).to_string());
        }
        if let Some(p) = live.placing.get_mut(&key) {
            if p.origins.len() < 16 {
                p.origins.push(origin);
            } else {
                origin.error(ctx, "too many retries in flight");
            }
            return;
        }
        if let Err(e) = live.market.check_place(&key, &outcome, odds) {
            return origin.error(ctx, &e.to_string());
        }
        let op = Op::Reserve { key: hold_key(topic, &key.1), amount: stake };
        let owner = ctx.out.owner(topic);
        let (reply_topic, reply_key) = (topic.clone(), key.clone());
        let reply = Reply::new(move |ctx, outcome: &Outcome| {
            let result = outcome.as_ref().map(|_| ()).map_err(ToString::to_string);
            let msg = BetMsg::Reserved { topic: reply_topic, key: reply_key, result };
            ctx.out.send(owner, Msg::Topic(TopicMsg::Bet(msg)));
        });
        live.placing.insert(key.clone(), Placing { outcome, stake, odds, origins: vec![origin] });
        wallet::send_op(ctx.out, &key.0, op, Some(reply));
    }

    /// The wallet held (or refused) a stake: take the bet, or release the hold.
    fn reserved(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        topic: &Arc<str>,
        key: BetKey,
        result: Result<(), String>,
    ) {
        let Some(live) = self.markets.get_mut(topic) else { return };
        let Some(p) = live.placing.remove(&key) else {
            // The market reloaded meanwhile and forgot the request: give the stake back unless the bet
            // was taken (a retry with the same req_id starts over).
            if result.is_ok() && !live.market.bets.contains_key(&key) {
                wallet::send_op(ctx.out, &key.0, Op::Release { key: hold_key(topic, &key.1) }, None);
            }
            return;
        };
        if let Err(why) = result {
            for o in &p.origins {
                o.error(ctx, &why);
            }
            return;
        }
        let op = BetOp::Place {
            user: key.0.clone(),
            req_id: key.1.clone(),
            outcome: p.outcome,
            stake: p.stake,
            odds: p.odds,
        };
        if let Err(e) = live.market.apply(&op) {
            // The market changed while the stake was being held (suspended, new odds).
            wallet::send_op(ctx.out, &key.0, Op::Release { key: hold_key(topic, &key.1) }, None);
            for o in &p.origins {
                o.error(ctx, &e.to_string());
            }
            return;
        }
        let bet = live.market.bets[&key].clone();
        let answer = bet_json(topic, &bet).to_string();
        let mut effects: Vec<Effect> =
            p.origins.into_iter().map(|o| Effect::Reply(o, answer.clone())).collect();
        effects.push(Effect::BetEvent(bet));
        self.commit(ctx, topic, op, effects);
    }

    /// Journal an applied operation; its effects run once it is durable.
    fn commit(&mut self, ctx: &mut OwnerCtx<'_>, topic: &Arc<str>, op: BetOp, effects: Vec<Effect>) {
        let Some(live) = self.markets.get_mut(topic) else { return };
        live.next_ops.push(op);
        live.next_effects.extend(effects);
        if live.inflight.is_none() {
            self.flush(ctx, topic);
        }
    }

    fn flush(&mut self, ctx: &mut OwnerCtx<'_>, topic: &Arc<str>) {
        let Some(live) = self.markets.get_mut(topic) else { return };
        if live.next_ops.is_empty() {
            return;
        }
        live.last_seq += 1;
        let ops = std::mem::take(&mut live.next_ops);
        let data = serde_json::to_vec(&ops).expect("ops serialise").into();
        let entry = LogEntry { stream: live.stream.clone(), seq: live.last_seq, data };
        live.inflight = Some(std::mem::take(&mut live.next_effects));
        let tag = self.journal.track(topic, Request::Append);
        if ctx.store.submit(self.me, StoreRequest::LogAppend { entry, tag }).is_err() {
            self.journal.cancel(tag);
            self.failed(ctx, topic, "storage is overloaded");
        }
    }

    /// An entry was not stored: answer everyone waiting and reload what is stored.
    fn failed(&mut self, ctx: &mut OwnerCtx<'_>, topic: &Arc<str>, why: &str) {
        let Some(live) = self.markets.get_mut(topic) else { return };
        let effects: Vec<Effect> =
            live.inflight.take().into_iter().flatten().chain(live.next_effects.drain(..)).collect();
        live.next_ops.clear();
        for effect in effects {
            if let Effect::Reply(o, _) = effect {
                o.error(ctx, why);
            }
        }
        live.loading = true;
        let stream = live.stream.clone();
        let tag = self.journal.track(topic, Request::Load);
        if ctx.store.submit(self.me, StoreRequest::LogLoad { stream, tag }).is_err() {
            self.journal.cancel(tag);
            if let Some(live) = self.markets.remove(topic) {
                for msg in live.queue {
                    refuse(ctx, msg, why);
                }
            }
        }
    }

    /// A storage result for a market of this worker.
    pub fn on_store(&mut self, ctx: &mut OwnerCtx<'_>, result: StoreResult) {
        let Some((topic, pending)) = self.journal.take(&result) else { return };
        match (pending, result) {
            (Request::Load, StoreResult::LogLoaded { result, .. }) => self.loaded(ctx, &topic, result),
            (Request::Append, StoreResult::LogAppended { result: Err(e), .. }) => {
                tracing::error!(market = %topic, error = %e, "market entry not stored");
                self.failed(ctx, &topic, "storage failed");
            }
            (Request::Append, StoreResult::LogAppended { result: Ok(()), .. }) => {
                let Some(live) = self.markets.get_mut(&topic) else { return };
                let effects = live.inflight.take().unwrap_or_default();
                for effect in effects {
                    self.run(ctx, &topic, effect);
                }
                self.maybe_compact(ctx, &topic);
                self.flush(ctx, &topic);
            }
            (Request::Compact { upto }, StoreResult::LogCompacted { result, .. }) => match result {
                Ok(()) => {
                    if let Some(live) = self.markets.get_mut(&topic) {
                        live.snapshot_seq = live.snapshot_seq.max(upto);
                    }
                }
                Err(e) => tracing::warn!(market = %topic, error = %e, "market snapshot not stored"),
            },
            (p, _) => tracing::error!(market = %topic, pending = ?p, "market storage result does not match"),
        }
    }

    fn loaded(
        &mut self,
        ctx: &mut OwnerCtx<'_>,
        topic: &Arc<str>,
        result: Result<crate::store::LogState, Arc<crate::store::StoreError>>,
    ) {
        let Some(live) = self.markets.get_mut(topic) else { return };
        let replayed = result.map_err(|e| e.to_string()).and_then(|state| {
            let snapshot_seq = state.snapshot.as_ref().map_or(0, |(seq, _)| *seq);
            let last = state.entries.last().map_or(snapshot_seq, |(seq, _)| *seq);
            let market = Market::replay(
                state.snapshot.as_ref().map(|(_, s)| &s[..]),
                state.entries.iter().map(|(_, e)| &e[..]),
            )?;
            Ok((market, snapshot_seq, last))
        });
        match replayed {
            Ok((market, snapshot_seq, last_seq)) => {
                (live.market, live.snapshot_seq, live.last_seq) = (market, snapshot_seq, last_seq);
                live.loading = false;
                if live.market.closed() {
                    // Payouts may not all have reached the wallets before a restart: settle again
                    // (a wallet settles each hold once).
                    live.unpaid = live.market.bets.keys().cloned().collect();
                    self.pay(ctx, topic);
                }
                while let Some(live) = self.markets.get_mut(topic) {
                    if live.loading {
                        break;
                    }
                    let Some(msg) = live.queue.pop_front() else { break };
                    self.handle(ctx, topic, msg);
                }
            }
            Err(why) => {
                tracing::error!(market = %topic, error = %why, "cannot load market");
                if let Some(live) = self.markets.remove(topic) {
                    for msg in live.queue {
                        refuse(ctx, msg, "the market cannot be loaded");
                    }
                }
            }
        }
    }

    fn run(&mut self, ctx: &mut OwnerCtx<'_>, topic: &Arc<str>, effect: Effect) {
        let Some(live) = self.markets.get_mut(topic) else { return };
        match effect {
            Effect::Reply(origin, json) => origin.reply(ctx, &json),
            Effect::Broadcast(event, json) => {
                let text = wire::encode(None, None, topic, event, &json);
                fan_out(ctx, &live.per_worker, topic, text_frame(&text), None);
            }
            Effect::BetEvent(bet) => {
                wallet::notify(ctx.out, &bet.user, "bet", bet_json(topic, &bet).to_string())
            }
            Effect::PayAll => {
                live.unpaid = live.market.bets.keys().cloned().collect();
                self.pay(ctx, topic);
            }
        }
    }

    /// Send the payout of every unpaid bet not already on its way.
    fn pay(&mut self, ctx: &mut OwnerCtx<'_>, topic: &Arc<str>) {
        let Some(live) = self.markets.get_mut(topic) else { return };
        let owner = ctx.out.owner(topic);
        let due: Vec<BetKey> =
            live.unpaid.iter().filter(|k| !live.paying.contains(*k)).take(RESEND_PER_TICK).cloned().collect();
        for key in due {
            let bet = &live.market.bets[&key];
            let op = Op::Settle { key: hold_key(topic, &key.1), payout: bet.payout() };
            let (reply_topic, reply_key) = (topic.clone(), key.clone());
            let reply = Reply::new(move |ctx, outcome: &Outcome| {
                let result = outcome
                    .as_ref()
                    .map(|a| *a == wallet::ledger::Applied::Changed)
                    .map_err(ToString::to_string);
                let msg = BetMsg::Paid { topic: reply_topic, key: reply_key, result };
                ctx.out.send(owner, Msg::Topic(TopicMsg::Bet(msg)));
            });
            wallet::send_op(ctx.out, &key.0, op, Some(reply));
            live.paying.insert(key);
        }
    }

    fn maybe_compact(&mut self, ctx: &mut OwnerCtx<'_>, topic: &Arc<str>) {
        let Some(live) = self.markets.get(topic) else { return };
        if live.last_seq - live.snapshot_seq < SNAPSHOT_EVERY || live.inflight.is_some() {
            return;
        }
        let (stream, upto, snapshot) = (live.stream.clone(), live.last_seq, live.market.snapshot().into());
        let tag = self.journal.track(topic, Request::Compact { upto });
        if ctx
            .store
            .submit(self.me, StoreRequest::LogCompact { stream, upto_seq: upto, snapshot, tag })
            .is_err()
        {
            self.journal.cancel(tag);
        }
    }

    /// Once a second: resend payouts not confirmed, forget idle markets.
    pub fn tick(&mut self, ctx: &mut OwnerCtx<'_>) {
        let unpaid: Vec<Arc<str>> = self
            .markets
            .iter()
            .filter(|(_, l)| !l.unpaid.is_empty() && l.paying.is_empty())
            .map(|(t, _)| t.clone())
            .collect();
        for topic in unpaid {
            self.pay(ctx, &topic);
        }
        self.markets.retain(|_, l| l.busy() || !l.members.is_empty() || l.idle_since.elapsed() < IDLE);
    }
}

/// The wallet hold of a bet: `bet:<market>:<req_id>`.
fn hold_key(topic: &str, req_id: &str) -> String {
    format!("{topic}:{req_id}")
}

/// An operator's event as an operation.
fn operator_op(event: &str, payload: &Value) -> Result<BetOp, String> {
    let outcome = |field: &str| {
        payload
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{field} must be an outcome name"))
    };
    let odds = |v: Option<&Value>| v.and_then(Value::as_u64).ok_or_else(|| BetError::BadOdds.to_string());
    Ok(match event {
        "create" => {
            let Some(map) = payload.get("outcomes").and_then(Value::as_object) else {
                return Err("create takes {outcomes: {name: odds, ...}}".into());
            };
            if map.len() > MAX_OUTCOMES {
                return Err(BetError::BadOutcomes.to_string());
            }
            let outcomes =
                map.iter().map(|(k, v)| Ok((k.clone(), odds(Some(v))?))).collect::<Result<_, String>>()?;
            BetOp::Create { outcomes }
        }
        "odds" => BetOp::Odds { outcome: outcome("outcome")?, odds: odds(payload.get("odds"))? },
        "suspend" => BetOp::Suspend,
        "resume" => BetOp::Resume,
        "settle" => BetOp::Settle { winner: outcome("winner")? },
        _ => BetOp::Void,
    })
}

fn market_json(m: &Market) -> Value {
    json!({ "status": m.status.as_str(), "outcomes": m.outcomes, "version": m.version, "winner": m.winner })
}

fn bet_json(topic: &str, b: &Bet) -> Value {
    json!({
        "market": topic.strip_prefix(PREFIX).unwrap_or(topic),
        "req_id": b.req_id,
        "outcome": b.outcome,
        "stake": b.stake,
        "odds": b.odds,
        "state": b.state,
        "payout": b.payout(),
    })
}

/// Answer a message that cannot be handled.
fn refuse(ctx: &mut OwnerCtx<'_>, msg: BetMsg, why: &str) {
    match msg {
        BetMsg::Join { origin, .. } => origin.refuse_join(ctx, why),
        BetMsg::Push { origin, .. } => origin.error(ctx, why),
        BetMsg::Reserved { topic, key, result: Ok(()) } => {
            // The stake is held for a bet that cannot be taken now: give it back.
            let op = Op::Release { key: hold_key(&topic, &key.1) };
            wallet::send_op(ctx.out, &key.0, op, None);
        }
        BetMsg::Reserved { .. } | BetMsg::Paid { .. } | BetMsg::Leave { .. } => {}
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinParams {
    #[serde(default)]
    token: Option<String>,
}

/// A join of `bet:<market>` on the connection's worker.
pub fn on_join(
    ctx: &mut Ctx<'_>,
    topic: &Arc<str>,
    join_ref: JoinRef,
    msg_ref: Option<&str>,
    params_json: &str,
    user: &Arc<str>,
) -> Result<(), String> {
    wallet::refuse_in_cluster(ctx)?;
    let params: JoinParams =
        serde_json::from_str(params_json).map_err(|e| format!("join params: {e} (known: token)"))?;
    let operator = wallet::operator_access(ctx, params.token.as_deref(), user)?;
    let origin = Origin { conn: ctx.me, join_ref, msg_ref: msg_ref.map(Into::into), topic: topic.clone() };
    let msg = BetMsg::Join { topic: topic.clone(), origin, user: user.clone(), operator };
    let owner = ctx.out.owner(topic);
    ctx.out.send(owner, Msg::Topic(TopicMsg::Bet(msg)));
    Ok(())
}

/// A push on `bet:<market>`.
pub fn on_push(ctx: &mut Ctx<'_>, push: &Push<'_>) {
    let crate::wire::phoenix::Payload::Json(raw) = push.payload else {
        return push.error(ctx, "this topic takes JSON payloads");
    };
    let payload = match serde_json::from_str::<Value>(raw.get()) {
        Ok(v) if v.is_object() => v,
        _ => return push.error(ctx, "payload must be a JSON object"),
    };
    let origin = Origin {
        conn: ctx.me,
        join_ref: push.join_ref,
        msg_ref: push.msg_ref.map(Into::into),
        topic: push.topic.clone(),
    };
    let msg = BetMsg::Push {
        topic: push.topic.clone(),
        origin,
        user: push.user.clone(),
        event: push.event.into(),
        payload,
    };
    let owner = ctx.out.owner(push.topic);
    ctx.out.send(owner, Msg::Topic(TopicMsg::Bet(msg)));
}
