//! The `rusher` binary against PostgreSQL: a chat message acked by one server process is in the history
//! the next process serves. Needs `RUSHER_TEST_POSTGRES_URL` (`scripts/with-postgres` sets it;
//! `scripts/test` runs this).

mod common;

use std::process::Command;

use common::{spawn_listening, Proc, Schema, Ws};

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

/// The bodies of a room's latest ten messages, oldest first.
fn history_bodies(ws: &mut Ws, topic: &str) -> Vec<String> {
    ws.send_text(&format!(r#"["1","h","{topic}","history",{{"limit":10}}]"#));
    let page = ws.recv_text_until(|v| v[1] == "h");
    page[4]["response"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
#[ignore = "needs PostgreSQL: scripts/test starts one"]
fn chat_message_survives_a_restart_on_postgres() {
    let schema = Schema::new("restart");
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
    let bodies = history_bodies(&mut ws, "room:pg");
    assert_eq!(bodies, ["kept in postgres ✓", "second"]);
}

/// A login role of its own that may work in `schema`; the outage test locks it out and lets it back.
struct Role {
    admin: postgres::Client,
    name: String,
}

impl Role {
    fn new(schema: &Schema) -> Role {
        let mut admin = postgres::Client::connect(&schema.base, postgres::NoTls).expect("connect");
        let name = format!("r_it_{}", std::process::id());
        admin
            .batch_execute(&format!(
                "DROP ROLE IF EXISTS {name}; CREATE ROLE {name} LOGIN;
                 GRANT USAGE, CREATE ON SCHEMA {schema} TO {name};",
                schema = schema.name
            ))
            .unwrap();
        Role { admin, name }
    }

    /// The store URL of `schema` as this role.
    fn store_url(&self, schema: &Schema) -> String {
        let url = schema.store_url();
        let (scheme, rest) = url.split_once("://").unwrap();
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{}@{host}", self.name)
    }

    /// Refuse the role's logins and end its sessions: to the server, the database is gone.
    fn lock_out(&mut self) {
        self.admin
            .batch_execute(&format!(
                "ALTER ROLE {n} NOLOGIN;
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{n}';",
                n = self.name
            ))
            .unwrap();
    }

    fn let_in(&mut self) {
        self.admin.batch_execute(&format!("ALTER ROLE {} LOGIN", self.name)).unwrap();
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.admin.batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{n}';
             DROP OWNED BY {n} CASCADE; DROP ROLE IF EXISTS {n};",
            n = self.name
        ));
    }
}

#[test]
#[ignore = "needs PostgreSQL: scripts/test starts one"]
fn while_postgres_is_gone_pushes_fail_the_socket_stays_and_service_resumes() {
    let schema = Schema::new("outage");
    let mut role = Role::new(&schema);
    let server = spawn(&role.store_url(&schema));
    let mut ws = Ws::phoenix(server.addr, "alice");
    assert_eq!(join(&mut ws, "room:outage")[4]["status"], "ok");
    ws.send_text(r#"["1","m1","room:outage","new_msg",{"body":"before"}]"#);
    assert_eq!(ws.recv_text_until(|v| v[1] == "m1")[4]["status"], "ok");

    role.lock_out();
    ws.send_text(r#"["1","m2","room:outage","new_msg",{"body":"lost"}]"#);
    let refused = ws.recv_text_until(|v| v[1] == "m2");
    assert_eq!(refused[4]["status"], "error", "{refused}");
    assert_eq!(refused[4]["response"]["reason"], "storage failed", "{refused}");
    // The connection is still served: a heartbeat is answered.
    ws.send_text(r#"[null,"hb","phoenix","heartbeat",{}]"#);
    assert_eq!(ws.recv_text_until(|v| v[1] == "hb")[4]["status"], "ok");

    role.let_in();
    // Reconnects are spaced a quarter of a second apart: retry for a few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut n = 0;
    let acked = loop {
        n += 1;
        ws.send_text(&format!(r#"["1","r{n}","room:outage","new_msg",{{"body":"after"}}]"#));
        let reply = ws.recv_text_until(|v| v[1] == format!("r{n}").as_str());
        if reply[4]["status"] == "ok" {
            break reply;
        }
        assert!(std::time::Instant::now() < deadline, "still failing after the database returned: {reply}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert!(acked[4]["response"]["seq"].as_u64().unwrap() > 1);
    let bodies = history_bodies(&mut ws, "room:outage");
    assert_eq!(bodies, ["before", "after"], "the refused message was not stored, the later one was");
}
