//! The websocket-shootout protocol on `/shootout`.

mod common;

use common::{http_exchange, status_of, upgrade_request, TestServer, Ws};
use serde_json::json;

#[test]
fn shootout_is_off_unless_enabled() {
    let srv = TestServer::start(|_| {});
    assert_eq!(status_of(&http_exchange(srv.addr, upgrade_request("/shootout").as_bytes())), 404);
}

#[test]
fn echo_and_broadcast_reach_every_client_exactly_once() {
    let srv = TestServer::start(|c| c.shootout = true);
    // Enough clients that both workers hold some.
    let mut clients: Vec<Ws> = (0..6).map(|_| Ws::open(srv.addr, "/shootout")).collect();
    clients[0].send_text(r#"{"type":"echo","payload":{"n":1}}"#);
    assert_eq!(clients[0].recv_text_until(|_| true), json!({"type": "echo", "payload": {"n": 1}}));

    clients[1].send_text(r#"{"type":"broadcast","payload":{"n":2}}"#);
    // The sender sees its own copy, then the result.
    assert_eq!(clients[1].recv_text_until(|_| true), json!({"type": "broadcast", "payload": {"n": 2}}));
    assert_eq!(clients[1].recv_text_until(|_| true), json!({"type": "broadcastResult", "payload": {"n": 2}}));
    for (i, c) in clients.iter_mut().enumerate().filter(|(i, _)| *i != 1) {
        assert_eq!(
            c.recv_text_until(|_| true),
            json!({"type": "broadcast", "payload": {"n": 2}}),
            "client {i}"
        );
    }
    // Exactly once: the next message each client sees is the next broadcast, not a duplicate.
    clients[2].send_text(r#"{"type":"broadcast","payload":3}"#);
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.recv_text_until(|_| true), json!({"type": "broadcast", "payload": 3}), "client {i}");
    }
    drop(clients.remove(0));
    clients[0].send_text(r#"{"type":"broadcast","payload":4}"#);
    assert_eq!(clients[0].recv_text_until(|_| true)["payload"], 4);
}

#[test]
fn unknown_shootout_messages_close_with_1003() {
    let srv = TestServer::start(|c| c.shootout = true);
    let mut ws = Ws::open(srv.addr, "/shootout");
    ws.send_text(r#"{"type":"shout"}"#);
    assert_eq!(ws.expect_close(), 1003);
}
