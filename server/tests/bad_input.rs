//! Bad input gets a clear error and never takes the server down: each case is followed by a check that
//! the server still serves a well-behaved client.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{http_exchange, status_of, upgrade_request, TestServer, Ws};
use serde_json::json;

fn still_serves(srv: &TestServer) {
    let mut ws = Ws::phoenix(srv.addr, "checker");
    ws.send_text(r#"[null,"1","phoenix","heartbeat",{}]"#);
    let v = ws.recv_text_until(|_| true);
    assert_eq!(v, json!([null, "1", "phoenix", "phx_reply", {"status": "ok", "response": {}}]));
}

#[test]
fn oversized_frame_is_closed_with_1009() {
    let srv = TestServer::start(|c| c.max_message_bytes = 1024);
    let mut ws = Ws::phoenix(srv.addr, "big");
    ws.send_raw(0x81, &vec![b'a'; 4096], true);
    assert_eq!(ws.expect_close(), 1009);
    still_serves(&srv);
}

#[test]
fn invalid_utf8_text_is_closed_with_1007() {
    let srv = TestServer::start(|_| {});
    let mut ws = Ws::phoenix(srv.addr, "utf");
    ws.send_raw(0x81, &[0xff, 0xfe, 0xfd], true);
    assert_eq!(ws.expect_close(), 1007);
    still_serves(&srv);
}

#[test]
fn unmasked_client_frame_is_closed_with_1002() {
    let srv = TestServer::start(|_| {});
    let mut ws = Ws::phoenix(srv.addr, "unmasked");
    ws.send_raw(0x81, br#"[null,"1","phoenix","heartbeat",{}]"#, false);
    assert_eq!(ws.expect_close(), 1002);
    still_serves(&srv);
}

#[test]
fn malformed_phoenix_json_is_closed_with_1007_and_a_reason() {
    let srv = TestServer::start(|_| {});
    let mut ws = Ws::phoenix(srv.addr, "json");
    ws.send_text("[not json");
    let f = loop {
        let f = ws.recv().expect("close frame");
        if f.opcode == 8 {
            break f;
        }
    };
    assert_eq!(f.close_code(), 1007);
    assert!(String::from_utf8_lossy(&f.payload[2..]).contains("malformed"));
    still_serves(&srv);
}

#[test]
fn garbage_and_oversized_upgrades_get_400_and_431() {
    let srv = TestServer::start(|_| {});
    assert_eq!(status_of(&http_exchange(srv.addr, b"\x16\x03\x01 garbage\r\n\r\n")), 400);
    let mut big = String::from("GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\n");
    while big.len() < 20_000 {
        big.push_str("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    big.push_str("\r\n");
    assert_eq!(status_of(&http_exchange(srv.addr, big.as_bytes())), 431);
    let no_key = "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(status_of(&http_exchange(srv.addr, no_key.as_bytes())), 400);
    still_serves(&srv);
}

#[test]
fn routes_and_versions() {
    let srv = TestServer::start(|_| {});
    assert_eq!(status_of(&http_exchange(srv.addr, upgrade_request("/nowhere").as_bytes())), 404);
    assert_eq!(
        status_of(&http_exchange(srv.addr, upgrade_request("/socket/websocket?vsn=1.0.0").as_bytes())),
        403
    );
    assert_eq!(status_of(&http_exchange(srv.addr, upgrade_request("/socket/websocket").as_bytes())), 403);
    assert_eq!(
        status_of(&http_exchange(srv.addr, upgrade_request("/autobahn").as_bytes())),
        404,
        "echo is off by default"
    );
    let health = http_exchange(srv.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&health), 200);
    let metrics = http_exchange(srv.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(metrics.contains("rusher_connections "), "{metrics}");
    assert!(metrics.contains("rusher_store_commit_seconds_bucket"), "{metrics}");
}

#[test]
fn slowloris_upgrade_is_closed_at_the_handshake_timeout() {
    let srv = TestServer::start(|c| c.handshake_timeout = Duration::from_secs(1));
    let mut s = common::connect(srv.addr);
    s.write_all(b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut out);
    let waited = started.elapsed();
    assert!(out.is_empty(), "no response to an unfinished request");
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    still_serves(&srv);
}

#[test]
fn unknown_topic_and_push_before_join_get_error_replies() {
    let srv = TestServer::start(|_| {});
    let mut ws = Ws::phoenix(srv.addr, "alice");
    ws.send_text(r#"["1","1","nope:x","phx_join",{}]"#);
    let v = ws.recv_text_until(|_| true);
    assert_eq!(
        v,
        json!([null, "1", "nope:x", "phx_reply", {"status": "error", "response": {"reason": "unmatched topic"}}])
    );
    ws.send_text(r#"["2","2","room:x","new_msg",{"body":"hi"}]"#);
    let v = ws.recv_text_until(|_| true);
    assert_eq!(
        v,
        json!([null, "2", "room:x", "phx_reply", {"status": "error", "response": {"reason": "unmatched topic"}}])
    );
    ws.send_text(r#"["3","3","room:x","phx_join",{"last_seq":"yesterday"}]"#);
    let v = ws.recv_text_until(|_| true);
    assert_eq!(v[4]["status"], "error");
    still_serves(&srv);
}

#[test]
fn bad_tokens_are_refused() {
    let secret = "0123456789abcdef-test-secret";
    let srv =
        TestServer::start(|c| c.token_key = Some(rusher_server::auth::TokenKey::new(secret.as_bytes())));
    let r = http_exchange(srv.addr, upgrade_request("/socket/websocket?vsn=2.0.0").as_bytes());
    assert_eq!(status_of(&r), 401);
    let r =
        http_exchange(srv.addr, upgrade_request("/socket/websocket?vsn=2.0.0&token=forged.token").as_bytes());
    assert_eq!(status_of(&r), 403);
    let key = rusher_server::auth::TokenKey::new(secret.as_bytes());
    let token =
        rusher_server::auth::mint(&key, "alice", Duration::from_secs(60), std::time::SystemTime::now())
            .unwrap();
    let mut ws = Ws::open(srv.addr, &format!("/socket/websocket?vsn=2.0.0&token={token}&user=mallory"));
    ws.send_text(r#"["1","1","room:auth","phx_join",{}]"#);
    let state = ws.recv_text_until(|v| v[3] == "presence_state");
    assert!(state[4].get("alice").is_some() && state[4].get("mallory").is_none(), "{state}");
}

#[test]
fn a_slow_consumer_is_closed_without_growing_memory() {
    let srv = TestServer::start(|c| c.max_outbound_bytes = 64 * 1024);
    let mut reader = Ws::phoenix(srv.addr, "reader");
    reader.send_text(r#"["1","1","room:flood","phx_join",{}]"#);
    reader.recv_text_until(|v| v[3] == "presence_state");
    // A member that never reads: its socket buffers fill, then its queue passes the bound.
    let mut idle = Ws::phoenix(srv.addr, "idle");
    idle.send_text(r#"["1","1","room:flood","phx_join",{}]"#);
    idle.recv_text_until(|v| v[3] == "presence_state");
    let body = "x".repeat(4000);
    let mut closed = false;
    for i in 0..3000 {
        let r = format!("{}", i + 2);
        reader.send_text(&format!(r#"["1","{r}","room:flood","new_msg",{{"body":"{body}"}}]"#));
        reader.recv_text_until(|v| v[1] == r.as_str());
        if i % 100 == 99 {
            let m = http_exchange(srv.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            if m.lines().any(|l| l.starts_with("rusher_slow_consumer_closes_total ") && !l.ends_with(" 0")) {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the non-reading member was never closed");
    still_serves(&srv);
}
