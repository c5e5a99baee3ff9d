//! The geofencing tables of the SQLite backend.

use std::sync::Arc;

use rusqlite::{params, Connection, TransactionBehavior};

use super::db_err;
use crate::store::{GeoFenceChange, GeoInside, GeoLog, GeoLogKind, GeoPosition, GeoState, StoreError};

/// Fences, positions and the inside table of `tenant`, read in one transaction.
pub(super) fn load(conn: &mut Connection, tenant: &str) -> Result<GeoState, StoreError> {
    let tx = conn.transaction().map_err(db_err)?;
    let corrupt = |e: rusqlite::Error| StoreError::Corrupt(format!("geo tenant {tenant}: {e}"));
    let mut state = GeoState::default();
    {
        let mut stmt = tx
            .prepare_cached("SELECT id, json FROM geo_fences WHERE tenant = ?1 ORDER BY id")
            .map_err(db_err)?;
        let mut rows = stmt.query([tenant]).map_err(db_err)?;
        while let Some(row) = rows.next().map_err(db_err)? {
            let id: String = row.get(0).map_err(corrupt)?;
            let json: String = row.get(1).map_err(corrupt)?;
            state.fences.push((id.into(), json.into()));
        }
    }
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT id, lat, lon, ts, speed, heading, props FROM geo_objects WHERE tenant = ?1",
            )
            .map_err(db_err)?;
        let mut rows = stmt.query([tenant]).map_err(db_err)?;
        while let Some(row) = rows.next().map_err(db_err)? {
            let id: String = row.get(0).map_err(corrupt)?;
            let props: Option<String> = row.get(6).map_err(corrupt)?;
            state.objects.push(GeoPosition {
                id: id.into(),
                lat: row.get(1).map_err(corrupt)?,
                lon: row.get(2).map_err(corrupt)?,
                ts: row.get(3).map_err(corrupt)?,
                speed: row.get(4).map_err(corrupt)?,
                heading: row.get(5).map_err(corrupt)?,
                props: props.map(Arc::from),
            });
        }
    }
    {
        let mut stmt = tx
            .prepare_cached("SELECT fence, object, since_ms, dwelled FROM geo_inside WHERE tenant = ?1")
            .map_err(db_err)?;
        let mut rows = stmt.query([tenant]).map_err(db_err)?;
        while let Some(row) = rows.next().map_err(db_err)? {
            let fence: String = row.get(0).map_err(corrupt)?;
            let object: String = row.get(1).map_err(corrupt)?;
            let since: i64 = row.get(2).map_err(corrupt)?;
            let dwelled: i64 = row.get(3).map_err(corrupt)?;
            state.inside.push(GeoInside {
                fence: fence.into(),
                object: object.into(),
                since_ms: u64::try_from(since).unwrap_or(0),
                dwelled: dwelled != 0,
            });
        }
    }
    tx.commit().map_err(db_err)?;
    Ok(state)
}

pub(super) fn fences(conn: &mut Connection, batch: &[GeoFenceChange]) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    {
        let mut put = tx
            .prepare_cached(
                "INSERT INTO geo_fences (tenant, id, json) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, id) DO UPDATE SET json = excluded.json",
            )
            .map_err(db_err)?;
        let mut delete =
            tx.prepare_cached("DELETE FROM geo_fences WHERE tenant = ?1 AND id = ?2").map_err(db_err)?;
        let mut forget =
            tx.prepare_cached("DELETE FROM geo_inside WHERE tenant = ?1 AND fence = ?2").map_err(db_err)?;
        for c in batch {
            let (tenant, id) = (&*c.tenant, &*c.id);
            if c.fresh || c.json.is_none() {
                forget.execute(params![tenant, id]).map_err(db_err)?;
            }
            match &c.json {
                Some(json) => put.execute(params![tenant, id, &**json]),
                None => delete.execute(params![tenant, id]),
            }
            .map_err(db_err)?;
        }
    }
    tx.commit().map_err(db_err)
}

pub(super) fn log(conn: &mut Connection, batch: &[GeoLog]) -> Result<(), StoreError> {
    if batch.iter().all(|l| l.events.is_empty()) {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO geo_events (tenant, fence, object, event, lat, lon, ts, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .map_err(db_err)?;
        let mut enter = tx
            .prepare_cached(
                "INSERT INTO geo_inside (tenant, fence, object, since_ms, dwelled) VALUES (?1, ?2, ?3, ?4, 0)
                 ON CONFLICT (tenant, fence, object) DO UPDATE SET since_ms = excluded.since_ms, dwelled = 0",
            )
            .map_err(db_err)?;
        let mut exit = tx
            .prepare_cached("DELETE FROM geo_inside WHERE tenant = ?1 AND fence = ?2 AND object = ?3")
            .map_err(db_err)?;
        let mut dwell = tx
            .prepare_cached(
                "UPDATE geo_inside SET dwelled = 1 WHERE tenant = ?1 AND fence = ?2 AND object = ?3",
            )
            .map_err(db_err)?;
        // The position an enter reports is stored with it, so an object in the inside table always has
        // a stored position, even when the positions written behind were lost.
        let mut position = tx
            .prepare_cached(
                "INSERT INTO geo_objects (tenant, id, lat, lon, ts) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant, id) DO UPDATE SET lat = excluded.lat, lon = excluded.lon, ts = excluded.ts
                 WHERE excluded.ts > geo_objects.ts",
            )
            .map_err(db_err)?;
        for log in batch {
            let tenant = &*log.tenant;
            for e in &log.events {
                let at = i64::try_from(e.at_ms).unwrap_or(i64::MAX);
                let (fence, object) = (&*e.fence, &*e.object);
                insert
                    .execute(params![tenant, fence, object, e.kind.as_str(), e.lat, e.lon, e.ts, at])
                    .map_err(db_err)?;
                if e.kind == GeoLogKind::Enter {
                    position.execute(params![tenant, object, e.lat, e.lon, e.ts]).map_err(db_err)?;
                }
                match e.kind {
                    GeoLogKind::Enter => enter.execute(params![tenant, fence, object, at]),
                    GeoLogKind::Exit => exit.execute(params![tenant, fence, object]),
                    GeoLogKind::Dwell => dwell.execute(params![tenant, fence, object]),
                    GeoLogKind::Cross => Ok(0),
                }
                .map_err(db_err)?;
            }
        }
    }
    tx.commit().map_err(db_err)
}

pub(super) fn positions(conn: &mut Connection, tenant: &str, rows: &[GeoPosition]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    {
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO geo_objects (tenant, id, lat, lon, ts, speed, heading, props)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (tenant, id) DO UPDATE SET lat = excluded.lat, lon = excluded.lon,
                   ts = excluded.ts, speed = excluded.speed, heading = excluded.heading, props = excluded.props
                 WHERE excluded.ts >= geo_objects.ts",
            )
            .map_err(db_err)?;
        for p in rows {
            upsert
                .execute(params![tenant, &*p.id, p.lat, p.lon, p.ts, p.speed, p.heading, p.props.as_deref()])
                .map_err(db_err)?;
        }
    }
    tx.commit().map_err(db_err)
}
