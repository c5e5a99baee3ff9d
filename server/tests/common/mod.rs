//! Shared helpers for integration tests: a server on port 0 and a raw WebSocket client that can also
//! send what well-behaved clients never would.
#![allow(dead_code)] // Each test file uses a different subset of these helpers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rusher_server::config::{Config, ServeArgs};
use rusher_server::server::{self, Running};

/// A server on an ephemeral port with an in-memory database, stopped on drop.
pub struct TestServer {
    pub running: Option<Running>,
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        let args = ServeArgs {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            store: Some("sqlite://:memory:".into()),
            workers: Some(2),
            ..Default::default()
        };
        let mut cfg = args.resolve().expect("valid test config");
        tweak(&mut cfg);
        let running = server::start(cfg).expect("server starts");
        let addr = running.addr;
        TestServer { running: Some(running), addr }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }
}

/// A `rusher` process, killed on drop.
pub struct Proc {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `cmd` (the binary, perhaps under a shell) and wait for its first stdout line, which names the
/// address it listens on.
pub fn spawn_listening(mut cmd: std::process::Command) -> Proc {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn rusher");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("server printed its address");
    let addr = line.trim().rsplit("http://").next().unwrap().parse().expect("address in the first line");
    Proc { child, addr }
}

/// A schema of its own in the test database, dropped at the end.
pub struct Schema {
    pub base: String,
    pub name: String,
}

impl Schema {
    /// `tag` keeps the schemas of tests running at once apart.
    pub fn new(tag: &str) -> Schema {
        let base = std::env::var("RUSHER_TEST_POSTGRES_URL")
            .expect("RUSHER_TEST_POSTGRES_URL is not set (needs PostgreSQL: scripts/test starts one)");
        let name = format!("t_it_{tag}_{}", std::process::id());
        let mut admin = postgres::Client::connect(&base, postgres::NoTls).expect("connect");
        admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")).unwrap();
        Schema { base, name }
    }

    /// The store URL whose sessions work in this schema.
    pub fn store_url(&self) -> String {
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

/// A raw TCP connection with a read timeout as the watchdog.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Send raw bytes and read until the peer closes; returns everything read.
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of an HTTP response text.
pub fn status_of(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A WebSocket upgrade request for `path`.
pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A WebSocket client speaking raw frames.
pub struct Ws {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).expect("server text is UTF-8")
    }
    /// Close code of a close frame.
    pub fn close_code(&self) -> u16 {
        assert_eq!(self.opcode, 8, "expected a close frame, got {self:?}");
        u16::from_be_bytes([self.payload[0], self.payload[1]])
    }
}

impl Ws {
    /// Upgrade on `path` (e.g. `/socket/websocket?vsn=2.0.0`); panics unless the answer is 101.
    pub fn open(addr: SocketAddr, path: &str) -> Ws {
        let mut stream = connect(addr);
        stream.write_all(upgrade_request(path).as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            let n = stream.read(&mut chunk).expect("read upgrade response");
            assert!(n > 0, "closed during upgrade: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        buf.drain(..end);
        Ws { stream, buf }
    }

    /// A Phoenix socket in open mode.
    pub fn phoenix(addr: SocketAddr, user: &str) -> Ws {
        Ws::open(addr, &format!("/socket/websocket?vsn=2.0.0&user={user}"))
    }

    /// Send one masked frame with the given first byte (FIN, RSV and opcode).
    pub fn send_raw(&mut self, first: u8, payload: &[u8], masked: bool) {
        let f = encode_frame(first, payload, masked);
        // The server may already have closed; tests then read the close frame.
        let _ = self.stream.write_all(&f);
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_raw(0x81, text.as_bytes(), true);
    }

    /// Read the next frame; None when the server closed the TCP connection.
    pub fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Read frames until a text frame satisfies `pred`; panics on close.
    pub fn recv_text_until(&mut self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        loop {
            let f = self.recv().expect("connection closed while waiting");
            if f.opcode == 1 {
                let v: serde_json::Value = serde_json::from_str(f.text()).unwrap();
                if pred(&v) {
                    return v;
                }
            }
        }
    }

    /// Read until the server's close frame; returns its code.
    pub fn expect_close(&mut self) -> u16 {
        loop {
            let f = self.recv().expect("TCP closed without a close frame");
            if f.opcode == 8 {
                return f.close_code();
            }
        }
    }
}

/// The bytes of one frame with the given first byte (FIN, RSV and opcode), masked as a client's.
pub fn encode_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n < 65536 => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

fn parse(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames are never masked");
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < at + len {
        return None;
    }
    let payload = buf[at..at + len].to_vec();
    at += len;
    Some((Frame { opcode: buf[0] & 0x0f, payload }, at))
}
