//! A GeoFire-style evaluator: what an app on an ordered key-value store (Firestore, Realtime Database)
//! does with geofire-common.
//!
//! - Objects are stored under their 10-character geohash in an ordered map, like GeoFire's `g` field,
//!   and a radius query reads the ranges of [`geohash::query_bounds`] (`geohashQueryBounds`), then keeps
//!   the points within the radius. The distance filter is the server's haversine on its sphere (GeoFire's
//!   `distanceBetween` uses a radius of 6,371 km), so that the evaluators answer the same question.
//! - Fences are listed under the geohash cells covering their bounding boxes, at the finest precision
//!   (up to 10 characters) at which at most [`MAX_CELLS_PER_FENCE`] cells cover them; a point looks up
//!   its own cell at each precision in use, and each candidate gets the server's exact test.

use std::collections::BTreeSet;
use std::ops::{Bound, RangeBounds};

use super::geohash::{self, axis_bits, bisect, Geohash, Range, GEOFIRE_PRECISION};
use super::{check_position, check_radius_query, check_sizes, Dataset, EvalError, Evaluator};
use crate::topics::geo::detect::{self, LatLon, Shape};
use crate::topics::geo::index::{haversine_m, FastMap};

/// Finest geohash precision fences are listed at (cells of about 1.2 m × 0.6 m).
pub const MAX_FENCE_PRECISION: usize = 10;
/// Most cells a fence is listed under, unless even one-character cells need more. Four lets a fence
/// straddle a cell corner at the precision of its own size; more cells per fence buy fewer candidates per
/// point at the cost of memory.
pub const MAX_CELLS_PER_FENCE: u64 = 4;

/// A stored point: its geohash, then its id (ids break ties between objects in the same cell).
type PointKey = ([u8; GEOFIRE_PRECISION], u32);

/// Geohash indexes of points and fences.
#[derive(Debug)]
pub struct GeohashEval {
    points: BTreeSet<PointKey>,
    positions: Vec<LatLon>,
    shapes: Vec<Shape>,
    /// Fences listed under each cell, keyed by [`cell_key`].
    cells: FastMap<u64, Vec<u32>>,
    /// Bit `p` is set when some fence is listed at precision `p`.
    levels: u32,
    /// Scratch for a query's ranges.
    ranges: Vec<Range>,
}

/// A map key for the cell `(col, row)` at `precision` characters; columns and rows have at most 25 bits.
fn cell_key(precision: usize, col: u64, row: u64) -> u64 {
    ((precision as u64) << 56) | (col << 28) | row
}

/// The column and row at [`MAX_FENCE_PRECISION`] of a position.
fn finest_cell(lon: f64, lat: f64) -> (u64, u64) {
    let (lon_bits, lat_bits) = axis_bits(MAX_FENCE_PRECISION);
    (bisect(lon, -180.0, 180.0, lon_bits), bisect(lat, -90.0, 90.0, lat_bits))
}

/// Shifts that take a finest-precision column and row to `precision`.
fn coarsen(precision: usize) -> (u32, u32) {
    let (lon_max, lat_max) = axis_bits(MAX_FENCE_PRECISION);
    let (lon_bits, lat_bits) = axis_bits(precision);
    (lon_max - lon_bits, lat_max - lat_bits)
}

/// The precision a shape is listed at and the keys of its cells there (no duplicates).
fn fence_cells(shape: &Shape) -> (usize, Vec<u64>) {
    // Corners at the finest precision: the bisection is hierarchical, so a coarser cell is a prefix.
    let corners: Vec<[(u64, u64); 2]> =
        detect::bbox(shape).iter().map(|&[[w, s], [e, n]]| [finest_cell(w, s), finest_cell(e, n)]).collect();
    for precision in (1..=MAX_FENCE_PRECISION).rev() {
        let (dc, dr) = coarsen(precision);
        let count: u64 = corners
            .iter()
            .map(|[(c0, r0), (c1, r1)]| ((c1 >> dc) - (c0 >> dc) + 1) * ((r1 >> dr) - (r0 >> dr) + 1))
            .sum();
        if count <= MAX_CELLS_PER_FENCE || precision == 1 {
            let mut keys = Vec::with_capacity(count as usize);
            for [(c0, r0), (c1, r1)] in &corners {
                for col in (c0 >> dc)..=(c1 >> dc) {
                    for row in (r0 >> dr)..=(r1 >> dr) {
                        keys.push(cell_key(precision, col, row));
                    }
                }
            }
            keys.sort_unstable();
            keys.dedup();
            return (precision, keys);
        }
    }
    unreachable!("precision 1 always returns")
}

/// The stored-key bounds of a GeoFire range `start <= hash < end`. The stored hashes have
/// [`GEOFIRE_PRECISION`] characters and bounds may be shorter or longer; string order decides, as in the
/// database: a hash that is a prefix of a longer bound sorts before it.
fn key_bounds(range: &Range) -> (Bound<PointKey>, Bound<PointKey>) {
    let key = |s: &[u8]| {
        // '0' is the smallest geohash character: padding with it keeps a shorter bound's place.
        let mut k = [b'0'; GEOFIRE_PRECISION];
        let n = s.len().min(GEOFIRE_PRECISION);
        k[..n].copy_from_slice(&s[..n]);
        k
    };
    let (start, end) = (range.start.as_bytes(), range.end.as_bytes());
    let lower = if start.len() <= GEOFIRE_PRECISION {
        Bound::Included((key(start), 0))
    } else {
        Bound::Excluded((key(start), u32::MAX))
    };
    let upper = if end.len() <= GEOFIRE_PRECISION {
        Bound::Excluded((key(end), 0))
    } else {
        Bound::Included((key(end), u32::MAX))
    };
    (lower, upper)
}

/// Whether a `BTreeSet::range` with these bounds would be non-empty-able (and not panic).
fn ordered(lower: &Bound<PointKey>, upper: &Bound<PointKey>) -> bool {
    match (lower, upper) {
        (Bound::Included(a), Bound::Included(b)) => a <= b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => a < b,
        _ => true,
    }
}

impl GeohashEval {
    /// Stores the points by geohash and lists the fences under their cells.
    pub fn load(data: &Dataset) -> Result<Self, EvalError> {
        check_sizes(data)?;
        let mut points = BTreeSet::new();
        for (id, p) in data.points.iter().enumerate() {
            let hash = geohash::encode(p.lat, p.lon, GEOFIRE_PRECISION);
            let mut key = [0; GEOFIRE_PRECISION];
            key.copy_from_slice(hash.as_bytes());
            points.insert((key, id as u32));
        }
        let mut cells: FastMap<u64, Vec<u32>> = FastMap::default();
        let mut levels = 0;
        for (id, shape) in data.fences.iter().enumerate() {
            let (precision, keys) = fence_cells(shape);
            levels |= 1 << precision;
            for k in keys {
                cells.entry(k).or_default().push(id as u32);
            }
        }
        Ok(GeohashEval {
            points,
            positions: data.points.clone(),
            shapes: data.fences.clone(),
            cells,
            levels,
            ranges: Vec::new(),
        })
    }

    /// The ranges GeoFire reads for a radius query (for tests that explain a difference).
    pub fn query_ranges(at: LatLon, radius_m: f64) -> Vec<Range> {
        let mut ranges = Vec::new();
        geohash::query_bounds(at.lat, at.lon, radius_m, &mut ranges);
        ranges
    }

    /// Whether a stored point falls in one of `ranges`.
    pub fn in_ranges(ranges: &[Range], p: LatLon) -> bool {
        let hash: Geohash = geohash::encode(p.lat, p.lon, GEOFIRE_PRECISION);
        let mut key = [0; GEOFIRE_PRECISION];
        key.copy_from_slice(hash.as_bytes());
        ranges.iter().any(|r| key_bounds(r).contains(&(key, 0)))
    }
}

impl Evaluator for GeohashEval {
    fn name(&self) -> &'static str {
        "geohash"
    }

    fn fences_at(&mut self, at: LatLon, out: &mut Vec<u32>) -> Result<(), EvalError> {
        check_position(at)?;
        let (col, row) = finest_cell(at.lon, at.lat);
        let mut levels = self.levels;
        while levels != 0 {
            let precision = levels.trailing_zeros() as usize;
            levels &= levels - 1;
            let (dc, dr) = coarsen(precision);
            if let Some(fences) = self.cells.get(&cell_key(precision, col >> dc, row >> dr)) {
                out.extend(fences.iter().filter(|&&f| detect::contains(&self.shapes[f as usize], at)));
            }
        }
        Ok(())
    }

    fn objects_within(&mut self, at: LatLon, radius_m: f64, out: &mut Vec<u32>) -> Result<(), EvalError> {
        check_radius_query(at, radius_m)?;
        self.ranges.clear();
        geohash::query_bounds(at.lat, at.lon, radius_m, &mut self.ranges);
        for range in &self.ranges {
            let (lower, upper) = key_bounds(range);
            if !ordered(&lower, &upper) {
                continue;
            }
            for &(_, id) in self.points.range((lower, upper)) {
                let p = self.positions[id as usize];
                if haversine_m(at.lon, at.lat, p.lon, p.lat) <= radius_m {
                    out.push(id);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(v: serde_json::Value) -> Shape {
        detect::parse_shape(&v, 100).unwrap()
    }

    #[test]
    fn fences_are_listed_at_the_precision_of_their_size() {
        // A 100 m circle in Paris: 6-character cells are 1.2 km × 0.6 km, 7-character ones 153 m square.
        let (precision, keys) =
            fence_cells(&shape(json!({"type": "Point", "coordinates": [2.35, 48.85], "radius": 100})));
        assert!((6..=7).contains(&precision), "{precision}");
        assert!(!keys.is_empty() && keys.len() as u64 <= MAX_CELLS_PER_FENCE);
        // A circle around the north pole spans every longitude: one-character cells, all 8 of the top row.
        let (precision, keys) =
            fence_cells(&shape(json!({"type": "Point", "coordinates": [0, 89.99], "radius": 5000})));
        assert_eq!((precision, keys.len()), (1, 8));
    }

    #[test]
    fn bounds_longer_than_the_stored_hashes_match_nothing() {
        // Radii this small ask for more than 10 characters; GeoFire's stored hashes sort before them.
        // (Below about 0.11 m geofire-common gives up on longitude bits and reads a whole hemisphere.)
        let data = Dataset { fences: Vec::new(), points: vec![LatLon { lat: 10.0, lon: 10.0 }] };
        let mut eval = GeohashEval::load(&data).unwrap();
        let at = LatLon { lat: 10.0, lon: 10.0 };
        assert!(geohash::bounding_box_bits(at.lat, 0.2) > 50);
        assert!(geohash::bounds_may_miss(at.lat, 0.2));
        let mut out = Vec::new();
        eval.objects_within(at, 0.2, &mut out).unwrap();
        assert!(out.is_empty());
        eval.objects_within(at, 1.0, &mut out).unwrap();
        assert_eq!(out, vec![0]);
    }

    #[test]
    fn bad_queries_are_refused() {
        let mut eval = GeohashEval::load(&Dataset::default()).unwrap();
        let mut out = Vec::new();
        let err = eval.fences_at(LatLon { lat: 91.0, lon: 0.0 }, &mut out).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        let err = eval.objects_within(LatLon { lat: 0.0, lon: 0.0 }, -1.0, &mut out).unwrap_err();
        assert!(err.to_string().contains("radius -1 m"), "{err}");
        let err = eval.objects_within(LatLon { lat: f64::NAN, lon: 0.0 }, 1.0, &mut out).unwrap_err();
        assert!(err.to_string().contains("finite"), "{err}");
    }
}
