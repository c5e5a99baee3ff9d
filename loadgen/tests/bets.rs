//! A short live-bets run against a Rusher server started in this process.

use std::time::Duration;

use rusher_loadgen::bets::{run, BetsPlan};
use rusher_server::config::ServeArgs;
use rusher_server::server;

#[test]
fn a_short_bets_run_measures_acks_and_odds_deliveries() {
    let args = ServeArgs {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        store: Some("sqlite://:memory:".into()),
        workers: Some(2),
        ..Default::default()
    };
    let srv = server::start(args.resolve().unwrap()).expect("server starts");
    let plan = BetsPlan {
        target: srv.addr,
        market: "loadgen-test".into(),
        bettors: 3,
        rate: 150.0,
        odds_rate: 10.0,
        duration: Duration::from_secs(2),
    };
    let s = run(&plan).expect("the run completes");
    srv.shutdown();
    // ~300 bets at 150/s for 2 s; every one answered, each refusal a known reason.
    assert!(s.bets_sent >= 250 && s.bets_sent <= 310, "{s:?}");
    let refused: u64 = s.refused.values().sum();
    assert_eq!(s.bets_acked + refused, s.bets_sent, "{s:?}");
    assert!(s.refused.keys().all(|r| r == "odds changed"), "{s:?}");
    assert!(s.bets_acked > s.bets_sent / 2, "{s:?}");
    assert_eq!(s.place_ack_us.count, s.bets_acked);
    // Every bettor joined before the first change: each change reached all three.
    assert!(s.odds_changes >= 19, "{s:?}");
    assert_eq!(s.odds_deliveries, s.odds_changes * 3, "{s:?}");
    assert!(s.place_ack_us.p50 > 0 && s.odds_delivery_us.p50 > 0, "{s:?}");
}
