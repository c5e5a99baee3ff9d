//! A user's balance as a pure state machine: the operations its journal stream holds, and what each
//! does. The owner worker applies an operation here, journals it, and answers once it is durable;
//! loading replays the stream through the same [`Ledger::apply`], so a replay gives the same state.
//!
//! Money is integer minor units (`u64`, checked arithmetic). Funds move between the available
//! balance and holds: a hold is money reserved for a request (a bet's stake, an order) until it is
//! released (back to the balance) or settled (a payout, possibly zero, credited in its place). A
//! hold is named by its requester's key, so every operation is idempotent: reserving a hold that
//! exists or was closed recently changes nothing, and releasing or settling a hold that is not open
//! changes nothing — a payout is made exactly once.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

/// Most holds open at once in one wallet; another reserve is refused.
pub const MAX_HOLDS: usize = 1024;

/// How many closed holds and credits a wallet remembers to recognise a retry; older keys may be
/// reused (a retry that arrives after this many later operations is taken as new).
pub const REMEMBERED: usize = 4096;

/// Longest key of a hold or credit, in bytes.
pub const MAX_KEY: usize = 200;

/// One journaled operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Add funds (an operator's credit), once per key.
    Credit { key: String, amount: u64 },
    /// Move `amount` from the balance into a hold named `key`.
    Reserve { key: String, amount: u64 },
    /// Return a hold to the balance.
    Release { key: String },
    /// Close a hold, crediting `payout` in its place (0: the stake is lost).
    Settle { key: String, payout: u64 },
}

impl Op {
    /// The key the operation names.
    pub fn key(&self) -> &str {
        match self {
            Op::Credit { key, .. }
            | Op::Reserve { key, .. }
            | Op::Release { key }
            | Op::Settle { key, .. } => key,
        }
    }
}

/// What applying an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The state changed: journal the operation.
    Changed,
    /// Already done (a retry, or a hold already closed): nothing changed, nothing to journal.
    AlreadyDone,
}

/// Why an operation was refused; nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The balance is smaller than the amount.
    #[error("insufficient funds")]
    Insufficient,
    /// The result would not fit in 64 bits.
    #[error("amount too large")]
    Overflow,
    /// [`MAX_HOLDS`] holds are open.
    #[error("too many open holds")]
    TooManyHolds,
    /// Amounts must be positive.
    #[error("amount must be a positive integer")]
    Zero,
    /// Keys are 1 to [`MAX_KEY`] bytes.
    #[error("bad request key")]
    BadKey,
}

/// A wallet. Invariant: `balance + sum(holds)` changes only by credits and by settlements (the
/// payout in place of the hold).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Available funds.
    pub balance: u64,
    /// Open holds by key.
    pub holds: BTreeMap<String, u64>,
    /// Keys of recent credits and closed holds, oldest first, at most [`REMEMBERED`].
    recent: VecDeque<String>,
    #[serde(skip)]
    recent_set: HashSet<String>,
}

impl Ledger {
    /// Funds held.
    pub fn held(&self) -> u64 {
        self.holds.values().sum()
    }

    /// Whether `key` names an open hold or a credit or hold closed recently.
    pub fn knows(&self, key: &str) -> bool {
        self.holds.contains_key(key) || self.recent_set.contains(key)
    }

    /// Apply `op`; `Ok(Changed)` means it must be journaled.
    pub fn apply(&mut self, op: &Op) -> Result<Applied, Refusal> {
        let key = op.key();
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(Refusal::BadKey);
        }
        match op {
            Op::Credit { key, amount } => {
                if self.recent_set.contains(key) {
                    return Ok(Applied::AlreadyDone);
                }
                self.check_amount(*amount)?;
                self.balance = self.balance.checked_add(*amount).ok_or(Refusal::Overflow)?;
                self.remember(key);
            }
            Op::Reserve { key, amount } => {
                if self.knows(key) {
                    return Ok(Applied::AlreadyDone);
                }
                if *amount == 0 {
                    return Err(Refusal::Zero);
                }
                if self.holds.len() >= MAX_HOLDS {
                    return Err(Refusal::TooManyHolds);
                }
                self.balance = self.balance.checked_sub(*amount).ok_or(Refusal::Insufficient)?;
                self.holds.insert(key.clone(), *amount);
            }
            Op::Release { key } => {
                let Some(amount) = self.holds.get(key).copied() else { return Ok(Applied::AlreadyDone) };
                self.balance = self.balance.checked_add(amount).ok_or(Refusal::Overflow)?;
                self.holds.remove(key);
                self.remember(key);
            }
            Op::Settle { key, payout } => {
                if !self.holds.contains_key(key) {
                    return Ok(Applied::AlreadyDone);
                }
                self.balance = self.balance.checked_add(*payout).ok_or(Refusal::Overflow)?;
                self.holds.remove(key);
                self.remember(key);
            }
        }
        Ok(Applied::Changed)
    }

    /// A credit must be positive, and the balance and holds together must stay representable.
    fn check_amount(&self, amount: u64) -> Result<(), Refusal> {
        if amount == 0 {
            return Err(Refusal::Zero);
        }
        self.balance
            .checked_add(self.held())
            .and_then(|total| total.checked_add(amount))
            .map(|_| ())
            .ok_or(Refusal::Overflow)
    }

    fn remember(&mut self, key: &str) {
        if self.recent_set.insert(key.to_owned()) {
            self.recent.push_back(key.to_owned());
        }
        while self.recent.len() > REMEMBERED {
            if let Some(old) = self.recent.pop_front() {
                self.recent_set.remove(&old);
            }
        }
    }

    /// The state as a snapshot (JSON).
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a ledger serialises")
    }

    /// Rebuild from a snapshot and the entries after it, in order.
    pub fn replay<'a>(
        snapshot: Option<&[u8]>,
        entries: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Ledger, String> {
        let mut ledger = match snapshot {
            Some(bytes) => {
                let mut l: Ledger =
                    serde_json::from_slice(bytes).map_err(|e| format!("wallet snapshot: {e}"))?;
                l.recent_set = l.recent.iter().cloned().collect();
                l
            }
            None => Ledger::default(),
        };
        for data in entries {
            let op: Op = serde_json::from_slice(data).map_err(|e| format!("wallet entry: {e}"))?;
            ledger.apply(&op).map_err(|e| format!("wallet entry {op:?} does not apply: {e}"))?;
        }
        Ok(ledger)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn credit(key: &str, amount: u64) -> Op {
        Op::Credit { key: key.into(), amount }
    }
    fn reserve(key: &str, amount: u64) -> Op {
        Op::Reserve { key: key.into(), amount }
    }

    #[test]
    fn reserve_release_and_settle_move_funds_once() {
        let mut l = Ledger::default();
        assert_eq!(l.apply(&credit("c1", 100)), Ok(Applied::Changed));
        assert_eq!(l.apply(&credit("c1", 100)), Ok(Applied::AlreadyDone));
        assert_eq!(l.apply(&reserve("b1", 30)), Ok(Applied::Changed));
        assert_eq!(l.apply(&reserve("b1", 30)), Ok(Applied::AlreadyDone));
        assert_eq!((l.balance, l.held()), (70, 30));
        assert_eq!(l.apply(&reserve("b2", 71)), Err(Refusal::Insufficient));
        assert_eq!(l.apply(&Op::Settle { key: "b1".into(), payout: 75 }), Ok(Applied::Changed));
        assert_eq!(l.apply(&Op::Settle { key: "b1".into(), payout: 75 }), Ok(Applied::AlreadyDone));
        assert_eq!((l.balance, l.held()), (145, 0));
        // A closed hold is not opened again by a late retry of its reserve.
        assert_eq!(l.apply(&reserve("b1", 30)), Ok(Applied::AlreadyDone));
        assert_eq!(l.apply(&reserve("b3", 45)), Ok(Applied::Changed));
        assert_eq!(l.apply(&Op::Release { key: "b3".into() }), Ok(Applied::Changed));
        assert_eq!((l.balance, l.held()), (145, 0));
    }

    #[test]
    fn bad_amounts_and_keys_change_nothing() {
        let mut l = Ledger::default();
        l.apply(&credit("c", u64::MAX - 1)).unwrap();
        let before = l.clone();
        assert_eq!(l.apply(&credit("d", 2)), Err(Refusal::Overflow));
        assert_eq!(l.apply(&reserve("z", 0)), Err(Refusal::Zero));
        assert_eq!(l.apply(&reserve("", 1)), Err(Refusal::BadKey));
        assert_eq!(l.apply(&reserve(&"k".repeat(MAX_KEY + 1), 1)), Err(Refusal::BadKey));
        assert_eq!(l, before);
    }

    #[test]
    fn holds_are_bounded() {
        let mut l = Ledger::default();
        l.apply(&credit("c", 10_000)).unwrap();
        for i in 0..MAX_HOLDS {
            l.apply(&reserve(&format!("h{i}"), 1)).unwrap();
        }
        assert_eq!(l.apply(&reserve("one more", 1)), Err(Refusal::TooManyHolds));
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = (0..12u8).prop_map(|k| format!("k{k}"));
        prop_oneof![
            (key.clone(), 0..1_000u64).prop_map(|(key, amount)| Op::Credit { key, amount }),
            (key.clone(), 0..400u64).prop_map(|(key, amount)| Op::Reserve { key, amount }),
            key.clone().prop_map(|key| Op::Release { key }),
            (key, 0..800u64).prop_map(|(key, payout)| Op::Settle { key, payout }),
        ]
    }

    proptest! {
        /// Money is conserved except by credits and settlements; retries change nothing; replaying
        /// the journal (with a snapshot anywhere in it) gives the same ledger.
        #[test]
        fn funds_are_conserved_and_replay_is_exact(ops in prop::collection::vec(op(), 0..200), cut in 0usize..200) {
            let mut l = Ledger::default();
            let mut journal: Vec<Vec<u8>> = Vec::new();
            let mut snapshot = None;
            let mut expected_total: u64 = 0;
            for (i, op) in ops.iter().enumerate() {
                let before = l.clone();
                let total_before = l.balance + l.held();
                match l.apply(op) {
                    Ok(Applied::Changed) => {
                        journal.push(serde_json::to_vec(op).unwrap());
                        match op {
                            Op::Credit { amount, .. } => expected_total += amount,
                            Op::Settle { payout, .. } => {
                                expected_total = expected_total - before.holds[op.key()] + payout
                            }
                            Op::Reserve { .. } | Op::Release { .. } => {}
                        }
                        // A retry of the same operation is a no-op.
                        let after = l.clone();
                        prop_assert_eq!(l.apply(op), Ok(Applied::AlreadyDone));
                        prop_assert_eq!(&l, &after);
                    }
                    Ok(Applied::AlreadyDone) | Err(_) => {
                        prop_assert_eq!(&l, &before);
                        prop_assert_eq!(l.balance + l.held(), total_before);
                    }
                }
                prop_assert_eq!(l.balance + l.held(), expected_total);
                if i + 1 == cut {
                    snapshot = Some((journal.len(), l.snapshot()));
                }
            }
            let replayed = Ledger::replay(None, journal.iter().map(|e| &e[..])).unwrap();
            prop_assert_eq!(&replayed, &l);
            if let Some((upto, snap)) = snapshot {
                let resumed = Ledger::replay(Some(&snap), journal[upto..].iter().map(|e| &e[..])).unwrap();
                prop_assert_eq!(&resumed, &l);
            }
        }
    }
}
