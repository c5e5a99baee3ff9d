//! `/collab/<doc>` on the wire: the server speaks first, bad input closes with a reason, and the
//! document's text is served over plain HTTP.

mod common;

use common::{http_exchange, status_of, upgrade_request, TestServer, Ws};

#[test]
fn the_server_speaks_first_with_its_state_vector() {
    let srv = TestServer::start(|_| {});
    let mut ws = Ws::open(srv.addr, "/collab/first");
    let f = ws.recv().expect("a frame");
    assert_eq!(f.opcode, 2, "binary");
    assert_eq!(&f.payload[..2], &[0, 0], "sync step 1");
}

#[test]
fn malformed_messages_and_text_frames_are_closed_with_a_reason() {
    let srv = TestServer::start(|_| {});
    let mut ws = Ws::open(srv.addr, "/collab/bad");
    ws.recv().expect("sync step 1");
    ws.send_raw(0x82, &[9, 9, 9], true);
    let code = ws.expect_close();
    assert!(code == 1003 || code == 1007, "closed with {code}");

    let mut ws = Ws::open(srv.addr, "/collab/bad");
    ws.recv().expect("sync step 1");
    ws.send_raw(0x82, &[0, 1], true); // a sync step 2 without its update: truncated
    assert_eq!(ws.expect_close(), 1007);

    let mut ws = Ws::open(srv.addr, "/collab/bad");
    ws.send_text("hello");
    assert_eq!(ws.expect_close(), 1003);

    // Other documents are unaffected.
    let mut ok = Ws::open(srv.addr, "/collab/good");
    assert_eq!(ok.recv().expect("sync step 1").opcode, 2);
}

#[test]
fn text_of_a_document_over_http() {
    let srv = TestServer::start(|_| {});
    let r = http_exchange(srv.addr, b"GET /collab/empty/text HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&r), 200);
    assert!(r.ends_with("\r\n\r\n"), "empty body for an empty document: {r}");
    assert_eq!(status_of(&http_exchange(srv.addr, upgrade_request("/collab/").as_bytes())), 404);
}
