//! y-websocket messages on `/collab/<doc>`, applied to a document as its owner applies them.

use crate::topics::collab::doc::{CollabDoc, DocError};
use crate::topics::collab::proto::{self, Inbound};

/// Bound on the document under test: small, so that inputs reach it.
const MAX_DOC_LEN: usize = 64 << 10;

/// A sequence of client frames, each one length byte followed by that many bytes (a last frame may
/// be shorter), decoded and applied to one document in order.
///
/// Checks: every decoded message encodes back to one that decodes the same; the document is never
/// poisoned (no `yrs` panic while integrating input that passed the checks); after every accepted
/// update its snapshot reloads to the same state and text, and the sync reply to an empty state
/// vector rebuilds it in a fresh document (what a joining client does); what is accepted as
/// awareness is re-encoded so that another document accepts it with the same clients.
pub fn collab(data: &[u8]) {
    let mut doc = CollabDoc::new().with_max_len(MAX_DOC_LEN);
    let mut rest = data;
    while let [len, tail @ ..] = rest {
        let (frame, tail) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = tail;
        let Ok(msg) = proto::decode_limited(frame, MAX_DOC_LEN) else { continue };
        check_round_trip(&msg);
        match msg {
            Inbound::SyncStep1 { state_vector } => match doc.diff_for(state_vector) {
                Ok(diff) => {
                    proto::check_update(&diff).expect("a sync reply passes the update check");
                }
                Err(e) => assert!(matches!(e, DocError::BadStateVector(_)), "{e}"),
            },
            Inbound::SyncStep2 { update } | Inbound::Update { update } => match doc.apply_update(update) {
                Ok(true) => check_doc(&doc),
                Ok(false) => {}
                Err(e) => assert!(matches!(e, DocError::BadUpdate(_) | DocError::TooLarge { .. }), "{e}"),
            },
            Inbound::Awareness { update } => {
                if doc.apply_awareness(update).is_ok() {
                    check_awareness(&doc);
                }
            }
            Inbound::QueryAwareness | Inbound::Auth => {}
        }
        assert!(!doc.is_poisoned(), "document poisoned by {frame:?}");
    }
}

fn check_round_trip(msg: &Inbound<'_>) {
    let encoded = match *msg {
        Inbound::SyncStep1 { state_vector } => proto::sync_step1(state_vector),
        Inbound::SyncStep2 { update } => proto::sync_step2(update),
        Inbound::Update { update } => proto::update(update),
        Inbound::Awareness { update } => proto::awareness(update),
        Inbound::QueryAwareness | Inbound::Auth => return,
    };
    assert_eq!(proto::decode(&encoded).as_ref(), Ok(msg), "encode → decode round trip");
}

fn check_doc(doc: &CollabDoc) {
    let snapshot = doc.snapshot();
    let reloaded = CollabDoc::load(Some(&snapshot), &[]).expect("a snapshot reloads");
    assert_eq!(reloaded.state_vector(), doc.state_vector(), "reloaded state vector");
    assert_eq!(reloaded.text("quill"), doc.text("quill"), "reloaded text");
    let full = doc.diff_for(&[0]).expect("the diff for an empty state vector");
    let mut joiner = CollabDoc::new();
    joiner.apply_update(&full).expect("a fresh document takes the full diff");
    assert_eq!(joiner.state_vector(), doc.state_vector(), "a joining client's state vector");
    assert_eq!(joiner.text("quill"), doc.text("quill"), "a joining client's text");
}

fn check_awareness(doc: &CollabDoc) {
    let clients = doc.awareness_clients();
    let Some(all) = doc.awareness_update_all() else {
        assert!(clients.is_empty(), "clients with a state but no update for them");
        return;
    };
    let mut other = CollabDoc::new();
    other.apply_awareness(&all).expect("re-encoded awareness is accepted");
    assert_eq!(other.awareness_clients(), clients, "the same clients arrive");
}
