// Keeps the comparison from rotting: every workload once, tiny, against firebase-server and rusher, and
// checks that every figure is present and sane. No timing thresholds: timings here are noise.

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { WHAT, readFirebaseConfig, runComparison } from "../lib/compare.mjs";
import { ratio, resultsFolder, writeResults } from "../lib/results.mjs";
import { summarize } from "../lib/stats.mjs";
import { SCALES } from "../lib/workloads.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const RUSHER_BIN = process.env.RUSHER_BIN
  ? path.resolve(process.env.RUSHER_BIN)
  : path.resolve(here, "../../../target/debug/rusher");

test("summarize: nearest-rank percentiles with the count, null without samples", () => {
  const samples = Array.from({ length: 100 }, (_, i) => 100 - i); // 100 … 1, unsorted on purpose
  assert.deepEqual(summarize(samples), { count: 100, min: 1, mean: 50.5, p50: 50, p90: 90, p99: 99, max: 100 });
  assert.deepEqual(summarize([2.5]), { count: 1, min: 2.5, mean: 2.5, p50: 2.5, p90: 2.5, p99: 2.5, max: 2.5 });
  assert.equal(summarize([]), null);
});

test("ratio: firebase ÷ rusher, n/a when a side is missing", () => {
  assert.equal(ratio(50, 2), "25×");
  assert.equal(ratio(3, 2), "1.5×");
  assert.equal(ratio(1, 4), "0.25×");
  assert.equal(ratio(undefined, 4), "n/a");
  assert.equal(ratio(3, 0), "n/a");
});

test("resultsFolder: dated, numbered when the name is taken", () => {
  const date = new Date("2026-11-28T12:00:00Z");
  assert.equal(resultsFolder("/r", "firebase", () => false, date), "/r/2026-11-28-firebase");
  const taken = new Set(["/r/2026-11-28-firebase", "/r/2026-11-28-firebase-2"]);
  assert.equal(resultsFolder("/r", "firebase", (p) => taken.has(p), date), "/r/2026-11-28-firebase-3");
  assert.equal(resultsFolder("/r", "firebase-real", () => false, date), "/r/2026-11-28-firebase-real");
});

test("readFirebaseConfig: a web config with databaseURL, or a clear error", (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "firebase-config-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name, text) => {
    writeFileSync(path.join(dir, name), text);
    return path.join(dir, name);
  };
  const config = { apiKey: "k", databaseURL: "https://demo-default-rtdb.firebaseio.com" };
  assert.deepEqual(readFirebaseConfig(file("ok.json", JSON.stringify(config))), config);
  assert.throws(() => readFirebaseConfig(file("no-url.json", '{"apiKey": "k"}')), /needs a JSON object with a "databaseURL"/);
  assert.throws(() => readFirebaseConfig(file("bad.json", "{")), /not a readable JSON file/);
  assert.throws(() => readFirebaseConfig(path.join(dir, "missing.json")), /not a readable JSON file/);
});

test("every workload once against firebase-server and rusher: each figure present and sane", { timeout: 60000 }, async (t) => {
  assert.ok(existsSync(RUSHER_BIN), `${RUSHER_BIN} is missing: build it with cargo build -p rusher-server`);
  const summary = await runComparison({ rusherBin: RUSHER_BIN, scale: "tiny" });
  const tiny = SCALES.tiny;
  const c = summary.firebase;

  assert.equal(summary.scenario.kind, "firebase");
  assert.equal(summary.connections, Math.max(tiny.fanout[0].listeners, tiny.geo[0].listeners, tiny.memory.clients) + 1);
  assert.equal(c.what, WHAT);
  assert.equal(c.real_firebase.ran, false);
  assert.match(c.real_firebase.reason, /FIREBASE_CONFIG not given/);
  assert.ok(Number(c.versions.firebase.split(".")[0]) >= 10, `firebase ${c.versions.firebase}`);
  assert.deepEqual(c.sides.map((s) => s.id), ["firebase", "rusher", "rusher-full"]);
  assert.equal(c.servers.length, 3);

  const expected = {
    connect_open: tiny.connect.count,
    connect_first_data: tiny.connect.count,
    write_ack: tiny.write.count,
    ...Object.fromEntries(tiny.fanout.map((f) => [`fanout_${f.listeners}`, f.listeners * f.rounds])),
    ...Object.fromEntries(tiny.geo.flatMap((g) => ["enter", "exit"].map((k) => [`geo_${k}_${g.background}`, g.listeners * g.rounds]))),
  };
  const byId = Object.fromEntries(c.figures.map((f) => [f.id, f]));
  for (const [id, count] of Object.entries(expected)) {
    const f = byId[id];
    assert.ok(f, `figure ${id} is missing`);
    assert.equal(f.unit, "ms");
    const sides = c.sides.filter((s) => s.workloads.includes(id.split("_")[0])).map((s) => s.id);
    assert.deepEqual(Object.keys(f.values), sides, id);
    for (const [side, v] of Object.entries(f.values)) {
      const where = `${id} ${side}`;
      assert.equal(v.count, count, `${where}: samples`);
      assert.ok(v.min >= 0 && v.min <= v.p50 && v.p50 <= v.p90 && v.p90 <= v.p99 && v.p99 <= v.max, `${where}: ${JSON.stringify(v)}`);
      assert.ok(v.max < 10000, `${where}: every sample is under the 10 s operation timeout`);
      if (f.missing) assert.equal(f.missing[side], 0, `${where}: every listener heard every update`);
    }
  }

  const gzip = byId.bundle_gzip.values;
  const minified = byId.bundle_minified.values;
  for (const side of ["firebase", "rusher"]) {
    assert.ok(gzip[side].value > 1000 && gzip[side].value < minified[side].value, `bundle ${side}: ${gzip[side].value} gzipped of ${minified[side].value}`);
    assert.ok(byId.memory_heap.values[side].value > 0, `memory ${side}: ${byId.memory_heap.values[side].value}`);
  }
  const packages = c.details.bundle;
  assert.ok(packages.firebase.packages["@firebase/database"] > 0 && packages.firebase.packages["geofire-common"] > 0);
  assert.ok(packages.rusher.packages.phoenix > 0 && packages.rusher.packages["@rusher/client"] > 0);
  assert.ok(packages.rusher.without_collab.gzip_bytes < gzip.rusher.value);

  const dir = mkdtempSync(path.join(tmpdir(), "firebase-results-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeResults(dir, summary, "node bench/firebase/run.mjs --scale tiny");
  assert.deepEqual(JSON.parse(readFileSync(path.join(dir, "summary.json"), "utf8")), summary);
  const setup = readFileSync(path.join(dir, "SETUP.md"), "utf8");
  assert.ok(setup.includes(WHAT) && setup.includes("## Server processes") && setup.includes("Real Firebase layer: skipped"));
  for (const s of c.servers) assert.ok(setup.includes(`- ${s.pid}: \``), `SETUP.md lists server ${s.pid}`);
  const results = readFileSync(path.join(dir, "RESULTS.md"), "utf8");
  for (const f of c.figures) assert.ok(results.includes(f.title), `RESULTS.md shows ${f.id}`);
});
