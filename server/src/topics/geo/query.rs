//! Live queries, as GeoFire's `GeoQuery`: a connection's circle that reports the objects entering it,
//! moving inside it and leaving it. The circle can be moved or resized; what changes then is reported
//! the same way. Queries are not stored: they live as long as the connection's channel.

use std::collections::HashMap;

use super::detect::{self, LatLon};
use super::index::{FastSet, ObjectGrid};

/// Index of a query in its tenant, or of an object.
pub type Ix = u32;

/// What happened to an object in a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Entered,
    Moved,
    Exited,
}

impl QueryKind {
    /// The event name on the wire.
    pub fn event(self) -> &'static str {
        match self {
            QueryKind::Entered => "key_entered",
            QueryKind::Moved => "key_moved",
            QueryKind::Exited => "key_exited",
        }
    }
}

/// One query event: `object` at distance `dist` (metres) from the query's centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryEvent {
    pub query: Ix,
    pub object: Ix,
    pub kind: QueryKind,
    pub dist: f64,
}

#[derive(Debug)]
struct Query {
    center: LatLon,
    radius_m: f64,
    inside: FastSet<Ix>,
}

/// Every live query of a tenant, with a grid of their centres.
#[derive(Debug)]
pub struct Queries {
    slots: Vec<Option<Query>>,
    free: Vec<Ix>,
    centres: ObjectGrid,
    max_radius_m: f64,
    /// The queries each object is inside, for objects inside any.
    of_object: HashMap<Ix, Vec<Ix>>,
    near: Vec<(u32, f64)>,
}

impl Queries {
    pub fn new(cell_deg: f64) -> Self {
        Queries {
            slots: Vec::new(),
            free: Vec::new(),
            centres: ObjectGrid::new(cell_deg),
            max_radius_m: 0.0,
            of_object: HashMap::new(),
            near: Vec::new(),
        }
    }

    /// Live queries.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates a query (`q: None`) or moves and resizes one. `objects` holds every object's position;
    /// `position(o)` reads one. For a moved query, objects that entered or left go to `out`. Returns the
    /// query and the objects inside it now, nearest first.
    pub fn put(
        &mut self,
        q: Option<Ix>,
        center: LatLon,
        radius_m: f64,
        objects: &ObjectGrid,
        out: &mut Vec<QueryEvent>,
    ) -> (Ix, Vec<(Ix, f64)>) {
        let mut now = Vec::new();
        objects.nearby(center.lon, center.lat, radius_m, usize::MAX, &mut now);
        let q = match q.filter(|&q| self.slots.get(q as usize).is_some_and(Option::is_some)) {
            Some(q) => {
                let query = self.slots[q as usize].as_mut().expect("checked");
                query.center = center;
                query.radius_m = radius_m;
                let stays: FastSet<Ix> = now.iter().map(|&(o, _)| o).collect();
                let gone: Vec<Ix> = query.inside.iter().copied().filter(|o| !stays.contains(o)).collect();
                for o in gone {
                    let dist = objects
                        .position(o)
                        .map_or(f64::INFINITY, |(lon, lat)| detect::haversine_m(center, LatLon { lat, lon }));
                    self.leave(q, o);
                    out.push(QueryEvent { query: q, object: o, kind: QueryKind::Exited, dist });
                }
                for &(o, dist) in &now {
                    if self.join(q, o) {
                        out.push(QueryEvent { query: q, object: o, kind: QueryKind::Entered, dist });
                    }
                }
                q
            }
            None => {
                let query = Query { center, radius_m, inside: FastSet::default() };
                let q = match self.free.pop() {
                    Some(q) => {
                        self.slots[q as usize] = Some(query);
                        q
                    }
                    None => {
                        self.slots.push(Some(query));
                        (self.slots.len() - 1) as Ix
                    }
                };
                for &(o, _) in &now {
                    self.join(q, o);
                }
                q
            }
        };
        self.centres.upsert(q, center.lon, center.lat);
        self.max_radius_m = self.max_radius_m.max(radius_m);
        (q, now)
    }

    /// Ends a query.
    pub fn remove(&mut self, q: Ix) {
        let Some(query) = self.slots.get_mut(q as usize).and_then(Option::take) else { return };
        for o in query.inside {
            self.unlink(q, o);
        }
        self.centres.remove(q);
        self.free.push(q);
        if self.is_empty() {
            self.max_radius_m = 0.0;
        }
    }

    /// Object `o` moved to `pos`: what it means for every query near it or holding it.
    pub fn moved(&mut self, o: Ix, pos: LatLon, out: &mut Vec<QueryEvent>) {
        if self.is_empty() {
            return;
        }
        let mut near = std::mem::take(&mut self.near);
        near.clear();
        self.centres.nearby(pos.lon, pos.lat, self.max_radius_m, usize::MAX, &mut near);
        let mut cand: Vec<Ix> = near.iter().map(|&(q, _)| q).collect();
        self.near = near;
        if let Some(holding) = self.of_object.get(&o) {
            cand.extend(holding.iter().copied());
            cand.sort_unstable();
            cand.dedup();
        }
        for q in cand {
            let Some(query) = self.slots[q as usize].as_ref() else { continue };
            let dist = detect::haversine_m(query.center, pos);
            let (was, now) = (query.inside.contains(&o), dist <= query.radius_m);
            let kind = match (was, now) {
                (false, true) => {
                    self.join(q, o);
                    QueryKind::Entered
                }
                (true, true) => QueryKind::Moved,
                (true, false) => {
                    self.leave(q, o);
                    QueryKind::Exited
                }
                (false, false) => continue,
            };
            out.push(QueryEvent { query: q, object: o, kind, dist });
        }
    }

    /// Adds `o` to query `q`; false if it was there.
    fn join(&mut self, q: Ix, o: Ix) -> bool {
        let query = self.slots[q as usize].as_mut().expect("live query");
        if !query.inside.insert(o) {
            return false;
        }
        self.of_object.entry(o).or_default().push(q);
        true
    }

    fn leave(&mut self, q: Ix, o: Ix) {
        if let Some(query) = self.slots[q as usize].as_mut() {
            query.inside.remove(&o);
        }
        self.unlink(q, o);
    }

    fn unlink(&mut self, q: Ix, o: Ix) {
        if let Some(list) = self.of_object.get_mut(&o) {
            list.retain(|&x| x != q);
            if list.is_empty() {
                self.of_object.remove(&o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon).unwrap()
    }

    #[test]
    fn objects_enter_move_and_leave_a_query_and_moving_it_reports_the_difference() {
        let mut objects = ObjectGrid::new(0.01);
        let mut qs = Queries::new(0.01);
        objects.upsert(1, 2.0, 48.0);
        objects.upsert(2, 2.5, 48.0);
        let mut out = Vec::new();
        let (q, inside) = qs.put(None, at(48.0, 2.0), 1000.0, &objects, &mut out);
        assert_eq!(inside.iter().map(|&(o, _)| o).collect::<Vec<_>>(), [1]);
        assert!(out.is_empty(), "a new query lists what is inside in its reply");
        let kinds = |qs: &mut Queries, o, lat, lon| {
            let mut out = Vec::new();
            qs.moved(o, at(lat, lon), &mut out);
            out.iter().map(|e| (e.query, e.object, e.kind)).collect::<Vec<_>>()
        };
        assert_eq!(kinds(&mut qs, 1, 48.001, 2.0), [(q, 1, QueryKind::Moved)]);
        assert_eq!(kinds(&mut qs, 1, 48.5, 2.0), [(q, 1, QueryKind::Exited)]);
        assert_eq!(kinds(&mut qs, 1, 48.6, 2.0), []);
        assert_eq!(kinds(&mut qs, 2, 48.0, 2.005), [(q, 2, QueryKind::Entered)]);
        objects.upsert(1, 2.0, 48.6);
        objects.upsert(2, 2.005, 48.0);
        // Moved onto object 1, away from object 2.
        let (_, inside) = qs.put(Some(q), at(48.6, 2.0), 500.0, &objects, &mut out);
        assert_eq!(inside.iter().map(|&(o, _)| o).collect::<Vec<_>>(), [1]);
        let mut got: Vec<_> = out.iter().map(|e| (e.object, e.kind)).collect();
        got.sort_by_key(|&(o, _)| o);
        assert_eq!(got, [(1, QueryKind::Entered), (2, QueryKind::Exited)]);
        qs.remove(q);
        assert!(qs.is_empty());
        assert_eq!(kinds(&mut qs, 1, 48.6, 2.0), []);
        assert!(qs.of_object.is_empty(), "a removed query leaves nothing behind");
    }
}
