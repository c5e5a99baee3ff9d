//! A price-time priority limit order book for one symbol: pure and deterministic (no I/O, no clock, no
//! randomness; hash maps are used for lookups only, never iterated into output).
//!
//! Each price level is a FIFO of resting orders kept as a doubly linked list through a slab, so adding
//! at the tail, filling at the head and cancelling from the middle are all O(1); the levels of a side
//! sit in a `BTreeMap` by price. An incoming order trades against the best opposite level, oldest order
//! first, at the resting order's price, until it is filled or the next price no longer crosses its limit.
//!
//! Self-trade prevention: when an incoming order meets a resting order of the same account, the resting
//! order is cancelled (`CancelReason::SelfTrade`) and matching goes on. The newest instruction is taken
//! as the account's intent (the stale quote goes), the incoming order keeps its priority, and an account
//! can never trade with itself, so no wash trade is ever printed.

use std::collections::hash_map::HashMap;
use std::collections::BTreeMap;
use std::hash::{BuildHasherDefault, Hasher};

use slab::Slab;

use super::depth::{DepthChanges, Level as DepthLevel};
use super::order::{
    AccountId, CancelReason, Command, Event, Limits, OrderId, OrderKind, Price, Qty, RejectReason, Side,
    TimeInForce,
};

/// End of a level's list.
const NIL: u32 = u32::MAX;

/// A resting order: a node of its level's FIFO.
#[derive(Debug, Clone)]
struct Node {
    id: OrderId,
    account: AccountId,
    side: Side,
    price: Price,
    /// Unfilled quantity; always ≥ 1 while the node is in the slab.
    remaining: Qty,
    /// Quantity traded so far.
    filled: Qty,
    /// Older neighbour in the level (NIL at the head).
    prev: u32,
    /// Newer neighbour in the level (NIL at the tail).
    next: u32,
}

/// One price level: its orders oldest first, and their total.
#[derive(Debug, Clone)]
struct Level {
    /// Sum of `remaining` over the level's orders; never 0 while the level is in the map.
    qty: Qty,
    head: u32,
    tail: u32,
}

/// A resting order as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestingOrder {
    pub id: OrderId,
    pub account: AccountId,
    pub side: Side,
    pub price: Price,
    pub remaining: Qty,
    pub filled: Qty,
}

/// Order ids are sequential, so a multiplicative hash spreads them perfectly (a bijection on the low
/// bits that pick the bucket) at a fraction of SipHash's cost; nothing here is keyed by user input.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The order book of one symbol.
#[derive(Debug, Clone)]
pub struct Book {
    limits: Limits,
    /// Bid levels by price; the best bid is the last key.
    bids: BTreeMap<Price, Level>,
    /// Ask levels by price; the best ask is the first key.
    asks: BTreeMap<Price, Level>,
    /// Every resting order, and only those.
    orders: Slab<Node>,
    /// Resting order id → its slab key.
    index: HashMap<OrderId, u32, BuildHasherDefault<IdHasher>>,
    /// The id the next accepted order gets.
    next_id: OrderId,
    /// How many commands were accepted: the book's version, which depth snapshots and changes carry.
    seq: u64,
    /// Levels touched since the last `take_depth_changes`.
    changes: DepthChanges,
}

impl Book {
    /// An empty book. Panics if `limits.max_orders` does not fit the slab's 32-bit links.
    pub fn new(limits: Limits) -> Self {
        assert!(limits.max_orders < NIL as usize, "max_orders must be below 2^32 - 1");
        Book {
            limits,
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            orders: Slab::new(),
            index: HashMap::default(),
            next_id: 1,
            seq: 0,
            changes: DepthChanges::default(),
        }
    }

    /// The bounds this book enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many commands were accepted so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The id the next accepted order will get.
    pub fn next_order_id(&self) -> OrderId {
        self.next_id
    }

    /// How many orders rest on the book.
    pub fn resting_count(&self) -> usize {
        self.orders.len()
    }

    /// Run one command, appending what happened to `out`. A command whose first event is `Rejected`
    /// changed nothing; any other is accepted and belongs in the command log.
    pub fn execute(&mut self, cmd: &Command, out: &mut Vec<Event>) {
        match *cmd {
            Command::Place { account, side, kind, qty } => self.place(account, side, kind, qty, out),
            Command::Cancel { account, order } => self.cancel(account, order, out),
        }
    }

    /// Whether `cmd` would be accepted, without running it.
    pub fn check(&self, cmd: &Command) -> Result<(), RejectReason> {
        match *cmd {
            Command::Place { side: _, kind, qty, .. } => self.check_place(kind, qty),
            Command::Cancel { account, order } => self.find_own(account, order).map(|_| ()),
        }
    }

    fn check_place(&self, kind: OrderKind, qty: Qty) -> Result<(), RejectReason> {
        if qty == 0 {
            return Err(RejectReason::ZeroQuantity);
        }
        if qty > self.limits.max_qty {
            return Err(RejectReason::QuantityTooLarge);
        }
        if let OrderKind::Limit { price, tif } = kind {
            if price == 0 {
                return Err(RejectReason::ZeroPrice);
            }
            if price > self.limits.max_price {
                return Err(RejectReason::PriceTooHigh);
            }
            if tif == TimeInForce::Gtc && self.orders.len() >= self.limits.max_orders {
                return Err(RejectReason::BookFull);
            }
        }
        Ok(())
    }

    fn find_own(&self, account: AccountId, order: OrderId) -> Result<u32, RejectReason> {
        let key = *self.index.get(&order).ok_or(RejectReason::UnknownOrder)?;
        if self.orders[key as usize].account != account {
            return Err(RejectReason::NotOwner);
        }
        Ok(key)
    }

    fn place(&mut self, account: AccountId, side: Side, kind: OrderKind, qty: Qty, out: &mut Vec<Event>) {
        if let Err(reason) = self.check_place(kind, qty) {
            out.push(Event::Rejected { account, reason });
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.seq += 1;
        out.push(Event::Accepted { order: id, account, side, kind, qty });

        let limit = match kind {
            OrderKind::Limit { price, .. } => Some(price),
            OrderKind::Market => None,
        };
        let remaining = self.match_incoming(id, account, side, limit, qty, out);
        let filled = qty - remaining;
        if remaining == 0 {
            out.push(Event::Done { order: id, account, filled });
            return;
        }
        match kind {
            OrderKind::Limit { price, tif: TimeInForce::Gtc } => {
                self.rest(id, account, side, price, remaining, filled)
            }
            OrderKind::Limit { tif: TimeInForce::Ioc, .. } | OrderKind::Market => {
                out.push(Event::Cancelled {
                    order: id,
                    account,
                    qty: remaining,
                    reason: CancelReason::Unfilled,
                });
                out.push(Event::Done { order: id, account, filled });
            }
        }
    }

    /// Trade an incoming order against the opposite side; returns its unfilled quantity.
    fn match_incoming(
        &mut self,
        taker: OrderId,
        account: AccountId,
        side: Side,
        limit: Option<Price>,
        qty: Qty,
        out: &mut Vec<Event>,
    ) -> Qty {
        let Book { bids, asks, orders, index, changes, .. } = self;
        let levels = match side {
            Side::Buy => asks,
            Side::Sell => bids,
        };
        let maker_side = side.opposite();
        let mut remaining = qty;
        while remaining > 0 {
            let best = match side {
                Side::Buy => levels.first_entry(),
                Side::Sell => levels.last_entry(),
            };
            let Some(mut entry) = best else { break };
            let price = *entry.key();
            if limit.is_some_and(|l| !side.crosses(l, price)) {
                break;
            }
            let level = entry.get_mut();
            while remaining > 0 && level.head != NIL {
                let key = level.head;
                let maker = &mut orders[key as usize];
                if maker.account == account {
                    level.qty -= maker.remaining;
                    out.push(Event::Cancelled {
                        order: maker.id,
                        account,
                        qty: maker.remaining,
                        reason: CancelReason::SelfTrade,
                    });
                    out.push(Event::Done { order: maker.id, account, filled: maker.filled });
                    pop_head(orders, index, level);
                    continue;
                }
                let fill = remaining.min(maker.remaining);
                remaining -= fill;
                maker.remaining -= fill;
                maker.filled += fill;
                level.qty -= fill;
                out.push(Event::Trade {
                    maker: maker.id,
                    maker_account: maker.account,
                    taker,
                    taker_account: account,
                    taker_side: side,
                    price,
                    qty: fill,
                });
                if maker.remaining == 0 {
                    out.push(Event::Done { order: maker.id, account: maker.account, filled: maker.filled });
                    pop_head(orders, index, level);
                }
            }
            changes.touch(maker_side, price);
            if level.head == NIL {
                entry.remove();
            }
        }
        remaining
    }

    /// Put the remainder of an accepted GTC order at the tail of its level.
    fn rest(
        &mut self,
        id: OrderId,
        account: AccountId,
        side: Side,
        price: Price,
        remaining: Qty,
        filled: Qty,
    ) {
        let levels = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let level = levels.entry(price).or_insert(Level { qty: 0, head: NIL, tail: NIL });
        let node = Node { id, account, side, price, remaining, filled, prev: level.tail, next: NIL };
        let key = self.orders.insert(node) as u32;
        if level.tail == NIL {
            level.head = key;
        } else {
            self.orders[level.tail as usize].next = key;
        }
        level.tail = key;
        level.qty += remaining;
        self.index.insert(id, key);
        self.changes.touch(side, price);
    }

    fn cancel(&mut self, account: AccountId, order: OrderId, out: &mut Vec<Event>) {
        let key = match self.find_own(account, order) {
            Ok(key) => key,
            Err(reason) => {
                out.push(Event::Rejected { account, reason });
                return;
            }
        };
        self.seq += 1;
        let node = self.orders.remove(key as usize);
        self.index.remove(&order);
        let levels = match node.side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let std::collections::btree_map::Entry::Occupied(mut entry) = levels.entry(node.price) else {
            unreachable!("a resting order's level exists");
        };
        let level = entry.get_mut();
        level.qty -= node.remaining;
        if node.prev == NIL {
            level.head = node.next;
        } else {
            self.orders[node.prev as usize].next = node.next;
        }
        if node.next == NIL {
            level.tail = node.prev;
        } else {
            self.orders[node.next as usize].prev = node.prev;
        }
        if level.head == NIL {
            entry.remove();
        }
        self.changes.touch(node.side, node.price);
        out.push(Event::Cancelled { order, account, qty: node.remaining, reason: CancelReason::Requested });
        out.push(Event::Done { order, account, filled: node.filled });
    }

    /// The best bid and its total quantity.
    pub fn best_bid(&self) -> Option<(Price, Qty)> {
        self.bids.last_key_value().map(|(p, l)| (*p, l.qty))
    }

    /// The best ask and its total quantity.
    pub fn best_ask(&self) -> Option<(Price, Qty)> {
        self.asks.first_key_value().map(|(p, l)| (*p, l.qty))
    }

    /// The total resting quantity at `price` on `side` (0 if none).
    pub fn level_qty(&self, side: Side, price: Price) -> Qty {
        let levels = match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        };
        levels.get(&price).map_or(0, |l| l.qty)
    }

    /// The top `n` levels of each side, best first.
    pub fn depth(&self, n: usize) -> (Vec<DepthLevel>, Vec<DepthLevel>) {
        let level = |(price, l): (&Price, &Level)| DepthLevel { price: *price, qty: l.qty };
        let bids = self.bids.iter().rev().take(n).map(level).collect();
        let asks = self.asks.iter().take(n).map(level).collect();
        (bids, asks)
    }

    /// A resting order, if `order` rests.
    pub fn order(&self, order: OrderId) -> Option<RestingOrder> {
        self.index.get(&order).map(|key| view(&self.orders[*key as usize]))
    }

    /// Every resting order in priority order: bids best first, then asks best first, oldest first within
    /// a level.
    pub fn resting(&self) -> Vec<RestingOrder> {
        let mut all = Vec::with_capacity(self.orders.len());
        for level in self.bids.values().rev().chain(self.asks.values()) {
            let mut key = level.head;
            while key != NIL {
                let node = &self.orders[key as usize];
                all.push(view(node));
                key = node.next;
            }
        }
        all
    }

    /// The levels changed since the last call, each with its quantity now (0: the level is gone), in
    /// price order per side; `None` if more levels changed than are tracked between calls, in which case
    /// the caller sends a fresh `depth` instead. Call it after each command or batch of commands.
    pub fn take_depth_changes(&mut self, out: &mut Vec<(Side, DepthLevel)>) -> Option<()> {
        let Book { bids, asks, changes, .. } = self;
        changes.drain(
            |side, price| {
                let levels = match side {
                    Side::Buy => &*bids,
                    Side::Sell => &*asks,
                };
                levels.get(&price).map_or(0, |l| l.qty)
            },
            out,
        )
    }

    /// Every structural invariant, checked the slow way; for tests.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        if let (Some((bid, _)), Some((ask, _))) = (self.best_bid(), self.best_ask()) {
            if bid >= ask {
                return Err(format!("crossed: bid {bid} >= ask {ask}"));
            }
        }
        let mut seen = 0;
        for (side, levels) in [(Side::Buy, &self.bids), (Side::Sell, &self.asks)] {
            for (price, level) in levels {
                let (mut key, mut prev, mut sum, mut last_id) = (level.head, NIL, 0, 0);
                while key != NIL {
                    let node = &self.orders[key as usize];
                    if node.side != side || node.price != *price || node.prev != prev {
                        return Err(format!("order {} misplaced or mislinked", node.id));
                    }
                    if node.remaining == 0 || node.id <= last_id || self.index.get(&node.id) != Some(&key) {
                        return Err(format!("order {} empty, out of time order or unindexed", node.id));
                    }
                    sum += node.remaining;
                    (prev, last_id, key) = (key, node.id, node.next);
                    seen += 1;
                }
                if level.tail != prev || sum != level.qty || sum == 0 {
                    return Err(format!("level {side:?} {price}: tail or total wrong or empty"));
                }
            }
        }
        if seen != self.orders.len() || seen != self.index.len() {
            return Err(format!(
                "{seen} linked, {} in slab, {} indexed",
                self.orders.len(),
                self.index.len()
            ));
        }
        Ok(())
    }
}

/// Unlink and free the head of `level` (whose quantity the caller has already taken off).
fn pop_head(
    orders: &mut Slab<Node>,
    index: &mut HashMap<OrderId, u32, BuildHasherDefault<IdHasher>>,
    level: &mut Level,
) {
    let node = orders.remove(level.head as usize);
    index.remove(&node.id);
    level.head = node.next;
    if node.next == NIL {
        level.tail = NIL;
    } else {
        orders[node.next as usize].prev = NIL;
    }
}

fn view(node: &Node) -> RestingOrder {
    RestingOrder {
        id: node.id,
        account: node.account,
        side: node.side,
        price: node.price,
        remaining: node.remaining,
        filled: node.filled,
    }
}
