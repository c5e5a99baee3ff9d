//! The worker side of `geo:<tenant>`: check a join or a push and forward it to the tenant's owner.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::detect::{self, LatLon, MAX_RADIUS_M};
use super::fence::{self, valid_id, Limits, MAX_ID};
use super::owner::{GeoMsg, Loc, Op, Raw};
use super::tenant::Fix;
use super::{
    now_ms, Access, Fences, DEFAULT_LIMIT, MAX_BATCH, MAX_FUTURE_MS, MAX_LIMIT, MAX_PROPS, MAX_TENANT,
};
use crate::mailbox::Msg;
use crate::phoenix::JoinRef;
use crate::runtime::Ctx;
use crate::topics::{Push, TopicMsg};
use crate::wire::phoenix::Payload;

/// Whether `tenant` is a valid tenant name.
pub fn valid_tenant(tenant: &str) -> bool {
    (1..=MAX_TENANT).contains(&tenant.len()) && !tenant.chars().any(char::is_control)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinParams {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    fences: Option<Value>,
}

/// A join of `geo:<tenant>` on the connection's worker.
pub fn on_join(
    ctx: &mut Ctx<'_>,
    topic: &Arc<str>,
    join_ref: JoinRef,
    msg_ref: Option<&str>,
    params_json: &str,
    user: &Arc<str>,
) -> Result<(), String> {
    let params: JoinParams =
        serde_json::from_str(params_json).map_err(|e| format!("join params: {e} (known: token, fences)"))?;
    let fences = params.fences.as_ref().map(parse_fences).transpose()?;
    let access = match (&ctx.cfg.token_key, params.token) {
        (None, _) => Access::Open,
        (Some(_), None) => Access::Granted { user: user.clone(), grants: Default::default() },
        (Some(key), Some(token)) => {
            let claims = crate::auth::verify(key, &token, SystemTime::now())
                .map_err(|e| format!("grant token: {e}"))?;
            if *claims.user != **user {
                return Err("grant token: minted for another user".into());
            }
            Access::Granted { user: user.clone(), grants: claims.grants }
        }
    };
    let msg = GeoMsg::Join {
        tenant: topic.clone(),
        conn: ctx.me,
        join_ref,
        msg_ref: msg_ref.map(Into::into),
        access,
        fences,
    };
    let owner = ctx.out.owner(topic);
    ctx.out.send(owner, Msg::Topic(TopicMsg::Geo(msg)));
    Ok(())
}

/// `"*"` or a list of fence ids.
fn parse_fences(v: &Value) -> Result<Fences, String> {
    const USAGE: &str = "fences must be \"*\" or an array of fence ids";
    match v {
        Value::String(s) if s == "*" => Ok(Fences::All),
        Value::Array(ids) if ids.len() <= super::fence::MAX_WATCH_IDS => ids
            .iter()
            .map(|i| i.as_str().filter(|s| valid_id(s)).map(Arc::from))
            .collect::<Option<Vec<_>>>()
            .map(Fences::Ids)
            .ok_or_else(|| format!("{USAGE} (1 to {MAX_ID} bytes each)")),
        Value::Array(_) => Err(format!("{USAGE}: at most {} at once", super::fence::MAX_WATCH_IDS)),
        _ => Err(USAGE.into()),
    }
}

/// Fastest speed accepted, in metres per second (well above anything that reports a position).
const MAX_SPEED: f64 = 1_000_000.0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationIn<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lon: Option<f64>,
    #[serde(default)]
    ts: Option<f64>,
    #[serde(default)]
    speed: Option<f64>,
    #[serde(default)]
    heading: Option<f64>,
    #[serde(borrow, default)]
    props: Option<&'a RawValue>,
}

/// A push on a joined `geo:` channel, on the connection's worker.
pub fn on_push(ctx: &mut Ctx<'_>, push: &Push<'_>) {
    let Payload::Json(p) = push.payload else {
        return push.error(ctx, "geo events take JSON payloads");
    };
    let limits = Limits { max_vertices: ctx.cfg.geo_max_vertices };
    match parse_op(push.event, p.get(), limits) {
        Ok(op) => {
            // In cluster mode the tenant's owner may be another node: it gets the push as sent
            // (subscriptions stay with the member's node).
            let forwardable = ctx.cfg.cluster.is_some() && !matches!(op, Op::Subscribe { .. });
            let raw = forwardable.then(|| Raw { event: push.event.into(), payload: p.get().into() });
            let msg = GeoMsg::Push {
                tenant: push.topic.clone(),
                conn: ctx.me,
                join_ref: push.join_ref,
                msg_ref: push.msg_ref.map(Into::into),
                op,
                raw,
            };
            let owner = ctx.out.owner(push.topic);
            ctx.out.send(owner, Msg::Topic(TopicMsg::Geo(msg)));
        }
        Err(reason) => push.error(ctx, &reason),
    }
}

/// Check a push's JSON payload and turn it into an operation; `Err` is the reason it is refused.
pub(crate) fn parse_op(event: &str, json: &str, limits: Limits) -> Result<Op, String> {
    match event {
        "location" => location(json).map(Op::Location),
        "locations" => locations(json),
        "fence_create" | "fence_update" => value(json).and_then(|v| {
            let def = fence::parse(&v, limits)?;
            Ok(Op::FencePut { def, create: event == "fence_create" })
        }),
        "fence_delete" => value(json).and_then(|v| Ok(Op::FenceDelete { id: id_of(&v, "id")? })),
        "fence_list" => value(json).and_then(|v| {
            only(&v, &["after", "limit"])?;
            let after = match v.get("after") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.as_str().into()),
                Some(_) => return Err("after must be a fence id".into()),
            };
            Ok(Op::FenceList { after, limit: limit(&v)? })
        }),
        "subscribe" | "unsubscribe" => value(json).and_then(|v| {
            only(&v, &["fences"])?;
            let fences = parse_fences(v.get("fences").unwrap_or(&Value::Null))?;
            Ok(Op::Subscribe { fences, on: event == "subscribe" })
        }),
        "query" => value(json).and_then(|v| {
            only(&v, &["key", "lat", "lon", "radius"])?;
            let key = id_of(&v, "key")?;
            Ok(Op::Query { key, at: position(&v)?, radius: radius(&v)? })
        }),
        "query_cancel" => value(json).and_then(|v| {
            only(&v, &["key"])?;
            Ok(Op::QueryCancel { key: id_of(&v, "key")? })
        }),
        "nearby" => value(json).and_then(|v| {
            only(&v, &["lat", "lon", "radius", "limit"])?;
            Ok(Op::Nearby { at: position(&v)?, radius: radius(&v)?, limit: limit(&v)? })
        }),
        "within" => value(json).and_then(|v| {
            only(&v, &["geometry", "limit"])?;
            let g = v.get("geometry").ok_or("within needs a geometry")?;
            let shape = detect::parse_shape(g, limits.max_vertices).map_err(|e| format!("geometry: {e}"))?;
            Ok(Op::Within { shape, limit: limit(&v)? })
        }),
        "object" => value(json).and_then(|v| {
            only(&v, &["id"])?;
            Ok(Op::Object { id: id_of(&v, "id")? })
        }),
        "history" => value(json).and_then(|v| {
            only(&v, &["id", "limit"])?;
            Ok(Op::History { id: id_of(&v, "id")?, limit: limit(&v)? })
        }),
        other => Err(format!(
            "unknown event {other:?} (known: location, locations, fence_create, fence_update, fence_delete, fence_list, \
             subscribe, unsubscribe, query, query_cancel, nearby, within, object, history)"
        )),
    }
}

/// `{"updates": [location, ...]}`: each update checked on its own; the push fails only when its shape
/// is wrong.
fn locations(json: &str) -> Result<Op, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch<'a> {
        #[serde(borrow)]
        updates: Vec<&'a RawValue>,
    }
    let batch: Batch<'_> = serde_json::from_str(json)
        .map_err(|e| format!("locations takes {{\"updates\": [location, ...]}}: {e}"))?;
    if batch.updates.is_empty() || batch.updates.len() > MAX_BATCH {
        return Err(format!("locations takes 1 to {MAX_BATCH} updates, not {}", batch.updates.len()));
    }
    Ok(Op::Locations(batch.updates.iter().map(|u| location(u.get())).collect()))
}

fn location(json: &str) -> Result<Loc, String> {
    let l: LocationIn<'_> = serde_json::from_str(json)
        .map_err(|e| explain_location(json).unwrap_or_else(|| format!("location: {e}")))?;
    let id = l.id.ok_or("location needs an id")?;
    if !valid_id(&id) {
        return Err(format!("id must be 1 to {MAX_ID} bytes without control characters"));
    }
    let (Some(lat), Some(lon)) = (l.lat, l.lon) else {
        return Err("location needs numeric lat and lon".into());
    };
    let pos = LatLon::new(lat, lon).map_err(|e| e.to_string())?;
    let now = now_ms() as f64;
    let ts = match l.ts {
        None => now,
        Some(ts) if !(0.0..=now + MAX_FUTURE_MS).contains(&ts) => {
            return Err(format!(
                "ts is in the future (or negative): {ts} ms; the server's clock says {now} ms and allows 60 s ahead"
            ))
        }
        Some(ts) => ts,
    };
    if l.speed.is_some_and(|s| !(0.0..=MAX_SPEED).contains(&s)) {
        return Err(format!("speed must be metres per second, from 0 to {MAX_SPEED}"));
    }
    if l.heading.is_some_and(|h| !(0.0..360.0).contains(&h)) {
        return Err("heading must be degrees in [0, 360)".into());
    }
    let props = match l.props {
        None => None,
        Some(raw) if raw.get().len() > MAX_PROPS => {
            return Err(format!("props is larger than {MAX_PROPS} bytes"));
        }
        Some(raw) if raw.get().trim_start().starts_with('{') => Some(raw.get().into()),
        Some(_) => return Err("props must be a JSON object".into()),
    };
    let fix = Fix { pos, ts, speed: l.speed.map(|s| s as f32), heading: l.heading.map(|h| h as f32) };
    Ok(Loc { id: id.into(), fix, props })
}

/// Names the field of a location payload that has the wrong type, once the fast parse failed.
fn explain_location(json: &str) -> Option<String> {
    let v: Value = serde_json::from_str(json).ok()?;
    let obj = v.as_object()?;
    let wants = [
        ("id", "a string", Value::is_string as fn(&Value) -> bool),
        ("lat", "a number (degrees)", Value::is_number),
        ("lon", "a number (degrees)", Value::is_number),
        ("ts", "a number (milliseconds since the Unix epoch)", Value::is_number),
        ("speed", "a number (metres per second)", Value::is_number),
        ("heading", "a number (degrees)", Value::is_number),
        ("props", "a JSON object", Value::is_object),
    ];
    wants.iter().find_map(|(field, what, ok)| match obj.get(*field) {
        Some(v) if !v.is_null() && !ok(v) => Some(format!("{field} must be {what}, not {v}")),
        _ => None,
    })
}

fn value(json: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    if v.is_object() {
        Ok(v)
    } else {
        Err("the payload must be a JSON object".into())
    }
}

/// Refuses members other than `known`.
fn only(v: &Value, known: &[&str]) -> Result<(), String> {
    match v.as_object().and_then(|o| o.keys().find(|k| !known.contains(&k.as_str()))) {
        Some(k) => Err(format!("unknown field {k:?} (known: {})", known.join(", "))),
        None => Ok(()),
    }
}

fn id_of(v: &Value, field: &str) -> Result<Box<str>, String> {
    match v.get(field) {
        Some(Value::String(s)) if valid_id(s) => Ok(s.as_str().into()),
        _ => Err(format!("{field} must be a string of 1 to {MAX_ID} bytes without control characters")),
    }
}

fn limit(v: &Value) -> Result<usize, String> {
    match v.get("limit") {
        None | Some(Value::Null) => Ok(DEFAULT_LIMIT),
        Some(l) => match l.as_u64() {
            Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => Ok(n as usize),
            _ => Err(format!("limit must be an integer from 1 to {MAX_LIMIT}")),
        },
    }
}

fn radius(v: &Value) -> Result<f64, String> {
    v.get("radius")
        .and_then(Value::as_f64)
        .filter(|r| *r > 0.0 && *r <= MAX_RADIUS_M)
        .ok_or(format!("radius must be metres, more than 0 and at most {MAX_RADIUS_M}"))
}

fn position(v: &Value) -> Result<LatLon, String> {
    let (Some(lat), Some(lon)) = (v.get("lat").and_then(Value::as_f64), v.get("lon").and_then(Value::as_f64))
    else {
        return Err("needs numeric lat and lon".into());
    };
    LatLon::new(lat, lon).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        match location(json) {
            Err(e) => e,
            Ok(op) => panic!("{json} was accepted: {op:?}"),
        }
    }

    #[test]
    fn locations_are_checked_with_clear_reasons() {
        assert!(err(r#"{"lat":1,"lon":2}"#).contains("needs an id"));
        assert!(err(r#"{"id":"","lat":1,"lon":2}"#).contains("1 to 128 bytes"));
        assert!(err(r#"{"id":"a","lat":91,"lon":2}"#).contains("out of range"));
        assert!(err(r#"{"id":"a","lat":1,"lon":-181}"#).contains("out of range"));
        assert_eq!(err(r#"{"id":"a","lat":"NaN","lon":2}"#), r#"lat must be a number (degrees), not "NaN""#);
        assert!(err(r#"{"id":7,"lat":1,"lon":2}"#).starts_with("id must be a string"));
        assert!(err(r#"{"id":"a","lat":1,"lon":2,"ts":"now"}"#).starts_with("ts must be a number"));
        assert!(err(r#"{"id":"a","lat":null,"lon":2}"#).contains("numeric lat and lon"));
        assert!(err(r#"{"id":"a","lat":1,"lon":2,"ts":9e15}"#).contains("ts is in the future"));
        assert!(err(r#"{"id":"a","lat":1,"lon":2,"speed":-1}"#).contains("speed"));
        assert!(err(r#"{"id":"a","lat":1,"lon":2,"speed":1e300}"#).contains("speed"));
        assert!(err(r#"{"id":"a","lat":1,"lon":2,"heading":360}"#).contains("heading"));
        assert!(err(r#"{"id":"a","lat":1,"lon":2,"props":[1]}"#).contains("JSON object"));
        let big = format!(r#"{{"id":"a","lat":1,"lon":2,"props":{{"k":"{}"}}}}"#, "x".repeat(1100));
        assert!(err(&big).contains("larger than 1024"));
        assert!(err(r#"{"id":"a","lat":1,"lon":2,"colour":1}"#).contains("unknown field"));
        match location(r#"{"id":"a\u0062","lat":-90,"lon":180,"ts":1764320000123.456,"props":{"k":1}}"#) {
            Ok(Loc { id, fix, props }) => {
                assert_eq!(&*id, "ab");
                assert_eq!(fix.ts, 1_764_320_000_123.456);
                assert_eq!(props.as_deref(), Some(r#"{"k":1}"#));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_batch_checks_each_update_and_its_own_shape() {
        match locations(r#"{"updates":[{"id":"a","lat":1,"lon":2},{"id":"b","lat":95,"lon":2}]}"#) {
            Ok(Op::Locations(items)) => {
                assert!(items[0].is_ok());
                assert!(items[1].as_ref().unwrap_err().contains("out of range"));
            }
            other => panic!("{other:?}"),
        }
        for bad in [r#"{"updates":[]}"#, r#"{"updates":{}}"#, r#"[]"#, r#"{"updates":[1],"x":2}"#] {
            assert!(locations(bad).is_err(), "{bad}");
        }
        let many = format!(r#"{{"updates":[{}]}}"#, vec![r#"{"id":"a","lat":1,"lon":2}"#; 1001].join(","));
        assert!(locations(&many).unwrap_err().contains("1 to 1000 updates"));
    }

    #[test]
    fn subscriptions_name_all_or_a_list() {
        assert_eq!(parse_fences(&serde_json::json!("*")), Ok(Fences::All));
        assert_eq!(parse_fences(&serde_json::json!(["a"])), Ok(Fences::Ids(vec!["a".into()])));
        assert!(parse_fences(&serde_json::json!("a")).is_err());
        assert!(parse_fences(&serde_json::json!([1])).is_err());
    }
}
