//! The geofencing keys of the Redis backend: fences, last positions, the inside table and the event log.

use std::sync::Arc;

use redis::{Connection, Script, Value};

use super::{decode, redis_err, Keys};
use crate::store::{GeoFenceChange, GeoInside, GeoLog, GeoPosition, GeoState, StoreError};

/// The timestamp that starts a stored position, as a number (see [`encode_position`]).
const LUA_TS_OF: &str = r"
local function ts_of(position) return tonumber(string.match(position, '^[^\n]*')) end
";

/// KEYS: fences, objects, inside-fences of a tenant; ARGV[1]: the prefix of its inside hashes. Reads the
/// inside hashes it finds in the set, so all of the tenant comes from one state of the data.
const LOAD: &str = r"
local inside = {}
for _, fence in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  inside[#inside + 1] = {fence, redis.call('HGETALL', ARGV[1] .. fence)}
end
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), inside}
";

/// Per change i: KEYS[3i-2..3i] fences, inside hash of the fence, inside-fences of the tenant; ARGV[3i-2..3i]
/// fence id, what ('put' keeps who is inside, 'fresh' forgets them, 'del' deletes the fence), definition.
/// Changes apply in order: a batch may create, replace and delete the same fence.
const FENCES: &str = r"
for i = 1, #ARGV / 3 do
  local id, what = ARGV[3 * i - 2], ARGV[3 * i - 1]
  if what ~= 'put' then
    redis.call('DEL', KEYS[3 * i - 1])
    redis.call('SREM', KEYS[3 * i], id)
  end
  if what == 'del' then
    redis.call('HDEL', KEYS[3 * i - 2], id)
  else
    redis.call('HSET', KEYS[3 * i - 2], id, ARGV[3 * i])
  end
end
";

/// Per event i: KEYS[4i-3..4i] the tenant's event stream, objects, the fence's inside hash, the tenant's
/// inside-fences; ARGV[7i-6..7i] event, fence, object, lat, lon, ts, at_ms. Every event is logged; enter,
/// exit and dwell keep the inside table, in order. The position an enter reports is stored with it unless
/// a newer one is (speed, heading and properties stay), so an object in the inside table always has a
/// stored position, even when the positions written behind were lost.
const LOG: &str = r"
for i = 1, #KEYS / 4 do
  local a = 7 * (i - 1)
  local kind, fence, object = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local lat, lon, ts, at = ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local objects, inside, fences = KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  redis.call('XADD', KEYS[4 * i - 3], '*', 'fence', fence, 'object', object, 'event', kind,
    'lat', lat, 'lon', lon, 'ts', ts, 'at_ms', at)
  if kind == 'enter' then
    local now = redis.call('HGET', objects, object)
    if not now then
      redis.call('HSET', objects, object, ts .. '\n' .. lat .. '\n' .. lon .. '\n\n')
    elseif tonumber(ts) > ts_of(now) then
      local p = 0
      for _ = 1, 3 do p = string.find(now, '\n', p + 1, true) end
      redis.call('HSET', objects, object, ts .. '\n' .. lat .. '\n' .. lon .. '\n' .. string.sub(now, p + 1))
    end
    redis.call('HSET', inside, object, at .. ':0')
    redis.call('SADD', fences, fence)
  elseif kind == 'exit' then
    redis.call('HDEL', inside, object)
    if redis.call('EXISTS', inside) == 0 then redis.call('SREM', fences, fence) end
  elseif kind == 'dwell' then
    local row = redis.call('HGET', inside, object)
    if row then redis.call('HSET', inside, object, string.sub(row, 1, -2) .. '1') end
  end
end
";

/// KEYS[1]: the tenant's objects; ARGV: pairs of object id and position. In order, a position replaces
/// the stored one unless that one is newer, so an object never goes back in time and the same object may
/// appear twice in a batch.
const POSITIONS: &str = r"
for i = 1, #ARGV, 2 do
  local now = redis.call('HGET', KEYS[1], ARGV[i])
  if not now or ts_of(ARGV[i + 1]) >= ts_of(now) then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
";

/// The geofencing scripts, hashed once.
pub(super) struct Scripts {
    load: Script,
    fences: Script,
    log: Script,
    positions: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            load: Script::new(LOAD),
            fences: Script::new(FENCES),
            log: Script::new(&format!("{LUA_TS_OF}{LOG}")),
            positions: Script::new(&format!("{LUA_TS_OF}{POSITIONS}")),
        }
    }
}

/// Fences (sorted by id), positions and the inside table of `tenant`, in one script call.
pub(super) fn load(
    conn: &mut Connection,
    scripts: &Scripts,
    keys: &Keys,
    tenant: &str,
) -> Result<GeoState, StoreError> {
    let reply = scripts
        .load
        .key(keys.geo_fences(tenant))
        .key(keys.geo_objects(tenant))
        .key(keys.geo_inside_fences(tenant))
        .arg(keys.geo_inside_prefix(tenant))
        .invoke::<Value>(conn)
        .map_err(redis_err)?;
    type Reply = (Vec<(String, String)>, Vec<(String, String)>, Vec<(String, Vec<(String, String)>)>);
    let (fences, objects, inside) = decode::<Reply>(reply, tenant)?;
    let mut state = GeoState {
        fences: fences.into_iter().map(|(id, json)| (id.into(), json.into())).collect(),
        objects: Vec::with_capacity(objects.len()),
        inside: Vec::new(),
    };
    state.fences.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (id, position) in objects {
        state.objects.push(decode_position(id.into(), &position, tenant)?);
    }
    for (fence, rows) in inside {
        let fence: Arc<str> = fence.into();
        for (object, row) in rows {
            let corrupt = || StoreError::Corrupt(format!("tenant {tenant}: inside row {row:?}"));
            let (since, dwelled) = row.split_once(':').ok_or_else(corrupt)?;
            state.inside.push(GeoInside {
                fence: Arc::clone(&fence),
                object: object.into(),
                since_ms: since.parse().map_err(|_| corrupt())?,
                dwelled: match dwelled {
                    "0" => false,
                    "1" => true,
                    _ => return Err(corrupt()),
                },
            });
        }
    }
    Ok(state)
}

/// Applies fence changes, in order, in one script call.
pub(super) fn fences(
    conn: &mut Connection,
    scripts: &Scripts,
    keys: &Keys,
    batch: &[GeoFenceChange],
) -> Result<(), StoreError> {
    let mut call = scripts.fences.prepare_invoke();
    for c in batch {
        let (what, json) = match (&c.json, c.fresh) {
            (None, _) => ("del", ""),
            (Some(json), true) => ("fresh", &**json),
            (Some(json), false) => ("put", &**json),
        };
        call.key(keys.geo_fences(&c.tenant))
            .key(keys.geo_inside(&c.tenant, &c.id))
            .key(keys.geo_inside_fences(&c.tenant))
            .arg(&*c.id)
            .arg(what)
            .arg(json);
    }
    call.invoke::<Value>(conn).map_err(redis_err)?;
    Ok(())
}

/// Appends the events of every log of the batch, in order, and keeps the inside table, in one script
/// call.
pub(super) fn log(
    conn: &mut Connection,
    scripts: &Scripts,
    keys: &Keys,
    batch: &[GeoLog],
) -> Result<(), StoreError> {
    let mut call = scripts.log.prepare_invoke();
    for log in batch {
        let (events, objects, fences) = (
            keys.geo_events(&log.tenant),
            keys.geo_objects(&log.tenant),
            keys.geo_inside_fences(&log.tenant),
        );
        for e in &log.events {
            call.key(&events).key(&objects).key(keys.geo_inside(&log.tenant, &e.fence)).key(&fences);
            call.arg(e.kind.as_str())
                .arg(&*e.fence)
                .arg(&*e.object)
                .arg(e.lat.to_string())
                .arg(e.lon.to_string())
                .arg(e.ts.to_string())
                .arg(e.at_ms);
        }
    }
    call.invoke::<Value>(conn).map_err(redis_err)?;
    Ok(())
}

/// Upserts last positions, in order, in one script call; a stored newer position is kept.
pub(super) fn positions(
    conn: &mut Connection,
    scripts: &Scripts,
    keys: &Keys,
    tenant: &str,
    rows: &[GeoPosition],
) -> Result<(), StoreError> {
    let mut call = scripts.positions.prepare_invoke();
    call.key(keys.geo_objects(tenant));
    for p in rows {
        call.arg(&*p.id).arg(encode_position(p));
    }
    call.invoke::<Value>(conn).map_err(redis_err)?;
    Ok(())
}

/// A position as stored: `ts\nlat\nlon\nspeed\nheading`, then `\nprops` when there are properties. The
/// timestamp comes first so a script reads it with one match; an unknown speed or heading is empty.
/// Rust prints the shortest decimal that parses back to the same `f64`, so values round-trip exactly.
fn encode_position(p: &GeoPosition) -> String {
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut s = format!("{}\n{}\n{}\n{}\n{}", p.ts, p.lat, p.lon, opt(p.speed), opt(p.heading));
    if let Some(props) = &p.props {
        s.push('\n');
        s.push_str(props);
    }
    s
}

/// The inverse of [`encode_position`].
fn decode_position(id: Arc<str>, s: &str, tenant: &str) -> Result<GeoPosition, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("tenant {tenant}: position of {id}: {s:?}"));
    let mut parts = s.splitn(6, '\n');
    let mut number =
        || -> Result<f64, StoreError> { parts.next().and_then(|v| v.parse().ok()).ok_or_else(corrupt) };
    let (ts, lat, lon) = (number()?, number()?, number()?);
    let mut optional = || -> Result<Option<f64>, StoreError> {
        match parts.next() {
            Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| corrupt()),
            None => Err(corrupt()),
        }
    };
    let (speed, heading) = (optional()?, optional()?);
    Ok(GeoPosition { id, lat, lon, ts, speed, heading, props: parts.next().map(Arc::from) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_exactly() {
        let p = GeoPosition {
            id: "car".into(),
            lat: -33.868_819_999_999_99,
            lon: 151.209_295_5,
            ts: 1_764_320_000_123.5,
            speed: Some(0.1 + 0.2),
            heading: None,
            props: Some(r#"{"note":"two\nlines"}"#.into()),
        };
        assert_eq!(decode_position("car".into(), &encode_position(&p), "t").unwrap(), p);
        let bare = GeoPosition { speed: None, heading: Some(-0.0), props: None, ..p };
        assert_eq!(decode_position("car".into(), &encode_position(&bare), "t").unwrap(), bare);
        let err = decode_position("car".into(), "1\n2", "t").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }
}
