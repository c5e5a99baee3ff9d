// Writes a comparison to `results/<date>-firebase/`: summary.json (everything measured), SETUP.md (the
// machine, versions, commands and exactly what is compared) and RESULTS.md (the figures side by side,
// with ratios), in the folder layout the report (`scripts/report`) reads.

import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { geohashQueryBounds } from "geofire-common";
import { fileURLToPath } from "node:url";
import { BUNDLE_OPTIONS } from "./bundle.mjs";
import { GEO_CENTER } from "./workloads.mjs";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/**
 * `<root>/<date>-<kind>` (UTC date; kind `firebase`, or `firebase-real` against a real project), with
 * `-2`, `-3`, ... when that folder exists.
 */
export function resultsFolder(root, kind, exists, date = new Date()) {
  const base = `${date.toISOString().slice(0, 10)}-${kind}`;
  for (let i = 1; i < 100; i++) {
    const name = i === 1 ? base : `${base}-${i}`;
    if (!exists(path.join(root, name))) return path.join(root, name);
  }
  throw new Error(`${root}: 99 result folders named ${base} already`);
}

/** `firebase ÷ rusher` for two numbers, e.g. `12.3×`; `n/a` when either is missing or zero. */
export function ratio(a, b) {
  if (!Number.isFinite(a) || !Number.isFinite(b) || a <= 0 || b <= 0) return "n/a";
  const r = a / b;
  return `${r >= 10 ? r.toFixed(0) : r >= 1 ? r.toFixed(1) : r.toFixed(2)}×`;
}

function ms(v) {
  return v === undefined || v === null ? "–" : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function bytes(v) {
  return v === undefined || v === null ? "–" : v.toLocaleString("en-US");
}

function machine() {
  const cpus = os.cpus();
  const facts = [
    ["Date (UTC)", new Date().toISOString().replace("T", " ").slice(0, 19) + " UTC"],
    ["Host", os.hostname()],
    ["CPU", `${cpus[0]?.model ?? "unknown"} × ${cpus.length}`],
    ["Memory", `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`],
    ["Kernel", os.release()],
  ];
  try {
    const commit = execFileSync("git", ["rev-parse", "HEAD"], { cwd: REPO, encoding: "utf8" }).trim();
    // Untracked files (this run's own folder among them) do not change what was measured.
    const status = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], { cwd: REPO, encoding: "utf8" });
    const dirty = status.trim() !== "";
    facts.push(["Commit", `${commit}${dirty ? " (dirty)" : ""}`]);
  } catch {
    facts.push(["Commit", "unknown (not a git checkout)"]);
  }
  facts.push(["Node", process.version]);
  return facts;
}

function table(header, rows) {
  const esc = (c) => String(c).replaceAll("|", "\\|");
  return [`| ${header.map(esc).join(" | ")} |`, `|${header.map(() => "---").join("|")}|`, ...rows.map((r) => `| ${r.map(esc).join(" | ")} |`)].join("\n");
}

/** SETUP.md: what ran, where, with which versions, and what the figures do and do not measure. */
export function setupMarkdown(name, summary, commandLine) {
  const shortCommand = (argv) =>
    argv.map((a, i) => (i === 0 && a === process.execPath ? "node" : a.replaceAll(REPO + path.sep, ""))).join(" ");
  const s = summary.scenario;
  const c = summary.firebase;
  const real = c.real_firebase;
  const lines = [
    `# Setup: ${name}`,
    "",
    table(["", ""], machine()),
    "",
    "## What is compared",
    "",
    `- ${c.what}: the official \`firebase\` JS SDK (Realtime Database API, \`geofire-common\` for geo queries) against ${
      real.ran ? `the Firebase project at ${real.database_url}` : "`firebase-server`, a Node reimplementation of the Realtime Database wire protocol"
    }, versus \`@rusher/client\` against \`rusher\`, on the same workloads from one harness (\`bench/firebase/lib/workloads.mjs\`) through two adapters.`,
    real.ran
      ? "- The firebase side ran against a real project over the network; the Rusher side on loopback: the firebase figures include the network round trips."
      : "- Not Google's servers: Firebase could not be reached from this machine. `firebase-server` stands in for them, so the firebase figures are the SDK, the wire protocol and firebase-server's own work; Google's servers run different software in data centres, with a network between.",
    "- Every client runs in one Node process (the harness), each with its own connection; the servers are separate processes on 127.0.0.1. Latencies are `performance.now()` differences in the harness: from the call that writes until the callback that sees the result.",
    "",
    "## Sides",
    "",
    table(["side", "what", "an acknowledgement means"], c.sides.map((d) => [d.id, d.label, d.durability])),
    "",
    "## Versions",
    "",
    table(["package", "version"], Object.entries(c.versions)),
    "",
    "## Server processes",
    "",
    ...(c.servers.length ? c.servers.map((p) => `- ${p.pid}: \`${shortCommand(p.command)}\``) : ["(none)"]),
    "",
    "## Command lines",
    "",
    "```text",
    commandLine,
    "```",
    "",
    "## Workloads",
    "",
    `- (a) connect: ${s.connect.count} clients one after another (${s.connect.warmup} more first, not counted): new client until its connection is up (firebase: \`.info/connected\` true; Rusher: socket open), and until its first read of a topic holding ${s.connect.seed} messages is answered (firebase: a value read of the list; Rusher: the room's join reply).`,
    `- (b) write → acknowledgement: one client writes ${s.write.count} messages one at a time (${s.write.warmup} more first, not counted). firebase: \`push()\` resolving on the server's acknowledgement; Rusher: \`room.send()\` resolving once the message is stored.`,
    `- (c) fan-out: ${s.fanout.map((f) => `${f.listeners} listeners × ${f.rounds} rounds`).join(", ")} (${s.fanout[0].warmup} more rounds first, not counted); one more client writes a message per round, and each listener's callback is timed from the write call. firebase: \`set()\` of the topic's latest message, listeners \`onValue\`; Rusher: \`room.send()\`, listeners \`onMessage\` (rooms joined without presence). Each round waits for every copy or 10 s.`,
    `- (d) geo query: ${s.geo
      .map((g) => `${g.listeners} listeners watch a ${g.radius} m circle in Paris with ${g.background} other objects 1.5 to 8 radii away, ${g.rounds} rounds (${g.warmup} more first, not counted)`)
      .join("; ")}. Per round one object moves from 5 radii out to a random point inside, then back out. firebase: records \`{g: geohash, lat, lng}\` written with \`set()\`, listeners run geofire-common's \`geohashQueryBounds\` range queries (\`orderByChild('g').startAt().endAt()\`) with \`onChildAdded/Changed/Removed\` and the exact distance check; Rusher: \`location\` pushes and a live \`query\` (key_entered / key_exited).`,
    `- (e) bundle: each side's adapter (\`bench/firebase/lib/adapters/firebase.mjs\`, \`rusher.mjs\`) is the minimal app doing (a)–(d); esbuild ${c.versions.esbuild} bundles it with ${JSON.stringify(
      Object.fromEntries(Object.entries(BUNDLE_OPTIONS).filter(([k]) => !["write", "metafile", "logLevel"].includes(k))),
    )}, then gzip level 9.`,
    `- (f) memory: in a child process per side started with \`--expose-gc\`, one client is opened (loading the SDK), garbage collected, then ${s.memory.clients} more clients each connected and listening to one topic; heap used, external memory and RSS after garbage collection, differences divided by ${s.memory.clients}.`,
    "",
    "## Notes",
    "",
    "- Durability differs: firebase-server keeps data in memory only; rusher acknowledges a chat message once SQLite committed it, with `synchronous=normal` (no fsync per commit) and `synchronous=full` (fsync per group commit) both measured for writes and fan-out. Connect, geo and memory ran against the `normal` server: they write nothing a client waits for (live geo queries are not stored; positions are written behind).",
    `- firebase-server does not evaluate queries: for every listen it sends the whole value at the listened path, on every change, and the SDK filters it on the client. In the geo workload each listener's range queries (geofire-common splits the circle into ${
      geohashQueryBounds([GEO_CENTER.lat, GEO_CENTER.lon], s.geo[0].radius).length
    } geohash ranges) each receive every object's record on every move, which is why the geo workload also runs with no other objects; Firebase's own servers filter with an index (\`.indexOn: ["g"]\`) and send only the matching children.`,
    "- firebase-server acknowledges a write after applying it to an in-memory firebase@8 database and to targaryen's rules simulator; those costs are in its figures.",
    `- The bundle of \`@rusher/client\` includes y-websocket and yjs (its \`collab()\` helper), which this app does not use: without them (esbuild \`external\`) it is ${bytes(
      c.details.bundle?.rusher?.without_collab?.gzip_bytes,
    )} bytes gzipped. \`summary.json\` lists the bytes of each package in both bundles.`,
    "- rusher runs one worker thread per core (2 here); firebase-server is one Node process, one JavaScript thread. Both share the machine's cores with the harness.",
    real.ran ? `- The firebase side used the project at ${real.database_url} (FIREBASE_CONFIG).` : `- Real Firebase layer: skipped (${real.reason}). See bench/firebase/README.md for running it against a project.`,
    "",
  ];
  return lines.join("\n");
}

/** RESULTS.md: every figure side by side, with firebase ÷ rusher ratios. */
export function resultsMarkdown(name, summary) {
  const c = summary.firebase;
  const latency = c.figures.filter((f) => f.kind === "latency");
  const sizes = c.figures.filter((f) => f.kind === "size");
  const rows = latency.map((f) => {
    const fb = f.values.firebase;
    const ru = f.values.rusher;
    const full = f.values["rusher-full"];
    const missing = f.missing ? Object.values(f.missing).reduce((a, b) => a + b, 0) : 0;
    return [
      f.title,
      `${ms(fb?.p50)} / ${ms(fb?.p99)}`,
      `${ms(ru?.p50)} / ${ms(ru?.p99)}`,
      `${ratio(fb?.p50, ru?.p50)} / ${ratio(fb?.p99, ru?.p99)}`,
      full ? `${ms(full.p50)} / ${ms(full.p99)}` : "–",
      `${fb?.count ?? 0} / ${ru?.count ?? 0}${missing ? `, ${missing} missing` : ""}`,
    ];
  });
  const sizeRows = sizes.map((f) => [
    f.title,
    bytes(f.values.firebase?.value),
    bytes(f.values.rusher?.value),
    ratio(f.values.firebase?.value, f.values.rusher?.value),
  ]);
  return [
    `# Results: ${name}`,
    "",
    `${c.what}. firebase: ${c.sides[0].label}; rusher: ${c.sides[1].label}; rusher full: ${c.sides[2].label}. See SETUP.md for what each figure measures.`,
    "",
    "## Latency (ms, p50 / p99)",
    "",
    table(["figure", "firebase", "rusher", "firebase ÷ rusher", "rusher full", "samples (firebase / rusher)"], rows),
    "",
    "## Size (bytes)",
    "",
    table(["figure", "firebase", "rusher", "firebase ÷ rusher"], sizeRows),
    "",
  ].join("\n");
}

/** Write the three files into `dir` (created). */
export function writeResults(dir, summary, commandLine) {
  mkdirSync(dir, { recursive: true });
  const name = path.basename(dir);
  writeFileSync(path.join(dir, "summary.json"), `${JSON.stringify(summary, null, 2)}\n`);
  writeFileSync(path.join(dir, "SETUP.md"), setupMarkdown(name, summary, commandLine));
  writeFileSync(path.join(dir, "RESULTS.md"), resultsMarkdown(name, summary));
}
