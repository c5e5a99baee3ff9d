// End-to-end test of the results report: renders a fixed results folder with rusher-report, opens
// the page from file:// in Debian's Chromium and checks that it loads nothing from anywhere else,
// logs no error, and draws every chart with the expected series.
import { execFileSync } from "node:child_process";
import { mkdtempSync, existsSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { CHROMIUM, launchChromium, watchPage } from "./browser.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const REPORT_BIN = process.env.REPORT_BIN
  ? path.resolve(process.env.REPORT_BIN)
  : path.resolve(here, "../../target/debug/rusher-report");
const FIXTURE = path.join(here, "fixtures/results");
const RUNS = ["2026-11-28-geo", "2026-11-28-geo-2"];
// A database comparison trimmed to three of its configurations; the first is the baseline of the ratios.
const DB_RUN = "2026-11-28-db";
const STORES = ["SQLite synchronous=full", "PostgreSQL synchronous_commit=on", "Redis appendfsync=always"];
// A Firebase comparison (a tiny run of bench/firebase): one chart per figure, a group of bars per side
// that measured it, one bar per statistic.
const FIREBASE_RUN = "2026-11-28-firebase";
const FIREBASE_FIGURES = {
  connect_open: ["firebase", "rusher"],
  connect_first_data: ["firebase", "rusher"],
  write_ack: ["firebase", "rusher", "rusher-full"],
  fanout_3: ["firebase", "rusher", "rusher-full"],
  geo_enter_5: ["firebase", "rusher"],
  geo_exit_5: ["firebase", "rusher"],
  bundle_gzip: ["firebase", "rusher"],
  bundle_minified: ["firebase", "rusher"],
  memory_heap: ["firebase", "rusher"],
};
const FIREBASE_STATISTICS = (id) => (id.startsWith("bundle") || id.startsWith("memory") ? ["size"] : ["p50", "p90", "p99", "max"]);

// A peer comparison (scripts/compare-peers, as measured here): one chart per figure, a group of bars per
// server that measured it, one bar per statistic; figures no server measured have no chart.
const PEERS_RUN = "2026-11-28-peers";
const ALL_PEERS = ["rusher", "actix", "tokio-tungstenite", "node-ws", "python-websockets"];
const PEER_FIGURES = {
  rss_per_connection: [ALL_PEERS, ["bytes"]],
  establish_rate: [["rusher", "actix", "tokio-tungstenite"], ["per second"]],
  establish_latency: [ALL_PEERS, ["p50", "p99", "max"]],
  echo_1000: [ALL_PEERS, ["p50", "p99", "max"]],
  echo_10000: [ALL_PEERS, ["p50", "p99", "max"]],
  broadcast_1000: [ALL_PEERS, ["p50", "p99", "max"]],
  broadcast_10000: [["actix"], ["p50", "p99", "max"]],
  max_clients: [ALL_PEERS, ["clients"]],
};

// Every chart the fixture must produce, with the series each must draw.
const EXPECTED_CHARTS = {
  "bytes-per-connection": ["server RSS", "kernel slab growth"],
  "compare-geo-ack": RUNS,
  "compare-geo-event": RUNS,
  [`db-write-${DB_RUN}`]: ["p50", "p99", "p99.9"],
  [`db-throughput-${DB_RUN}`]: [
    "chat acked at 100,000/s offered",
    "chat at capacity",
    "Yjs updates at capacity",
    "geofence logs at capacity",
  ],
  [`db-yjs-${DB_RUN}`]: ["p50", "p99", "p99.9", "large updates (4–64 KiB) p99"],
  [`db-reads-${DB_RUN}`]: ["history page p50", "history page p99", "room head p50", "room head p99"],
  [`db-e2e-${DB_RUN}`]: ["publish → ack p50", "publish → ack p99", "publish → delivery p50", "publish → delivery p99"],
  [`db-write-distribution-${DB_RUN}`]: STORES,
  [`db-e2e-distribution-${DB_RUN}`]: STORES,
  ...Object.fromEntries(
    ["10000", "100000"].map((n) => [
      `db-geo-${n}-${DB_RUN}`,
      [
        "fences containing a point, p50",
        "fences containing a point, p99",
        "objects within a radius, p50",
        "objects within a radius, p99",
      ],
    ]),
  ),
  ...Object.fromEntries(
    RUNS.flatMap((run) => [
      [`latency-${run}`, ["update → reply", "update → geofence event"]],
      [`connections-${run}`, ["connections open"]],
      [`memory-${run}`, ["server RSS (all server processes)", "kernel slab (whole machine)"]],
    ]),
  ),
  ...Object.fromEntries(Object.keys(FIREBASE_FIGURES).map((id) => [`firebase-${FIREBASE_RUN}-${id}`, FIREBASE_STATISTICS(id)])),
  ...Object.fromEntries(Object.entries(PEER_FIGURES).map(([id, [, stats]]) => [`peers-${PEERS_RUN}-${id}`, stats])),
};

test("the report renders offline in Chromium with every chart", { timeout: 60_000 }, async (t) => {
  assert.ok(existsSync(REPORT_BIN), `${REPORT_BIN} missing: build it with cargo build -p rusher-report`);
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} missing: apt-get install chromium`);
  const dir = mkdtempSync(path.join(tmpdir(), "rusher-report-"));
  const page_path = path.join(dir, "index.html");
  execFileSync(REPORT_BIN, [FIXTURE, "--output", page_path], { stdio: "pipe", timeout: 30_000 });

  const browser = await launchChromium(chromium);
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const problems = watchPage(page, { isLocal: (url) => url.startsWith("file:") || url.startsWith("data:") });

  await page.goto(pathToFileURL(page_path).href, { waitUntil: "load", timeout: 30_000 });
  assert.equal(await page.title(), "Rusher load-test results");

  const charts = await page.$$eval("svg.chart", (svgs) =>
    svgs.map((svg) => {
      const box = svg.getBoundingClientRect();
      return {
        id: svg.dataset.chart,
        width: box.width,
        height: box.height,
        title: svg.querySelector("title")?.textContent ?? "",
        axisLabels: [...svg.querySelectorAll(".axis-label")].map((e) => e.textContent),
        legend: [...svg.querySelectorAll(".legend-item")].map((e) => e.textContent),
        series: [...svg.querySelectorAll(".series")].map((s) => {
          const b = s.getBBox();
          return {
            name: s.dataset.series,
            title: s.querySelector("title")?.textContent ?? "",
            // A flat line has no height, so one dimension is enough.
            drawn: b.width > 0 || b.height > 0,
            path: s.tagName === "path" ? s.getAttribute("d") : null,
          };
        }),
      };
    }),
  );
  assert.deepEqual(charts.map((c) => c.id).sort(), Object.keys(EXPECTED_CHARTS).sort());
  for (const chart of charts) {
    const expected = EXPECTED_CHARTS[chart.id];
    assert.ok(chart.width > 300 && chart.height > 150, `${chart.id} is laid out (${chart.width}×${chart.height})`);
    assert.ok(chart.title.length > 0, `${chart.id} has a title`);
    assert.ok(chart.axisLabels.every((l) => l.length > 0) && chart.axisLabels.length >= 1, `${chart.id} axis labels`);
    assert.deepEqual(chart.series.map((s) => s.name), expected, `${chart.id} series`);
    assert.deepEqual(chart.legend, expected, `${chart.id} legend`);
    for (const s of chart.series) {
      assert.equal(s.title, s.name, `${chart.id}: series ${s.name} has a <title>`);
      assert.ok(s.drawn, `${chart.id}: series ${s.name} is drawn`);
      if (s.path !== null) assert.match(s.path, /^M[\d.]+,[\d.]+(L[\d.]+,[\d.]+)+$/, `${chart.id}: ${s.name} path`);
    }
  }

  // The percentile axis of a latency chart is labelled the HdrHistogram way.
  const ticks = await page.$$eval('svg[data-chart="compare-geo-event"] .tick', (ts) => ts.map((e) => e.textContent));
  for (const tick of ["50%", "90%", "99%", "99.9%", "99.99%"]) assert.ok(ticks.includes(tick), `tick ${tick}`);

  // The peer comparison: a row per figure with every server's value, ratios to rusher's; each chart a
  // group per server that measured the figure, every bar with its ratio (rusher's own ×1.00).
  const peerRows = await page.$$eval(`#comparisons table.peer-figures[data-run="${PEERS_RUN}"] tr`, (rows) =>
    rows.slice(1).map((r) => [...r.querySelectorAll("td")].map((td) => td.textContent)),
  );
  assert.equal(peerRows.length, 9, "a row per figure, the unmeasured one included");
  for (const row of peerRows) assert.equal(row.length, 1 + ALL_PEERS.length, `${row}`);
  assert.match(peerRows[0][2], /^[\d,]+ B \(×[\d.]+\)$/, "actix's memory with its ratio to rusher's");
  for (const [id, [servers, stats]] of Object.entries(PEER_FIGURES)) {
    const chart = page.locator(`svg[data-chart="peers-${PEERS_RUN}-${id}"]`);
    const ticks = await chart.locator(".tick").allTextContents();
    for (const server of servers) assert.ok(ticks.includes(server), `${id}: a group for ${server}`);
    const values = await chart.locator(".bar-value").allTextContents();
    assert.equal(values.length, stats.length * servers.length, `${id}: ${values}`);
    if (servers.includes("rusher")) {
      assert.ok(values.filter((v) => v.endsWith(" ×1.00")).length >= stats.length, `${id}: ${values}`);
    }
  }
  const peers = page.locator(`section.run[data-run="${PEERS_RUN}"]`);
  await assert.doesNotReject(peers.locator("pre.reproduce", { hasText: "scripts/compare-peers 1000 10000 19000" }).waitFor({ timeout: 5_000 }));

  // The database comparison: every bar carries its value and its ratio to the baseline's, which is 1.
  const bars = await page.$$eval(`svg[data-chart="db-write-${DB_RUN}"] .bar-value`, (ts) => ts.map((e) => e.textContent));
  assert.equal(bars.length, 3 * STORES.length, `${bars}`);
  for (const text of bars) assert.match(text, /^[\d.,]+ ms ×[\d.]+$/, text);
  assert.deepEqual(bars.filter((b) => b.endsWith(" ×1.00")).length >= 3, true, `${bars}`);
  // ... and the comparisons section has its headline ratios, linking to the run.
  const headline = await page.$$eval("#comparisons table.db-headline tr", (rows) =>
    rows.slice(1).map((r) => [...r.querySelectorAll("td")].map((td) => td.textContent)),
  );
  assert.deepEqual(headline.map((r) => r[0]), STORES);
  for (const cell of headline[0].slice(1)) assert.match(cell, /×1\.00$/, `baseline ${cell}`);
  assert.equal(await page.locator(`#comparisons a[href="#run-${DB_RUN}"]`).count(), 1);
  // The geofence evaluators are compared with the R-tree, the server's own.
  const geo = await page.$$eval(`svg[data-chart="db-geo-10000-${DB_RUN}"] .bar-value`, (ts) => ts.map((e) => e.textContent));
  assert.equal(geo.length, 4 * 3, `${geo}`);
  for (const text of geo.slice(0, 3)) assert.match(text, /^[\d.,]+ (µs|ms) ×[\d.]+$/, text);
  assert.ok(geo.filter((t) => t.endsWith(" ×1.00")).length >= 4, `${geo}`);
  const configs = await page.$$eval(`section.run[data-run="${DB_RUN}"] table.db-configs tr`, (rows) => rows.length);
  assert.equal(configs, 1 + STORES.length, "a row per configuration under the heading");
  const db = page.locator(`section.run[data-run="${DB_RUN}"]`);
  await assert.doesNotReject(db.locator("pre.reproduce", { hasText: "scripts/bench-db" }).waitFor({ timeout: 5_000 }));
  assert.match(await db.locator(".setup").innerText(), /synchronous_commit=on/);

  // The Firebase comparison says what it measures; every bar carries its value and its ratio to rusher's.
  const firebase = await page.locator("#comparisons .what").innerText();
  assert.match(firebase, /SDK and protocol cost on loopback, not Google's servers/);
  assert.equal(await page.locator(`table.firebase-ratios[data-run="${FIREBASE_RUN}"] tr`).count(), 1 + Object.keys(FIREBASE_FIGURES).length);
  for (const [id, sides] of Object.entries(FIREBASE_FIGURES)) {
    const chart = page.locator(`svg[data-chart="firebase-${FIREBASE_RUN}-${id}"]`);
    const stats = FIREBASE_STATISTICS(id).length;
    assert.equal(await chart.locator("rect.bar").count(), stats * sides.length, `${id}: a bar per side and statistic`);
    const ticks = await chart.locator(".tick").allTextContents();
    for (const side of sides) assert.ok(ticks.includes(side), `${id}: a group for ${side}`);
    const values = await chart.locator(".bar-value").allTextContents();
    assert.equal(values.length, stats * sides.length, `${id}: ${values}`);
    for (const v of values) assert.match(v, /^[\d.,]+ (ms|B) ×[\d.]+$/, `${id}: value and ratio ${v}`);
    assert.ok(values.filter((v) => v.endsWith(" ×1.00")).length >= stats, `${id}: rusher's own bars are ×1.00: ${values}`);
  }
  const section = page.locator(`section.run[data-run="${FIREBASE_RUN}"]`);
  assert.match(await section.locator("figcaption").first().innerText(), /ratio to rusher's/);
  await assert.doesNotReject(section.locator("pre.reproduce", { hasText: "scripts/bench-firebase tiny" }).waitFor({ timeout: 5_000 }));
  assert.match(await section.locator(".errors").innerText(), /None/);

  // Each run shows its setup, errors and how to reproduce it.
  for (const run of RUNS) {
    const section = page.locator(`section.run[data-run="${run}"]`);
    await assert.doesNotReject(section.locator("pre.reproduce", { hasText: "scripts/bench-geo" }).waitFor({ timeout: 5_000 }));
    assert.match(await section.locator(".errors").innerText(), /None/);
    assert.match(await section.locator(".setup").innerText(), /6\.18\.44-fc-v782/);
  }

  const shot = path.join(dir, "report.png");
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(statSync(shot).size > 10_000, "screenshot written");
  t.diagnostic(`screenshot: ${shot}`);
  assert.deepEqual(problems, []);
});
