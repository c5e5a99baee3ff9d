//! A worker's local subscriber lists: for each topic, the slab keys of this worker's connections that
//! joined it. Four bytes a member; insert and remove are O(1) without moving other members, so a
//! connection only needs to remember its own slot.

use std::collections::HashMap;
use std::sync::Arc;

/// Vacant slots hold `VACANT | next_free`.
const VACANT: u32 = 1 << 31;
const END: u32 = VACANT - 1;

/// Members of one topic on one worker.
#[derive(Debug)]
pub struct Members {
    slots: Vec<u32>,
    free: u32,
    len: usize,
}

impl Default for Members {
    fn default() -> Self {
        Members { slots: Vec::new(), free: END, len: 0 }
    }
}

impl Members {
    /// Add a slab key (< 2^31); returns its slot.
    pub fn insert(&mut self, key: u32) -> u32 {
        debug_assert!(key < VACANT);
        self.len += 1;
        if self.free != END {
            let slot = self.free;
            self.free = self.slots[slot as usize] & !VACANT;
            self.slots[slot as usize] = key;
            slot
        } else {
            self.slots.push(key);
            (self.slots.len() - 1) as u32
        }
    }

    /// Remove the member at `slot`.
    pub fn remove(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        debug_assert!(*s & VACANT == 0, "slot already vacant");
        *s = VACANT | self.free;
        self.free = slot;
        self.len -= 1;
        if self.len == 0 {
            *self = Members::default();
        }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The members' slab keys.
    pub fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots.iter().filter(|s| **s & VACANT == 0).map(|s| *s as usize)
    }
}

/// Every topic with local members.
#[derive(Debug, Default)]
pub struct LocalTopics {
    map: HashMap<Arc<str>, Members>,
}

impl LocalTopics {
    /// Subscribe a slab key; returns the topic's shared name and the slot to remove it by.
    pub fn join(&mut self, topic: &Arc<str>, key: usize) -> u32 {
        self.map.entry(topic.clone()).or_default().insert(key as u32)
    }

    /// Unsubscribe; drops the topic when its last local member leaves.
    pub fn leave(&mut self, topic: &str, slot: u32) {
        if let Some(m) = self.map.get_mut(topic) {
            m.remove(slot);
            if m.is_empty() {
                self.map.remove(topic);
            }
        }
    }

    /// The shared name of a topic that has local members, so channels of the same topic share one
    /// allocation; a new one otherwise.
    pub fn intern(&self, topic: &str) -> Arc<str> {
        match self.map.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => topic.into(),
        }
    }

    /// Local members of a topic.
    pub fn members(&self, topic: &str) -> Option<&Members> {
        self.map.get(topic)
    }

    /// Topics with local members.
    pub fn topics(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_others_stay_put() {
        let mut m = Members::default();
        let a = m.insert(10);
        let b = m.insert(11);
        let c = m.insert(12);
        m.remove(b);
        assert_eq!(m.keys().collect::<Vec<_>>(), vec![10, 12]);
        let d = m.insert(13);
        assert_eq!(d, b, "the freed slot is reused");
        m.remove(a);
        m.remove(c);
        assert_eq!(m.keys().collect::<Vec<_>>(), vec![13]);
        assert_eq!(m.len(), 1);
        m.remove(d);
        assert!(m.is_empty());
        assert_eq!(m.slots.capacity(), 0, "an empty list frees its memory");
    }

    #[test]
    fn topics_disappear_with_their_last_member() {
        let mut t = LocalTopics::default();
        let topic: Arc<str> = "room:a".into();
        let s1 = t.join(&topic, 1);
        let s2 = t.join(&topic, 2);
        t.leave("room:a", s1);
        assert_eq!(t.members("room:a").unwrap().keys().collect::<Vec<_>>(), vec![2]);
        t.leave("room:a", s2);
        assert!(t.members("room:a").is_none());
        assert_eq!(t.topics(), 0);
    }
}
