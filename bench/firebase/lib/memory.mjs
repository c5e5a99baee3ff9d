// (f) Client memory: heap used per connected client, in a child process of its own per side so neither
// SDK's modules or garbage count against the other.
//
// As a program (`node --expose-gc lib/memory.mjs TARGET_JSON CLIENTS`): open one client (which loads and
// warms up the SDK), collect garbage, take `process.memoryUsage()`, open CLIENTS more clients each
// listening to one topic, collect garbage again, and print the differences divided by CLIENTS as JSON.

import { execFile } from "node:child_process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { pool, within } from "./async.mjs";
import { makeAdapter } from "./adapters/index.mjs";

const here = fileURLToPath(import.meta.url);
const CHILD_TIMEOUT_MS = 120000;

/** Measure `clients` clients of `target` (see adapters/index.mjs) in a child process. */
export function measureMemory(target, clients) {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ["--expose-gc", here, JSON.stringify(target), String(clients)],
      { timeout: CHILD_TIMEOUT_MS, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`memory measurement failed: ${err.message}\n${stderr}`));
        try {
          resolve(JSON.parse(stdout.trim().split("\n").pop()));
        } catch (e) {
          reject(new Error(`memory measurement printed no JSON (${e.message}):\n${stdout}\n${stderr}`));
        }
      },
    );
  });
}

/** Collect garbage until the heap stops shrinking (at most 10 passes). */
async function settle() {
  let last = Infinity;
  for (let i = 0; i < 10; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    globalThis.gc();
    const used = process.memoryUsage().heapUsed;
    if (used >= last) break;
    last = used;
  }
  return process.memoryUsage();
}

async function child(target, clients) {
  if (typeof globalThis.gc !== "function") throw new Error("run with --expose-gc");
  const adapter = makeAdapter(target);
  const open = async () => {
    const c = adapter.open();
    await within(10000, c.connected(), "a client to connect");
    await within(10000, c.listen("memory", () => {}), "a client to listen");
    return c;
  };
  const warm = await open();
  const before = await settle();
  const opened = await pool(Array.from({ length: clients }), 50, open);
  const after = await settle();
  const per = (key) => Math.round((after[key] - before[key]) / clients);
  const result = {
    clients,
    heap_used_bytes: per("heapUsed"),
    external_bytes: per("external"),
    rss_bytes: per("rss"),
  };
  await pool([warm, ...opened], 50, (c) => within(10000, c.close(), "a client to close"));
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  child(JSON.parse(process.argv[2]), Number(process.argv[3])).then(
    () => process.exit(0),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
