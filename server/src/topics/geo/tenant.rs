//! One geofencing tenant's state and its detection: objects with their last positions, fences in an
//! R-tree, roaming fences in a grid of their centres, which object is inside which fence since when, and
//! the dwell timers. No I/O: every operation appends what fired to a caller's buffer.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::detect::{self, Event, LatLon, Shape};
use super::fence::{kinds, Area, FenceDef};
use super::index::{FastSet, FenceIndex, ObjectGrid};
use super::query::{Queries, QueryEvent};
use crate::store::{GeoInside, GeoPosition, GeoState};

/// Index of an object or a fence in its tenant.
pub type Ix = u32;

/// Grid cell size for objects and roaming centres, in degrees (about 1 km at the equator).
pub(crate) const CELL_DEG: f64 = 0.01;

/// One position report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    pub pos: LatLon,
    /// Milliseconds since the Unix epoch.
    pub ts: f64,
    /// Metres per second and degrees: single precision is plenty, and every position of an object's
    /// history is 16 bytes smaller for it.
    pub speed: Option<f32>,
    pub heading: Option<f32>,
}

/// An object's properties: the JSON as given, and parsed for `watch: {"props": ...}`.
#[derive(Debug)]
pub struct Props {
    pub raw: Arc<str>,
    pub map: Map<String, Value>,
}

impl Props {
    /// Parses a JSON object.
    pub fn parse(raw: &str) -> Option<Arc<Props>> {
        match serde_json::from_str(raw) {
            Ok(Value::Object(map)) => Some(Arc::new(Props { raw: raw.into(), map })),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Inside {
    fence: Ix,
    since_ms: u64,
    dwelled: bool,
}

/// A tracked object.
#[derive(Debug)]
pub struct Obj {
    pub name: Arc<str>,
    pub fix: Fix,
    pub props: Option<Arc<Props>>,
    inside: Vec<Inside>,
    pub history: VecDeque<Fix>,
    dirty: bool,
}

#[derive(Debug)]
struct FenceSlot {
    def: FenceDef,
    insiders: FastSet<Ix>,
}

/// A dwell timer: `(due_ms, object, fence, fence gen, since_ms)`.
type Timer = (u64, Ix, Ix, u32, u64);

/// An event that fired.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fired {
    pub fence: Ix,
    pub object: Ix,
    pub event: Kind,
    pub pos: LatLon,
    pub ts: f64,
    /// For roaming fences: the centre object and the distance to it in metres.
    pub near: Option<(Ix, f64)>,
}

/// What fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Enter,
    Exit,
    Inside,
    Outside,
    Cross,
    Dwell,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Enter => "enter",
            Kind::Exit => "exit",
            Kind::Inside => "inside",
            Kind::Outside => "outside",
            Kind::Cross => "cross",
            Kind::Dwell => "dwell",
        }
    }
    fn bit(self) -> u8 {
        match self {
            Kind::Enter => kinds::ENTER,
            Kind::Exit => kinds::EXIT,
            Kind::Inside => kinds::INSIDE,
            Kind::Outside => kinds::OUTSIDE,
            Kind::Cross => kinds::CROSS,
            Kind::Dwell => kinds::DWELL,
        }
    }
    fn of(e: Event) -> Kind {
        match e {
            Event::Enter => Kind::Enter,
            Event::Exit => Kind::Exit,
            Event::Inside => Kind::Inside,
            Event::Outside => Kind::Outside,
            Event::Cross => Kind::Cross,
        }
    }
}

/// How a location update went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Located {
    Applied,
    /// Older than the object's last update: ignored.
    OutOfOrder,
    /// A new object beyond the tenant's bound.
    TooManyObjects,
}

/// A tenant's state.
#[derive(Debug)]
pub struct Tenant {
    objects: Vec<Obj>,
    by_name: HashMap<Arc<str>, Ix>,
    grid: ObjectGrid,
    fences: Vec<Option<FenceSlot>>,
    /// Per fence slot, bumped on every change, so a dwell timer of an earlier version (or of a deleted
    /// fence whose slot was reused) is recognised as stale.
    gens: Vec<u32>,
    free_fences: Vec<Ix>,
    fence_by_id: BTreeMap<Arc<str>, Ix>,
    index: FenceIndex,
    roam_grid: ObjectGrid,
    roam_by_center: HashMap<Arc<str>, Vec<Ix>>,
    max_roam_m: f64,
    dwell: BinaryHeap<Reverse<Timer>>,
    /// Pairs inside a dwell fence whose dwell has not fired: the timers that matter. An estimate after
    /// fences change their dwell settings (it only decides when to rebuild the heap, which recounts it).
    dwell_live: usize,
    dirty: Vec<Ix>,
    history: usize,
    scratch: Vec<u32>,
    near: Vec<(u32, f64)>,
    queries: Queries,
    /// What live queries saw in the last operation; the caller takes them.
    pub query_events: Vec<QueryEvent>,
}

impl Tenant {
    /// An empty tenant keeping `history` positions per object.
    pub fn new(history: usize) -> Self {
        Tenant {
            objects: Vec::new(),
            by_name: HashMap::new(),
            grid: ObjectGrid::new(CELL_DEG),
            fences: Vec::new(),
            gens: Vec::new(),
            free_fences: Vec::new(),
            fence_by_id: BTreeMap::new(),
            index: FenceIndex::new(),
            roam_grid: ObjectGrid::new(CELL_DEG),
            roam_by_center: HashMap::new(),
            max_roam_m: 0.0,
            dwell: BinaryHeap::new(),
            dwell_live: 0,
            dirty: Vec::new(),
            history,
            scratch: Vec::new(),
            near: Vec::new(),
            queries: Queries::new(CELL_DEG),
            query_events: Vec::new(),
        }
    }

    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    pub fn fence_count(&self) -> usize {
        self.fence_by_id.len()
    }

    pub fn object(&self, ix: Ix) -> &Obj {
        &self.objects[ix as usize]
    }

    pub fn object_ix(&self, name: &str) -> Option<Ix> {
        self.by_name.get(name).copied()
    }

    pub fn fence_ix(&self, id: &str) -> Option<Ix> {
        self.fence_by_id.get(id).copied()
    }

    /// A live fence's definition.
    pub fn fence(&self, ix: Ix) -> &FenceDef {
        &self.slot(ix).def
    }

    fn slot(&self, ix: Ix) -> &FenceSlot {
        self.fences[ix as usize].as_ref().expect("live fence index")
    }

    /// Fence definitions with ids after `after`, in id order: at most `limit`, and whether more follow.
    pub fn fences_after(&self, after: Option<&str>, limit: usize) -> (Vec<&FenceDef>, bool) {
        use std::ops::Bound::{Excluded, Unbounded};
        let range = match after {
            Some(a) => self.fence_by_id.range::<str, _>((Excluded(a), Unbounded)),
            None => self.fence_by_id.range::<str, _>((Unbounded, Unbounded)),
        };
        let mut out: Vec<&FenceDef> = range.take(limit + 1).map(|(_, &ix)| self.fence(ix)).collect();
        let more = out.len() > limit;
        out.truncate(limit);
        (out, more)
    }

    /// Ids of the fences object `ix` is inside.
    pub fn inside_of(&self, ix: Ix) -> Vec<&Arc<str>> {
        self.objects[ix as usize].inside.iter().map(|i| &self.slot(i.fence).def.id).collect()
    }

    // ---- location updates ----

    /// Applies a position report of object `name`; events go to `out`.
    #[allow(clippy::too_many_arguments)] // The parts of one update; a struct would be built once, here.
    pub fn locate(
        &mut self,
        name: &str,
        fix: Fix,
        props: Option<Arc<Props>>,
        max_objects: usize,
        now_ms: u64,
        out: &mut Vec<Fired>,
    ) -> Located {
        let (ix, prev) = match self.by_name.get(name) {
            Some(&ix) => {
                let o = &mut self.objects[ix as usize];
                if fix.ts < o.fix.ts {
                    return Located::OutOfOrder;
                }
                let prev = o.fix.pos;
                o.fix = fix;
                if props.is_some() {
                    o.props = props;
                }
                (ix, Some(prev))
            }
            None => {
                if self.objects.len() >= max_objects {
                    return Located::TooManyObjects;
                }
                let ix = self.add_object(name.into(), fix, props);
                (ix, None)
            }
        };
        let o = &mut self.objects[ix as usize];
        if self.history > 0 {
            if o.history.len() == self.history {
                o.history.pop_front();
            }
            o.history.push_back(fix);
        }
        if !o.dirty {
            o.dirty = true;
            self.dirty.push(ix);
        }
        self.grid.upsert(ix, fix.pos.lon, fix.pos.lat);
        self.detect_fixed(ix, prev, now_ms, out);
        self.detect_roaming(ix, now_ms, out);
        self.move_centre(ix, now_ms, out);
        self.queries.moved(ix, fix.pos, &mut self.query_events);
        Located::Applied
    }

    fn add_object(&mut self, name: Arc<str>, fix: Fix, props: Option<Arc<Props>>) -> Ix {
        let ix = self.objects.len() as Ix;
        self.objects.push(Obj {
            name: name.clone(),
            fix,
            props,
            inside: Vec::new(),
            history: VecDeque::new(),
            dirty: false,
        });
        self.by_name.insert(name, ix);
        ix
    }

    /// Fixed fences: candidates from the R-tree along the move, plus the fences the object was inside.
    fn detect_fixed(&mut self, ix: Ix, prev: Option<LatLon>, now_ms: u64, out: &mut Vec<Fired>) {
        let mut cand = std::mem::take(&mut self.scratch);
        cand.clear();
        let cur = self.objects[ix as usize].fix.pos;
        match prev {
            Some(p) => self.index.near([p.lon, p.lat], [cur.lon, cur.lat], &mut cand),
            None => self.index.at_point(cur.lon, cur.lat, &mut cand),
        }
        for i in &self.objects[ix as usize].inside {
            if !cand.contains(&i.fence) && matches!(self.slot(i.fence).def.area, Area::Fixed(_)) {
                cand.push(i.fence);
            }
        }
        for &f in &cand {
            let slot = self.fences[f as usize].as_ref().expect("indexed fence is live");
            let Area::Fixed(shape) = &slot.def.area else { continue };
            let o = &self.objects[ix as usize];
            let was = o.inside.iter().any(|i| i.fence == f);
            let watched = slot.def.watch.matches(&o.name, o.props.as_ref().map(|p| &p.map));
            let events: &[Event] = if watched {
                detect::step(shape, was, prev, cur, slot.def.detect & kinds::CROSS != 0)
            } else if was {
                // No longer watched (its properties changed): it leaves the fence.
                &[Event::Exit]
            } else {
                continue;
            };
            self.fire(f, ix, events.iter().map(|&e| Kind::of(e)), None, now_ms, out);
        }
        self.scratch = cand;
    }

    /// Roaming fences around other objects near this one.
    fn detect_roaming(&mut self, ix: Ix, now_ms: u64, out: &mut Vec<Fired>) {
        if self.roam_by_center.is_empty() {
            return;
        }
        let cur = self.objects[ix as usize].fix.pos;
        let mut near = std::mem::take(&mut self.near);
        near.clear();
        self.roam_grid.nearby(cur.lon, cur.lat, self.max_roam_m, usize::MAX, &mut near);
        let mut cand: Vec<Ix> = near.iter().map(|&(f, _)| f).collect();
        for i in &self.objects[ix as usize].inside {
            if !cand.contains(&i.fence) && matches!(self.slot(i.fence).def.area, Area::Roam { .. }) {
                cand.push(i.fence);
            }
        }
        self.near = near;
        for f in cand {
            self.roam_pair(f, ix, now_ms, out);
        }
    }

    /// Re-evaluates roaming fence `f` for object `ix`.
    fn roam_pair(&mut self, f: Ix, ix: Ix, now_ms: u64, out: &mut Vec<Fired>) {
        let slot = self.slot(f);
        let Area::Roam { center, radius_m } = &slot.def.area else { return };
        let Some(&c) = self.by_name.get(center) else { return };
        if c == ix {
            return;
        }
        let o = &self.objects[ix as usize];
        let dist = detect::haversine_m(self.objects[c as usize].fix.pos, o.fix.pos);
        let now = dist <= *radius_m && slot.def.watch.matches(&o.name, o.props.as_ref().map(|p| &p.map));
        let was = o.inside.iter().any(|i| i.fence == f);
        let kind = match (was, now) {
            (false, true) => Kind::Enter,
            (true, false) => Kind::Exit,
            _ => return,
        };
        self.fire(f, ix, [kind], Some((c, dist)), now_ms, out);
    }

    /// This object is the centre of roaming fences: move them and re-evaluate the objects around.
    fn move_centre(&mut self, ix: Ix, now_ms: u64, out: &mut Vec<Fired>) {
        if self.roam_by_center.is_empty() {
            return;
        }
        let name = self.objects[ix as usize].name.clone();
        let Some(fences) = self.roam_by_center.get(&name).cloned() else { return };
        let cur = self.objects[ix as usize].fix.pos;
        for f in fences {
            self.roam_grid.upsert(f, cur.lon, cur.lat);
            self.reevaluate_roam(f, now_ms, out);
        }
    }

    /// Objects within a roaming fence now, against those inside before.
    fn reevaluate_roam(&mut self, f: Ix, now_ms: u64, out: &mut Vec<Fired>) {
        let slot = self.slot(f);
        let Area::Roam { center, radius_m } = &slot.def.area else { return };
        let Some(&c) = self.by_name.get(center) else { return };
        let (at, radius_m) = (self.objects[c as usize].fix.pos, *radius_m);
        let insiders: Vec<Ix> = slot.insiders.iter().copied().collect();
        let mut near = std::mem::take(&mut self.near);
        near.clear();
        self.grid.nearby(at.lon, at.lat, radius_m, usize::MAX, &mut near);
        let mut cand: Vec<Ix> = near.iter().map(|&(o, _)| o).filter(|&o| o != c).collect();
        cand.extend(insiders);
        cand.sort_unstable();
        cand.dedup();
        self.near = near;
        for o in cand {
            self.roam_pair(f, o, now_ms, out);
        }
    }

    /// Records the state change the kinds imply and reports the kinds the fence detects.
    fn fire(
        &mut self,
        f: Ix,
        ix: Ix,
        events: impl IntoIterator<Item = Kind>,
        near: Option<(Ix, f64)>,
        now_ms: u64,
        out: &mut Vec<Fired>,
    ) {
        let slot = self.fences[f as usize].as_mut().expect("live fence");
        let o = &mut self.objects[ix as usize];
        for kind in events {
            match kind {
                Kind::Enter => {
                    o.inside.push(Inside { fence: f, since_ms: now_ms, dwelled: false });
                    slot.insiders.insert(ix);
                    if let (true, Some(d)) = (slot.def.detect & kinds::DWELL != 0, slot.def.dwell_ms) {
                        self.dwell.push(Reverse((
                            now_ms.saturating_add(d),
                            ix,
                            f,
                            self.gens[f as usize],
                            now_ms,
                        )));
                        self.dwell_live += 1;
                    }
                }
                Kind::Exit => {
                    if let Some(p) = o.inside.iter().position(|i| i.fence == f) {
                        let gone = o.inside.swap_remove(p);
                        if !gone.dwelled && slot.def.dwell_ms.is_some() && slot.def.detect & kinds::DWELL != 0
                        {
                            self.dwell_live = self.dwell_live.saturating_sub(1);
                        }
                    }
                    slot.insiders.remove(&ix);
                }
                _ => {}
            }
            if slot.def.detect & kind.bit() != 0 {
                out.push(Fired { fence: f, object: ix, event: kind, pos: o.fix.pos, ts: o.fix.ts, near });
            }
        }
    }

    // ---- dwell ----

    /// Fires the dwell timers due at `now_ms`.
    pub fn due_dwells(&mut self, now_ms: u64, out: &mut Vec<Fired>) {
        while let Some(&Reverse((due, ix, f, gen, since))) = self.dwell.peek() {
            if due > now_ms {
                break;
            }
            self.dwell.pop();
            let Some(slot) = self.fences.get(f as usize).and_then(Option::as_ref) else { continue };
            if self.gens[f as usize] != gen {
                continue;
            }
            let o = &mut self.objects[ix as usize];
            let Some(i) = o.inside.iter_mut().find(|i| i.fence == f && i.since_ms == since && !i.dwelled)
            else {
                continue;
            };
            i.dwelled = true;
            self.dwell_live = self.dwell_live.saturating_sub(1);
            let near = match &slot.def.area {
                Area::Roam { center, .. } => self.by_name.get(center).map(|&c| {
                    (
                        c,
                        detect::haversine_m(
                            self.objects[c as usize].fix.pos,
                            self.objects[ix as usize].fix.pos,
                        ),
                    )
                }),
                Area::Fixed(_) => None,
            };
            let o = &self.objects[ix as usize];
            out.push(Fired {
                fence: f,
                object: ix,
                event: Kind::Dwell,
                pos: o.fix.pos,
                ts: now_ms as f64,
                near,
            });
        }
        // Timers of pairs that left early stay queued until due; rebuild when they dominate.
        if self.dwell.len() > 2 * self.dwell_live + 1024 {
            self.rebuild_dwell();
        }
    }

    fn rebuild_dwell(&mut self) {
        self.dwell.clear();
        self.dwell_live = 0;
        for (ix, o) in self.objects.iter().enumerate() {
            for i in o.inside.iter().filter(|i| !i.dwelled) {
                let slot = self.fences[i.fence as usize].as_ref().expect("inside a live fence");
                if let (true, Some(d)) = (slot.def.detect & kinds::DWELL != 0, slot.def.dwell_ms) {
                    let gen = self.gens[i.fence as usize];
                    self.dwell.push(Reverse((
                        i.since_ms.saturating_add(d),
                        ix as Ix,
                        i.fence,
                        gen,
                        i.since_ms,
                    )));
                    self.dwell_live += 1;
                }
            }
        }
    }

    /// Dwell timers queued, for tests and metrics.
    pub fn dwell_timers(&self) -> usize {
        self.dwell.len()
    }

    // ---- fences ----

    /// Whether a fence with this id exists.
    pub fn has_fence(&self, id: &str) -> bool {
        self.fence_by_id.contains_key(id)
    }

    /// Creates or replaces a fence and evaluates the objects already there: an object inside a new
    /// fence gets `enter`, one no longer inside a changed fence `exit`. Events go to `out`.
    pub fn put_fence(&mut self, def: FenceDef, now_ms: u64, out: &mut Vec<Fired>) -> Ix {
        let f = self.insert_fence(def);
        self.rearm_dwell(f);
        match &self.slot(f).def.area {
            Area::Fixed(shape) => {
                let shape = shape.clone();
                let mut cand: Vec<Ix> = self.slot(f).insiders.iter().copied().collect();
                cand.extend(self.objects_near_shape(&shape));
                cand.sort_unstable();
                cand.dedup();
                for o in cand {
                    let obj = &self.objects[o as usize];
                    let def = &self.slot(f).def;
                    let now = def.watch.matches(&obj.name, obj.props.as_ref().map(|p| &p.map))
                        && detect::contains(&shape, obj.fix.pos);
                    let was = self.slot(f).insiders.contains(&o);
                    let kind = match (was, now) {
                        (false, true) => Kind::Enter,
                        (true, false) => Kind::Exit,
                        _ => continue,
                    };
                    self.fire(f, o, [kind], None, now_ms, out);
                }
            }
            Area::Roam { .. } => self.reevaluate_roam(f, now_ms, out),
        }
        f
    }

    /// Adds a fence or replaces its definition, and indexes it; evaluates nothing.
    fn insert_fence(&mut self, def: FenceDef) -> Ix {
        let f = match self.fence_by_id.get(&def.id) {
            Some(&f) => {
                self.unplace(f);
                self.fences[f as usize].as_mut().expect("live fence").def = def;
                self.gens[f as usize] = self.gens[f as usize].wrapping_add(1);
                f
            }
            None => {
                let id = def.id.clone();
                let slot = FenceSlot { def, insiders: FastSet::default() };
                let f = match self.free_fences.pop() {
                    Some(f) => {
                        self.fences[f as usize] = Some(slot);
                        f
                    }
                    None => {
                        self.fences.push(Some(slot));
                        self.gens.push(0);
                        (self.fences.len() - 1) as Ix
                    }
                };
                self.fence_by_id.insert(id, f);
                f
            }
        };
        self.place(f);
        f
    }

    /// Deletes a fence; nothing fires. Returns whether it existed.
    pub fn delete_fence(&mut self, id: &str) -> bool {
        let Some(f) = self.fence_by_id.remove(id) else { return false };
        self.unplace(f);
        self.gens[f as usize] = self.gens[f as usize].wrapping_add(1);
        let slot = self.fences[f as usize].take().expect("live fence");
        let dwelling = slot.def.dwell_ms.is_some() && slot.def.detect & kinds::DWELL != 0;
        let insiders = slot.insiders;
        for o in insiders {
            let inside = &mut self.objects[o as usize].inside;
            if let Some(p) = inside.iter().position(|i| i.fence == f) {
                if dwelling && !inside[p].dwelled {
                    self.dwell_live = self.dwell_live.saturating_sub(1);
                }
                inside.swap_remove(p);
            }
        }
        self.free_fences.push(f);
        true
    }

    /// Puts fence `f` into the index (fixed) or the roaming tables.
    fn place(&mut self, f: Ix) {
        match &self.slot(f).def.area {
            Area::Fixed(shape) => {
                let boxes = detect::bbox(shape);
                self.index.insert(f, &boxes);
            }
            Area::Roam { center, radius_m } => {
                let (center, r) = (center.clone(), *radius_m);
                self.max_roam_m = self.max_roam_m.max(r);
                if let Some(&c) = self.by_name.get(&center) {
                    let p = self.objects[c as usize].fix.pos;
                    self.roam_grid.upsert(f, p.lon, p.lat);
                }
                self.roam_by_center.entry(center).or_default().push(f);
            }
        }
    }

    /// Takes fence `f` out of the index or the roaming tables.
    fn unplace(&mut self, f: Ix) {
        match &self.slot(f).def.area {
            Area::Fixed(_) => {
                self.index.remove(f);
            }
            Area::Roam { center, .. } => {
                let center = center.clone();
                self.roam_grid.remove(f);
                if let Some(list) = self.roam_by_center.get_mut(&center) {
                    list.retain(|&x| x != f);
                    if list.is_empty() {
                        self.roam_by_center.remove(&center);
                    }
                }
                self.max_roam_m = self
                    .roam_by_center
                    .values()
                    .flatten()
                    .filter_map(|&g| match &self.slot(g).def.area {
                        Area::Roam { radius_m, .. } => Some(*radius_m),
                        Area::Fixed(_) => None,
                    })
                    .fold(0.0, f64::max);
            }
        }
    }

    /// Queues dwell timers for the objects inside fence `f` whose dwell has not fired (after a change).
    fn rearm_dwell(&mut self, f: Ix) {
        let slot = self.slot(f);
        let (true, Some(d)) = (slot.def.detect & kinds::DWELL != 0, slot.def.dwell_ms) else { return };
        let gen = self.gens[f as usize];
        let mut timers = Vec::new();
        for &o in &slot.insiders {
            if let Some(i) = self.objects[o as usize].inside.iter().find(|i| i.fence == f && !i.dwelled) {
                timers.push(Reverse((i.since_ms.saturating_add(d), o, f, gen, i.since_ms)));
            }
        }
        self.dwell_live += timers.len();
        self.dwell.extend(timers);
    }

    /// Objects that may lie in `shape`: those in the caps covering its boxes.
    fn objects_near_shape(&mut self, shape: &Shape) -> Vec<Ix> {
        let mut near = std::mem::take(&mut self.near);
        near.clear();
        match shape {
            Shape::Circle { center, radius_m } => {
                self.grid.nearby(center.lon, center.lat, *radius_m, usize::MAX, &mut near)
            }
            Shape::Area(_) => {
                for [[w, s], [e, n]] in detect::bbox(shape) {
                    let (lon, lat) = ((w + e) / 2.0, (s + n) / 2.0);
                    let r = [[w, s], [w, n], [e, s], [e, n]]
                        .iter()
                        .map(|[x, y]| super::index::haversine_m(lon, lat, *x, *y))
                        .fold(0.0, f64::max);
                    // Box edges bulge away from the corners on a sphere; the margin covers it.
                    self.grid.nearby(lon, lat, r * 1.01 + 1.0, usize::MAX, &mut near);
                }
            }
        }
        let mut out: Vec<Ix> = near.iter().map(|&(o, _)| o).collect();
        out.sort_unstable();
        out.dedup();
        self.near = near;
        out
    }

    // ---- queries ----

    /// Creates a live query (`q: None`) or moves and resizes one; objects that entered or left a moved
    /// query go to [`Tenant::query_events`]. Returns the query and the objects inside it, nearest first.
    pub fn put_query(&mut self, q: Option<Ix>, center: LatLon, radius_m: f64) -> (Ix, Vec<(Ix, f64)>) {
        self.queries.put(q, center, radius_m, &self.grid, &mut self.query_events)
    }

    /// Ends a live query.
    pub fn drop_query(&mut self, q: Ix) {
        self.queries.remove(q);
    }

    /// Objects within `radius_m` of `at`, nearest first, at most `limit`, with their distances.
    pub fn nearby(&mut self, at: LatLon, radius_m: f64, limit: usize) -> Vec<(Ix, f64)> {
        let mut out = Vec::new();
        self.grid.nearby(at.lon, at.lat, radius_m, limit, &mut out);
        out
    }

    /// Objects inside `shape`, by name: at most `limit`, and whether more exist.
    pub fn within(&mut self, shape: &Shape, limit: usize) -> (Vec<Ix>, bool) {
        let mut found: Vec<Ix> = self
            .objects_near_shape(shape)
            .into_iter()
            .filter(|&o| detect::contains(shape, self.objects[o as usize].fix.pos))
            .collect();
        found.sort_unstable_by(|a, b| self.objects[*a as usize].name.cmp(&self.objects[*b as usize].name));
        let more = found.len() > limit;
        found.truncate(limit);
        (found, more)
    }

    // ---- persistence ----

    /// Positions changed since the last call, to write behind.
    pub fn take_dirty(&mut self) -> Vec<GeoPosition> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|ix| {
                let o = &mut self.objects[ix as usize];
                o.dirty = false;
                GeoPosition {
                    id: o.name.clone(),
                    lat: o.fix.pos.lat,
                    lon: o.fix.pos.lon,
                    ts: o.fix.ts,
                    speed: o.fix.speed.map(f64::from),
                    heading: o.fix.heading.map(f64::from),
                    props: o.props.as_ref().map(|p| p.raw.clone()),
                }
            })
            .collect()
    }

    /// Rebuilds a tenant from storage. Fences that no longer parse (limits lowered since) are skipped
    /// and named in the returned list.
    pub fn restore(
        state: GeoState,
        history: usize,
        parse: impl Fn(&str) -> Result<FenceDef, String>,
    ) -> (Self, Vec<String>) {
        let mut t = Tenant::new(history);
        let mut skipped = Vec::new();
        for p in state.objects {
            let Ok(pos) = LatLon::new(p.lat, p.lon) else {
                skipped.push(format!("object {}: stored position out of range", p.id));
                continue;
            };
            let fix =
                Fix { pos, ts: p.ts, speed: p.speed.map(|s| s as f32), heading: p.heading.map(|h| h as f32) };
            let ix = t.add_object(p.id, fix, p.props.as_deref().and_then(Props::parse));
            t.grid.upsert(ix, pos.lon, pos.lat);
        }
        for (id, json) in state.fences {
            match parse(&json) {
                Ok(def) if *def.id == *id => {
                    t.insert_fence(def);
                }
                Ok(_) => skipped.push(format!("fence {id}: stored id differs")),
                Err(e) => skipped.push(format!("fence {id}: {e}")),
            }
        }
        // The stored inside table is what subscribers were told.
        for GeoInside { fence, object, since_ms, dwelled } in state.inside {
            let (Some(&f), Some(&o)) = (t.fence_by_id.get(&fence), t.by_name.get(&object)) else { continue };
            t.objects[o as usize].inside.push(Inside { fence: f, since_ms, dwelled });
            t.fences[f as usize].as_mut().expect("live fence").insiders.insert(o);
        }
        t.rebuild_dwell();
        (t, skipped)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::topics::geo::fence::{self, Limits};

    fn def(v: Value) -> FenceDef {
        fence::parse(&v, Limits { max_vertices: 1000 }).unwrap()
    }

    fn fix(lat: f64, lon: f64, ts: f64) -> Fix {
        Fix { pos: LatLon::new(lat, lon).unwrap(), ts, speed: None, heading: None }
    }

    fn square(id: &str, extra: Value) -> FenceDef {
        let mut v = json!({"id": id, "geometry": {"type": "Polygon",
            "coordinates": [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]]}});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        def(v)
    }

    fn names(t: &Tenant, fired: &[Fired]) -> Vec<String> {
        fired
            .iter()
            .map(|e| format!("{}:{}:{}", t.fence(e.fence).id, t.object(e.object).name, e.event.as_str()))
            .collect()
    }

    fn go(t: &mut Tenant, name: &str, lat: f64, lon: f64, ts: f64, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        assert_eq!(t.locate(name, fix(lat, lon, ts), None, 100, now, &mut out), Located::Applied);
        names(t, &out)
    }

    #[test]
    fn state_is_kept_per_object_and_fence() {
        let mut t = Tenant::new(4);
        t.put_fence(
            square("sq", json!({"detect": ["enter", "exit", "inside", "cross"]})),
            0,
            &mut Vec::new(),
        );
        assert_eq!(go(&mut t, "a", 0.5, 0.5, 1.0, 0), ["sq:a:enter", "sq:a:inside"]);
        assert_eq!(go(&mut t, "a", 0.6, 0.5, 2.0, 0), ["sq:a:inside"]);
        assert_eq!(go(&mut t, "a", 2.0, 0.5, 3.0, 0), ["sq:a:exit"]);
        assert!(go(&mut t, "a", 3.0, 0.5, 4.0, 0).is_empty(), "outside is not detected");
        // Through the square from west to east, both ends outside.
        assert_eq!(go(&mut t, "b", 0.5, -1.0, 1.0, 0), Vec::<String>::new());
        assert_eq!(go(&mut t, "b", 0.5, 2.0, 2.0, 0), ["sq:b:cross"]);
        let mut out = Vec::new();
        assert_eq!(t.locate("a", fix(0.5, 0.5, 3.5), None, 100, 0, &mut out), Located::OutOfOrder);
        assert!(out.is_empty());
        assert_eq!(t.object(t.object_ix("a").unwrap()).history.len(), 4, "history is bounded");
        assert_eq!(t.locate("c", fix(0.5, 0.5, 1.0), None, 2, 0, &mut out), Located::TooManyObjects);
    }

    #[test]
    fn dwell_fires_once_from_the_timer_and_not_after_an_exit() {
        let mut t = Tenant::new(0);
        t.put_fence(square("sq", json!({"dwell": 10})), 0, &mut Vec::new());
        assert_eq!(go(&mut t, "a", 0.5, 0.5, 1.0, 1_000), ["sq:a:enter"]);
        assert_eq!(go(&mut t, "b", 0.5, 0.5, 1.0, 2_000), ["sq:b:enter"]);
        assert_eq!(go(&mut t, "b", 5.0, 5.0, 2.0, 5_000), ["sq:b:exit"]);
        let mut out = Vec::new();
        t.due_dwells(10_999, &mut out);
        assert!(out.is_empty(), "not due yet");
        t.due_dwells(11_000, &mut out);
        assert_eq!(names(&t, &out), ["sq:a:dwell"]);
        out.clear();
        t.due_dwells(60_000, &mut out);
        assert!(out.is_empty(), "fired once; b left before its time");
        assert_eq!(t.dwell_timers(), 0);
    }

    #[test]
    fn roaming_fences_follow_their_centre() {
        let mut t = Tenant::new(0);
        t.put_fence(def(json!({"id": "r", "roam": {"object": "a", "radius": 1000}})), 0, &mut Vec::new());
        assert!(go(&mut t, "a", 10.0, 10.0, 1.0, 0).is_empty());
        assert!(go(&mut t, "b", 10.1, 10.0, 1.0, 0).is_empty(), "11 km away");
        assert_eq!(go(&mut t, "b", 10.005, 10.0, 2.0, 0), ["r:b:enter"]);
        let mut out = Vec::new();
        t.locate("b", fix(10.006, 10.0, 3.0), None, 100, 0, &mut out);
        assert!(out.is_empty());
        // The centre moves away: b is left behind.
        t.locate("a", fix(11.0, 10.0, 3.0), None, 100, 0, &mut out);
        assert_eq!(names(&t, &out), ["r:b:exit"]);
        assert!(out[0].near.is_some_and(|(c, d)| t.object(c).name.as_ref() == "a" && d > 1000.0));
        out.clear();
        // And comes back to it.
        t.locate("a", fix(10.006, 10.001, 4.0), None, 100, 0, &mut out);
        assert_eq!(names(&t, &out), ["r:b:enter"]);
    }

    #[test]
    fn new_and_changed_fences_evaluate_the_objects_already_there() {
        let mut t = Tenant::new(0);
        go(&mut t, "in", 0.5, 0.5, 1.0, 0);
        go(&mut t, "out", 5.0, 5.0, 1.0, 0);
        let mut out = Vec::new();
        t.put_fence(square("sq", json!({})), 7, &mut out);
        assert_eq!(names(&t, &out), ["sq:in:enter"]);
        out.clear();
        // Moved over "out" and away from "in".
        let moved =
            def(json!({"id": "sq", "geometry": {"type": "Point", "coordinates": [5.0, 5.0], "radius": 100}}));
        t.put_fence(moved, 8, &mut out);
        let mut got = names(&t, &out);
        got.sort();
        assert_eq!(got, ["sq:in:exit", "sq:out:enter"]);
        assert!(t.delete_fence("sq"));
        assert!(!t.has_fence("sq"));
        assert!(t.inside_of(t.object_ix("out").unwrap()).is_empty());
        assert!(go(&mut t, "out", 5.0, 5.0001, 2.0, 0).is_empty(), "a deleted fence fires nothing");
    }

    #[test]
    fn restore_trusts_the_stored_inside_table() {
        let f = square("sq", json!({"dwell": 5}));
        let state = GeoState {
            fences: vec![("sq".into(), f.json.to_string().into())],
            objects: vec![GeoPosition {
                id: "a".into(),
                lat: 0.5,
                lon: 0.5,
                ts: 10.0,
                speed: None,
                heading: None,
                props: None,
            }],
            inside: vec![GeoInside {
                fence: "sq".into(),
                object: "a".into(),
                since_ms: 1_000,
                dwelled: false,
            }],
        };
        let (mut t, skipped) = Tenant::restore(state, 0, |j| {
            fence::parse(&serde_json::from_str(j).unwrap(), Limits { max_vertices: 10 })
        });
        assert!(skipped.is_empty());
        assert!(go(&mut t, "a", 0.6, 0.6, 11.0, 2_000).is_empty(), "already inside: no second enter");
        let mut out = Vec::new();
        t.due_dwells(6_000, &mut out);
        assert_eq!(names(&t, &out), ["sq:a:dwell"], "the dwell timer resumed from the stored since");
        assert_eq!(go(&mut t, "a", 3.0, 3.0, 12.0, 7_000), ["sq:a:exit"]);
    }
}
