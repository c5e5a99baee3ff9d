//! The thread-per-core event loop: workers, connections, timers and buffers.

pub mod bufpool;
pub mod conn;
pub mod subs;
pub mod timer;
pub mod worker;

use crate::config::Config;
use crate::mailbox::{ConnId, Outbox};
use crate::metrics::WorkerStats;
use crate::store::StoreHandle;
use crate::topics::Topics;
use subs::LocalTopics;

/// What protocol handlers on a worker may touch besides the connection they serve.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The connection being served.
    pub me: ConnId,
    pub out: &'a mut Outbox,
    pub local: &'a mut LocalTopics,
    pub topics: &'a mut Topics,
    pub cfg: &'a Config,
    pub store: &'a StoreHandle,
    pub stats: &'a WorkerStats,
    /// Frames for the connection being served, written in order once the handler returns.
    pub replies: &'a mut Vec<Vec<u8>>,
}

impl Ctx<'_> {
    /// Queue a text frame for the connection being served.
    pub fn reply_text(&mut self, text: &str) {
        self.replies.push(crate::wire::frame::encode(crate::wire::frame::OpCode::Text, text.as_bytes()));
    }
    /// Queue a binary frame for the connection being served.
    pub fn reply_binary(&mut self, data: &[u8]) {
        self.replies.push(crate::wire::frame::encode(crate::wire::frame::OpCode::Binary, data));
    }
}
