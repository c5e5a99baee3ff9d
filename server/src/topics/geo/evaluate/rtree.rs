//! The server's own evaluator: fence boxes in the R-tree, each candidate tested exactly, and objects in
//! the grid a tenant keeps them in.

use super::{check_position, check_radius_query, check_sizes, Dataset, EvalError, Evaluator};
use crate::topics::geo::detect::{self, LatLon, Shape};
use crate::topics::geo::index::{FenceIndex, ObjectGrid, ObjectId};
use crate::topics::geo::tenant::CELL_DEG;

/// [`FenceIndex`] plus [`detect::contains`] for fences, [`ObjectGrid`] for objects, as a tenant uses them.
#[derive(Debug)]
pub struct RTreeEval {
    index: FenceIndex,
    shapes: Vec<Shape>,
    grid: ObjectGrid,
    /// Scratch for the grid's answers (id and distance).
    near: Vec<(ObjectId, f64)>,
}

impl RTreeEval {
    /// Indexes the fences (bulk-loaded R-tree of their boxes) and the points.
    pub fn load(data: &Dataset) -> Result<Self, EvalError> {
        check_sizes(data)?;
        let mut boxes = Vec::with_capacity(data.fences.len());
        for (id, shape) in data.fences.iter().enumerate() {
            boxes.extend(detect::bbox(shape).into_iter().map(|b| (id as u32, b)));
        }
        let mut grid = ObjectGrid::new(CELL_DEG);
        for (id, p) in data.points.iter().enumerate() {
            grid.upsert(id as ObjectId, p.lon, p.lat);
        }
        Ok(RTreeEval { index: FenceIndex::bulk(boxes), shapes: data.fences.clone(), grid, near: Vec::new() })
    }
}

impl Evaluator for RTreeEval {
    fn name(&self) -> &'static str {
        "rtree"
    }

    fn fences_at(&mut self, at: LatLon, out: &mut Vec<u32>) -> Result<(), EvalError> {
        check_position(at)?;
        let start = out.len();
        self.index.at_point(at.lon, at.lat, out);
        let mut kept = start;
        for i in start..out.len() {
            let f = out[i];
            if detect::contains(&self.shapes[f as usize], at) {
                out[kept] = f;
                kept += 1;
            }
        }
        out.truncate(kept);
        Ok(())
    }

    fn objects_within(&mut self, at: LatLon, radius_m: f64, out: &mut Vec<u32>) -> Result<(), EvalError> {
        check_radius_query(at, radius_m)?;
        self.near.clear();
        self.grid.nearby(at.lon, at.lat, radius_m, usize::MAX, &mut self.near);
        out.extend(self.near.iter().map(|&(id, _)| id));
        Ok(())
    }
}
