//! PostgreSQL with PostGIS as a geofence evaluator, in a schema of its own (dropped with
//! [`PostgisEval::drop_schema`], or on drop).
//!
//! Tables, each with a GiST index built after a `COPY` of all rows:
//! - `fence_areas (fence, geom geometry(Polygon, 4326))`: one row per polygon of a fence, tested with
//!   `ST_Covers` (boundary inside, holes outside). The geometry is planar in longitude and latitude, the
//!   server's model; `geography` would make every edge a great-circle arc instead. A polygon stored past
//!   ±180 (the server keeps antimeridian polygons unwrapped) gets a second row shifted by 360°, so a
//!   point in [-180, 180] meets one copy.
//! - `fence_circles (fence, box geometry(Polygon, 4326), center geography(Point, 4326), radius_m)`: one
//!   row per bounding box of [`detect::bbox`], found through `box &&` the point and tested with
//!   `ST_DWithin(center, point, radius_m, false)`.
//! - `objects (id, pos geography(Point, 4326))`: radius queries with `ST_DWithin(pos, point, r, false)`.
//!
//! Distances use PostGIS's sphere (`use_spheroid = false`, radius 6,371,008.77 m) rather than the
//! WGS84 spheroid, which would differ from the server's haversine by up to half a percent; the spheres
//! differ by 5 parts per billion, so only a point within micrometres of a circle can be answered
//! differently.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};

use postgres::{Client, NoTls, Statement};

use super::{check_position, check_radius_query, check_sizes, Answers, Dataset, EvalError, Evaluator};
use crate::topics::geo::detect::{self, LatLon, Shape};

/// Most queries in one batch: one statement carries them all as arrays.
pub const MAX_BATCH: usize = 10_000;

/// PostGIS's type code for a point and a polygon in (E)WKB, and the flag saying an SRID follows.
const WKB_POINT: u32 = 1;
const WKB_POLYGON: u32 = 3;
const EWKB_SRID: u32 = 0x2000_0000;
const SRID: u32 = 4326;

/// A connection holding one loaded copy of a dataset.
pub struct PostgisEval {
    client: Client,
    schema: String,
    dropped: bool,
    fences_at: Statement,
    fences_at_batch: Statement,
    within: Statement,
    within_batch: Statement,
}

impl std::fmt::Debug for PostgisEval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgisEval").field("schema", &self.schema).finish_non_exhaustive()
    }
}

/// A schema name no other evaluator (in this process or another) uses.
fn unique_schema() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("geoeval_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Hex-encoded extended WKB, as PostGIS reads it from text.
struct Ewkb<'a>(&'a mut String);

impl Ewkb<'_> {
    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            let _ = write!(self.0, "{b:02X}");
        }
    }

    fn header(&mut self, kind: u32) {
        // Little-endian, the type with the SRID flag, then the SRID.
        self.bytes(&[1]);
        self.bytes(&(kind | EWKB_SRID).to_le_bytes());
        self.bytes(&SRID.to_le_bytes());
    }

    fn count(&mut self, n: usize) {
        self.bytes(&(n as u32).to_le_bytes());
    }

    fn xy(&mut self, x: f64, y: f64) {
        self.bytes(&x.to_le_bytes());
        self.bytes(&y.to_le_bytes());
    }

    fn point(&mut self, lon: f64, lat: f64) {
        self.header(WKB_POINT);
        self.xy(lon, lat);
    }

    fn polygon(&mut self, rings: &[&[geo::Coord<f64>]], shift: f64) {
        self.header(WKB_POLYGON);
        self.count(rings.len());
        for ring in rings {
            self.count(ring.len());
            for c in *ring {
                self.xy(c.x + shift, c.y);
            }
        }
    }

    fn rectangle(&mut self, [[w, s], [e, n]]: [[f64; 2]; 2]) {
        self.header(WKB_POLYGON);
        self.count(1);
        self.count(5);
        for (x, y) in [(w, s), (e, s), (e, n), (w, n), (w, s)] {
            self.xy(x, y);
        }
    }
}

/// Appends the `COPY` rows of a polygon fence to `buf`: one per polygon, plus the copies shifted by 360°
/// that a point in [-180, 180] can meet (the server tests it at lon and lon ± 360).
fn area_rows(id: usize, shape: &Shape, buf: &mut String) {
    let Shape::Area(a) = shape else { return };
    for polygon in a.polygons() {
        let rings: Vec<&[geo::Coord<f64>]> =
            std::iter::once(polygon.exterior()).chain(polygon.interiors()).map(|r| r.0.as_slice()).collect();
        let (w, e) = polygon
            .exterior()
            .coords()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(w, e), c| (w.min(c.x), e.max(c.x)));
        for (shift, needed) in [(0.0, true), (-360.0, e >= 180.0), (360.0, w <= -180.0)] {
            if needed {
                let _ = write!(buf, "{id}\t");
                Ewkb(buf).polygon(&rings, shift);
                buf.push('\n');
            }
        }
    }
}

/// Appends the `COPY` rows of a circle fence to `buf`: one per bounding box.
fn circle_rows(id: usize, shape: &Shape, buf: &mut String) {
    let Shape::Circle { center, radius_m } = shape else { return };
    for b in detect::bbox(shape) {
        let _ = write!(buf, "{id}\t");
        Ewkb(buf).rectangle(b);
        buf.push('\t');
        Ewkb(buf).point(center.lon, center.lat);
        let _ = writeln!(buf, "\t{radius_m}");
    }
}

/// Bytes of `COPY` text gathered before they are handed to the connection.
const COPY_CHUNK: usize = 1 << 16;

/// Streams the rows `row` writes for each item into `table` with one `COPY`.
fn copy<T>(
    tx: &mut postgres::Transaction<'_>,
    table: &str,
    columns: &str,
    items: impl Iterator<Item = T>,
    mut row: impl FnMut(T, &mut String),
) -> Result<(), EvalError> {
    let mut writer = tx.copy_in(&format!("COPY {table} ({columns}) FROM STDIN"))?;
    let mut buf = String::with_capacity(2 * COPY_CHUNK);
    for item in items {
        row(item, &mut buf);
        if buf.len() >= COPY_CHUNK {
            writer.write_all(buf.as_bytes()).map_err(EvalError::Copy)?;
            buf.clear();
        }
    }
    writer.write_all(buf.as_bytes()).map_err(EvalError::Copy)?;
    writer.finish()?;
    Ok(())
}

impl PostgisEval {
    /// Connects to `url`, makes sure PostGIS is there, and loads the dataset into a new schema. Nothing is
    /// left behind if loading fails.
    pub fn load(url: &str, data: &Dataset) -> Result<Self, EvalError> {
        check_sizes(data)?;
        let mut client = Client::connect(url, NoTls)?;
        let installed = client.query_opt("SELECT 1 FROM pg_extension WHERE extname = 'postgis'", &[])?;
        if installed.is_none() {
            client
                .batch_execute("CREATE EXTENSION IF NOT EXISTS postgis")
                .map_err(|e| EvalError::NoPostgis(crate::store::postgres_error_text(&e)))?;
        }
        let schema = unique_schema();
        let s = &schema;
        let mut tx = client.transaction()?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.fence_areas (fence int4 NOT NULL, geom geometry(Polygon, 4326) NOT NULL);
             CREATE TABLE {s}.fence_circles (fence int4 NOT NULL, box geometry(Polygon, 4326) NOT NULL,
                 center geography(Point, 4326) NOT NULL, radius_m float8 NOT NULL);
             CREATE TABLE {s}.objects (id int4 NOT NULL, pos geography(Point, 4326) NOT NULL);"
        ))?;
        let fences = data.fences.iter().enumerate();
        copy(&mut tx, &format!("{s}.fence_areas"), "fence, geom", fences.clone(), |(id, f), buf| {
            area_rows(id, f, buf)
        })?;
        copy(
            &mut tx,
            &format!("{s}.fence_circles"),
            "fence, box, center, radius_m",
            fences,
            |(id, f), buf| circle_rows(id, f, buf),
        )?;
        copy(&mut tx, &format!("{s}.objects"), "id, pos", data.points.iter().enumerate(), |(id, p), buf| {
            let _ = write!(buf, "{id}\t");
            Ewkb(buf).point(p.lon, p.lat);
            buf.push('\n');
        })?;
        tx.batch_execute(&format!(
            "CREATE INDEX ON {s}.fence_areas USING gist (geom);
             CREATE INDEX ON {s}.fence_circles USING gist (box);
             CREATE INDEX ON {s}.objects USING gist (pos);
             ANALYZE {s}.fence_areas;
             ANALYZE {s}.fence_circles;
             ANALYZE {s}.objects;"
        ))?;
        tx.commit()?;

        let point = |lon: &str, lat: &str| format!("ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326)");
        let fences = |lon: &str, lat: &str| {
            let p = point(lon, lat);
            format!(
                "SELECT a.fence FROM {s}.fence_areas a WHERE ST_Covers(a.geom, {p})
                 UNION
                 SELECT c.fence FROM {s}.fence_circles c
                  WHERE c.box && {p} AND ST_DWithin(c.center, {p}::geography, c.radius_m, false)"
            )
        };
        let prepared = (|| -> Result<[Statement; 4], postgres::Error> {
            Ok([
                client.prepare(&fences("$1", "$2"))?,
                client.prepare(&format!(
                    "SELECT q.i, f.fence FROM unnest($1::float8[], $2::float8[]) WITH ORDINALITY AS q(lon, lat, i)
                     CROSS JOIN LATERAL ({}) f",
                    fences("q.lon", "q.lat")
                ))?,
                client.prepare(&format!(
                    "SELECT o.id FROM {s}.objects o WHERE ST_DWithin(o.pos, {}::geography, $3, false)",
                    point("$1", "$2")
                ))?,
                client.prepare(&format!(
                    "SELECT q.i, o.id FROM unnest($1::float8[], $2::float8[], $3::float8[])
                         WITH ORDINALITY AS q(lon, lat, r, i)
                     JOIN {s}.objects o ON ST_DWithin(o.pos, {}::geography, q.r, false)",
                    point("q.lon", "q.lat")
                ))?,
            ])
        })();
        match prepared {
            Ok([fences_at, fences_at_batch, within, within_batch]) => Ok(PostgisEval {
                client,
                schema,
                dropped: false,
                fences_at,
                fences_at_batch,
                within,
                within_batch,
            }),
            Err(e) => {
                let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
                Err(e.into())
            }
        }
    }

    /// The server's PostgreSQL and PostGIS versions, for reports.
    pub fn versions(&mut self) -> Result<String, EvalError> {
        let row =
            self.client.query_one("SELECT current_setting('server_version'), postgis_lib_version()", &[])?;
        Ok(format!("PostgreSQL {}, PostGIS {}", row.get::<_, &str>(0), row.get::<_, &str>(1)))
    }

    /// The schema holding this evaluator's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The plan PostgreSQL picks for each of the four statements, for a representative query (to check
    /// that the GiST indexes are used).
    pub fn explain(&mut self, at: LatLon, radius_m: f64) -> Result<String, EvalError> {
        let (lon, lat) = (at.lon, at.lat);
        let mut out = String::new();
        let s = &self.schema;
        let sqls = [
            format!("EXPLAIN SELECT fence FROM {s}.fence_areas WHERE ST_Covers(geom, ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326))"),
            format!("EXPLAIN SELECT fence FROM {s}.fence_circles WHERE box && ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326)"),
            format!("EXPLAIN SELECT id FROM {s}.objects WHERE ST_DWithin(pos, ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326)::geography, {radius_m}, false)"),
        ];
        for sql in sqls {
            for row in self.client.query(&sql, &[])? {
                out.push_str(row.get::<_, &str>(0));
                out.push('\n');
            }
        }
        Ok(out)
    }

    /// Drops the schema and everything in it.
    pub fn drop_schema(mut self) -> Result<(), EvalError> {
        self.dropped = true;
        self.client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))?;
        Ok(())
    }
}

impl Drop for PostgisEval {
    fn drop(&mut self) {
        if !self.dropped {
            let _ = self.client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
        }
    }
}

/// Checks a batch's size.
fn check_batch(n: usize) -> Result<(), EvalError> {
    if n > MAX_BATCH {
        return Err(EvalError::BadQuery(format!("batch of {n} queries; at most {MAX_BATCH}")));
    }
    Ok(())
}

/// Reads `(query number from 1, id)` rows into `out`.
fn batch_rows(rows: &[postgres::Row], queries: usize, out: &mut Answers) {
    let pairs: Vec<(usize, u32)> =
        rows.iter().map(|r| ((r.get::<_, i64>(0) - 1) as usize, r.get::<_, i32>(1) as u32)).collect();
    out.extend_from_pairs(queries, &pairs);
}

impl Evaluator for PostgisEval {
    fn name(&self) -> &'static str {
        "postgis"
    }

    fn fences_at(&mut self, at: LatLon, out: &mut Vec<u32>) -> Result<(), EvalError> {
        check_position(at)?;
        let rows = self.client.query(&self.fences_at, &[&at.lon, &at.lat])?;
        out.extend(rows.iter().map(|r| r.get::<_, i32>(0) as u32));
        Ok(())
    }

    fn objects_within(&mut self, at: LatLon, radius_m: f64, out: &mut Vec<u32>) -> Result<(), EvalError> {
        check_radius_query(at, radius_m)?;
        let rows = self.client.query(&self.within, &[&at.lon, &at.lat, &radius_m])?;
        out.extend(rows.iter().map(|r| r.get::<_, i32>(0) as u32));
        Ok(())
    }

    fn fences_at_batch(&mut self, at: &[LatLon], out: &mut Answers) -> Result<(), EvalError> {
        check_batch(at.len())?;
        at.iter().try_for_each(|&p| check_position(p))?;
        let lons: Vec<f64> = at.iter().map(|p| p.lon).collect();
        let lats: Vec<f64> = at.iter().map(|p| p.lat).collect();
        let rows = self.client.query(&self.fences_at_batch, &[&lons, &lats])?;
        batch_rows(&rows, at.len(), out);
        Ok(())
    }

    fn objects_within_batch(
        &mut self,
        queries: &[(LatLon, f64)],
        out: &mut Answers,
    ) -> Result<(), EvalError> {
        check_batch(queries.len())?;
        queries.iter().try_for_each(|&(p, r)| check_radius_query(p, r))?;
        let lons: Vec<f64> = queries.iter().map(|(p, _)| p.lon).collect();
        let lats: Vec<f64> = queries.iter().map(|(p, _)| p.lat).collect();
        let radii: Vec<f64> = queries.iter().map(|&(_, r)| r).collect();
        let rows = self.client.query(&self.within_batch, &[&lons, &lats, &radii])?;
        batch_rows(&rows, queries.len(), out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewkb_matches_postgis_output() {
        // SELECT ST_AsEWKB('SRID=4326;POINT(1 2)'::geometry)
        let mut s = String::new();
        Ewkb(&mut s).point(1.0, 2.0);
        assert_eq!(s, "0101000020E6100000000000000000F03F0000000000000040");
        // SELECT ST_AsEWKB(ST_MakeEnvelope(0, 0, 1, 1, 4326)) has the same header and ring layout.
        let mut s = String::new();
        Ewkb(&mut s).rectangle([[0.0, 0.0], [1.0, 1.0]]);
        assert!(s.starts_with("0103000020E61000000100000005000000"), "{s}");
        assert_eq!(s.len(), 2 * (1 + 4 + 4 + 4 + 4 + 5 * 16));
    }

    #[test]
    fn antimeridian_polygons_get_a_shifted_copy() {
        let v = serde_json::json!({"type": "Polygon", "coordinates": [[[179.9, 0], [-179.9, 0], [-179.9, 1], [179.9, 1], [179.9, 0]]]});
        let shape = detect::parse_shape(&v, 100).unwrap();
        let mut areas = String::new();
        area_rows(7, &shape, &mut areas);
        assert_eq!(areas.lines().count(), 2);
        assert!(areas.lines().all(|l| l.starts_with("7\t0103000020E6100000")));
        let mut circles = String::new();
        circle_rows(7, &shape, &mut circles);
        assert!(circles.is_empty());
        let c = detect::parse_shape(
            &serde_json::json!({"type": "Point", "coordinates": [10, 10], "radius": 5}),
            1,
        )
        .unwrap();
        circle_rows(8, &c, &mut circles);
        assert_eq!(circles.lines().count(), 1);
        assert!(circles.starts_with("8\t") && circles.ends_with("\t5\n"), "{circles}");
    }
}
