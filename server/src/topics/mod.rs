//! Topics: what a channel means. Each kind has a worker-side part (validate a push, forward it to the
//! topic's owner) and an owner-side part (the topic's state, on one worker).

pub mod bet;
pub mod chat;
pub mod collab;
pub mod geo;
pub mod journal;
pub mod market;
pub mod shootout;
pub mod wallet;

use std::sync::Arc;

use crate::cluster::{self, Cluster};
use crate::config::Config;
use crate::mailbox::{ConnId, Frame, Msg, Outbox};
use crate::metrics::WorkerStats;
use crate::phoenix::JoinRef;
use crate::runtime::Ctx;
use crate::store::{StoreHandle, StoreResult};
use crate::wire::frame::{self, OpCode};
use crate::wire::phoenix::{self as wire, Payload};

/// The kinds of topic this server handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// `room:<id>`: chat with history and presence.
    Chat,
    /// `geo:<tenant>`: geofencing.
    Geo,
    /// `user:<name>`: a user's wallet and private events.
    User,
    /// `bet:<market>`: a live bet market.
    Bet,
}

impl TopicKind {
    /// The kind of a topic name, if any channel handles it.
    pub fn of(topic: &str) -> Option<Self> {
        let (prefix, id) = topic.split_once(':')?;
        let id_ok = (1..=chat::MAX_ROOM_ID).contains(&id.len()) && !id.chars().any(char::is_control);
        match prefix {
            "room" if id_ok => Some(TopicKind::Chat),
            "geo" if geo::valid_tenant(id) => Some(TopicKind::Geo),
            "user" if id.len() <= crate::auth::MAX_USER_LEN && id_ok => Some(TopicKind::User),
            "bet" if bet::valid_market(id) => Some(TopicKind::Bet),
            _ => None,
        }
    }
}

/// Work for a topic's owner.
#[derive(Debug)]
pub enum TopicMsg {
    Chat(chat::ChatMsg),
    Collab(collab::CollabMsg),
    Geo(geo::GeoMsg),
    Wallet(wallet::WalletMsg),
    Bet(bet::BetMsg),
}

/// A push on a joined channel, as the worker serving the connection sees it.
#[derive(Debug)]
pub struct Push<'a> {
    pub topic: &'a Arc<str>,
    /// The channel's join ref.
    pub join_ref: JoinRef,
    /// Raw JSON of the push's ref.
    pub msg_ref: Option<&'a str>,
    pub event: &'a str,
    pub payload: &'a Payload<'a>,
    pub user: &'a Arc<str>,
}

impl Push<'_> {
    /// Queue a JSON reply to this push.
    pub fn reply(&self, ctx: &mut Ctx<'_>, status: &str, response_json: &str) {
        ctx.reply_text(&wire::encode_reply(
            Some(&self.join_ref),
            self.msg_ref,
            self.topic,
            status,
            response_json,
        ));
    }
    /// Queue an error reply `{"reason": reason}`.
    pub fn error(&self, ctx: &mut Ctx<'_>, reason: &str) {
        let response = serde_json::json!({ "reason": reason }).to_string();
        self.reply(ctx, "error", &response);
    }
}

/// What the owner side of a topic may use.
#[derive(Debug)]
pub struct OwnerCtx<'a> {
    pub out: &'a mut Outbox,
    pub store: &'a StoreHandle,
    pub cfg: &'a Config,
    pub stats: &'a WorkerStats,
    /// The cluster link, in cluster mode only.
    pub cluster: Option<&'a Cluster>,
}

impl OwnerCtx<'_> {
    /// Send an error reply `{"reason": reason}` to a push of one connection, wherever it lives.
    pub fn error_to(
        &mut self,
        conn: ConnId,
        join_ref: &str,
        msg_ref: Option<&str>,
        topic: &str,
        reason: &str,
    ) {
        let response = serde_json::json!({ "reason": reason }).to_string();
        self.to_conn(conn, &wire::encode_reply(Some(join_ref), msg_ref, topic, "error", &response));
    }

    /// Send a text frame to one connection, wherever it lives.
    pub fn to_conn(&mut self, conn: ConnId, text: &str) {
        let frame = text_frame(text);
        self.out.send(conn.worker(), Msg::ToConn { conn, frame });
    }
}

/// Messages a room or document holds while its stored state loads; beyond this the newcomer is
/// refused ("overloaded") instead of growing the queue without bound while storage is slow.
pub const MAX_QUEUED_WHILE_LOADING: usize = 4096;

/// Send one shared frame to every worker that has members of a topic (`per_worker[w]` members on
/// worker `w`), which writes it to its members of the subscriber list `list`.
pub fn fan_out(
    ctx: &mut OwnerCtx<'_>,
    per_worker: &[u32],
    list: &Arc<str>,
    frame: Frame,
    except: Option<ConnId>,
) {
    for (w, n) in per_worker.iter().enumerate() {
        if *n > 0 {
            ctx.stats.inc_broadcasts();
            ctx.out.send(w, Msg::Broadcast { topic: list.clone(), frame: frame.clone(), except });
        }
    }
}

/// Encode a text frame once, to share.
pub fn text_frame(text: &str) -> Frame {
    frame::encode(OpCode::Text, text.as_bytes()).into()
}

/// Encode a binary frame once, to share.
pub fn binary_frame(data: &[u8]) -> Frame {
    frame::encode(OpCode::Binary, data).into()
}

/// Every topic's state on one worker.
#[derive(Debug)]
pub struct Topics {
    pub chat: chat::Chat,
    pub collab: collab::Collab,
    pub geo: geo::Geo,
    pub wallet: wallet::Wallets,
    pub bet: bet::Markets,
}

impl Topics {
    /// State for worker `me`.
    pub fn new(me: usize) -> Self {
        Topics {
            chat: chat::Chat::new(me),
            collab: collab::Collab::new(me),
            geo: geo::Geo::new(me),
            wallet: wallet::Wallets::new(me),
            bet: bet::Markets::new(me),
        }
    }

    /// A message for a topic this worker owns.
    pub fn on_msg(&mut self, ctx: &mut OwnerCtx<'_>, msg: TopicMsg) {
        match msg {
            TopicMsg::Chat(m) => self.chat.on_owner_msg(ctx, m),
            TopicMsg::Collab(m) => self.collab.on_msg(ctx, m),
            TopicMsg::Geo(m) => self.geo.on_msg(ctx, m),
            TopicMsg::Wallet(m) => self.wallet.on_msg(ctx, m),
            TopicMsg::Bet(m) => self.bet.on_msg(ctx, m),
        }
    }

    /// A storage result for this worker.
    pub fn on_store(&mut self, ctx: &mut OwnerCtx<'_>, result: StoreResult) {
        match &result {
            StoreResult::LogAppended { stream, .. }
            | StoreResult::LogLoaded { stream, .. }
            | StoreResult::LogCompacted { stream, .. } => match crate::store::log_family(stream) {
                None => self.collab.on_store(ctx, result),
                Some(wallet::FAMILY) => self.wallet.on_store(ctx, result),
                Some(bet::FAMILY) => self.bet.on_store(ctx, result),
                Some(other) => tracing::error!(family = other, "journal result for no family"),
            },
            StoreResult::GeoLoaded { .. } | StoreResult::GeoDone { .. } => self.geo.on_store(ctx, result),
            StoreResult::Appended { .. } | StoreResult::RoomHead { .. } | StoreResult::History { .. } => {
                self.chat.on_store(ctx, result)
            }
        }
    }

    /// A message from the cluster link: for the kind of its topic, or for every kind.
    pub fn on_cluster(&mut self, ctx: &mut OwnerCtx<'_>, msg: cluster::Inbound) {
        let topic = match &msg {
            cluster::Inbound::Remote(env) => &env.topic,
            cluster::Inbound::Lease { topic, .. }
            | cluster::Inbound::LeaseLost { topic }
            | cluster::Inbound::Subscribed { topic } => topic,
            cluster::Inbound::NodeDown { .. } | cluster::Inbound::NodeUp { .. } => {
                self.chat.on_cluster(ctx, msg.clone());
                self.collab.on_cluster(ctx, msg.clone());
                self.geo.on_cluster(ctx, msg);
                return;
            }
        };
        if collab::is_topic(topic) {
            self.collab.on_cluster(ctx, msg);
        } else if TopicKind::of(topic) == Some(TopicKind::Geo) {
            self.geo.on_cluster(ctx, msg);
        } else {
            self.chat.on_cluster(ctx, msg);
        }
    }

    /// Once a second.
    pub fn tick(&mut self, ctx: &mut OwnerCtx<'_>) {
        self.chat.tick(ctx);
        self.collab.tick(ctx);
        self.geo.tick(ctx);
        self.wallet.tick(ctx);
        self.bet.tick(ctx);
    }

    /// The server is draining: write behind what is still in memory only.
    pub fn drain(&mut self, ctx: &mut OwnerCtx<'_>) {
        self.geo.drain(ctx);
    }
}

/// A join on this worker: validate and forward to the owner. `Err(reason)` refuses it at once.
pub fn on_join(
    ctx: &mut Ctx<'_>,
    kind: TopicKind,
    topic: &Arc<str>,
    join_ref: JoinRef,
    msg_ref: Option<&str>,
    params_json: &str,
    user: &Arc<str>,
) -> Result<(), String> {
    match kind {
        TopicKind::Chat => chat::on_join(ctx, topic, join_ref, msg_ref, params_json, user),
        TopicKind::Geo => geo::on_join(ctx, topic, join_ref, msg_ref, params_json, user),
        TopicKind::User => wallet::on_join(ctx, topic, join_ref, msg_ref, params_json, user),
        TopicKind::Bet => bet::on_join(ctx, topic, join_ref, msg_ref, params_json, user),
    }
}

/// A push on a joined channel.
pub fn on_push(ctx: &mut Ctx<'_>, push: Push<'_>) {
    match TopicKind::of(push.topic) {
        Some(TopicKind::Chat) => chat::on_push(ctx, &push),
        Some(TopicKind::Geo) => geo::on_push(ctx, &push),
        Some(TopicKind::User) => wallet::on_push(ctx, &push),
        Some(TopicKind::Bet) => bet::on_push(ctx, &push),
        None => push.error(ctx, "unmatched topic"),
    }
}

/// The message telling a topic's owner that a connection left.
pub fn leave_msg(topic: Arc<str>, conn: ConnId, join_ref: JoinRef) -> TopicMsg {
    match TopicKind::of(&topic) {
        Some(TopicKind::Geo) => TopicMsg::Geo(geo::GeoMsg::Leave { tenant: topic, conn, join_ref }),
        Some(TopicKind::User) => TopicMsg::Wallet(wallet::WalletMsg::Leave { topic, conn, join_ref }),
        Some(TopicKind::Bet) => TopicMsg::Bet(bet::BetMsg::Leave { topic, conn, join_ref }),
        Some(TopicKind::Chat) | None => TopicMsg::Chat(chat::ChatMsg::Leave { room: topic, conn, join_ref }),
    }
}
