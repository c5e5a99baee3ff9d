//! The matching engine against worked examples, a naive reference model and its invariants.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::depth::Level;
use super::*;

const A: AccountId = 1;
const B: AccountId = 2;

fn limit(account: AccountId, side: Side, price: Price, qty: Qty) -> Command {
    Command::Place { account, side, kind: OrderKind::Limit { price, tif: TimeInForce::Gtc }, qty }
}

fn run(book: &mut Book, cmd: Command) -> Vec<Event> {
    let mut out = Vec::new();
    book.execute(&cmd, &mut out);
    book.check_invariants().unwrap();
    out
}

#[test]
fn resting_orders_fill_oldest_first_at_their_price_and_partially() {
    let mut book = Book::new(Limits::default());
    run(&mut book, limit(A, Side::Sell, 101, 5)); // order 1
    run(&mut book, limit(A, Side::Sell, 100, 3)); // order 2
    run(&mut book, limit(3, Side::Sell, 100, 4)); // order 3, behind 2 at 100
    let events = run(&mut book, limit(B, Side::Buy, 101, 9)); // order 4
    let trade = |maker, maker_account, price, qty| Event::Trade {
        maker,
        maker_account,
        taker: 4,
        taker_account: B,
        taker_side: Side::Buy,
        price,
        qty,
    };
    assert_eq!(
        events,
        vec![
            Event::Accepted {
                order: 4,
                account: B,
                side: Side::Buy,
                kind: OrderKind::Limit { price: 101, tif: TimeInForce::Gtc },
                qty: 9
            },
            trade(2, A, 100, 3),
            Event::Done { order: 2, account: A, filled: 3 },
            trade(3, 3, 100, 4),
            Event::Done { order: 3, account: 3, filled: 4 },
            trade(1, A, 101, 2),
            Event::Done { order: 4, account: B, filled: 9 },
        ]
    );
    assert_eq!(book.best_ask(), Some((101, 3)));
    assert_eq!(book.order(1).map(|o| (o.remaining, o.filled)), Some((3, 2)));
    assert_eq!(book.best_bid(), None);
}

#[test]
fn a_gtc_remainder_rests_and_ioc_and_market_remainders_are_cancelled() {
    let mut book = Book::new(Limits::default());
    run(&mut book, limit(A, Side::Sell, 100, 2));
    let gtc = run(&mut book, limit(B, Side::Buy, 100, 5));
    assert_eq!(gtc.last(), Some(&Event::Done { order: 1, account: A, filled: 2 }));
    assert_eq!(book.best_bid(), Some((100, 3)));

    let ioc = Command::Place {
        account: A,
        side: Side::Sell,
        kind: OrderKind::Limit { price: 99, tif: TimeInForce::Ioc },
        qty: 4,
    };
    let events = run(&mut book, ioc);
    assert_eq!(
        &events[events.len() - 2..],
        &[
            Event::Cancelled { order: 3, account: A, qty: 1, reason: CancelReason::Unfilled },
            Event::Done { order: 3, account: A, filled: 3 },
        ]
    );
    assert_eq!(book.best_bid(), None);

    let market = Command::Place { account: A, side: Side::Buy, kind: OrderKind::Market, qty: 7 };
    let events = run(&mut book, market);
    assert_eq!(
        &events[1..],
        &[
            Event::Cancelled { order: 4, account: A, qty: 7, reason: CancelReason::Unfilled },
            Event::Done { order: 4, account: A, filled: 0 },
        ]
    );
    assert_eq!(book.resting_count(), 0);
}

#[test]
fn an_account_never_trades_with_itself_its_resting_order_is_cancelled() {
    let mut book = Book::new(Limits::default());
    run(&mut book, limit(B, Side::Sell, 100, 2)); // 1
    run(&mut book, limit(A, Side::Sell, 100, 4)); // 2
    run(&mut book, limit(B, Side::Sell, 100, 5)); // 3
    let events = run(&mut book, limit(A, Side::Buy, 100, 6)); // 4
    assert_eq!(
        &events[1..],
        &[
            Event::Trade {
                maker: 1,
                maker_account: B,
                taker: 4,
                taker_account: A,
                taker_side: Side::Buy,
                price: 100,
                qty: 2
            },
            Event::Done { order: 1, account: B, filled: 2 },
            Event::Cancelled { order: 2, account: A, qty: 4, reason: CancelReason::SelfTrade },
            Event::Done { order: 2, account: A, filled: 0 },
            Event::Trade {
                maker: 3,
                maker_account: B,
                taker: 4,
                taker_account: A,
                taker_side: Side::Buy,
                price: 100,
                qty: 4
            },
            Event::Done { order: 4, account: A, filled: 6 },
        ]
    );
    assert_eq!(book.best_ask(), Some((100, 1)));
}

#[test]
fn bad_commands_are_rejected_and_change_nothing() {
    let limits = Limits { max_price: 1000, max_qty: 50, max_orders: 1 };
    let mut book = Book::new(limits);
    run(&mut book, limit(A, Side::Buy, 10, 1));
    let before = (book.resting(), book.seq(), book.next_order_id());
    let cases = [
        (limit(B, Side::Buy, 10, 0), RejectReason::ZeroQuantity),
        (limit(B, Side::Buy, 10, 51), RejectReason::QuantityTooLarge),
        (limit(B, Side::Buy, 0, 1), RejectReason::ZeroPrice),
        (limit(B, Side::Buy, 1001, 1), RejectReason::PriceTooHigh),
        (limit(B, Side::Buy, 9, 1), RejectReason::BookFull),
        (Command::Cancel { account: B, order: 1 }, RejectReason::NotOwner),
        (Command::Cancel { account: A, order: 2 }, RejectReason::UnknownOrder),
        (
            Command::Place { account: B, side: Side::Sell, kind: OrderKind::Market, qty: 0 },
            RejectReason::ZeroQuantity,
        ),
    ];
    for (cmd, reason) in cases {
        assert_eq!(book.check(&cmd), Err(reason), "{cmd:?}");
        assert_eq!(run(&mut book, cmd), vec![Event::Rejected { account: cmd.account(), reason }]);
        assert_eq!((book.resting(), book.seq(), book.next_order_id()), before);
    }
    // A full book still takes orders that cannot rest.
    let ioc = Command::Place {
        account: B,
        side: Side::Sell,
        kind: OrderKind::Limit { price: 10, tif: TimeInForce::Ioc },
        qty: 1,
    };
    assert_eq!(book.check(&ioc), Ok(()));
    let events = run(&mut book, ioc);
    assert!(matches!(events[1], Event::Trade { maker: 1, taker: 2, price: 10, qty: 1, .. }), "{events:?}");
    assert_eq!(events.last(), Some(&Event::Done { order: 2, account: B, filled: 1 }));
    assert_eq!(book.resting_count(), 0);
}

#[test]
fn cancel_unlinks_from_the_middle_of_a_level_and_removes_empty_levels() {
    let mut book = Book::new(Limits::default());
    for _ in 0..3 {
        run(&mut book, limit(A, Side::Buy, 50, 1));
    }
    run(&mut book, limit(A, Side::Buy, 49, 1));
    assert_eq!(book.level_qty(Side::Buy, 50), 3);
    let events = run(&mut book, Command::Cancel { account: A, order: 2 });
    assert_eq!(events[0], Event::Cancelled { order: 2, account: A, qty: 1, reason: CancelReason::Requested });
    assert_eq!(book.resting().iter().map(|o| o.id).collect::<Vec<_>>(), vec![1, 3, 4]);
    run(&mut book, Command::Cancel { account: A, order: 1 });
    run(&mut book, Command::Cancel { account: A, order: 3 });
    assert_eq!(book.level_qty(Side::Buy, 50), 0);
    assert_eq!(book.depth(5).0, vec![Level { price: 49, qty: 1 }]);
    assert_eq!(
        run(&mut book, Command::Cancel { account: A, order: 3 })[0],
        Event::Rejected { account: A, reason: RejectReason::UnknownOrder }
    );
}

// ---- the reference model: every order in one list, matching by sorting, written for clarity only ----

#[derive(Debug, Clone, Default)]
struct Model {
    resting: Vec<RestingOrder>,
    next_id: OrderId,
}

impl Model {
    fn execute(&mut self, limits: &Limits, cmd: &Command) -> Vec<Event> {
        let mut out = Vec::new();
        match *cmd {
            Command::Cancel { account, order } => match self.resting.iter().position(|o| o.id == order) {
                None => out.push(Event::Rejected { account, reason: RejectReason::UnknownOrder }),
                Some(i) if self.resting[i].account != account => {
                    out.push(Event::Rejected { account, reason: RejectReason::NotOwner })
                }
                Some(i) => {
                    let o = self.resting.remove(i);
                    out.push(Event::Cancelled {
                        order,
                        account,
                        qty: o.remaining,
                        reason: CancelReason::Requested,
                    });
                    out.push(Event::Done { order, account, filled: o.filled });
                }
            },
            Command::Place { account, side, kind, qty } => {
                let reject = |reason| vec![Event::Rejected { account, reason }];
                if qty == 0 {
                    return reject(RejectReason::ZeroQuantity);
                }
                if qty > limits.max_qty {
                    return reject(RejectReason::QuantityTooLarge);
                }
                let (limit, tif) = match kind {
                    OrderKind::Limit { price: 0, .. } => return reject(RejectReason::ZeroPrice),
                    OrderKind::Limit { price, .. } if price > limits.max_price => {
                        return reject(RejectReason::PriceTooHigh)
                    }
                    OrderKind::Limit { tif: TimeInForce::Gtc, .. }
                        if self.resting.len() >= limits.max_orders =>
                    {
                        return reject(RejectReason::BookFull)
                    }
                    OrderKind::Limit { price, tif } => (Some(price), tif),
                    OrderKind::Market => (None, TimeInForce::Ioc),
                };
                self.next_id += 1;
                let id = self.next_id;
                out.push(Event::Accepted { order: id, account, side, kind, qty });
                let mut remaining = qty;
                while remaining > 0 {
                    let best = self
                        .resting
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| o.side != side && limit.is_none_or(|l| side.crosses(l, o.price)))
                        .min_by_key(|(_, o)| {
                            (if side == Side::Buy { o.price } else { u64::MAX - o.price }, o.id)
                        })
                        .map(|(i, _)| i);
                    let Some(i) = best else { break };
                    let maker = &mut self.resting[i];
                    if maker.account == account {
                        out.push(Event::Cancelled {
                            order: maker.id,
                            account,
                            qty: maker.remaining,
                            reason: CancelReason::SelfTrade,
                        });
                        out.push(Event::Done { order: maker.id, account, filled: maker.filled });
                        self.resting.remove(i);
                        continue;
                    }
                    let fill = remaining.min(maker.remaining);
                    remaining -= fill;
                    maker.remaining -= fill;
                    maker.filled += fill;
                    out.push(Event::Trade {
                        maker: maker.id,
                        maker_account: maker.account,
                        taker: id,
                        taker_account: account,
                        taker_side: side,
                        price: maker.price,
                        qty: fill,
                    });
                    if maker.remaining == 0 {
                        out.push(Event::Done {
                            order: maker.id,
                            account: maker.account,
                            filled: maker.filled,
                        });
                        self.resting.remove(i);
                    }
                }
                let filled = qty - remaining;
                if remaining == 0 {
                    out.push(Event::Done { order: id, account, filled });
                } else if tif == TimeInForce::Gtc {
                    let price = limit.expect("GTC orders have a limit");
                    self.resting.push(RestingOrder { id, account, side, price, remaining, filled });
                } else {
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
        out
    }

    /// The book's `resting()` order: bids best first, then asks best first, oldest first.
    fn resting_sorted(&self) -> Vec<RestingOrder> {
        let mut all = self.resting.clone();
        all.sort_by_key(|o| match o.side {
            Side::Buy => (0, u64::MAX - o.price, o.id),
            Side::Sell => (1, o.price, o.id),
        });
        all
    }
}

const TEST_LIMITS: Limits = Limits { max_price: 120, max_qty: 40, max_orders: 24 };

fn arb_side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}

/// Commands around a narrow band of prices, so that orders cross often, with a few out of bounds.
fn arb_command() -> impl Strategy<Value = Command> {
    let account = 1..=4u64;
    let qty = prop_oneof![12 => 1..=15u64, 1 => Just(0u64), 1 => Just(TEST_LIMITS.max_qty), 1 => Just(TEST_LIMITS.max_qty + 1)];
    let price = prop_oneof![12 => 95..=105u64, 1 => Just(0u64), 1 => Just(TEST_LIMITS.max_price + 1)];
    let tif = prop_oneof![3 => Just(TimeInForce::Gtc), 1 => Just(TimeInForce::Ioc)];
    let kind = prop_oneof![
        8 => (price, tif).prop_map(|(price, tif)| OrderKind::Limit { price, tif }),
        1 => Just(OrderKind::Market),
    ];
    prop_oneof![
        3 => (account.clone(), arb_side(), kind, qty).prop_map(|(account, side, kind, qty)| Command::Place { account, side, kind, qty }),
        1 => (account, 1..=80u64).prop_map(|(account, order)| Command::Cancel { account, order }),
    ]
}

fn execute_all(book: &mut Book, cmds: &[Command]) -> Vec<Vec<Event>> {
    cmds.iter()
        .map(|cmd| {
            let mut out = Vec::new();
            book.execute(cmd, &mut out);
            out
        })
        .collect()
}

fn accepted(events: &[Event]) -> bool {
    !matches!(events.first(), Some(Event::Rejected { .. }))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Same events and same book as the reference model after every command; the book's structure
    /// (links, totals, index) holds and it is never crossed.
    #[test]
    fn matches_the_reference_model_and_is_never_crossed(cmds in prop::collection::vec(arb_command(), 1..300)) {
        let mut book = Book::new(TEST_LIMITS);
        let mut model = Model::default();
        for cmd in &cmds {
            let mut out = Vec::new();
            book.execute(cmd, &mut out);
            prop_assert_eq!(&out, &model.execute(&TEST_LIMITS, cmd), "after {:?}", cmd);
            prop_assert_eq!(book.resting(), model.resting_sorted());
            if let Err(e) = book.check_invariants() {
                return Err(TestCaseError::fail(e));
            }
            if let (Some((bid, _)), Some((ask, _))) = (book.best_bid(), book.best_ask()) {
                prop_assert!(bid < ask);
            }
        }
    }

    /// For every accepted order: placed = filled + resting + cancelled, and `Done` comes exactly once,
    /// with the filled total, iff nothing of it rests.
    #[test]
    fn quantity_is_conserved(cmds in prop::collection::vec(arb_command(), 1..300)) {
        let mut book = Book::new(TEST_LIMITS);
        // order → (placed, filled, cancelled, done with filled)
        let mut ledger: HashMap<OrderId, (Qty, Qty, Qty, Option<Qty>)> = HashMap::new();
        for events in execute_all(&mut book, &cmds) {
            for event in events {
                match event {
                    Event::Accepted { order, qty, .. } => { ledger.insert(order, (qty, 0, 0, None)); }
                    Event::Trade { maker, taker, qty, .. } => {
                        ledger.get_mut(&maker).unwrap().1 += qty;
                        ledger.get_mut(&taker).unwrap().1 += qty;
                    }
                    Event::Cancelled { order, qty, .. } => ledger.get_mut(&order).unwrap().2 += qty,
                    Event::Done { order, filled, .. } => {
                        let entry = ledger.get_mut(&order).unwrap();
                        prop_assert_eq!(entry.3, None, "two Done for {}", order);
                        entry.3 = Some(filled);
                    }
                    Event::Rejected { .. } => {}
                }
            }
        }
        for (order, (placed, filled, cancelled, done)) in ledger {
            let resting = book.order(order);
            let left = resting.map_or(0, |o| o.remaining);
            prop_assert_eq!(placed, filled + cancelled + left, "order {}", order);
            match resting {
                Some(o) => { prop_assert_eq!(done, None); prop_assert_eq!(o.filled, filled); }
                None => prop_assert_eq!(done, Some(filled)),
            }
        }
    }

    /// An incoming order consumes the opposite side strictly in priority order: the makers it trades
    /// with or cancels (self-trade) are the first ones of that side before the command, best price
    /// first and oldest first, and only the last of them may be left partly filled.
    #[test]
    fn price_time_priority_holds(cmds in prop::collection::vec(arb_command(), 1..300)) {
        let mut book = Book::new(TEST_LIMITS);
        for cmd in &cmds {
            let Command::Place { side, .. } = *cmd else {
                book.execute(cmd, &mut Vec::new());
                continue;
            };
            let queue: Vec<OrderId> = book.resting().iter().filter(|o| o.side != side).map(|o| o.id).collect();
            let mut out = Vec::new();
            book.execute(cmd, &mut out);
            let Some(Event::Accepted { order: taker, .. }) = out.first().copied() else { continue };
            let touched: Vec<OrderId> = out.iter().filter_map(|e| match *e {
                Event::Trade { maker, .. } => Some(maker),
                Event::Cancelled { order, reason: CancelReason::SelfTrade, .. } => Some(order),
                _ => None,
            }).collect();
            let mut makers = touched.clone();
            makers.dedup();
            prop_assert_eq!(makers.len(), touched.len(), "a maker touched twice");
            prop_assert_eq!(&queue[..makers.len()], &makers[..]);
            for (i, maker) in makers.iter().enumerate() {
                let still_resting = book.order(*maker).is_some();
                prop_assert!(!still_resting || i + 1 == makers.len(), "maker {} skipped over", maker);
            }
            // Whatever of the taker rests is not crossed by anything left.
            if let Some(o) = book.order(taker) {
                prop_assert!(book.resting().iter().all(|m| m.side == side || !side.crosses(o.price, m.price)));
            }
        }
    }

    /// Same commands, same events, same book.
    #[test]
    fn matching_is_deterministic(cmds in prop::collection::vec(arb_command(), 1..200)) {
        let (mut one, mut two) = (Book::new(TEST_LIMITS), Book::new(TEST_LIMITS));
        prop_assert_eq!(execute_all(&mut one, &cmds), execute_all(&mut two, &cmds));
        prop_assert_eq!(one.resting(), two.resting());
    }

    /// Replaying only the accepted commands into an empty book gives the same events and the same book.
    #[test]
    fn replaying_the_accepted_commands_rebuilds_the_book(cmds in prop::collection::vec(arb_command(), 1..300)) {
        let mut book = Book::new(TEST_LIMITS);
        let runs = execute_all(&mut book, &cmds);
        let log: Vec<Command> = cmds.iter().zip(&runs).filter(|(_, ev)| accepted(ev)).map(|(c, _)| *c).collect();
        let kept: Vec<Vec<Event>> = runs.into_iter().filter(|ev| accepted(ev)).collect();
        let mut replayed = Book::new(TEST_LIMITS);
        prop_assert_eq!(execute_all(&mut replayed, &log), kept);
        prop_assert_eq!(replayed.resting(), book.resting());
        prop_assert_eq!((replayed.seq(), replayed.next_order_id()), (book.seq(), book.next_order_id()));
        prop_assert_eq!(replayed.seq(), log.len() as u64);
    }

    /// A mirror kept only from the incremental depth changes equals the book's depth after every
    /// command, and `depth(n)` is its top n levels.
    #[test]
    fn depth_changes_keep_a_mirror_exact(cmds in prop::collection::vec(arb_command(), 1..300), n in 1..6usize) {
        let mut book = Book::new(TEST_LIMITS);
        let mut mirror: BTreeMap<(bool, Price), Qty> = BTreeMap::new();
        let mut changes = Vec::new();
        for cmd in &cmds {
            book.execute(cmd, &mut Vec::new());
            changes.clear();
            prop_assert_eq!(book.take_depth_changes(&mut changes), Some(()));
            for (side, level) in &changes {
                let key = (*side == Side::Sell, level.price);
                if level.qty == 0 { mirror.remove(&key); } else { mirror.insert(key, level.qty); }
            }
            let bids: Vec<Level> = mirror.iter().filter(|((sell, _), _)| !sell).rev().map(|((_, p), q)| Level { price: *p, qty: *q }).collect();
            let asks: Vec<Level> = mirror.iter().filter(|((sell, _), _)| *sell).map(|((_, p), q)| Level { price: *p, qty: *q }).collect();
            prop_assert_eq!(book.depth(usize::MAX), (bids.clone(), asks.clone()));
            let (top_bids, top_asks) = book.depth(n);
            prop_assert_eq!(&top_bids[..], &bids[..bids.len().min(n)]);
            prop_assert_eq!(&top_asks[..], &asks[..asks.len().min(n)]);
        }
    }
}
