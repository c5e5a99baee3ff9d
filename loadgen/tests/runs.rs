//! Whole runs against a real Rusher server started in this process: the chat, broadcast, collab and
//! geo scenarios with local agent processes, and a fleet of three agents merged by one coordinator;
//! and the plain-TCP floor against two `rusher-loadgen sink` processes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use rusher_loadgen::coordinator::{self, Agents, RunSpec};
use rusher_loadgen::geo::walk::Bbox;
use rusher_loadgen::plan::{Plan, Scenario};
use rusher_server::config::ServeArgs;
use rusher_server::server;

fn loadgen_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rusher-loadgen"))
}

fn start_server() -> server::Running {
    let args = ServeArgs {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        store: Some("sqlite://:memory:".into()),
        workers: Some(2),
        shootout: Some(true),
        ..Default::default()
    };
    server::start(args.resolve().unwrap()).expect("server starts")
}

/// A counter of the server's `/metrics`.
fn metric(addr: SocketAddr, name: &str) -> u64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// What a geo run must show of its placement: every one of `objects` placed once, apart from the
/// measured updates, which the server applied on top; every event the server delivered counted
/// either as measured (one latency sample each) or as caused by the placement.
fn assert_placed(srv: SocketAddr, out: &coordinator::Outcome, objects: u64) {
    let c = &out.counters;
    let g = &out.summary["geo"];
    assert_eq!((c.placing, c.placed), (objects, objects), "placement errors: {:?}", c.place_errors);
    assert!(c.place_errors.is_empty(), "{:?}", c.place_errors);
    assert_eq!(g["objects_placed"], objects, "{g}");
    assert!(g["placement_seconds"].as_f64().is_some_and(|s| s > 0.0), "{g}");
    assert_eq!(g["placement_events"], c.placement_events);
    assert!(c.placement_events > 0, "objects start inside fences, and enter them when placed");
    assert_eq!(metric(srv, "rusher_geo_updates_total"), c.acked + objects, "measured updates + placement");
    assert_eq!(
        metric(srv, "rusher_geo_events_total"),
        c.delivered + c.placement_events,
        "one subscriber: each event the server sent was received and counted once"
    );
    let event = out.hists.iter().find(|(n, _)| n == "event").map_or(0, |(_, h)| h.len());
    assert_eq!(event, c.delivered, "only measured events have latency samples");
    let kind = |k: &str| c.events.iter().find(|(n, _)| n == k).map_or(0, |(_, n)| *n);
    assert!(
        kind("exit") <= kind("enter") + c.placement_events,
        "an object leaves only fences it entered, when placed or since: {:?}",
        c.events
    );
}

fn spec(target: SocketAddr, scenario: Scenario, connections: u64, per_topic: u64, agents: Agents) -> RunSpec {
    RunSpec {
        plan: Plan {
            scenario,
            targets: vec![target],
            path: "/socket/websocket?vsn=2.0.0".into(),
            sources: Vec::new(),
            topic_prefix: "room:lgtest-".into(),
            per_topic,
            first: 0,
            count: 0,
            rate: 0.0,
            threads: 2,
            step_timeout_s: 20,
            heartbeat_s: 30,
            presence: true,
            max_pending: 0,
            connect_retries: 0,
        },
        connections,
        rate: 4000.0,
        hold_s: 0,
        agents,
        results: None,
        server_pids: Vec::new(),
        max_seconds: 120,
        command_line: "test".into(),
        notes: Vec::new(),
    }
}

#[test]
fn chat_with_2000_connections_has_no_errors_and_one_sample_per_delivery() {
    let srv = start_server();
    let scenario = Scenario::Chat { publish_rate: 400.0, measure_s: 3, body_bytes: 64 };
    let agents = Agents::Local { count: 2, exe: loadgen_exe() };
    let out = coordinator::run(spec(srv.addr, scenario, 2000, 20, agents)).expect("run completes");
    let c = &out.counters;
    assert_eq!(c.failed(), 0, "failures: {:?}", c.failures);
    assert!(out.lost_agents.is_empty());
    assert_eq!(c.joined, 2000);
    assert!(c.published >= 1000, "published only {}", c.published);
    assert_eq!(c.acked, c.published, "every publish acked");
    assert_eq!(c.delivered, c.published * 20, "every member of the room got every message");
    let count = |name: &str| out.hists.iter().find(|(n, _)| n == name).map_or(0, |(_, h)| h.len());
    assert_eq!(count("delivery"), c.delivered, "exactly one latency sample per delivery");
    assert_eq!(count("ack"), c.acked);
    assert_eq!(count("establish"), 2000);
    srv.shutdown();
}

/// A loopback port nothing listens on (bound once by the system, then released).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[test]
fn refused_connections_are_retried_until_the_server_is_up_and_counted_as_retries() {
    let addr = free_port();
    // The server comes up 1.5 s into the run: the first attempts are refused.
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let args = ServeArgs {
            listen: Some(addr),
            store: Some("sqlite://:memory:".into()),
            workers: Some(2),
            ..Default::default()
        };
        server::start(args.resolve().unwrap()).expect("server starts on the released port")
    });
    let mut run = spec(addr, Scenario::Connect, 300, 10, Agents::Local { count: 1, exe: loadgen_exe() });
    run.plan.connect_retries = 3;
    let out = coordinator::run(run).expect("run completes");
    let srv = late.join().unwrap();
    let c = &out.counters;
    assert_eq!(c.failed(), 0, "every refused attempt was made again: {:?}", c.failures);
    assert_eq!((c.attempted, c.joined), (300, 300), "each connection counted once, however many attempts");
    assert!(c.retried > 0, "the attempts before the server was up were retried");
    srv.shutdown();

    // Without retries, refusals are failures.
    let out = coordinator::run(spec(
        free_port(),
        Scenario::Connect,
        50,
        10,
        Agents::Local { count: 1, exe: loadgen_exe() },
    ))
    .unwrap();
    let c = &out.counters;
    assert_eq!((c.failed(), c.retried, c.joined), (50, 0, 0), "{:?}", c.failures);
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_fleet_of_three_agents_produces_one_merged_result() {
    let srv = start_server();
    // Find a free port for the coordinator; agents retry until it listens.
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let results = std::env::temp_dir().join(format!("rusher-lg-fleet-{}", std::process::id()));
    let _agents: Vec<Agent> = (0..3)
        .map(|i| {
            let child = Command::new(loadgen_exe())
                .args(["agent", "--coordinator", &listen.to_string(), "--name", &format!("fleet-{i}")])
                .spawn()
                .unwrap();
            Agent(child)
        })
        .collect();
    let mut s = spec(srv.addr, Scenario::Connect, 900, 30, Agents::Fleet { listen, count: 3 });
    s.results = Some(results.clone());
    let out = coordinator::run(s).expect("fleet run completes");
    assert!(out.lost_agents.is_empty());
    assert_eq!(out.counters.joined, 900);
    assert_eq!(out.counters.failed(), 0);
    let establish = out.hists.iter().find(|(n, _)| n == "establish").unwrap();
    assert_eq!(establish.1.len(), 900, "the merged histogram holds every agent's samples");
    assert_eq!(out.summary["agents"], 3);
    let dir = out.run_dir.expect("a result folder");
    for file in ["SETUP.md", "summary.json", "establish.hgrm"] {
        assert!(dir.join(file).exists(), "{file} written");
    }
    let setup = std::fs::read_to_string(dir.join("SETUP.md")).unwrap();
    assert!(setup.contains("fleet-0") && setup.contains("fleet-2"), "SETUP.md names the agents");
    let _ = std::fs::remove_dir_all(results);
    srv.shutdown();
}

#[test]
fn shootout_broadcast_delivers_exactly_one_copy_to_every_client() {
    let srv = start_server();
    let scenario = Scenario::Shootout { broadcast: true, publish_rate: 40.0, measure_s: 2, body_bytes: 16 };
    let mut s = spec(srv.addr, scenario, 300, 0, Agents::Local { count: 1, exe: loadgen_exe() });
    s.plan.path = "/shootout".into();
    let out = coordinator::run(s).expect("run completes");
    let c = &out.counters;
    assert_eq!(c.failed(), 0, "failures: {:?}", c.failures);
    assert!(c.published >= 60, "published only {}", c.published);
    assert_eq!(c.acked, c.published, "a broadcastResult for every broadcast");
    assert_eq!(c.delivered, c.published * 300, "one copy per client per broadcast");
    assert_eq!(c.published, 80, "connection 0 alone publishes, at 40/s for 2 s");
    assert_eq!(out.summary["broadcast"]["complete"], 80, "every copy of every message timed");
    assert_eq!(out.summary["broadcast"]["incomplete"], 0);

    let scenario = Scenario::Shootout { broadcast: false, publish_rate: 500.0, measure_s: 1, body_bytes: 16 };
    let mut s = spec(srv.addr, scenario, 100, 0, Agents::Local { count: 1, exe: loadgen_exe() });
    s.plan.path = "/shootout".into();
    let out = coordinator::run(s).expect("run completes");
    assert_eq!(out.counters.acked, out.counters.published, "every echo answered");
    assert_eq!(out.counters.delivered, 0);
    srv.shutdown();
}

#[test]
fn broadcast_reaches_every_subscriber_and_times_the_last_copy() {
    let srv = start_server();
    let scenario = Scenario::Broadcast { publish_rate: 20.0, measure_s: 2, body_bytes: 32 };
    let mut s = spec(srv.addr, scenario, 600, 600, Agents::Local { count: 2, exe: loadgen_exe() });
    s.plan.presence = false;
    let out = coordinator::run(s).expect("run completes");
    let c = &out.counters;
    assert_eq!(c.failed(), 0, "failures: {:?}", c.failures);
    assert_eq!(c.joined, 600);
    assert_eq!(c.published, 40, "one publisher at 20/s for 2 s");
    assert_eq!(c.delivered, 40 * 600, "every subscriber, the publisher included, got every message");
    assert_eq!(out.summary["broadcast"]["complete"], 40);
    assert_eq!(out.summary["broadcast"]["incomplete"], 0);
    let every = out.hists.iter().find(|(n, _)| n == "every-copy").expect("every-copy histogram");
    assert_eq!(every.1.len(), 40);
    srv.shutdown();
}

/// A `rusher-loadgen sink` process on a free port for `seconds`, stopped when dropped.
fn start_sink(capacity: u64, seconds: u64) -> (SocketAddr, Agent) {
    use std::io::BufRead;
    let mut child = Command::new(loadgen_exe())
        .args(["sink", "--listen", "127.0.0.1:0", "--capacity", &capacity.to_string()])
        .args(["--max-seconds", &seconds.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sink starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("sink listening on ").expect("the sink says where it listens");
    (addr.parse().unwrap(), Agent(child))
}

/// What a sink printed when its time ran out.
fn sink_stats(mut sink: Agent) -> String {
    let status = sink.0.wait().unwrap();
    assert!(status.success(), "the sink exits by itself when its time is up");
    let mut text = String::new();
    sink.0.stderr.take().unwrap().read_to_string(&mut text).unwrap();
    text
}

#[test]
fn the_tcp_floor_writes_every_connection_once_per_message_through_every_sink() {
    let (a, sink_a) = start_sink(1000, 15);
    let (b, sink_b) = start_sink(1000, 15);
    let scenario = Scenario::Tcp { publish_rate: 2.0, measure_s: 2 };
    let mut s = spec(a, scenario, 900, 0, Agents::Local { count: 2, exe: loadgen_exe() });
    s.plan.targets = vec![a, b];
    // A closed ramp: at most 40 connections in progress per agent, as fast as they are accepted.
    s.rate = 1e6;
    s.plan.max_pending = 40;
    s.hold_s = 1;
    let out = coordinator::run(s).expect("run completes");
    let c = &out.counters;
    assert_eq!(c.failed(), 0, "failures: {:?}", c.failures);
    assert_eq!((c.tcp_connected, c.joined, c.upgraded), (900, 900, 0), "bare TCP: connected is established");
    assert_eq!(c.published, 4 * 2, "connections 0 and 1 send each of the 4 messages to their sink");
    assert_eq!(c.delivered, 4 * 900, "every connection got every message once");
    assert_eq!(out.summary["broadcast"]["complete"], 4);
    assert_eq!(out.summary["broadcast"]["incomplete"], 0);
    let count = |name: &str| out.hists.iter().find(|(n, _)| n == name).map_or(0, |(_, h)| h.len());
    assert_eq!((count("tcp"), count("establish")), (900, 900));
    assert_eq!((count("delivery"), count("every-copy")), (4 * 900, 4));
    assert_eq!(out.summary["scenario"]["kind"], "tcp");
    // The teardown closes without a byte: a close frame would have been taken for a fifth message.
    for sink in [sink_a, sink_b] {
        let stats = sink_stats(sink);
        let want = "accepted: 450, over_capacity: 0, peak: 450, messages: 4, written: 1800, unsent: 0";
        assert!(stats.contains(want), "{stats}");
    }
}

#[test]
fn a_lost_agent_is_reported_not_hidden() {
    let srv = start_server();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut agents: Vec<Agent> = (0..2)
        .map(|i| {
            let child = Command::new(loadgen_exe())
                .args(["agent", "--coordinator", &listen.to_string(), "--name", &format!("doomed-{i}")])
                .spawn()
                .unwrap();
            Agent(child)
        })
        .collect();
    let mut s = spec(srv.addr, Scenario::Connect, 200, 20, Agents::Fleet { listen, count: 2 });
    s.hold_s = 4;
    let run = std::thread::spawn(move || coordinator::run(s));
    // Kill one agent during the hold.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let _ = agents[1].0.kill();
    let out = run.join().unwrap().expect("the run still completes");
    assert_eq!(out.lost_agents, vec!["doomed-1".to_string()]);
    assert_eq!(out.summary["lost_agents"][0], "doomed-1");
    srv.shutdown();
}

#[test]
fn collab_editors_see_every_update_of_their_document() {
    let srv = start_server();
    let scenario = Scenario::Collab { publish_rate: 100.0, measure_s: 2, body_bytes: 8 };
    let mut s = spec(srv.addr, scenario, 20, 5, Agents::Local { count: 1, exe: loadgen_exe() });
    s.plan.path = "/collab".into();
    s.plan.topic_prefix = "lgdoc-".into();
    let out = coordinator::run(s).expect("run completes");
    let c = &out.counters;
    assert_eq!(c.failed(), 0, "failures: {:?}", c.failures);
    assert!(c.published >= 180, "published only {}", c.published);
    assert_eq!(c.acked, c.published, "each editor got its own update back once durable");
    assert_eq!(c.delivered, c.published * 4, "the four other editors of the document got it");
    srv.shutdown();
}

#[test]
fn geo_objects_are_placed_then_updates_are_all_answered_and_fence_events_are_timed() {
    let srv = start_server();
    // About 3.7 km × 5.6 km: the 50 fences cover much of it, so the objects meet them.
    let bbox = Bbox { min_lon: 2.30, min_lat: 48.83, max_lon: 2.35, max_lat: 48.88 };
    let scenario = Scenario::Geo {
        publish_rate: 500.0,
        measure_s: 3,
        tenant: "lgtest".into(),
        movers: 50,
        subscribers: 1,
        fences: 50,
        step_m: 30.0,
        seed: 7,
        bbox,
        batch: 1,
    };
    // Two agents: the second holds the subscriber and a smaller share of the movers and the rate.
    let out =
        coordinator::run(spec(srv.addr, scenario, 51, 51, Agents::Local { count: 2, exe: loadgen_exe() }))
            .expect("run completes");
    let c = &out.counters;
    let g = &out.summary["geo"];
    assert_eq!(c.failed(), 0, "failures: {:?}", c.failures);
    assert_eq!(c.joined, 51);
    assert_eq!(g["fences"]["created"], 50, "{g}");
    assert!((1450..=1500).contains(&c.published), "500 updates/s for 3 s, sent {}", c.published);
    assert_eq!(c.pushes, c.published, "one location push per update");
    assert_eq!((g["batch"].as_u64(), g["pushes_sent"].as_u64()), (Some(1), Some(c.published)));

    assert_eq!(c.ack_errors, 0, "error replies: {:?}", c.reply_errors);
    assert_eq!(c.out_of_order, 0, "each object has one mover, whose ts only grows");
    assert_eq!(c.acked, c.published, "every update answered ok");
    assert_eq!(g["replies"], c.published);
    assert_eq!(g["unanswered"], 0);
    let hist = |name: &str| out.hists.iter().find(|(n, _)| n == name).map(|(_, h)| h.clone());
    let reply = hist("ack").expect("reply latencies");
    assert_eq!(reply.len(), c.published, "one reply latency per update");

    assert!(c.delivered > 0, "the subscriber received fence events");
    let event = hist("event").expect("event latencies");
    assert_eq!(event.len(), c.delivered, "one latency sample per event received");
    // An event's latency counts from its update's ts: a ts misread (seconds, or µs) would be off by
    // far more than a loaded test machine's delays.
    assert!(event.max() < 10_000_000, "event latency up to {} µs", event.max());
    let kind = |k: &str| c.events.iter().find(|(n, _)| n == k).map_or(0, |(_, n)| *n);
    assert_eq!(c.events.iter().map(|(_, n)| n).sum::<u64>(), c.delivered);
    assert!(kind("enter") > 0, "events: {:?}", c.events);
    assert_eq!(
        kind("enter") + kind("exit") + kind("cross"),
        c.delivered,
        "only the default kinds: {:?}",
        c.events
    );
    assert_eq!(g["events_received"], c.delivered);
    assert_placed(srv.addr, &out, 50);
    srv.shutdown();
}

#[test]
fn batched_geo_objects_are_placed_then_updates_are_each_answered_in_fewer_pushes() {
    let srv = start_server();
    let bbox = Bbox { min_lon: 2.30, min_lat: 48.83, max_lon: 2.35, max_lat: 48.88 };
    // 20 connections × 10 objects: 1000 updates/s in 100 `locations` pushes/s of 10.
    let scenario = Scenario::Geo {
        publish_rate: 1000.0,
        measure_s: 3,
        tenant: "lgbatch".into(),
        movers: 20,
        subscribers: 1,
        fences: 50,
        step_m: 30.0,
        seed: 7,
        bbox,
        batch: 10,
    };
    let out =
        coordinator::run(spec(srv.addr, scenario, 21, 21, Agents::Local { count: 2, exe: loadgen_exe() }))
            .expect("run completes");
    let c = &out.counters;
    let g = &out.summary["geo"];
    assert_eq!(c.failed(), 0, "failures: {:?}", c.failures);
    assert_eq!(c.joined, 21);
    assert_eq!(g["fences"]["created"], 50, "{g}");
    assert!((2900..=3000).contains(&c.published), "1000 updates/s for 3 s, sent {}", c.published);
    assert_eq!(c.published, c.pushes * 10, "every push carries 10 updates");
    assert!((290..=300).contains(&c.pushes), "100 pushes/s for 3 s, sent {}", c.pushes);
    assert_eq!((g["batch"].as_u64(), g["pushes_sent"].as_u64()), (Some(10), Some(c.pushes)));

    assert_eq!(c.ack_errors, 0, "error replies: {:?}", c.reply_errors);
    assert_eq!(c.acked + c.out_of_order + c.ack_errors, c.published, "the replies cover every update");
    assert_eq!(c.out_of_order, 0, "each object has one mover, whose ts only grows");
    assert_eq!((g["replies"].as_u64(), g["unanswered"].as_u64()), (Some(c.published), Some(0)));
    let hist = |name: &str| out.hists.iter().find(|(n, _)| n == name).map(|(_, h)| h.clone());
    assert_eq!(hist("ack").expect("reply latencies").len(), c.pushes, "one reply latency per push");

    assert!(c.delivered > 0, "the subscriber received fence events");
    let event = hist("event").expect("event latencies");
    assert_eq!(event.len(), c.delivered, "one latency sample per event received");
    assert!(event.max() < 10_000_000, "event latency up to {} µs", event.max());
    assert_placed(srv.addr, &out, 200);
    srv.shutdown();
}

#[test]
fn a_refused_placement_stops_a_geo_run_and_leaves_no_result_folder() {
    let args = ServeArgs {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        store: Some("sqlite://:memory:".into()),
        workers: Some(2),
        geo_max_objects: Some(15),
        ..Default::default()
    };
    let srv = server::start(args.resolve().unwrap()).expect("server starts");
    let scenario = Scenario::Geo {
        publish_rate: 100.0,
        measure_s: 1,
        tenant: "lgfull".into(),
        movers: 20,
        subscribers: 0,
        fences: 5,
        step_m: 30.0,
        seed: 7,
        bbox: Bbox::DEFAULT,
        batch: 1,
    };
    let results = std::env::temp_dir().join(format!("rusher-lg-place-{}", std::process::id()));
    let mut s = spec(srv.addr, scenario, 20, 20, Agents::Local { count: 1, exe: loadgen_exe() });
    s.results = Some(results.clone());
    let err = coordinator::run(s).expect_err("5 of the 20 objects are over the server's limit");
    let err = err.to_string();
    assert!(err.starts_with("placing the objects at the start of their walks"), "{err}");
    assert!(err.contains("15 of 20 objects placed, 5 refused (5 × "), "{err}");
    assert!(err.contains("its limit"), "the server's reason: {err}");
    assert_eq!(metric(srv.addr, "rusher_geo_updates_total"), 15, "nothing measured after the failure");
    let left = std::fs::read_dir(&results).map_or(0, |d| d.count());
    let _ = std::fs::remove_dir_all(&results);
    assert_eq!(left, 0, "no result folder for a run that stopped in its setup");
    srv.shutdown();
}
