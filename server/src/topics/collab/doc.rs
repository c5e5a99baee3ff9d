//! One collaborative document as its owner worker holds it: the Yjs CRDT (through `yrs`) and the
//! awareness states (cursors, user names) of the clients editing it.
//!
//! Everything crossing this API is bytes in the encodings the JavaScript clients use (Yjs update v1,
//! lib0 state vectors, y-protocols awareness updates), so the connection layer only moves frames.
//! Client input is never trusted: it is decoded and checked before it touches the document.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, IdSet, OffsetKind, Options, ReadTxn, StateVector, Transact, Update};

use super::proto::{self, write_var_uint, ProtoError, Reader};

/// Default bound on a document's encoded size. It stays below [`super::proto::MAX_FRAME_LEN`] so
/// that the whole document always fits in the one sync step 2 frame a joining client receives.
pub const DEFAULT_MAX_LEN: usize = 8 << 20;

/// Bound on the awareness entries (live states and remembered clocks) of one document. A page load
/// is one client id, so this is thousands of editors; past it, forgotten clocks are dropped first.
pub const MAX_AWARENESS_CLIENTS: usize = 16_384;

/// Why a document refused an input.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// The bytes are not a Yjs v1 update this server can integrate.
    #[error("malformed update: {0}")]
    BadUpdate(String),
    /// The bytes are not a v1 state vector.
    #[error("malformed state vector: {0}")]
    BadStateVector(String),
    /// The bytes are not a y-protocols awareness update with JSON states.
    #[error("malformed awareness update: {0}")]
    BadAwareness(String),
    /// Accepting the input would take the document (or its awareness table) past its bound.
    #[error("document would grow to {size}, over the limit of {max}")]
    TooLarge {
        /// The size it would reach (bytes, or awareness entries).
        size: usize,
        /// The bound.
        max: usize,
    },
    /// `yrs` panicked while integrating an update, so the in-memory state can no longer be trusted:
    /// drop this value and reload the document from storage, which never saw that update (and do
    /// not store its snapshot). Every later `apply_update` and `diff_for` returns this error.
    #[error("document state is no longer trustworthy: {0}")]
    Poisoned(String),
}

impl DocError {
    /// The WebSocket close code for the connection that sent the refused input: 1009 (message too
    /// big) when a bound was hit, 1011 (internal error) when the document is poisoned, 1007 (invalid
    /// payload data) otherwise.
    pub fn close_code(&self) -> u16 {
        match self {
            DocError::TooLarge { .. } => 1009,
            DocError::Poisoned(_) => 1011,
            DocError::BadUpdate(_) | DocError::BadStateVector(_) | DocError::BadAwareness(_) => 1007,
        }
    }
}

/// One client's awareness entry, with y-protocols' meaning: the clock outlives the state, so that a
/// late message carrying an older clock cannot bring a departed cursor back.
#[derive(Debug, Clone)]
struct Peer {
    /// The highest clock accepted from this client.
    clock: u64,
    /// The client's JSON state as it sent it; `None` once the client is gone.
    state: Option<Box<str>>,
    /// When `clock` was last accepted.
    updated: Instant,
}

/// A Yjs document plus the awareness states of its editors.
pub struct CollabDoc {
    /// The CRDT. The server only integrates peers' updates; its own client id never authors a change.
    doc: Doc,
    /// Awareness entries by Yjs client id; ordered so that encodings are deterministic.
    peers: BTreeMap<u64, Peer>,
    /// Exact encoded size of the document when last measured (load, snapshot or a bound check).
    measured_len: AtomicUsize,
    /// Bytes of updates accepted since `measured_len` was taken. Their sum over-estimates growth,
    /// because an update re-encodes smaller once merged into the document.
    unmeasured_len: AtomicUsize,
    /// Bound on the encoded size, checked before an update is applied.
    max_len: usize,
    /// Set when `yrs` panicked mid-update: see [`DocError::Poisoned`].
    poisoned: Option<String>,
}

impl std::fmt::Debug for CollabDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollabDoc")
            .field("encoded_len", &self.encoded_len())
            .field("peers", &self.peers.len())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Default for CollabDoc {
    fn default() -> Self {
        Self::new()
    }
}

impl CollabDoc {
    /// An empty document with the [`DEFAULT_MAX_LEN`] bound.
    pub fn new() -> Self {
        // UTF-16 offsets are what Yjs uses, so any index this document ever reports matches the
        // clients'; garbage collection on, as in y-websocket's server, keeps deleted text out of
        // snapshots.
        let options = Options { offset_kind: OffsetKind::Utf16, skip_gc: false, ..Options::default() };
        CollabDoc {
            doc: Doc::with_options(options),
            peers: BTreeMap::new(),
            measured_len: AtomicUsize::new(Update::EMPTY_V1.len()),
            unmeasured_len: AtomicUsize::new(0),
            max_len: DEFAULT_MAX_LEN,
            poisoned: None,
        }
    }

    /// Sets the bound on the document's encoded size that [`CollabDoc::apply_update`] enforces.
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// Rebuild from a stored snapshot (full-state update, v1 encoding) plus later updates, in order.
    ///
    /// Stored data is loaded whatever its size: the bound applies to what clients add later.
    pub fn load(snapshot: Option<&[u8]>, updates: &[&[u8]]) -> Result<Self, DocError> {
        let mut me = Self::new();
        match me.merge_stored(snapshot, updates) {
            Ok(_) => {}
            // A panic leaves only this fresh document behind, and it is dropped.
            Err(DocError::Poisoned(why)) => return Err(DocError::BadUpdate(format!("stored data: {why}"))),
            Err(e) => return Err(e),
        }
        me.measured_len.store(snapshot.map_or(Update::EMPTY_V1.len(), <[u8]>::len), Ordering::Relaxed);
        me.unmeasured_len.store(updates.iter().map(|u| u.len()).sum(), Ordering::Relaxed);
        Ok(me)
    }

    /// Merge stored data (a snapshot, then later updates, in order) into this document, whatever its
    /// size: the bound applies to what clients add. The document may already hold some or all of
    /// it: CRDT updates merge in any order and any number of times. Returns whether anything was
    /// new. On an error the parts before the failing one stay merged; a panic in `yrs` poisons the
    /// document.
    pub fn merge_stored(&mut self, snapshot: Option<&[u8]>, updates: &[&[u8]]) -> Result<bool, DocError> {
        self.check_poisoned()?;
        let parts = snapshot.into_iter().chain(updates.iter().copied());
        let doc = &self.doc;
        let merged = catch_unwind(AssertUnwindSafe(|| -> Result<bool, DocError> {
            let mut changed = false;
            for (i, bytes) in parts.enumerate() {
                let update = decode_update(bytes).map_err(|e| stored_part_error(i, snapshot.is_some(), e))?;
                // One transaction per part: yrs merges adjacent blocks only when a transaction
                // commits, and integrating into long runs of unmerged blocks gets slow (a whole
                // editing trace in one transaction is several times slower than one per update).
                let mut txn = doc.transact_mut();
                let pending_before = pending(&txn);
                txn.apply_update(update).map_err(|e| {
                    stored_part_error(i, snapshot.is_some(), DocError::BadUpdate(e.to_string()))
                })?;
                changed |= txn.has_changes() || pending(&txn) != pending_before;
            }
            Ok(changed)
        }));
        let changed = match merged {
            Ok(result) => result?,
            Err(panic) => return Err(self.poison(&panic)),
        };
        if changed {
            let bytes: usize =
                snapshot.map_or(0, <[u8]>::len) + updates.iter().map(|u| u.len()).sum::<usize>();
            self.unmeasured_len.fetch_add(bytes, Ordering::Relaxed);
        }
        Ok(changed)
    }

    /// Apply a client update (v1). Returns `Ok(false)` if it brought nothing new (every block and
    /// deletion already known), `Ok(true)` otherwise; blocks still waiting for their predecessors
    /// count as new, since the document keeps them and includes them in snapshots.
    ///
    /// Before the update touches the document, its structure is checked ([`proto::check_update`]),
    /// it is decoded, and its decoded form must encode back to something decodable; input failing
    /// any of that is a [`DocError::BadUpdate`] and leaves the document unchanged. `yrs` checks one thing only while integrating (a nested item whose
    /// parent is not a shared type): such an update is a `BadUpdate` too, but the blocks integrated
    /// before the check stay, as if the client had sent only those; they are well-formed CRDT data.
    ///
    /// What is not checked, here or in Yjs: that an item's origins agree with each other (its right
    /// origin really to the right of its left one). A client forging contradicting origins gets an
    /// item whose position depends on integration order, so replicas may disagree on where it sits.
    pub fn apply_update(&mut self, update: &[u8]) -> Result<bool, DocError> {
        self.check_poisoned()?;
        self.check_room(update.len())?;
        let decoded = decode_update(update)?;
        if decoded.is_empty() {
            return Ok(false);
        }
        let doc = &self.doc;
        let applied = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            let pending_before = pending(&txn);
            txn.apply_update(decoded)?;
            Ok::<_, yrs::error::UpdateError>(txn.has_changes() || pending(&txn) != pending_before)
        }));
        match applied {
            Ok(Ok(changed)) => {
                if changed {
                    self.unmeasured_len.fetch_add(update.len(), Ordering::Relaxed);
                }
                Ok(changed)
            }
            Ok(Err(e)) => Err(DocError::BadUpdate(e.to_string())),
            Err(panic) => Err(self.poison(&panic)),
        }
    }

    /// The server's reply to a client's sync step 1: the update the client lacks (v1), to wrap in
    /// [`super::proto::sync_step2`]. Blocks the server holds but cannot integrate yet are included,
    /// as Yjs does, so the client can complete them.
    pub fn diff_for(&self, state_vector: &[u8]) -> Result<Vec<u8>, DocError> {
        self.check_poisoned()?;
        proto::check_state_vector(state_vector).map_err(|e| DocError::BadStateVector(e.to_string()))?;
        let sv = catch_unwind(|| StateVector::decode_v1(state_vector))
            .map_err(|panic| DocError::BadStateVector(panic_message(&panic)))?
            .map_err(|e| DocError::BadStateVector(e.to_string()))?;
        let diff = catch_unwind(AssertUnwindSafe(|| self.doc.transact().encode_state_as_update_v1(&sv)));
        diff.map_err(|panic| DocError::Poisoned(panic_message(&panic)))
    }

    /// The server's own state vector (v1), for [`super::proto::sync_step1`].
    pub fn state_vector(&self) -> Vec<u8> {
        self.doc.transact().state_vector().encode_v1()
    }

    /// The whole document as one update (v1): the snapshot to store. Also resets the size estimate
    /// behind [`CollabDoc::encoded_len`] to this exact length.
    pub fn snapshot(&self) -> Vec<u8> {
        let bytes = self.doc.transact().encode_state_as_update_v1(&StateVector::default());
        self.measured_len.store(bytes.len(), Ordering::Relaxed);
        self.unmeasured_len.store(0, Ordering::Relaxed);
        bytes
    }

    /// Plain text of the root shared type `name` (y-quill binds `ydoc.getText('quill')`); "" if the
    /// document has no such root. Embeds (images, formulas) carry no text and are skipped; formatting
    /// attributes are dropped.
    pub fn text(&self, name: &str) -> String {
        let txn = self.doc.transact();
        txn.get_text(name).map(|text| text.get_string(&txn)).unwrap_or_default()
    }

    /// Approximate encoded size of the document, for the size bound: the exact size at the last
    /// measurement plus the bytes of every update applied since, so never an under-estimate.
    pub fn encoded_len(&self) -> usize {
        self.measured_len.load(Ordering::Relaxed).saturating_add(self.unmeasured_len.load(Ordering::Relaxed))
    }

    /// True once `yrs` has panicked on an update: see [`DocError::Poisoned`].
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Apply an awareness update from a client, with y-protocols' rules: an entry is taken if its
    /// clock is newer than the known one (an unknown client counts as clock 0), or if it carries the
    /// same clock with a `null` state for a client that has one (a removal). Returns the client ids
    /// whose entry was taken (added, updated or removed), in message order, as y-protocols' `update`
    /// event does: an unchanged state with a newer clock is a renewal that must still reach the
    /// other clients, or they drop the cursor after 30 s. Empty when nothing was taken.
    ///
    /// The whole update is validated (varints, UTF-8, JSON) before any entry is applied, so a
    /// malformed one changes nothing. States are kept as the client's JSON text and sent on as is.
    pub fn apply_awareness(&mut self, update: &[u8]) -> Result<Vec<u64>, DocError> {
        let entries = decode_awareness(update)?;
        let new_ids = entries.iter().filter(|e| !self.peers.contains_key(&e.client)).count();
        self.make_room(new_ids)?;
        let now = Instant::now();
        let mut changed = Vec::new();
        for AwarenessEntry { client, clock, state } in entries {
            let Some(peer) = self.peers.get_mut(&client) else {
                // y-protocols takes an unknown client's clock as 0: only a newer one is accepted, and
                // a null state for it is remembered (its clock) without being a change.
                if clock > 0 {
                    if state.is_some() {
                        changed.push(client);
                    }
                    self.peers.insert(client, Peer { clock, state: state.map(Into::into), updated: now });
                }
                continue;
            };
            let removal = clock == peer.clock && state.is_none() && peer.state.is_some();
            if peer.clock >= clock && !removal {
                continue;
            }
            peer.clock = clock;
            peer.updated = now;
            peer.state = state.map(Into::into);
            changed.push(client);
        }
        Ok(changed)
    }

    /// The full current awareness (every client with a state), for a newly connected client; `None`
    /// if no client has one.
    pub fn awareness_update_all(&self) -> Option<Vec<u8>> {
        let live: Vec<u64> =
            self.peers.iter().filter(|(_, p)| p.state.is_some()).map(|(&id, _)| id).collect();
        self.awareness_update_for(&live)
    }

    /// The awareness update for the given clients as the server knows them (a gone client as
    /// `null`), the way y-websocket's server re-encodes changes before broadcasting them; unknown ids
    /// are skipped. `None` if no id is known.
    pub fn awareness_update_for(&self, ids: &[u64]) -> Option<Vec<u8>> {
        let known: Vec<(u64, &Peer)> = ids.iter().filter_map(|id| Some((*id, self.peers.get(id)?))).collect();
        if known.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        write_var_uint(&mut out, known.len() as u64);
        for (id, peer) in known {
            write_var_uint(&mut out, id);
            write_var_uint(&mut out, peer.clock);
            let json = peer.state.as_deref().unwrap_or("null");
            write_var_uint(&mut out, json.len() as u64);
            out.extend_from_slice(json.as_bytes());
        }
        Some(out)
    }

    /// Drops the states of the given clients (those a closed connection announced) and returns the
    /// awareness update to broadcast so other editors see their cursors disappear: each client with
    /// its current clock and a `null` state, which y-protocols peers accept as a removal. Clients
    /// without a state are skipped; `None` if none had one.
    pub fn remove_clients(&mut self, ids: &[u64]) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut removed = Vec::new();
        for id in ids {
            if let Some(peer) = self.peers.get_mut(id) {
                if peer.state.take().is_some() {
                    peer.updated = now;
                    removed.push(*id);
                }
            }
        }
        self.awareness_update_for(&removed)
    }

    /// Drops the states of clients not heard from for `timeout` (y-protocols' clients renew theirs
    /// every 15 s and treat 30 s of silence as gone) and forgets removed clients' clocks after the
    /// same time. Returns the removal update to broadcast, as [`CollabDoc::remove_clients`] does.
    pub fn remove_outdated(&mut self, now: Instant, timeout: Duration) -> Option<Vec<u8>> {
        let outdated = |p: &Peer| now.saturating_duration_since(p.updated) >= timeout;
        self.peers.retain(|_, p| p.state.is_some() || !outdated(p));
        let stale: Vec<u64> =
            self.peers.iter().filter(|(_, p)| p.state.is_some() && outdated(p)).map(|(&id, _)| id).collect();
        self.remove_clients(&stale)
    }

    /// The clients that currently have an awareness state, ascending.
    pub fn awareness_clients(&self) -> Vec<u64> {
        self.peers.iter().filter(|(_, p)| p.state.is_some()).map(|(&id, _)| id).collect()
    }

    fn check_poisoned(&self) -> Result<(), DocError> {
        match &self.poisoned {
            Some(why) => Err(DocError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn poison(&mut self, panic: &(dyn std::any::Any + Send)) -> DocError {
        let why = panic_message(panic);
        self.poisoned = Some(why.clone());
        DocError::Poisoned(why)
    }

    /// Refuses an update of `incoming` bytes that would take the document past `max_len`. The
    /// estimate only over-counts; before refusing on it, the exact size is measured again, but only
    /// once enough unmeasured bytes have piled up for the difference to matter, which bounds the
    /// cost of re-encoding to once per `max_len / 64` bytes accepted.
    fn check_room(&self, incoming: usize) -> Result<(), DocError> {
        let fits = |len: usize| len.saturating_add(incoming) <= self.max_len;
        if fits(self.encoded_len()) {
            return Ok(());
        }
        if self.unmeasured_len.load(Ordering::Relaxed) >= self.max_len / 64 {
            self.snapshot();
            if fits(self.encoded_len()) {
                return Ok(());
            }
        }
        Err(DocError::TooLarge { size: self.encoded_len().saturating_add(incoming), max: self.max_len })
    }

    /// Makes room for `new_ids` more awareness entries: forgets removed clients' clocks if needed,
    /// and refuses the update if live states alone would exceed [`MAX_AWARENESS_CLIENTS`].
    fn make_room(&mut self, new_ids: usize) -> Result<(), DocError> {
        if self.peers.len() + new_ids <= MAX_AWARENESS_CLIENTS {
            return Ok(());
        }
        self.peers.retain(|_, p| p.state.is_some());
        let size = self.peers.len() + new_ids;
        if size > MAX_AWARENESS_CLIENTS {
            return Err(DocError::TooLarge { size, max: MAX_AWARENESS_CLIENTS });
        }
        Ok(())
    }
}

/// Decodes a v1 update, after checking its structure (see [`proto::check_update`]), and checks that
/// the decoded form encodes back to something decodable.
///
/// `yrs` decodes some corrupt updates into blocks whose re-encoding is itself corrupt; once such
/// blocks sit in the document (or among those waiting for predecessors), every later snapshot or
/// sync reply re-encodes them and fails. Decoding touches no document, so should it panic anyway,
/// that is just another malformed input.
fn decode_update(bytes: &[u8]) -> Result<Update, DocError> {
    proto::check_update(bytes).map_err(|e| DocError::BadUpdate(e.to_string()))?;
    let checked = catch_unwind(|| {
        let update = Update::decode_v1(bytes)?;
        Update::decode_v1(&update.encode_v1())?;
        Ok::<_, yrs::encoding::read::Error>(update)
    });
    match checked {
        Ok(Ok(update)) => Ok(update),
        Ok(Err(e)) => Err(DocError::BadUpdate(e.to_string())),
        Err(panic) => Err(DocError::BadUpdate(panic_message(&panic))),
    }
}

/// Labels an error in stored data with the part it came from.
fn stored_part_error(index: usize, has_snapshot: bool, e: DocError) -> DocError {
    let part = match (has_snapshot, index) {
        (true, 0) => "snapshot".to_owned(),
        (true, i) => format!("stored update {}", i - 1),
        (false, i) => format!("stored update {i}"),
    };
    DocError::BadUpdate(format!("{part}: {e}"))
}

/// What the document holds but cannot integrate yet: blocks waiting for their predecessors and
/// deletions of blocks it has not seen. Almost always `None`, so comparing it costs nothing.
fn pending<T: ReadTxn>(txn: &T) -> Option<(IdSet, StateVector, Option<IdSet>)> {
    if !txn.has_missing_updates() {
        return None;
    }
    let store = txn.store();
    let (blocks, missing) = match store.pending_update() {
        Some(p) => (p.update.insertions(true), p.missing.clone()),
        None => (IdSet::default(), StateVector::default()),
    };
    Some((blocks, missing, store.pending_ds().cloned()))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text =
        panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str));
    format!("yrs panicked: {}", text.unwrap_or("(no message)"))
}

/// One decoded awareness entry; `state` is `None` for a JSON `null`.
struct AwarenessEntry<'a> {
    client: u64,
    clock: u64,
    state: Option<&'a str>,
}

/// Decodes a y-protocols awareness update: `varUint` count, then per client `varUint` id, `varUint`
/// clock and `varString` JSON state. Every state must be valid JSON: clients `JSON.parse` what the
/// server forwards, and one bad state would make every receiver throw.
fn decode_awareness(update: &[u8]) -> Result<Vec<AwarenessEntry<'_>>, DocError> {
    let bad = |e: ProtoError| DocError::BadAwareness(e.to_string());
    let mut r = Reader { buf: update };
    let count = r.var_uint().map_err(bad)?;
    // Each entry takes at least 3 bytes, which bounds the allocation by the input's size.
    if count > (r.buf.len() / 3) as u64 {
        return Err(DocError::BadAwareness(format!("{count} entries cannot fit in {} bytes", r.buf.len())));
    }
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let client = r.var_uint().map_err(bad)?;
        let clock = r.var_uint().map_err(bad)?;
        let json = r.string().map_err(bad)?;
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| DocError::BadAwareness(format!("state of client {client}: {e}")))?;
        entries.push(AwarenessEntry { client, clock, state: (!value.is_null()).then_some(json) });
    }
    r.finish().map_err(bad)?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::sync::{Awareness, AwarenessUpdate};
    use yrs::{Text, TextRef};

    /// A peer as a JavaScript client would be: its own yrs document, indexing text in UTF-16.
    fn client(id: u64) -> (Doc, TextRef) {
        let options =
            Options { offset_kind: OffsetKind::Utf16, ..Options::with_client_id(yrs::ClientID::new(id)) };
        let doc = Doc::with_options(options);
        let text = doc.get_or_insert_text("quill");
        (doc, text)
    }

    /// Runs `edit` in one transaction on a client and returns the update it produced.
    fn edit(doc: &Doc, edit: impl FnOnce(&mut yrs::TransactionMut)) -> Vec<u8> {
        let mut txn = doc.transact_mut();
        edit(&mut txn);
        txn.encode_update_v1()
    }

    fn sv(doc: &Doc) -> Vec<u8> {
        doc.transact().state_vector().encode_v1()
    }

    fn apply(doc: &Doc, update: &[u8]) {
        doc.transact_mut().apply_update(Update::decode_v1(update).unwrap()).unwrap();
    }

    fn text_of(doc: &Doc, text: &TextRef) -> String {
        text.get_string(&doc.transact())
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn clients_converge_through_the_server() {
        let mut server = CollabDoc::new();
        let (a, ta) = client(1);
        let (b, tb) = client(2);

        let u1 = edit(&a, |txn| ta.insert(txn, 0, "hello world"));
        assert!(server.apply_update(&u1).unwrap());
        // B joins: sync step 1 with its state vector, the server answers with what B lacks.
        apply(&b, &server.diff_for(&sv(&b)).unwrap());
        assert_eq!(text_of(&b, &tb), "hello world");

        // Concurrent edits on both sides, relayed as incremental updates.
        let ua = edit(&a, |txn| ta.insert(txn, 5, ","));
        let ub = edit(&b, |txn| tb.push(txn, "!"));
        assert!(server.apply_update(&ub).unwrap());
        assert!(server.apply_update(&ua).unwrap());
        apply(&a, &server.diff_for(&sv(&a)).unwrap());
        apply(&b, &server.diff_for(&sv(&b)).unwrap());
        assert_eq!(text_of(&a, &ta), "hello, world!");
        assert_eq!(text_of(&b, &tb), "hello, world!");
        assert_eq!(server.text("quill"), "hello, world!");

        // The server's step 1 to A: A has nothing the server lacks.
        let server_sv = StateVector::decode_v1(&server.state_vector()).unwrap();
        assert_eq!(server_sv, a.transact().state_vector());
        assert_eq!(a.transact().encode_diff_v1(&server_sv), Update::EMPTY_V1);
    }

    #[test]
    fn known_updates_report_no_change() {
        let mut server = CollabDoc::new();
        let (a, ta) = client(1);
        let u1 = edit(&a, |txn| ta.insert(txn, 0, "abc"));
        let u2 = edit(&a, |txn| ta.remove_range(txn, 1, 1));
        assert!(server.apply_update(&u1).unwrap());
        assert!(server.apply_update(&u2).unwrap());
        let len = server.encoded_len();
        assert!(!server.apply_update(&u1).unwrap(), "insert already known");
        assert!(!server.apply_update(&u2).unwrap(), "deletion already applied");
        assert!(!server.apply_update(Update::EMPTY_V1).unwrap());
        assert_eq!(server.encoded_len(), len, "known updates do not count towards the size");
        assert_eq!(server.text("quill"), "ac");
    }

    #[test]
    fn out_of_order_updates_wait_and_count_as_new() {
        let mut server = CollabDoc::new();
        let (a, ta) = client(1);
        let u1 = edit(&a, |txn| ta.insert(txn, 0, "ab"));
        let u2 = edit(&a, |txn| ta.insert(txn, 2, "cd"));
        let u3 = edit(&a, |txn| ta.remove_range(txn, 0, 1));
        assert!(server.apply_update(&u3).unwrap(), "a deletion of unseen text is kept for later");
        assert!(server.apply_update(&u2).unwrap(), "blocks after a gap are kept for later");
        assert_eq!(server.text("quill"), "");
        assert!(!server.apply_update(&u2).unwrap(), "the same waiting blocks again bring nothing");
        // A client joining now still receives the waiting blocks, as from a Yjs server.
        let (b, tb) = client(2);
        apply(&b, &server.diff_for(&sv(&b)).unwrap());
        apply(&b, &u1);
        assert_eq!(text_of(&b, &tb), "bcd");
        assert!(server.apply_update(&u1).unwrap());
        assert_eq!(server.text("quill"), "bcd");
        assert_eq!(CollabDoc::load(Some(&server.snapshot()), &[]).unwrap().text("quill"), "bcd");
    }

    #[test]
    fn surrogate_pairs_survive_edits_around_them() {
        let mut server = CollabDoc::new();
        let (a, ta) = client(1);
        let (b, tb) = client(2);
        // Offsets are UTF-16 code units, as in Yjs and Quill: "😀" is two of them.
        let updates = [
            edit(&a, |txn| ta.insert(txn, 0, "ab😀cd")),
            edit(&a, |txn| ta.insert(txn, 4, "X")), // after the emoji
            edit(&a, |txn| ta.insert(txn, 2, "Y")), // right before it
            edit(&a, |txn| ta.remove_range(txn, 1, 1)), // "b"
            edit(&a, |txn| ta.insert(txn, 4, "😀")), // a second emoji right after the first
        ];
        for u in &updates {
            assert!(server.apply_update(u).unwrap());
        }
        assert_eq!(text_of(&a, &ta), "aY😀😀Xcd");
        assert_eq!(server.text("quill"), "aY😀😀Xcd");

        let delete_first_emoji = edit(&a, |txn| ta.remove_range(txn, 2, 2));
        assert!(server.apply_update(&delete_first_emoji).unwrap());
        assert_eq!(server.text("quill"), "aY😀Xcd");
        apply(&b, &server.diff_for(&sv(&b)).unwrap());
        assert_eq!(text_of(&b, &tb), "aY😀Xcd");
        assert_eq!(CollabDoc::load(Some(&server.snapshot()), &[]).unwrap().text("quill"), "aY😀Xcd");
    }

    #[test]
    fn load_rebuilds_the_live_document() {
        let mut live = CollabDoc::new();
        let (a, ta) = client(1);
        let (b, tb) = client(2);
        let mut log = Vec::new();
        let mut rng = Rng(7);
        for i in 0..200 {
            let (doc, text) = if i % 3 == 0 { (&b, &tb) } else { (&a, &ta) };
            let len = text.len(&doc.transact()) as usize;
            let u = if len > 0 && rng.below(4) == 0 {
                let at = rng.below(len) as u32;
                edit(doc, |txn| text.remove_range(txn, at, 1))
            } else {
                let at = rng.below(len + 1) as u32;
                edit(doc, |txn| text.insert(txn, at, if i % 10 == 0 { "é" } else { "x" }))
            };
            assert!(live.apply_update(&u).unwrap());
            apply(if i % 3 == 0 { &a } else { &b }, &u);
            log.push(u);
        }
        let (snapshot_at, tail) = log.split_at(120);
        let mut base = CollabDoc::new();
        for u in snapshot_at {
            base.apply_update(u).unwrap();
        }
        let tail: Vec<&[u8]> = tail.iter().map(Vec::as_slice).collect();
        let loaded = CollabDoc::load(Some(&base.snapshot()), &tail).unwrap();
        assert_eq!(loaded.text("quill"), live.text("quill"));
        assert_eq!(loaded.text("quill"), text_of(&a, &ta));
        assert_eq!(loaded.state_vector(), live.state_vector());

        let all: Vec<&[u8]> = log.iter().map(Vec::as_slice).collect();
        assert_eq!(CollabDoc::load(None, &all).unwrap().text("quill"), live.text("quill"));
        assert_eq!(CollabDoc::load(Some(&live.snapshot()), &all).unwrap().text("quill"), live.text("quill"));
        assert_eq!(CollabDoc::load(None, &[]).unwrap().text("quill"), "");
    }

    #[test]
    fn load_names_the_bad_stored_part() {
        let (a, ta) = client(1);
        let good = edit(&a, |txn| ta.insert(txn, 0, "hi"));
        let err = CollabDoc::load(Some(&good), &[&good, &[1, 2, 3]]).unwrap_err();
        assert!(matches!(&err, DocError::BadUpdate(m) if m.starts_with("stored update 1:")), "{err}");
        let err = CollabDoc::load(Some(&[9]), &[]).unwrap_err();
        assert!(matches!(&err, DocError::BadUpdate(m) if m.starts_with("snapshot:")), "{err}");
    }

    #[test]
    fn text_of_missing_root_is_empty() {
        let mut server = CollabDoc::new();
        assert_eq!(server.text("quill"), "");
        let (a, _) = client(1);
        let other = a.get_or_insert_text("notes");
        server.apply_update(&edit(&a, |txn| other.insert(txn, 0, "n"))).unwrap();
        assert_eq!(server.text("notes"), "n");
        assert_eq!(server.text("quill"), "");
    }

    /// A document with some history, and the updates that built it.
    fn seeded() -> (CollabDoc, Vec<Vec<u8>>) {
        let mut server = CollabDoc::new();
        let (a, ta) = client(1);
        let map = a.get_or_insert_map("meta");
        let mut updates = vec![
            edit(&a, |txn| ta.insert(txn, 0, "héllo 😀 world")),
            edit(&a, |txn| {
                use yrs::Map;
                map.insert(txn, "title", "doc");
            }),
            edit(&a, |txn| ta.remove_range(txn, 2, 3)),
        ];
        let (b, tb) = client(2);
        apply(&b, &updates[0]);
        updates.push(edit(&b, |txn| tb.insert(txn, 1, "B")));
        for u in &updates {
            server.apply_update(u).unwrap();
        }
        (server, updates)
    }

    #[test]
    fn stored_data_merges_into_a_document_that_has_part_of_it() {
        let (full, updates) = seeded();
        // A replica that saw the last update only (its predecessors pending), and an awareness state.
        let mut replica = CollabDoc::new();
        assert!(replica.apply_update(&updates[3]).unwrap());
        replica.apply_awareness(&awareness_update(&[(7, 1, "{}")])).unwrap();
        let snapshot = CollabDoc::load(None, &[&updates[0], &updates[1]]).unwrap().snapshot();
        let rest: Vec<&[u8]> = updates[2..].iter().map(Vec::as_slice).collect();
        assert!(replica.merge_stored(Some(&snapshot), &rest).unwrap());
        assert_eq!(replica.text("quill"), full.text("quill"));
        assert_eq!(replica.state_vector(), full.state_vector());
        assert_eq!(replica.awareness_clients(), [7], "awareness stays");
        assert!(!replica.merge_stored(Some(&snapshot), &rest).unwrap(), "nothing new the second time");
        assert!(replica.encoded_len() >= replica.snapshot().len());
        // Bad stored data is an error naming the part; what came before it stays.
        let err = replica.merge_stored(None, &[&updates[0], &[1, 2, 3]]).unwrap_err();
        assert!(err.to_string().contains("stored update 1"), "{err}");
        assert_eq!(replica.text("quill"), full.text("quill"));
    }

    #[test]
    fn garbage_updates_are_errors_and_change_nothing() {
        let (mut server, updates) = seeded();
        let before = (server.state_vector(), server.snapshot(), server.text("quill"));
        let mut rng = Rng(0xdead_beef);
        for _ in 0..5_000 {
            let len = rng.below(64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if let Err(e) = server.apply_update(&bytes) {
                assert!(matches!(e, DocError::BadUpdate(_)), "{e}");
            }
        }
        // Every strict prefix of a real update is malformed.
        for u in &updates {
            for cut in 0..u.len() {
                assert!(matches!(server.apply_update(&u[..cut]), Err(DocError::BadUpdate(_))), "cut {cut}");
            }
        }
        // A client id above 2^53 cannot come from Yjs.
        let huge_client =
            [1, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 4, 1, 1, b't', 1, b'a', 0];
        let _ = server.apply_update(&huge_client);
        assert!(!server.is_poisoned());
        assert_eq!((server.state_vector(), server.snapshot(), server.text("quill")), before);
    }

    #[test]
    fn corrupted_updates_never_break_the_document() {
        let (_, updates) = seeded();
        let mut rng = Rng(42);
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..3_000 {
            let mut server = CollabDoc::new();
            for u in &updates[..round % updates.len()] {
                server.apply_update(u).unwrap();
            }
            let mut bad = updates[rng.below(updates.len())].clone();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(bad.len());
                match rng.below(3) {
                    0 => bad[i] ^= 1 << rng.below(8),
                    1 => bad[i] = rng.next() as u8,
                    _ => bad.insert(i, rng.next() as u8),
                }
            }
            match server.apply_update(&bad) {
                Ok(_) => accepted += 1,
                Err(DocError::BadUpdate(_)) => refused += 1,
                Err(e) => panic!("unexpected {e} for {bad:?}"),
            }
            // Whatever was accepted must still encode, what it encodes must load, and the loaded
            // document must encode again. (Its text may differ from the live one's: an item whose
            // forged origins contradict each other lands wherever integration order puts it, as in
            // Yjs; see `apply_update`.)
            let reloaded =
                CollabDoc::load(Some(&server.snapshot()), &[]).expect("snapshot of an accepted update");
            CollabDoc::load(Some(&reloaded.snapshot()), &[]).expect("snapshot of a loaded snapshot");
            let full = server.diff_for(&[0]).unwrap();
            assert!(Update::decode_v1(&full).is_ok());
        }
        assert!(accepted > 0 && refused > 0, "accepted {accepted}, refused {refused}");
    }

    #[test]
    fn an_update_whose_parent_is_not_a_type_is_refused() {
        use yrs::{Map, TextPrelim};
        // Client 1 nests a text in a map; the item typed into it names its parent by id (1, 0).
        let (a, _) = client(1);
        let map = a.get_or_insert_map("m");
        let nested = edit(&a, |txn| {
            map.insert(txn, "t", TextPrelim::new(""));
        });
        let after_nested = a.transact().state_vector();
        let inner: TextRef = map.get(&a.transact(), "t").unwrap().cast().unwrap();
        edit(&a, |txn| inner.insert(txn, 0, "x"));
        let typed = a.transact().encode_diff_v1(&after_nested);

        // On the server, (1, 0) is a character forged under the same client id instead.
        let mut server = CollabDoc::new();
        let (forger, tf) = client(1);
        server.apply_update(&edit(&forger, |txn| tf.insert(txn, 0, "f"))).unwrap();
        let err = server.apply_update(&typed).unwrap_err();
        assert!(matches!(err, DocError::BadUpdate(_)), "{err}");
        assert_eq!(err.close_code(), 1007);
        assert!(!server.is_poisoned());
        assert_eq!(server.text("quill"), "f");
        // The genuine history is fine.
        let mut honest = CollabDoc::new();
        assert!(honest.apply_update(&nested).unwrap());
        assert!(honest.apply_update(&typed).unwrap());
    }

    #[test]
    fn bad_state_vectors_are_errors() {
        let (server, _) = seeded();
        assert!(matches!(server.diff_for(&[5]), Err(DocError::BadStateVector(_))));
        assert!(matches!(server.diff_for(&[]), Err(DocError::BadStateVector(_))));
        let huge_client = [1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 5];
        let _ = server.diff_for(&huge_client);
        let mut rng = Rng(3);
        for _ in 0..5_000 {
            let bytes: Vec<u8> = (0..rng.below(24)).map(|_| rng.next() as u8).collect();
            if let Err(e) = server.diff_for(&bytes) {
                assert!(matches!(e, DocError::BadStateVector(_)), "{e}");
            }
        }
        // An empty state vector asks for everything.
        let full = server.diff_for(&[0]).unwrap();
        assert_eq!(CollabDoc::load(Some(&full), &[]).unwrap().text("quill"), server.text("quill"));
    }

    #[test]
    fn the_size_bound_refuses_growth() {
        let (a, ta) = client(1);
        let first = edit(&a, |txn| ta.insert(txn, 0, &"x".repeat(100)));
        let second = edit(&a, |txn| ta.insert(txn, 0, &"y".repeat(100)));
        let mut server = CollabDoc::new().with_max_len(first.len() + 60);
        assert!(server.apply_update(&first).unwrap());
        let err = server.apply_update(&second).unwrap_err();
        assert!(matches!(err, DocError::TooLarge { max, .. } if max == first.len() + 60), "{err}");
        assert_eq!(err.close_code(), 1009);
        assert_eq!(server.text("quill").len(), 100);
        let exact = server.snapshot().len();
        assert_eq!(server.encoded_len(), exact);
        // Small edits still fit.
        assert!(server.apply_update(&edit(&a, |txn| ta.remove_range(txn, 0, 10))).unwrap());
    }

    #[test]
    fn the_size_estimate_never_undercounts() {
        let mut server = CollabDoc::new();
        let (a, ta) = client(1);
        for i in 0..300u32 {
            server.apply_update(&edit(&a, |txn| ta.insert(txn, i / 2, "ab"))).unwrap();
        }
        let estimate = server.encoded_len();
        let exact = server.snapshot().len();
        assert!(estimate >= exact, "{estimate} < {exact}");
        assert_eq!(server.encoded_len(), exact);
        let loaded = CollabDoc::load(Some(&server.snapshot()), &[]).unwrap();
        assert_eq!(loaded.encoded_len(), exact);
    }

    /// Encodes an awareness update by hand, as y-protocols does.
    fn awareness_update(entries: &[(u64, u64, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        write_var_uint(&mut out, entries.len() as u64);
        for (client, clock, json) in entries {
            write_var_uint(&mut out, *client);
            write_var_uint(&mut out, *clock);
            write_var_uint(&mut out, json.len() as u64);
            out.extend_from_slice(json.as_bytes());
        }
        out
    }

    fn yrs_awareness(id: u64) -> Awareness {
        Awareness::new(Doc::with_client_id(id))
    }

    #[test]
    fn awareness_from_yrs_clients_is_added_updated_and_removed() {
        let mut server = CollabDoc::new();
        let mut alice = yrs_awareness(11);
        alice.set_local_state(serde_json::json!({"user": {"name": "Alice"}, "cursor": null})).unwrap();
        let added = alice.update_with_clients([alice.client_id()]).unwrap().encode_v1();
        assert_eq!(server.apply_awareness(&added).unwrap(), [11]);
        assert_eq!(server.apply_awareness(&added).unwrap(), Vec::<u64>::new(), "same clock again");
        assert_eq!(server.awareness_clients(), [11]);

        alice
            .set_local_state(serde_json::json!({"user": {"name": "Alice"}, "cursor": {"index": 4}}))
            .unwrap();
        let updated = alice.update_with_clients([alice.client_id()]).unwrap().encode_v1();
        assert_eq!(server.apply_awareness(&updated).unwrap(), [11]);

        // A newly connected client receives everyone's state and sees Alice's cursor.
        let mut bob = yrs_awareness(22);
        let all = server.awareness_update_all().unwrap();
        bob.apply_update(AwarenessUpdate::decode_v1(&all).unwrap()).unwrap();
        let seen: serde_json::Value = bob.state(yrs::ClientID::new(11)).unwrap();
        assert_eq!(seen["cursor"]["index"], 4);

        // Alice's connection closes: the removal makes Bob drop her cursor.
        let removal = server.remove_clients(&[11, 99]).unwrap();
        assert!(server.awareness_update_all().is_none());
        let summary =
            bob.apply_update_summary(AwarenessUpdate::decode_v1(&removal).unwrap()).unwrap().unwrap();
        assert_eq!(summary.removed, [yrs::ClientID::new(11)]);
        assert!(bob.state::<serde_json::Value>(yrs::ClientID::new(11)).is_none());
        assert!(server.remove_clients(&[11]).is_none(), "already gone");

        // Alice leaving on her own (a null state with a newer clock) is a removal too.
        alice.set_local_state(serde_json::json!({"user": {"name": "Alice"}})).unwrap();
        let back = alice.update_with_clients([alice.client_id()]).unwrap().encode_v1();
        assert_eq!(server.apply_awareness(&back).unwrap(), [11]);
        alice.clean_local_state();
        let gone = alice.update_with_clients([alice.client_id()]).unwrap().encode_v1();
        assert_eq!(server.apply_awareness(&gone).unwrap(), [11]);
        assert!(server.awareness_clients().is_empty());
    }

    #[test]
    fn awareness_follows_y_protocols_clock_rules() {
        let mut server = CollabDoc::new();
        // y-protocols counts an unknown client as clock 0, so a first state at clock 0 is ignored.
        assert!(server.apply_awareness(&awareness_update(&[(5, 0, "{}")])).unwrap().is_empty());
        assert!(server.awareness_update_all().is_none());
        assert_eq!(server.apply_awareness(&awareness_update(&[(5, 1, r#"{"a":1}"#)])).unwrap(), [5]);
        // Older and equal clocks with a state are stale.
        assert!(server.apply_awareness(&awareness_update(&[(5, 1, r#"{"a":2}"#)])).unwrap().is_empty());
        // A newer clock with an identical state is a renewal, reported so that it gets broadcast.
        assert_eq!(server.apply_awareness(&awareness_update(&[(5, 2, r#"{"a":1}"#)])).unwrap(), [5]);
        // Equal clock with null removes (what remove_clients sends); the clock is remembered.
        assert_eq!(server.apply_awareness(&awareness_update(&[(5, 2, "null")])).unwrap(), [5]);
        assert!(server.apply_awareness(&awareness_update(&[(5, 2, r#"{"a":3}"#)])).unwrap().is_empty());
        assert_eq!(server.apply_awareness(&awareness_update(&[(5, 3, r#"{"a":3}"#)])).unwrap(), [5]);
        // Several clients in one update, reported in message order; a removal of an unknown client
        // changes nothing.
        let many = awareness_update(&[(9, 4, r#"{"n":9}"#), (5, 4, "null"), (7, 1, "null"), (6, 1, "\"x\"")]);
        assert_eq!(server.apply_awareness(&many).unwrap(), [9, 5, 6]);
        assert_eq!(server.awareness_clients(), [6, 9]);
        assert_eq!(
            server.awareness_update_all().unwrap(),
            awareness_update(&[(6, 1, "\"x\""), (9, 4, r#"{"n":9}"#)]),
            "states are sent on byte for byte, with their clocks"
        );
        assert_eq!(
            server.awareness_update_for(&[5, 6, 404]).unwrap(),
            awareness_update(&[(5, 4, "null"), (6, 1, "\"x\"")])
        );
        assert_eq!(server.remove_clients(&[9]).unwrap(), awareness_update(&[(9, 4, "null")]));
    }

    #[test]
    fn malformed_awareness_changes_nothing() {
        let mut server = CollabDoc::new();
        server.apply_awareness(&awareness_update(&[(1, 1, "{}")])).unwrap();
        let before = server.awareness_update_all();
        let bad_json = awareness_update(&[(2, 1, "{}"), (1, 5, "{\"a\":")]);
        assert!(matches!(server.apply_awareness(&bad_json), Err(DocError::BadAwareness(_))));
        let bad_utf8 = awareness_update(&[(1, 5, "\"\u{e9}\"")])
            .iter()
            .map(|&b| if b == 0xa9 { 0xff } else { b })
            .collect::<Vec<_>>();
        assert!(matches!(server.apply_awareness(&bad_utf8), Err(DocError::BadAwareness(_))));
        let good = awareness_update(&[(1, 5, r#"{"a":1}"#), (3, 2, "[1,2]")]);
        for cut in 0..good.len() {
            assert!(server.apply_awareness(&good[..cut]).is_err(), "cut {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(server.apply_awareness(&trailing).is_err());
        assert!(server.apply_awareness(&[0xff, 0xff, 0xff, 0x7a]).is_err(), "huge count, no entries");
        assert_eq!(server.awareness_update_all(), before);
        let mut rng = Rng(11);
        for _ in 0..5_000 {
            let bytes: Vec<u8> = (0..rng.below(20)).map(|_| rng.next() as u8).collect();
            let _ = server.apply_awareness(&bytes);
        }
    }

    #[test]
    fn outdated_awareness_expires() {
        let mut server = CollabDoc::new();
        server.apply_awareness(&awareness_update(&[(1, 1, "{}"), (2, 1, "{}")])).unwrap();
        server.remove_clients(&[2]);
        let now = Instant::now();
        assert!(server.remove_outdated(now, Duration::from_secs(30)).is_none());
        let later = now + Duration::from_secs(31);
        assert_eq!(
            server.remove_outdated(later, Duration::from_secs(30)).unwrap(),
            awareness_update(&[(1, 1, "null")])
        );
        assert!(server.awareness_clients().is_empty());
        // Forgotten clocks are gone too: client 2 may start over.
        assert!(server.remove_outdated(later + Duration::from_secs(31), Duration::from_secs(30)).is_none());
        assert_eq!(server.apply_awareness(&awareness_update(&[(2, 1, "{}")])).unwrap(), [2]);
    }

    #[test]
    fn the_awareness_table_is_bounded() {
        let mut server = CollabDoc::new();
        let entries: Vec<(u64, u64, &str)> =
            (1..=MAX_AWARENESS_CLIENTS as u64).map(|id| (id, 1, "{}")).collect();
        assert_eq!(server.apply_awareness(&awareness_update(&entries)).unwrap().len(), MAX_AWARENESS_CLIENTS);
        let err = server.apply_awareness(&awareness_update(&[(0, 1, "{}")])).unwrap_err();
        assert!(matches!(err, DocError::TooLarge { size, max } if size == max + 1), "{err}");
        // Removed clients' clocks make way for new clients.
        server.remove_clients(&[1, 2]);
        assert_eq!(server.apply_awareness(&awareness_update(&[(0, 1, "{}")])).unwrap(), [0]);
        assert_eq!(server.awareness_clients().len(), MAX_AWARENESS_CLIENTS - 1);
    }
}
