import { spawn, execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { createServer } from "node:net";
import { test, before, after } from "node:test";
import { Socket, Presence } from "phoenix";
import WebSocket from "ws";

const here = path.dirname(fileURLToPath(import.meta.url));
export const RUSHER_BIN = process.env.RUSHER_BIN
  ? path.resolve(process.env.RUSHER_BIN)
  : path.resolve(here, "../../target/debug/rusher");

export const SECRET = "rusher-test-secret-0123456789abcdef";

function tempDir() {
  return mkdtempSync(path.join(tmpdir(), "rusher-js-"));
}

/**
 * Mint a token with `rusher token`. `geoMove` (patterns for `--geo-move`) and `geoAdmin`
 * (`--geo-admin`) make it a grant token for the `geo:` channel; `operator` (`--operator`) one for
 * crediting wallets and running bet markets.
 */
export function mintToken(user, { secret = SECRET, geoMove = [], geoAdmin = false, operator = false } = {}) {
  const args = ["token", "--user", user, "--secret", secret];
  for (const pattern of geoMove) args.push("--geo-move", pattern);
  if (geoAdmin) args.push("--geo-admin");
  if (operator) args.push("--operator");
  return execFileSync(RUSHER_BIN, args, { encoding: "utf8" }).trim();
}

/** A token in the documented format, `claims` signed with `secret` (expired, or with grants, as wanted). */
export function signToken(claims, secret = SECRET) {
  const body = Buffer.from(JSON.stringify(claims)).toString("base64url");
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** Reject with a labelled error if `promise` does not settle within `ms`. */
export function within(ms, promise, label = "operation") {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${label}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Poll `cond` (sync or async) every `intervalMs` until it returns a truthy value, and resolve
 * with it; reject after `ms`. Errors thrown by `cond` count as "not yet" and are reported on
 * timeout. `label` may be a function, called on timeout, to describe the state reached.
 */
export async function until(cond, ms = 5000, label = "condition", intervalMs = 20) {
  const deadline = Date.now() + ms;
  let lastError = null;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
      lastError = null;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const what = typeof label === "function" ? label() : label;
      throw new Error(`timed out after ${ms} ms waiting for ${what}${lastError ? ` (last error: ${lastError.message})` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/**
 * A Rusher process. `start()` resolves once the first stdout line announces the port.
 * Logs from stderr are kept for failure reports. `store` is a store URL (default: a SQLite file
 * in `dir`).
 */
export class Rusher {
  constructor({ dir = tempDir(), secret, heartbeatTimeout, port = 0, store, args = [] } = {}) {
    this.dir = dir;
    this.store = store ?? `sqlite://${path.join(dir, "rusher.db")}`;
    this.secret = secret;
    this.heartbeatTimeout = heartbeatTimeout;
    this.port = port;
    this.args = args;
    this.logs = [];
    this.proc = null;
    this.exited = null;
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  get socketUrl() {
    return `ws://127.0.0.1:${this.port}/socket`;
  }

  get websocketUrl() {
    return `ws://127.0.0.1:${this.port}/socket/websocket`;
  }

  /** Base URL of the y-websocket endpoint: documents are at `${collabUrl}/<doc>`. */
  get collabUrl() {
    return `ws://127.0.0.1:${this.port}/collab`;
  }

  async start() {
    const args = [
      "--listen", `127.0.0.1:${this.port}`,
      "--store", this.store,
      "--workers", "2",
      ...this.args,
    ];
    if (this.secret) args.push("--secret", this.secret);
    if (this.heartbeatTimeout !== undefined) args.push("--heartbeat-timeout", String(this.heartbeatTimeout));
    const proc = spawn(RUSHER_BIN, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, NO_COLOR: "1", RUSHER_LOG: process.env.RUSHER_LOG || "info" },
    });
    this.proc = proc;
    const killOnExit = () => proc.kill("SIGKILL");
    process.on("exit", killOnExit);
    this.logs.push(`--- start pid ${proc.pid}: ${RUSHER_BIN} ${args.join(" ")}`);
    createInterface({ input: proc.stderr }).on("line", (line) => this.logs.push(line));
    this.exited = new Promise((resolve) => {
      proc.on("exit", (code, signal) => {
        process.off("exit", killOnExit);
        this.logs.push(`--- exit pid ${proc.pid}: code=${code} signal=${signal}`);
        resolve({ code, signal });
      });
    });
    const lines = createInterface({ input: proc.stdout });
    const first = new Promise((resolve, reject) => {
      lines.once("line", resolve);
      proc.once("error", reject);
      this.exited.then(({ code, signal }) =>
        reject(new Error(`rusher exited before listening (code=${code} signal=${signal})\n${this.logText()}`)));
    });
    const line = await within(20000, first, "rusher to start");
    const m = /^rusher listening on http:\/\/127\.0\.0\.1:(\d+)$/.exec(line);
    if (!m) throw new Error(`unexpected first stdout line: ${JSON.stringify(line)}`);
    this.port = Number(m[1]);
    lines.on("line", (l) => this.logs.push(`[stdout] ${l}`));
    return this;
  }

  /** Send `signal` and resolve with the exit status. */
  async stop(signal = "SIGTERM") {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return this.exited;
    const proc = this.proc;
    proc.kill(signal);
    try {
      return await within(15000, this.exited, `rusher to exit on ${signal}`);
    } catch (err) {
      proc.kill("SIGKILL");
      throw err;
    } finally {
      this.proc = null;
    }
  }

  logText() {
    return this.logs.join("\n");
  }
}

/** Open a phoenix Socket on `server`; it is disconnected when test `t` ends. */
export function openSocket(t, server, opts = {}) {
  const socket = new Socket(server.socketUrl, {
    transport: WebSocket,
    timeout: 3000,
    reconnectAfterMs: () => 100,
    rejoinAfterMs: () => 200,
    ...opts,
  });
  t.after(() => socket.disconnect());
  socket.connect();
  return socket;
}

/** Resolve when `socket` reports an open connection. */
export function socketOpened(socket) {
  if (socket.isConnected()) return Promise.resolve();
  return new Promise((resolve) => {
    const ref = socket.onOpen(() => {
      socket.off([ref]);
      resolve();
    });
  });
}

/** Settle a Push as `{status, response}` for ok, error and timeout. */
export function reply(push) {
  return new Promise((resolve) => {
    push
      .receive("ok", (response) => resolve({ status: "ok", response }))
      .receive("error", (response) => resolve({ status: "error", response }))
      .receive("timeout", () => resolve({ status: "timeout", response: null }));
  });
}

/** Join and resolve with the ok response; reject on an error reply or timeout. */
export async function join(channel) {
  const r = await reply(channel.join());
  if (r.status !== "ok") {
    channel.leave();
    throw new Error(`join ${channel.topic} failed: ${r.status} ${JSON.stringify(r.response)}`);
  }
  return r.response;
}

/** Push and resolve with the ok response; reject on anything else. */
export async function pushOk(channel, event, payload) {
  const r = await reply(channel.push(event, payload));
  if (r.status !== "ok") {
    throw new Error(`${event} ${JSON.stringify(payload)} on ${channel.topic}: ${r.status} ${JSON.stringify(r.response)}`);
  }
  return r.response;
}

/**
 * Record every `event` a channel receives. `waitFor(pred)` resolves with the first
 * recorded payload (past or future) matching `pred`; `waitCount(n)` with the first n.
 */
export function record(channel, event) {
  const items = [];
  let waiters = [];
  channel.on(event, (payload) => {
    items.push(payload);
    waiters = waiters.filter((w) => !w());
  });
  const wait = (check) =>
    new Promise((resolve) => {
      const w = () => {
        const v = check();
        if (v === undefined) return false;
        resolve(v);
        return true;
      };
      if (!w()) waiters.push(w);
    });
  return {
    items,
    waitFor: (pred = () => true) => wait(() => items.find(pred)),
    waitCount: (n) => wait(() => (items.length >= n ? items.slice(0, n) : undefined)),
  };
}

/** Track presence on a channel; `until(pred)` resolves with the list once pred(list) holds. */
export function trackPresence(channel) {
  const presence = new Presence(channel);
  const joins = [];
  const leaves = [];
  let waiters = [];
  const list = () => presence.list((key, { metas }) => ({ key, metas }));
  presence.onJoin((key, current, newPres) => joins.push({ key, current, newPres }));
  presence.onLeave((key, current, leftPres) => leaves.push({ key, current, leftPres }));
  presence.onSync(() => {
    const l = list();
    waiters = waiters.filter(([pred, resolve]) => (pred(l) ? (resolve(l), false) : true));
  });
  return {
    presence,
    joins,
    leaves,
    list,
    until: (pred) =>
      new Promise((resolve) => {
        if (presence.joinRef && pred(list())) return resolve(list());
        waiters.push([pred, resolve]);
      }),
  };
}

export function keysOf(list) {
  return list.map((p) => p.key).sort();
}

/**
 * A raw `ws` client speaking V2 JSON arrays. `next(pred)` resolves with the first
 * received message (parsed) matching `pred`, consuming it.
 */
export class RawClient {
  constructor(url, opts = {}) {
    this.ws = new WebSocket(url, opts.protocols, opts.wsOptions);
    this.queue = [];
    this.received = [];
    this.waiters = [];
    this.closed = new Promise((resolve) => this.ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
    this.opened = new Promise((resolve, reject) => {
      this.ws.on("open", resolve);
      this.ws.on("error", reject);
      this.ws.on("unexpected-response", (req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { statusCode: res.statusCode })));
    });
    this.opened.catch(() => {});
    this.ws.on("message", (data, isBinary) => {
      const msg = isBinary ? data : JSON.parse(data.toString());
      this.received.push(msg);
      this.queue.push(msg);
      this.drain();
    });
  }

  static async open(t, url, opts) {
    const c = new RawClient(url, opts);
    t.after(() => c.ws.terminate());
    await c.opened;
    return c;
  }

  drain() {
    this.waiters = this.waiters.filter(([pred, resolve]) => {
      const i = this.queue.findIndex(pred);
      if (i < 0) return true;
      resolve(this.queue.splice(i, 1)[0]);
      return false;
    });
  }

  send(msg) {
    this.ws.send(JSON.stringify(msg));
  }

  /** Resolve with the first unconsumed message matching `pred`; reject after `ms`, listing what came. */
  next(pred = () => true, ms = 5000) {
    const found = new Promise((resolve) => {
      this.waiters.push([pred, resolve]);
      this.drain();
    });
    return within(ms, found, `a message matching ${pred}`).catch((err) => {
      this.waiters = this.waiters.filter(([p]) => p !== pred);
      const seen = this.received.map((m) => (Buffer.isBuffer(m) ? `<binary ${m.toString("hex")}>` : JSON.stringify(m)));
      err.message += `; received so far:\n  ${seen.join("\n  ")}`;
      throw err;
    });
  }

  /** Resolve with the reply to `ref`. */
  replyTo(ref) {
    return this.next((m) => Array.isArray(m) && m[1] === ref && m[3] === "phx_reply");
  }
}

/** Resolve with the HTTP status the server gives a WebSocket upgrade that it refuses. */
export async function upgradeStatus(url, opts = {}) {
  return (await upgradeRefusal(url, opts)).status;
}

/** Resolve with `{status, body}` of the response the server gives a WebSocket upgrade that it refuses. */
export function upgradeRefusal(url, opts = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, opts.protocols);
    ws.on("unexpected-response", (req, res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    ws.on("open", () => {
      ws.terminate();
      reject(new Error(`upgrade to ${url} was accepted`));
    });
    ws.on("error", (err) => reject(err));
  });
}

/**
 * Register before/after hooks that start one server for the calling test file,
 * and return it. `serverTest` runs a test with a watchdog and prints the server
 * logs when it fails.
 */
export function useServer(opts = {}) {
  const server = new Rusher(opts);
  before(() => server.start());
  after(async () => {
    await server.stop();
    rmSync(server.dir, { recursive: true, force: true });
  });
  return server;
}

export function serverTest(name, server, fn, { timeout = 15000 } = {}) {
  test(name, { timeout: timeout + 5000 }, async (t) => {
    const mark = server.logs.length;
    try {
      await within(timeout, fn(t), `test "${name}"`);
    } catch (err) {
      console.error(`----- rusher logs (${server.dir}) during "${name}" -----\n${server.logs.slice(mark).join("\n")}`);
      throw err;
    }
  });
}

export function bytes(...values) {
  return new Uint8Array(values).buffer;
}

export function asArray(buf) {
  return Array.from(new Uint8Array(buf));
}

/** A TCP port on 127.0.0.1 that nothing listens on (it was free a moment ago). */
export function unusedPort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A `ws` transport for the phoenix Socket with a switch: while `offline` is true,
 * new connections go to a port where nothing listens, as if the network were down.
 */
export async function switchableTransport() {
  const deadPort = await unusedPort();
  const sw = { offline: false, transport: null };
  sw.transport = class SwitchableWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(sw.offline ? url.replace(/^ws:\/\/127\.0\.0\.1:\d+\//, `ws://127.0.0.1:${deadPort}/`) : url, protocols);
    }
  };
  return sw;
}
