//! In-process geofence throughput: location updates per second on one core against a set of mixed
//! fences (circles and polygons), each update finding candidate fences in the R-tree along the segment
//! from the previous position and computing the exact transition for each.
//!
//! usage: cargo run --release -p rusher-server --example geo_bench [FENCES=10000] [UPDATES=2000000]

use std::time::Instant;

use rusher_server::topics::geo::detect::{self, Event, LatLon, Shape};
use rusher_server::topics::geo::index::FenceIndex;

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let fences: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let updates: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // A city-sized area, so objects actually meet fences: 1° × 1° around Paris.
    let (lon0, lat0) = (2.0, 48.5);
    let mut shapes = Vec::with_capacity(fences);
    let mut boxes = Vec::new();
    for id in 0..fences {
        let (lon, lat) = (rng.range(lon0, lon0 + 1.0), rng.range(lat0, lat0 + 1.0));
        let shape = if id % 2 == 0 {
            Shape::Circle { center: LatLon { lat, lon }, radius_m: rng.range(50.0, 2_000.0) }
        } else {
            let (w, h) = (rng.range(0.002, 0.03), rng.range(0.002, 0.03));
            let ring = serde_json::json!([
                [lon, lat],
                [lon + w, lat],
                [lon + w * 1.2, lat + h],
                [lon, lat + h * 0.8],
                [lon, lat]
            ]);
            detect::parse_shape(&serde_json::json!({"type": "Polygon", "coordinates": [ring]}), 1000)
                .expect("valid polygon")
        };
        for b in detect::bbox(&shape) {
            boxes.push((id as u32, b));
        }
        shapes.push(shape);
    }
    let started = Instant::now();
    let index = FenceIndex::bulk(boxes);
    println!("{fences} fences indexed in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);

    let objects = 10_000;
    let mut pos: Vec<LatLon> = (0..objects)
        .map(|_| LatLon { lat: rng.range(lat0, lat0 + 1.0), lon: rng.range(lon0, lon0 + 1.0) })
        .collect();
    // Pre-draw the moves so the timed loop measures detection, not the random numbers.
    let moves: Vec<(f64, f64)> =
        (0..updates.min(1 << 20)).map(|_| (rng.range(-0.0005, 0.0005), rng.range(-0.0005, 0.0005))).collect();
    let mut candidates = Vec::with_capacity(64);
    let (mut enters, mut exits, mut crosses, mut tested) = (0u64, 0u64, 0u64, 0u64);
    let started = Instant::now();
    for i in 0..updates {
        let o = i % objects;
        let prev = pos[o];
        let (dlon, dlat) = moves[i % moves.len()];
        let cur = LatLon {
            lat: (prev.lat + dlat).clamp(lat0, lat0 + 1.0),
            lon: (prev.lon + dlon).clamp(lon0, lon0 + 1.0),
        };
        candidates.clear();
        index.along_segment([prev.lon, prev.lat], [cur.lon, cur.lat], &mut candidates);
        for &f in &candidates {
            tested += 1;
            for e in detect::transition(&shapes[f as usize], Some(prev), cur) {
                match e {
                    Event::Enter => enters += 1,
                    Event::Exit => exits += 1,
                    Event::Cross => crosses += 1,
                    Event::Inside | Event::Outside => {}
                }
            }
        }
        pos[o] = cur;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{updates} location updates in {:.3} s: {:.0} updates/s on one core; {:.1} candidate fences per update; {enters} enter, {exits} exit, {crosses} cross",
        secs,
        updates as f64 / secs,
        tested as f64 / updates as f64
    );
}
