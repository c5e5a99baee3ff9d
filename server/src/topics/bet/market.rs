//! A bet market as a pure state machine: the operations its journal stream (`bet/<market>`) holds and
//! what each does. The owner worker checks an operation with [`Market::apply`], journals it, and acts
//! on it once durable; loading replays the stream through the same function.
//!
//! Odds are integers in hundredths of decimal odds (`250` is 2.50: a winning stake of 100 pays 250).
//! A stake is held in the bettor's wallet from before the bet is accepted until the market settles:
//! a winner is paid `stake * odds / 100` (rounded down), a loser nothing, a void market refunds the
//! stake. Settling is final: a market settles or voids once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Lowest and highest odds accepted (1.01 to 1000.00).
pub const MIN_ODDS: u64 = 101;
pub const MAX_ODDS: u64 = 100_000;

/// Most outcomes in a market.
pub const MAX_OUTCOMES: usize = 64;

/// Longest outcome name, in bytes.
pub const MAX_OUTCOME: usize = 64;

/// Most bets one market takes; later ones are refused.
pub const MAX_BETS: usize = 100_000;

/// Where a market stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created by no operator yet.
    Unknown,
    Open,
    Suspended,
    Settled,
    Void,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Open => "open",
            Status::Suspended => "suspended",
            Status::Settled => "settled",
            Status::Void => "void",
        }
    }
}

/// A bet's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetState {
    Open,
    Won,
    Lost,
    Void,
}

/// One accepted bet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bet {
    pub user: String,
    pub req_id: String,
    pub outcome: String,
    pub stake: u64,
    pub odds: u64,
    pub state: BetState,
}

impl Bet {
    /// What the wallet credits when the bet is settled: the payout of a winner, the stake of a void
    /// bet, nothing for a loser or an open bet.
    pub fn payout(&self) -> u64 {
        match self.state {
            // MAX_AMOUNT * MAX_ODDS / 100 is far below u64::MAX; `u128` keeps any stake exact.
            BetState::Won => {
                u64::try_from(u128::from(self.stake) * u128::from(self.odds) / 100).unwrap_or(u64::MAX)
            }
            BetState::Void => self.stake,
            BetState::Open | BetState::Lost => 0,
        }
    }
}

/// One journaled operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum BetOp {
    /// Open the market with its outcomes and their odds.
    Create {
        outcomes: BTreeMap<String, u64>,
    },
    /// Change one outcome's odds.
    Odds {
        outcome: String,
        odds: u64,
    },
    Suspend,
    Resume,
    /// Accept a bet whose stake the bettor's wallet holds.
    Place {
        user: String,
        req_id: String,
        outcome: String,
        stake: u64,
        odds: u64,
    },
    /// Settle: bets on `winner` win, the others lose.
    Settle {
        winner: String,
    },
    /// Call the market off: every stake is refunded.
    Void,
}

/// Why an operation was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BetError {
    #[error("unknown market")]
    UnknownMarket,
    #[error("market exists already")]
    Exists,
    #[error("market is suspended")]
    Suspended,
    #[error("market is closed (settled or void)")]
    Closed,
    #[error("market is not suspended")]
    NotSuspended,
    #[error("unknown outcome")]
    UnknownOutcome,
    #[error("odds must be integers from {MIN_ODDS} to {MAX_ODDS} (hundredths)")]
    BadOdds,
    #[error("a market has 1 to {MAX_OUTCOMES} outcomes named by 1 to {MAX_OUTCOME} printable bytes")]
    BadOutcomes,
    /// The bettor saw other odds than the current ones.
    #[error("odds changed: now {0}")]
    OddsChanged(u64),
    #[error("market takes no more bets")]
    Full,
    #[error("bet exists already")]
    Duplicate,
}

/// A market. Invariant: bets are `Open` exactly while the status is `Open` or `Suspended`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Market {
    pub status: Status,
    pub outcomes: BTreeMap<String, u64>,
    /// Bumped by every odds change.
    pub version: u64,
    pub winner: Option<String>,
    /// Bets by (user, req_id).
    pub bets: BTreeMap<(String, String), Bet>,
}

impl Default for Market {
    fn default() -> Self {
        Market {
            status: Status::Unknown,
            outcomes: BTreeMap::new(),
            version: 0,
            winner: None,
            bets: BTreeMap::new(),
        }
    }
}

/// Whether `name` may name an outcome.
pub fn valid_outcome(name: &str) -> bool {
    (1..=MAX_OUTCOME).contains(&name.len()) && !name.chars().any(char::is_control)
}

impl Market {
    /// Whether a bet on `outcome` at `odds` would be accepted now (the wallet's hold aside).
    pub fn check_place(&self, key: &(String, String), outcome: &str, odds: u64) -> Result<(), BetError> {
        match self.status {
            Status::Unknown => return Err(BetError::UnknownMarket),
            Status::Suspended => return Err(BetError::Suspended),
            Status::Settled | Status::Void => return Err(BetError::Closed),
            Status::Open => {}
        }
        if self.bets.contains_key(key) {
            return Err(BetError::Duplicate);
        }
        let current = *self.outcomes.get(outcome).ok_or(BetError::UnknownOutcome)?;
        if current != odds {
            return Err(BetError::OddsChanged(current));
        }
        if self.bets.len() >= MAX_BETS {
            return Err(BetError::Full);
        }
        Ok(())
    }

    /// Apply `op`, or refuse it leaving the market unchanged.
    pub fn apply(&mut self, op: &BetOp) -> Result<(), BetError> {
        match op {
            BetOp::Create { outcomes } => {
                if self.status != Status::Unknown {
                    return Err(BetError::Exists);
                }
                if outcomes.is_empty()
                    || outcomes.len() > MAX_OUTCOMES
                    || !outcomes.keys().all(|o| valid_outcome(o))
                {
                    return Err(BetError::BadOutcomes);
                }
                if !outcomes.values().all(|o| (MIN_ODDS..=MAX_ODDS).contains(o)) {
                    return Err(BetError::BadOdds);
                }
                self.outcomes = outcomes.clone();
                self.status = Status::Open;
                self.version = 1;
            }
            BetOp::Odds { outcome, odds } => {
                self.check_live()?;
                if !(MIN_ODDS..=MAX_ODDS).contains(odds) {
                    return Err(BetError::BadOdds);
                }
                let slot = self.outcomes.get_mut(outcome).ok_or(BetError::UnknownOutcome)?;
                *slot = *odds;
                self.version += 1;
            }
            BetOp::Suspend => {
                self.check_live()?;
                if self.status == Status::Suspended {
                    return Err(BetError::Suspended);
                }
                self.status = Status::Suspended;
            }
            BetOp::Resume => {
                self.check_live()?;
                if self.status != Status::Suspended {
                    return Err(BetError::NotSuspended);
                }
                self.status = Status::Open;
            }
            BetOp::Place { user, req_id, outcome, stake, odds } => {
                let key = (user.clone(), req_id.clone());
                self.check_place(&key, outcome, *odds)?;
                let bet = Bet {
                    user: user.clone(),
                    req_id: req_id.clone(),
                    outcome: outcome.clone(),
                    stake: *stake,
                    odds: *odds,
                    state: BetState::Open,
                };
                self.bets.insert(key, bet);
            }
            BetOp::Settle { winner } => {
                self.check_live()?;
                if !self.outcomes.contains_key(winner) {
                    return Err(BetError::UnknownOutcome);
                }
                for bet in self.bets.values_mut() {
                    bet.state = if bet.outcome == *winner { BetState::Won } else { BetState::Lost };
                }
                self.status = Status::Settled;
                self.winner = Some(winner.clone());
            }
            BetOp::Void => {
                self.check_live()?;
                for bet in self.bets.values_mut() {
                    bet.state = BetState::Void;
                }
                self.status = Status::Void;
            }
        }
        Ok(())
    }

    /// Open or suspended: the market can still change.
    fn check_live(&self) -> Result<(), BetError> {
        match self.status {
            Status::Unknown => Err(BetError::UnknownMarket),
            Status::Settled | Status::Void => Err(BetError::Closed),
            Status::Open | Status::Suspended => Ok(()),
        }
    }

    /// Stakes of open bets.
    pub fn open_stakes(&self) -> u64 {
        self.bets.values().filter(|b| b.state == BetState::Open).map(|b| b.stake).sum()
    }

    /// Whether the market is settled or void: its bets' payouts are due.
    pub fn closed(&self) -> bool {
        matches!(self.status, Status::Settled | Status::Void)
    }

    /// Rebuild from a snapshot and the entries after it (each a JSON array of operations).
    pub fn replay<'a>(
        snapshot: Option<&[u8]>,
        entries: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Market, String> {
        let mut market = match snapshot {
            Some(bytes) => {
                let snap: Snapshot =
                    serde_json::from_slice(bytes).map_err(|e| format!("market snapshot: {e}"))?;
                snap.into_market()
            }
            None => Market::default(),
        };
        for data in entries {
            let ops: Vec<BetOp> = serde_json::from_slice(data).map_err(|e| format!("market entry: {e}"))?;
            for op in &ops {
                market.apply(op).map_err(|e| format!("market entry {op:?} does not apply: {e}"))?;
            }
        }
        Ok(market)
    }

    /// The state as a snapshot (JSON).
    pub fn snapshot(&self) -> Vec<u8> {
        let snap = Snapshot {
            status: self.status,
            outcomes: self.outcomes.clone(),
            version: self.version,
            winner: self.winner.clone(),
            bets: self.bets.values().cloned().collect(),
        };
        serde_json::to_vec(&snap).expect("a market serialises")
    }
}

/// A market as stored: JSON has no tuple keys, so bets are a list.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    status: Status,
    outcomes: BTreeMap<String, u64>,
    version: u64,
    winner: Option<String>,
    bets: Vec<Bet>,
}

impl Snapshot {
    fn into_market(self) -> Market {
        let bets = self.bets.into_iter().map(|b| ((b.user.clone(), b.req_id.clone()), b)).collect();
        Market {
            status: self.status,
            outcomes: self.outcomes,
            version: self.version,
            winner: self.winner,
            bets,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::topics::wallet::ledger::{Applied, Ledger, Op};

    fn open() -> Market {
        let mut m = Market::default();
        let outcomes = [("a".to_string(), 200), ("b".to_string(), 150)].into_iter().collect();
        m.apply(&BetOp::Create { outcomes }).unwrap();
        m
    }

    fn place(user: &str, req: &str, outcome: &str, stake: u64, odds: u64) -> BetOp {
        BetOp::Place { user: user.into(), req_id: req.into(), outcome: outcome.into(), stake, odds }
    }

    #[test]
    fn refusals_change_nothing() {
        let mut m = Market::default();
        assert_eq!(m.apply(&place("u", "r", "a", 1, 200)), Err(BetError::UnknownMarket));
        assert_eq!(m.apply(&BetOp::Suspend), Err(BetError::UnknownMarket));
        let mut m = open();
        let before = m.clone();
        assert_eq!(m.apply(&BetOp::Odds { outcome: "a".into(), odds: 100 }), Err(BetError::BadOdds));
        assert_eq!(m.apply(&BetOp::Odds { outcome: "z".into(), odds: 300 }), Err(BetError::UnknownOutcome));
        assert_eq!(m.apply(&place("u", "r", "a", 1, 199)), Err(BetError::OddsChanged(200)));
        assert_eq!(m.apply(&BetOp::Resume), Err(BetError::NotSuspended));
        assert_eq!(m.apply(&BetOp::Settle { winner: "z".into() }), Err(BetError::UnknownOutcome));
        assert_eq!(m, before);
        m.apply(&BetOp::Suspend).unwrap();
        assert_eq!(m.apply(&place("u", "r", "a", 1, 200)), Err(BetError::Suspended));
        m.apply(&BetOp::Resume).unwrap();
        m.apply(&place("u", "r", "a", 10, 200)).unwrap();
        assert_eq!(m.apply(&place("u", "r", "a", 10, 200)), Err(BetError::Duplicate));
        m.apply(&BetOp::Settle { winner: "a".into() }).unwrap();
        assert_eq!(m.apply(&BetOp::Void), Err(BetError::Closed));
        assert_eq!(m.bets.values().map(Bet::payout).sum::<u64>(), 20);
    }

    #[test]
    fn snapshot_and_replay_agree() {
        let mut m = open();
        let ops =
            [place("u", "1", "a", 7, 200), BetOp::Odds { outcome: "b".into(), odds: 400 }, BetOp::Suspend];
        let mut entries = Vec::new();
        for op in &ops {
            m.apply(op).unwrap();
            entries.push(serde_json::to_vec(&[op]).unwrap());
        }
        let snap = open().snapshot();
        assert_eq!(Market::replay(Some(&snap), entries.iter().map(|e| &e[..])).unwrap(), m);
        assert_eq!(Market::replay(Some(&m.snapshot()), std::iter::empty()).unwrap(), m);
    }

    /// What a test run does, as the owners would: the market asks the wallet to hold a stake, then
    /// takes the bet or releases the hold; a restart replays both journals.
    #[derive(Debug, Clone)]
    enum Step {
        Place { user: usize, req: u8, outcome: bool, stake: u64 },
        Odds(u64),
        Suspend,
        Resume,
        Credit { user: usize, amount: u64 },
        Restart,
        Close { void: bool, winner: bool },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..3usize, 0..6u8, any::<bool>(), 0..120u64)
                .prop_map(|(user, req, outcome, stake)| Step::Place { user, req, outcome, stake }),
            1 => (90..400u64).prop_map(Step::Odds),
            1 => Just(Step::Suspend),
            1 => Just(Step::Resume),
            2 => (0..3usize, 1..300u64).prop_map(|(user, amount)| Step::Credit { user, amount }),
            1 => Just(Step::Restart),
            1 => (any::<bool>(), any::<bool>()).prop_map(|(void, winner)| Step::Close { void, winner }),
        ]
    }

    struct World {
        market: Market,
        wallets: Vec<Ledger>,
        market_log: Vec<Vec<u8>>,
        wallet_logs: Vec<Vec<Vec<u8>>>,
        credited: u64,
    }

    impl World {
        fn wallet(
            &mut self,
            user: usize,
            op: &Op,
        ) -> Result<Applied, crate::topics::wallet::ledger::Refusal> {
            let r = self.wallets[user].apply(op);
            if r == Ok(Applied::Changed) {
                self.wallet_logs[user].push(serde_json::to_vec(op).unwrap());
            }
            r
        }
        fn market(&mut self, op: &BetOp) -> Result<(), BetError> {
            self.market.apply(op)?;
            self.market_log.push(serde_json::to_vec(&[op]).unwrap());
            Ok(())
        }
        fn total(&self) -> u64 {
            self.wallets.iter().map(|w| w.balance + w.held()).sum()
        }
    }

    proptest! {
        /// Until settlement, balances plus held stakes equal what was credited; every open bet's stake
        /// is held exactly once; retries (the same req id again) and restarts (replaying both
        /// journals) change nothing; settling pays each bet its payout once.
        #[test]
        fn money_is_conserved_until_settlement(steps in prop::collection::vec(step(), 0..120)) {
            let mut w = World {
                market: open(),
                wallets: vec![Ledger::default(); 3],
                market_log: vec![serde_json::to_vec(&[BetOp::Create {
                    outcomes: [("a".to_string(), 200), ("b".to_string(), 150)].into_iter().collect(),
                }]).unwrap()],
                wallet_logs: vec![Vec::new(); 3],
                credited: 0,
            };
            let mut credits = 0;
            let mut paid_out = 0u64;
            let mut closed = false;
            for s in steps {
                match s {
                    Step::Place { user, req, outcome, stake } => {
                        let name = format!("u{user}");
                        let req_id = format!("r{req}");
                        let outcome = if outcome { "a" } else { "b" };
                        let odds = w.market.outcomes[outcome];
                        let key = format!("bet:m:{req_id}");
                        let taken = w.market.bets.contains_key(&(name.clone(), req_id.clone()));
                        if taken || w.market.check_place(&(name.clone(), req_id.clone()), outcome, odds).is_err() {
                            continue;
                        }
                        if stake == 0 || w.wallet(user, &Op::Reserve { key: key.clone(), amount: stake }).is_err() {
                            continue;
                        }
                        if w.market(&place(&name, &req_id, outcome, stake, odds)).is_err() {
                            w.wallet(user, &Op::Release { key }).unwrap();
                        }
                    }
                    Step::Odds(odds) => { let _ = w.market(&BetOp::Odds { outcome: "a".into(), odds }); }
                    Step::Suspend => { let _ = w.market(&BetOp::Suspend); }
                    Step::Resume => { let _ = w.market(&BetOp::Resume); }
                    Step::Credit { user, amount } => {
                        credits += 1;
                        if w.wallet(user, &Op::Credit { key: format!("c{credits}"), amount }) == Ok(Applied::Changed) {
                            w.credited += amount;
                        }
                    }
                    Step::Restart => {
                        w.market = Market::replay(None, w.market_log.iter().map(|e| &e[..])).unwrap();
                        for u in 0..3 {
                            w.wallets[u] = Ledger::replay(None, w.wallet_logs[u].iter().map(|e| &e[..])).unwrap();
                        }
                    }
                    Step::Close { void, winner } => {
                        let op = if void { BetOp::Void } else { BetOp::Settle { winner: if winner { "a" } else { "b" }.into() } };
                        if w.market(&op).is_ok() {
                            closed = true;
                            // Pay twice, as a resend after a restart would: the second is a no-op.
                            for _ in 0..2 {
                                let bets: Vec<Bet> = w.market.bets.values().cloned().collect();
                                for bet in bets {
                                    let user: usize = bet.user[1..].parse().unwrap();
                                    let op = Op::Settle { key: format!("bet:m:{}", bet.req_id), payout: bet.payout() };
                                    if w.wallet(user, &op) == Ok(Applied::Changed) {
                                        paid_out += bet.payout();
                                    }
                                }
                            }
                        }
                    }
                }
                let held: u64 = w.wallets.iter().map(Ledger::held).sum();
                if !closed {
                    prop_assert_eq!(w.total(), w.credited);
                    prop_assert_eq!(held, w.market.open_stakes());
                } else {
                    prop_assert_eq!(held, 0);
                    let staked: u64 = w.market.bets.values().map(|b| b.stake).sum();
                    prop_assert_eq!(w.total(), w.credited - staked + paid_out);
                }
            }
        }
    }
}
