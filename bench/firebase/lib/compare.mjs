// One comparison run: start the servers, drive every workload through both sides (interleaved, so drift
// on a shared machine hits both alike), stop the servers, and return the summary that results.mjs writes:
// `{scenario, firebase: {what, versions, sides, servers, figures, details, real_firebase}}`.

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { makeAdapter } from "./adapters/index.mjs";
import { COLLAB_PACKAGES, bundleSize } from "./bundle.mjs";
import { measureMemory } from "./memory.mjs";
import { startServer } from "./servers.mjs";
import * as workloads from "./workloads.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = path.join(here, "..", "node_modules");

/** What every figure of this comparison measures, in the words the results carry. */
export const WHAT = "SDK and protocol cost on loopback, not Google's servers";

/**
 * The version of an installed package, read from node_modules as `npm ci` lays it out from the lockfile
 * (`inside`: the package holding a nested copy). Some packages do not export their package.json.
 */
function version(name, inside) {
  const dir = inside ? path.join(modules, inside, "node_modules", name) : path.join(modules, name);
  return JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")).version;
}

/** Versions of everything a figure depends on. */
export function versions() {
  return {
    node: process.versions.node,
    firebase: version("firebase"),
    "firebase-server": version("firebase-server"),
    "firebase (inside firebase-server)": version("firebase", "firebase-server"),
    "geofire-common": version("geofire-common"),
    "@rusher/client": version("@rusher/client"),
    phoenix: version("phoenix"),
    esbuild: version("esbuild"),
  };
}

/**
 * Reads `FIREBASE_CONFIG`'s file: a Firebase web app config (as the console shows it) with a
 * `databaseURL`. Throws with the reason when it is not one.
 */
export function readFirebaseConfig(file) {
  let config;
  try {
    config = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`FIREBASE_CONFIG ${file}: not a readable JSON file (${err.message})`);
  }
  if (typeof config !== "object" || config === null || typeof config.databaseURL !== "string") {
    throw new Error(`FIREBASE_CONFIG ${file}: needs a JSON object with a "databaseURL" (the web app config)`);
  }
  return config;
}

/** The sides, in the order of every table and chart. */
function describeSides(firebaseLabel, servers) {
  return [
    {
      id: "firebase",
      label: firebaseLabel,
      durability: servers.firebase
        ? "firebase-server keeps data in memory: an acknowledgement means the write was applied in memory"
        : "a real Firebase project: acknowledged once Google's servers committed the write",
      workloads: ["connect", "write", "fanout", "geo", "memory", "bundle"],
    },
    {
      id: "rusher",
      label: "@rusher/client → rusher, SQLite synchronous=normal",
      durability: "acknowledged once committed to SQLite in WAL mode without fsync (survives a crash of the process)",
      workloads: ["connect", "write", "fanout", "geo", "memory", "bundle"],
    },
    {
      id: "rusher-full",
      label: "@rusher/client → rusher, SQLite synchronous=full",
      durability: "acknowledged once committed and fsynced (survives power loss)",
      workloads: ["write", "fanout"],
    },
  ];
}

/** A latency figure: `values` maps each side that ran it to its percentiles (ms). */
function latencyFigure(id, title, values, extra = {}) {
  return { id, title, unit: "ms", kind: "latency", values, ...extra };
}

/** A size figure: `values` maps each side to `{value}` in `unit`. */
function sizeFigure(id, title, unit, values) {
  return { id, title, unit, kind: "size", values };
}

/**
 * Run the comparison. `rusherBin`: the rusher binary; `firebaseConfig`: a real project's web config
 * (then no firebase-server is started); `scale`: a key of `workloads.SCALES`; `log(line)` for progress.
 */
export async function runComparison({ rusherBin, firebaseConfig = null, scale = "full", log = () => {} }) {
  const sizes = workloads.SCALES[scale];
  if (!sizes) throw new Error(`unknown scale ${JSON.stringify(scale)}`);
  const runId = `r${Date.now().toString(36)}`;
  const dir = mkdtempSync(path.join(tmpdir(), "rusher-firebase-"));
  const started = [];
  const start = async (...args) => {
    const s = await startServer(...args);
    started.push(s);
    return s;
  };
  try {
    const servers = {};
    let firebaseTarget;
    let firebaseLabel;
    if (firebaseConfig) {
      firebaseTarget = { kind: "firebase", config: firebaseConfig, base: `rusher-bench/${runId}` };
      firebaseLabel = `firebase SDK → Firebase project (${new URL(firebaseConfig.databaseURL).host})`;
    } else {
      servers.firebase = await start("firebase-server", process.execPath, [path.join(here, "firebase-server.mjs")]);
      firebaseTarget = {
        kind: "firebase",
        config: { databaseURL: `http://127.0.0.1:${servers.firebase.port}?ns=bench` },
        base: runId,
      };
      firebaseLabel = "firebase SDK → firebase-server (in memory)";
    }
    for (const sync of ["normal", "full"]) {
      servers[`rusher-${sync}`] = await start(`rusher (synchronous=${sync})`, rusherBin, [
        "--listen", "127.0.0.1:0",
        "--store", `sqlite://${path.join(dir, `${sync}.db`)}`,
        "--sqlite-synchronous", sync,
        "--log", "warn",
      ], { env: { NO_COLOR: "1" } });
    }
    const targets = {
      firebase: firebaseTarget,
      rusher: { kind: "rusher", url: `ws://127.0.0.1:${servers["rusher-normal"].port}`, prefix: runId },
      "rusher-full": { kind: "rusher", url: `ws://127.0.0.1:${servers["rusher-full"].port}`, prefix: `${runId}f` },
    };
    const sides = describeSides(firebaseLabel, servers);
    const adapters = Object.fromEntries(sides.map((s) => [s.id, makeAdapter(targets[s.id])]));
    const runs = (workload) => sides.filter((s) => s.workloads.includes(workload));
    const each = async (workload, fn) => {
      const out = {};
      for (const side of runs(workload)) {
        log(`${workload}: ${side.id}`);
        out[side.id] = await fn(side);
      }
      return out;
    };
    const pick = (results, f) => Object.fromEntries(Object.entries(results).map(([id, r]) => [id, f(r)]));

    const figures = [];
    const details = {};
    const connect = await each("connect", (s) => workloads.connect(adapters[s.id], sizes.connect));
    figures.push(latencyFigure("connect_open", "Connect: new client until its connection is up", pick(connect, (r) => r.open)));
    figures.push(
      latencyFigure(
        "connect_first_data",
        `Connect: new client until its first read of ${sizes.connect.seed} messages is answered`,
        pick(connect, (r) => r.first_data),
      ),
    );
    const write = await each("write", (s) => workloads.write(adapters[s.id], sizes.write));
    figures.push(latencyFigure("write_ack", "Write until acknowledged, one at a time", pick(write, (r) => r.ack)));
    for (const f of sizes.fanout) {
      const fan = await each("fanout", (s) => workloads.fanout(adapters[s.id], f));
      details[`fanout_${f.listeners}`] = fan;
      figures.push(
        latencyFigure(
          `fanout_${f.listeners}`,
          `Fan-out to ${f.listeners} listeners: write until each listener's callback`,
          pick(fan, (r) => r.copy),
          { missing: pick(fan, (r) => r.missing) },
        ),
      );
    }
    for (const g of sizes.geo) {
      const geo = await each("geo", (s) => workloads.geo(adapters[s.id], g));
      details[`geo_${g.background}`] = geo;
      const what = `${g.background} other objects`;
      const missing = { missing: pick(geo, (r) => r.missing) };
      figures.push(
        latencyFigure(`geo_enter_${g.background}`, `Geo query, ${what}: a point moves in until each listener sees it enter`,
          pick(geo, (r) => r.enter), missing),
      );
      figures.push(
        latencyFigure(`geo_exit_${g.background}`, `Geo query, ${what}: the point moves out until each listener sees it exit`,
          pick(geo, (r) => r.exit), missing),
      );
    }
    const bundles = await each("bundle", async (s) => {
      if (s.id === "firebase") return bundleSize("firebase");
      const b = await bundleSize("rusher");
      const { minified_bytes, gzip_bytes } = await bundleSize("rusher", COLLAB_PACKAGES);
      return { ...b, without_collab: { external: COLLAB_PACKAGES, minified_bytes, gzip_bytes } };
    });
    details.bundle = bundles;
    figures.push(sizeFigure("bundle_gzip", "Client bundle of the minimal app, minified and gzipped", "bytes", pick(bundles, (b) => ({ value: b.gzip_bytes }))));
    figures.push(sizeFigure("bundle_minified", "Client bundle of the minimal app, minified", "bytes", pick(bundles, (b) => ({ value: b.minified_bytes }))));
    const memory = await each("memory", (s) => measureMemory(targets[s.id], sizes.memory.clients));
    details.memory = memory;
    figures.push(
      sizeFigure(
        "memory_heap",
        `Client memory: heap per connected, listening client (${sizes.memory.clients} in one process)`,
        "bytes",
        pick(memory, (m) => ({ value: m.heap_used_bytes })),
      ),
    );

    for (const side of sides) await adapters[side.id].cleanup();
    return {
      scenario: { kind: "firebase", scale, firebase_target: firebaseConfig ? "firebase" : "firebase-server", ...sizes },
      // The most clients one side held open at once (listeners plus the writer, or the memory clients
      // plus the first one).
      connections: Math.max(...[...sizes.fanout, ...sizes.geo].map((w) => w.listeners), sizes.memory.clients) + 1,
      firebase: {
        what: WHAT,
        versions: versions(),
        sides,
        servers: Object.values(servers).map((s) => ({ name: s.name, pid: s.pid, command: s.command })),
        figures,
        details,
        real_firebase: firebaseConfig
          ? { ran: true, database_url: firebaseConfig.databaseURL }
          : { ran: false, reason: "FIREBASE_CONFIG not given: the firebase side ran against firebase-server on loopback" },
      },
    };
  } catch (err) {
    for (const s of started) log(`--- ${s.name} (pid ${s.pid}) log:\n${s.logs()}`);
    throw err;
  } finally {
    for (const s of started) await s.stop().catch((err) => log(`${s.name}: ${err.message}`));
    rmSync(dir, { recursive: true, force: true });
  }
}
