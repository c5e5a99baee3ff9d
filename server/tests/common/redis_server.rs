//! A private `redis-server` for one test, for what the shared one (`scripts/with-redis`) must not see:
//! stopping and restarting it, or other settings. It runs from `RUSHER_TEST_REDIS_SERVER` (set by
//! `scripts/with-redis`; else `redis-server` on the PATH) on a free loopback port, with its files in a
//! fresh temp directory; dropping it kills the process (by its PID) and removes the directory.
//!
//! Also the helpers both need to clean up a key prefix on a shared server. Shared by the storage unit
//! tests and the binary's integration tests, so it uses only std and the `redis` crate.
#![allow(dead_code)] // Each user needs a different subset.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a started server may take to answer PING.
const READY_WAIT: Duration = Duration::from_secs(10);

/// A running (or stopped, between [`RedisServer::kill`] and [`RedisServer::start_again`]) redis-server.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    /// Settings besides port, address and directory, as `redis-server` takes them.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server with the AOF on (`appendfsync always`), no RDB snapshots, and `extra` settings
    /// (e.g. `["--requirepass", "pw"]`), and waits until it answers.
    pub fn start(extra: &[&str]) -> RedisServer {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rusher-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the redis-server directory");
        let mut server =
            RedisServer { child: None, port: 0, dir, extra: extra.iter().map(|s| s.to_string()).collect() };
        // A port found free can be taken by someone else before redis-server binds it: try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start; see {}", server.dir.join("redis.log").display());
    }

    /// `redis://127.0.0.1:PORT`, with `auth` (`:PASSWORD` or `USER:PASSWORD`) when given.
    pub fn url(&self, auth: Option<&str>) -> String {
        match auth {
            Some(auth) => format!("redis://{auth}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Kills the server with SIGKILL, as a crash would: what it acked is only what its AOF holds.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (it reloads its AOF).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        assert!(self.spawn(), "redis-server did not restart; see {}", self.dir.join("redis.log").display());
    }

    /// Starts the process and waits for PONG; false if it exited or never answered (then it is killed).
    fn spawn(&mut self) -> bool {
        let binary = std::env::var("RUSHER_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--logfile", "redis.log"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {binary} (install redis-server): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + READY_WAIT;
        while Instant::now() < deadline {
            if self.child.as_mut().expect("spawned").try_wait().ok().flatten().is_some() {
                self.child = None;
                return false;
            }
            if self.answers() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    /// Whether the server answers a PING (a server that demands a password answers NOAUTH: also up).
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 64];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut reply)
                .is_ok_and(|n| reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// `prefix` as a SCAN pattern that matches it literally.
pub fn glob_escape(prefix: &str) -> String {
    prefix.chars().flat_map(|c| if "*?[]\\".contains(c) { vec!['\\', c] } else { vec![c] }).collect()
}

/// The keys that start with `prefix`.
pub fn keys_under(conn: &mut redis::Connection, prefix: &str) -> Vec<Vec<u8>> {
    let pattern = format!("{}*", glob_escape(prefix));
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    // SCAN ends when the cursor comes back to 0; the bound only guards against a server that never does.
    for _ in 0..1_000_000 {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn)
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            return keys;
        }
    }
    panic!("SCAN did not finish");
}

/// Deletes every key that starts with `prefix` on the server at `url`.
pub fn delete_keys(url: &str, prefix: &str) {
    let mut conn = redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("connect to delete test keys");
    for chunk in keys_under(&mut conn, prefix).chunks(1000) {
        redis::cmd("DEL").arg(chunk).query::<redis::Value>(&mut conn).unwrap();
    }
}
