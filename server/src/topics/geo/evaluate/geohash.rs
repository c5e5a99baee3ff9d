//! Geohashes as GeoFire computes them, and GeoFire's query bounds for a circle.
//!
//! Everything here follows geofire-common (`firebase/geofire-js`, `packages/geofire-common/src/index.ts`):
//! `geohashForLocation` (bisection with `value > mid`, so a value on a cell edge belongs to the lower
//! cell), `geohashQuery`, `boundingBoxBits`, `boundingBoxCoordinates`, `metersToLongitudeDegrees`,
//! `wrapLongitude` and `geohashQueryBounds`, with the same constants and the same `ln(x) / ln(2)`. The
//! unit tests use geofire-common's own test vectors.
//!
//! The bounds are not always complete, and [`bounds_may_miss`] says when; every case is tested here:
//! - When the box around the circle spans more than 180° of longitude (always when it reaches a
//!   pole, where `metersToLongitudeDegrees` gives 360 and `wrapLongitude(lon ± 360)` is `lon`), the query
//!   has one bit: hemispheres, narrower than the box, and the samples can all fall in one of them. Up to
//!   half the circle is never fetched.
//! - The latitude bits come from the meridian circumference (40,007,860 m) but the box from 110,574 m
//!   per degree, so a cell row can be slightly lower than the box's half height. When the latitude
//!   bits decide the precision (within about 6.5° of the equator), the radius is just above
//!   `20,003,930 m / 2^k` and the centre sits just south of a row boundary, the samples at the centre
//!   and at the box's north edge skip a whole row (or, mirrored, the south edge).
//! - Bounds longer than the stored hashes (radii of about 0.11 to 0.3 m) sort after every stored hash of
//!   their cell and match nothing.
//! - The box's longitude reach comes from the WGS84 ellipsoid, a few tenths of a percent less than a
//!   circle's on the server's sphere: a sliver at the east and west ends can fall in a column no sample
//!   is in.

/// GeoFire's geohash alphabet; it is in ASCII order, so strings sort like the bits they encode.
pub const BASE32: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
/// Length of the geohashes GeoFire stores with each key.
pub const GEOFIRE_PRECISION: usize = 10;
/// Longest geohash GeoFire computes.
pub const MAX_PRECISION: usize = 22;

const BITS_PER_CHAR: u32 = 5;
const MAXIMUM_BITS_PRECISION: u32 = 22 * BITS_PER_CHAR;
const EARTH_MERI_CIRCUMFERENCE: f64 = 40_007_860.0;
const METERS_PER_DEGREE_LATITUDE: f64 = 110_574.0;
const EARTH_EQ_RADIUS: f64 = 6_378_137.0;
const E2: f64 = 0.006_694_478_197_99;
const EPSILON: f64 = 1e-12;

/// A geohash of up to [`MAX_PRECISION`] characters, or a query bound (which may end in `~`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Geohash {
    len: u8,
    chars: [u8; MAX_PRECISION + 1],
}

impl Geohash {
    fn empty() -> Self {
        Geohash { len: 0, chars: [0; MAX_PRECISION + 1] }
    }

    fn push(&mut self, c: u8) {
        self.chars[self.len as usize] = c;
        self.len += 1;
    }

    /// The characters.
    pub fn as_bytes(&self) -> &[u8] {
        &self.chars[..self.len as usize]
    }

    /// The characters as text.
    pub fn as_str(&self) -> &str {
        // Only BASE32 characters and '~' are ever pushed.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The first `n` characters (all of them if there are fewer).
    fn prefix(&self, n: usize) -> Geohash {
        let mut out = *self;
        out.len = out.len.min(n as u8);
        out
    }
}

/// A range of geohash strings, `start <= hash < end`, as GeoFire queries them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Range {
    pub start: Geohash,
    pub end: Geohash,
}

/// `geohashForLocation`: the geohash of `(lat, lon)` with `precision` characters (1 to
/// [`MAX_PRECISION`]; larger values are clamped).
pub fn encode(lat: f64, lon: f64, precision: usize) -> Geohash {
    let precision = precision.clamp(1, MAX_PRECISION);
    let (mut lat_range, mut lon_range) = ((-90.0, 90.0), (-180.0, 180.0));
    let mut hash = Geohash::empty();
    let (mut value, mut bits, mut even) = (0usize, 0, true);
    while (hash.len as usize) < precision {
        let (val, range) = if even { (lon, &mut lon_range) } else { (lat, &mut lat_range) };
        let mid = (range.0 + range.1) / 2.0;
        if val > mid {
            value = (value << 1) + 1;
            range.0 = mid;
        } else {
            value <<= 1;
            range.1 = mid;
        }
        even = !even;
        if bits < 4 {
            bits += 1;
        } else {
            bits = 0;
            hash.push(BASE32[value]);
            value = 0;
        }
    }
    hash
}

/// The bisection of one axis that [`encode`] interleaves: the first `bits` bits for `val` in
/// `[min, max]`. The longitude bits of a geohash depend on the longitude only (and the latitude bits on
/// the latitude), so a geohash cell is a (column, row) pair of these.
pub fn bisect(val: f64, mut min: f64, mut max: f64, bits: u32) -> u64 {
    let mut out = 0;
    for _ in 0..bits {
        let mid = (min + max) / 2.0;
        if val > mid {
            out = (out << 1) | 1;
            min = mid;
        } else {
            out <<= 1;
            max = mid;
        }
    }
    out
}

/// Longitude and latitude bits of a geohash of `precision` characters (longitude takes the odd one).
pub fn axis_bits(precision: usize) -> (u32, u32) {
    let bits = precision as u32 * BITS_PER_CHAR;
    (bits.div_ceil(2), bits / 2)
}

fn log2(x: f64) -> f64 {
    x.ln() / 2f64.ln()
}

/// `metersToLongitudeDegrees`: degrees of longitude that `distance` metres span at `latitude`, on the
/// WGS84 ellipsoid, at most 360.
pub fn meters_to_longitude_degrees(distance: f64, latitude: f64) -> f64 {
    let radians = latitude.to_radians();
    let num = radians.cos() * EARTH_EQ_RADIUS * std::f64::consts::PI / 180.0;
    let denom = 1.0 / (1.0 - E2 * radians.sin() * radians.sin()).sqrt();
    let delta_deg = num * denom;
    if delta_deg < EPSILON {
        if distance > 0.0 {
            360.0
        } else {
            0.0
        }
    } else {
        (distance / delta_deg).min(360.0)
    }
}

fn longitude_bits_for_resolution(resolution: f64, latitude: f64) -> f64 {
    let degs = meters_to_longitude_degrees(resolution, latitude);
    if degs.abs() > 0.000_001 {
        log2(360.0 / degs).max(1.0)
    } else {
        1.0
    }
}

fn latitude_bits_for_resolution(resolution: f64) -> f64 {
    log2(EARTH_MERI_CIRCUMFERENCE / 2.0 / resolution).min(f64::from(MAXIMUM_BITS_PRECISION))
}

/// `wrapLongitude`: a longitude folded into [-180, 180].
pub fn wrap_longitude(longitude: f64) -> f64 {
    if (-180.0..=180.0).contains(&longitude) {
        return longitude;
    }
    let adjusted = longitude + 180.0;
    // JavaScript's `%` keeps the sign of the dividend, as Rust's does.
    if adjusted > 0.0 {
        (adjusted % 360.0) - 180.0
    } else {
        180.0 - (-adjusted % 360.0)
    }
}

/// `boundingBoxBits`: geohash bits whose cells are at least `size` metres wide and high around `(lat, lon)`.
pub fn bounding_box_bits(lat: f64, size: f64) -> u32 {
    let lat_delta = size / METERS_PER_DEGREE_LATITUDE;
    let north = (lat + lat_delta).min(90.0);
    let south = (lat - lat_delta).max(-90.0);
    let bits_lat = latitude_bits_for_resolution(size).floor() * 2.0;
    let bits_long_north = longitude_bits_for_resolution(size, north).floor() * 2.0 - 1.0;
    let bits_long_south = longitude_bits_for_resolution(size, south).floor() * 2.0 - 1.0;
    // Every operand is a small whole number (the minimum is at most 110).
    bits_lat.min(bits_long_north).min(bits_long_south).min(f64::from(MAXIMUM_BITS_PRECISION)) as u32
}

/// `boundingBoxCoordinates`: the centre, and the corners and edge midpoints of the box around a circle,
/// as `(lat, lon)`.
fn bounding_box_coordinates(lat: f64, lon: f64, radius: f64) -> [(f64, f64); 9] {
    let (north, south, long_degs) = bounding_box(lat, radius);
    let (w, e) = (wrap_longitude(lon - long_degs), wrap_longitude(lon + long_degs));
    [
        (lat, lon),
        (lat, w),
        (lat, e),
        (north, lon),
        (north, w),
        (north, e),
        (south, lon),
        (south, w),
        (south, e),
    ]
}

/// `geohashQuery`: the range of hashes in the cell of `bits` bits holding `hash`.
pub fn geohash_query(hash: &Geohash, bits: u32) -> Range {
    let precision = bits.div_ceil(BITS_PER_CHAR) as usize;
    if (hash.len as usize) < precision {
        let mut end = *hash;
        end.push(b'~');
        return Range { start: *hash, end };
    }
    let hash = hash.prefix(precision);
    let base = hash.prefix(precision - 1);
    let last = hash.as_bytes()[precision - 1];
    let last_value = BASE32.iter().position(|&c| c == last).unwrap_or(0);
    let significant_bits = bits - base.len as u32 * BITS_PER_CHAR;
    let unused_bits = BITS_PER_CHAR - significant_bits;
    let start_value = (last_value >> unused_bits) << unused_bits;
    let end_value = start_value + (1 << unused_bits);
    let (mut start, mut end) = (base, base);
    start.push(BASE32[start_value]);
    end.push(if end_value > 31 { b'~' } else { BASE32[end_value] });
    Range { start, end }
}

/// `geohashQueryBounds`: at most nine ranges of geohashes that GeoFire fetches for the circle of `radius`
/// metres around `(lat, lon)`, before filtering by distance. Duplicates are removed; the ranges are the
/// same cell size, so the rest are disjoint. See the module docs for the points they can miss.
pub fn query_bounds(lat: f64, lon: f64, radius: f64, out: &mut Vec<Range>) {
    let query_bits = bounding_box_bits(lat, radius).max(1);
    let precision = query_bits.div_ceil(BITS_PER_CHAR) as usize;
    let start = out.len();
    for (la, lo) in bounding_box_coordinates(lat, lon, radius) {
        let range = geohash_query(&encode(la, lo, precision), query_bits);
        if !out[start..].contains(&range) {
            out.push(range);
        }
    }
}

/// The box of [`bounding_box_coordinates`]: its north and south latitudes and its longitude half-width.
fn bounding_box(lat: f64, radius: f64) -> (f64, f64, f64) {
    let lat_degrees = radius / METERS_PER_DEGREE_LATITUDE;
    let north = (lat + lat_degrees).min(90.0);
    let south = (lat - lat_degrees).max(-90.0);
    (north, south, meters_to_longitude_degrees(radius, north).max(meters_to_longitude_degrees(radius, south)))
}

/// Whether [`query_bounds`] may leave out points within `radius` metres of a centre at latitude `lat`
/// for a reason other than the ellipsoid's sliver (see the module docs): a box wider than a hemisphere,
/// a row lower than the box's half height while latitude decides the precision, or bounds longer than the
/// stored hashes.
pub fn bounds_may_miss(lat: f64, radius: f64) -> bool {
    let (_, _, long_degs) = bounding_box(lat, radius);
    let bits = bounding_box_bits(lat, radius).max(1);
    let row_height = 180.0 / 2f64.powi((bits / 2) as i32);
    long_degs > 180.0
        || bits.div_ceil(BITS_PER_CHAR) as usize > GEOFIRE_PRECISION
        || row_height < radius / METERS_PER_DEGREE_LATITUDE
}

/// Whether `(p_lat, p_lon)` lies east or west of the box GeoFire draws around a circle at `(lat, lon)`:
/// the only place the ellipsoid's sliver can be.
pub fn beyond_box_longitude(lat: f64, lon: f64, radius: f64, p_lon: f64) -> bool {
    let (_, _, long_degs) = bounding_box(lat, radius);
    let d = (p_lon - lon).abs();
    d.min(360.0 - d) > long_degs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::geo::index::haversine_m;

    #[test]
    fn encodes_geofire_test_vectors() {
        // geofire-common's test/Main.test.ts, as (lat, lon, precision, hash).
        let cases = [
            (-90.0, -180.0, 10, "0000000000"),
            (90.0, 180.0, 10, "zzzzzzzzzz"),
            (-90.0, 180.0, 10, "pbpbpbpbpb"),
            (90.0, -180.0, 10, "bpbpbpbpbp"),
            (37.7853074, -122.4054274, 10, "9q8yywe56g"),
            (38.98719, -77.250783, 10, "dqcjf17sy6"),
            (29.3760648, 47.9818853, 10, "tj4p5gerfz"),
            (78.216667, 15.55, 10, "umghcygjj7"),
            (-54.933333, -67.616667, 10, "4qpzmren1k"),
            (-54.0, -67.0, 10, "4w2kg3s54y"),
            (-90.0, -180.0, 6, "000000"),
            (90.0, 180.0, 20, "zzzzzzzzzzzzzzzzzzzz"),
            (-90.0, 180.0, 1, "p"),
            (90.0, -180.0, 5, "bpbpb"),
            (37.7853074, -122.4054274, 8, "9q8yywe5"),
            (38.98719, -77.250783, 18, "dqcjf17sy6cppp8vfn"),
            (29.3760648, 47.9818853, 12, "tj4p5gerfzqu"),
            (78.216667, 15.55, 1, "u"),
            (-54.933333, -67.616667, 7, "4qpzmre"),
            (-54.0, -67.0, 9, "4w2kg3s54"),
            // Niemeyer's example; and a value on a cell edge goes to the lower cell.
            (57.64911, 10.40744, 11, "u4pruydqqvj"),
            (0.0, 0.0, 10, "7zzzzzzzzz"),
        ];
        for (lat, lon, precision, want) in cases {
            assert_eq!(encode(lat, lon, precision).as_str(), want, "({lat}, {lon}) at {precision}");
        }
    }

    #[test]
    fn cells_are_the_interleaved_axis_bisections() {
        let mut seed = 0x1234_5678_9abc_def0_u64;
        let mut next = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for _ in 0..2000 {
            let (lat, lon) = (next() * 180.0 - 90.0, next() * 360.0 - 180.0);
            for precision in 1..=12 {
                let (lon_bits, lat_bits) = axis_bits(precision);
                let (col, row) = (bisect(lon, -180.0, 180.0, lon_bits), bisect(lat, -90.0, 90.0, lat_bits));
                let mut bits: u64 = 0;
                for i in 0..(lon_bits + lat_bits) {
                    let (axis, left, n) =
                        if i % 2 == 0 { (col, i / 2, lon_bits) } else { (row, i / 2, lat_bits) };
                    bits = (bits << 1) | ((axis >> (n - 1 - left)) & 1);
                }
                let text: String = (0..precision)
                    .map(|c| BASE32[((bits >> (5 * (precision - 1 - c))) & 31) as usize] as char)
                    .collect();
                assert_eq!(encode(lat, lon, precision).as_str(), text);
            }
        }
    }

    #[test]
    fn helpers_match_geofire_test_vectors() {
        let close = |a: f64, b: f64, tol: f64| assert!((a - b).abs() <= tol, "{a} != {b}");
        close(meters_to_longitude_degrees(1000.0, 0.0), 0.008983, 1e-5);
        close(meters_to_longitude_degrees(111_320.0, 0.0), 1.0, 1e-5);
        close(meters_to_longitude_degrees(107_550.0, 15.0), 1.0, 1e-5);
        close(meters_to_longitude_degrees(96_486.0, 30.0), 1.0, 1e-5);
        close(meters_to_longitude_degrees(78_847.0, 45.0), 1.0, 1e-5);
        close(meters_to_longitude_degrees(55_800.0, 60.0), 1.0, 1e-5);
        close(meters_to_longitude_degrees(28_902.0, 75.0), 1.0, 1e-5);
        close(meters_to_longitude_degrees(0.0, 90.0), 0.0, 1e-5);
        close(meters_to_longitude_degrees(1000.0, 90.0), 360.0, 1e-5);
        close(meters_to_longitude_degrees(1000.0, 89.9999), 360.0, 1e-5);
        close(meters_to_longitude_degrees(1000.0, 89.995), 102.594208, 1e-5);
        for (lon, want) in [
            (0.0, 0.0),
            (180.0, 180.0),
            (-180.0, -180.0),
            (182.0, -178.0),
            (270.0, -90.0),
            (360.0, 0.0),
            (540.0, -180.0),
            (630.0, -90.0),
            (720.0, 0.0),
            (810.0, 90.0),
            (-360.0, 0.0),
            (-182.0, 178.0),
            (-270.0, 90.0),
            (-450.0, -90.0),
            (-540.0, 180.0),
            (-630.0, 90.0),
            (1080.0, 0.0),
            (-1080.0, 0.0),
        ] {
            close(wrap_longitude(lon), want, 1e-6);
        }
        for (lat, size, bits) in [
            (35.0, 1000.0, 28),
            (35.645, 1000.0, 27),
            (36.0, 1000.0, 27),
            (0.0, 1000.0, 28),
            (0.0, 8000.0, 22),
            (45.0, 1000.0, 27),
            (75.0, 1000.0, 25),
            (75.0, 2000.0, 23),
            (90.0, 1000.0, 1),
            (90.0, 2000.0, 1),
        ] {
            assert_eq!(bounding_box_bits(lat, size), bits, "({lat}, {size} m)");
        }
    }

    #[test]
    fn query_ranges_match_geofire_test_vectors() {
        let hash = |s: &str| {
            let mut h = Geohash::empty();
            s.bytes().for_each(|c| h.push(c));
            h
        };
        for (input, bits, start, end) in [
            ("64m9yn96mx", 6, "60", "6h"),
            ("64m9yn96mx", 1, "0", "h"),
            ("64m9yn96mx", 10, "64", "65"),
            ("6409yn96mx", 11, "640", "64h"),
            ("64m9yn96mx", 11, "64h", "64~"),
            ("6", 10, "6", "6~"),
            ("64z178", 12, "64s", "64~"),
            ("64z178", 15, "64z", "64~"),
        ] {
            let r = geohash_query(&hash(input), bits);
            assert_eq!((r.start.as_str(), r.end.as_str()), (start, end), "{input} at {bits} bits");
        }
    }

    fn covered(ranges: &[Range], hash: &Geohash) -> bool {
        ranges.iter().any(|r| r.start.as_bytes() <= hash.as_bytes() && hash.as_bytes() < r.end.as_bytes())
    }

    #[test]
    fn bounds_cover_the_circle_away_from_the_equator() {
        // geofire-common's own property test, over the server's sphere, where the latitude gap cannot
        // occur (more than 10 degrees from the equator the longitude bits decide the precision).
        let mut seed = 42_u64;
        let mut next = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut ranges = Vec::new();
        let mut checked = 0;
        for _ in 0..300 {
            let lat = (10.0 + next() * 79.0) * if next() < 0.5 { -1.0 } else { 1.0 };
            let lon = next() * 360.0 - 180.0;
            let radius = 1.0 + next() * next() * 100_000.0;
            ranges.clear();
            query_bounds(lat, lon, radius, &mut ranges);
            assert!(!ranges.is_empty() && ranges.len() <= 9);
            let dlat = radius / 111_000.0;
            let dlon = meters_to_longitude_degrees(radius, lat) * 1.1;
            for _ in 0..300 {
                let p_lat = (lat + (next() * 2.0 - 1.0) * dlat).clamp(-90.0, 90.0);
                let p_lon = wrap_longitude(lon + (next() * 2.0 - 1.0) * dlon);
                if haversine_m(lon, lat, p_lon, p_lat) <= radius {
                    checked += 1;
                    let hash = encode(p_lat, p_lon, GEOFIRE_PRECISION);
                    assert!(
                        covered(&ranges, &hash),
                        "({p_lat}, {p_lon}) missed around ({lat}, {lon}) r {radius}"
                    );
                }
            }
        }
        assert!(checked > 30_000, "{checked}");
    }

    #[test]
    fn bounds_can_skip_a_row_near_the_equator() {
        // 610.4 m is just above 20,003,930 m / 2^15: the rows are 0.00549° high, the box's half
        // height is 0.00552°. Centred 1.1 m south of the equator (a row boundary), the samples fall in
        // the rows below and above [0, 0.00549), so that row is never fetched.
        let (lat, lon, radius) = (-0.00001, 0.001, 610.4);
        let mut ranges = Vec::new();
        query_bounds(lat, lon, radius, &mut ranges);
        assert_eq!(bounding_box_bits(lat, radius), 30);
        let (p_lat, p_lon) = (0.002, 0.001);
        let d = haversine_m(lon, lat, p_lon, p_lat);
        assert!(d < 230.0, "{d}");
        assert!(!covered(&ranges, &encode(p_lat, p_lon, GEOFIRE_PRECISION)));
        assert!(bounds_may_miss(lat, radius));
        // Moved 3 m further south, the same circle is covered again.
        ranges.clear();
        query_bounds(lat - 0.00003, lon, radius, &mut ranges);
        assert!(covered(&ranges, &encode(p_lat, p_lon, GEOFIRE_PRECISION)));
        // A slightly smaller radius gets rows higher than the box: no gap possible.
        assert!(!bounds_may_miss(lat, 600.0));
    }

    #[test]
    fn bounds_near_a_pole_cover_one_hemisphere() {
        // The box reaches the pole: one bit, and every sample wraps back to the centre's longitude.
        let (lat, lon, radius) = (89.99, 10.0, 5_000.0);
        let mut ranges = Vec::new();
        query_bounds(lat, lon, radius, &mut ranges);
        assert_eq!(ranges.len(), 1);
        assert_eq!((ranges[0].start.as_str(), ranges[0].end.as_str()), ("h", "~"));
        // 2.2 km away across the pole, in the western hemisphere: never fetched.
        let (p_lat, p_lon) = (89.99, -170.0);
        assert!(haversine_m(lon, lat, p_lon, p_lat) < 2_300.0);
        assert!(!covered(&ranges, &encode(p_lat, p_lon, GEOFIRE_PRECISION)));
        assert!(bounds_may_miss(lat, radius));
        assert!(!bounds_may_miss(60.0, radius));
    }
}
