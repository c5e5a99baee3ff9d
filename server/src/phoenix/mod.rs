//! Phoenix Channels V2 on a worker: the per-connection session, joins, leaves, heartbeats and the
//! routing of pushes to topic handlers. The owner-side state (presence, rooms) lives in `topics`.

mod join_ref;
pub mod presence;

pub use join_ref::JoinRef;

use std::sync::Arc;

use crate::mailbox::Msg;
use crate::runtime::Ctx;
use crate::topics::{self, TopicKind};
use crate::wire::phoenix::{self as wire, Inbound, Payload};

/// Slot value of a channel whose join the owner has not answered yet.
pub const JOINING: u32 = u32::MAX;
/// Presence slot value of a channel that takes no presence events.
pub const NO_PRESENCE: u32 = u32::MAX;

/// The name of a topic's second subscriber list: the members that take presence events. Members
/// that joined with `presence: false` are only on the topic's own list, so a large audience costs
/// no presence traffic.
pub fn presence_list(topic: &str) -> String {
    format!("{topic}\0presence")
}

/// One joined (or joining) channel of a connection.
#[derive(Debug)]
pub struct Channel {
    pub topic: Arc<str>,
    /// The join ref, echoed verbatim.
    pub join_ref: JoinRef,
    /// Slot in the worker's local subscriber list, or [`JOINING`].
    pub slot: u32,
    /// Slot in the topic's presence list, or [`NO_PRESENCE`].
    pub presence_slot: u32,
}

/// The Phoenix state of one connection.
#[derive(Debug)]
pub struct Session {
    /// Who this is: the token's subject, or in open mode the name the client gave.
    pub user: Arc<str>,
    /// Exactly as long as needed: most sockets join one or two channels, and every byte here is
    /// multiplied by the number of connections.
    channels: Box<[Channel]>,
}

impl Session {
    /// A session with no channels.
    pub fn new(user: Arc<str>) -> Self {
        Session { user, channels: Box::default() }
    }

    fn find(&self, topic: &str) -> Option<usize> {
        self.channels.iter().position(|c| &*c.topic == topic)
    }

    /// Channels joined or joining.
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    fn edit<R>(&mut self, f: impl FnOnce(&mut Vec<Channel>) -> R) -> R {
        let mut v = std::mem::take(&mut self.channels).into_vec();
        let r = f(&mut v);
        self.channels = v.into_boxed_slice();
        r
    }

    fn remove(&mut self, i: usize) -> Channel {
        self.edit(|v| v.swap_remove(i))
    }
}

/// Handle one inbound Phoenix message.
pub fn on_message(ctx: &mut Ctx<'_>, session: &mut Session, msg: Inbound<'_>) {
    ctx.stats.inc_phoenix_msgs();
    let jr = msg.join_ref.as_deref();
    let mref = msg.msg_ref.as_deref();
    match (&*msg.topic, &*msg.event) {
        ("phoenix", "heartbeat") => {
            ctx.reply_text(&wire::encode_reply(jr, mref, "phoenix", "ok", "{}"));
        }
        (topic, "phx_join") => join(ctx, session, &msg, topic),
        (topic, "phx_leave") => {
            ctx.reply_text(&wire::encode_reply(jr, mref, topic, "ok", "{}"));
            if let Some(i) = session.find(topic) {
                let ch = session.remove(i);
                ctx.reply_text(&wire::encode(
                    Some(&ch.join_ref),
                    Some(&ch.join_ref),
                    topic,
                    "phx_close",
                    "{}",
                ));
                detach(ctx, ch);
            }
        }
        (topic, _) => {
            let Some(i) = session.find(topic) else {
                ctx.reply_text(&wire::encode_reply(
                    None,
                    mref,
                    topic,
                    "error",
                    r#"{"reason":"unmatched topic"}"#,
                ));
                return;
            };
            let ch = &session.channels[i];
            // A push from an earlier join of this topic is stale: Phoenix drops it silently.
            if jr.is_some_and(|jr| jr != &*ch.join_ref) {
                return;
            }
            let push = topics::Push {
                topic: &ch.topic,
                join_ref: ch.join_ref,
                msg_ref: mref,
                event: &msg.event,
                payload: &msg.payload,
                user: &session.user,
            };
            topics::on_push(ctx, push);
        }
    }
}

fn join(ctx: &mut Ctx<'_>, session: &mut Session, msg: &Inbound<'_>, topic: &str) {
    let mref = msg.msg_ref.as_deref();
    let Some(raw_jr) = msg.join_ref.as_deref() else {
        ctx.reply_text(&wire::encode_reply(
            None,
            mref,
            topic,
            "error",
            r#"{"reason":"join_ref is required"}"#,
        ));
        return;
    };
    let Some(jr) = JoinRef::new(raw_jr) else {
        let reason = format!(r#"{{"reason":"join_ref longer than {} bytes"}}"#, JoinRef::MAX);
        ctx.reply_text(&wire::encode_reply(None, mref, topic, "error", &reason));
        return;
    };
    // Joining a topic already joined: Phoenix closes the old channel first, then joins anew.
    if let Some(i) = session.find(topic) {
        let old = session.remove(i);
        ctx.reply_text(&wire::encode(Some(&old.join_ref), Some(&old.join_ref), topic, "phx_close", "{}"));
        detach(ctx, old);
    }
    let Some(kind) = TopicKind::of(topic) else {
        ctx.reply_text(&wire::encode_reply(None, mref, topic, "error", r#"{"reason":"unmatched topic"}"#));
        return;
    };
    if session.channels.len() >= ctx.cfg.max_channels {
        ctx.reply_text(&wire::encode_reply(
            Some(&jr),
            mref,
            topic,
            "error",
            r#"{"reason":"too many channels joined"}"#,
        ));
        return;
    }
    let Payload::Json(params) = &msg.payload else {
        ctx.reply_text(&wire::encode_reply(
            Some(&jr),
            mref,
            topic,
            "error",
            r#"{"reason":"join params must be JSON"}"#,
        ));
        return;
    };
    let topic = ctx.local.intern(topic);
    match topics::on_join(ctx, kind, &topic, jr, mref, params.get(), &session.user) {
        Ok(()) => {
            ctx.stats.inc_joins();
            session
                .edit(|v| v.push(Channel { topic, join_ref: jr, slot: JOINING, presence_slot: NO_PRESENCE }));
        }
        Err(reason) => {
            let response = serde_json::json!({ "reason": reason }).to_string();
            ctx.reply_text(&wire::encode_reply(Some(&jr), mref, &topic, "error", &response));
        }
    }
}

/// Forget a channel on this worker and tell its owner.
pub fn detach(ctx: &mut Ctx<'_>, ch: Channel) {
    if ch.presence_slot != NO_PRESENCE {
        ctx.local.leave(&presence_list(&ch.topic), ch.presence_slot);
    }
    if ch.slot != JOINING {
        ctx.local.leave(&ch.topic, ch.slot);
    }
    let owner = ctx.out.owner(&ch.topic);
    let msg = topics::leave_msg(ch.topic, ctx.me, ch.join_ref);
    ctx.out.send(owner, Msg::Topic(msg));
}

/// A connection is going away: detach every channel.
pub fn on_close(ctx: &mut Ctx<'_>, session: &mut Session) {
    for ch in std::mem::take(&mut session.channels).into_vec() {
        detach(ctx, ch);
    }
}

/// The owner accepted a join: record the subscription if the channel is still waiting for this very
/// join. Returns false when it is not (the client left or rejoined meanwhile), so the caller undoes it.
pub fn on_joined(
    session: &mut Session,
    local: &mut crate::runtime::subs::LocalTopics,
    key: usize,
    topic: &Arc<str>,
    join_ref: &str,
    presence: bool,
) -> bool {
    match session
        .channels
        .iter_mut()
        .find(|c| c.topic == *topic && &*c.join_ref == join_ref && c.slot == JOINING)
    {
        Some(ch) => {
            ch.slot = local.join(topic, key);
            if presence {
                ch.presence_slot = local.join(&local.intern(&presence_list(topic)), key);
            }
            true
        }
        None => false,
    }
}

/// The owner refused a join: forget the channel if it is still waiting for this join.
pub fn on_join_refused(session: &mut Session, topic: &str, join_ref: &str) {
    session.edit(|v| v.retain(|c| !(&*c.topic == topic && &*c.join_ref == join_ref && c.slot == JOINING)));
}
