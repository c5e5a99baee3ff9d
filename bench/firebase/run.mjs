// The Firebase comparison: the official firebase JS SDK against firebase-server (or a real project), and
// @rusher/client against rusher, on the same workloads. Starts the servers on free loopback ports, runs
// every workload, stops the servers by PID and writes results/<date>-firebase/ (see README.md).
//
// usage: node run.mjs [--scale full|tiny] [--rusher-bin PATH] [--results DIR]
//   FIREBASE_CONFIG=FILE  the firebase side runs against the project FILE configures (a web app config
//                         with databaseURL) instead of firebase-server; results go to <date>-firebase-real

import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { readFirebaseConfig, runComparison } from "./lib/compare.mjs";
import { resultsFolder, resultsMarkdown, writeResults } from "./lib/results.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");

const { values } = parseArgs({
  options: {
    scale: { type: "string", default: "full" },
    "rusher-bin": { type: "string", default: path.join(repo, "target/release/rusher") },
    results: { type: "string", default: path.join(repo, "results") },
  },
});

// Stop the servers (killed on exit by lib/servers.mjs) when interrupted.
for (const signal of ["SIGINT", "SIGTERM"]) process.once(signal, () => process.exit(130));

const configFile = process.env.FIREBASE_CONFIG;
const firebaseConfig = configFile ? readFirebaseConfig(configFile) : null;
if (!firebaseConfig) {
  console.error("FIREBASE_CONFIG not set: the real-Firebase layer is skipped; the firebase SDK runs against firebase-server on loopback");
}
const t0 = performance.now();
const summary = await runComparison({
  rusherBin: path.resolve(values["rusher-bin"]),
  firebaseConfig,
  scale: values.scale,
  log: (line) => console.error(`[${((performance.now() - t0) / 1000).toFixed(1)} s] ${line}`),
});
const dir = resultsFolder(path.resolve(values.results), firebaseConfig ? "firebase-real" : "firebase", existsSync);
const commandLine = [
  ...(configFile ? [`FIREBASE_CONFIG=${configFile}`] : []),
  "node bench/firebase/run.mjs",
  ...process.argv.slice(2),
].join(" ");
writeResults(dir, summary, commandLine);
console.log(resultsMarkdown(path.basename(dir), summary));
console.error(`wrote ${path.relative(process.cwd(), dir) || dir}`);
