//! Tests against real Redis servers. The conformance suite and the tests that only read and write run on
//! the shared server named by `RUSHER_TEST_REDIS_URL` (`scripts/with-redis` starts a throwaway one;
//! `scripts/test` runs these), each under a key prefix of its own that is deleted at the end, so they run
//! in parallel without seeing each other. Tests that change settings or stop the server start a private
//! one (`tests/common/redis_server.rs`).

use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::store::conformance::{conformance_suite, entry, msg, seqs, upd, Inspect, Scratch, Store};
use crate::store::reconnect::RECONNECT_BACKOFF;

#[path = "../../../tests/common/redis_server.rs"]
mod redis_server;

use redis_server::{delete_keys, keys_under, RedisServer};

const NEEDS_REDIS: &str = "needs Redis: scripts/test starts one";

fn base_url() -> String {
    std::env::var("RUSHER_TEST_REDIS_URL")
        .unwrap_or_else(|_| panic!("RUSHER_TEST_REDIS_URL is not set ({NEEDS_REDIS})"))
}

/// A key prefix no other test (or test process) uses.
fn unique_prefix(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("t:{what}:{}:{}:{nanos}:", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn with_prefix(url: &str, prefix: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}prefix={prefix}")
}

fn connect(url: &str) -> Connection {
    redis::Client::open(url).unwrap().get_connection_with_timeout(CONNECT_TIMEOUT).unwrap()
}

/// A store on the shared server under a fresh prefix, whose keys are deleted when it is dropped.
fn scratch(what: &str) -> Scratch<RedisStore> {
    let (base, prefix) = (base_url(), unique_prefix(what));
    let store = RedisStore::open(&with_prefix(&base, &prefix), AppendFsync::Always).expect("open the store");
    Scratch::new(store, move || delete_keys(&base, &prefix))
}

impl RedisStore {
    /// Runs one command on the store's connection.
    fn raw<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> T {
        self.with(|conn, _, _| cmd.query(conn).map_err(redis_err)).unwrap()
    }
}

impl Inspect for RedisStore {
    fn stored_updates(&mut self, doc: Option<&str>) -> u64 {
        let keys = match doc {
            Some(doc) => vec![self.keys.collab_updates(doc).into_bytes()],
            None => {
                let prefix = self.keys.collab_updates("");
                self.with(|conn, _, _| Ok(keys_under(conn, &prefix))).unwrap()
            }
        };
        keys.iter().map(|key| self.raw::<u64>(redis::cmd("ZCARD").arg(key))).sum()
    }
    fn logged_events(&mut self, tenant: &str) -> u64 {
        let key = self.keys.geo_events(tenant);
        self.raw(redis::cmd("XLEN").arg(key))
    }
}

conformance_suite!(
    || -> Store { Box::new(scratch("c")) },
    #[ignore = "needs Redis: scripts/test starts one"]
);

fn config_get(conn: &mut Connection, name: &str) -> String {
    let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(conn).unwrap();
    pair[1].clone()
}

#[test]
fn urls_name_a_prefix_or_get_the_default() {
    let t = parse_url("redis://127.0.0.1:6379").unwrap();
    assert_eq!(t, Target { url: "redis://127.0.0.1:6379".into(), prefix: "rusher:".into() });
    let t = parse_url("redis://:pw@h/2?prefix=app1:&protocol=resp2").unwrap();
    assert_eq!(t, Target { url: "redis://:pw@h/2?protocol=resp2".into(), prefix: "app1:".into() });
    let t = parse_url("redis://h?prefix={x}").unwrap();
    assert_eq!(t, Target { url: "redis://h".into(), prefix: "{x}".into() });
    for bad in [
        "redis://:s3cret@h?prefix=",
        "redis://:s3cret@h?prefix=a&prefix=b",
        "redis://:s3cret@h?prefix=a%20b c",
    ] {
        let err = parse_url(bad).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("prefix"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}

#[test]
fn messages_encode_and_decode_exactly() {
    let mut m = msg("room:ü", 7, "body with \0 and 🦀");
    m.user = "ユーザー".into();
    let room: Arc<str> = "room:ü".into();
    assert_eq!(decode_message(&encode_message(&m).unwrap(), &room).unwrap(), m);
    // The seq leads, big-endian, so byte order is seq order.
    let (a, b) = (encode_message(&msg("r", 255, "z")).unwrap(), encode_message(&msg("r", 256, "a")).unwrap());
    assert!(a < b);
    for bad in [&b"short"[..], &[0; 27][..]] {
        assert!(matches!(decode_message(bad, &room), Err(StoreError::Corrupt(_))));
    }
    let mut long_user = encode_message(&m).unwrap();
    long_user[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode_message(&long_user, &room), Err(StoreError::Corrupt(_))));
}

#[test]
fn unreachable_server_is_unavailable() {
    // Nothing listens on port 1 of loopback: the connection is refused at once.
    let err = RedisStore::open("redis://:s3cret@127.0.0.1:1/3", AppendFsync::Always).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1/3"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

#[test]
fn malformed_url_is_refused_without_echoing_the_password() {
    let err = RedisStore::open("redis://:s3cret@h:notaport", AppendFsync::Always).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[test]
fn store_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<RedisStore>();
}

#[test]
#[ignore = "needs Redis: scripts/test starts one"]
fn redis_name_and_prefixes_keep_stores_apart() {
    let mut a = scratch("a");
    let mut b = scratch("b");
    assert_eq!(a.store.name(), "redis");
    a.append(&[msg("room:x", 1, "in a")]).unwrap();
    b.append(&[msg("room:x", 1, "in b"), msg("room:x", 2, "in b too")]).unwrap();
    a.log_append(&[upd("d", 1, b"aaaa")]).unwrap();
    assert_eq!(a.room_head("room:x", 10).unwrap().1.messages, [msg("room:x", 1, "in a")]);
    assert_eq!(seqs(&b.history("room:x", None, None, 10).unwrap()), [1, 2]);
    assert_eq!(a.log_bytes().unwrap(), 4);
    assert_eq!(b.log_bytes().unwrap(), 0);
    assert_eq!(b.log_load("d").unwrap(), LogState::default());

    let a_prefix = a.store.keys.prefix.clone();
    let mut conn = connect(&base_url());
    assert!(!keys_under(&mut conn, &a_prefix).is_empty());
    drop(a);
    assert!(keys_under(&mut conn, &a_prefix).is_empty(), "a's keys are gone");
    assert_eq!(b.room_head("room:x", 10).unwrap().0, 2, "b's are not");
}

#[test]
#[ignore = "needs Redis: scripts/test starts one"]
fn redis_foreign_values_read_as_corrupt_and_wrong_types_are_errors() {
    let mut s = scratch("corrupt");
    let chat = s.store.keys.chat("r");
    s.store.raw::<i64>(redis::cmd("ZADD").arg(&chat).arg(0).arg("short"));
    let err = s.history("r", None, None, 10).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    let snapshot = s.store.keys.collab_snapshot("d");
    s.store.raw::<Value>(redis::cmd("SET").arg(&snapshot).arg("abc"));
    let err = s.log_load("d").unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    // A key of another type is refused by the server: an error of this call, not of the connection.
    s.store.raw::<Value>(redis::cmd("SET").arg(&chat).arg("a string"));
    let err = s.append(&[msg("r", 1, "x")]).unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    assert!(s.store.conn.is_some());
    s.append(&[msg("other", 1, "fine")]).unwrap();
}

#[test]
#[ignore = "needs Redis: scripts/test starts one"]
fn redis_aof_is_switched_on_with_the_configured_fsync() {
    let server = RedisServer::start(&["--appendonly", "no", "--appendfsync", "no"]);
    let mut conn = connect(&server.url(None));
    assert_eq!(config_get(&mut conn, "appendonly"), "no");
    for fsync in [AppendFsync::Always, AppendFsync::EverySec, AppendFsync::No, AppendFsync::Always] {
        let mut store = RedisStore::open(&server.url(None), fsync).unwrap();
        assert_eq!(config_get(&mut conn, "appendonly"), "yes");
        assert_eq!(config_get(&mut conn, "appendfsync"), fsync.as_str());
        let info = aof::info_persistence(&mut conn).unwrap();
        assert_eq!((info.get("aof_enabled"), info.get("aof_rewrite_in_progress")), (Some("1"), Some("0")));
        let seq = store.room_head("r", 0).unwrap().0 + 1;
        store.append(&[msg("r", seq, "stored")]).unwrap();
    }
}

#[test]
#[ignore = "needs Redis: scripts/test starts one"]
fn redis_refusing_config_set_must_already_be_as_configured() {
    // A user who may read the configuration but not change it.
    let acl = ["--user", "rusher", "on", ">s3cret-pw", "~*", "&*", "+@all", "-config|set"];
    let server = RedisServer::start(&[&["--appendfsync", "everysec"][..], &acl].concat());
    let url = server.url(Some("rusher:s3cret-pw"));
    let err = RedisStore::open(&url, AppendFsync::Always).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(text.contains("appendfsync is \"everysec\"") && text.contains("appendfsync always"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    let mut store = RedisStore::open(&url, AppendFsync::EverySec).unwrap();
    store.append(&[msg("r", 1, "stored")]).unwrap();

    // CONFIG renamed away altogether: INFO still tells that the AOF is off.
    let server = RedisServer::start(&["--appendonly", "no", "--rename-command", "CONFIG", ""]);
    let err = RedisStore::open(&server.url(None), AppendFsync::Always).unwrap_err();
    assert!(err.to_string().contains("the AOF is off"), "{err}");
    // And with it on, the fsync policy cannot be checked: refused rather than guessed.
    let server = RedisServer::start(&["--rename-command", "CONFIG", ""]);
    let err = RedisStore::open(&server.url(None), AppendFsync::Always).unwrap_err();
    assert!(err.to_string().contains("cannot be checked"), "{err}");
}

#[test]
#[ignore = "needs Redis: scripts/test starts one"]
fn redis_password_urls_connect_and_are_never_echoed() {
    let server = RedisServer::start(&["--requirepass", "hunter2-pw"]);
    let mut store = RedisStore::open(&server.url(Some(":hunter2-pw")), AppendFsync::Always).unwrap();
    store.append(&[msg("r", 1, "authenticated")]).unwrap();
    assert!(!format!("{store:?}").contains("hunter2"));
    for auth in [None, Some(":wrong-hunter2")] {
        let err = RedisStore::open(&server.url(auth), AppendFsync::Always).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

#[test]
#[ignore = "needs Redis: scripts/test starts one"]
fn redis_reconnects_after_the_server_restarts_and_acked_writes_survive() {
    let mut server = RedisServer::start(&[]);
    let mut store = RedisStore::open(&server.url(None), AppendFsync::Always).unwrap();
    store.append(&[msg("r", 1, "before")]).unwrap();
    store.log_append(&[upd("d", 1, b"u1"), upd("d", 2, b"u2")]).unwrap();
    store.log_compact("d", 1, b"state@1").unwrap();
    let fence = GeoFenceChange { tenant: "t".into(), id: "f".into(), json: Some("{}".into()), fresh: true };
    store.geo_fences(&[fence]).unwrap();

    server.kill();
    for _ in 0..3 {
        let err = store.append(&[msg("r", 2, "while away")]).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let err = store.room_head("r", 10).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }

    server.start_again();
    // Within the backoff after a failed attempt, calls fail without trying; the first call after it
    // connects, and loads the scripts the restarted server no longer has.
    std::thread::sleep(RECONNECT_BACKOFF);
    store.append(&[msg("r", 2, "back")]).unwrap();
    assert_eq!(
        seqs(&store.history("r", None, None, 10).unwrap()),
        [1, 2],
        "the acked message survived SIGKILL"
    );
    let state = store.log_load("d").unwrap();
    assert_eq!(state, LogState { snapshot: Some(entry(1, b"state@1")), entries: vec![entry(2, b"u2")] });
    assert_eq!(store.log_bytes().unwrap(), 9);
    assert_eq!(store.geo_load("t").unwrap().fences, vec![("f".into(), "{}".into())]);

    // A restart during a quiet spell fails no call: the idle connection is checked first.
    std::thread::sleep(IDLE_CHECK_AFTER);
    server.kill();
    server.start_again();
    store.append(&[msg("r", 3, "after a quiet restart")]).unwrap();
    assert_eq!(store.room_head("r", 0).unwrap().0, 3);
}
