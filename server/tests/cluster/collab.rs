//! Collaborative documents across nodes: y-websocket editors (a yrs document each, speaking the
//! protocol over raw frames) on different nodes.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, GetString, ReadTxn, StateVector, Text, TextRef, Transact, Update};

use super::{eventually, metric, node, redis_url, WAIT};
use crate::common::{http_exchange, Proc, Schema, Ws};
use crate::redis_server::RedisServer;

fn write_var(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_var(buf: &mut &[u8]) -> u64 {
    let (mut n, mut shift) = (0u64, 0);
    loop {
        let b = buf[0];
        *buf = &buf[1..];
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return n;
        }
        shift += 7;
    }
}

fn read_bytes<'a>(buf: &mut &'a [u8]) -> &'a [u8] {
    let len = read_var(buf) as usize;
    let (bytes, rest) = buf.split_at(len);
    *buf = rest;
    bytes
}

/// A y-websocket message: sync (`kind` 0 step 1, 1 step 2, 2 update) with its bytes.
fn sync_message(kind: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    write_var(&mut out, kind);
    write_var(&mut out, bytes.len() as u64);
    out.extend_from_slice(bytes);
    out
}

/// An editor: a Yjs document synced with one node over y-websocket; like y-websocket, it reconnects
/// when the server closes it, and syncs again.
struct Editor {
    ws: Ws,
    addr: SocketAddr,
    path: String,
    /// Times the server closed the connection.
    reconnects: usize,
    name: String,
    doc: Doc,
    text: TextRef,
    /// Every block received in an update message, to catch one received twice.
    blocks: HashSet<(ClientID, u32)>,
    duplicates: usize,
    /// Awareness clients with a state, as last heard.
    peers: HashSet<u64>,
}

impl Editor {
    fn open(addr: SocketAddr, doc_name: &str, client: u64, name: &str) -> Editor {
        let path = format!("/collab/{doc_name}");
        let ws = Ws::open(addr, &path);
        ws.stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let doc = Doc::with_client_id(client);
        let text = doc.get_or_insert_text("quill");
        let mut e = Editor {
            ws,
            addr,
            path,
            reconnects: 0,
            name: name.into(),
            doc,
            text,
            blocks: HashSet::new(),
            duplicates: 0,
            peers: HashSet::new(),
        };
        e.sync();
        // Awareness: one client with a JSON state, clock 1.
        let state = format!(r#"{{"user":{{"name":"{name}"}}}}"#);
        let mut a = vec![1];
        let mut update = Vec::new();
        write_var(&mut update, 1);
        write_var(&mut update, client);
        write_var(&mut update, 1);
        write_var(&mut update, state.len() as u64);
        update.extend_from_slice(state.as_bytes());
        write_var(&mut a, update.len() as u64);
        a.extend_from_slice(&update);
        e.ws.send_raw(0x82, &a, true);
        e
    }

    /// Ask the server for what this editor lacks.
    fn sync(&mut self) {
        let sv = self.doc.transact().state_vector().encode_v1();
        self.ws.send_raw(0x82, &sync_message(0, &sv), true);
    }

    fn read_one(&mut self) {
        let frame = match self.ws.recv() {
            Some(f) if f.opcode != 8 => f,
            Some(_) => {
                // Closed by the server: connect again; the sync sends what the server lacks.
                self.reconnects += 1;
                std::thread::sleep(Duration::from_millis(100));
                self.ws = Ws::open(self.addr, &self.path);
                self.ws.stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                self.sync();
                return;
            }
            None => return,
        };
        if frame.opcode != 2 {
            return;
        }
        let mut buf = &frame.payload[..];
        match read_var(&mut buf) {
            0 => match read_var(&mut buf) {
                0 => {
                    let sv = StateVector::decode_v1(read_bytes(&mut buf)).unwrap();
                    let diff = self.doc.transact().encode_state_as_update_v1(&sv);
                    self.ws.send_raw(0x82, &sync_message(1, &diff), true);
                }
                1 => self.apply(read_bytes(&mut buf), false),
                2 => self.apply(read_bytes(&mut buf), true),
                other => panic!("unknown sync message {other}"),
            },
            1 => {
                let mut a = read_bytes(&mut buf);
                for _ in 0..read_var(&mut a) {
                    let client = read_var(&mut a);
                    let _clock = read_var(&mut a);
                    let state = read_bytes(&mut a);
                    if state == b"null" {
                        self.peers.remove(&client);
                    } else {
                        self.peers.insert(client);
                    }
                }
            }
            _ => {}
        }
    }

    fn apply(&mut self, update: &[u8], relayed: bool) {
        let update = Update::decode_v1(update).unwrap();
        if relayed {
            for (client, ranges) in update.insertions(true).iter() {
                for range in ranges.iter() {
                    for clock in range.clone() {
                        if !self.blocks.insert((*client, clock)) {
                            self.duplicates += 1;
                        }
                    }
                }
            }
        }
        self.doc.transact_mut().apply_update(update).unwrap();
    }

    fn until(&mut self, what: &str, cond: impl Fn(&Editor) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(self) {
            assert!(Instant::now() < deadline, "{}: timed out waiting for {what}", self.name);
            self.read_one();
        }
    }

    fn settle(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.read_one();
        }
    }

    /// Type `s` at the end and send the update.
    fn type_text(&mut self, s: &str) {
        let before = self.doc.transact().state_vector();
        {
            let mut txn = self.doc.transact_mut();
            let len = self.text.len(&txn);
            self.text.insert(&mut txn, len, s);
        }
        let update = self.doc.transact().encode_diff_v1(&before);
        self.ws.send_raw(0x82, &sync_message(2, &update), true);
    }

    fn text(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }

    /// Characters typed by each editor, in any interleaving: the letters of the text, sorted.
    fn letters(&self) -> Vec<char> {
        let mut l: Vec<char> = self.text().chars().collect();
        l.sort_unstable();
        l
    }
}

/// Read from every editor in turn until `cond` holds for each.
fn all_until(editors: &mut [&mut Editor], what: &str, cond: impl Fn(&Editor) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !editors.iter().all(|e| cond(e)) {
        let stuck: Vec<&str> = editors.iter().filter(|e| !cond(e)).map(|e| e.name.as_str()).collect();
        assert!(Instant::now() < deadline, "{stuck:?}: timed out waiting for {what}");
        for e in editors.iter_mut() {
            e.read_one();
        }
    }
}

fn text_over_http(addr: SocketAddr, doc: &str) -> String {
    let r = http_exchange(addr, format!("GET /collab/{doc}/text HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    r.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

fn stored_updates(schema: &Schema, doc: &str) -> Vec<i64> {
    let mut c = postgres::Client::connect(&schema.store_url(), postgres::NoTls).unwrap();
    c.query("SELECT seq FROM collab_updates WHERE doc = $1 ORDER BY seq", &[&doc])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
#[ignore = "needs Redis and PostgreSQL: scripts/test starts them"]
fn cluster_collab_editors_on_three_nodes_converge_each_update_relayed_once_and_stored_once() {
    let schema = Schema::new("clustercollab");
    let (store, redis) = (schema.store_url(), redis_url());
    let mut nodes: Vec<Option<Proc>> = (0..3).map(|_| Some(node(&store, &redis, "127.0.0.1:0"))).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.as_ref().unwrap().addr).collect();
    let doc = "three-nodes";
    let letters = ['a', 'b', 'c'];
    let mut editors: Vec<Editor> =
        (0..3).map(|i| Editor::open(addrs[i], doc, 100 + i as u64, &format!("e{i}"))).collect();
    // Each editor sees the others' cursors: every node's channel is subscribed.
    for e in &mut editors {
        e.until("every editor's awareness", |e| e.peers.len() == 3);
    }

    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        for (i, e) in editors.iter_mut().enumerate() {
            e.type_text(&letters[i].to_string());
            if round % 5 == 0 {
                e.settle(Duration::from_millis(20));
            }
        }
    }
    let mut expected: Vec<char> = letters.iter().flat_map(|c| std::iter::repeat_n(*c, ROUNDS)).collect();
    expected.sort_unstable();
    for e in &mut editors {
        e.until("every letter typed anywhere", |e| e.letters() == expected);
    }
    for e in &mut editors {
        e.settle(Duration::from_millis(300));
        assert_eq!(e.reconnects, 0, "{} was never closed", e.name);
        assert_eq!(e.duplicates, 0, "{} received an update twice", e.name);
        assert_eq!(e.blocks.len(), ROUNDS * 3, "{} received every update relayed, its own too", e.name);
    }
    let text = editors[0].text();
    assert!(editors.iter().all(|e| e.text() == text), "the editors converged");
    assert_eq!(
        stored_updates(&schema, doc),
        (1..=(ROUNDS * 3) as i64).collect::<Vec<i64>>(),
        "each update stored once, by one owner"
    );
    let leases: u64 = addrs.iter().map(|a| metric(*a, "rusher_cluster_leases_held")).sum();
    assert_eq!(leases, 1, "one node owns the document");
    for a in &addrs {
        eventually("the text over HTTP on every node", || text_over_http(*a, doc) == text);
    }
    // A late joiner syncs the whole document on a node that does not own it.
    let owner = (0..3).find(|i| metric(addrs[*i], "rusher_cluster_leases_held") == 1).unwrap();
    let mut late = Editor::open(addrs[(owner + 1) % 3], doc, 200, "late");
    late.until("the whole document", |e| e.text() == text);

    // The owner is killed: the others go on, through a new owner, and lose nothing stored.
    drop(nodes[owner].take());
    let survivors: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let mut editors: Vec<Editor> =
        editors.into_iter().enumerate().filter(|(i, _)| *i != owner).map(|(_, e)| e).collect();
    editors[0].type_text("X");
    editors[1].type_text("Y");
    for e in editors.iter_mut().chain([&mut late]) {
        e.until("the edits after the kill", |e| e.text().contains('X') && e.text().contains('Y'));
    }
    let after = editors[0].text();
    assert!(editors.iter().all(|e| e.text() == after));
    let stored = stored_updates(&schema, doc);
    assert_eq!(stored.len(), ROUNDS * 3 + 2, "the two edits after the kill are stored too: {stored:?}");
    let leases: u64 = survivors.iter().map(|i| metric(addrs[*i], "rusher_cluster_leases_held")).sum();
    assert_eq!(leases, 1, "a survivor owns the document");
}

#[test]
#[ignore = "needs redis-server and PostgreSQL: scripts/test starts them"]
fn cluster_collab_replicas_merge_what_they_missed_while_redis_restarted() {
    let schema = Schema::new("clustercollabredis");
    let mut redis = RedisServer::start(&[]);
    let store = schema.store_url();
    let n0 = node(&store, &redis.url(None), "127.0.0.1:0");
    let n1 = node(&store, &redis.url(None), "127.0.0.1:0");
    let doc = "redis-restart";
    let mut e0 = Editor::open(n0.addr, doc, 300, "e0");
    let mut e1 = Editor::open(n1.addr, doc, 301, "e1");
    for e in [&mut e0, &mut e1] {
        e.until("both cursors", |e| e.peers.len() == 2);
    }
    e0.type_text("a");
    for e in [&mut e0, &mut e1] {
        e.until("the first edit", |e| e.text() == "a");
    }
    assert_eq!(metric(n0.addr, "rusher_cluster_leases_held"), 1, "the first editor's node owns the document");

    // While Redis is away the owner stores and relays its own editor's edit; nothing reaches n1.
    redis.kill();
    e0.type_text("b");
    e0.until("its own edit relayed once durable", |e| e.blocks.len() == 2);
    redis.start_again();
    eventually("both nodes to subscribe again", || {
        metric(n0.addr, "rusher_cluster_resubscribes_total") >= 1
            && metric(n1.addr, "rusher_cluster_resubscribes_total") >= 1
    });
    // n1 reads the store again when its channel is back: the missed edit reaches its editor.
    e1.until("the edit made while Redis was away", |e| e.text() == "ab");
    // Typed while n1's publishing connection may still be reconnecting: if no owner can be asked,
    // n1 closes its editor, which reconnects and sends the edit again.
    e1.type_text("c");
    all_until(&mut [&mut e0, &mut e1], "the edit after the restart", |e| e.text() == "abc");
    for e in [&mut e0, &mut e1] {
        e.settle(Duration::from_millis(200));
        assert_eq!(e.duplicates, 0, "{} received an update twice", e.name);
    }
    assert_eq!(stored_updates(&schema, doc).len(), 3, "three updates, each stored once");
}
