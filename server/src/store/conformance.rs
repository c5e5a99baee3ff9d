//! One behaviour suite for every storage backend.
//!
//! Each test is a function taking a fresh, empty backend; [`conformance_suite!`] expands into one `#[test]`
//! per behaviour, given a constructor. A backend module invokes it in its own tests, so every backend is held
//! to the same assertions. Tests of a backend's internals (schema versions, files, connections) stay with
//! the backend.

use std::sync::Arc;

use super::{
    Backend, ChatMessage, GeoEvent, GeoFenceChange, GeoInside, GeoLog, GeoLogKind, GeoPosition, GeoState,
    LogEntry, LogState, Page, StoreError,
};

/// A backend under test, with a way to look at what it physically stores.
pub trait Inspect: Backend {
    /// Collab updates physically stored for `doc`, or for every document when `None` (updates a
    /// snapshot covers must be gone, not just hidden by loads).
    fn stored_updates(&mut self, doc: Option<&str>) -> u64;
    /// Geofence events logged for `tenant`.
    fn logged_events(&mut self, tenant: &str) -> u64;
}

/// What every conformance test gets: a fresh, empty backend.
pub type Store = Box<dyn Inspect>;

/// A backend that runs `cleanup` when dropped, so a test's private namespace (a key prefix) is removed
/// at the end, even after a failed assertion.
pub(crate) struct Scratch<B> {
    pub store: B,
    cleanup: Option<Box<dyn FnOnce() + Send>>,
}

impl<B> Scratch<B> {
    pub fn new(store: B, cleanup: impl FnOnce() + Send + 'static) -> Scratch<B> {
        Scratch { store, cleanup: Some(Box::new(cleanup)) }
    }
}

impl<B> Drop for Scratch<B> {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
    }
}

impl<B: Inspect> Inspect for Scratch<B> {
    fn stored_updates(&mut self, doc: Option<&str>) -> u64 {
        self.store.stored_updates(doc)
    }
    fn logged_events(&mut self, tenant: &str) -> u64 {
        self.store.logged_events(tenant)
    }
}

impl<B: Backend> Backend for Scratch<B> {
    fn name(&self) -> &'static str {
        self.store.name()
    }
    fn append(&mut self, batch: &[ChatMessage]) -> Result<(), StoreError> {
        self.store.append(batch)
    }
    fn room_head(&mut self, room: &str, recent: usize) -> Result<(u64, Page), StoreError> {
        self.store.room_head(room, recent)
    }
    fn history(
        &mut self,
        room: &str,
        before_seq: Option<u64>,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        self.store.history(room, before_seq, after_seq, limit)
    }
    fn log_append(&mut self, batch: &[LogEntry]) -> Result<(), StoreError> {
        self.store.log_append(batch)
    }
    fn log_load(&mut self, doc: &str) -> Result<LogState, StoreError> {
        self.store.log_load(doc)
    }
    fn log_compact(&mut self, doc: &str, upto_seq: u64, snapshot: &[u8]) -> Result<(), StoreError> {
        self.store.log_compact(doc, upto_seq, snapshot)
    }
    fn log_bytes(&mut self) -> Result<u64, StoreError> {
        self.store.log_bytes()
    }
    fn geo_load(&mut self, tenant: &str) -> Result<GeoState, StoreError> {
        self.store.geo_load(tenant)
    }
    fn geo_fences(&mut self, batch: &[GeoFenceChange]) -> Result<(), StoreError> {
        self.store.geo_fences(batch)
    }
    fn geo_log(&mut self, batch: &[GeoLog]) -> Result<(), StoreError> {
        self.store.geo_log(batch)
    }
    fn geo_positions(&mut self, tenant: &str, rows: &[GeoPosition]) -> Result<(), StoreError> {
        self.store.geo_positions(tenant, rows)
    }
}

/// Expands into one `#[test]` per behaviour of the suite. `$new` is an expression evaluating to a
/// constructor (`Fn() -> Store`) of a fresh, empty backend, called once per test; attributes after it
/// (e.g. `#[ignore = "..."]`) are put on every test.
macro_rules! conformance_suite {
    ($new:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::store::conformance::conformance_suite!(@tests [$(#[$attr])*] $new;
            empty_room_has_head_zero_and_no_messages,
            append_then_read_back_exact_messages,
            empty_batch_is_a_no_op,
            room_head_returns_latest_and_flags_older,
            room_head_with_zero_recent_still_reports_head,
            history_without_bounds,
            history_before_only,
            history_after_only,
            history_between_bounds,
            paging_backwards_visits_every_message_once,
            rooms_are_isolated_including_prefixes,
            out_of_order_batch_reads_back_ascending,
            seq_order_is_numeric_not_textual,
            duplicate_against_stored_row_rolls_back_whole_batch,
            duplicate_within_batch_stores_nothing,
            values_past_i64_max_are_refused_not_wrapped,
            unicode_bodies_and_users_round_trip,
            ten_thousand_messages_in_one_batch,
            log_unknown_doc_loads_empty,
            log_append_then_load_in_seq_order,
            log_docs_are_isolated_including_prefixes,
            log_duplicate_against_stored_row_rolls_back_whole_batch,
            log_duplicate_within_batch_stores_nothing,
            log_compact_replaces_snapshot_and_keeps_later_updates,
            log_compact_of_a_doc_without_updates_stores_the_snapshot,
            log_older_compact_is_ignored,
            log_seq_covered_by_snapshot_is_a_duplicate,
            log_seqs_past_i64_max_are_refused_not_wrapped,
            log_empty_and_binary_blobs_round_trip,
            log_large_blobs_round_trip,
            log_bytes_counts_snapshots_and_updates,
            log_family_streams_and_documents_stay_apart,
            log_streams_of_one_batch_interleave_and_replay_in_order,
            the_inside_table_follows_the_event_log,
            logged_events_store_the_position_they_report,
            positions_are_upserted,
            positions_never_go_back_in_time,
            fence_changes_apply_in_order,
            events_of_one_batch_apply_in_order,
        );
    };
    (@tests $attrs:tt $new:expr; $($name:ident,)*) => {
        $($crate::store::conformance::conformance_suite!(@test $attrs $new; $name);)*
    };
    (@test [$(#[$attr:meta])*] $new:expr; $name:ident) => {
        #[test]
        $(#[$attr])*
        fn $name() {
            let new = $new;
            $crate::store::conformance::$name(new());
        }
    };
}
pub(crate) use conformance_suite;

/// A message of "alice" with ids and times derived from `seq`.
pub(crate) fn msg(room: &str, seq: u64, body: &str) -> ChatMessage {
    ChatMessage {
        room: Arc::from(room),
        seq,
        id: 1_000_000 + seq,
        user: Arc::from("alice"),
        body: body.into(),
        ts_ms: 1_700_000_000_000 + seq,
    }
}

/// The seqs of a page, in order.
pub(crate) fn seqs(page: &Page) -> Vec<u64> {
    page.messages.iter().map(|m| m.seq).collect()
}

/// Stores messages 1..=10 in "room:a" and 1..=3 in "room:b".
fn fill(store: &mut dyn Inspect) {
    let mut batch: Vec<_> = (1..=10).map(|s| msg("room:a", s, &format!("a{s}"))).collect();
    batch.extend((1..=3).map(|s| msg("room:b", s, &format!("b{s}"))));
    store.append(&batch).unwrap();
}

/// A journal entry of `stream`.
pub(crate) fn upd(stream: &str, seq: u64, data: &[u8]) -> LogEntry {
    LogEntry { stream: Arc::from(stream), seq, data: data.into() }
}

/// A stored (seq, bytes) pair.
pub(crate) fn entry(seq: u64, data: &[u8]) -> (u64, Box<[u8]>) {
    (seq, data.into())
}

/// The seqs of a loaded document's updates.
pub(crate) fn update_seqs(state: &LogState) -> Vec<u64> {
    state.entries.iter().map(|(seq, _)| *seq).collect()
}

fn put(s: &mut dyn Inspect, tenant: &str, id: &str, json: &str) {
    let c = GeoFenceChange { tenant: tenant.into(), id: id.into(), json: Some(json.into()), fresh: true };
    s.geo_fences(&[c]).unwrap();
}

fn event(fence: &str, object: &str, kind: GeoLogKind, at_ms: u64) -> GeoEvent {
    GeoEvent { fence: fence.into(), object: object.into(), kind, lat: 1.5, lon: 2.5, ts: 10.25, at_ms }
}

fn position(id: &str, lat: f64, ts: f64) -> GeoPosition {
    GeoPosition { id: id.into(), lat, lon: 0.5, ts, speed: None, heading: None, props: None }
}

pub fn empty_room_has_head_zero_and_no_messages(mut store: Store) {
    assert_eq!(store.room_head("room:x", 50).unwrap(), (0, Page::default()));
    assert_eq!(store.room_head("room:x", 0).unwrap(), (0, Page::default()));
    assert_eq!(store.history("room:x", Some(10), Some(1), 5).unwrap(), Page::default());
}

pub fn append_then_read_back_exact_messages(mut store: Store) {
    let batch = vec![msg("room:a", 1, "hello"), msg("room:a", 2, "world")];
    store.append(&batch).unwrap();
    let (head, page) = store.room_head("room:a", 10).unwrap();
    assert_eq!(head, 2);
    assert_eq!(page.messages, batch);
    assert!(!page.more);
}

pub fn empty_batch_is_a_no_op(mut store: Store) {
    store.append(&[]).unwrap();
    assert_eq!(store.room_head("room:a", 10).unwrap().0, 0);
}

pub fn room_head_returns_latest_and_flags_older(mut store: Store) {
    fill(&mut *store);
    let (head, page) = store.room_head("room:a", 3).unwrap();
    assert_eq!(head, 10);
    assert_eq!(seqs(&page), [8, 9, 10]);
    assert!(page.more);

    let (head, page) = store.room_head("room:a", 10).unwrap();
    assert_eq!(head, 10);
    assert_eq!(seqs(&page), (1..=10).collect::<Vec<_>>());
    assert!(!page.more);

    let (head, page) = store.room_head("room:b", 100).unwrap();
    assert_eq!(head, 3);
    assert_eq!(seqs(&page), [1, 2, 3]);
    assert!(!page.more);
}

pub fn room_head_with_zero_recent_still_reports_head(mut store: Store) {
    fill(&mut *store);
    let (head, page) = store.room_head("room:a", 0).unwrap();
    assert_eq!(head, 10);
    assert!(page.messages.is_empty());
    assert!(page.more);
}

pub fn history_without_bounds(mut store: Store) {
    fill(&mut *store);
    let page = store.history("room:a", None, None, 4).unwrap();
    assert_eq!(seqs(&page), [7, 8, 9, 10]);
    assert!(page.more);
    let page = store.history("room:a", None, None, 10).unwrap();
    assert_eq!(seqs(&page), (1..=10).collect::<Vec<_>>());
    assert!(!page.more);
    let page = store.history("room:a", None, None, 0).unwrap();
    assert!(page.messages.is_empty());
    assert!(page.more);
}

pub fn history_before_only(mut store: Store) {
    fill(&mut *store);
    let page = store.history("room:a", Some(6), None, 2).unwrap();
    assert_eq!(seqs(&page), [4, 5]);
    assert!(page.more);
    let page = store.history("room:a", Some(6), None, 5).unwrap();
    assert_eq!(seqs(&page), [1, 2, 3, 4, 5]);
    assert!(!page.more);
    let page = store.history("room:a", Some(1), None, 5).unwrap();
    assert!(page.messages.is_empty());
    assert!(!page.more);
    let page = store.history("room:a", Some(0), None, 5).unwrap();
    assert_eq!(page, Page::default());
    let page = store.history("room:a", Some(u64::MAX), None, 3).unwrap();
    assert_eq!(seqs(&page), [8, 9, 10]);
    assert!(page.more);
}

pub fn history_after_only(mut store: Store) {
    fill(&mut *store);
    let page = store.history("room:a", None, Some(5), 2).unwrap();
    assert_eq!(seqs(&page), [9, 10]);
    assert!(page.more);
    let page = store.history("room:a", None, Some(5), 5).unwrap();
    assert_eq!(seqs(&page), [6, 7, 8, 9, 10]);
    assert!(!page.more);
    let page = store.history("room:a", None, Some(10), 5).unwrap();
    assert_eq!(page, Page::default());
    let page = store.history("room:a", None, Some(u64::MAX), 5).unwrap();
    assert_eq!(page, Page::default());
    let page = store.history("room:a", None, Some(0), 100).unwrap();
    assert_eq!(seqs(&page), (1..=10).collect::<Vec<_>>());
    assert!(!page.more);
}

pub fn history_between_bounds(mut store: Store) {
    fill(&mut *store);
    let page = store.history("room:a", Some(8), Some(2), 3).unwrap();
    assert_eq!(seqs(&page), [5, 6, 7]);
    assert!(page.more);
    let page = store.history("room:a", Some(8), Some(2), 5).unwrap();
    assert_eq!(seqs(&page), [3, 4, 5, 6, 7]);
    assert!(!page.more);
    let page = store.history("room:a", Some(8), Some(2), 50).unwrap();
    assert_eq!(seqs(&page), [3, 4, 5, 6, 7]);
    assert!(!page.more);
    let page = store.history("room:a", Some(4), Some(3), 5).unwrap();
    assert_eq!(page, Page::default());
    let page = store.history("room:a", Some(3), Some(7), 5).unwrap();
    assert_eq!(page, Page::default());
}

pub fn paging_backwards_visits_every_message_once(mut store: Store) {
    fill(&mut *store);
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.history("room:a", before, None, 3).unwrap();
        before = page.messages.first().map(|m| m.seq);
        seen.splice(0..0, seqs(&page));
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
}

pub fn rooms_are_isolated_including_prefixes(mut store: Store) {
    store.append(&[msg("room:1", 1, "one"), msg("room:10", 1, "ten")]).unwrap();
    let (head, page) = store.room_head("room:1", 10).unwrap();
    assert_eq!(head, 1);
    assert_eq!(page.messages.len(), 1);
    assert_eq!(&*page.messages[0].body, "one");
    assert_eq!(&*page.messages[0].room, "room:1");
}

pub fn out_of_order_batch_reads_back_ascending(mut store: Store) {
    store.append(&[msg("r", 3, "c"), msg("r", 1, "a"), msg("r", 2, "b")]).unwrap();
    store.append(&[msg("r", 5, "e"), msg("r", 4, "d")]).unwrap();
    let (head, page) = store.room_head("r", 10).unwrap();
    assert_eq!(head, 5);
    let bodies: Vec<&str> = page.messages.iter().map(|m| &*m.body).collect();
    assert_eq!(bodies, ["a", "b", "c", "d", "e"]);
}

pub fn seq_order_is_numeric_not_textual(mut store: Store) {
    store.append(&[msg("r", 9, "9"), msg("r", 10, "10"), msg("r", 100, "100")]).unwrap();
    assert_eq!(seqs(&store.history("r", None, None, 10).unwrap()), [9, 10, 100]);
}

pub fn duplicate_against_stored_row_rolls_back_whole_batch(mut store: Store) {
    fill(&mut *store);
    let batch = [msg("room:b", 4, "new"), msg("room:a", 5, "dup"), msg("room:c", 1, "new")];
    let err = store.append(&batch).unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    assert_eq!(store.room_head("room:b", 10).unwrap().0, 3);
    assert_eq!(store.room_head("room:c", 10).unwrap(), (0, Page::default()));
    let page = store.history("room:a", Some(6), Some(4), 10).unwrap();
    assert_eq!(&*page.messages[0].body, "a5");
}

pub fn duplicate_within_batch_stores_nothing(mut store: Store) {
    let err = store.append(&[msg("r", 1, "first"), msg("r", 2, "x"), msg("r", 1, "again")]).unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    assert_eq!(store.room_head("r", 10).unwrap(), (0, Page::default()));
    // The store stays usable after a rollback.
    store.append(&[msg("r", 1, "first")]).unwrap();
    assert_eq!(store.room_head("r", 10).unwrap().0, 1);
}

pub fn values_past_i64_max_are_refused_not_wrapped(mut store: Store) {
    let mut big_id = msg("r", 2, "x");
    big_id.id = u64::MAX;
    let err = store.append(&[msg("r", 1, "ok"), big_id]).unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    let mut big_seq = msg("r", 1, "x");
    big_seq.seq = i64::MAX as u64 + 1;
    assert!(store.append(&[big_seq]).is_err());
    assert_eq!(store.room_head("r", 10).unwrap(), (0, Page::default()));

    let mut max = msg("r", i64::MAX as u64, "edge");
    max.id = i64::MAX as u64;
    max.ts_ms = i64::MAX as u64;
    store.append(&[max.clone()]).unwrap();
    let (head, page) = store.room_head("r", 1).unwrap();
    assert_eq!(head, i64::MAX as u64);
    assert_eq!(page.messages, [max]);
}

pub fn unicode_bodies_and_users_round_trip(mut store: Store) {
    let bodies =
        ["héllo wörld", "日本語のメッセージ", "emoji 🦀🚀 and ZWJ 👩‍👩‍👧", "rtl עברית", "nul\0inside", ""];
    let batch: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| ChatMessage { user: Arc::from("ユーザー🙂"), ..msg("room:ü", i as u64 + 1, b) })
        .collect();
    store.append(&batch).unwrap();
    let (_, page) = store.room_head("room:ü", 100).unwrap();
    assert_eq!(page.messages, batch);
}

pub fn ten_thousand_messages_in_one_batch(mut store: Store) {
    let batch: Vec<_> = (1..=10_000).map(|s| msg("room:big", s, "payload")).collect();
    store.append(&batch).unwrap();
    let (head, page) = store.room_head("room:big", 50).unwrap();
    assert_eq!(head, 10_000);
    assert_eq!(seqs(&page), (9_951..=10_000).collect::<Vec<_>>());
    assert!(page.more);
    let page = store.history("room:big", Some(5_001), Some(4_999), 10).unwrap();
    assert_eq!(seqs(&page), [5_000]);
    let all = store.history("room:big", None, None, 20_000).unwrap();
    assert_eq!(all.messages, batch);
    assert!(!all.more);
}

pub fn log_family_streams_and_documents_stay_apart(mut store: Store) {
    let wallet = super::log_stream("wallet", "alice");
    assert_eq!(&*wallet, "wallet/alice");
    // A collab document may be called "wallet:alice" or "alice"; neither is the wallet's stream.
    store.log_append(&[upd(&wallet, 1, br#"{"credit":5}"#), upd("wallet:alice", 1, b"doc")]).unwrap();
    store.log_append(&[upd("alice", 1, b"doc too"), upd("bet/m1", 1, b"market")]).unwrap();
    store.log_compact(&wallet, 1, br#"{"balance":5}"#).unwrap();
    store.log_append(&[upd(&wallet, 2, br#"{"reserve":2}"#)]).unwrap();
    assert_eq!(
        store.log_load(&wallet).unwrap(),
        LogState {
            snapshot: Some(entry(1, br#"{"balance":5}"#)),
            entries: vec![entry(2, br#"{"reserve":2}"#)]
        }
    );
    assert_eq!(store.log_load("wallet:alice").unwrap().entries, [entry(1, b"doc")]);
    assert_eq!(store.log_load("alice").unwrap().entries, [entry(1, b"doc too")]);
    assert_eq!(store.log_load("bet/m1").unwrap().entries, [entry(1, b"market")]);
    assert_eq!(store.log_load("wallet/bob").unwrap(), LogState::default());
    assert_eq!(super::log_family(&wallet), Some("wallet"));
    assert_eq!(super::log_family("wallet:alice"), None);
}

pub fn log_streams_of_one_batch_interleave_and_replay_in_order(mut store: Store) {
    let streams: Vec<_> = (0..8).map(|i| super::log_stream("bet", &format!("m{i}"))).collect();
    let batch: Vec<_> =
        (1..=50u64).flat_map(|seq| streams.iter().map(move |s| upd(s, seq, &seq.to_be_bytes()))).collect();
    store.log_append(&batch).unwrap();
    store.log_compact(&streams[3], 20, b"upto 20").unwrap();
    for (i, s) in streams.iter().enumerate() {
        let state = store.log_load(s).unwrap();
        let first = if i == 3 { 21 } else { 1 };
        assert_eq!(update_seqs(&state), (first..=50).collect::<Vec<_>>(), "{s}");
        assert!(state.entries.iter().all(|(seq, data)| **data == seq.to_be_bytes()));
    }
    assert_eq!(store.stored_updates(None), 7 * 50 + 30);
}

pub fn log_unknown_doc_loads_empty(mut store: Store) {
    assert_eq!(store.log_load("doc:x").unwrap(), LogState::default());
    assert_eq!(store.log_bytes().unwrap(), 0);
    store.log_append(&[]).unwrap();
    assert_eq!(store.log_load("doc:x").unwrap(), LogState::default());
}

pub fn log_append_then_load_in_seq_order(mut store: Store) {
    store.log_append(&[upd("d", 3, b"c"), upd("d", 1, b"a"), upd("other", 1, b"o")]).unwrap();
    store.log_append(&[upd("d", 2, b"b"), upd("d", 10, b"j"), upd("d", 9, b"i")]).unwrap();
    let state = store.log_load("d").unwrap();
    assert_eq!(state.snapshot, None);
    assert_eq!(
        state.entries,
        [entry(1, b"a"), entry(2, b"b"), entry(3, b"c"), entry(9, b"i"), entry(10, b"j")]
    );
    assert_eq!(store.log_load("other").unwrap().entries, [entry(1, b"o")]);
}

pub fn log_docs_are_isolated_including_prefixes(mut store: Store) {
    store.log_append(&[upd("doc:1", 1, b"one"), upd("doc:10", 1, b"ten")]).unwrap();
    store.log_compact("doc:10", 1, b"snap ten").unwrap();
    assert_eq!(
        store.log_load("doc:1").unwrap(),
        LogState { snapshot: None, entries: vec![entry(1, b"one")] }
    );
    assert_eq!(
        store.log_load("doc:10").unwrap(),
        LogState { snapshot: Some(entry(1, b"snap ten")), entries: vec![] }
    );
}

pub fn log_duplicate_against_stored_row_rolls_back_whole_batch(mut store: Store) {
    store.log_append(&[upd("d", 1, b"a"), upd("d", 2, b"b")]).unwrap();
    let err = store.log_append(&[upd("d", 3, b"c"), upd("e", 1, b"x"), upd("d", 2, b"dup")]).unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    assert_eq!(store.log_load("d").unwrap().entries, [entry(1, b"a"), entry(2, b"b")]);
    assert_eq!(store.log_load("e").unwrap(), LogState::default());
    // The store stays usable after a rollback.
    store.log_append(&[upd("d", 3, b"c")]).unwrap();
    assert_eq!(update_seqs(&store.log_load("d").unwrap()), [1, 2, 3]);
}

pub fn log_duplicate_within_batch_stores_nothing(mut store: Store) {
    let err = store.log_append(&[upd("d", 1, b"a"), upd("d", 2, b"b"), upd("d", 1, b"a")]).unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    assert_eq!(store.log_load("d").unwrap(), LogState::default());
    assert_eq!(store.log_bytes().unwrap(), 0);
}

pub fn log_compact_replaces_snapshot_and_keeps_later_updates(mut store: Store) {
    let batch: Vec<_> = (1..=6).map(|s| upd("d", s, &[s as u8])).collect();
    store.log_append(&batch).unwrap();
    store.log_compact("d", 2, b"state@2").unwrap();
    let state = store.log_load("d").unwrap();
    assert_eq!(state.snapshot, Some(entry(2, b"state@2")));
    assert_eq!(update_seqs(&state), [3, 4, 5, 6]);

    store.log_compact("d", 4, b"state@4").unwrap();
    let state = store.log_load("d").unwrap();
    assert_eq!(state.snapshot, Some(entry(4, b"state@4")));
    assert_eq!(state.entries, [entry(5, &[5]), entry(6, &[6])]);
    // The covered rows are gone from the table, not just hidden by the load.
    assert_eq!(store.stored_updates(Some("d")), 2);

    // Compacting everything leaves only the snapshot; the same seq again replaces it.
    store.log_compact("d", 6, b"state@6").unwrap();
    store.log_compact("d", 6, b"state@6 smaller").unwrap();
    assert_eq!(
        store.log_load("d").unwrap(),
        LogState { snapshot: Some(entry(6, b"state@6 smaller")), entries: vec![] }
    );
    store.log_append(&[upd("d", 7, b"after")]).unwrap();
    assert_eq!(store.log_load("d").unwrap().entries, [entry(7, b"after")]);
}

pub fn log_compact_of_a_doc_without_updates_stores_the_snapshot(mut store: Store) {
    store.log_compact("d", 0, b"initial").unwrap();
    assert_eq!(store.log_load("d").unwrap().snapshot, Some(entry(0, b"initial")));
    store.log_append(&[upd("d", 1, b"a")]).unwrap();
    assert_eq!(update_seqs(&store.log_load("d").unwrap()), [1]);
}

pub fn log_older_compact_is_ignored(mut store: Store) {
    let batch: Vec<_> = (1..=5).map(|s| upd("d", s, b"u")).collect();
    store.log_append(&batch).unwrap();
    store.log_compact("d", 3, b"state@3").unwrap();
    store.log_compact("d", 2, b"stale state@2").unwrap();
    let state = store.log_load("d").unwrap();
    assert_eq!(state.snapshot, Some(entry(3, b"state@3")));
    assert_eq!(update_seqs(&state), [4, 5]);
    store.log_compact("d", 0, b"stale state@0").unwrap();
    assert_eq!(store.log_load("d").unwrap(), state);
}

pub fn log_seq_covered_by_snapshot_is_a_duplicate(mut store: Store) {
    store.log_append(&[upd("d", 1, b"a"), upd("d", 2, b"b"), upd("d", 3, b"c")]).unwrap();
    store.log_compact("d", 2, b"state@2").unwrap();
    let err = store.log_append(&[upd("d", 4, b"d"), upd("d", 2, b"again")]).unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    let state = store.log_load("d").unwrap();
    assert_eq!(state.snapshot, Some(entry(2, b"state@2")));
    assert_eq!(state.entries, [entry(3, b"c")]);
    assert_eq!(store.stored_updates(None), 1);
}

pub fn log_seqs_past_i64_max_are_refused_not_wrapped(mut store: Store) {
    let too_big = i64::MAX as u64 + 1;
    let err = store.log_append(&[upd("d", 1, b"ok"), upd("d", too_big, b"x")]).unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    assert_eq!(store.log_load("d").unwrap(), LogState::default());
    let err = store.log_compact("d", u64::MAX, b"snap").unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    assert_eq!(store.log_load("d").unwrap(), LogState::default());

    let edge = i64::MAX as u64;
    store.log_append(&[upd("d", edge, b"edge")]).unwrap();
    assert_eq!(store.log_load("d").unwrap().entries, [entry(edge, b"edge")]);
    store.log_compact("d", edge, b"snap").unwrap();
    assert_eq!(
        store.log_load("d").unwrap(),
        LogState { snapshot: Some(entry(edge, b"snap")), entries: vec![] }
    );
}

pub fn log_empty_and_binary_blobs_round_trip(mut store: Store) {
    let all_bytes: Vec<u8> = (0..=255).collect();
    store.log_append(&[upd("d", 1, b""), upd("d", 2, &all_bytes), upd("d", 3, b"\0\0")]).unwrap();
    store.log_compact("e", 1, b"").unwrap();
    assert_eq!(
        store.log_load("d").unwrap().entries,
        [entry(1, b""), entry(2, &all_bytes), entry(3, b"\0\0")]
    );
    assert_eq!(store.log_load("e").unwrap().snapshot, Some(entry(1, b"")));
    assert_eq!(store.log_bytes().unwrap(), 258);
}

pub fn log_large_blobs_round_trip(mut store: Store) {
    const MIB: usize = 1 << 20;
    let big: Vec<u8> = (0..MIB).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut snapshot = big.clone();
    snapshot.reverse();
    store.log_append(&[upd("d", 1, &big), upd("d", 2, &big[..MIB - 1]), upd("d", 3, b"tail")]).unwrap();
    assert_eq!(store.log_bytes().unwrap(), (2 * MIB - 1 + 4) as u64);
    let state = store.log_load("d").unwrap();
    assert_eq!(state.entries, [entry(1, &big), entry(2, &big[..MIB - 1]), entry(3, b"tail")]);

    store.log_compact("d", 2, &snapshot).unwrap();
    let state = store.log_load("d").unwrap();
    assert_eq!(state.snapshot, Some(entry(2, &snapshot)));
    assert_eq!(state.entries, [entry(3, b"tail")]);
    assert_eq!(store.log_bytes().unwrap(), (MIB + 4) as u64);
}

pub fn log_bytes_counts_snapshots_and_updates(mut store: Store) {
    store.append(&[msg("r", 1, "chat is not counted")]).unwrap();
    assert_eq!(store.log_bytes().unwrap(), 0);
    store.log_append(&[upd("a", 1, &[0; 10]), upd("a", 2, &[0; 20]), upd("b", 1, &[0; 5])]).unwrap();
    assert_eq!(store.log_bytes().unwrap(), 35);
    store.log_compact("a", 1, &[0; 100]).unwrap();
    assert_eq!(store.log_bytes().unwrap(), 125);
    store.log_compact("a", 0, &[0; 1000]).unwrap();
    assert_eq!(store.log_bytes().unwrap(), 125);
    store.log_compact("a", 2, &[0; 50]).unwrap();
    assert_eq!(store.log_bytes().unwrap(), 55);
    assert!(store.log_append(&[upd("b", 2, &[0; 7]), upd("b", 1, &[0; 9])]).is_err());
    assert_eq!(store.log_bytes().unwrap(), 55);
}

pub fn the_inside_table_follows_the_event_log(mut s: Store) {
    put(&mut *s, "t", "f1", r#"{"id":"f1"}"#);
    put(&mut *s, "t", "f2", r#"{"id":"f2"}"#);
    put(&mut *s, "other", "f1", r#"{"id":"f1","other":true}"#);
    let log = |events| GeoLog { tenant: "t".into(), events };
    s.geo_log(&[
        log(vec![event("f1", "a", GeoLogKind::Enter, 100), event("f2", "a", GeoLogKind::Enter, 100)]),
        log(vec![event("f1", "b", GeoLogKind::Enter, 200), event("f2", "c", GeoLogKind::Cross, 200)]),
    ])
    .unwrap();
    s.geo_log(&[log(vec![
        event("f1", "a", GeoLogKind::Dwell, 300),
        event("f1", "b", GeoLogKind::Exit, 300),
    ])])
    .unwrap();
    let state = s.geo_load("t").unwrap();
    let fences: Vec<&str> = state.fences.iter().map(|(id, _)| &**id).collect();
    assert_eq!(fences, ["f1", "f2"]);
    let mut inside = state.inside.clone();
    inside.sort_by(|x, y| (&x.fence, &x.object).cmp(&(&y.fence, &y.object)));
    assert_eq!(
        inside,
        vec![
            GeoInside { fence: "f1".into(), object: "a".into(), since_ms: 100, dwelled: true },
            GeoInside { fence: "f2".into(), object: "a".into(), since_ms: 100, dwelled: false },
        ]
    );
    assert_eq!(s.logged_events("t"), 6, "every event is logged, cross included");
    assert_eq!(s.logged_events("other"), 0);
    // Deleting a fence forgets who was inside it.
    s.geo_fences(&[GeoFenceChange { tenant: "t".into(), id: "f1".into(), json: None, fresh: false }])
        .unwrap();
    let state = s.geo_load("t").unwrap();
    assert_eq!(state.fences.len(), 1);
    assert_eq!(state.inside.len(), 1);
    assert_eq!(s.geo_load("other").unwrap().fences[0].1.as_ref(), r#"{"id":"f1","other":true}"#);
}

pub fn logged_events_store_the_position_they_report(mut s: Store) {
    let log = |events| GeoLog { tenant: "t".into(), events };
    s.geo_log(&[log(vec![event("f", "a", GeoLogKind::Enter, 100)])]).unwrap();
    let objects = s.geo_load("t").unwrap().objects;
    assert_eq!((&*objects[0].id, objects[0].lat, objects[0].lon, objects[0].ts), ("a", 1.5, 2.5, 10.25));
    // A newer position written behind is not overwritten by an older event.
    let newer =
        GeoPosition { id: "a".into(), lat: 5.0, lon: 6.0, ts: 20.0, speed: None, heading: None, props: None };
    s.geo_positions("t", std::slice::from_ref(&newer)).unwrap();
    s.geo_log(&[log(vec![event("g", "a", GeoLogKind::Enter, 200)])]).unwrap();
    assert_eq!(s.geo_load("t").unwrap().objects, vec![newer]);
}

pub fn positions_are_upserted(mut s: Store) {
    let p = |lat, props: Option<&str>| GeoPosition {
        id: "car".into(),
        lat,
        lon: -3.0,
        ts: 1_764_320_000_123.5,
        speed: Some(12.5),
        heading: None,
        props: props.map(Into::into),
    };
    s.geo_positions("t", &[p(1.0, Some(r#"{"k":1}"#))]).unwrap();
    s.geo_positions("t", &[p(2.0, None)]).unwrap();
    assert_eq!(s.geo_load("t").unwrap().objects, vec![p(2.0, None)]);
    assert!(s.geo_load("u").unwrap().objects.is_empty());
}

pub fn positions_never_go_back_in_time(mut s: Store) {
    s.geo_positions("t", &[position("a", 1.0, 100.0)]).unwrap();
    s.geo_positions("t", &[position("a", 2.0, 99.5)]).unwrap();
    assert_eq!(s.geo_load("t").unwrap().objects, vec![position("a", 1.0, 100.0)]);
    // An equal timestamp replaces, and within one batch the rows apply in order.
    s.geo_positions(
        "t",
        &[
            position("a", 3.0, 100.0),
            position("a", 4.0, 120.0),
            position("a", 5.0, 110.0),
            position("b", 6.0, 1.0),
        ],
    )
    .unwrap();
    let mut objects = s.geo_load("t").unwrap().objects;
    objects.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(objects, vec![position("a", 4.0, 120.0), position("b", 6.0, 1.0)]);
    s.geo_positions("t", &[]).unwrap();
    assert_eq!(s.geo_load("t").unwrap().objects.len(), 2);
}

pub fn fence_changes_apply_in_order(mut s: Store) {
    let change = |id: &str, json: Option<&str>, fresh| GeoFenceChange {
        tenant: "t".into(),
        id: id.into(),
        json: json.map(Into::into),
        fresh,
    };
    s.geo_fences(&[]).unwrap();
    s.geo_fences(&[
        change("f1", Some("v1"), true),
        change("f1", Some("v2"), false),
        change("f2", Some("x"), true),
        change("f2", None, false),
        change("f3", None, false),
    ])
    .unwrap();
    assert_eq!(s.geo_load("t").unwrap().fences, vec![("f1".into(), "v2".into())]);
    let log = GeoLog { tenant: "t".into(), events: vec![event("f1", "a", GeoLogKind::Enter, 5)] };
    s.geo_log(&[log]).unwrap();
    // Replacing keeps who is inside; creating afresh under the same id forgets them.
    s.geo_fences(&[change("f1", Some("v3"), false)]).unwrap();
    assert_eq!(s.geo_load("t").unwrap().inside.len(), 1);
    s.geo_fences(&[change("f1", None, false), change("f1", Some("v4"), true)]).unwrap();
    let state = s.geo_load("t").unwrap();
    assert_eq!(state.fences, vec![("f1".into(), "v4".into())]);
    assert!(state.inside.is_empty());
}

pub fn events_of_one_batch_apply_in_order(mut s: Store) {
    let log = |events| GeoLog { tenant: "t".into(), events };
    s.geo_log(&[]).unwrap();
    s.geo_log(&[log(vec![])]).unwrap();
    s.geo_log(&[
        log(vec![event("f", "a", GeoLogKind::Enter, 1), event("f", "a", GeoLogKind::Exit, 2)]),
        log(vec![event("f", "b", GeoLogKind::Exit, 3), event("f", "b", GeoLogKind::Enter, 4)]),
        log(vec![event("f", "c", GeoLogKind::Enter, 5), event("f", "c", GeoLogKind::Dwell, 6)]),
        log(vec![event("f", "c", GeoLogKind::Enter, 7)]),
    ])
    .unwrap();
    let mut inside = s.geo_load("t").unwrap().inside;
    inside.sort_by(|x, y| x.object.cmp(&y.object));
    assert_eq!(
        inside,
        vec![
            GeoInside { fence: "f".into(), object: "b".into(), since_ms: 4, dwelled: false },
            GeoInside { fence: "f".into(), object: "c".into(), since_ms: 7, dwelled: false },
        ]
    );
    assert_eq!(s.logged_events("t"), 7);
}
