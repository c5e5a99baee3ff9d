//! A lazy timer wheel of one-second slots.
//!
//! Each connection sits in exactly one slot (8 bytes). Activity never touches the wheel: the connection
//! only updates its own timestamp. When a slot comes due the worker asks each entry for its real
//! deadline and re-files the ones that are not yet due, so a busy connection is re-checked once per
//! timeout period at most.

/// Slots in the wheel; deadlines further away are re-filed at the last slot and checked again later.
const SLOTS: usize = 128;

/// The wheel. Time is whole seconds since the worker started.
#[derive(Debug)]
pub struct TimerWheel {
    slots: Vec<Vec<u64>>,
    /// The next second whose slot has not been expired yet.
    next: u32,
}

impl Default for TimerWheel {
    fn default() -> Self {
        Self::new()
    }
}

impl TimerWheel {
    /// An empty wheel at second 0.
    pub fn new() -> Self {
        TimerWheel { slots: (0..SLOTS).map(|_| Vec::new()).collect(), next: 0 }
    }

    /// File `id` to be checked at second `at` (clamped into the wheel's horizon).
    pub fn schedule(&mut self, id: u64, at: u32) {
        let at = at.clamp(self.next, self.next + SLOTS as u32 - 1);
        self.slots[at as usize % SLOTS].push(id);
    }

    /// Take every entry filed for seconds up to `now`, appending them to `due`. The caller re-files the
    /// entries that are not yet expired.
    pub fn expire(&mut self, now: u32, due: &mut Vec<u64>) {
        let mut steps = 0;
        while self.next <= now && steps < SLOTS {
            due.append(&mut self.slots[self.next as usize % SLOTS]);
            self.next += 1;
            steps += 1;
        }
        // After a long stall every slot has been emptied once; skip ahead without rescanning.
        if self.next <= now {
            self.next = now + 1;
        }
    }

    /// Entries filed.
    pub fn len(&self) -> usize {
        self.slots.iter().map(Vec::len).sum()
    }

    /// Whether nothing is filed.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Vec::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_due_at_their_second() {
        let mut w = TimerWheel::new();
        w.schedule(1, 3);
        w.schedule(2, 5);
        let mut due = Vec::new();
        w.expire(2, &mut due);
        assert!(due.is_empty());
        w.expire(3, &mut due);
        assert_eq!(due, vec![1]);
        due.clear();
        w.expire(10, &mut due);
        assert_eq!(due, vec![2]);
        assert!(w.is_empty());
    }

    #[test]
    fn far_deadlines_are_clamped_and_past_ones_fire_next() {
        let mut w = TimerWheel::new();
        w.schedule(7, 10_000);
        w.schedule(8, 0);
        let mut due = Vec::new();
        w.expire(0, &mut due);
        assert_eq!(due, vec![8]);
        due.clear();
        w.expire(SLOTS as u32 - 1, &mut due);
        assert_eq!(due, vec![7], "clamped to the horizon, to be re-filed by the caller");
    }

    #[test]
    fn a_long_stall_empties_every_slot_once() {
        let mut w = TimerWheel::new();
        for i in 0..SLOTS as u64 {
            w.schedule(i, i as u32);
        }
        let mut due = Vec::new();
        w.expire(100_000, &mut due);
        assert_eq!(due.len(), SLOTS);
        w.schedule(99, 100_000);
        due.clear();
        w.expire(100_001, &mut due);
        assert_eq!(due, vec![99]);
    }
}
