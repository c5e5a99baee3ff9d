//! Three geofence evaluators behind one trait, to compare on the same fences and points (see
//! `docs/geo-evaluators.md` and `examples/geo_evaluators.rs`):
//!
//! - [`rtree::RTreeEval`]: the server's own indexes — fence boxes in the R-tree ([`super::index::FenceIndex`])
//!   with the exact tests of [`super::detect`], objects in the [`super::index::ObjectGrid`].
//! - [`geofire::GeohashEval`]: GeoFire's scheme — objects keyed by 10-character geohashes in an ordered map
//!   and fetched by `geohashQueryBounds` ranges, fences listed under the geohash cells covering their boxes.
//! - [`postgis::PostgisEval`]: PostgreSQL with PostGIS — GiST indexes, `ST_Covers` and `ST_DWithin`.
//!
//! Every evaluator answers the two questions a geofencing engine asks, with the server's semantics:
//! which fences contain a point (boundary included, holes excluded) and which objects lie within a
//! great-circle radius (boundary included) on the sphere of [`super::index::EARTH_RADIUS_M`].

pub mod data;
pub mod geofire;
pub mod geohash;
pub mod postgis;
pub mod rtree;

#[cfg(test)]
mod tests;

use super::detect::{LatLon, MAX_RADIUS_M};

pub use data::Dataset;

/// Why an evaluator could not answer or load.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A query position or radius is out of range.
    #[error("bad query: {0}")]
    BadQuery(String),
    /// More fences or points than the evaluator can number.
    #[error("too many {what}: {count} (at most {max})")]
    TooMany {
        /// "fences" or "points".
        what: &'static str,
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The database has no PostGIS and the role cannot create the extension.
    #[error("PostGIS is not available in this database ({0}); install postgresql-15-postgis-3 and run CREATE EXTENSION postgis as a superuser (scripts/with-postgres does)")]
    NoPostgis(String),
    /// The database failed or refused a statement.
    #[error("PostgreSQL: {}", crate::store::postgres_error_text(.0))]
    Postgres(#[from] postgres::Error),
    /// Sending `COPY` data failed.
    #[error("PostgreSQL COPY: {0}")]
    Copy(std::io::Error),
}

/// Answers to a batch of queries: the ids answering query `i` are [`Answers::get`]`(i)`, in no particular
/// order.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    ids: Vec<u32>,
    /// `ends[i]` is where the answer of query `i` ends in `ids`; nondecreasing.
    ends: Vec<usize>,
}

impl Answers {
    /// Forgets every answer, keeping the memory.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.ends.clear();
    }

    /// Number of queries answered.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether no query is answered.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The ids answering query `i`.
    ///
    /// # Panics
    /// If fewer than `i + 1` queries are answered.
    pub fn get(&self, i: usize) -> &[u32] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.ids[start..self.ends[i]]
    }

    /// Ids over all answers.
    pub fn total(&self) -> usize {
        self.ids.len()
    }

    /// Appends the answer of the next query, which `answer` appends to the buffer it is given.
    fn push_with(
        &mut self,
        answer: impl FnOnce(&mut Vec<u32>) -> Result<(), EvalError>,
    ) -> Result<(), EvalError> {
        answer(&mut self.ids)?;
        self.ends.push(self.ids.len());
        Ok(())
    }

    /// Drops the answers past the first `queries`, and any ids of an unfinished one.
    fn truncate(&mut self, queries: usize) {
        self.ends.truncate(queries);
        self.ids.truncate(self.ends.last().copied().unwrap_or(0));
    }

    /// Appends `queries` answers given as `(query, id)` pairs in any order, queries numbered from 0.
    fn extend_from_pairs(&mut self, queries: usize, pairs: &[(usize, u32)]) {
        let mut counts = vec![0usize; queries];
        for &(q, _) in pairs {
            counts[q] += 1;
        }
        let base = self.ids.len();
        let mut next = Vec::with_capacity(queries);
        let mut end = base;
        for c in counts {
            next.push(end);
            end += c;
            self.ends.push(end);
        }
        self.ids.resize(end, 0);
        for &(q, id) in pairs {
            self.ids[next[q]] = id;
            next[q] += 1;
        }
    }
}

/// The questions a geofencing engine answers. Ids are positions in the [`Dataset`] the evaluator was
/// loaded with. Answers come in no particular order, each id once.
pub trait Evaluator {
    /// Short name for reports: `rtree`, `geohash` or `postgis`.
    fn name(&self) -> &'static str;

    /// Appends the fences that contain `at` to `out`.
    fn fences_at(&mut self, at: LatLon, out: &mut Vec<u32>) -> Result<(), EvalError>;

    /// Appends the objects within `radius_m` metres of `at` to `out`.
    fn objects_within(&mut self, at: LatLon, radius_m: f64, out: &mut Vec<u32>) -> Result<(), EvalError>;

    /// [`Evaluator::fences_at`] for every point, appended to `out`; an evaluator behind a network answers
    /// a batch in one round trip. On error, `out` keeps the answers before the batch.
    fn fences_at_batch(&mut self, at: &[LatLon], out: &mut Answers) -> Result<(), EvalError> {
        let before = out.len();
        let result = at.iter().try_for_each(|&p| out.push_with(|ids| self.fences_at(p, ids)));
        if result.is_err() {
            out.truncate(before);
        }
        result
    }

    /// [`Evaluator::objects_within`] for every `(centre, radius_m)`, appended to `out`. On error, `out`
    /// keeps the answers before the batch.
    fn objects_within_batch(
        &mut self,
        queries: &[(LatLon, f64)],
        out: &mut Answers,
    ) -> Result<(), EvalError> {
        let before = out.len();
        let result =
            queries.iter().try_for_each(|&(p, r)| out.push_with(|ids| self.objects_within(p, r, ids)));
        if result.is_err() {
            out.truncate(before);
        }
        result
    }
}

/// Checks a query position: finite, latitude in [-90, 90], longitude in [-180, 180].
pub fn check_position(at: LatLon) -> Result<(), EvalError> {
    LatLon::new(at.lat, at.lon).map(|_| ()).map_err(|e| EvalError::BadQuery(e.to_string()))
}

/// Checks a radius query: a valid position and a radius in `[0, MAX_RADIUS_M]` metres.
pub fn check_radius_query(at: LatLon, radius_m: f64) -> Result<(), EvalError> {
    check_position(at)?;
    if !(0.0..=MAX_RADIUS_M).contains(&radius_m) {
        return Err(EvalError::BadQuery(format!(
            "radius {radius_m} m out of range (must be >= 0 and <= {MAX_RADIUS_M})"
        )));
    }
    Ok(())
}

/// Number of fences or points an evaluator numbers with `u32` ids (PostgreSQL's `int4` is signed).
pub const MAX_ITEMS: usize = i32::MAX as usize;

fn check_sizes(data: &Dataset) -> Result<(), EvalError> {
    for (what, count) in [("fences", data.fences.len()), ("points", data.points.len())] {
        if count > MAX_ITEMS {
            return Err(EvalError::TooMany { what, count, max: MAX_ITEMS });
        }
    }
    Ok(())
}
