//! Pure geofence detection: positions, fence shapes parsed from GeoJSON, and the events a move produces.
//!
//! Nothing here does I/O or keeps state; the caller holds the previous position of each object and feeds
//! `(previous, current)` pairs to [`transition`]. Events follow Tile38's fences (`internal/server/fence.go`).
//!
//! Conventions:
//! - Coordinates in [`Shape::Area`] are `x = longitude`, `y = latitude`, in degrees, as in GeoJSON.
//! - A point on a fence's boundary is **inside**: a circle contains points at distance `<= radius`, a
//!   polygon contains its edges, including the edges of its holes. Inside and outside then partition the
//!   plane with no third state, and a point sitting on an edge does not flicker between enter and exit.
//! - Polygons crossing the antimeridian are stored *unwrapped*: longitudes are made continuous along each
//!   ring (a jump of more than 180° between consecutive vertices is read as crossing ±180), so a ring from
//!   170 to -170 is stored as 170 to 190. Each polygon is shifted so its westmost longitude lies in
//!   [-180, 180); tests then try the point at `lon`, `lon + 360` and `lon - 360`. This keeps each polygon
//!   whole (no splitting, no new vertices at ±180) and works for any polygon narrower than 360°. Rings that
//!   go around a pole are rejected.
//! - Circles use haversine distance on a sphere, so the poles and the antimeridian need no special case.

use geo::{Coord, Intersects, Line, LineString, MultiPolygon, Polygon};
use serde_json::Value;

pub use super::index::EARTH_RADIUS_M;

/// Largest circle radius accepted, in metres: about half the Earth's circumference.
pub const MAX_RADIUS_M: f64 = 20_000_000.0;

/// Why a position or a fence was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeoError {
    /// A latitude or longitude is NaN or infinite.
    #[error("coordinate is not a finite number")]
    NotFinite,
    /// A latitude or longitude lies outside the valid range.
    #[error("position out of range: lat {lat}, lon {lon} (lat must be in [-90, 90], lon in [-180, 180])")]
    OutOfRange {
        /// The latitude given.
        lat: f64,
        /// The longitude given.
        lon: f64,
    },
    /// The geometry is not a JSON object.
    #[error("geometry must be a JSON object")]
    NotAnObject,
    /// The object has no string member `type`.
    #[error("geometry has no string \"type\"")]
    MissingType,
    /// The `type` is not one this module knows.
    #[error("unsupported geometry type {0:?} (expected Point with radius, Polygon or MultiPolygon)")]
    UnsupportedType(String),
    /// `coordinates` is missing or is not an array of the right depth.
    #[error("{0}: \"coordinates\" must be {1}")]
    BadCoordinates(&'static str, &'static str),
    /// A position is not an array of at least two numbers.
    #[error("position must be an array of two or more numbers [lon, lat]")]
    BadPosition,
    /// A `Point` fence has no numeric `radius`.
    #[error("Point fence needs a numeric \"radius\" in metres")]
    MissingRadius,
    /// The circle radius is not in `(0, MAX_RADIUS_M]`.
    #[error("radius {0} m out of range (must be > 0 and <= 20000000)")]
    BadRadius(f64),
    /// A polygon has no exterior ring, or a multipolygon has no polygons.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// A ring, once closed, has fewer than four positions.
    #[error("ring has {0} positions once closed; a ring needs at least 4")]
    RingTooShort(usize),
    /// The geometry has more positions than the configured limit.
    #[error("too many vertices: {count} exceeds the limit of {max}")]
    TooManyVertices {
        /// Positions counted so far (counting stops once over the limit).
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A ring winds around a pole or spans 360° of longitude, which unwrapping cannot represent.
    #[error("ring encircles a pole or spans 360 degrees of longitude; not supported")]
    RingAroundPole,
}

/// A validated position in degrees: `lat` in [-90, 90], `lon` in [-180, 180], both finite.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct LatLon {
    /// Latitude in degrees, north positive.
    pub lat: f64,
    /// Longitude in degrees, east positive.
    pub lon: f64,
}

impl LatLon {
    /// Checks and builds a position.
    pub fn new(lat: f64, lon: f64) -> Result<Self, GeoError> {
        if !lat.is_finite() || !lon.is_finite() {
            return Err(GeoError::NotFinite);
        }
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return Err(GeoError::OutOfRange { lat, lon });
        }
        Ok(Self { lat, lon })
    }

    /// Unit vector on the sphere, for great-circle geometry.
    fn unit(self) -> [f64; 3] {
        let (lat, lon) = (self.lat.to_radians(), self.lon.to_radians());
        [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
    }
}

/// Great-circle distance in metres between two positions (haversine, mean Earth radius).
pub fn haversine_m(a: LatLon, b: LatLon) -> f64 {
    super::index::haversine_m(a.lon, a.lat, b.lon, b.lat)
}

/// A fence's geometry.
#[derive(Clone, PartialEq, Debug)]
pub enum Shape {
    /// All points within `radius_m` metres (great-circle) of `center`, boundary included. Also the shape
    /// of a roaming fence, rebuilt around the moving object's position.
    Circle {
        /// Centre of the circle.
        center: LatLon,
        /// Radius in metres, in `(0, MAX_RADIUS_M]`.
        radius_m: f64,
    },
    /// Polygons with holes; `x` = longitude, `y` = latitude. Longitudes are unwrapped (see the module
    /// docs): continuous along each ring, with each polygon's westmost longitude in [-180, 180).
    Area(Polygons),
}

/// Polygons with the bounding rectangle of each, computed once: a point or a path is only tested
/// exactly against the polygons whose rectangle it touches.
#[derive(Clone, PartialEq, Debug)]
pub struct Polygons {
    polygons: MultiPolygon<f64>,
    /// `[min_x, min_y, max_x, max_y]` per polygon.
    rects: Vec<[f64; 4]>,
}

impl Polygons {
    fn new(polygons: MultiPolygon<f64>) -> Self {
        let rects = polygons
            .iter()
            .map(|p| {
                p.exterior().coords().fold([f64::MAX, f64::MAX, f64::MIN, f64::MIN], |[x0, y0, x1, y1], c| {
                    [x0.min(c.x), y0.min(c.y), x1.max(c.x), y1.max(c.y)]
                })
            })
            .collect();
        Polygons { polygons, rects }
    }

    /// The polygons.
    pub fn polygons(&self) -> &MultiPolygon<f64> {
        &self.polygons
    }

    /// Each polygon with its rectangle.
    fn each(&self) -> impl Iterator<Item = (&Polygon<f64>, &[f64; 4])> {
        self.polygons.iter().zip(&self.rects)
    }

    /// Whether the point (boundary included) lies in a polygon.
    fn contains(&self, c: Coord<f64>) -> bool {
        self.each().any(|(p, r)| r[0] <= c.x && c.x <= r[2] && r[1] <= c.y && c.y <= r[3] && p.intersects(&c))
    }

    /// Whether the segment meets a polygon.
    fn meets(&self, line: &Line<f64>) -> bool {
        let (a, b) = (line.start, line.end);
        let box_ = [a.x.min(b.x), a.y.min(b.y), a.x.max(b.x), a.y.max(b.y)];
        self.each().any(|(p, r)| {
            box_[0] <= r[2] && r[0] <= box_[2] && box_[1] <= r[3] && r[1] <= box_[3] && p.intersects(line)
        })
    }
}

/// Whether `p` lies in `shape`; points on the boundary count as inside.
pub fn contains(shape: &Shape, p: LatLon) -> bool {
    match shape {
        Shape::Circle { center, radius_m } => haversine_m(*center, p) <= *radius_m,
        Shape::Area(a) => {
            [0.0, 360.0, -360.0].iter().any(|shift| a.contains(Coord { x: p.lon + shift, y: p.lat }))
        }
    }
}

/// Bounding boxes `[[min_lon, min_lat], [max_lon, max_lat]]` covering `shape`, for a spatial index.
///
/// Every box lies within [-180, 180] in longitude. A shape crossing the antimeridian yields two boxes, one
/// ending at 180 and one starting at -180; an `Area` yields one or two boxes per polygon. A circle that
/// covers a pole yields the full longitude range.
pub fn bbox(shape: &Shape) -> Vec<[[f64; 2]; 2]> {
    let mut out = Vec::new();
    match shape {
        Shape::Circle { center, radius_m } => {
            let ang = radius_m / EARTH_RADIUS_M;
            let dlat = ang.to_degrees();
            let (lo, hi) = (center.lat - dlat, center.lat + dlat);
            if hi >= 90.0 || lo <= -90.0 {
                out.push([[-180.0, lo.max(-90.0)], [180.0, hi.min(90.0)]]);
            } else {
                // Widest longitude reached by a spherical cap not containing a pole.
                let s = ang.sin() / center.lat.to_radians().cos();
                let dlon = if s >= 1.0 { 180.0 } else { s.asin().to_degrees() };
                push_lon_range(&mut out, center.lon - dlon, center.lon + dlon, lo, hi);
            }
        }
        Shape::Area(a) => {
            for &[x0, y0, x1, y1] in &a.rects {
                if x0 <= x1 {
                    push_lon_range(&mut out, x0, x1, y0, y1);
                }
            }
        }
    }
    out
}

/// Pushes the longitude range `[w, e]` (possibly outside [-180, 180]) as one or more in-range boxes.
fn push_lon_range(out: &mut Vec<[[f64; 2]; 2]>, w: f64, e: f64, lo: f64, hi: f64) {
    if e - w >= 360.0 {
        out.push([[-180.0, lo], [180.0, hi]]);
        return;
    }
    for shift in [-360.0, 0.0, 360.0] {
        let (a, b) = ((w + shift).max(-180.0), (e + shift).min(180.0));
        // A range touching ±180 also gets a zero-width box on the other side, where a point at the
        // same meridian written with the other sign is looked up.
        if a <= b {
            out.push([[a, lo], [b, hi]]);
        }
    }
}

/// Parses a fence from a GeoJSON geometry with at most `max_vertices` positions in total.
///
/// Accepted: `Polygon` and `MultiPolygon` (holes allowed; unclosed rings are closed; extra position
/// members such as altitude are ignored), and, as an extension to GeoJSON, a `Point` with a member
/// `"radius"` in metres, read as a circle: `{"type":"Point","coordinates":[lon,lat],"radius":m}`.
pub fn parse_shape(json: &Value, max_vertices: usize) -> Result<Shape, GeoError> {
    let obj = json.as_object().ok_or(GeoError::NotAnObject)?;
    let kind = obj.get("type").and_then(Value::as_str).ok_or(GeoError::MissingType)?;
    let coords = obj.get("coordinates");
    match kind {
        "Point" => {
            let pos = coords.ok_or(GeoError::BadCoordinates("Point", "a position [lon, lat]"))?;
            let center = parse_position(pos)?;
            let radius_m = obj.get("radius").and_then(Value::as_f64).ok_or(GeoError::MissingRadius)?;
            if !(radius_m > 0.0 && radius_m <= MAX_RADIUS_M) {
                return Err(GeoError::BadRadius(radius_m));
            }
            Ok(Shape::Circle { center, radius_m })
        }
        "Polygon" => {
            let rings = coords
                .and_then(Value::as_array)
                .ok_or(GeoError::BadCoordinates("Polygon", "an array of rings"))?;
            let mut budget = Budget { count: 0, max: max_vertices };
            Ok(Shape::Area(Polygons::new(MultiPolygon(vec![parse_polygon(rings, &mut budget)?]))))
        }
        "MultiPolygon" => {
            let polys = coords
                .and_then(Value::as_array)
                .ok_or(GeoError::BadCoordinates("MultiPolygon", "an array of polygons"))?;
            if polys.is_empty() {
                return Err(GeoError::Empty("MultiPolygon"));
            }
            let mut budget = Budget { count: 0, max: max_vertices };
            let polys = polys
                .iter()
                .map(|p| {
                    let rings = p
                        .as_array()
                        .ok_or(GeoError::BadCoordinates("MultiPolygon", "an array of polygons"))?;
                    parse_polygon(rings, &mut budget)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Shape::Area(Polygons::new(MultiPolygon(polys))))
        }
        other => Err(GeoError::UnsupportedType(other.to_owned())),
    }
}

/// Running count of positions against the limit, checked before positions are parsed.
struct Budget {
    count: usize,
    max: usize,
}

impl Budget {
    fn take(&mut self, n: usize) -> Result<(), GeoError> {
        self.count = self.count.saturating_add(n);
        if self.count > self.max {
            return Err(GeoError::TooManyVertices { count: self.count, max: self.max });
        }
        Ok(())
    }
}

fn parse_position(v: &Value) -> Result<LatLon, GeoError> {
    match v.as_array().map(Vec::as_slice) {
        Some([lon, lat, ..]) => match (lon.as_f64(), lat.as_f64()) {
            (Some(lon), Some(lat)) => LatLon::new(lat, lon),
            _ => Err(GeoError::BadPosition),
        },
        _ => Err(GeoError::BadPosition),
    }
}

fn parse_polygon(rings: &[Value], budget: &mut Budget) -> Result<Polygon<f64>, GeoError> {
    if rings.is_empty() {
        return Err(GeoError::Empty("Polygon"));
    }
    let mut parsed = Vec::with_capacity(rings.len());
    for ring in rings {
        let ring = ring.as_array().ok_or(GeoError::BadCoordinates("Polygon", "an array of rings"))?;
        budget.take(ring.len())?;
        parsed.push(unwrap_ring(ring)?);
    }
    // Holes are unwrapped on their own; move each to the copy of the world its exterior is in.
    let ext_mid = mid_lon(&parsed[0]);
    for hole in &mut parsed[1..] {
        let k = ((mid_lon(hole) - ext_mid) / 360.0).round();
        shift_lon(hole, -k * 360.0);
    }
    let west = parsed[0].iter().map(|c| c.x).fold(f64::INFINITY, f64::min);
    let k = ((west + 180.0) / 360.0).floor();
    for ring in &mut parsed {
        shift_lon(ring, -k * 360.0);
    }
    let mut parsed = parsed.into_iter().map(LineString::new);
    let exterior = parsed.next().unwrap_or_else(|| LineString::new(Vec::new()));
    Ok(Polygon::new(exterior, parsed.collect()))
}

/// Parses a ring, closes it if needed and makes its longitudes continuous across the antimeridian.
fn unwrap_ring(ring: &[Value]) -> Result<Vec<Coord<f64>>, GeoError> {
    let mut out: Vec<Coord<f64>> = Vec::with_capacity(ring.len() + 1);
    let mut prev_raw = 0.0;
    for v in ring {
        let p = parse_position(v)?;
        let x = match out.last() {
            None => p.lon,
            Some(last) => {
                let mut d = p.lon - prev_raw;
                if d > 180.0 {
                    d -= 360.0;
                } else if d < -180.0 {
                    d += 360.0;
                }
                last.x + d
            }
        };
        prev_raw = p.lon;
        out.push(Coord { x, y: p.lat });
    }
    let closed_raw = match (ring.first(), ring.last()) {
        (Some(a), Some(b)) => parse_position(a)? == parse_position(b)?,
        _ => false,
    };
    if !closed_raw {
        if let Some(&first) = out.first() {
            // The closing edge is unwrapped like any other edge.
            let last = out[out.len() - 1];
            let mut d = first.x - prev_raw;
            if d > 180.0 {
                d -= 360.0;
            } else if d < -180.0 {
                d += 360.0;
            }
            out.push(Coord { x: last.x + d, y: first.y });
        }
    }
    if out.len() < 4 {
        return Err(GeoError::RingTooShort(out.len()));
    }
    let (first, last) = (out[0], out[out.len() - 1]);
    let (w, e) = out.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(w, e), c| (w.min(c.x), e.max(c.x)));
    if (last.x - first.x).abs() > 1e-9 || e - w >= 360.0 {
        return Err(GeoError::RingAroundPole);
    }
    let n = out.len();
    out[n - 1] = first;
    Ok(out)
}

fn mid_lon(ring: &[Coord<f64>]) -> f64 {
    let (w, e) = ring.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(w, e), c| (w.min(c.x), e.max(c.x)));
    (w + e) / 2.0
}

fn shift_lon(ring: &mut [Coord<f64>], by: f64) {
    if by != 0.0 {
        ring.iter_mut().for_each(|c| c.x += by);
    }
}

/// What a fence reports about one object's move, as in Tile38's `detect` option.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The object was outside (or unseen) and is now inside.
    Enter,
    /// The object was inside and is now outside.
    Exit,
    /// The object is inside; sent on every update inside, including the one that entered.
    Inside,
    /// The object is outside; sent on every update outside, including the one that exited or crossed.
    Outside,
    /// The object was outside and still is, but its path since the last update went through the fence.
    Cross,
}

/// The events a move from `prev` to `cur` produces for `shape`, most specific first.
///
/// As in Tile38, a specific event comes with the state it leaves the object in: `[Enter, Inside]`,
/// `[Exit, Outside]`, `[Cross, Outside]`, or a bare `[Inside]` / `[Outside]`. An object seen for the first
/// time (`prev == None`) counts as coming from outside, so a first sighting inside is an `Enter`. The path
/// for `Cross` is the great-circle arc for circles and the straight segment in longitude/latitude (taking
/// the short way across the antimeridian) for polygons; the two agree for the short hops between updates.
pub fn transition(shape: &Shape, prev: Option<LatLon>, cur: LatLon) -> &'static [Event] {
    step(shape, prev.is_some_and(|p| contains(shape, p)), prev, cur, true)
}

/// [`transition`] for a caller that remembers whether the object was inside (`was`) instead of testing
/// the previous position again. The path is only tested for `Cross` when `want_cross` is set.
pub fn step(
    shape: &Shape,
    was: bool,
    prev: Option<LatLon>,
    cur: LatLon,
    want_cross: bool,
) -> &'static [Event] {
    // For a circle, the distance to the centre also bounds the path: every point of it lies within
    // its length of `cur`, so a path that cannot reach the circle needs no exact test.
    let (now, may_cross) = match shape {
        Shape::Circle { center, radius_m } => {
            let d = haversine_m(*center, cur);
            (d <= *radius_m, prev.is_some_and(|p| d - max_path_m(p, cur) <= *radius_m))
        }
        Shape::Area(_) => (contains(shape, cur), true),
    };
    match (was, now) {
        (false, true) => &[Event::Enter, Event::Inside],
        (true, true) => &[Event::Inside],
        (true, false) => &[Event::Exit, Event::Outside],
        (false, false) => match prev {
            Some(p) if want_cross && may_cross && path_crosses(shape, p, cur) => {
                &[Event::Cross, Event::Outside]
            }
            _ => &[Event::Outside],
        },
    }
}

/// An upper bound of the great-circle distance from `a` to `b` in metres, without trigonometry: going
/// along a meridian and then a parallel is never shorter than the great circle.
fn max_path_m(a: LatLon, b: LatLon) -> f64 {
    let dlat = (a.lat - b.lat).abs();
    let dlon = (a.lon - b.lon).abs();
    (dlat + dlon.min(360.0 - dlon)).to_radians() * EARTH_RADIUS_M
}

/// When a dwell timer armed at `entered_at_ms` for `dwell_ms` fires, in the same clock.
pub fn dwell_due(entered_at_ms: u64, dwell_ms: u64) -> u64 {
    entered_at_ms.saturating_add(dwell_ms)
}

/// Whether the path from `a` to `b` meets `shape`; only asked when both ends are outside.
fn path_crosses(shape: &Shape, a: LatLon, b: LatLon) -> bool {
    match shape {
        Shape::Circle { center, radius_m } => {
            // Every point of the arc lies within half its length of an end: farther than that from both
            // ends, the arc cannot reach the circle. Three haversines settle most candidates without the
            // exact arc distance.
            let half = haversine_m(a, b) / 2.0;
            if haversine_m(a, *center).min(haversine_m(b, *center)) - half > *radius_m {
                return false;
            }
            arc_distance_m(a, b, *center) <= *radius_m
        }
        Shape::Area(area) => {
            let mut bx = b.lon;
            if bx - a.lon > 180.0 {
                bx -= 360.0;
            } else if bx - a.lon < -180.0 {
                bx += 360.0;
            }
            [0.0, 360.0, -360.0].iter().any(|s| {
                let line = Line::new(Coord { x: a.lon + s, y: a.lat }, Coord { x: bx + s, y: b.lat });
                area.meets(&line)
            })
        }
    }
}

/// Distance in metres from `c` to the minor great-circle arc from `a` to `b`.
fn arc_distance_m(a: LatLon, b: LatLon, c: LatLon) -> f64 {
    let (ua, ub, uc) = (a.unit(), b.unit(), c.unit());
    let n = cross(ua, ub);
    let len = dot(n, n).sqrt();
    let ends = haversine_m(a, c).min(haversine_m(b, c));
    if len < 1e-12 {
        return ends;
    }
    let n = [n[0] / len, n[1] / len, n[2] / len];
    let off = dot(uc, n);
    // The foot of the perpendicular from `c` lies on the arc when it is between `a` and `b`.
    let foot = [uc[0] - off * n[0], uc[1] - off * n[1], uc[2] - off * n[2]];
    if dot(cross(ua, foot), n) >= 0.0 && dot(cross(foot, ub), n) >= 0.0 {
        off.abs().min(1.0).asin() * EARTH_RADIUS_M
    } else {
        ends
    }
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event::*;

    /// A test position as `(lat, lon)`.
    type Pos = (f64, f64);

    /// Degrees of latitude (or of longitude on the equator) per metre.
    const DEG_PER_M: f64 = 180.0 / (std::f64::consts::PI * EARTH_RADIUS_M);

    const C45: &str = r#"{"type":"Point","coordinates":[7.0,45.0],"radius":1000}"#;
    const CEQ: &str = r#"{"type":"Point","coordinates":[0.0,0.0],"radius":500}"#;
    const CNP: &str = r#"{"type":"Point","coordinates":[30.0,89.95],"radius":10000}"#;
    const CSP: &str = r#"{"type":"Point","coordinates":[-60.0,-89.95],"radius":10000}"#;
    const CAM: &str = r#"{"type":"Point","coordinates":[179.9,0.0],"radius":20000}"#;
    const CAM2: &str = r#"{"type":"Point","coordinates":[180.0,0.0],"radius":1000}"#;
    const SQAM: &str =
        r#"{"type":"Polygon","coordinates":[[[170,-10],[-170,-10],[-170,10],[170,10],[170,-10]]]}"#;
    /// The same square written from its east side, so unwrapping starts west of -180.
    const SQAM2: &str = r#"{"type":"Polygon","coordinates":[[[-170,-10],[-170,10],[170,10],[170,-10]]]}"#;
    const HOLE: &str = r#"{"type":"Polygon","coordinates":[[[0,0],[10,0],[10,10],[0,10],[0,0]],
        [[4,4],[6,4],[6,6],[4,6],[4,4]]]}"#;
    const MULTI: &str = r#"{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,1]]],
        [[[20,0],[21,0],[21,1],[20,1],[20,0]]]]}"#;
    const THIN: &str =
        r#"{"type":"Polygon","coordinates":[[[10,-5],[10.001,-5],[10.001,5],[10,5],[10,-5]]]}"#;
    /// Exterior crosses the antimeridian; the hole lies wholly east of it, in negative longitudes.
    const AMHOLE: &str = r#"{"type":"Polygon","coordinates":[[[170,-10],[-170,-10],[-170,10],[170,10]],
        [[-178,-1],[-176,-1],[-176,1],[-178,1],[-178,-1]]]}"#;

    struct Case {
        name: &'static str,
        fence: &'static str,
        /// Position before the move, if the object was seen.
        prev: Option<Pos>,
        /// Position after the move.
        cur: Pos,
        want: &'static [Event],
    }

    const IN: &[Event] = &[Inside];
    const OUT: &[Event] = &[Outside];
    const ENTER: &[Event] = &[Enter, Inside];
    const EXIT: &[Event] = &[Exit, Outside];
    const CROSS: &[Event] = &[Cross, Outside];

    const fn c(
        name: &'static str,
        fence: &'static str,
        prev: Option<Pos>,
        cur: Pos,
        want: &'static [Event],
    ) -> Case {
        Case { name, fence, prev, cur, want }
    }

    const NP_IN: f64 = 90.0 - (9_999.0 * DEG_PER_M - 0.05);
    const NP_OUT: f64 = 90.0 - (10_001.0 * DEG_PER_M - 0.05);

    const CASES: &[Case] = &[
        // Circle edges, 1 m either side.
        c("45N first 1m in", C45, None, (45.0 + 999.0 * DEG_PER_M, 7.0), ENTER),
        c("45N first 1m out", C45, None, (45.0 + 1_001.0 * DEG_PER_M, 7.0), OUT),
        c("45N south 1m in", C45, None, (45.0 - 999.0 * DEG_PER_M, 7.0), ENTER),
        c("45N south 1m out", C45, None, (45.0 - 1_001.0 * DEG_PER_M, 7.0), OUT),
        c("45N enter", C45, Some((45.0 + 1_001.0 * DEG_PER_M, 7.0)), (45.0 + 999.0 * DEG_PER_M, 7.0), ENTER),
        c("45N exit", C45, Some((45.0 + 999.0 * DEG_PER_M, 7.0)), (45.0 + 1_001.0 * DEG_PER_M, 7.0), EXIT),
        c("45N stay in", C45, Some((45.0, 7.0)), (45.0 + 999.0 * DEG_PER_M, 7.0), IN),
        c("equator east 1m in", CEQ, Some((0.0, 0.0)), (0.0, 499.0 * DEG_PER_M), IN),
        c("equator east 1m out", CEQ, Some((0.0, 0.0)), (0.0, 501.0 * DEG_PER_M), EXIT),
        c("equator west 1m in", CEQ, Some((1.0, 1.0)), (0.0, -499.0 * DEG_PER_M), ENTER),
        c("equator west 1m out", CEQ, Some((0.0, -1.0)), (0.0, -501.0 * DEG_PER_M), OUT),
        // Across the poles: the far side of the pole is on the opposite meridian.
        c("north pole far side 1m in", CNP, None, (NP_IN, -150.0), ENTER),
        c("north pole far side 1m out", CNP, None, (NP_OUT, -150.0), OUT),
        c("north pole itself", CNP, None, (90.0, 0.0), ENTER),
        c("north pole near side 1m in", CNP, None, (89.95 - 9_999.0 * DEG_PER_M, 30.0), ENTER),
        c("north pole near side 1m out", CNP, None, (89.95 - 10_001.0 * DEG_PER_M, 30.0), OUT),
        c("south pole far side 1m in", CSP, None, (-NP_IN, 120.0), ENTER),
        c("south pole far side 1m out", CSP, None, (-NP_OUT, 120.0), OUT),
        c("south pole itself", CSP, None, (-90.0, 45.0), ENTER),
        // Circle across the antimeridian.
        c("circle am west side", CAM, None, (0.0, 179.95), ENTER),
        c("circle am east side", CAM, None, (0.0, -179.95), ENTER),
        c("circle am far east", CAM, None, (0.0, -179.7), OUT),
        c("circle am move across", CAM, Some((0.0, 179.99)), (0.0, -179.99), IN),
        c("circle am exit east", CAM, Some((0.0, 179.99)), (0.0, -179.7), EXIT),
        // Polygon across the antimeridian.
        c("square am 175", SQAM, None, (0.0, 175.0), ENTER),
        c("square am -175", SQAM, None, (0.0, -175.0), ENTER),
        c("square am 180", SQAM, None, (5.0, 180.0), ENTER),
        c("square am -180", SQAM, None, (5.0, -180.0), ENTER),
        c("square am 0", SQAM, None, (0.0, 0.0), OUT),
        c("square am 165", SQAM, None, (0.0, 165.0), OUT),
        c("square am -165", SQAM, None, (0.0, -165.0), OUT),
        c("square am north of it", SQAM, None, (11.0, 180.0), OUT),
        c("square am west edge", SQAM, None, (0.0, 170.0), ENTER),
        c("square am east edge", SQAM, None, (0.0, -170.0), ENTER),
        c("square am move across", SQAM, Some((0.0, 175.0)), (0.0, -175.0), IN),
        c("square am exit east", SQAM, Some((0.0, 179.0)), (0.0, -160.0), EXIT),
        c("square am cross over 180", SQAM, Some((0.0, 165.0)), (0.0, -165.0), CROSS),
        c("square am short way is via 180", SQAM, Some((0.0, 100.0)), (0.0, -100.0), CROSS),
        c("square am short way is via 0", SQAM, Some((0.0, 100.0)), (0.0, -70.0), OUT),
        c("square from east 175", SQAM2, None, (0.0, 175.0), ENTER),
        c("square from east -175", SQAM2, None, (0.0, -175.0), ENTER),
        c("square from east 0", SQAM2, None, (0.0, 0.0), OUT),
        c("am hole inside", AMHOLE, None, (0.0, -177.0), OUT),
        c("am ring inside", AMHOLE, None, (0.0, 178.0), ENTER),
        c("am ring inside east", AMHOLE, None, (5.0, -177.0), ENTER),
        // Holes and boundaries: boundary is inside, hole edges included.
        c("hole interior", HOLE, None, (5.0, 5.0), OUT),
        c("hole ring", HOLE, None, (2.0, 2.0), ENTER),
        c("hole edge", HOLE, None, (5.0, 4.0), ENTER),
        c("hole corner", HOLE, None, (6.0, 6.0), ENTER),
        c("outer edge", HOLE, None, (0.0, 5.0), ENTER),
        c("outer vertex", HOLE, None, (0.0, 0.0), ENTER),
        c("just outside outer edge", HOLE, None, (-1e-9, 5.0), OUT),
        c("into the hole", HOLE, Some((2.0, 2.0)), (5.0, 5.0), EXIT),
        c("out of the hole", HOLE, Some((5.0, 5.0)), (8.0, 8.0), ENTER),
        c("across the hole", HOLE, Some((5.0, 3.0)), (5.0, 7.0), IN),
        c("hole to outside crosses ring", HOLE, Some((5.0, 5.0)), (5.0, 12.0), CROSS),
        // Multipolygons.
        c("multi first", MULTI, None, (0.5, 0.5), ENTER),
        c("multi second", MULTI, None, (0.5, 20.5), ENTER),
        c("multi between", MULTI, None, (0.5, 10.0), OUT),
        c("multi jump between parts", MULTI, Some((0.5, 0.5)), (0.5, 20.5), IN),
        c("multi cross second", MULTI, Some((0.5, 10.0)), (0.5, 30.0), CROSS),
        c("multi beside", MULTI, Some((2.0, 10.0)), (2.0, 30.0), OUT),
        // Cross through thin shapes.
        c("thin cross", THIN, Some((0.0, 9.0)), (0.0, 11.0), CROSS),
        c("thin diagonal cross", THIN, Some((-4.0, 9.0)), (4.0, 11.0), CROSS),
        c("thin beside", THIN, Some((6.0, 9.0)), (6.0, 11.0), OUT),
        c("thin short of it", THIN, Some((0.0, 9.0)), (0.0, 9.999), OUT),
        c("thin first sighting", THIN, None, (0.0, 11.0), OUT),
        c("circle cross", CEQ, Some((-0.1, 0.0)), (0.1, 0.0), CROSS),
        c("circle pass beside", CEQ, Some((-0.1, 0.02)), (0.1, 0.02), OUT),
        c("circle short of it", CEQ, Some((0.0, -0.1)), (0.0, -0.05), OUT),
        c("circle cross at am", CAM2, Some((0.0, 179.9)), (0.0, -179.9), CROSS),
        c("circle cross at north pole", CNP, Some((89.0, 30.0)), (89.0, -150.0), CROSS),
    ];

    fn pos((lat, lon): Pos) -> LatLon {
        LatLon::new(lat, lon).unwrap_or_else(|e| panic!("bad test position {lat},{lon}: {e}"))
    }

    fn fence(json: &str) -> Shape {
        let v: Value = serde_json::from_str(json).expect("test fence is JSON");
        parse_shape(&v, 1_000).unwrap_or_else(|e| panic!("test fence rejected: {e}"))
    }

    #[test]
    fn transitions() {
        let mut failed = Vec::new();
        for case in CASES {
            let got = transition(&fence(case.fence), case.prev.map(pos), pos(case.cur));
            if got != case.want {
                failed.push(format!("{}: got {got:?}, want {:?}", case.name, case.want));
            }
        }
        assert!(failed.is_empty(), "{} failing cases:\n{}", failed.len(), failed.join("\n"));
    }

    const BAD: &[(&str, &str)] = &[
        (r#"[1,2]"#, "geometry must be a JSON object"),
        (r#"{"coordinates":[0,0]}"#, "geometry has no string \"type\""),
        (
            r#"{"type":"LineString","coordinates":[[0,0],[1,1]]}"#,
            "unsupported geometry type \"LineString\" (expected Point with radius, Polygon or MultiPolygon)",
        ),
        (r#"{"type":"Point","coordinates":[0,0]}"#, "Point fence needs a numeric \"radius\" in metres"),
        (r#"{"type":"Point","radius":5}"#, "Point: \"coordinates\" must be a position [lon, lat]"),
        (
            r#"{"type":"Point","coordinates":[0,0],"radius":0}"#,
            "radius 0 m out of range (must be > 0 and <= 20000000)",
        ),
        (
            r#"{"type":"Point","coordinates":[0,0],"radius":-3}"#,
            "radius -3 m out of range (must be > 0 and <= 20000000)",
        ),
        (
            r#"{"type":"Point","coordinates":[0,0],"radius":20000001}"#,
            "radius 20000001 m out of range (must be > 0 and <= 20000000)",
        ),
        (
            r#"{"type":"Point","coordinates":[0,91],"radius":5}"#,
            "position out of range: lat 91, lon 0 (lat must be in [-90, 90], lon in [-180, 180])",
        ),
        (
            r#"{"type":"Point","coordinates":[180.5,0],"radius":5}"#,
            "position out of range: lat 0, lon 180.5 (lat must be in [-90, 90], lon in [-180, 180])",
        ),
        (
            r#"{"type":"Point","coordinates":[0],"radius":5}"#,
            "position must be an array of two or more numbers [lon, lat]",
        ),
        (
            r#"{"type":"Point","coordinates":["0","1"],"radius":5}"#,
            "position must be an array of two or more numbers [lon, lat]",
        ),
        (r#"{"type":"Polygon","coordinates":{}}"#, "Polygon: \"coordinates\" must be an array of rings"),
        (r#"{"type":"Polygon","coordinates":[5]}"#, "Polygon: \"coordinates\" must be an array of rings"),
        (r#"{"type":"Polygon","coordinates":[]}"#, "Polygon is empty"),
        (
            r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[0,0]]]}"#,
            "ring has 3 positions once closed; a ring needs at least 4",
        ),
        (
            r#"{"type":"Polygon","coordinates":[[[0,0],[1,0]]]}"#,
            "ring has 3 positions once closed; a ring needs at least 4",
        ),
        (
            r#"{"type":"Polygon","coordinates":[[]]}"#,
            "ring has 0 positions once closed; a ring needs at least 4",
        ),
        (
            r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1],[0,0]],[[0,0],[0,0]]]}"#,
            "ring has 2 positions once closed; a ring needs at least 4",
        ),
        (
            r#"{"type":"Polygon","coordinates":[[[0,85],[120,85],[-120,85],[0,85]]]}"#,
            "ring encircles a pole or spans 360 degrees of longitude; not supported",
        ),
        (r#"{"type":"MultiPolygon","coordinates":[]}"#, "MultiPolygon is empty"),
        (
            r#"{"type":"MultiPolygon","coordinates":[7]}"#,
            "MultiPolygon: \"coordinates\" must be an array of polygons",
        ),
        (
            r#"{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,0]]],[[[0,0],[1,0],[1,1],[0,95]]]]}"#,
            "position out of range: lat 95, lon 0 (lat must be in [-90, 90], lon in [-180, 180])",
        ),
        (
            r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1],[0,0]],[[0.2,0.2],[0.4,0.2],[0.4,0.4],[0.2,0.2]]]}"#,
            "too many vertices: 9 exceeds the limit of 8",
        ),
        (
            r#"{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,0]]],[[[2,0],[3,0],[3,1],[2,0]]],[[[4,0],[5,0],[5,1],[4,0]]]]}"#,
            "too many vertices: 12 exceeds the limit of 8",
        ),
    ];

    #[test]
    fn rejects_bad_geojson() {
        for (json, want) in BAD {
            let v: Value = serde_json::from_str(json).expect("test input is JSON");
            match parse_shape(&v, 8) {
                Err(e) => assert_eq!(e.to_string(), *want, "for {json}"),
                Ok(s) => panic!("accepted {json} as {s:?}"),
            }
        }
    }

    #[test]
    fn vertex_limit_is_inclusive() {
        let json = r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1],[0,0]]]}"#;
        let v: Value = serde_json::from_str(json).expect("JSON");
        assert!(parse_shape(&v, 5).is_ok());
        assert_eq!(parse_shape(&v, 4), Err(GeoError::TooManyVertices { count: 5, max: 4 }));
    }

    #[test]
    fn accepts_unclosed_rings_and_altitude() {
        let open = fence(r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1,30.5]]]}"#);
        let closed = fence(r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}"#);
        assert_eq!(open, closed);
    }

    #[test]
    fn lat_lon_validation() {
        const CASES: &[(f64, f64, bool)] = &[
            (0.0, 0.0, true),
            (90.0, 180.0, true),
            (-90.0, -180.0, true),
            (90.000001, 0.0, false),
            (0.0, -180.000001, false),
            (f64::NAN, 0.0, false),
            (0.0, f64::INFINITY, false),
        ];
        for &(lat, lon, ok) in CASES {
            assert_eq!(LatLon::new(lat, lon).is_ok(), ok, "{lat},{lon}");
        }
        assert_eq!(LatLon::new(f64::NAN, 0.0), Err(GeoError::NotFinite));
    }

    #[test]
    fn haversine_known_distances() {
        const CASES: &[(Pos, Pos, f64, f64)] = &[
            // One degree of latitude on this sphere, exactly.
            ((0.0, 0.0), (1.0, 0.0), 111_195.08, 0.01),
            ((0.0, 179.5), (0.0, -179.5), 111_195.08, 0.01),
            ((90.0, 0.0), (-90.0, 0.0), 20_015_114.44, 0.01),
            ((89.9, 0.0), (89.9, 180.0), 22_239.02, 0.01),
            ((51.5007, -0.1246), (40.6892, -74.0445), 5_574_840.0, 1_000.0),
        ];
        for &(a, b, want, tol) in CASES {
            let d = haversine_m(pos(a), pos(b));
            assert!((d - want).abs() <= tol, "{a:?} {b:?}: {d} vs {want}");
        }
    }

    #[test]
    fn bounding_boxes() {
        const CASES: &[(&str, &[[[f64; 2]; 2]])] = &[
            (SQAM, &[[[-180.0, -10.0], [-170.0, 10.0]], [[170.0, -10.0], [180.0, 10.0]]]),
            (SQAM2, &[[[-180.0, -10.0], [-170.0, 10.0]], [[170.0, -10.0], [180.0, 10.0]]]),
            (HOLE, &[[[0.0, 0.0], [10.0, 10.0]]]),
            (MULTI, &[[[0.0, 0.0], [1.0, 1.0]], [[20.0, 0.0], [21.0, 1.0]]]),
            (CNP, &[[[-180.0, 89.95 - 10_000.0 * DEG_PER_M], [180.0, 90.0]]]),
            (CSP, &[[[-180.0, -90.0], [180.0, -89.95 + 10_000.0 * DEG_PER_M]]]),
        ];
        for (json, want) in CASES {
            let got = bbox(&fence(json));
            assert_eq!(got.len(), want.len(), "{json}: {got:?}");
            for (g, w) in got.iter().zip(want.iter()) {
                let close = g.iter().flatten().zip(w.iter().flatten()).all(|(a, b)| (a - b).abs() < 1e-9);
                assert!(close, "{json}: {got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn circle_boxes_cover_the_circle() {
        // Points on the circle (by bearing) must fall in one of the boxes.
        for json in [C45, CEQ, CAM, CAM2, CNP, CSP] {
            let shape = fence(json);
            let boxes = bbox(&shape);
            let Shape::Circle { center, radius_m } = shape else { unreachable!() };
            let ang = radius_m / EARTH_RADIUS_M * 0.999_999;
            let (la, lo) = (center.lat.to_radians(), center.lon.to_radians());
            for i in 0..360 {
                let brg = f64::from(i).to_radians();
                let lat = (la.sin() * ang.cos() + la.cos() * ang.sin() * brg.cos()).asin();
                let lon = lo + (brg.sin() * ang.sin() * la.cos()).atan2(ang.cos() - la.sin() * lat.sin());
                let (lat, mut lon) = (lat.to_degrees(), lon.to_degrees());
                lon = (lon + 540.0).rem_euclid(360.0) - 180.0;
                let hit = boxes
                    .iter()
                    .any(|b| b[0][0] <= lon && lon <= b[1][0] && b[0][1] <= lat && lat <= b[1][1]);
                assert!(hit, "{json}: bearing {i} -> {lat},{lon} not in {boxes:?}");
                assert!(contains(&shape, pos((lat, lon))), "{json}: bearing {i} not contained");
            }
        }
    }

    #[test]
    fn circle_across_antimeridian_has_two_boxes() {
        let boxes = bbox(&fence(CAM));
        assert_eq!(boxes.len(), 2, "{boxes:?}");
        assert_eq!(boxes[0][0][0], -180.0);
        assert_eq!(boxes[1][1][0], 180.0);
    }

    #[test]
    fn events_serialise_lowercase() {
        let got = serde_json::to_string(&[Enter, Exit, Inside, Outside, Cross]).expect("serialise");
        assert_eq!(got, r#"["enter","exit","inside","outside","cross"]"#);
    }

    #[test]
    fn dwell_due_saturates() {
        assert_eq!(dwell_due(1_000, 500), 1_500);
        assert_eq!(dwell_due(u64::MAX - 1, 5), u64::MAX);
    }
}
