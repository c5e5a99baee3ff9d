//! A Phoenix connection's messages through the worker-side handlers: joins, leaves, heartbeats and
//! every topic's pushes (chat `new_msg`, `history`, `typing`, `blob`; geo joins and pushes).

use std::cell::RefCell;
use std::sync::Arc;

use crate::config::Config;
use crate::mailbox::{ConnId, Mailbox, Outbox};
use crate::metrics::WorkerStats;
use crate::phoenix::{self, Session};
use crate::runtime::subs::LocalTopics;
use crate::runtime::Ctx;
use crate::store::StoreHandle;
use crate::topics::Topics;
use crate::wire::frame;
use crate::wire::phoenix as pwire;

/// What a worker lends a handler, made once per process: one worker (so every topic is owned
/// here and owner messages stay in `out.local`), a storage thread that stores nothing.
struct Worker {
    /// Keeps the waker's poll alive.
    _poll: mio::Poll,
    out: Outbox,
    store: StoreHandle,
    cfg: Config,
    stats: WorkerStats,
}

impl Worker {
    fn new() -> Self {
        let poll = mio::Poll::new().expect("a poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("a waker"));
        let cfg = super::default_config();
        let (mailbox, _inboxes) = Mailbox::new(vec![waker], cfg.inbox_capacity);
        let (store, _thread) = crate::store::spawn(
            Box::new(crate::store::testing::Scripted::default()),
            cfg.store_queue,
            Box::new(|_, _| {}),
        );
        let out = Outbox { me: 0, mailbox, local: Default::default(), dropped: 0 };
        Worker { _poll: poll, out, store, cfg, stats: WorkerStats::default() }
    }
}

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

/// Messages of one connection, one per line: a line starting with a zero byte is a binary frame,
/// any other a text frame. Each is parsed as the worker parses it and handled by
/// [`phoenix::on_message`] on a fresh session.
///
/// Checks: every reply is one whole server frame whose text is a Phoenix message (or whose binary
/// is a reply) on the topic it answers; a connection never holds more channels than the bound.
pub fn phoenix_session(data: &[u8]) {
    WORKER.with(|w| {
        let mut w = w.borrow_mut();
        let w = w.get_or_insert_with(Worker::new);
        let mut local = LocalTopics::default();
        let mut topics = Topics::new(0);
        let mut session = Session::new("fuzzer".into());
        let mut replies = Vec::new();
        for line in data.split(|b| *b == b'\n') {
            let msg = match line {
                [0, ..] => pwire::parse_binary(line),
                _ => match std::str::from_utf8(line) {
                    Ok(text) => pwire::parse_text(text),
                    Err(_) => continue,
                },
            };
            let Ok(msg) = msg else { continue };
            let topic = msg.topic.clone().into_owned();
            let mut ctx = Ctx {
                me: ConnId::new(0, 1, 0),
                out: &mut w.out,
                local: &mut local,
                topics: &mut topics,
                cfg: &w.cfg,
                store: &w.store,
                stats: &w.stats,
                replies: &mut replies,
            };
            phoenix::on_message(&mut ctx, &mut session, msg);
            for reply in replies.drain(..) {
                check_reply(&reply, &topic);
            }
            assert!(session.channels().len() <= w.cfg.max_channels, "channels past the bound");
            // The owner's side is not run here: what was sent to it is dropped.
            w.out.local.clear();
        }
    });
}

fn check_reply(reply: &[u8], topic: &str) {
    let payload = frame::payload_of(reply).expect("a reply is one whole server frame");
    match reply[0] & 0x0f {
        0x1 => {
            let text = std::str::from_utf8(payload).expect("a text reply is UTF-8");
            let msg = pwire::parse_text(text).unwrap_or_else(|e| panic!("reply {text:?}: {e}"));
            assert_eq!(msg.topic, topic, "a reply is on the topic it answers");
            if msg.event == "phx_reply" {
                let pwire::Payload::Json(p) = msg.payload else { unreachable!("text payloads are JSON") };
                let v: serde_json::Value = serde_json::from_str(p.get()).expect("JSON");
                assert!(v.get("status").is_some_and(serde_json::Value::is_string), "{text}");
            }
        }
        0x2 => assert_eq!(payload.first(), Some(&1), "binary replies are of kind 1"),
        other => panic!("reply with opcode {other:#x}"),
    }
    assert_eq!(reply[0] & 0x80, 0x80, "FIN set");
}
