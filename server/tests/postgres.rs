//! The `rusher` binary against PostgreSQL: a chat message acked by one server process is in the history
//! the next process serves. Needs `RUSHER_TEST_POSTGRES_URL` (`scripts/with-postgres` sets it;
//! `scripts/test` runs this).

mod common;

use std::process::Command;

use common::{spawn_listening, Proc, Ws};

/// Start the binary on `store` and wait for its "listening" line.
fn spawn(store: &str) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rusher"));
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "2", "--log", "warn", "--store", store])
        .args(["--postgres-synchronous-commit", "on"]);
    spawn_listening(cmd)
}

fn join(ws: &mut Ws, topic: &str) -> serde_json::Value {
    ws.send_text(&format!(r#"["1","1","{topic}","phx_join",{{}}]"#));
    ws.recv_text_until(|v| v[1] == "1" && v[3] == "phx_reply")
}

/// A schema of its own in the test database, dropped at the end.
struct Schema {
    base: String,
    name: String,
}

impl Schema {
    fn new() -> Schema {
        let base = std::env::var("RUSHER_TEST_POSTGRES_URL")
            .expect("RUSHER_TEST_POSTGRES_URL is not set (needs PostgreSQL: scripts/test starts one)");
        let name = format!("t_it_{}", std::process::id());
        let mut admin = postgres::Client::connect(&base, postgres::NoTls).expect("connect");
        admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")).unwrap();
        Schema { base, name }
    }

    /// The store URL whose sessions work in this schema.
    fn store_url(&self) -> String {
        format!("{}?options=-csearch_path%3D{}", self.base, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&self.base, postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

#[test]
#[ignore = "needs PostgreSQL: scripts/test starts one"]
fn chat_message_survives_a_restart_on_postgres() {
    let schema = Schema::new();
    let url = schema.store_url();

    let server = spawn(&url);
    let mut ws = Ws::phoenix(server.addr, "alice");
    let reply = join(&mut ws, "room:pg");
    assert_eq!(reply[4]["status"], "ok", "{reply}");
    assert_eq!(reply[4]["response"]["messages"], serde_json::json!([]));
    ws.send_text(r#"["1","m1","room:pg","new_msg",{"body":"kept in postgres ✓"}]"#);
    let ack = ws.recv_text_until(|v| v[1] == "m1");
    assert_eq!(ack[4]["status"], "ok", "{ack}");
    let seq = ack[4]["response"]["seq"].as_u64().unwrap();
    drop(ws);
    drop(server); // SIGKILL: the ack promised durability, not a clean shutdown

    let server = spawn(&url);
    let mut ws = Ws::phoenix(server.addr, "bob");
    let reply = join(&mut ws, "room:pg");
    let messages = reply[4]["response"]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{reply}");
    assert_eq!(messages[0]["seq"].as_u64(), Some(seq));
    assert_eq!(messages[0]["body"], "kept in postgres ✓");
    assert_eq!(messages[0]["user"], "alice");

    // The room's sequence continues where the first process left it.
    ws.send_text(r#"["1","m2","room:pg","new_msg",{"body":"second"}]"#);
    let ack = ws.recv_text_until(|v| v[1] == "m2");
    assert_eq!(ack[4]["response"]["seq"].as_u64(), Some(seq + 1), "{ack}");
    ws.send_text(r#"["1","h","room:pg","history",{"limit":10}]"#);
    let page = ws.recv_text_until(|v| v[1] == "h");
    let bodies: Vec<&str> = page[4]["response"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["kept in postgres ✓", "second"]);
}
