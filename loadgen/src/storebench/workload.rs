//! What the storage benchmark writes: chat messages, Yjs updates and geofence event logs, as the
//! server's workers would submit them.
//!
//! Each submitter owns its own rooms, documents and objects (item `j` belongs to submitter
//! `j % submitters`), the way a topic belongs to one owner worker, so every (room, seq) and
//! (doc, seq) it writes is new and increasing. Names carry a per-run prefix, so runs against a
//! database that already holds earlier runs never collide.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rusher_server::store::{ChatMessage, GeoEvent, GeoLog, GeoLogKind, LogEntry, StoreRequest};

use crate::geo::walk::Rng;

/// The request tag carries the time a request was meant to go out (nanoseconds since the phase
/// started) in its low 63 bits and, in the top bit, whether it is one of the large Yjs updates, so
/// the storage thread hands back everything needed to record its latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// Nanoseconds from the phase's start to the intended send time.
    pub ns: u64,
    /// A large Yjs update, recorded apart from the small ones.
    pub large: bool,
}

const LARGE_BIT: u64 = 1 << 63;

impl Tag {
    /// The tag as the `u64` a [`StoreRequest`] carries. `ns` is cut to 63 bits: 292 years.
    pub fn encode(self) -> u64 {
        (self.ns & !LARGE_BIT) | if self.large { LARGE_BIT } else { 0 }
    }

    /// The tag a result came back with.
    pub fn decode(tag: u64) -> Tag {
        Tag { ns: tag & !LARGE_BIT, large: tag & LARGE_BIT != 0 }
    }
}

/// A stream of write requests from one submitter.
pub trait Workload: Send {
    /// The next request, tagged with `ns` (see [`Tag`]).
    fn next(&mut self, ns: u64) -> StoreRequest;
}

/// Sizes and counts of the generated data.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Prefix of every room, document and tenant name of this run.
    pub prefix: String,
    /// Chat rooms over all submitters.
    pub rooms: u64,
    /// Chat body length in bytes.
    pub body_bytes: RangeInclusive<usize>,
    /// Collaborative documents over all submitters.
    pub docs: u64,
    /// Size of the usual Yjs update (a few typed characters with their ids).
    pub update_bytes: RangeInclusive<usize>,
    /// Size of a large Yjs update (a paste).
    pub large_bytes: RangeInclusive<usize>,
    /// One Yjs update in this many is large; 0 for none.
    pub large_every: u64,
    /// Moving objects over all submitters, each crossing one fence in and out.
    pub objects: u64,
    /// Seed of the generated content.
    pub seed: u64,
}

impl Shape {
    /// A prefix no earlier run used: the wall clock in microseconds and the process id.
    pub fn fresh_prefix() -> String {
        let us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
        format!("bench-{us:x}-{}", std::process::id())
    }

    /// The name of chat room `j`.
    pub fn room(&self, j: u64) -> String {
        format!("{}-r{j}", self.prefix)
    }

    /// The room the history reads page through (filled by the benchmark, never by the chat phases).
    pub fn history_room(&self) -> String {
        format!("{}-history", self.prefix)
    }
}

/// Items `j` in `0..total` that submitter `me` of `of` owns.
fn owned(total: u64, me: usize, of: usize) -> impl Iterator<Item = u64> {
    (me as u64..total).step_by(of.max(1))
}

fn pick<'a, T>(items: &'a mut [T], rng: &mut Rng) -> &'a mut T {
    let i = (rng.next_u64() % items.len() as u64) as usize;
    &mut items[i]
}

fn len_in(range: &RangeInclusive<usize>, rng: &mut Rng) -> usize {
    let span = (range.end() - range.start()) as u64 + 1;
    range.start() + (rng.next_u64() % span) as usize
}

/// Printable text of `len` bytes, like a chat message.
fn text(len: usize, rng: &mut Rng) -> Box<str> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz      ABCDEFGHIJ.,!?0123456789";
    (0..len).map(|_| ALPHABET[(rng.next_u64() % ALPHABET.len() as u64) as usize] as char).collect()
}

fn bytes(len: usize, rng: &mut Rng) -> Box<[u8]> {
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Chat messages to the submitter's rooms, each with the room's next seq.
#[derive(Debug)]
pub struct Chat {
    /// (room, last seq written).
    rooms: Vec<(Arc<str>, u64)>,
    user: Arc<str>,
    body_bytes: RangeInclusive<usize>,
    /// Unique over submitters: the submitter index in the high bits.
    next_id: u64,
    rng: Rng,
}

impl Chat {
    /// Submitter `me` of `of`. Panics if the submitter owns no room (`rooms < of`), which the
    /// benchmark's flag checks rule out.
    pub fn new(shape: &Shape, me: usize, of: usize) -> Chat {
        let rooms: Vec<(Arc<str>, u64)> =
            owned(shape.rooms, me, of).map(|j| (Arc::from(shape.room(j)), 0)).collect();
        assert!(!rooms.is_empty(), "submitter {me} of {of} owns no room of {}", shape.rooms);
        Chat::with_rooms(rooms, shape, me)
    }

    /// Writes only to `room`, from seq 1: the history room.
    pub fn single(room: &str, shape: &Shape, me: usize) -> Chat {
        Chat::with_rooms(vec![(Arc::from(room), 0)], shape, me)
    }

    fn with_rooms(rooms: Vec<(Arc<str>, u64)>, shape: &Shape, me: usize) -> Chat {
        Chat {
            rooms,
            user: Arc::from(format!("bench-user-{me}")),
            body_bytes: shape.body_bytes.clone(),
            next_id: (me as u64 + 1) << 40,
            rng: Rng::new(shape.seed, 1, me as u64),
        }
    }

    /// Rooms written so far with their highest seq.
    pub fn heads(&self) -> impl Iterator<Item = (&Arc<str>, u64)> {
        self.rooms.iter().filter(|(_, seq)| *seq > 0).map(|(room, seq)| (room, *seq))
    }
}

impl Workload for Chat {
    fn next(&mut self, ns: u64) -> StoreRequest {
        let (room, seq) = pick(&mut self.rooms, &mut self.rng);
        *seq += 1;
        self.next_id += 1;
        let len = len_in(&self.body_bytes, &mut self.rng);
        let msg = ChatMessage {
            room: Arc::clone(room),
            seq: *seq,
            id: self.next_id,
            user: Arc::clone(&self.user),
            body: text(len, &mut self.rng),
            ts_ms: now_ms(),
        };
        StoreRequest::Append { msg, tag: Tag { ns, large: false }.encode() }
    }
}

/// Yjs updates to the submitter's documents, each with the document's next seq; one in
/// `large_every` is large.
#[derive(Debug)]
pub struct Yjs {
    docs: Vec<(Arc<str>, u64)>,
    update_bytes: RangeInclusive<usize>,
    large_bytes: RangeInclusive<usize>,
    large_every: u64,
    count: u64,
    rng: Rng,
}

impl Yjs {
    /// Submitter `me` of `of`; panics if it owns no document (`docs < of`).
    pub fn new(shape: &Shape, me: usize, of: usize) -> Yjs {
        let docs: Vec<(Arc<str>, u64)> =
            owned(shape.docs, me, of).map(|j| (Arc::from(format!("{}-d{j}", shape.prefix)), 0)).collect();
        assert!(!docs.is_empty(), "submitter {me} of {of} owns no document of {}", shape.docs);
        Yjs {
            docs,
            update_bytes: shape.update_bytes.clone(),
            large_bytes: shape.large_bytes.clone(),
            large_every: shape.large_every,
            // Submitters start at different points of the cycle so large updates do not coincide.
            count: me as u64 * 7919,
            rng: Rng::new(shape.seed, 2, me as u64),
        }
    }
}

impl Workload for Yjs {
    fn next(&mut self, ns: u64) -> StoreRequest {
        self.count += 1;
        let large = self.large_every > 0 && self.count.is_multiple_of(self.large_every);
        let (doc, seq) = pick(&mut self.docs, &mut self.rng);
        *seq += 1;
        let range = if large { &self.large_bytes } else { &self.update_bytes };
        let len = len_in(range, &mut self.rng);
        let entry = LogEntry { stream: Arc::clone(doc), seq: *seq, data: bytes(len, &mut self.rng) };
        StoreRequest::LogAppend { entry, tag: Tag { ns, large }.encode() }
    }
}

/// Geofence event logs: each request is one location update's event, an object entering or
/// leaving its fence in turn (so the inside table gets inserts and deletes, as in real use).
#[derive(Debug)]
pub struct Geo {
    tenant: Arc<str>,
    /// (object, its fence, inside now).
    objects: Vec<(Arc<str>, Arc<str>, bool)>,
    rng: Rng,
}

/// Fences the objects cross, per tenant.
const FENCES: u64 = 100;

impl Geo {
    /// Submitter `me` of `of`, with a tenant of its own; panics if it owns no object.
    pub fn new(shape: &Shape, me: usize, of: usize) -> Geo {
        let objects: Vec<(Arc<str>, Arc<str>, bool)> = owned(shape.objects, me, of)
            .map(|j| (Arc::from(format!("obj-{j}")), Arc::from(format!("f-{}", j % FENCES)), false))
            .collect();
        assert!(!objects.is_empty(), "submitter {me} of {of} owns no object of {}", shape.objects);
        Geo {
            tenant: Arc::from(format!("{}-t{me}", shape.prefix)),
            objects,
            rng: Rng::new(shape.seed, 3, me as u64),
        }
    }
}

impl Workload for Geo {
    fn next(&mut self, ns: u64) -> StoreRequest {
        let (object, fence, inside) = pick(&mut self.objects, &mut self.rng);
        *inside = !*inside;
        let now = now_ms();
        let event = GeoEvent {
            fence: Arc::clone(fence),
            object: Arc::clone(object),
            kind: if *inside { GeoLogKind::Enter } else { GeoLogKind::Exit },
            lat: self.rng.range(48.5, 49.5),
            lon: self.rng.range(2.0, 3.0),
            ts: now as f64,
            at_ms: now,
        };
        let log = GeoLog { tenant: Arc::clone(&self.tenant), events: vec![event] };
        StoreRequest::GeoLog { log, tag: Tag { ns, large: false }.encode() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            prefix: "p".into(),
            rooms: 5,
            body_bytes: 20..=200,
            docs: 4,
            update_bytes: 20..=200,
            large_bytes: 4096..=8192,
            large_every: 10,
            objects: 6,
            seed: 7,
        }
    }

    #[test]
    fn tags_round_trip() {
        for tag in [Tag { ns: 0, large: false }, Tag { ns: 123_456_789, large: true }] {
            assert_eq!(Tag::decode(tag.encode()), tag);
        }
    }

    #[test]
    fn rooms_are_split_between_submitters_and_seqs_increase() {
        let s = shape();
        let mut a = Chat::new(&s, 0, 2);
        let b = Chat::new(&s, 1, 2);
        let names = |c: &Chat| c.rooms.iter().map(|(r, _)| r.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&a), ["p-r0", "p-r2", "p-r4"]);
        assert_eq!(names(&b), ["p-r1", "p-r3"]);
        let mut last = std::collections::HashMap::new();
        for i in 0..300 {
            let StoreRequest::Append { msg, tag } = a.next(i) else { panic!("not an append") };
            assert_eq!(Tag::decode(tag), Tag { ns: i, large: false });
            assert!((20..=200).contains(&msg.body.len()), "{}", msg.body.len());
            let prev = last.insert(msg.room.to_string(), msg.seq).unwrap_or(0);
            assert_eq!(msg.seq, prev + 1, "seqs of a room follow each other");
        }
        assert_eq!(a.heads().map(|(_, seq)| seq).sum::<u64>(), 300);
    }

    #[test]
    fn one_yjs_update_in_large_every_is_large() {
        let s = shape();
        let mut y = Yjs::new(&s, 0, 1);
        let mut large = 0;
        for i in 0..100 {
            let StoreRequest::LogAppend { entry, tag } = y.next(i) else { panic!("not a collab append") };
            let t = Tag::decode(tag);
            let range = if t.large { 4096..=8192 } else { 20..=200 };
            assert!(range.contains(&entry.data.len()), "{}", entry.data.len());
            large += u32::from(t.large);
        }
        assert_eq!(large, 10);
    }

    #[test]
    fn objects_enter_and_leave_in_turn() {
        let s = Shape { objects: 1, ..shape() };
        let mut g = Geo::new(&s, 0, 1);
        let kinds: Vec<GeoLogKind> = (0..4)
            .map(|i| match g.next(i) {
                StoreRequest::GeoLog { log, .. } => log.events[0].kind,
                _ => panic!("not a geo log"),
            })
            .collect();
        assert_eq!(kinds, [GeoLogKind::Enter, GeoLogKind::Exit, GeoLogKind::Enter, GeoLogKind::Exit]);
    }
}
