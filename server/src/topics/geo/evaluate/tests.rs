//! The evaluators answer alike on the same awkward data: fences and points at the equator, across the
//! antimeridian and around both poles, polygons with holes, multipolygons, and queries on boundaries.
//!
//! The in-memory evaluators are checked against brute force. PostGIS (`#[ignore]`d: it needs the
//! database `scripts/with-postgres` starts) must match them except for boundary ties, which are checked
//! to be ties: a point within a millimetre of a circle (PostGIS's sphere is 0.03 m smaller) or within
//! 1e-9° of a polygon edge.

use super::data::{self, Rng, AWKWARD};
use super::geofire::GeohashEval;
use super::geohash;
use super::postgis::{PostgisEval, MAX_BATCH};
use super::rtree::RTreeEval;
use super::*;
use crate::topics::geo::detect::{self, Shape};
use crate::topics::geo::index::haversine_m;

const SEED: u64 = 0x5eed_f9e0;

/// The GeoFire gap of `geohash.rs`'s tests: a query whose bounds skip the row north of the equator.
const GAP: (LatLon, f64) = (LatLon { lat: -0.00001, lon: 0.001 }, 610.4);

struct Workload {
    data: Dataset,
    at: Vec<LatLon>,
    radius: Vec<(LatLon, f64)>,
}

fn workload(fences: usize, points: usize, queries: usize) -> Workload {
    let data = Dataset::awkward(fences, points, SEED);
    let mut rng = Rng(SEED ^ 1);
    let mut at = data::positions(&mut rng, &AWKWARD, queries);
    // Exact poles, both spellings of the antimeridian, the origin, and polygon vertices (boundaries).
    for (lat, lon) in [(90.0, 0.0), (-90.0, 45.0), (0.0, 180.0), (0.0, -180.0), (0.0, 0.0), (89.95, 180.0)] {
        at.push(LatLon { lat, lon });
    }
    for shape in data.fences.iter().filter(|s| matches!(s, Shape::Area(_))).take(60) {
        at.extend(data::vertices(shape));
    }
    let mut radius = data::radius_queries(&mut rng, &AWKWARD, queries, 1.0, 20_000.0);
    for (lat, lon, r) in
        [(90.0, 0.0, 5_000.0), (-90.0, 0.0, 12_000.0), (0.0, 180.0, 2_000.0), (0.0, -180.0, 900.0)]
    {
        radius.push((LatLon { lat, lon }, r));
    }
    radius.push(GAP);
    Workload { data, at, radius }
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v
}

fn fences_at(e: &mut dyn Evaluator, at: LatLon) -> Vec<u32> {
    let mut out = Vec::new();
    e.fences_at(at, &mut out).unwrap_or_else(|err| panic!("{} at {at:?}: {err}", e.name()));
    sorted(out)
}

fn within(e: &mut dyn Evaluator, (at, r): (LatLon, f64)) -> Vec<u32> {
    let mut out = Vec::new();
    e.objects_within(at, r, &mut out).unwrap_or_else(|err| panic!("{} at {at:?} r {r}: {err}", e.name()));
    sorted(out)
}

/// Elements of `a` not in `b` (both sorted).
fn missing(a: &[u32], b: &[u32]) -> Vec<u32> {
    a.iter().filter(|x| b.binary_search(x).is_err()).copied().collect()
}

#[test]
fn in_memory_evaluators_match_brute_force() {
    let w = workload(1_500, 10_000, 2_500);
    let mut rtree = RTreeEval::load(&w.data).unwrap();
    let mut geohash = GeohashEval::load(&w.data).unwrap();
    let mut found = 0;
    for &at in &w.at {
        let brute: Vec<u32> = (0..w.data.fences.len() as u32)
            .filter(|&f| detect::contains(&w.data.fences[f as usize], at))
            .collect();
        found += brute.len();
        assert_eq!(fences_at(&mut rtree, at), brute, "rtree at {at:?}");
        assert_eq!(fences_at(&mut geohash, at), brute, "geohash at {at:?}");
    }
    assert!(found > 2_000, "queries should land in fences: {found}");

    // GeoFire's answers: never a point outside the circle, and every point they miss lies outside the
    // ranges geohashQueryBounds gave (the algorithm's gap, not this implementation's), for a query
    // `bounds_may_miss` flags or in the ellipsoid's sliver beyond the box.
    let (mut found, mut flagged, mut missed, mut sliver) = (0, 0, 0, 0);
    for &(at, r) in &w.radius {
        let brute: Vec<u32> = (0..w.data.points.len() as u32)
            .filter(|&i| {
                let p = w.data.points[i as usize];
                haversine_m(at.lon, at.lat, p.lon, p.lat) <= r
            })
            .collect();
        found += brute.len();
        assert_eq!(within(&mut rtree, (at, r)), brute, "rtree around {at:?} r {r}");
        let gf = within(&mut geohash, (at, r));
        assert!(missing(&gf, &brute).is_empty(), "geohash extra around {at:?} r {r}");
        let may_miss = geohash::bounds_may_miss(at.lat, r);
        flagged += usize::from(may_miss);
        let ranges = GeohashEval::query_ranges(at, r);
        for i in missing(&brute, &gf) {
            let p = w.data.points[i as usize];
            assert!(!GeohashEval::in_ranges(&ranges, p), "point {i} in range but missed around {at:?} r {r}");
            if may_miss {
                missed += 1;
            } else {
                assert!(geohash::beyond_box_longitude(at.lat, at.lon, r, p.lon), "{p:?} around {at:?} r {r}");
                sliver += 1;
            }
        }
    }
    assert!(found > 20_000, "radius queries should find points: {found}");
    println!(
        "geohash: {flagged} of {} radius queries flagged, {missed} points missed there, {sliver} in slivers",
        w.radius.len()
    );
    // Both kinds of gap show through the evaluator.
    for q in [GAP, (LatLon { lat: 90.0, lon: 0.0 }, 5_000.0)] {
        let gap_missed = missing(&within(&mut rtree, q), &within(&mut geohash, q)).len();
        assert!(gap_missed > 0, "the GeoFire gap query {q:?} should miss points");
    }
}

/// Whether `p` is within a millimetre of the circle, or within 1e-9° of a polygon edge: a tie that two
/// implementations may answer either way.
fn fence_tie(shape: &Shape, p: LatLon) -> bool {
    match shape {
        Shape::Circle { center, radius_m } => (detect::haversine_m(*center, p) - radius_m).abs() <= 1e-3,
        Shape::Area(a) => {
            a.polygons().iter().flat_map(|poly| std::iter::once(poly.exterior()).chain(poly.interiors())).any(
                |ring| {
                    ring.lines().any(|l| {
                        [0.0, 360.0, -360.0].iter().any(|s| segment_distance(p.lon + s, p.lat, l) <= 1e-9)
                    })
                },
            )
        }
    }
}

fn segment_distance(x: f64, y: f64, l: geo::Line<f64>) -> f64 {
    let (dx, dy) = (l.end.x - l.start.x, l.end.y - l.start.y);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (((x - l.start.x) * dx + (y - l.start.y) * dy) / len2).clamp(0.0, 1.0)
    };
    let (px, py) = (l.start.x + t * dx, l.start.y + t * dy);
    ((x - px).powi(2) + (y - py).powi(2)).sqrt()
}

fn radius_tie(at: LatLon, r: f64, p: LatLon) -> bool {
    (detect::haversine_m(at, p) - r).abs() <= 1e-3
}

fn postgres_url() -> String {
    std::env::var("RUSHER_TEST_POSTGRES_URL").expect(
        "RUSHER_TEST_POSTGRES_URL is not set (needs PostgreSQL with PostGIS: scripts/test starts one)",
    )
}

#[test]
#[ignore = "needs PostgreSQL with PostGIS: scripts/test runs it inside scripts/with-postgres"]
fn postgres_postgis_answers_like_the_rtree_and_geohash() {
    let w = workload(1_500, 10_000, 2_500);
    let mut rtree = RTreeEval::load(&w.data).unwrap();
    let mut geohash = GeohashEval::load(&w.data).unwrap();
    let mut pg = PostgisEval::load(&postgres_url(), &w.data).unwrap();
    let schema = pg.schema().to_owned();

    // The plans use the GiST indexes.
    let plans = pg.explain(LatLon { lat: 48.85, lon: 2.35 }, 500.0).unwrap();
    for index in ["fence_areas_geom_idx", "fence_circles_box_idx", "objects_pos_idx"] {
        assert!(plans.contains(index), "{index} not used:\n{plans}");
    }

    let mut ties = 0;
    let mut singles = Vec::new();
    for &at in &w.at {
        let (want, got) = (fences_at(&mut rtree, at), fences_at(&mut pg, at));
        assert_eq!(fences_at(&mut geohash, at), want, "geohash at {at:?}");
        for f in missing(&want, &got).into_iter().chain(missing(&got, &want)) {
            assert!(
                fence_tie(&w.data.fences[f as usize], at),
                "fence {f} at {at:?}: rtree {want:?}, postgis {got:?}"
            );
            ties += 1;
        }
        singles.push(got);
    }
    let mut radius_singles = Vec::new();
    for &(at, r) in &w.radius {
        let (want, got) = (within(&mut rtree, (at, r)), within(&mut pg, (at, r)));
        for i in missing(&want, &got).into_iter().chain(missing(&got, &want)) {
            assert!(radius_tie(at, r, w.data.points[i as usize]), "point {i} around {at:?} r {r}");
            ties += 1;
        }
        radius_singles.push(got);
    }
    println!("postgis: {ties} boundary ties in {} queries", w.at.len() + w.radius.len());
    assert!(ties <= 20, "{ties} boundary ties: more than rounding explains");

    // Batches of queries in one round trip answer exactly as single queries do.
    let mut answers = Answers::default();
    for chunk in w.at.chunks(700) {
        pg.fences_at_batch(chunk, &mut answers).unwrap();
    }
    assert_eq!(answers.len(), w.at.len());
    for (i, single) in singles.iter().enumerate() {
        assert_eq!(&sorted(answers.get(i).to_vec()), single, "batch answer {i}");
    }
    answers.clear();
    for chunk in w.radius.chunks(700) {
        pg.objects_within_batch(chunk, &mut answers).unwrap();
    }
    for (i, single) in radius_singles.iter().enumerate() {
        assert_eq!(&sorted(answers.get(i).to_vec()), single, "batch radius answer {i}");
    }

    // Bad input is refused before it reaches the database, and a refused batch leaves the answers as
    // they were.
    let before = answers.len();
    let bad = [LatLon { lat: 0.0, lon: 0.0 }, LatLon { lat: 0.0, lon: 181.0 }];
    let err = pg.fences_at_batch(&bad, &mut answers).unwrap_err();
    assert!(matches!(err, EvalError::BadQuery(_)), "{err}");
    let too_many = vec![LatLon { lat: 0.0, lon: 0.0 }; MAX_BATCH + 1];
    assert!(pg.fences_at_batch(&too_many, &mut answers).unwrap_err().to_string().contains("at most"));
    assert!(pg.objects_within(LatLon { lat: 0.0, lon: 0.0 }, f64::INFINITY, &mut Vec::new()).is_err());
    assert_eq!(answers.len(), before);

    pg.drop_schema().unwrap();
    let mut admin = postgres::Client::connect(&postgres_url(), postgres::NoTls).unwrap();
    let left = admin.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema]).unwrap();
    assert!(left.is_none(), "schema {schema} should be dropped");
}

#[test]
fn default_batches_answer_like_single_queries_and_undo_on_error() {
    let w = workload(300, 2_000, 300);
    let mut rtree = RTreeEval::load(&w.data).unwrap();
    let mut answers = Answers::default();
    rtree.fences_at_batch(&w.at, &mut answers).unwrap();
    rtree.objects_within_batch(&w.radius, &mut answers).unwrap();
    assert_eq!(answers.len(), w.at.len() + w.radius.len());
    for (i, &at) in w.at.iter().enumerate() {
        assert_eq!(sorted(answers.get(i).to_vec()), fences_at(&mut rtree, at));
    }
    for (i, &q) in w.radius.iter().enumerate() {
        assert_eq!(sorted(answers.get(w.at.len() + i).to_vec()), within(&mut rtree, q));
    }
    let (len, total) = (answers.len(), answers.total());
    let bad = [w.radius[0], (LatLon { lat: 0.0, lon: 0.0 }, -5.0)];
    assert!(rtree.objects_within_batch(&bad, &mut answers).is_err());
    assert_eq!((answers.len(), answers.total()), (len, total));
}

#[test]
fn answers_group_pairs_by_query() {
    let mut a = Answers::default();
    a.extend_from_pairs(2, &[(1, 7)]);
    a.extend_from_pairs(4, &[(3, 9), (0, 1), (3, 8), (0, 2)]);
    assert_eq!(a.len(), 6);
    let got: Vec<Vec<u32>> = (0..a.len()).map(|i| sorted(a.get(i).to_vec())).collect();
    assert_eq!(got, vec![vec![], vec![7], vec![1, 2], vec![], vec![], vec![8, 9]]);
}

#[test]
#[ignore = "needs PostgreSQL: scripts/test runs it inside scripts/with-postgres"]
fn postgres_without_postgis_is_a_clear_error() {
    // A database without the extension, and a role that may not create it.
    let url = postgres_url();
    let name = format!("geoeval_plain_{}", std::process::id());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin.batch_execute(&format!("CREATE ROLE {name} LOGIN")).unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {name} OWNER {name}")).unwrap();
    let (base, _db) = url.rsplit_once('/').unwrap();
    let (scheme, host) = base.split_once("://").unwrap();
    let host = host.split_once('@').map_or(host, |(_, h)| h);
    let plain = format!("{scheme}://{name}@{host}/{name}");
    let err = PostgisEval::load(&plain, &Dataset::awkward(10, 10, SEED)).unwrap_err();
    admin.batch_execute(&format!("DROP DATABASE {name}")).unwrap();
    admin.batch_execute(&format!("DROP ROLE {name}")).unwrap();
    assert!(matches!(err, EvalError::NoPostgis(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("permission denied") && text.contains("postgresql-15-postgis-3"), "{text}");
}
