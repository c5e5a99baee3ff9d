//! `geo:<tenant>` payloads: fence definitions (GeoJSON geometry included) and every push event.

use serde_json::Value;

use crate::topics::geo::detect::{self, LatLon, Shape, MAX_RADIUS_M};
use crate::topics::geo::fence::{self, Area, FenceDef, Limits};
use crate::topics::geo::{parse_op, Fences, Loc, Op, MAX_BATCH, MAX_LIMIT, MAX_PROPS};

/// The vertex bound fences are parsed with: the server's default.
fn limits() -> Limits {
    static MAX_VERTICES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    Limits { max_vertices: *MAX_VERTICES.get_or_init(|| super::default_config().geo_max_vertices) }
}

/// A fence definition as `fence_create` carries it.
///
/// Checks: what is accepted is written back (the stored JSON) as a definition that parses to the
/// same fence and the same JSON again; a geometry's bounding boxes are within the world, and every
/// probe point (the input's positions, the circle's centre, a coarse grid) the shape contains lies
/// in one of them, since the spatial index finds fences by those boxes alone.
pub fn geo_fence(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    if let Ok(def) = fence::parse(&value, limits()) {
        check_fence(&def, &value);
    }
}

fn check_fence(def: &FenceDef, input: &Value) {
    assert!(fence::valid_id(&def.id));
    let stored: Value = serde_json::from_str(&def.json).expect("the stored definition is JSON");
    let again = fence::parse(&stored, limits()).expect("the stored definition parses");
    assert_eq!(again.id, def.id);
    assert_eq!(again.area, def.area);
    assert_eq!(again.watch, def.watch);
    assert_eq!((again.detect, again.dwell_ms), (def.detect, def.dwell_ms));
    assert_eq!(again.json, def.json, "parsing the stored definition is idempotent");
    match &def.area {
        Area::Fixed(shape) => check_shape(shape, input.get("geometry")),
        Area::Roam { center, radius_m } => {
            assert!(fence::valid_id(center));
            assert!(*radius_m > 0.0 && *radius_m <= MAX_RADIUS_M);
        }
    }
}

fn check_shape(shape: &Shape, geometry: Option<&Value>) {
    let boxes = detect::bbox(shape);
    assert!(!boxes.is_empty(), "a shape has a bounding box");
    for [[w, s], [e, n]] in &boxes {
        assert!(-180.0 <= *w && w <= e && *e <= 180.0, "longitudes of {boxes:?}");
        assert!(-90.0 <= *s && s <= n && *n <= 90.0, "latitudes of {boxes:?}");
    }
    let mut probes = Vec::new();
    if let Shape::Circle { center, .. } = shape {
        probes.push(*center);
    }
    if let Some(g) = geometry {
        positions(g.get("coordinates").unwrap_or(&Value::Null), &mut probes);
    }
    for lat in (-90..=90).step_by(30) {
        for lon in (-180..=180).step_by(45) {
            probes.push(LatLon::new(f64::from(lat), f64::from(lon)).expect("in range"));
        }
    }
    for p in probes {
        if detect::contains(shape, p) {
            let inside =
                |[[w, s], [e, n]]: &[[f64; 2]; 2]| *w <= p.lon && p.lon <= *e && *s <= p.lat && p.lat <= *n;
            assert!(boxes.iter().any(inside), "{p:?} is in the shape but in none of {boxes:?}");
        }
    }
}

/// Collects the valid positions `[lon, lat, ...]` nested anywhere in `v`, at most 64.
fn positions(v: &Value, out: &mut Vec<LatLon>) {
    if out.len() >= 64 {
        return;
    }
    let Some(items) = v.as_array() else { return };
    if let [lon, lat, ..] = items.as_slice() {
        if let (Some(lon), Some(lat)) = (lon.as_f64(), lat.as_f64()) {
            if let Ok(p) = LatLon::new(lat, lon) {
                out.push(p);
            }
            return;
        }
    }
    for item in items {
        positions(item, out);
    }
}

/// Every event a joined `geo:` channel takes, and one it does not.
const EVENTS: [&str; 15] = [
    "location",
    "locations",
    "fence_create",
    "fence_update",
    "fence_delete",
    "fence_list",
    "subscribe",
    "unsubscribe",
    "query",
    "query_cancel",
    "nearby",
    "within",
    "object",
    "history",
    "unknown",
];

/// A push on a `geo:` channel: the first byte picks the event, the rest is its JSON payload.
///
/// Checks: an accepted operation only holds values within the documented bounds (ids, positions,
/// timestamps, radii, limits, batch sizes, property sizes), and fences as [`geo_fence`] checks them.
pub fn geo_push(data: &[u8]) {
    let [pick, json @ ..] = data else { return };
    let Ok(json) = std::str::from_utf8(json) else { return };
    let event = EVENTS[usize::from(*pick) % EVENTS.len()];
    let Ok(op) = parse_op(event, json, limits()) else { return };
    let id = |id: &str| assert!(fence::valid_id(id), "id {id:?}");
    let limit = |n: usize| assert!((1..=MAX_LIMIT).contains(&n), "limit {n}");
    let radius = |r: f64| assert!(r > 0.0 && r <= MAX_RADIUS_M, "radius {r}");
    match op {
        Op::Location(loc) => check_loc(&loc),
        Op::Locations(batch) => {
            assert!((1..=MAX_BATCH).contains(&batch.len()));
            batch.iter().flatten().for_each(check_loc);
        }
        Op::FencePut { def, create } => {
            assert_eq!(create, event == "fence_create");
            check_fence(&def, &serde_json::from_str(json).expect("accepted JSON"));
        }
        Op::FenceDelete { id: i } | Op::QueryCancel { key: i } | Op::Object { id: i } => id(&i),
        Op::FenceList { limit: n, .. } => limit(n),
        Op::Subscribe { fences, .. } => {
            if let Fences::Ids(ids) = fences {
                ids.iter().for_each(|i| id(i));
            }
        }
        Op::Query { key, at, radius: r } => {
            id(&key);
            check_pos(at);
            radius(r);
        }
        Op::Nearby { at, radius: r, limit: n } => {
            check_pos(at);
            radius(r);
            limit(n);
        }
        Op::Within { shape, limit: n } => {
            limit(n);
            let v: Value = serde_json::from_str(json).expect("accepted JSON");
            check_shape(&shape, v.get("geometry"));
        }
        Op::History { id: i, limit: n } => {
            id(&i);
            limit(n);
        }
    }
}

fn check_pos(p: LatLon) {
    assert!((-90.0..=90.0).contains(&p.lat) && (-180.0..=180.0).contains(&p.lon), "{p:?}");
}

fn check_loc(loc: &Loc) {
    assert!(fence::valid_id(&loc.id), "id {:?}", loc.id);
    check_pos(loc.fix.pos);
    assert!(loc.fix.ts.is_finite() && loc.fix.ts >= 0.0, "ts {}", loc.fix.ts);
    assert!(loc.fix.speed.is_none_or(|s| s.is_finite() && s >= 0.0), "speed {:?}", loc.fix.speed);
    assert!(loc.fix.heading.is_none_or(|h| (0.0..=360.0).contains(&h)), "heading {:?}", loc.fix.heading);
    if let Some(props) = &loc.props {
        assert!(props.len() <= MAX_PROPS);
        let v: Value = serde_json::from_str(props).expect("props are JSON");
        assert!(v.is_object(), "props {props}");
    }
}
