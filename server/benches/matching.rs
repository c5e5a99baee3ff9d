//! Matching engine throughput on one core: `cargo bench -p rusher-server --bench matching`.
//!
//! The command mix is generated once, against a real book so that every cancel names an order that
//! rests at that moment: about 60% passive limit orders a few ticks from the touch, 30% cancels of
//! resting orders, 10% crossing orders (marketable limits and market orders), by four dozen accounts
//! around a drifting mid price. Each iteration replays the whole sequence into an empty book and
//! drains the depth changes after every command, as the topic layer does. Criterion's `thrpt` line is
//! order operations per second on one core; the bench also prints it, with what the mix did.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rusher_server::topics::market::{Book, Command, Event, Limits, OrderId, OrderKind, Side, TimeInForce};

/// Commands per iteration.
const OPS: usize = 200_000;

/// A small deterministic generator (xorshift64*), so every run measures the same sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The command sequence, and how many events it produced of each kind (trades, cancels).
fn realistic_mix() -> (Vec<Command>, usize, usize) {
    let mut rng = Rng(0x5EED_0F00_B00C_0001);
    let mut book = Book::new(Limits::default());
    let mut live: Vec<OrderId> = Vec::new();
    let mut cmds = Vec::with_capacity(OPS);
    let (mut trades, mut cancels) = (0, 0);
    let mut mid: u64 = 100_000;
    let mut events = Vec::new();
    while cmds.len() < OPS {
        if rng.below(100) < 5 {
            mid = mid + rng.below(5) - 2;
        }
        let account = 1 + rng.below(48);
        let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
        let roll = rng.below(100);
        // A resting order to cancel; orders filled or cancelled since they were noted drop out here.
        let mut target = None;
        while roll < 30 && target.is_none() && !live.is_empty() {
            let order = live.swap_remove(rng.below(live.len() as u64) as usize);
            target = book.order(order).map(|o| (o.account, order));
        }
        let cmd = if let Some((account, order)) = target {
            Command::Cancel { account, order }
        } else if roll < 40 {
            let qty = 1 + rng.below(20);
            if rng.below(4) == 0 {
                Command::Place { account, side, kind: OrderKind::Market, qty }
            } else {
                let price = match side {
                    Side::Buy => mid + rng.below(4),
                    Side::Sell => mid - rng.below(4),
                };
                Command::Place { account, side, kind: OrderKind::Limit { price, tif: TimeInForce::Ioc }, qty }
            }
        } else {
            let away = 1 + rng.below(10);
            let price = match side {
                Side::Buy => mid - away,
                Side::Sell => mid + away,
            };
            Command::Place {
                account,
                side,
                kind: OrderKind::Limit { price, tif: TimeInForce::Gtc },
                qty: 1 + rng.below(50),
            }
        };
        events.clear();
        book.execute(&cmd, &mut events);
        for event in &events {
            match *event {
                Event::Trade { .. } => trades += 1,
                Event::Cancelled { .. } => cancels += 1,
                _ => {}
            }
        }
        if let Some(Event::Accepted { order, .. }) = events.first() {
            if book.order(*order).is_some() {
                live.push(*order);
            }
        }
        assert!(!matches!(events.first(), Some(Event::Rejected { .. })), "the mix makes valid commands only");
        cmds.push(cmd);
    }
    (cmds, trades, cancels)
}

fn replay(cmds: &[Command]) -> usize {
    let mut book = Book::new(Limits::default());
    let mut events = Vec::with_capacity(64);
    let mut depth = Vec::with_capacity(64);
    let mut seen = 0;
    for cmd in cmds {
        events.clear();
        book.execute(cmd, &mut events);
        depth.clear();
        book.take_depth_changes(&mut depth);
        seen += events.len() + depth.len();
    }
    black_box(book.resting_count());
    seen
}

fn matching(c: &mut Criterion) {
    let (cmds, trades, cancels) = realistic_mix();
    let start = Instant::now();
    let mut rounds = 0u32;
    while start.elapsed() < Duration::from_secs(2) && rounds < 1000 {
        black_box(replay(&cmds));
        rounds += 1;
    }
    let per_sec = f64::from(rounds) * OPS as f64 / start.elapsed().as_secs_f64();
    println!(
        "matching: {OPS} commands per round ({trades} trades, {cancels} cancels), {rounds} rounds: {:.2}M order operations/s on one core",
        per_sec / 1e6
    );

    let mut group = c.benchmark_group("matching");
    group.throughput(Throughput::Elements(OPS as u64));
    group.sample_size(20);
    group.bench_function("realistic_mix", |b| b.iter(|| replay(black_box(&cmds))));
    group.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);
