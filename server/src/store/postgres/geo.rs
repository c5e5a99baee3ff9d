//! The geofencing tables of the PostgreSQL backend.

use std::sync::Arc;

use postgres::{Client, IsolationLevel, Statement};

use super::{corrupt, pg_err};
use crate::store::{GeoFenceChange, GeoInside, GeoLog, GeoPosition, GeoState, StoreError};

/// The geofencing statements, prepared once per connection.
pub(super) struct Statements {
    load_fences: Statement,
    load_objects: Statement,
    load_inside: Statement,
    fences: Statement,
    log: Statement,
    positions: Statement,
}

impl Statements {
    pub(super) fn prepare(client: &mut Client) -> Result<Self, postgres::Error> {
        Ok(Statements {
            load_fences: client.prepare("SELECT id, json FROM geo_fences WHERE tenant = $1 ORDER BY id")?,
            load_objects: client.prepare(
                "SELECT id, lat, lon, ts, speed, heading, props FROM geo_objects WHERE tenant = $1",
            )?,
            load_inside: client
                .prepare("SELECT fence, object, since_ms, dwelled FROM geo_inside WHERE tenant = $1")?,
            fences: client
                .prepare("SELECT rusher_geo_fences($1::text[], $2::text[], $3::text[], $4::bool[])")?,
            log: client.prepare(
                "SELECT rusher_geo_log($1::text[], $2::text[], $3::text[], $4::text[],
                                       $5::float8[], $6::float8[], $7::float8[], $8::int8[])",
            )?,
            positions: client.prepare(
                "SELECT rusher_geo_positions($1::text, $2::text[], $3::float8[], $4::float8[], $5::float8[],
                                             $6::float8[], $7::float8[], $8::text[])",
            )?,
        })
    }
}

/// Fences, positions and the inside table of `tenant`, read from one snapshot of the database.
pub(super) fn load(client: &mut Client, st: &Statements, tenant: &str) -> Result<GeoState, StoreError> {
    let corrupt = corrupt(tenant);
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(pg_err)?;
    let mut state = GeoState::default();
    for row in tx.query(&st.load_fences, &[&tenant]).map_err(pg_err)? {
        let id: String = row.try_get(0).map_err(&corrupt)?;
        let json: String = row.try_get(1).map_err(&corrupt)?;
        state.fences.push((id.into(), json.into()));
    }
    for row in tx.query(&st.load_objects, &[&tenant]).map_err(pg_err)? {
        let id: String = row.try_get(0).map_err(&corrupt)?;
        let props: Option<String> = row.try_get(6).map_err(&corrupt)?;
        state.objects.push(GeoPosition {
            id: id.into(),
            lat: row.try_get(1).map_err(&corrupt)?,
            lon: row.try_get(2).map_err(&corrupt)?,
            ts: row.try_get(3).map_err(&corrupt)?,
            speed: row.try_get(4).map_err(&corrupt)?,
            heading: row.try_get(5).map_err(&corrupt)?,
            props: props.map(Arc::from),
        });
    }
    for row in tx.query(&st.load_inside, &[&tenant]).map_err(pg_err)? {
        let fence: String = row.try_get(0).map_err(&corrupt)?;
        let object: String = row.try_get(1).map_err(&corrupt)?;
        let since: i64 = row.try_get(2).map_err(&corrupt)?;
        state.inside.push(GeoInside {
            fence: fence.into(),
            object: object.into(),
            since_ms: u64::try_from(since).unwrap_or(0),
            dwelled: row.try_get(3).map_err(&corrupt)?,
        });
    }
    tx.commit().map_err(pg_err)?;
    Ok(state)
}

/// Applies fence changes, in order, in one statement.
pub(super) fn fences(
    client: &mut Client,
    st: &Statements,
    batch: &[GeoFenceChange],
) -> Result<(), StoreError> {
    let tenants: Vec<&str> = batch.iter().map(|c| &*c.tenant).collect();
    let ids: Vec<&str> = batch.iter().map(|c| &*c.id).collect();
    let json: Vec<Option<&str>> = batch.iter().map(|c| c.json.as_deref()).collect();
    let fresh: Vec<bool> = batch.iter().map(|c| c.fresh).collect();
    client.execute(&st.fences, &[&tenants, &ids, &json, &fresh]).map_err(pg_err)?;
    Ok(())
}

/// Appends the events of every log of the batch, in order, and keeps the inside table, in one statement.
pub(super) fn log(client: &mut Client, st: &Statements, batch: &[GeoLog]) -> Result<(), StoreError> {
    let n: usize = batch.iter().map(|l| l.events.len()).sum();
    let mut tenants = Vec::with_capacity(n);
    let mut fences = Vec::with_capacity(n);
    let mut objects = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut lats = Vec::with_capacity(n);
    let mut lons = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut at = Vec::with_capacity(n);
    for log in batch {
        for e in &log.events {
            tenants.push(&*log.tenant);
            fences.push(&*e.fence);
            objects.push(&*e.object);
            kinds.push(e.kind.as_str());
            lats.push(e.lat);
            lons.push(e.lon);
            ts.push(e.ts);
            at.push(i64::try_from(e.at_ms).unwrap_or(i64::MAX));
        }
    }
    client
        .execute(&st.log, &[&tenants, &fences, &objects, &kinds, &lats, &lons, &ts, &at])
        .map_err(pg_err)?;
    Ok(())
}

/// Upserts last positions, in order, in one statement; a stored newer position is kept.
pub(super) fn positions(
    client: &mut Client,
    st: &Statements,
    tenant: &str,
    rows: &[GeoPosition],
) -> Result<(), StoreError> {
    let ids: Vec<&str> = rows.iter().map(|p| &*p.id).collect();
    let lats: Vec<f64> = rows.iter().map(|p| p.lat).collect();
    let lons: Vec<f64> = rows.iter().map(|p| p.lon).collect();
    let ts: Vec<f64> = rows.iter().map(|p| p.ts).collect();
    let speeds: Vec<Option<f64>> = rows.iter().map(|p| p.speed).collect();
    let headings: Vec<Option<f64>> = rows.iter().map(|p| p.heading).collect();
    let props: Vec<Option<&str>> = rows.iter().map(|p| p.props.as_deref()).collect();
    client
        .execute(&st.positions, &[&tenant, &ids, &lats, &lons, &ts, &speeds, &headings, &props])
        .map_err(pg_err)?;
    Ok(())
}
