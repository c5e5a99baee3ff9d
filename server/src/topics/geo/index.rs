//! Spatial indexes for geofencing: an R-tree of fence bounding boxes and a uniform grid of moving objects.
//!
//! Coordinates are degrees with longitude as x and latitude as y; boxes are
//! `[[min_lon, min_lat], [max_lon, max_lat]]`. The query paths append to caller-owned buffers so that a
//! location update with a warmed-up buffer does not allocate.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::ControlFlow;

use rstar::{Envelope, PointDistance, RTree, RTreeObject, AABB};

/// Mean Earth radius in metres (IUGG), used by [`haversine_m`] and the grid's radius queries.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Identifier of a fence in a [`FenceIndex`].
pub type FenceId = u32;

/// Identifier of an object in an [`ObjectGrid`].
pub type ObjectId = u32;

/// A fence bounding box as `[[min_lon, min_lat], [max_lon, max_lat]]`.
pub type BBox = [[f64; 2]; 2];

/// Multiply-rotate hasher for the integer keys of the indexes; SipHash would dominate the cost of an upsert.
/// It is not collision-resistant: a client choosing coordinates can aim many objects at cells whose keys
/// share a bucket, which slows lookups in that map but changes no result.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

const HASH_K: u64 = 0xf135_7aea_2e62_a9c5;

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0 ^ i).wrapping_mul(HASH_K);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // The multiply mixes into the high bits; hashbrown picks buckets from the low ones.
        self.0.rotate_left(26)
    }
}

/// A map keyed by integers the server assigns (never by client-chosen values).
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;
/// A set of integers the server assigns.
pub type FastSet<K> = std::collections::HashSet<K, BuildHasherDefault<FastHasher>>;

/// Great-circle distance in metres between two points given in degrees, on a sphere of radius
/// [`EARTH_RADIUS_M`].
#[inline]
pub fn haversine_m(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let p1 = lat1.to_radians();
    haversine_from(lon1, p1, p1.cos(), lon2, lat2)
}

/// [`haversine_m`] with the first point's latitude in radians and its cosine precomputed, so a query
/// pays for them once; the arithmetic is the same, so results are bit-identical.
#[inline]
fn haversine_from(lon1: f64, p1: f64, cos_p1: f64, lon2: f64, lat2: f64) -> f64 {
    let p2 = lat2.to_radians();
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let s1 = (dp * 0.5).sin();
    let s2 = (dl * 0.5).sin();
    let a = s1 * s1 + cos_p1 * p2.cos() * s2 * s2;
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// Wraps a finite longitude into `[-180, 180]`, leaving in-range values untouched.
#[inline]
fn wrap_lon(lon: f64) -> f64 {
    if (-180.0..=180.0).contains(&lon) {
        lon
    } else {
        (lon + 180.0).rem_euclid(360.0) - 180.0
    }
}

// ---------------------------------------------------------------------------------------------------------
// Fences
// ---------------------------------------------------------------------------------------------------------

/// Wider nodes than rstar's default (6): a query touches fewer levels and each node is scanned from
/// contiguous memory, which measured faster for point and short-segment queries over 10,000 fences.
#[derive(Debug, Clone, Copy)]
pub struct Fanout;

impl rstar::RTreeParams for Fanout {
    const MIN_SIZE: usize = 5;
    const MAX_SIZE: usize = 16;
    const REINSERTION_COUNT: usize = 4;
    type DefaultInsertionStrategy = rstar::RStarInsertionStrategy;
}

/// One bounding box of a fence as stored in the R-tree.
#[derive(Clone, Copy, Debug, PartialEq)]
struct FenceBox {
    env: AABB<[f64; 2]>,
    id: FenceId,
    /// Whether the fence owns more than one box; only those can be reported twice by one query, so only
    /// they pay for the duplicate check.
    multi: bool,
}

impl RTreeObject for FenceBox {
    type Envelope = AABB<[f64; 2]>;
    #[inline]
    fn envelope(&self) -> Self::Envelope {
        self.env
    }
}

impl PointDistance for FenceBox {
    #[inline]
    fn distance_2(&self, point: &[f64; 2]) -> f64 {
        self.env.distance_2(point)
    }
    #[inline]
    fn contains_point(&self, point: &[f64; 2]) -> bool {
        self.env.contains_point(point)
    }
}

/// Normalises one input box into `out`: swaps inverted latitudes, splits a box whose `min_lon > max_lon`
/// into its two antimeridian halves, and drops boxes with non-finite coordinates.
fn normalize_box(b: &BBox, out: &mut Vec<AABB<[f64; 2]>>) {
    let [[lon0, lat0], [lon1, lat1]] = *b;
    if !(lon0.is_finite() && lat0.is_finite() && lon1.is_finite() && lat1.is_finite()) {
        return;
    }
    let (lat_lo, lat_hi) = if lat0 <= lat1 { (lat0, lat1) } else { (lat1, lat0) };
    if lon0 <= lon1 {
        out.push(AABB::from_corners([lon0, lat_lo], [lon1, lat_hi]));
    } else {
        out.push(AABB::from_corners([lon0, lat_lo], [180.0, lat_hi]));
        out.push(AABB::from_corners([-180.0, lat_lo], [lon1, lat_hi]));
    }
}

/// Fence bounding boxes in an R-tree. A fence may have several boxes (antimeridian-crossing shapes are
/// split in two).
///
/// A box given with `min_lon > max_lon` is taken to cross the antimeridian and split automatically.
#[derive(Debug, Clone, Default)]
pub struct FenceIndex {
    tree: RTree<FenceBox, Fanout>,
    /// Boxes of each fence as stored in the tree, so removal can find them without a scan.
    boxes: FastMap<FenceId, Vec<AABB<[f64; 2]>>>,
    /// Inserts and removals since the tree was last packed by a bulk load.
    churn: usize,
    /// The tree's answer per grid cell: the boxes meeting the cell. A short move inside one cell reads
    /// its candidates from here with one hash lookup instead of walking the tree. Emptied on every change.
    cells: FastMap<u64, Box<[FenceBox]>>,
}

/// Cell size of [`FenceIndex::near`]'s cache, in degrees (about 2.2 km north–south): measured best of 0.005,
/// 0.01 and 0.02 for moves of ~50 m among fences of 50 m to 2 km.
const CACHE_CELL_DEG: f64 = 0.02;
/// Cells cached at most; past this the cache starts over.
const MAX_CACHED_CELLS: usize = 1 << 16;

impl FenceIndex {
    /// Creates an empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores the boxes of fence `id`, replacing any boxes it had. A fence without usable boxes is removed.
    pub fn insert(&mut self, id: FenceId, boxes: &[BBox]) {
        self.remove(id);
        let mut envs = Vec::with_capacity(boxes.len());
        for b in boxes {
            normalize_box(b, &mut envs);
        }
        if envs.is_empty() {
            return;
        }
        let multi = envs.len() > 1;
        for &env in &envs {
            self.tree.insert(FenceBox { env, id, multi });
        }
        self.boxes.insert(id, envs);
        self.churned();
    }

    /// The fences of [`FenceIndex::along_segment`] (the same set, perhaps in another order), answered
    /// from a per-cell cache of the tree when both ends lie in one cell — the common short move.
    pub fn near(&mut self, a: [f64; 2], b: [f64; 2], out: &mut Vec<FenceId>) {
        let cell = |p: [f64; 2]| {
            // Cells cover lon [-180, 180) and lat [-90, 90); the edges themselves go to the tree.
            ((-180.0..180.0).contains(&p[0]) && (-90.0..90.0).contains(&p[1])).then(|| {
                let col = ((p[0] + 180.0) / CACHE_CELL_DEG).floor() as u64;
                let row = ((p[1] + 90.0) / CACHE_CELL_DEG).floor() as u64;
                (col << 32) | row
            })
        };
        let key = match (cell(a), cell(b)) {
            (Some(x), Some(y)) if x == y => x,
            _ => return self.along_segment(a, b, out),
        };
        if self.cells.len() >= MAX_CACHED_CELLS && !self.cells.contains_key(&key) {
            self.cells.clear();
        }
        let tree = &self.tree;
        let boxes = self.cells.entry(key).or_insert_with(|| {
            // The cell's rectangle, widened by a hair against rounding: extra boxes are filtered below.
            let (col, row) = ((key >> 32) as f64, (key & 0xffff_ffff) as f64);
            let (w, s) = (col * CACHE_CELL_DEG - 180.0 - 1e-9, row * CACHE_CELL_DEG - 90.0 - 1e-9);
            let (e, n) = (w + CACHE_CELL_DEG + 2e-9, s + CACHE_CELL_DEG + 2e-9);
            tree.locate_in_envelope_intersecting(AABB::from_corners([w, s], [e, n])).copied().collect()
        });
        let env = AABB::from_corners([a[0].min(b[0]), a[1].min(b[1])], [a[0].max(b[0]), a[1].max(b[1])]);
        let start = out.len();
        for fb in boxes.iter() {
            if fb.env.intersects(&env) && (!fb.multi || !out[start..].contains(&fb.id)) {
                out.push(fb.id);
            }
        }
    }

    /// A tree grown by single inserts answers queries about twice as slowly as a bulk-loaded one; once
    /// the changes since the last packing reach half the size, pack it again (amortised O(log n) each).
    fn churned(&mut self) {
        self.cells.clear();
        self.churn += 1;
        if self.churn >= 64 && self.churn * 2 >= self.boxes.len() {
            self.tree = RTree::bulk_load_with_params(Self::elements(&self.boxes));
            self.churn = 0;
        }
    }

    fn elements(boxes: &FastMap<FenceId, Vec<AABB<[f64; 2]>>>) -> Vec<FenceBox> {
        let mut elems = Vec::with_capacity(boxes.values().map(Vec::len).sum());
        for (&id, envs) in boxes {
            let multi = envs.len() > 1;
            elems.extend(envs.iter().map(|&env| FenceBox { env, id, multi }));
        }
        elems
    }

    /// Removes all boxes of fence `id`; returns whether it was present.
    pub fn remove(&mut self, id: FenceId) -> bool {
        let Some(envs) = self.boxes.remove(&id) else { return false };
        let multi = envs.len() > 1;
        for env in envs {
            let removed = self.tree.remove(&FenceBox { env, id, multi });
            debug_assert!(removed.is_some(), "fence {id} box missing from the tree");
        }
        self.churned();
        true
    }

    /// Number of fences (not boxes) in the index.
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// Whether the index holds no fences.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// Fences whose box contains the point, appended to `out` (deduplicated, no allocation when `out` has
    /// capacity). Box edges count as inside; longitudes outside ±180 are wrapped first.
    pub fn at_point(&self, lon: f64, lat: f64, out: &mut Vec<FenceId>) {
        if !(lon.is_finite() && lat.is_finite()) {
            return;
        }
        let start = out.len();
        let _ = self.tree.locate_all_at_point_int([wrap_lon(lon), lat], |b| {
            if !b.multi || !out[start..].contains(&b.id) {
                out.push(b.id);
            }
            ControlFlow::<()>::Continue(())
        });
    }

    /// Fences whose box intersects the box of a segment (for `cross` detection); handle a segment that
    /// crosses the antimeridian (|Δlon| > 180) by querying two boxes.
    ///
    /// Results are appended to `out`, deduplicated. The latitude span of each half of an antimeridian
    /// segment is the whole span of the segment, so the halves stay supersets whatever path model the
    /// caller uses between the endpoints.
    pub fn along_segment(&self, a: [f64; 2], b: [f64; 2], out: &mut Vec<FenceId>) {
        if !(a[0].is_finite() && a[1].is_finite() && b[0].is_finite() && b[1].is_finite()) {
            return;
        }
        let (lon_a, lon_b) = (wrap_lon(a[0]), wrap_lon(b[0]));
        let (lat_lo, lat_hi) = (a[1].min(b[1]), a[1].max(b[1]));
        let start = out.len();
        let d = lon_b - lon_a;
        if d.abs() <= 180.0 {
            let env = AABB::from_corners([lon_a.min(lon_b), lat_lo], [lon_a.max(lon_b), lat_hi]);
            let _ = self.tree.locate_in_envelope_intersecting_int(env, |fb| {
                if !fb.multi || !out[start..].contains(&fb.id) {
                    out.push(fb.id);
                }
                ControlFlow::<()>::Continue(())
            });
            return;
        }
        // The short way round passes through ±180: the eastern endpoint's piece runs up to +180 and the
        // western endpoint's piece starts at -180.
        let (east, west) = if lon_a > lon_b { (lon_a, lon_b) } else { (lon_b, lon_a) };
        let halves = [
            AABB::from_corners([east, lat_lo], [180.0, lat_hi]),
            AABB::from_corners([-180.0, lat_lo], [west, lat_hi]),
        ];
        for env in halves {
            let _ = self.tree.locate_in_envelope_intersecting_int(env, |fb| {
                // A single box can touch both halves (e.g. one spanning all longitudes), so every hit is
                // checked here, not only those of multi-box fences.
                if !out[start..].contains(&fb.id) {
                    out.push(fb.id);
                }
                ControlFlow::<()>::Continue(())
            });
        }
    }

    /// Bulk load for restarts (rstar's bulk_load). An id may appear in several items; its boxes are
    /// normalised as in [`FenceIndex::insert`].
    pub fn bulk(items: Vec<(FenceId, BBox)>) -> Self {
        let mut boxes: FastMap<FenceId, Vec<AABB<[f64; 2]>>> = FastMap::default();
        for (id, b) in &items {
            normalize_box(b, boxes.entry(*id).or_default());
        }
        boxes.retain(|_, v| !v.is_empty());
        Self {
            tree: RTree::bulk_load_with_params(Self::elements(&boxes)),
            boxes,
            churn: 0,
            cells: FastMap::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------------------------

/// An object as stored in its cell; positions live here so radius queries read cells only.
#[derive(Clone, Copy, Debug)]
struct Member {
    id: ObjectId,
    lon: f64,
    lat: f64,
}

/// Where an object sits in `ObjectGrid::cells`.
#[derive(Clone, Copy, Debug)]
struct Slot {
    cell: u64,
    idx: u32,
}

/// Where each object sits, in a vector indexed by id; absent ids hold [`Slots::ABSENT`].
#[derive(Debug, Clone, Default)]
struct Slots {
    slots: Vec<Slot>,
    len: usize,
}

impl Slots {
    const ABSENT: Slot = Slot { cell: u64::MAX, idx: u32::MAX };

    fn get(&self, id: ObjectId) -> Option<Slot> {
        self.slots.get(id as usize).copied().filter(|s| s.idx != u32::MAX)
    }

    fn get_mut(&mut self, id: ObjectId) -> Option<&mut Slot> {
        self.slots.get_mut(id as usize).filter(|s| s.idx != u32::MAX)
    }

    fn insert(&mut self, id: ObjectId, slot: Slot) {
        let i = id as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, Self::ABSENT);
        }
        if self.slots[i].idx == u32::MAX {
            self.len += 1;
        }
        self.slots[i] = slot;
    }

    fn remove(&mut self, id: ObjectId) -> Option<Slot> {
        let slot = self.get(id)?;
        self.slots[id as usize] = Self::ABSENT;
        self.len -= 1;
        Some(slot)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Emptied cell vectors kept for reuse, so objects wandering into fresh cells do not allocate.
const MAX_FREE_CELLS: usize = 4096;

/// Where each object is, for nearby queries and roaming fences: a uniform grid of cells in degrees (or
/// geohash-like cells), updated in O(1) per move; queries by radius in metres visit the cells that can hold
/// matches (account for longitude cells shrinking toward the poles and for the antimeridian) and filter by
/// haversine distance.
///
/// Only occupied cells are stored. Longitudes are wrapped into ±180 and latitudes clamped to ±90;
/// updates with non-finite coordinates are ignored.
#[derive(Debug, Clone)]
pub struct ObjectGrid {
    cell_deg: f64,
    ncols: i64,
    nrows: i64,
    cells: FastMap<u64, Vec<Member>>,
    /// Indexed by object id (ids are small and dense: the tenant's object and fence numbers).
    objects: Slots,
    free: Vec<Vec<Member>>,
}

/// Column ranges (inclusive) covered by a query; two when it wraps around the antimeridian.
type ColRanges = ([(i64, i64); 2], usize);

impl ObjectGrid {
    /// Creates an empty grid with square cells of `cell_deg` degrees.
    ///
    /// # Panics
    /// If `cell_deg` is not a finite number in `[1e-6, 360]`.
    pub fn new(cell_deg: f64) -> Self {
        assert!(
            cell_deg.is_finite() && (1e-6..=360.0).contains(&cell_deg),
            "cell size must be within [1e-6, 360] degrees, got {cell_deg}"
        );
        Self {
            cell_deg,
            ncols: (360.0 / cell_deg).ceil() as i64,
            nrows: ((180.0 / cell_deg).ceil() as i64).max(1),
            cells: FastMap::default(),
            objects: Slots::default(),
            free: Vec::new(),
        }
    }

    #[inline]
    fn col(&self, lon: f64) -> i64 {
        (((lon + 180.0) / self.cell_deg).floor() as i64).clamp(0, self.ncols - 1)
    }

    #[inline]
    fn row(&self, lat: f64) -> i64 {
        (((lat + 90.0) / self.cell_deg).floor() as i64).clamp(0, self.nrows - 1)
    }

    #[inline]
    fn key(col: i64, row: i64) -> u64 {
        ((col as u64) << 32) | (row as u64 & 0xffff_ffff)
    }

    /// Inserts object `id` at the position or moves it there. O(1): a move within a cell rewrites the
    /// position; a move across cells is a swap-remove plus a push.
    pub fn upsert(&mut self, id: ObjectId, lon: f64, lat: f64) {
        if !(lon.is_finite() && lat.is_finite()) {
            return;
        }
        let lon = wrap_lon(lon);
        let lat = lat.clamp(-90.0, 90.0);
        // +180 and -180 are the same meridian; the column of -180 is the one that exists.
        let key = Self::key(self.col(if lon == 180.0 { -180.0 } else { lon }), self.row(lat));
        let m = Member { id, lon, lat };
        if let Some(slot) = self.objects.get(id) {
            if slot.cell == key {
                if let Some(cell) = self.cells.get_mut(&key) {
                    cell[slot.idx as usize] = m;
                }
                return;
            }
            self.detach(slot);
        }
        let cell = match self.cells.get_mut(&key) {
            Some(cell) => cell,
            None => {
                let v = self.free.pop().unwrap_or_default();
                self.cells.entry(key).or_insert(v)
            }
        };
        let idx = cell.len() as u32;
        cell.push(m);
        self.objects.insert(id, Slot { cell: key, idx });
    }

    /// Takes the member at `slot` out of its cell, fixing the slot of the member moved into its place.
    fn detach(&mut self, slot: Slot) {
        let Some(cell) = self.cells.get_mut(&slot.cell) else { return };
        let idx = slot.idx as usize;
        cell.swap_remove(idx);
        if let Some(moved) = cell.get(idx) {
            if let Some(s) = self.objects.get_mut(moved.id) {
                s.idx = slot.idx;
            }
        } else if cell.is_empty() {
            if let Some(v) = self.cells.remove(&slot.cell) {
                if self.free.len() < MAX_FREE_CELLS {
                    self.free.push(v);
                }
            }
        }
    }

    /// Removes object `id`; returns whether it was present.
    pub fn remove(&mut self, id: ObjectId) -> bool {
        let Some(slot) = self.objects.remove(id) else { return false };
        self.detach(slot);
        true
    }

    /// Stored position of object `id` as `(lon, lat)`, after wrapping and clamping.
    pub fn position(&self, id: ObjectId) -> Option<(f64, f64)> {
        let slot = self.objects.get(id)?;
        let m = self.cells.get(&slot.cell)?.get(slot.idx as usize)?;
        Some((m.lon, m.lat))
    }

    /// Number of objects in the grid.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the grid holds no objects.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Rows and column ranges that can hold points within `radius_m` of the centre, or `None` when every
    /// cell can.
    fn cover(&self, lon: f64, lat: f64, radius_m: f64) -> Option<((i64, i64), ColRanges)> {
        // Slack in degrees against rounding at the edge of the cap; it only adds candidate cells.
        const SLACK: f64 = 1e-9;
        let delta = radius_m / EARTH_RADIUS_M;
        if delta >= std::f64::consts::PI {
            return None;
        }
        let dlat = delta.to_degrees() + SLACK;
        let (lat_lo, lat_hi) = (lat - dlat, lat + dlat);
        let rows = (self.row(lat_lo), self.row(lat_hi));
        if lat_lo <= -90.0 || lat_hi >= 90.0 {
            // The cap holds a pole, so it spans every longitude.
            return Some((rows, ([(0, self.ncols - 1), (0, -1)], 1)));
        }
        // Widest longitude reach of a spherical cap of angular radius delta centred at latitude lat.
        let s = delta.sin() / lat.to_radians().cos();
        if s >= 1.0 {
            return Some((rows, ([(0, self.ncols - 1), (0, -1)], 1)));
        }
        let dlon = s.asin().to_degrees() + SLACK;
        if dlon >= 180.0 {
            return Some((rows, ([(0, self.ncols - 1), (0, -1)], 1)));
        }
        let (lo, hi) = (lon - dlon, lon + dlon);
        let last = self.ncols - 1;
        let cols = if lo < -180.0 {
            ([(self.col(lo + 360.0), last), (0, self.col(hi))], 2)
        } else if hi >= 180.0 {
            ([(self.col(lo), last), (0, self.col(hi - 360.0))], 2)
        } else {
            ([(self.col(lo), self.col(hi)), (0, -1)], 1)
        };
        Some((rows, cols))
    }

    /// Objects within `radius_m` of (lon, lat), nearest first, at most `limit`, with their distance in
    /// metres.
    ///
    /// Results are appended to `out`; ties in distance are ordered by id. The buffer never holds more than
    /// `2 * limit` candidates beyond its starting length, so a buffer of that capacity is not reallocated.
    pub fn nearby(&self, lon: f64, lat: f64, radius_m: f64, limit: usize, out: &mut Vec<(ObjectId, f64)>) {
        if limit == 0 || !(lon.is_finite() && lat.is_finite()) || radius_m.is_nan() || radius_m < 0.0 {
            return;
        }
        let lon = wrap_lon(lon);
        let lat = lat.clamp(-90.0, 90.0);
        let start = out.len();
        let mut collector = Collector { out, start, limit, threshold: radius_m };
        let cover = self.cover(lon, lat, radius_m);
        let (p1, cos_p1) = (lat.to_radians(), lat.to_radians().cos());
        // No point farther in latitude than the radius can match; this skips the trigonometry for most
        // of the cover's corner cells.
        let max_dlat = (radius_m / EARTH_RADIUS_M).to_degrees() + 1e-9;
        let scan_cell = |members: &[Member], c: &mut Collector<'_>| {
            for m in members {
                if (m.lat - lat).abs() > max_dlat {
                    continue;
                }
                let d = haversine_from(lon, p1, cos_p1, m.lon, m.lat);
                if d <= c.threshold {
                    c.push(m.id, d);
                }
            }
        };
        match cover {
            Some(((r0, r1), (ranges, n))) => {
                let ranges = &ranges[..n];
                let visits: i64 = (r1 - r0 + 1) * ranges.iter().map(|&(a, b)| b - a + 1).sum::<i64>();
                if visits <= self.cells.len() as i64 {
                    for row in r0..=r1 {
                        for &(c0, c1) in ranges {
                            for col in c0..=c1 {
                                if let Some(members) = self.cells.get(&Self::key(col, row)) {
                                    scan_cell(members, &mut collector);
                                }
                            }
                        }
                    }
                } else {
                    // Fewer occupied cells than cells in the cover: walk the occupied ones instead.
                    for (&key, members) in &self.cells {
                        let (col, row) = ((key >> 32) as i64, (key & 0xffff_ffff) as i64);
                        if (r0..=r1).contains(&row) && ranges.iter().any(|&(a, b)| (a..=b).contains(&col)) {
                            scan_cell(members, &mut collector);
                        }
                    }
                }
            }
            None => {
                for members in self.cells.values() {
                    scan_cell(members, &mut collector);
                }
            }
        }
        collector.finish();
    }
}

/// Keeps the nearest `limit` candidates of a radius query in the tail of the output buffer.
struct Collector<'a> {
    out: &'a mut Vec<(ObjectId, f64)>,
    start: usize,
    limit: usize,
    /// Candidates farther than this cannot make the result: either the radius or, once `limit` closer
    /// ones are known, the distance of the farthest of those.
    threshold: f64,
}

#[inline]
fn by_distance(a: &(ObjectId, f64), b: &(ObjectId, f64)) -> std::cmp::Ordering {
    a.1.total_cmp(&b.1).then(a.0.cmp(&b.0))
}

impl Collector<'_> {
    #[inline]
    fn push(&mut self, id: ObjectId, d: f64) {
        self.out.push((id, d));
        if self.out.len() - self.start >= self.limit.saturating_mul(2) {
            self.prune();
        }
    }

    /// Keeps the `limit` nearest candidates and tightens the threshold to the farthest of them.
    fn prune(&mut self) {
        let tail = &mut self.out[self.start..];
        if tail.len() <= self.limit {
            return;
        }
        tail.select_nth_unstable_by(self.limit - 1, by_distance);
        self.threshold = tail[self.limit - 1].1;
        self.out.truncate(self.start + self.limit);
    }

    fn finish(mut self) {
        self.prune();
        self.out[self.start..].sort_unstable_by(by_distance);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64, enough randomness for reproducible test data without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        /// Uniform in `[lo, hi)`.
        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
        }
    }

    fn random_box(rng: &mut Rng, min_size: f64, max_size: f64) -> BBox {
        let w = rng.range(min_size, max_size);
        let h = rng.range(min_size, max_size);
        let lon = rng.range(-180.0, 180.0 - w);
        let lat = rng.range(-90.0, 90.0 - h);
        [[lon, lat], [lon + w, lat + h]]
    }

    fn contains(b: &BBox, lon: f64, lat: f64) -> bool {
        b[0][0] <= lon && lon <= b[1][0] && b[0][1] <= lat && lat <= b[1][1]
    }

    fn sorted(mut v: Vec<FenceId>) -> Vec<FenceId> {
        v.sort_unstable();
        v
    }

    #[test]
    fn at_point_matches_brute_force() {
        let mut rng = Rng(1);
        let boxes: Vec<BBox> = (0..2000).map(|_| random_box(&mut rng, 0.5, 40.0)).collect();
        let mut idx = FenceIndex::new();
        for (i, b) in boxes.iter().enumerate() {
            idx.insert(i as FenceId, &[*b]);
        }
        assert_eq!(idx.len(), 2000);
        let mut out = Vec::new();
        let mut hits = 0;
        for i in 0..2000 {
            // Every fourth point sits exactly on a box corner to exercise inclusive edges.
            let (lon, lat) = if i % 4 == 0 {
                let b = boxes[i % boxes.len()];
                (b[1][0], b[0][1])
            } else {
                (rng.range(-180.0, 180.0), rng.range(-90.0, 90.0))
            };
            out.clear();
            idx.at_point(lon, lat, &mut out);
            let expect: Vec<FenceId> =
                (0..boxes.len() as FenceId).filter(|&j| contains(&boxes[j as usize], lon, lat)).collect();
            hits += expect.len();
            assert_eq!(sorted(out.clone()), expect, "point ({lon}, {lat})");
        }
        assert!(hits > 2000, "test data should produce overlaps, got {hits} hits");
    }

    #[test]
    fn bulk_matches_incremental() {
        let mut rng = Rng(2);
        let items: Vec<(FenceId, BBox)> =
            (0..1500).map(|i| (i % 1000, random_box(&mut rng, 0.5, 30.0))).collect();
        let bulk = FenceIndex::bulk(items.clone());
        let mut inc = FenceIndex::new();
        for id in 0..1000 {
            let boxes: Vec<BBox> = items.iter().filter(|(i, _)| *i == id).map(|(_, b)| *b).collect();
            inc.insert(id, &boxes);
        }
        assert_eq!(bulk.len(), 1000);
        assert_eq!(inc.len(), 1000);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..1000 {
            let (lon, lat) = (rng.range(-180.0, 180.0), rng.range(-90.0, 90.0));
            a.clear();
            b.clear();
            bulk.at_point(lon, lat, &mut a);
            inc.at_point(lon, lat, &mut b);
            let expect: Vec<FenceId> =
                sorted(items.iter().filter(|(_, bx)| contains(bx, lon, lat)).map(|(i, _)| *i).collect());
            let mut expect_dedup = expect.clone();
            expect_dedup.dedup();
            assert_eq!(a.len(), expect_dedup.len(), "no duplicates expected");
            assert_eq!(sorted(a.clone()), expect_dedup);
            assert_eq!(sorted(b.clone()), expect_dedup);
        }
    }

    #[test]
    fn remove_and_replace() {
        let mut idx = FenceIndex::new();
        assert!(idx.is_empty());
        idx.insert(1, &[[[0.0, 0.0], [1.0, 1.0]], [[5.0, 5.0], [6.0, 6.0]]]);
        idx.insert(2, &[[[0.5, 0.5], [2.0, 2.0]]]);
        let mut out = Vec::new();
        idx.at_point(0.75, 0.75, &mut out);
        assert_eq!(sorted(out.clone()), vec![1, 2]);

        assert!(idx.remove(1));
        assert!(!idx.remove(1));
        assert_eq!(idx.len(), 1);
        for p in [(0.75, 0.75), (5.5, 5.5)] {
            out.clear();
            idx.at_point(p.0, p.1, &mut out);
            assert!(!out.contains(&1));
        }

        // Re-inserting an id replaces its boxes instead of adding to them.
        idx.insert(2, &[[[10.0, 10.0], [11.0, 11.0]]]);
        out.clear();
        idx.at_point(0.75, 0.75, &mut out);
        assert!(out.is_empty());
        idx.at_point(10.5, 10.5, &mut out);
        assert_eq!(out, vec![2]);

        // Unusable boxes leave nothing behind.
        idx.insert(3, &[[[f64::NAN, 0.0], [1.0, 1.0]]]);
        assert_eq!(idx.len(), 1);
        assert!(idx.remove(2));
        assert!(idx.is_empty());
    }

    #[test]
    fn overlapping_boxes_of_one_fence_are_reported_once() {
        let mut idx = FenceIndex::new();
        idx.insert(7, &[[[0.0, 0.0], [2.0, 2.0]], [[1.0, 1.0], [3.0, 3.0]]]);
        idx.insert(8, &[[[0.0, 0.0], [3.0, 3.0]]]);
        let mut out = vec![99];
        idx.at_point(1.5, 1.5, &mut out);
        assert_eq!(out[0], 99, "existing contents are kept");
        assert_eq!(sorted(out[1..].to_vec()), vec![7, 8]);
    }

    #[test]
    fn antimeridian_split_boxes() {
        let mut idx = FenceIndex::new();
        // Explicit halves of a shape spanning 170E..170W.
        idx.insert(1, &[[[170.0, -10.0], [180.0, 10.0]], [[-180.0, -10.0], [-170.0, 10.0]]]);
        // The same shape given as one box with min_lon > max_lon.
        idx.insert(2, &[[[175.0, -5.0], [-175.0, 5.0]]]);
        idx.insert(3, &[[[-10.0, -10.0], [10.0, 10.0]]]);
        let at_in = |idx: &FenceIndex, lon, lat| {
            let mut out = Vec::new();
            idx.at_point(lon, lat, &mut out);
            sorted(out)
        };
        let at = |lon, lat| at_in(&idx, lon, lat);
        assert_eq!(at(179.0, 0.0), vec![1, 2]);
        assert_eq!(at(-179.0, 0.0), vec![1, 2]);
        assert_eq!(at(180.0, 0.0), vec![1, 2]);
        assert_eq!(at(-180.0, 0.0), vec![1, 2]);
        assert_eq!(at(172.0, 0.0), vec![1]);
        assert_eq!(at(-172.0, 8.0), vec![1]);
        assert_eq!(at(0.0, 0.0), vec![3]);
        // Longitudes beyond ±180 wrap.
        assert_eq!(at(181.0, 0.0), vec![1, 2]);
        assert_eq!(at(-539.0, 0.0), vec![1, 2]);
        assert_eq!(idx.len(), 3);
        let mut idx = idx.clone();
        assert!(idx.remove(2));
        assert_eq!(at_in(&idx, 179.0, 0.0), vec![1]);
    }

    #[test]
    fn the_cell_cache_answers_as_the_tree_does_and_follows_changes() {
        let mut rng = Rng(11);
        // Boxes of about a cache cell, in a small area, so short moves meet several of them.
        let mut idx = FenceIndex::new();
        for i in 0..3000 {
            let (lon, lat) = (rng.range(2.0, 2.5), rng.range(48.5, 49.0));
            let (w, h) = (rng.range(0.001, 0.03), rng.range(0.001, 0.03));
            idx.insert(i, &[[[lon, lat], [lon + w, lat + h]]]);
        }
        let (mut near, mut tree) = (Vec::new(), Vec::new());
        let mut check = |idx: &mut FenceIndex, rng: &mut Rng| {
            for _ in 0..2000 {
                let a = [rng.range(2.0, 2.5), rng.range(48.5, 49.0)];
                let step = if rng.range(0.0, 1.0) < 0.8 { 0.0005 } else { 0.03 };
                let b = [a[0] + rng.range(-step, step), a[1] + rng.range(-step, step)];
                near.clear();
                tree.clear();
                idx.near(a, b, &mut near);
                idx.along_segment(a, b, &mut tree);
                assert_eq!(sorted(near.clone()), sorted(tree.clone()), "{a:?} -> {b:?}");
            }
        };
        check(&mut idx, &mut rng);
        // Changes empty the cache: removed fences vanish and new ones appear at once.
        for i in 0..1500 {
            idx.remove(i);
        }
        idx.insert(9999, &[[[2.0, 48.5], [2.5, 49.0]]]);
        check(&mut idx, &mut rng);
        near.clear();
        idx.near([2.25, 48.75], [2.2501, 48.7501], &mut near);
        assert!(near.contains(&9999) && near.iter().all(|&f| f >= 1500));
    }

    #[test]
    fn segments_match_brute_force_and_wrap() {
        let mut rng = Rng(3);
        let boxes: Vec<BBox> = (0..2000).map(|_| random_box(&mut rng, 0.5, 20.0)).collect();
        let idx = FenceIndex::bulk(boxes.iter().enumerate().map(|(i, b)| (i as FenceId, *b)).collect());
        let inter = |b: &BBox, q: &BBox| {
            b[0][0] <= q[1][0] && q[0][0] <= b[1][0] && b[0][1] <= q[1][1] && q[0][1] <= b[1][1]
        };
        let mut out = Vec::new();
        for _ in 0..1000 {
            let a = [rng.range(-180.0, 180.0), rng.range(-90.0, 90.0)];
            let b = [rng.range(-180.0, 180.0), rng.range(-90.0, 90.0)];
            let (lat_lo, lat_hi) = (a[1].min(b[1]), a[1].max(b[1]));
            let queries: Vec<BBox> = if (b[0] - a[0]).abs() <= 180.0 {
                vec![[[a[0].min(b[0]), lat_lo], [a[0].max(b[0]), lat_hi]]]
            } else {
                let (e, w) = (a[0].max(b[0]), a[0].min(b[0]));
                vec![[[e, lat_lo], [180.0, lat_hi]], [[-180.0, lat_lo], [w, lat_hi]]]
            };
            let expect: Vec<FenceId> = (0..boxes.len() as FenceId)
                .filter(|&j| queries.iter().any(|q| inter(&boxes[j as usize], q)))
                .collect();
            out.clear();
            idx.along_segment(a, b, &mut out);
            assert_eq!(out.len(), expect.len(), "duplicates for {a:?} -> {b:?}");
            assert_eq!(sorted(out.clone()), expect);
        }

        // A short hop across the antimeridian touches the fences on both sides, not the whole world.
        let mut idx = FenceIndex::new();
        idx.insert(1, &[[[178.0, 0.0], [179.5, 1.0]]]);
        idx.insert(2, &[[[-179.5, 0.0], [-178.0, 1.0]]]);
        idx.insert(3, &[[[0.0, 0.0], [1.0, 1.0]]]);
        idx.insert(4, &[[[170.0, 0.0], [-170.0, 1.0]]]);
        idx.insert(5, &[[[-180.0, 0.0], [180.0, 1.0]]]);
        for (a, b) in [([179.0, 0.5], [-179.0, 0.5]), ([-179.0, 0.5], [179.0, 0.5])] {
            out.clear();
            idx.along_segment(a, b, &mut out);
            assert_eq!(sorted(out.clone()), vec![1, 2, 4, 5], "{a:?} -> {b:?}");
        }
        out.clear();
        idx.along_segment([179.0, 5.0], [-179.0, 6.0], &mut out);
        assert!(out.is_empty());
        out.clear();
        idx.along_segment([-1.0, 0.5], [2.0, 0.5], &mut out);
        assert_eq!(sorted(out.clone()), vec![3, 5]);
    }

    #[test]
    fn at_point_does_not_allocate_with_capacity() {
        let mut rng = Rng(4);
        let idx =
            FenceIndex::bulk((0..3000).map(|i| (i / 2, random_box(&mut rng, 1.0, 60.0))).collect::<Vec<_>>());
        let mut out: Vec<FenceId> = Vec::with_capacity(4096);
        let ptr = out.as_ptr();
        for _ in 0..1000 {
            out.clear();
            idx.at_point(rng.range(-180.0, 180.0), rng.range(-90.0, 90.0), &mut out);
            idx.along_segment([rng.range(-180.0, 180.0), 0.0], [rng.range(-180.0, 180.0), 10.0], &mut out);
        }
        assert_eq!(out.as_ptr(), ptr);
        assert_eq!(out.capacity(), 4096);
    }

    #[test]
    fn haversine_reference_values() {
        let deg = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;
        assert!((haversine_m(0.0, 0.0, 1.0, 0.0) - deg).abs() < 1e-6);
        assert!((haversine_m(10.0, 0.0, 10.0, 1.0) - deg).abs() < 1e-6);
        assert!((haversine_m(179.5, 0.0, -179.5, 0.0) - deg).abs() < 1e-6);
        assert!((haversine_m(0.0, 0.0, 180.0, 0.0) - EARTH_RADIUS_M * std::f64::consts::PI).abs() < 1e-6);
        assert!(haversine_m(0.0, 90.0, 123.0, 90.0).abs() < 1e-6);
        // Paris - London, about 343.5 km on the mean sphere.
        let d = haversine_m(2.3522, 48.8566, -0.1276, 51.5072);
        assert!((d - 343_500.0).abs() < 1_000.0, "{d}");
    }

    fn brute_nearby(
        pts: &[(ObjectId, f64, f64)],
        lon: f64,
        lat: f64,
        r: f64,
        limit: usize,
    ) -> Vec<(ObjectId, f64)> {
        let mut v: Vec<(ObjectId, f64)> = pts
            .iter()
            .map(|&(id, x, y)| (id, haversine_m(lon, lat, x, y)))
            .filter(|&(_, d)| d <= r)
            .collect();
        v.sort_by(by_distance);
        v.truncate(limit);
        v
    }

    /// Points clustered where cell geometry is awkward: poles, antimeridian, and everywhere else.
    fn awkward_point(rng: &mut Rng) -> (f64, f64) {
        match rng.next_u64() % 4 {
            0 => (rng.range(-180.0, 180.0), rng.range(85.0, 90.0)),
            1 => (rng.range(-180.0, 180.0), rng.range(-90.0, -85.0)),
            2 => {
                let lon = rng.range(175.0, 185.0);
                (if lon >= 180.0 { lon - 360.0 } else { lon }, rng.range(-60.0, 60.0))
            }
            _ => (rng.range(-180.0, 180.0), rng.range(-90.0, 90.0)),
        }
    }

    #[test]
    fn nearby_matches_brute_force() {
        let mut rng = Rng(5);
        for cell in [0.1, 1.0, 7.0, 45.0] {
            let mut grid = ObjectGrid::new(cell);
            let mut pts = Vec::new();
            for id in 0..3000 {
                let (lon, lat) = awkward_point(&mut rng);
                grid.upsert(id, lon, lat);
                pts.push((id, lon, lat));
            }
            // Exact poles and both antimeridian spellings.
            for (id, lon, lat) in
                [(3000, 0.0, 90.0), (3001, 50.0, -90.0), (3002, 180.0, 0.0), (3003, -180.0, 1.0)]
            {
                grid.upsert(id, lon, lat);
                pts.push((id, lon, lat));
            }
            assert_eq!(grid.len(), pts.len());
            let mut out = Vec::new();
            let mut found = 0;
            for q in 0..300 {
                let (lon, lat) = awkward_point(&mut rng);
                let (lon, lat) = match q {
                    0 => (0.0, 90.0),
                    1 => (180.0, 0.5),
                    2 => (-180.0, -89.9),
                    _ => (lon, lat),
                };
                for r in [1_000.0, 50_000.0, 300_000.0, 2_000_000.0, 12_000_000.0, 30_000_000.0] {
                    out.clear();
                    grid.nearby(lon, lat, r, usize::MAX, &mut out);
                    let expect = brute_nearby(&pts, lon, lat, r, usize::MAX);
                    found += expect.len();
                    assert_eq!(out, expect, "cell {cell}, centre ({lon}, {lat}), radius {r}");
                }
            }
            assert!(found > 10_000, "radii should catch points, got {found}");
        }
    }

    #[test]
    fn nearby_limit_and_ordering() {
        let mut grid = ObjectGrid::new(0.05);
        let mut pts = Vec::new();
        let mut rng = Rng(6);
        for id in 0..2000 {
            let (lon, lat) = (rng.range(13.0, 14.0), rng.range(52.0, 53.0));
            grid.upsert(id, lon, lat);
            pts.push((id, lon, lat));
        }
        // Two objects at the same spot: ties go by id.
        grid.upsert(5000, 13.5, 52.5);
        grid.upsert(4999, 13.5, 52.5);
        pts.push((5000, 13.5, 52.5));
        pts.push((4999, 13.5, 52.5));
        let mut out = vec![(77, -1.0)];
        grid.nearby(13.5, 52.5, 20_000.0, 10, &mut out);
        assert_eq!(out[0], (77, -1.0));
        assert_eq!(&out[1..], &brute_nearby(&pts, 13.5, 52.5, 20_000.0, 10)[..]);
        assert_eq!(out[1].0, 4999);
        assert_eq!(out[2].0, 5000);
        assert!(out[1..].windows(2).all(|w| w[0].1 <= w[1].1));
        for limit in [0, 1, 3, 57, 500, 5000] {
            let mut out = Vec::with_capacity(2 * limit + 1);
            let cap = out.capacity();
            grid.nearby(13.3, 52.7, 30_000.0, limit, &mut out);
            assert_eq!(out, brute_nearby(&pts, 13.3, 52.7, 30_000.0, limit), "limit {limit}");
            assert_eq!(out.capacity(), cap, "limit {limit}");
        }
        out.clear();
        grid.nearby(13.5, 52.5, 0.0, 10, &mut out);
        assert_eq!(out, vec![(4999, 0.0), (5000, 0.0)]);
        out.clear();
        grid.nearby(13.5, 52.5, -1.0, 10, &mut out);
        grid.nearby(f64::NAN, 52.5, 1_000.0, 10, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn upsert_moves_between_cells() {
        let mut grid = ObjectGrid::new(1.0);
        assert!(grid.is_empty());
        for id in 0..10 {
            grid.upsert(id, 0.5, 0.5);
        }
        grid.upsert(3, 0.6, 0.6);
        assert_eq!(grid.position(3), Some((0.6, 0.6)));
        // Moving out of a shared cell swaps another object into its place; both must stay findable.
        grid.upsert(0, 10.5, 10.5);
        grid.upsert(9, -170.5, 45.0);
        assert_eq!(grid.len(), 10);
        assert_eq!(grid.position(0), Some((10.5, 10.5)));
        assert_eq!(grid.position(9), Some((-170.5, 45.0)));
        let mut out = Vec::new();
        grid.nearby(0.5, 0.5, 50_000.0, 100, &mut out);
        let mut ids: Vec<ObjectId> = out.iter().map(|p| p.0).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        out.clear();
        grid.nearby(10.5, 10.5, 1.0, 100, &mut out);
        assert_eq!(out, vec![(0, 0.0)]);

        // Wrapping, clamping and ignored updates.
        grid.upsert(1, 190.0, 95.0);
        assert_eq!(grid.position(1), Some((-170.0, 90.0)));
        grid.upsert(1, f64::NAN, 0.0);
        assert_eq!(grid.position(1), Some((-170.0, 90.0)));

        assert!(grid.remove(0));
        assert!(!grid.remove(0));
        assert_eq!(grid.position(0), None);
        out.clear();
        grid.nearby(10.5, 10.5, 1.0, 100, &mut out);
        assert!(out.is_empty());

        // Random walks keep every slot consistent with a brute-force model.
        let mut rng = Rng(7);
        let mut model: HashMap<ObjectId, (f64, f64)> = HashMap::new();
        let mut grid = ObjectGrid::new(0.5);
        for step in 0..50_000 {
            let id = (rng.next_u64() % 500) as ObjectId;
            if step % 17 == 0 {
                assert_eq!(grid.remove(id), model.remove(&id).is_some());
                continue;
            }
            let (lon, lat) = match model.get(&id) {
                Some(&(x, y)) => {
                    (wrap_lon(x + rng.range(-0.7, 0.7)), (y + rng.range(-0.7, 0.7)).clamp(-90.0, 90.0))
                }
                None => (rng.range(-180.0, 180.0), rng.range(-90.0, 90.0)),
            };
            grid.upsert(id, lon, lat);
            model.insert(id, (lon, lat));
        }
        assert_eq!(grid.len(), model.len());
        for (&id, &p) in &model {
            assert_eq!(grid.position(id), Some(p));
        }
        let pts: Vec<(ObjectId, f64, f64)> = model.iter().map(|(&id, &(x, y))| (id, x, y)).collect();
        for _ in 0..200 {
            let (lon, lat) = (rng.range(-180.0, 180.0), rng.range(-90.0, 90.0));
            out.clear();
            grid.nearby(lon, lat, 1_500_000.0, usize::MAX, &mut out);
            assert_eq!(out, brute_nearby(&pts, lon, lat, 1_500_000.0, usize::MAX));
        }
    }

    /// Release-mode throughput: `cargo test --release -- --ignored --nocapture throughput`.
    #[test]
    #[ignore]
    fn throughput() {
        use std::hint::black_box;
        use std::time::Instant;
        let mut rng = Rng(42);
        let fences: Vec<(FenceId, BBox)> =
            (0..10_000).map(|i| (i, random_box(&mut rng, 0.01, 1.0))).collect();
        let mut idx = FenceIndex::new();
        let t = Instant::now();
        for (id, b) in &fences {
            idx.insert(*id, &[*b]);
        }
        let insert_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let bulk = FenceIndex::bulk(fences.clone());
        let bulk_s = t.elapsed().as_secs_f64();
        let n = 1_000_000;
        let pts: Vec<(f64, f64)> =
            (0..n).map(|_| (rng.range(-180.0, 180.0), rng.range(-90.0, 90.0))).collect();
        let mut out = Vec::with_capacity(64);
        for (name, index) in [("inserted", &idx), ("bulk", &bulk)] {
            let t = Instant::now();
            let mut hits = 0;
            for &(lon, lat) in &pts {
                out.clear();
                index.at_point(lon, lat, &mut out);
                hits += out.len();
            }
            let s = t.elapsed().as_secs_f64();
            println!("at_point ({name}): {:.1} M/s, {hits} hits", n as f64 / s / 1e6);
            let t = Instant::now();
            for w in pts.windows(2).take(n / 10) {
                out.clear();
                let b = [w[0].0 + (w[1].0 - w[0].0) * 1e-3, w[0].1 + (w[1].1 - w[0].1) * 1e-3];
                index.along_segment([w[0].0, w[0].1], b, &mut out);
                black_box(&out);
            }
            let s = t.elapsed().as_secs_f64();
            println!("along_segment ({name}, short): {:.1} M/s", (n / 10) as f64 / s / 1e6);
        }
        println!("insert 10k: {:.1} ms, bulk 10k: {:.1} ms", insert_s * 1e3, bulk_s * 1e3);

        for (label, lon_r, lat_r) in [("world", 180.0, 90.0), ("1x1 deg city", 0.5, 0.5)] {
            let mut grid = ObjectGrid::new(0.01);
            let mut pos: Vec<(f64, f64)> =
                (0..100_000).map(|_| (rng.range(-lon_r, lon_r), rng.range(-lat_r, lat_r))).collect();
            for (i, p) in pos.iter().enumerate() {
                grid.upsert(i as ObjectId, p.0, p.1);
            }
            // Realistic moves: a few metres per update, occasionally crossing a cell edge.
            let steps: Vec<(u32, f64, f64)> = (0..n)
                .map(|_| ((rng.next_u64() % 100_000) as u32, rng.range(-1e-4, 1e-4), rng.range(-1e-4, 1e-4)))
                .collect();
            let t = Instant::now();
            for &(id, dx, dy) in &steps {
                let p = &mut pos[id as usize];
                p.0 = (p.0 + dx).clamp(-lon_r, lon_r);
                p.1 = (p.1 + dy).clamp(-lat_r, lat_r);
                grid.upsert(id, p.0, p.1);
            }
            let s = t.elapsed().as_secs_f64();
            println!("upsert ({label}, small moves): {:.1} M/s", n as f64 / s / 1e6);
            let jumps: Vec<(u32, f64, f64)> = (0..n)
                .map(|_| {
                    ((rng.next_u64() % 100_000) as u32, rng.range(-lon_r, lon_r), rng.range(-lat_r, lat_r))
                })
                .collect();
            let t = Instant::now();
            for &(id, x, y) in &jumps {
                grid.upsert(id, x, y);
            }
            let s = t.elapsed().as_secs_f64();
            println!("upsert ({label}, random jumps): {:.1} M/s", n as f64 / s / 1e6);
            let q = 200_000;
            let mut out = Vec::with_capacity(64);
            let t = Instant::now();
            let mut found = 0;
            for _ in 0..q {
                out.clear();
                grid.nearby(rng.range(-lon_r, lon_r), rng.range(-lat_r, lat_r), 1_000.0, 20, &mut out);
                found += out.len();
            }
            let s = t.elapsed().as_secs_f64();
            println!(
                "nearby 1 km ({label}): {:.2} M/s, avg {:.2} results",
                q as f64 / s / 1e6,
                found as f64 / q as f64
            );
        }
    }
}
