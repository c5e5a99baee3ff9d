//! Fence definitions: parsed and checked from a client's JSON, and written back as the JSON that is
//! stored and listed.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::detect::{self, Shape, MAX_RADIUS_M};

/// Longest fence or object id, in bytes.
pub const MAX_ID: usize = 128;
/// Longest fence name, in bytes.
pub const MAX_NAME: usize = 256;
/// Largest `meta` object, in bytes of JSON.
pub const MAX_META: usize = 4096;
/// Most ids in a `watch: {"ids": [...]}` list.
pub const MAX_WATCH_IDS: usize = 1000;
/// Longest dwell time, in seconds (a week).
pub const MAX_DWELL_SECS: f64 = 604_800.0;

/// Event kinds a fence reports, as bits.
pub mod kinds {
    pub const ENTER: u8 = 1;
    pub const EXIT: u8 = 2;
    pub const INSIDE: u8 = 4;
    pub const OUTSIDE: u8 = 8;
    pub const CROSS: u8 = 16;
    pub const DWELL: u8 = 32;
    /// Names in bit order.
    pub const NAMES: [(&str, u8); 6] = [
        ("enter", ENTER),
        ("exit", EXIT),
        ("inside", INSIDE),
        ("outside", OUTSIDE),
        ("cross", CROSS),
        ("dwell", DWELL),
    ];
}

/// Where a fence is.
#[derive(Debug, Clone, PartialEq)]
pub enum Area {
    /// A fixed circle or polygons.
    Fixed(Shape),
    /// A circle of `radius_m` around a moving object.
    Roam { center: Arc<str>, radius_m: f64 },
}

/// Which objects a fence reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Watch {
    All,
    Ids(HashSet<Box<str>>),
    /// Every listed property equal.
    Props(Vec<(String, Value)>),
}

impl Watch {
    /// Whether the fence reports object `id` with properties `props`.
    pub fn matches(&self, id: &str, props: Option<&Map<String, Value>>) -> bool {
        match self {
            Watch::All => true,
            Watch::Ids(ids) => ids.contains(id),
            Watch::Props(want) => {
                props.is_some_and(|p| want.iter().all(|(k, v)| p.get(k).is_some_and(|have| have == v)))
            }
        }
    }
}

/// A checked fence.
#[derive(Debug, Clone)]
pub struct FenceDef {
    pub id: Arc<str>,
    pub area: Area,
    pub watch: Watch,
    /// [`kinds`] bits.
    pub detect: u8,
    pub dwell_ms: Option<u64>,
    /// The definition as stored and listed.
    pub json: Arc<str>,
}

/// Limits a definition is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_vertices: usize,
}

/// Whether `id` is a valid fence or object id.
pub fn valid_id(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len()) && !id.chars().any(char::is_control)
}

/// Parses and checks a fence from a push payload (or a stored definition).
pub fn parse(v: &Value, limits: Limits) -> Result<FenceDef, String> {
    let obj = v.as_object().ok_or("a fence must be a JSON object")?;
    const KNOWN: [&str; 8] = ["id", "name", "geometry", "roam", "meta", "watch", "detect", "dwell"];
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("unknown fence field {k:?} (known: {})", KNOWN.join(", ")));
    }
    let id = match obj.get("id") {
        Some(Value::String(s)) if valid_id(s) => s.as_str(),
        Some(Value::String(_)) => {
            return Err(format!("fence id must be 1 to {MAX_ID} bytes without control characters"))
        }
        _ => return Err("fence needs a string id".into()),
    };
    let mut out = Map::new();
    out.insert("id".into(), id.into());
    match obj.get("name") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.len() <= MAX_NAME => {
            out.insert("name".into(), s.as_str().into());
        }
        Some(_) => return Err(format!("name must be a string of at most {MAX_NAME} bytes")),
    }
    let area = match (obj.get("geometry"), obj.get("roam")) {
        (Some(g), None) => {
            let shape = detect::parse_shape(g, limits.max_vertices).map_err(|e| format!("geometry: {e}"))?;
            out.insert("geometry".into(), g.clone());
            Area::Fixed(shape)
        }
        (None, Some(r)) => {
            let area = parse_roam(r)?;
            out.insert("roam".into(), r.clone());
            area
        }
        (Some(_), Some(_)) => return Err("a fence has either a geometry or roam, not both".into()),
        (None, None) => return Err("a fence needs a geometry (GeoJSON) or roam {object, radius}".into()),
    };
    match obj.get("meta") {
        None | Some(Value::Null) => {}
        Some(m @ Value::Object(_)) if m.to_string().len() <= MAX_META => {
            out.insert("meta".into(), m.clone());
        }
        Some(_) => return Err(format!("meta must be a JSON object of at most {MAX_META} bytes")),
    }
    let watch = parse_watch(obj.get("watch"))?;
    out.insert("watch".into(), obj.get("watch").cloned().unwrap_or_else(|| "all".into()));
    let dwell_ms = match obj.get("dwell") {
        None | Some(Value::Null) => None,
        Some(d) => match d.as_f64() {
            Some(secs) if secs > 0.0 && secs <= MAX_DWELL_SECS => {
                out.insert("dwell".into(), d.clone());
                Some((secs * 1000.0).round().max(1.0) as u64)
            }
            _ => {
                return Err(format!(
                    "dwell must be a number of seconds, more than 0 and at most {MAX_DWELL_SECS}"
                ))
            }
        },
    };
    let roams = matches!(area, Area::Roam { .. });
    let detect = parse_detect(obj.get("detect"), dwell_ms.is_some(), roams)?;
    out.insert(
        "detect".into(),
        kinds::NAMES.iter().filter(|(_, b)| detect & b != 0).map(|(n, _)| Value::from(*n)).collect(),
    );
    Ok(FenceDef { id: id.into(), area, watch, detect, dwell_ms, json: Value::Object(out).to_string().into() })
}

fn parse_roam(r: &Value) -> Result<Area, String> {
    const USAGE: &str = "roam must be {\"object\": id, \"radius\": metres}";
    let r = r.as_object().ok_or(USAGE)?;
    if r.keys().any(|k| k != "object" && k != "radius") {
        return Err(USAGE.into());
    }
    let center = match r.get("object") {
        Some(Value::String(s)) if valid_id(s) => s.as_str(),
        _ => return Err(format!("{USAGE}; the object id must be 1 to {MAX_ID} bytes")),
    };
    match r.get("radius").and_then(Value::as_f64) {
        Some(m) if m > 0.0 && m <= MAX_RADIUS_M => Ok(Area::Roam { center: center.into(), radius_m: m }),
        _ => Err(format!("roam radius must be a number of metres, more than 0 and at most {MAX_RADIUS_M}")),
    }
}

fn parse_watch(w: Option<&Value>) -> Result<Watch, String> {
    const USAGE: &str = "watch must be \"all\", {\"ids\": [...]} or {\"props\": {key: value, ...}}";
    let Some(w) = w else { return Ok(Watch::All) };
    if w.as_str() == Some("all") {
        return Ok(Watch::All);
    }
    let w = w.as_object().filter(|o| o.len() == 1).ok_or(USAGE)?;
    if let Some(ids) = w.get("ids") {
        let ids = ids.as_array().ok_or(USAGE)?;
        if ids.len() > MAX_WATCH_IDS {
            return Err(format!("watch lists at most {MAX_WATCH_IDS} ids"));
        }
        let set = ids
            .iter()
            .map(|i| i.as_str().filter(|s| valid_id(s)).map(Into::into))
            .collect::<Option<HashSet<Box<str>>>>()
            .ok_or(format!("watch ids must be strings of 1 to {MAX_ID} bytes"))?;
        return Ok(Watch::Ids(set));
    }
    if let Some(props) = w.get("props") {
        let props = props.as_object().filter(|p| !p.is_empty()).ok_or(USAGE)?;
        if props.values().any(|v| !(v.is_string() || v.is_number() || v.is_boolean())) {
            return Err("watch props values must be strings, numbers or booleans".into());
        }
        return Ok(Watch::Props(props.iter().map(|(k, v)| (k.clone(), v.clone())).collect()));
    }
    Err(USAGE.into())
}

fn parse_detect(d: Option<&Value>, has_dwell: bool, roams: bool) -> Result<u8, String> {
    use kinds::*;
    let dwell = if has_dwell { DWELL } else { 0 };
    let Some(d) = d else {
        return Ok(if roams { ENTER | EXIT | dwell } else { ENTER | EXIT | CROSS | dwell });
    };
    let list =
        d.as_array().filter(|l| !l.is_empty()).ok_or("detect must be a non-empty array of event names")?;
    let mut bits = 0;
    for name in list {
        let name = name.as_str().unwrap_or_default();
        let bit = NAMES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b).ok_or_else(|| {
            format!("unknown detect kind {name:?} (known: enter, exit, inside, outside, cross, dwell)")
        })?;
        bits |= bit;
    }
    if bits & DWELL != 0 && !has_dwell {
        return Err("detect has dwell but the fence sets no dwell time (\"dwell\": seconds)".into());
    }
    if roams && bits & (INSIDE | OUTSIDE | CROSS) != 0 {
        return Err("roaming fences detect enter, exit and dwell".into());
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LIMITS: Limits = Limits { max_vertices: 100 };

    fn circle() -> Value {
        json!({"type": "Point", "coordinates": [2.35, 48.85], "radius": 100})
    }

    #[test]
    fn a_fence_is_stored_with_its_defaults_spelled_out() {
        let f = parse(&json!({"id": "f", "geometry": circle(), "dwell": 2}), LIMITS).unwrap();
        assert_eq!(f.dwell_ms, Some(2000));
        assert_eq!(f.detect, kinds::ENTER | kinds::EXIT | kinds::CROSS | kinds::DWELL);
        let stored: Value = serde_json::from_str(&f.json).unwrap();
        assert_eq!(
            stored,
            json!({"id": "f", "geometry": circle(), "watch": "all", "dwell": 2,
                   "detect": ["enter", "exit", "cross", "dwell"]})
        );
        // What is stored parses back to the same fence.
        let again = parse(&stored, LIMITS).unwrap();
        assert_eq!(again.json, f.json);
        let roam = parse(&json!({"id": "r", "roam": {"object": "a", "radius": 50}}), LIMITS).unwrap();
        assert_eq!(roam.area, Area::Roam { center: "a".into(), radius_m: 50.0 });
        assert_eq!(roam.detect, kinds::ENTER | kinds::EXIT);
    }

    #[test]
    fn bad_fences_say_what_is_wrong() {
        let cases = [
            (json!([1]), "JSON object"),
            (json!({"geometry": circle()}), "string id"),
            (json!({"id": "x".repeat(129), "geometry": circle()}), "1 to 128 bytes"),
            (json!({"id": "f"}), "needs a geometry"),
            (json!({"id": "f", "geometry": circle(), "roam": {"object": "a", "radius": 1}}), "not both"),
            (json!({"id": "f", "geometry": {"type": "Line"}}), "unsupported geometry type"),
            (json!({"id": "f", "geometry": {"type": "Point", "coordinates": [0, 0], "radius": 0}}), "radius"),
            (
                json!({"id": "f", "geometry": circle(), "detect": ["enter", "leave"]}),
                "unknown detect kind \"leave\"",
            ),
            (json!({"id": "f", "geometry": circle(), "detect": ["dwell"]}), "no dwell time"),
            (json!({"id": "f", "geometry": circle(), "dwell": -1}), "dwell must be"),
            (json!({"id": "f", "geometry": circle(), "watch": {"ids": [1]}}), "watch ids"),
            (json!({"id": "f", "geometry": circle(), "watch": "some"}), "watch must be"),
            (json!({"id": "f", "geometry": circle(), "meta": "x"}), "meta must be"),
            (json!({"id": "f", "geometry": circle(), "colour": 1}), "unknown fence field \"colour\""),
            (json!({"id": "f", "roam": {"object": "a", "radius": 5}, "detect": ["cross"]}), "roaming fences"),
            (json!({"id": "f", "roam": {"object": "a"}}), "roam radius"),
        ];
        for (input, want) in cases {
            let err = parse(&input, LIMITS).expect_err(&input.to_string());
            assert!(err.contains(want), "{input}: {err:?} should mention {want:?}");
        }
        let many: Vec<[f64; 2]> =
            (0..200).map(|i| [f64::from(i) * 0.001, (f64::from(i) * 0.1).sin()]).collect();
        let err = parse(&json!({"id": "f", "geometry": {"type": "Polygon", "coordinates": [many]}}), LIMITS)
            .unwrap_err();
        assert!(err.contains("too many vertices"), "{err}");
    }

    #[test]
    fn watch_filters_match_ids_and_props() {
        let ids = parse_watch(Some(&json!({"ids": ["a", "b"]}))).unwrap();
        assert!(ids.matches("a", None) && !ids.matches("c", None));
        let props = parse_watch(Some(&json!({"props": {"kind": "truck", "zone": 3}}))).unwrap();
        let p = |v: Value| v.as_object().unwrap().clone();
        assert!(props.matches("x", Some(&p(json!({"kind": "truck", "zone": 3, "extra": true})))));
        assert!(!props.matches("x", Some(&p(json!({"kind": "truck", "zone": 4})))));
        assert!(!props.matches("x", None));
    }
}
