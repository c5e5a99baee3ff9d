//! Where geo objects go and where the fences are: a lon/lat box, reproducible random walks that bounce
//! off its edges, and the fences placed in it. Everything follows from a seed, so two runs with the
//! same seed move every object along the same path and create the same fences.

use std::f64::consts::PI;
use std::str::FromStr;

use rusher_server::topics::geo::detect::EARTH_RADIUS_M;
use serde::{Deserialize, Serialize};

/// Metres per degree of latitude (and of longitude at the equator).
const M_PER_DEG: f64 = EARTH_RADIUS_M * PI / 180.0;
/// Largest change of heading between two updates: objects drive rather than jitter.
const MAX_TURN: f64 = PI / 6.0;
/// Circle radii, metres.
pub const RADIUS_M: (f64, f64) = (50.0, 2_000.0);
/// Polygon width and height, degrees (about 150 m to 3 km at mid latitudes).
pub const POLYGON_DEG: (f64, f64) = (0.002, 0.03);
/// Separate random streams for walks and fences, so adding fences does not change the walks.
const WALK_STREAM: u64 = 1;
const FENCE_STREAM: u64 = 2;

/// A lon/lat box, GeoJSON bbox order: `min_lon,min_lat,max_lon,max_lat`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bbox {
    pub min_lon: f64,
    pub min_lat: f64,
    pub max_lon: f64,
    pub max_lat: f64,
}

impl Bbox {
    /// 1° × 1° around Paris: a city and its surroundings.
    pub const DEFAULT: Bbox = Bbox { min_lon: 2.0, min_lat: 48.5, max_lon: 3.0, max_lat: 49.5 };
}

impl FromStr for Bbox {
    type Err = String;

    fn from_str(s: &str) -> Result<Bbox, String> {
        let v: Vec<f64> = s
            .split(',')
            .map(|p| p.trim().parse::<f64>().map_err(|_| format!("{p:?} is not a number")))
            .collect::<Result<_, _>>()?;
        let [min_lon, min_lat, max_lon, max_lat] = v[..] else {
            return Err(format!("expected min_lon,min_lat,max_lon,max_lat, got {} numbers", v.len()));
        };
        let lon_ok = |x: f64| (-180.0..=180.0).contains(&x);
        let lat_ok = |y: f64| (-85.0..=85.0).contains(&y);
        if !(lon_ok(min_lon) && lon_ok(max_lon) && lat_ok(min_lat) && lat_ok(max_lat)) {
            return Err("longitudes must be in [-180, 180] and latitudes in [-85, 85]".into());
        }
        if !(min_lon < max_lon && min_lat < max_lat) {
            return Err(
                "the minimum must be below the maximum (a box across the antimeridian is not supported)"
                    .into(),
            );
        }
        Ok(Bbox { min_lon, min_lat, max_lon, max_lat })
    }
}

/// SplitMix64: small, fast and reproducible, without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The generator of item `i` of a stream of a seed; items of one stream are independent of each
    /// other and of how many items there are.
    pub fn new(seed: u64, stream: u64, i: u64) -> Rng {
        let mut base = Rng(seed ^ stream.rotate_left(32));
        let key = base.next_u64();
        let mut r = Rng(key ^ i.wrapping_mul(0xd1b5_4a32_d192_ed03));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * unit
    }
}

/// One object's walk: a heading that turns a little at each step, reflected at the box's edges.
#[derive(Debug, Clone)]
pub struct Walker {
    pub lat: f64,
    pub lon: f64,
    /// Radians clockwise from north, in `[0, 2π)`.
    heading: f64,
    rng: Rng,
}

impl Walker {
    /// Object `i`'s walk: it starts anywhere in the box, heading anywhere.
    pub fn new(seed: u64, i: u64, area: &Bbox) -> Walker {
        let mut rng = Rng::new(seed, WALK_STREAM, i);
        let lat = rng.range(area.min_lat, area.max_lat);
        let lon = rng.range(area.min_lon, area.max_lon);
        let heading = rng.range(0.0, 2.0 * PI);
        Walker { lat, lon, heading, rng }
    }

    /// Move `step_m` metres (an equirectangular step: exact enough at a few hundred metres) and stay in
    /// the box: a step that would leave it is mirrored at the edge, and the heading with it.
    pub fn step(&mut self, step_m: f64, area: &Bbox) {
        let h = self.heading + self.rng.range(-MAX_TURN, MAX_TURN);
        let dlat = step_m * h.cos() / M_PER_DEG;
        let dlon = step_m * h.sin() / (M_PER_DEG * self.lat.to_radians().cos().max(1e-6));
        let (lat, flip_lat) = reflect(self.lat + dlat, area.min_lat, area.max_lat);
        let (lon, flip_lon) = reflect(self.lon + dlon, area.min_lon, area.max_lon);
        // Mirroring north–south turns h into π − h; east–west into −h.
        let h = if flip_lat { PI - h } else { h };
        let h = if flip_lon { -h } else { h };
        self.heading = h.rem_euclid(2.0 * PI);
        (self.lat, self.lon) = (lat, lon);
    }
}

/// `v` mirrored back into `[lo, hi]`, and whether it had to be.
fn reflect(v: f64, lo: f64, hi: f64) -> (f64, bool) {
    if v > hi {
        ((2.0 * hi - v).max(lo), true)
    } else if v < lo {
        ((2.0 * lo - v).min(hi), true)
    } else {
        (v, false)
    }
}

/// The id of fence `i`.
pub fn fence_id(i: u64) -> String {
    format!("f-{i}")
}

/// The `fence_create` payload of fence `i`: even ones are circles (radius 50–2,000 m, centre in the
/// box), odd ones small quadrilaterals inside the box; the default `detect` (enter, exit, cross).
pub fn fence_payload(i: u64, seed: u64, area: &Bbox) -> serde_json::Value {
    let mut r = Rng::new(seed, FENCE_STREAM, i);
    let geometry = if i.is_multiple_of(2) {
        let (lon, lat) = (r.range(area.min_lon, area.max_lon), r.range(area.min_lat, area.max_lat));
        let radius = r.range(RADIUS_M.0, RADIUS_M.1).round();
        serde_json::json!({"type": "Point", "coordinates": [lon, lat], "radius": radius})
    } else {
        let w = r.range(POLYGON_DEG.0, POLYGON_DEG.1).min(area.max_lon - area.min_lon);
        let h = r.range(POLYGON_DEG.0, POLYGON_DEG.1).min(area.max_lat - area.min_lat);
        let lon = r.range(area.min_lon, area.max_lon - w);
        let lat = r.range(area.min_lat, area.max_lat - h);
        // Counter-clockwise, closed, convex, every vertex inside the box.
        let ring =
            [[lon, lat], [lon + w, lat], [lon + w, lat + h * 0.8], [lon + w * 0.3, lat + h], [lon, lat]];
        serde_json::json!({"type": "Polygon", "coordinates": [ring]})
    };
    serde_json::json!({"id": fence_id(i), "geometry": geometry})
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusher_server::topics::geo::detect::{self, haversine_m, LatLon, Shape};

    fn inside(a: &Bbox, lat: f64, lon: f64) -> bool {
        (a.min_lat..=a.max_lat).contains(&lat) && (a.min_lon..=a.max_lon).contains(&lon)
    }

    #[test]
    fn boxes_parse_and_are_checked() {
        assert_eq!("2.0,48.5,3.0,49.5".parse::<Bbox>(), Ok(Bbox::DEFAULT));
        assert_eq!(
            " -1, -2 ,1,2".parse::<Bbox>(),
            Ok(Bbox { min_lon: -1.0, min_lat: -2.0, max_lon: 1.0, max_lat: 2.0 })
        );
        assert!("2,48.5,3".parse::<Bbox>().is_err());
        assert!("2,48.5,3,x".parse::<Bbox>().is_err());
        assert!("3,48.5,2,49.5".parse::<Bbox>().is_err(), "min above max");
        assert!("2,48.5,2,49.5".parse::<Bbox>().is_err(), "empty");
        assert!("2,48.5,181,49.5".parse::<Bbox>().is_err());
        assert!("2,88,3,89".parse::<Bbox>().is_err(), "too close to a pole for metre steps");
    }

    #[test]
    fn walks_are_reproducible_and_distinct() {
        let a = Bbox::DEFAULT;
        let path = |seed, i| {
            let mut w = Walker::new(seed, i, &a);
            (0..50)
                .map(|_| {
                    w.step(30.0, &a);
                    (w.lat, w.lon)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(path(7, 3), path(7, 3), "same seed and object, same path");
        assert_ne!(path(7, 3), path(7, 4), "another object walks elsewhere");
        assert_ne!(path(7, 3), path(8, 3), "another seed walks elsewhere");
    }

    #[test]
    fn steps_have_the_asked_length_and_stay_in_the_box() {
        let a = Bbox::DEFAULT;
        for i in 0..100 {
            let mut w = Walker::new(1, i, &a);
            assert!(inside(&a, w.lat, w.lon));
            for _ in 0..200 {
                let before = LatLon { lat: w.lat, lon: w.lon };
                w.step(30.0, &a);
                assert!(inside(&a, w.lat, w.lon), "object {i} left the box: {w:?}");
                let d = haversine_m(before, LatLon { lat: w.lat, lon: w.lon });
                assert!(d <= 30.1, "object {i} jumped {d} m");
                // A reflected step is shorter; an ordinary one is 30 m.
                let near_edge = [w.lat - a.min_lat, a.max_lat - w.lat, w.lon - a.min_lon, a.max_lon - w.lon]
                    .iter()
                    .any(|m| *m < 0.001);
                assert!(near_edge || (d - 30.0).abs() < 0.1, "object {i} moved {d} m");
            }
        }
    }

    #[test]
    fn walks_bounce_off_every_edge_of_a_small_box() {
        // 0.001° ≈ 74 m × 111 m: every object meets the edges within a few steps.
        let a = Bbox { min_lon: 2.0, min_lat: 48.5, max_lon: 2.001, max_lat: 48.501 };
        let mut seen = [false; 4];
        for i in 0..20 {
            let mut w = Walker::new(5, i, &a);
            for _ in 0..500 {
                w.step(30.0, &a);
                assert!(inside(&a, w.lat, w.lon), "{w:?}");
                let m = [w.lat - a.min_lat, a.max_lat - w.lat, w.lon - a.min_lon, a.max_lon - w.lon];
                for (s, m) in seen.iter_mut().zip(m) {
                    *s |= m < 0.0002;
                }
            }
        }
        assert_eq!(seen, [true; 4], "every edge is reached and bounced off");
        // A step longer than the box is still kept inside.
        let mut w = Walker::new(5, 0, &a);
        for _ in 0..100 {
            w.step(500.0, &a);
            assert!(inside(&a, w.lat, w.lon), "{w:?}");
        }
    }

    #[test]
    fn fences_are_half_circles_half_polygons_accepted_by_the_server_parser() {
        let a = Bbox::DEFAULT;
        for i in 0..200 {
            let f = fence_payload(i, 9, &a);
            assert_eq!(f["id"], fence_id(i));
            assert_eq!(f, fence_payload(i, 9, &a), "reproducible");
            let shape = detect::parse_shape(&f["geometry"], 10_000).expect("a valid fence geometry");
            match shape {
                Shape::Circle { center, radius_m } => {
                    assert_eq!(i % 2, 0);
                    assert!((RADIUS_M.0..=RADIUS_M.1).contains(&radius_m), "{radius_m}");
                    assert!(inside(&a, center.lat, center.lon));
                }
                _ => {
                    assert_eq!(i % 2, 1);
                    let ring = f["geometry"]["coordinates"][0].as_array().unwrap();
                    assert_eq!(ring.len(), 5);
                    assert_eq!(ring[0], ring[4], "closed");
                    for p in ring {
                        let (lon, lat) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
                        assert!(inside(&a, lat, lon), "vertex {p} of fence {i}");
                    }
                }
            }
        }
        assert_ne!(fence_payload(0, 9, &a), fence_payload(0, 10, &a));
    }
}
