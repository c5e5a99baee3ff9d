//! The `rusher` binary against Redis: what one server process acked — a chat message, a collab update, a
//! geofence — is served by the next process; while Redis is down pushes get error replies on a socket
//! that stays, and once it is back they are acked again. Needs `RUSHER_TEST_REDIS_URL` and
//! `RUSHER_TEST_REDIS_SERVER` (`scripts/with-redis` sets them; `scripts/test` runs this).

mod common;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{http_exchange, spawn_listening, Proc, Ws};
use redis_server::{delete_keys, RedisServer};
use yrs::{Text, Transact};

/// Start the binary on `store` and wait for its "listening" line.
fn spawn(store: &str) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rusher"));
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "2", "--log", "warn", "--store", store])
        .args(["--redis-appendfsync", "always"]);
    spawn_listening(cmd)
}

fn join(ws: &mut Ws, topic: &str) -> serde_json::Value {
    ws.send_text(&format!(r#"["1","1","{topic}","phx_join",{{}}]"#));
    ws.recv_text_until(|v| v[1] == "1" && v[3] == "phx_reply")
}

/// Push `event` with `payload` on a joined `topic`; returns the reply's payload.
fn push(ws: &mut Ws, topic: &str, event: &str, payload: &str) -> serde_json::Value {
    ws.send_text(&format!(r#"["1","p","{topic}","{event}",{payload}]"#));
    ws.recv_text_until(|v| v[1] == "p")[4].clone()
}

/// The bodies of a room's latest ten messages, oldest first.
fn history_bodies(ws: &mut Ws, topic: &str) -> Vec<String> {
    let page = push(ws, topic, "history", r#"{"limit":10}"#);
    page["response"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect()
}

/// The text of a collab document over HTTP (answered once the updates before it are durable).
fn doc_text(server: &Proc, doc: &str) -> String {
    let response =
        http_exchange(server.addr, format!("GET /collab/{doc}/text HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// A y-websocket sync message carrying a Yjs update that inserts `text` into the shared type "quill".
fn insert_message(text: &str) -> Vec<u8> {
    let doc = yrs::Doc::new();
    let quill = doc.get_or_insert_text("quill");
    let update = {
        let mut txn = doc.transact_mut();
        quill.insert(&mut txn, 0, text);
        txn.encode_update_v1()
    };
    // messageSync (0), syncUpdate (2), the update's length as a varuint, the update.
    let mut message = vec![0, 2];
    let mut len = update.len();
    while len >= 0x80 {
        message.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    message.push(len as u8);
    message.extend_from_slice(&update);
    message
}

/// A key prefix of its own on the shared server, deleted at the end.
struct Prefix {
    base: String,
    prefix: String,
}

impl Prefix {
    fn new(tag: &str) -> Prefix {
        let base = std::env::var("RUSHER_TEST_REDIS_URL")
            .expect("RUSHER_TEST_REDIS_URL is not set (needs Redis: scripts/test starts one)");
        let prefix = format!("t:it:{tag}:{}:", std::process::id());
        delete_keys(&base, &prefix);
        Prefix { base, prefix }
    }

    fn store_url(&self) -> String {
        format!("{}?prefix={}", self.base, self.prefix)
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        delete_keys(&self.base, &self.prefix);
    }
}

#[test]
#[ignore = "needs Redis: scripts/test starts one"]
fn chat_collab_and_geofences_survive_a_restart_on_redis() {
    let prefix = Prefix::new("restart");
    let url = prefix.store_url();

    let server = spawn(&url);
    let mut ws = Ws::phoenix(server.addr, "alice");
    let reply = join(&mut ws, "room:redis");
    assert_eq!(reply[4]["status"], "ok", "{reply}");
    assert_eq!(reply[4]["response"]["messages"], serde_json::json!([]));
    let ack = push(&mut ws, "room:redis", "new_msg", r#"{"body":"kept in redis ✓"}"#);
    assert_eq!(ack["status"], "ok", "{ack}");
    let seq = ack["response"]["seq"].as_u64().unwrap();

    assert_eq!(join(&mut ws, "geo:city")[4]["status"], "ok");
    let fence = r#"{"id":"depot","geometry":{"type":"Point","coordinates":[2.35,48.85],"radius":200}}"#;
    let created = push(&mut ws, "geo:city", "fence_create", fence);
    assert_eq!(created["status"], "ok", "{created}");

    let mut editor = Ws::open(server.addr, "/collab/notes");
    editor.recv().expect("sync step 1");
    editor.send_raw(0x82, &insert_message("durable text"), true);
    // The update comes back to its sender too, once it is durable.
    while editor.recv().expect("the update relayed").payload.get(..2) != Some(&[0, 2][..]) {}
    assert_eq!(doc_text(&server, "notes"), "durable text");
    drop((ws, editor));
    drop(server); // SIGKILL: the acks promised durability, not a clean shutdown

    let server = spawn(&url);
    let mut ws = Ws::phoenix(server.addr, "bob");
    let reply = join(&mut ws, "room:redis");
    let messages = reply[4]["response"]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{reply}");
    assert_eq!(messages[0]["seq"].as_u64(), Some(seq));
    assert_eq!(messages[0]["body"], "kept in redis ✓");
    assert_eq!(messages[0]["user"], "alice");
    // The room's sequence continues where the first process left it.
    let ack = push(&mut ws, "room:redis", "new_msg", r#"{"body":"second"}"#);
    assert_eq!(ack["response"]["seq"].as_u64(), Some(seq + 1), "{ack}");
    assert_eq!(history_bodies(&mut ws, "room:redis"), ["kept in redis ✓", "second"]);

    assert_eq!(join(&mut ws, "geo:city")[4]["status"], "ok");
    let list = push(&mut ws, "geo:city", "fence_list", "{}");
    let fences = list["response"]["fences"].as_array().unwrap();
    assert_eq!(fences.len(), 1, "{list}");
    assert_eq!(fences[0]["id"], "depot");

    assert_eq!(doc_text(&server, "notes"), "durable text");
}

#[test]
#[ignore = "needs Redis: scripts/test starts one"]
fn while_redis_is_down_pushes_fail_the_socket_stays_and_service_resumes() {
    let mut redis = RedisServer::start(&[]);
    let server = spawn(&redis.url(None));
    let mut ws = Ws::phoenix(server.addr, "alice");
    assert_eq!(join(&mut ws, "room:outage")[4]["status"], "ok");
    assert_eq!(push(&mut ws, "room:outage", "new_msg", r#"{"body":"before"}"#)["status"], "ok");

    redis.kill();
    let refused = push(&mut ws, "room:outage", "new_msg", r#"{"body":"lost"}"#);
    assert_eq!(refused["status"], "error", "{refused}");
    assert_eq!(refused["response"]["reason"], "storage failed", "{refused}");
    // The connection is still served: a heartbeat is answered.
    ws.send_text(r#"[null,"hb","phoenix","heartbeat",{}]"#);
    assert_eq!(ws.recv_text_until(|v| v[1] == "hb")[4]["status"], "ok");

    redis.start_again();
    // Reconnects are spaced a quarter of a second apart: retry for a few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let acked = loop {
        let reply = push(&mut ws, "room:outage", "new_msg", r#"{"body":"after"}"#);
        if reply["status"] == "ok" {
            break reply;
        }
        assert!(Instant::now() < deadline, "still failing after Redis returned: {reply}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(acked["response"]["seq"].as_u64().unwrap() > 1);
    assert_eq!(
        history_bodies(&mut ws, "room:outage"),
        ["before", "after"],
        "the acked message survived Redis's SIGKILL, the refused one was never stored"
    );
}
