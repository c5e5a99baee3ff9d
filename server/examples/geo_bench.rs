//! In-process geofence throughput: location updates per second on one core through a tenant — the
//! server's own path (object lookup, candidate fences from the R-tree along the move, per-(object,
//! fence) state, events into a buffer) — against a set of mixed fences (circles and polygons).
//!
//! usage: cargo run --release -p rusher-server --example geo_bench [FENCES=10000] [UPDATES=5000000] [OBJECTS=10000] [SIZE_M=2000]
//!
//! Fences are circles of 50 m to SIZE_M radius and polygons of similar size, spread over 1° × 1° around
//! Paris. With the default 2,000 m a position lies in about five fence boxes (a dense map); SIZE_M=500 is
//! a map of shop- and block-sized fences. The figure depends on that density: say which one you quote.

use std::time::Instant;

use rusher_server::topics::geo::detect::LatLon;
use rusher_server::topics::geo::fence::{self, Limits};
use rusher_server::topics::geo::tenant::{Fix, Kind, Tenant};
use serde_json::json;

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

/// CPU time of this thread, in seconds: unlike wall time, not inflated when other processes share the
/// cores.
fn thread_cpu_s() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_THREAD_CPUTIME_ID is always valid.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn main() {
    let mut args = std::env::args().skip(1);
    let fences: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let updates: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000_000);
    let objects: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let size_m: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000.0);
    let scale = size_m / 2_000.0;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // A city-sized area, so objects actually meet fences: 1° × 1° around Paris.
    let (lon0, lat0) = (2.0, 48.5);
    let mut tenant = Tenant::new(0);
    let limits = Limits { max_vertices: 1000 };
    let started = Instant::now();
    let mut sink = Vec::new();
    for id in 0..fences {
        let (lon, lat) = (rng.range(lon0, lon0 + 1.0), rng.range(lat0, lat0 + 1.0));
        let geometry = if id % 2 == 0 {
            json!({"type": "Point", "coordinates": [lon, lat], "radius": rng.range(50.0, size_m)})
        } else {
            let (w, h) = (rng.range(0.002, 0.03) * scale, rng.range(0.002, 0.03) * scale);
            json!({"type": "Polygon", "coordinates": [[
                [lon, lat], [lon + w, lat], [lon + w * 1.2, lat + h], [lon, lat + h * 0.8], [lon, lat]
            ]]})
        };
        let def = fence::parse(&json!({"id": format!("f-{id}"), "geometry": geometry}), limits)
            .expect("valid fence");
        tenant.put_fence(def, 0, &mut sink);
    }
    println!("{fences} fences created in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);

    let names: Vec<String> = (0..objects).map(|i| format!("obj-{i}")).collect();
    let mut pos: Vec<LatLon> = (0..objects)
        .map(|_| LatLon { lat: rng.range(lat0, lat0 + 1.0), lon: rng.range(lon0, lon0 + 1.0) })
        .collect();
    // Pre-draw the moves (about 50 m) so the timed loop measures detection, not the random numbers.
    let moves: Vec<(f64, f64)> =
        (0..updates.min(1 << 20)).map(|_| (rng.range(-0.0005, 0.0005), rng.range(-0.0005, 0.0005))).collect();
    let mut fired = Vec::with_capacity(64);
    let (mut enters, mut exits, mut crosses) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let cpu0 = thread_cpu_s();
    for i in 0..updates {
        let o = i % objects;
        let (dlon, dlat) = moves[i % moves.len()];
        let prev = pos[o];
        let cur = LatLon {
            lat: (prev.lat + dlat).clamp(lat0, lat0 + 1.0),
            lon: (prev.lon + dlon).clamp(lon0, lon0 + 1.0),
        };
        pos[o] = cur;
        fired.clear();
        let fix = Fix { pos: cur, ts: i as f64, speed: None, heading: None };
        tenant.locate(&names[o], fix, None, usize::MAX, 0, &mut fired);
        for e in &fired {
            match e.event {
                Kind::Enter => enters += 1,
                Kind::Exit => exits += 1,
                Kind::Cross => crosses += 1,
                _ => {}
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_s() - cpu0;
    println!(
        "{updates} location updates of {objects} objects in {secs:.3} s wall, {cpu:.3} s CPU: {:.0} updates per CPU-second on one core; {enters} enter, {exits} exit, {crosses} cross",
        updates as f64 / cpu,
    );
}
