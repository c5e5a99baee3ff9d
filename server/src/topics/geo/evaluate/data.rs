//! Reproducible fences and points for comparing evaluators: a city for the benchmark, and an awkward
//! world (the equator, the antimeridian, both poles) for the correctness test.
//!
//! Fences are built as GeoJSON and parsed by [`detect::parse_shape`], so every evaluator gets exactly the
//! shapes the server would store.

use serde_json::json;

use crate::topics::geo::detect::{self, LatLon, Shape};
use crate::topics::geo::index::EARTH_RADIUS_M;

/// Metres per degree of latitude on the server's sphere.
const M_PER_DEG: f64 = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

/// Vertices allowed when parsing generated fences (a multipolygon has at most 2 × (12 + 8)).
const MAX_VERTICES: usize = 1000;

/// SplitMix64: reproducible data from a seed without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// Log-uniform in `[lo, hi)`: as many small values per decade as large ones.
    pub fn log_range(&mut self, lo: f64, hi: f64) -> f64 {
        self.range(lo.ln(), hi.ln()).exp()
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.range(0.0, 1.0) < p
    }
}

/// A longitude/latitude rectangle that positions are drawn from; longitudes past 180 wrap around.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// West edge, in degrees.
    pub lon0: f64,
    /// South edge, in degrees.
    pub lat0: f64,
    /// Width and height, in degrees.
    pub width: f64,
    pub height: f64,
}

impl Region {
    /// A uniform position in the region (uniform in degrees, not in area).
    pub fn sample(&self, rng: &mut Rng) -> LatLon {
        let lon = rng.range(self.lon0, self.lon0 + self.width);
        let lat = rng.range(self.lat0, self.lat0 + self.height).clamp(-90.0, 90.0);
        LatLon { lat, lon: wrap(lon) }
    }
}

/// The benchmark's city: 1° × 1° around Paris, as `examples/geo_bench.rs` uses.
pub const CITY: Region = Region { lon0: 2.0, lat0: 48.5, width: 1.0, height: 1.0 };

/// Where the correctness test puts fences, points and queries: a city block, the crossing of the equator
/// and the prime meridian (geohash's top-level cell edges), the antimeridian, and caps around both
/// poles.
pub const AWKWARD: [Region; 5] = [
    Region { lon0: 2.3, lat0: 48.8, width: 0.1, height: 0.1 },
    Region { lon0: -0.05, lat0: -0.05, width: 0.1, height: 0.1 },
    Region { lon0: 179.95, lat0: -0.05, width: 0.1, height: 0.1 },
    Region { lon0: -180.0, lat0: 89.9, width: 360.0, height: 0.1 },
    Region { lon0: -180.0, lat0: -90.0, width: 360.0, height: 0.1 },
];

/// Fences and points, numbered by position: fence `i` is `fences[i]`, point `i` is `points[i]`.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub fences: Vec<Shape>,
    pub points: Vec<LatLon>,
}

impl Dataset {
    /// The benchmark's data over [`CITY`]: fences of 20 to 500 m (circles, polygons, a third of them with a
    /// hole, and two-part multipolygons), one in 200 a large one of 2 to 10 km, and points uniform over
    /// the area.
    pub fn city(fences: usize, points: usize, seed: u64) -> Dataset {
        let mut rng = Rng(seed);
        let fences = (0..fences)
            .map(|i| {
                let size = if i % 200 == 199 { rng.range(2_000.0, 10_000.0) } else { rng.range(20.0, 500.0) };
                let at = CITY.sample(&mut rng);
                fence(&mut rng, at, size)
            })
            .collect();
        let points = (0..points).map(|_| CITY.sample(&mut rng)).collect();
        Dataset { fences, points }
    }

    /// The correctness test's data over [`AWKWARD`]: fences of 10 m to 3 km (log-uniform) and points,
    /// spread evenly over the regions.
    pub fn awkward(fences: usize, points: usize, seed: u64) -> Dataset {
        let mut rng = Rng(seed);
        let fences = (0..fences)
            .map(|i| {
                let at = AWKWARD[i % AWKWARD.len()].sample(&mut rng);
                let size = rng.log_range(10.0, 3_000.0);
                fence(&mut rng, at, size)
            })
            .collect();
        let points = (0..points).map(|i| AWKWARD[i % AWKWARD.len()].sample(&mut rng)).collect();
        Dataset { fences, points }
    }
}

/// Wraps a longitude into [-180, 180).
fn wrap(lon: f64) -> f64 {
    (lon + 180.0).rem_euclid(360.0) - 180.0
}

/// A fence of about `size` metres around `at`: half circles, the rest polygons (a third with a hole)
/// and, one in five of those, two-part multipolygons.
fn fence(rng: &mut Rng, at: LatLon, size: f64) -> Shape {
    let geometry = if rng.chance(0.5) {
        json!({"type": "Point", "coordinates": [at.lon, at.lat], "radius": size})
    } else {
        // Keep polygons clear of the poles (a ring around a pole is not a fence) and narrower than 60° of
        // longitude, so unwrapping reads every edge the short way.
        let max_m = 60.0 * M_PER_DEG * at.lat.to_radians().cos();
        let size = size.min(max_m).max(1.0);
        let margin = 2.5 * size / M_PER_DEG;
        let lat = at.lat.clamp(-89.99 + margin, 89.99 - margin);
        let hole = rng.chance(1.0 / 3.0);
        if rng.chance(0.2) {
            // Parts side by side, 2.5 sizes apart: disjoint.
            let east = size * 2.5 / (M_PER_DEG * lat.to_radians().cos());
            let a = star(rng, at.lon, lat, size, hole);
            let b = star(rng, wrap(at.lon + east), lat, size * 0.8, false);
            json!({"type": "MultiPolygon", "coordinates": [a, b]})
        } else {
            json!({"type": "Polygon", "coordinates": star(rng, at.lon, lat, size, hole)})
        }
    };
    detect::parse_shape(&geometry, MAX_VERTICES).expect("generated fences are valid")
}

/// Rings of a star-shaped polygon of radius about `size` metres around `(lon, lat)`: 6 to 12 vertices at
/// 0.6 to 1 × `size`, counter-clockwise, and perhaps a clockwise hole of 0.1 to 0.3 × `size`, which
/// every edge of the exterior clears.
fn star(rng: &mut Rng, lon: f64, lat: f64, size: f64, hole: bool) -> Vec<Vec<[f64; 2]>> {
    let ring = |rng: &mut Rng, n: usize, lo: f64, hi: f64, clockwise: bool| {
        let m_per_lon = M_PER_DEG * lat.to_radians().cos();
        let mut ring: Vec<[f64; 2]> = (0..n)
            .map(|i| {
                // Jittered but evenly spread angles: no gap over 1.8 steps, so the star stays simple.
                let t = (i as f64 + rng.range(0.0, 0.8)) / n as f64 * std::f64::consts::TAU;
                let r = size * rng.range(lo, hi);
                [wrap(lon + r * t.cos() / m_per_lon), lat + r * t.sin() / M_PER_DEG]
            })
            .collect();
        if clockwise {
            ring.reverse();
        }
        ring.push(ring[0]);
        ring
    };
    let n = 6 + (rng.next_u64() % 7) as usize;
    let mut rings = vec![ring(rng, n, 0.6, 1.0, false)];
    if hole {
        let n = 5 + (rng.next_u64() % 4) as usize;
        rings.push(ring(rng, n, 0.1, 0.3, true));
    }
    rings
}

/// Radius queries over `regions`: centres drawn in turn from each region, radii log-uniform in
/// `[min_m, max_m)`.
pub fn radius_queries(
    rng: &mut Rng,
    regions: &[Region],
    n: usize,
    min_m: f64,
    max_m: f64,
) -> Vec<(LatLon, f64)> {
    (0..n).map(|i| (regions[i % regions.len()].sample(rng), rng.log_range(min_m, max_m))).collect()
}

/// Query positions drawn in turn from each of `regions`.
pub fn positions(rng: &mut Rng, regions: &[Region], n: usize) -> Vec<LatLon> {
    (0..n).map(|i| regions[i % regions.len()].sample(rng)).collect()
}

/// The vertices of a polygon fence (longitudes wrapped into [-180, 180)) or the centre of a circle:
/// queries on a boundary, where every evaluator must count the point as inside.
pub fn vertices(shape: &Shape) -> Vec<LatLon> {
    match shape {
        Shape::Circle { center, .. } => vec![*center],
        Shape::Area(a) => a
            .polygons()
            .iter()
            .flat_map(|p| std::iter::once(p.exterior()).chain(p.interiors()))
            .flat_map(|ring| ring.coords().map(|c| LatLon { lat: c.y, lon: wrap(c.x) }))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasets_are_reproducible_and_cover_every_kind() {
        let a = Dataset::awkward(500, 100, 7);
        let b = Dataset::awkward(500, 100, 7);
        assert_eq!(a.fences, b.fences);
        assert_eq!(a.points, b.points);
        let circles = a.fences.iter().filter(|s| matches!(s, Shape::Circle { .. })).count();
        let holes = a
            .fences
            .iter()
            .filter(|s| matches!(s, Shape::Area(p) if p.polygons().iter().any(|p| !p.interiors().is_empty())))
            .count();
        let multi =
            a.fences.iter().filter(|s| matches!(s, Shape::Area(p) if p.polygons().0.len() > 1)).count();
        assert!(circles > 150 && holes > 30 && multi > 20, "{circles} circles, {holes} holed, {multi} multi");
        // Some polygons are stored unwrapped past 180 (they cross the antimeridian).
        assert!(a.fences.iter().any(|s| matches!(s, Shape::Area(p)
            if p.polygons().iter().any(|p| p.exterior().coords().any(|c| c.x > 180.0)))));
        for p in &a.points {
            LatLon::new(p.lat, p.lon).expect("generated points are valid");
        }
        let city = Dataset::city(1000, 10, 1);
        assert_eq!(city.fences.len(), 1000);
        assert!(city.points.iter().all(|p| (2.0..3.0).contains(&p.lon) && (48.5..49.5).contains(&p.lat)));
    }
}
