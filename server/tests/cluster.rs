//! Cluster mode end to end: `rusher` processes on one Redis and one PostgreSQL, with Phoenix clients
//! (chat here; geofencing in `cluster/geo.rs`) and y-websocket editors (`cluster/collab.rs`) on
//! different nodes. Needs `RUSHER_TEST_REDIS_URL` and `RUSHER_TEST_POSTGRES_URL` (`scripts/test`
//! runs these under `scripts/with-redis` and `scripts/with-postgres`); the Redis restart test runs
//! its own `redis-server`. `RUSHER_TEST_LOG` sets the nodes' log filter (default `warn`).

#[path = "cluster/collab.rs"]
mod collab;
mod common;
#[path = "cluster/geo.rs"]
mod geo;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{http_exchange, spawn_listening, Proc, Schema, Ws};
use redis_server::RedisServer;
use serde_json::Value;

/// Seconds after which a silent node is down and its leases expire, for every node here.
const CLUSTER_TIMEOUT: &str = "2";
/// Watchdog for every wait.
const WAIT: Duration = Duration::from_secs(20);

fn redis_url() -> String {
    std::env::var("RUSHER_TEST_REDIS_URL")
        .expect("RUSHER_TEST_REDIS_URL is not set (needs Redis: scripts/test starts one)")
}

/// A cluster node on `listen` (port 0: any).
fn node(store: &str, redis: &str, listen: &str) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rusher"));
    cmd.args([
        "--listen",
        listen,
        "--workers",
        "2",
        "--log",
        &std::env::var("RUSHER_TEST_LOG").unwrap_or("warn".into()),
        "--store",
        store,
    ])
    .args(["--cluster", redis, "--cluster-timeout", CLUSTER_TIMEOUT]);
    spawn_listening(cmd)
}

/// One value of a node's `/metrics`.
fn metric(addr: SocketAddr, name: &str) -> u64 {
    let text = http_exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in the metrics:\n{text}"))
}

/// Poll `cond` until it holds; panic with `what` after the watchdog.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Phoenix client joined to one room, keeping what it received.
struct Client {
    ws: Ws,
    user: String,
    topic: String,
    /// user → presence refs, from presence_state and presence_diff.
    presence: HashMap<String, BTreeSet<String>>,
    /// `new_msg` payloads, in the order received.
    msgs: Vec<Value>,
    /// Replies by ref.
    replies: HashMap<String, Value>,
    typing: Vec<Value>,
    /// Every other event: (event, payload).
    events: Vec<(String, Value)>,
    /// The join reply's response.
    joined: Value,
    next_ref: u64,
}

impl Client {
    fn join(addr: SocketAddr, user: &str, topic: &str) -> Client {
        Client::join_with(addr, user, topic, &serde_json::json!({}))
    }

    /// Join with these params; the join reply must be ok.
    fn join_with(addr: SocketAddr, user: &str, topic: &str, params: &Value) -> Client {
        let ws = Ws::phoenix(addr, user);
        ws.stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut c = Client {
            ws,
            user: user.into(),
            topic: topic.into(),
            presence: HashMap::new(),
            msgs: Vec::new(),
            replies: HashMap::new(),
            typing: Vec::new(),
            events: Vec::new(),
            joined: Value::Null,
            next_ref: 0,
        };
        c.ws.send_text(&serde_json::json!(["j", "j", topic, "phx_join", params]).to_string());
        let reply = c.reply("j");
        assert_eq!(reply["status"], "ok", "{user} joins {topic}: {reply}");
        c.joined = reply["response"].clone();
        c
    }

    /// Read one frame if one comes within the socket's short timeout.
    fn read_one(&mut self) {
        let Some(frame) = self.ws.recv() else { return };
        if frame.opcode != 1 {
            return;
        }
        let v: Value = serde_json::from_str(frame.text()).unwrap();
        match v[3].as_str().unwrap_or("") {
            "phx_reply" => {
                self.replies.insert(v[1].as_str().unwrap_or("").into(), v[4].clone());
            }
            "new_msg" => self.msgs.push(v[4].clone()),
            "typing" => self.typing.push(v[4].clone()),
            "presence_state" => {
                self.presence.clear();
                self.apply_presence(&v[4], true);
            }
            "presence_diff" => {
                self.apply_presence(&v[4]["joins"], true);
                self.apply_presence(&v[4]["leaves"], false);
            }
            other => self.events.push((other.to_owned(), v[4].clone())),
        }
    }

    fn apply_presence(&mut self, group: &Value, join: bool) {
        for (user, p) in group.as_object().into_iter().flatten() {
            let refs = self.presence.entry(user.clone()).or_default();
            for m in p["metas"].as_array().into_iter().flatten() {
                let r = m["phx_ref"].as_str().unwrap().to_owned();
                if join {
                    refs.insert(r);
                } else {
                    refs.remove(&r);
                }
            }
            if refs.is_empty() {
                self.presence.remove(user);
            }
        }
    }

    /// Read until `cond` holds.
    fn until(&mut self, what: &str, cond: impl Fn(&Client) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(self) {
            assert!(Instant::now() < deadline, "{}: timed out waiting for {what}", self.user);
            self.read_one();
        }
    }

    /// Read whatever arrives for a while (to catch duplicates that would follow).
    fn settle(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.read_one();
        }
    }

    fn reply(&mut self, r: &str) -> Value {
        self.until(&format!("the reply to {r}"), |c| c.replies.contains_key(r));
        self.replies.remove(r).unwrap()
    }

    fn push(&mut self, event: &str, payload: &Value) -> String {
        self.next_ref += 1;
        let r = format!("{}-{}", self.user, self.next_ref);
        let text = serde_json::json!(["j", r, self.topic, event, payload]).to_string();
        self.ws.send_text(&text);
        r
    }

    /// Send a message until the server acks it (a node may be taking a room over); its ack.
    fn send_until_acked(&mut self, body: &str) -> Value {
        self.push_until_ok("new_msg", &serde_json::json!({ "body": body }))
    }

    /// Push until the reply is ok (a node may be taking the topic over); the response.
    fn push_until_ok(&mut self, event: &str, payload: &Value) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = self.push(event, payload);
            let reply = self.reply(&r);
            if reply["status"] == "ok" {
                return reply["response"].clone();
            }
            assert!(Instant::now() < deadline, "{}: {event} {payload} never ok, last: {reply}", self.user);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The pushed event's reply, which must be ok; its response.
    fn push_ok(&mut self, event: &str, payload: &Value) -> Value {
        let r = self.push(event, payload);
        let reply = self.reply(&r);
        assert_eq!(reply["status"], "ok", "{}: {event} {payload}: {reply}", self.user);
        reply["response"].clone()
    }

    /// How many `event`s received match `pred`.
    fn count(&self, event: &str, pred: impl Fn(&Value) -> bool) -> usize {
        self.events.iter().filter(|(e, p)| e == event && pred(p)).count()
    }

    fn users(&self) -> BTreeSet<String> {
        self.presence.keys().cloned().collect()
    }

    fn seqs(&self) -> Vec<u64> {
        self.msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect()
    }

    /// The room's latest messages from the store, through this client's node.
    fn history(&mut self) -> Vec<Value> {
        let r = self.push("history", &serde_json::json!({ "limit": 200 }));
        let reply = self.reply(&r);
        assert_eq!(reply["status"], "ok", "{reply}");
        reply["response"]["messages"].as_array().unwrap().clone()
    }
}

fn strictly_increasing(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[0] < w[1])
}

#[test]
#[ignore = "needs Redis and PostgreSQL: scripts/test starts them"]
fn cluster_of_three_nodes_gives_every_member_every_message_once_with_presence_of_all() {
    let schema = Schema::new("cluster3");
    let (store, redis) = (schema.store_url(), redis_url());
    let nodes: Vec<Proc> = (0..3).map(|_| node(&store, &redis, "127.0.0.1:0")).collect();
    let topic = "room:three-nodes";
    let mut clients: Vec<Client> =
        (0..6).map(|i| Client::join(nodes[i % 3].addr, &format!("u{i}"), topic)).collect();
    let everyone: BTreeSet<String> = clients.iter().map(|c| c.user.clone()).collect();
    for c in &mut clients {
        c.until("everyone in presence", |c| c.users() == everyone);
    }
    let refs: HashSet<String> = clients[0].presence.values().flatten().cloned().collect();
    assert_eq!(refs.len(), 6, "presence refs are unique across nodes: {:?}", clients[0].presence);

    // Every client sends its messages without waiting for acks; the first message makes its node
    // the room's owner, the other nodes forward theirs.
    const ROUNDS: usize = 30;
    const TOTAL: usize = ROUNDS * 6;
    let mut sent = HashMap::new();
    for round in 0..ROUNDS {
        for c in &mut clients {
            let body = format!("{} says {round}", c.user);
            let r = c.push("new_msg", &serde_json::json!({ "body": body }));
            sent.insert(r, (c.user.clone(), body));
        }
    }
    let mut acked = Vec::new();
    for c in &mut clients {
        let refs: Vec<String> =
            sent.keys().filter(|r| r.starts_with(&format!("{}-", c.user))).cloned().collect();
        for r in refs {
            let reply = c.reply(&r);
            assert_eq!(reply["status"], "ok", "{r}: {reply}");
            acked.push(reply["response"]["seq"].as_u64().unwrap());
        }
        c.until("every message", |c| c.msgs.len() >= TOTAL);
    }
    acked.sort_unstable();
    assert_eq!(
        acked,
        (1..=TOTAL as u64).collect::<Vec<u64>>(),
        "one seq per message, none twice, across nodes"
    );
    for c in &mut clients {
        c.settle(Duration::from_millis(300));
        let seqs = c.seqs();
        assert_eq!(seqs.len(), TOTAL, "{} got each message exactly once: {seqs:?}", c.user);
        assert!(strictly_increasing(&seqs), "{} got them in seq order: {seqs:?}", c.user);
        let bodies: HashSet<(String, String)> = c
            .msgs
            .iter()
            .map(|m| (m["user"].as_str().unwrap().into(), m["body"].as_str().unwrap().into()))
            .collect();
        assert_eq!(bodies, sent.values().cloned().collect::<HashSet<_>>());
    }

    // Typing reaches the members on every node but the sender.
    clients[0].push("typing", &serde_json::json!({ "typing": true }));
    for c in clients.iter_mut().skip(1) {
        c.until("u0 typing", |c| c.typing.iter().any(|t| t["user"] == "u0"));
    }
    clients[0].settle(Duration::from_millis(200));
    assert!(clients[0].typing.is_empty(), "the sender does not hear its own typing");

    // History comes from the shared store on any node.
    let history = clients[5].history();
    let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=TOTAL as u64).collect::<Vec<u64>>());

    // A member leaving is seen leaving on every node.
    drop(clients.pop());
    for c in &mut clients {
        c.until("u5 gone", |c| !c.presence.contains_key("u5"));
    }
    let published: u64 = nodes.iter().map(|n| metric(n.addr, "rusher_cluster_published_total")).sum();
    assert!(published > 0);
    let leases: u64 = nodes.iter().map(|n| metric(n.addr, "rusher_cluster_leases_held")).sum();
    assert_eq!(leases, 1, "one node owns the room");
}

#[test]
#[ignore = "needs Redis and PostgreSQL: scripts/test starts them"]
fn cluster_owner_killed_other_nodes_take_over_and_acked_messages_stay_in_history() {
    let schema = Schema::new("clusterkill");
    let (store, redis) = (schema.store_url(), redis_url());
    let mut nodes: Vec<Option<Proc>> = (0..3).map(|_| Some(node(&store, &redis, "127.0.0.1:0"))).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.as_ref().unwrap().addr).collect();
    let topic = "room:owner-killed";
    let mut a = Client::join(addrs[0], "a", topic);
    let mut b = Client::join(addrs[1], "b", topic);
    let mut c = Client::join(addrs[2], "c", topic);
    let all: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    for cl in [&mut a, &mut b, &mut c] {
        cl.until("a, b and c in presence", |cl| cl.users() == all);
    }
    let mut acked = vec![a.send_until_acked("first, on the owner")["seq"].as_u64().unwrap()];
    assert_eq!(metric(addrs[0], "rusher_cluster_leases_held"), 1, "the first sender's node owns the room");
    acked.push(b.send_until_acked("forwarded to the owner")["seq"].as_u64().unwrap());

    // kill -9 the owner: the others' pushes fail until its lease expires, then one takes over.
    drop(nodes[0].take());
    for i in 0..6 {
        let sender = if i % 2 == 0 { &mut b } else { &mut c };
        acked.push(sender.send_until_acked(&format!("after the kill {i}"))["seq"].as_u64().unwrap());
    }
    for cl in [&mut b, &mut c] {
        cl.until("a gone from presence", |cl| !cl.presence.contains_key("a"));
    }
    let history = c.history();
    let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(strictly_increasing(&seqs), "no seq twice in history: {seqs:?}");
    for s in &acked {
        assert!(seqs.contains(s), "acked seq {s} is in history {seqs:?}");
    }
    let leases =
        metric(addrs[1], "rusher_cluster_leases_held") + metric(addrs[2], "rusher_cluster_leases_held");
    assert_eq!(leases, 1, "a surviving node owns the room");
    // Both survivors kept delivering: each got every message acked after the kill.
    for cl in [&mut b, &mut c] {
        cl.until("the messages after the kill", |cl| cl.msgs.iter().any(|m| m["body"] == "after the kill 5"));
    }
}

#[test]
#[ignore = "needs redis-server and PostgreSQL: scripts/test starts them"]
fn cluster_survives_a_redis_restart_resubscribes_and_chat_resumes() {
    let schema = Schema::new("clusterredis");
    let mut redis = RedisServer::start(&[]);
    let store = schema.store_url();
    let mut n0 = node(&store, &redis.url(None), "127.0.0.1:0");
    let mut n1 = node(&store, &redis.url(None), "127.0.0.1:0");
    let topic = "room:redis-restart";
    let mut a = Client::join(n0.addr, "a", topic);
    let mut b = Client::join(n1.addr, "b", topic);
    let both: BTreeSet<String> = ["a", "b"].map(String::from).into();
    for cl in [&mut a, &mut b] {
        cl.until("a and b in presence", |cl| cl.users() == both);
    }
    a.send_until_acked("before the restart");
    b.until("the first message", |cl| cl.msgs.len() == 1);

    redis.kill();
    std::thread::sleep(Duration::from_millis(500));
    redis.start_again();
    eventually("both nodes to subscribe again", || {
        metric(n0.addr, "rusher_cluster_resubscribes_total") >= 1
            && metric(n1.addr, "rusher_cluster_resubscribes_total") >= 1
    });
    let ack = b.send_until_acked("after the restart");
    assert_eq!(ack["seq"].as_u64(), Some(2), "the room continues from the store's head: {ack}");
    a.until("the message sent after the restart", |cl| {
        cl.msgs.iter().any(|m| m["body"] == "after the restart")
    });
    for cl in [&mut a, &mut b] {
        cl.until("a and b in presence again", |cl| cl.users() == both);
    }
    assert!(
        n0.child.try_wait().unwrap().is_none() && n1.child.try_wait().unwrap().is_none(),
        "no node exited"
    );
}

#[test]
#[ignore = "needs Redis and PostgreSQL: scripts/test starts them"]
fn cluster_nodes_sharing_one_port_deliver_each_message_once() {
    let schema = Schema::new("clusterport");
    let (store, redis) = (schema.store_url(), redis_url());
    let first = node(&store, &redis, "127.0.0.1:0");
    let second = node(&store, &redis, &first.addr.to_string());
    assert_eq!(second.addr, first.addr);
    let topic = "room:one-port";
    // SO_REUSEPORT spreads connections over both processes' listeners by hash: with 16 clients the
    // chance that all land on one process is 2^-15.
    let mut clients: Vec<Client> =
        (0..16).map(|i| Client::join(first.addr, &format!("p{i}"), topic)).collect();
    for c in &mut clients {
        c.until("16 users in presence", |c| c.users().len() == 16);
    }
    // Presence refs carry their node's salt in the top 24 bits: both nodes have members.
    let salts: HashSet<u64> =
        clients[0].presence.values().flatten().map(|r| u64::from_str_radix(r, 16).unwrap() >> 40).collect();
    assert_eq!(salts.len(), 2, "members on both nodes: {:?}", clients[0].presence);
    for c in &mut clients {
        c.send_until_acked(&format!("from {}", c.user));
    }
    for c in &mut clients {
        c.until("16 messages", |c| c.msgs.len() >= 16);
        c.settle(Duration::from_millis(100));
        let seqs = c.seqs();
        assert_eq!(seqs, (1..=16).collect::<Vec<u64>>(), "{}: each once, in order", c.user);
    }
}
