// The servers a comparison runs against, each a child process on a free loopback port, stopped by its
// PID (and killed if this process exits first).

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { within } from "./async.mjs";

const LOG_LINES = 200;

/**
 * Start `command args` and resolve, once its first stdout line says `listening on
 * http://127.0.0.1:PORT`, with `{name, pid, port, command, stop()}`.
 */
export async function startServer(name, command, args, { env = {} } = {}) {
  const proc = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  const logs = [];
  const keep = (line) => {
    logs.push(line);
    if (logs.length > LOG_LINES) logs.shift();
  };
  createInterface({ input: proc.stderr }).on("line", keep);
  const killOnExit = () => proc.kill("SIGKILL");
  process.on("exit", killOnExit);
  const exited = new Promise((resolve) =>
    proc.on("exit", (code, signal) => {
      process.off("exit", killOnExit);
      resolve({ code, signal });
    }),
  );
  const lines = createInterface({ input: proc.stdout });
  const first = new Promise((resolve, reject) => {
    lines.once("line", resolve);
    proc.once("error", reject);
    exited.then(({ code, signal }) =>
      reject(new Error(`${name} exited before listening (code=${code} signal=${signal})\n${logs.join("\n")}`)),
    );
  });
  let line;
  try {
    line = await within(20000, first, `${name} to start`);
  } catch (err) {
    proc.kill("SIGKILL");
    throw err;
  }
  lines.on("line", keep);
  const m = /listening on http:\/\/127\.0\.0\.1:(\d+)$/.exec(line);
  if (!m) {
    proc.kill("SIGKILL");
    throw new Error(`${name}: unexpected first line ${JSON.stringify(line)}`);
  }
  return {
    name,
    pid: proc.pid,
    port: Number(m[1]),
    command: [command, ...args],
    logs: () => logs.join("\n"),
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill("SIGTERM");
      try {
        return await within(15000, exited, `${name} to stop`);
      } catch (err) {
        proc.kill("SIGKILL");
        throw err;
      }
    },
  };
}
