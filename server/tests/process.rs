//! Tests of the `rusher` binary as a process: durability across `kill -9`, the graceful drain on
//! SIGTERM, and running out of file descriptors.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{http_exchange, spawn_listening, status_of, Proc, Ws};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rusher-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Start the binary (optionally under a shell prefix such as a lower file limit) and wait for its
/// "listening" line.
fn spawn(db: &Path, listen: &str, shell_prefix: Option<&str>) -> Proc {
    let bin = env!("CARGO_BIN_EXE_rusher");
    let args = format!("--listen {listen} --workers 2 --store sqlite://{} --log warn", db.display());
    let cmd = match shell_prefix {
        Some(prefix) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!("{prefix} && exec {bin} {args}"));
            c
        }
        None => {
            let mut c = Command::new(bin);
            c.args(args.split(' '));
            c
        }
    };
    spawn_listening(cmd)
}

fn join(ws: &mut Ws, topic: &str, params: &str) -> serde_json::Value {
    ws.send_text(&format!(r#"["1","1","{topic}","phx_join",{params}]"#));
    ws.recv_text_until(|v| v[1] == "1" && v[3] == "phx_reply")
}

#[test]
fn every_acked_message_survives_kill_9() {
    let dir = temp_dir("kill9");
    let db = dir.join("chat.db");
    let server = spawn(&db, "127.0.0.1:0", None);
    let mut ws = Ws::phoenix(server.addr, "alice");
    assert_eq!(join(&mut ws, "room:durable", "{}")[4]["status"], "ok");
    // Pipeline 400 messages and kill the server after 150 acks, while the rest are in flight.
    for i in 0..400 {
        ws.send_text(&format!(r#"["1","m{i}","room:durable","new_msg",{{"body":"message {i}"}}]"#));
    }
    let mut acked = Vec::new();
    while acked.len() < 150 {
        let v = ws.recv_text_until(|v| v[3] == "phx_reply");
        assert_eq!(v[4]["status"], "ok", "{v}");
        let i: u64 = v[1].as_str().unwrap()[1..].parse().unwrap();
        acked.push((v[4]["response"]["seq"].as_u64().unwrap(), i));
    }
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    drop(ws);

    let server = spawn(&db, "127.0.0.1:0", None);
    let mut ws = Ws::phoenix(server.addr, "auditor");
    join(&mut ws, "room:durable", "{}");
    let mut stored = std::collections::HashMap::new();
    let mut before: Option<u64> = None;
    loop {
        let params = match before {
            Some(b) => format!(r#"{{"before_seq":{b},"limit":200}}"#),
            None => r#"{"limit":200}"#.to_string(),
        };
        ws.send_text(&format!(r#"["1","h","room:durable","history",{params}]"#));
        let page = ws.recv_text_until(|v| v[1] == "h");
        let msgs = page[4]["response"]["messages"].as_array().unwrap().clone();
        for m in &msgs {
            stored.insert(m["seq"].as_u64().unwrap(), m["body"].as_str().unwrap().to_string());
        }
        if !page[4]["response"]["more"].as_bool().unwrap() || msgs.is_empty() {
            break;
        }
        before = msgs[0]["seq"].as_u64();
    }
    for (seq, i) in &acked {
        assert_eq!(stored.get(seq), Some(&format!("message {i}")), "acked seq {seq} lost");
    }
    // Seqs stay contiguous from 1: nothing half-written.
    let max = *stored.keys().max().unwrap();
    assert_eq!(stored.len() as u64, max, "gap in stored seqs");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits_cleanly() {
    let dir = temp_dir("sigterm");
    let mut server = spawn(&dir.join("t.db"), "127.0.0.1:0", None);
    let mut ws = Ws::phoenix(server.addr, "bob");
    join(&mut ws, "room:t", "{}");
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(ws.expect_close(), 1001);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_while_a_client_floods_still_closes_with_1001_and_a_handshake() {
    let dir = temp_dir("sigterm-flood");
    let mut server = spawn(&dir.join("t.db"), "127.0.0.1:0", None);
    let mut ws = Ws::phoenix(server.addr, "carol");
    join(&mut ws, "room:flood", "{}");
    // `typing` gets no reply and the room has no one else: the flood makes no output to back up.
    let frame = common::encode_frame(0x81, br#"["1",null,"room:flood","typing",{"typing":true}]"#, true);
    let batch: Vec<u8> = frame.iter().copied().cycle().take(frame.len() * 200).collect();
    let mut writer = ws.stream.try_clone().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let flood = std::thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0usize;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed)
            && started.elapsed() < Duration::from_secs(10)
            && writer.write_all(&batch).is_ok()
        {
            sent += 1;
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) }, 0);
    // The 1001 arrives whole, not lost to a reset of a connection closed with the flood unread.
    let close = loop {
        let f = ws.recv().expect("the connection ended without the 1001 close frame");
        if f.opcode == 8 {
            break f;
        }
    };
    assert_eq!(close.close_code(), 1001);
    assert_eq!(&close.payload[2..], b"server shutting down");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(flood.join().unwrap() > 0, "the flood ran");
    // The server waits for our close, reading what we still send: no end of stream, no reset yet.
    ws.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut byte = [0u8; 1];
    match ws.stream.read(&mut byte) {
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
        other => panic!("the connection should wait for our close, got {other:?}"),
    }
    ws.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ws.send_raw(0x88, &1001u16.to_be_bytes(), true);
    assert!(ws.recv().is_none(), "the server ends the connection after the close handshake");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn running_out_of_file_descriptors_pauses_accepting_instead_of_exiting() {
    let dir = temp_dir("emfile");
    let server = spawn(&dir.join("f.db"), "127.0.0.1:0", Some("ulimit -n 48"));
    let mut held = Vec::new();
    for _ in 0..80 {
        if let Ok(s) = TcpStream::connect(server.addr) {
            held.push(s);
        }
    }
    // Give the workers a moment to hit EMFILE on the backlog.
    std::thread::sleep(Duration::from_millis(300));
    drop(held);
    let started = Instant::now();
    loop {
        let r = std::panic::catch_unwind(|| {
            let mut ws = Ws::phoenix(server.addr, "late");
            join(&mut ws, "room:f", "{}")
        });
        if let Ok(reply) = r {
            assert_eq!(reply[4]["status"], "ok");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "server never recovered");
        std::thread::sleep(Duration::from_millis(200));
    }
    let metrics = http_exchange(server.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&metrics), 200);
    let pauses = metrics.lines().find(|l| l.starts_with("rusher_accept_pauses_total ")).unwrap();
    assert_ne!(pauses, "rusher_accept_pauses_total 0", "EMFILE was never hit");
    let _ = std::fs::remove_dir_all(dir);
}
