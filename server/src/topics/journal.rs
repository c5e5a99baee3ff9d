//! Journal requests a topic owner has in flight: each gets a tag, and the storage result that comes
//! back with that tag is matched to its stream and what was asked. Shared by the owners that keep their
//! state as a journal stream (wallets, bet markets).

use std::collections::HashMap;
use std::sync::Arc;

use crate::store::StoreResult;

/// What was asked of the journal for one stream.
#[derive(Debug)]
pub enum Request {
    Load,
    Append,
    /// A snapshot covering the entries up to `upto`.
    Compact {
        upto: u64,
    },
}

/// Requests in flight, by tag.
#[derive(Debug, Default)]
pub struct InFlight {
    pending: HashMap<u64, (Arc<str>, Request)>,
    next_tag: u64,
}

impl InFlight {
    /// Track a request for `topic`'s stream; returns the tag to submit it with.
    pub fn track(&mut self, topic: &Arc<str>, request: Request) -> u64 {
        self.next_tag += 1;
        self.pending.insert(self.next_tag, (topic.clone(), request));
        self.next_tag
    }

    /// Forget a request that could not be submitted.
    pub fn cancel(&mut self, tag: u64) {
        self.pending.remove(&tag);
    }

    /// The stream and request a journal result answers; `None` for other results and unknown tags.
    pub fn take(&mut self, result: &StoreResult) -> Option<(Arc<str>, Request)> {
        self.pending.remove(&result.log_tag()?)
    }
}
