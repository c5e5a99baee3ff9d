//! Chat behaviour best checked on the wire: listeners that opt out of presence.

mod common;

use common::{TestServer, Ws};

#[test]
fn a_listener_without_presence_gets_messages_but_no_presence_traffic() {
    let srv = TestServer::start(|_| {});
    let mut listener = Ws::phoenix(srv.addr, "listener");
    listener.send_text(r#"["1","1","room:quiet","phx_join",{"presence":false}]"#);
    let reply = listener.recv_text_until(|v| v[1] == "1");
    assert_eq!(reply[4]["status"], "ok");

    let mut talker = Ws::phoenix(srv.addr, "talker");
    talker.send_text(r#"["1","1","room:quiet","phx_join",{}]"#);
    let state = talker.recv_text_until(|v| v[3] == "presence_state");
    assert!(state[4].get("listener").is_none(), "listeners are not listed: {state}");
    assert!(state[4].get("talker").is_some());
    talker.send_text(r#"["1","2","room:quiet","new_msg",{"body":"hello"}]"#);

    // The first thing the listener hears after its join reply is the message, not presence.
    let next = listener.recv_text_until(|_| true);
    assert_eq!(next[3], "new_msg", "got {next}");
    assert_eq!(next[4]["body"], "hello");

    // Leaving as a listener sends no presence leave either: the talker's next frame is its own ack
    // or message, never a diff naming the listener.
    listener.send_text(r#"["1","3","room:quiet","phx_leave",{}]"#);
    listener.recv_text_until(|v| v[3] == "phx_close");
    talker.send_text(r#"["1","4","room:quiet","new_msg",{"body":"again"}]"#);
    loop {
        let v = talker.recv_text_until(|_| true);
        assert!(!v.to_string().contains("listener"), "presence traffic about a listener: {v}");
        if v[1] == "4" {
            break;
        }
    }
}

#[test]
fn join_params_are_validated() {
    let srv = TestServer::start(|_| {});
    let mut ws = Ws::phoenix(srv.addr, "x");
    ws.send_text(r#"["1","1","room:v","phx_join",{"presence":"no"}]"#);
    let v = ws.recv_text_until(|v| v[1] == "1");
    assert_eq!(v[4]["status"], "error");
    assert!(v[4]["response"]["reason"].as_str().unwrap().contains("presence"));
}
