//! Open development mode's sign-in: `POST /dev/token` mints a token that sockets accept; with a secret
//! the endpoint does not exist.

mod common;

use std::io::{Read, Write};

use common::{connect, http_exchange, status_of, TestServer, Ws};
use rusher_server::auth::TokenKey;

fn post(srv: &TestServer, path: &str, body: &str) -> String {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_exchange(srv.addr, request.as_bytes())
}

fn body_of(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Sign in as `name` and return the token, checking the reply's shape.
fn sign_in(srv: &TestServer, name: &str) -> String {
    let r = post(srv, "/dev/token", &serde_json::json!({ "name": name }).to_string());
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(r.contains("Content-Type: application/json") && r.contains("Cache-Control: no-store"), "{r}");
    let reply: serde_json::Value = serde_json::from_str(body_of(&r)).unwrap();
    assert_eq!(reply["user"], name);
    reply["token"].as_str().expect("a token").to_owned()
}

/// The user the server gives a socket opened with `query`, as presence reports it.
fn user_of_socket(srv: &TestServer, query: &str) -> String {
    let mut ws = Ws::open(srv.addr, &format!("/socket/websocket?vsn=2.0.0&{query}"));
    ws.send_text(r#"["1","1","room:dev-token","phx_join",{}]"#);
    let state = ws.recv_text_until(|m| m[3] == "presence_state");
    let users: Vec<&String> = state[4].as_object().unwrap().keys().collect();
    assert_eq!(users.len(), 1, "{state}");
    users[0].clone()
}

/// The status of an upgrade to `path`, read from the response head (a 101 keeps the connection open).
fn upgrade_status(srv: &TestServer, path: &str) -> u16 {
    let mut s = connect(srv.addr);
    s.write_all(common::upgrade_request(path).as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    status_of(&String::from_utf8_lossy(&head))
}

#[test]
fn open_mode_mints_tokens_that_sockets_accept() {
    let srv = TestServer::start(|_| {});
    let token = sign_in(&srv, "Zoë 🦀");
    let encoded: String = token.bytes().map(|b| format!("%{b:02X}")).collect();
    assert_eq!(user_of_socket(&srv, &format!("token={encoded}")), "Zoë 🦀");
    // The token beats a user parameter, which keeps working on its own.
    assert_eq!(user_of_socket(&srv, &format!("token={token}&user=mallory")), "Zoë 🦀");
    assert_eq!(user_of_socket(&srv, "user=plain"), "plain");
    // The collaborative endpoint takes the same token.
    assert_eq!(upgrade_status(&srv, &format!("/collab/notes?token={token}")), 101);

    // A token signed with any other key, or tampered with, is refused rather than ignored.
    let foreign = rusher_server::auth::mint(
        &TokenKey::new(b"some other key entirely"),
        "alice",
        std::time::Duration::from_secs(60),
        std::time::SystemTime::now(),
    )
    .unwrap();
    assert_eq!(upgrade_status(&srv, &format!("/socket/websocket?vsn=2.0.0&token={foreign}")), 403);
    assert_eq!(upgrade_status(&srv, &format!("/collab/notes?token={foreign}")), 403);
    assert_eq!(upgrade_status(&srv, "/socket/websocket?vsn=2.0.0&token=garbage"), 403);
}

#[test]
fn each_start_makes_its_own_key() {
    let first = TestServer::start(|_| {});
    let token = sign_in(&first, "alice");
    let second = TestServer::start(|_| {});
    assert_eq!(upgrade_status(&first, &format!("/socket/websocket?vsn=2.0.0&token={token}")), 101);
    assert_eq!(upgrade_status(&second, &format!("/socket/websocket?vsn=2.0.0&token={token}")), 403);
}

#[test]
fn bad_sign_ins_get_a_clear_error() {
    let srv = TestServer::start(|_| {});
    let long = "x".repeat(65);
    for (body, why) in [
        (serde_json::json!({ "name": "" }).to_string(), "name:"),
        (serde_json::json!({ "name": long }).to_string(), "name:"),
        (serde_json::json!({ "name": "new\nline" }).to_string(), "name:"),
        (serde_json::json!({ "name": "rlo\u{202e}gnp.exe" }).to_string(), "name:"),
        (serde_json::json!({ "name": 7 }).to_string(), "JSON"),
        (serde_json::json!({ "user": "alice" }).to_string(), "JSON"),
        ("{\"name\": \"unterminated".to_owned(), "JSON"),
        (String::new(), "JSON"),
    ] {
        let r = post(&srv, "/dev/token", &body);
        assert_eq!(status_of(&r), 400, "{body:?}: {r}");
        assert!(body_of(&r).contains(why), "{body:?}: {r}");
    }
    let get = http_exchange(srv.addr, b"GET /dev/token HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&get), 405, "{get}");
    // Open-mode user names follow the same rule as token names.
    assert_eq!(upgrade_status(&srv, "/socket/websocket?vsn=2.0.0&user=rlo%E2%80%AEgnp.exe"), 400);
    // A body past the request bound is refused before it is read.
    let huge = format!("POST /dev/token HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 1 << 20);
    let r = http_exchange(srv.addr, huge.as_bytes());
    assert_eq!(status_of(&r), 413, "{r}");
    // The server is still up.
    assert!(!sign_in(&srv, "after").is_empty());
}

#[test]
fn with_a_secret_there_is_no_dev_token_endpoint() {
    let srv = TestServer::start(|c| c.token_key = Some(TokenKey::new(b"a secret of at least sixteen bytes")));
    let r = post(&srv, "/dev/token", r#"{"name":"alice"}"#);
    assert_eq!(status_of(&r), 404, "{r}");
    assert!(!r.contains("token\""), "{r}");
    // Nor does a development token open the server: only the secret's tokens do.
    let open = TestServer::start(|_| {});
    let token = sign_in(&open, "alice");
    assert_eq!(upgrade_status(&srv, &format!("/socket/websocket?vsn=2.0.0&token={token}")), 403);
}
