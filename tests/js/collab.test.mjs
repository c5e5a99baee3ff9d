import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { test } from "node:test";
import { isDeepStrictEqual, inspect } from "node:util";
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import WebSocket from "ws";
import { Rusher, useServer, within, until, upgradeStatus, mintToken, SECRET } from "./server.mjs";

const server = useServer();
// Each WebsocketProvider (and each Rusher) listens for the process's "exit"; 20 clients are expected.
process.setMaxListeners(64);

/**
 * Like serverTest, with a watchdog, for tests that may also start servers of their own with
 * `ctx.start(opts)` (killed and removed when the test ends). On failure the logs of every server
 * the test used are printed.
 */
function collabTest(name, fn, { timeout = 20000 } = {}) {
  test(name, { timeout: timeout + 5000 }, async (t) => {
    const marks = new Map([[server, server.logs.length]]);
    const ctx = {
      async start(opts) {
        const s = new Rusher(opts);
        marks.set(s, 0);
        t.after(async () => {
          await s.stop("SIGKILL");
          rmSync(s.dir, { recursive: true, force: true });
        });
        return s.start();
      },
    };
    try {
      await within(timeout, fn(t, ctx), `test "${name}"`);
    } catch (err) {
      for (const [s, mark] of marks) {
        console.error(`----- rusher logs (${s.dir}) during "${name}" -----\n${s.logs.slice(mark).join("\n")}`);
      }
      throw err;
    }
  });
}

/**
 * A y-websocket client: its own Y.Doc and WebsocketProvider on `srv`'s `/collab/<doc>`, destroyed
 * when test `t` ends. BroadcastChannel is disabled: Node has one, and it would sync the clients of
 * this process with each other without the server.
 */
function client(t, srv, doc, { user = "user", params, connect = true, type = "quill" } = {}) {
  const ydoc = new Y.Doc();
  const provider = new WebsocketProvider(srv.collabUrl, doc, ydoc, {
    WebSocketPolyfill: WebSocket,
    params: params ?? { user },
    disableBc: true,
    maxBackoffTime: 300,
    connect,
  });
  const closes = [];
  provider.on("connection-close", (e) => {
    if (e) closes.push({ code: e.code, reason: e.reason });
  });
  let destroyed = false;
  const c = {
    ydoc,
    provider,
    closes,
    text: ydoc.getText(type),
    awareness: provider.awareness,
    /** Resolve once the provider has received sync step 2 from the server. */
    synced: () =>
      provider.synced
        ? Promise.resolve()
        : new Promise((resolve) => {
            const h = (state) => {
              if (state) {
                provider.off("sync", h);
                resolve();
              }
            };
            provider.on("sync", h);
          }),
    destroy() {
      if (destroyed) return;
      destroyed = true;
      provider.destroy();
      ydoc.destroy();
    },
  };
  t.after(() => c.destroy());
  return c;
}

async function serverText(srv, doc, { type, token } = {}) {
  const q = new URLSearchParams();
  if (type) q.set("type", type);
  if (token) q.set("token", token);
  const res = await fetch(`${srv.httpUrl}/collab/${encodeURIComponent(doc)}/text${q.size ? `?${q}` : ""}`);
  const body = await res.text();
  assert.equal(res.status, 200, `GET /collab/${doc}/text: ${res.status} ${body}`);
  return body;
}

/** Wait until every client has the same delta, and the server's /text is their text. */
async function converged(srv, doc, clients, { ms = 10000, token } = {}) {
  let seen = null;
  await until(
    async () => {
      const first = clients[0].text.toDelta();
      if (!clients.every((c) => isDeepStrictEqual(c.text.toDelta(), first))) return false;
      seen = await serverText(srv, doc, { token });
      return seen === clients[0].text.toString();
    },
    ms,
    () =>
      `convergence on ${doc}:\n${clients.map((c, i) => `  client ${i}: ${inspect(c.text.toDelta(), { depth: 4, breakLength: Infinity })}`).join("\n")}` +
      `\n  server /text: ${JSON.stringify(seen)}`,
  );
  return clients[0].text.toString();
}

/** A raw `ws` connection to /collab/<doc>, terminated when `t` ends. */
function rawCollab(t, srv, doc) {
  const ws = new WebSocket(`${srv.collabUrl}/${doc}`);
  const received = [];
  ws.on("message", (data, isBinary) => received.push({ data, isBinary }));
  const closed = new Promise((resolve) => ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
  const opened = new Promise((resolve, reject) => {
    ws.on("open", resolve);
    ws.on("error", reject);
  });
  opened.catch(() => {});
  t.after(() => ws.terminate());
  return { ws, opened, closed, received };
}

/** A small seeded PRNG (mulberry32), so that a failing random run can be replayed. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

collabTest("two clients converge on formatted text with emoji", async (t) => {
  const doc = "converge";
  const a = client(t, server, doc, { user: "alice" });
  const b = client(t, server, doc, { user: "bob" });
  await Promise.all([a.synced(), b.synced()]);

  a.text.insert(0, "Hello brave new world");
  await until(() => b.text.toString() === "Hello brave new world", 5000, "B to receive A's text");

  // Concurrent edits: neither client hears the other before both are done.
  a.text.format(6, 5, { bold: true }); // "brave"
  a.text.delete(12, 4); // "new "
  a.text.insert(a.text.length, "!!", { italic: true });
  b.text.insert(0, "😀👍🏽 ");
  b.text.delete(7, 6); // "Hello "
  b.text.delete(b.text.toString().indexOf("ew "), 3); // overlaps A's delete
  b.text.format(b.text.toString().indexOf("world"), 5, { underline: true });

  const text = await converged(server, doc, [a, b]);
  assert.equal(text, "😀👍🏽 brave world!!");
  const delta = a.text.toDelta();
  assert.ok(delta.some((op) => op.insert === "brave" && op.attributes?.bold === true), `"brave" is bold: ${inspect(delta)}`);
  assert.ok(delta.some((op) => op.insert.includes("world") && op.attributes?.underline === true), `"world" is underlined: ${inspect(delta)}`);
  assert.equal(await serverText(server, doc, { type: "quill" }), text, "?type=quill is the default type");
  assert.equal(await serverText(server, doc, { type: "other" }), "", "another type of the document is empty");
});

collabTest("a late joiner receives the full document", async (t) => {
  const doc = "late-joiner";
  const a = client(t, server, doc, { user: "alice" });
  await a.synced();
  const rand = prng(2);
  for (let i = 0; i < 100; i++) {
    const chunk = String.fromCharCode(97 + (i % 26)).repeat(5) + `${i % 10}`.repeat(5);
    a.text.insert(Math.floor(rand() * (a.text.length + 1)), chunk);
  }
  assert.equal(a.text.length, 1000);
  await until(async () => (await serverText(server, doc)) === a.text.toString(), 10000, "the server to have A's 1000 characters");

  const c = client(t, server, doc, { user: "carol", connect: false });
  const atSync = new Promise((resolve) =>
    c.provider.on("sync", (state) => state && resolve(c.text.toString())));
  c.provider.connect();
  assert.equal(await atSync, a.text.toString(), "C has the whole document when it is synced");
});

collabTest("an offline edit converges after reconnect", async (t) => {
  const doc = "offline";
  const a = client(t, server, doc, { user: "alice" });
  const b = client(t, server, doc, { user: "bob" });
  await Promise.all([a.synced(), b.synced()]);
  a.text.insert(0, "shared base text");
  await converged(server, doc, [a, b]);

  b.provider.disconnect();
  assert.equal(b.provider.wsconnected, false);
  a.text.insert(0, "online A: ");
  a.text.delete(a.text.toString().indexOf("base "), 5);
  b.text.insert(b.text.length, " + offline B");
  b.text.format(0, 6, { bold: true });
  await until(async () => (await serverText(server, doc)) === a.text.toString(), 5000, "the server to have A's edit");
  assert.equal(b.text.toString(), "shared base text + offline B", "B did not hear A while offline");

  b.provider.connect();
  await b.synced();
  const text = await converged(server, doc, [a, b]);
  assert.equal(text, "online A: shared text + offline B");
  // B's bold starts at the position where A concurrently inserted: it may or may not cover A's text.
  const delta = a.text.toDelta();
  assert.ok(delta.some((op) => op.insert.endsWith("shared") && op.attributes?.bold === true), `B's offline formatting reached A: ${inspect(delta)}`);
});

collabTest("awareness reaches other clients and is dropped when a client leaves", async (t) => {
  const doc = "awareness";
  const a = client(t, server, doc, { user: "alice" });
  const b = client(t, server, doc, { user: "bob" });
  await Promise.all([a.synced(), b.synced()]);
  const aId = a.ydoc.clientID;

  a.awareness.setLocalStateField("cursor", { index: 3 });
  await until(() => b.awareness.getStates().get(aId)?.cursor?.index === 3, 5000,
    () => `B to see A's cursor; B's states: ${inspect([...b.awareness.getStates()])}`);

  const c = client(t, server, doc, { user: "carol" });
  await c.synced();
  await until(() => c.awareness.getStates().get(aId)?.cursor?.index === 3, 5000,
    () => `a late joiner to see A's cursor; C's states: ${inspect([...c.awareness.getStates()])}`);

  a.destroy();
  await until(() => !b.awareness.getStates().has(aId) && !c.awareness.getStates().has(aId), 5000,
    () => `B and C to drop A (${aId}); B: ${inspect([...b.awareness.getStates().keys()])}, C: ${inspect([...c.awareness.getStates().keys()])}`);
});

collabTest("20 clients editing at random converge", async (t) => {
  const doc = "twenty";
  const clients = Array.from({ length: 20 }, (_, i) => client(t, server, doc, { user: `u${i}` }));
  await Promise.all(clients.map((c) => c.synced()));
  const alphabet = "abcdefghijklmnopqrstuvwxyz ";
  const stopAt = Date.now() + 2000;
  let ops = 0;
  await Promise.all(clients.map(async (c, i) => {
    const rand = prng(1000 + i);
    while (Date.now() < stopAt) {
      const len = c.text.length;
      if (len > 0 && rand() < 0.35) {
        const at = Math.floor(rand() * len);
        c.text.delete(at, Math.min(len - at, 1 + Math.floor(rand() * 4)));
      } else {
        const s = Array.from({ length: 1 + Math.floor(rand() * 5) }, () => alphabet[Math.floor(rand() * alphabet.length)]).join("");
        c.text.insert(Math.floor(rand() * (len + 1)), s);
      }
      ops++;
      // Random pacing of the edits (not a wait for a result).
      await new Promise((resolve) => setTimeout(resolve, 10 + Math.floor(rand() * 40)));
    }
  }));
  assert.ok(ops >= 200, `${ops} edits made`);
  const text = await converged(server, doc, clients, { ms: 20000 });
  assert.ok(text.length > 0, "the document is not empty");
}, { timeout: 40000 });

collabTest("the document survives a SIGKILL, and an offline client reconciles after the restart", async (t, ctx) => {
  const srv = await ctx.start();
  const doc = "persist";
  const a = client(t, srv, doc, { user: "alice" });
  const b = client(t, srv, doc, { user: "bob" });
  await Promise.all([a.synced(), b.synced()]);
  a.text.insert(0, "written before the crash");
  a.text.format(0, 7, { bold: true });
  await converged(srv, doc, [a, b]);
  const before = a.text.toString();
  const beforeDelta = a.text.toDelta();

  assert.deepEqual(await srv.stop("SIGKILL"), { code: null, signal: "SIGKILL" });
  // Both stay offline until told, so that neither can hand the server back what it lost.
  a.provider.disconnect();
  b.provider.disconnect();
  a.text.insert(a.text.length, ", and an offline edit");
  await srv.start(); // same port, same database

  const fresh = client(t, srv, doc, { user: "fresh", connect: false });
  const atSync = new Promise((resolve) =>
    fresh.provider.on("sync", (state) => state && resolve({ text: fresh.text.toString(), delta: fresh.text.toDelta() })));
  fresh.provider.connect();
  const seen = await atSync;
  assert.equal(seen.text, before, "a fresh client sees the text written before the crash");
  assert.deepEqual(seen.delta, beforeDelta, "with its formatting");
  assert.equal(await serverText(srv, doc), before);

  a.provider.connect();
  b.provider.connect();
  const text = await converged(srv, doc, [a, b, fresh]);
  assert.equal(text, "written before the crash, and an offline edit");
}, { timeout: 30000 });

collabTest("a document with snapshots is intact after restarts", async (t, ctx) => {
  const srv = await ctx.start({ args: ["--collab-snapshot-every", "5"] });
  const doc = "snapshots";
  const a = client(t, srv, doc, { user: "alice" });
  await a.synced();
  const rand = prng(7);
  const edit = (i) => {
    const len = a.text.length;
    if (i % 5 === 3 && len > 4) a.text.delete(Math.floor(rand() * (len - 3)), 3);
    else if (i % 7 === 6 && len > 4) a.text.format(Math.floor(rand() * (len - 4)), 4, { bold: i % 2 === 0 ? true : null });
    else a.text.insert(Math.floor(rand() * (len + 1)), `<${i}>`);
  };
  for (let i = 0; i < 23; i++) edit(i); // 23 updates: snapshots, then a tail of updates
  await converged(srv, doc, [a]);

  const check = async (what) => {
    const fresh = client(t, srv, doc, { user: "fresh", connect: false });
    const atSync = new Promise((resolve) =>
      fresh.provider.on("sync", (state) => state && resolve(fresh.text.toDelta())));
    fresh.provider.connect();
    assert.deepEqual(await atSync, a.text.toDelta(), `a fresh client sees the document ${what}`);
    assert.equal(await serverText(srv, doc), a.text.toString(), `/text ${what}`);
    fresh.destroy();
  };

  // A stays offline across each restart, so that it cannot hand the server back what it lost.
  assert.deepEqual(await srv.stop("SIGTERM"), { code: 0, signal: null }, "SIGTERM exits 0");
  a.provider.disconnect();
  await srv.start();
  await check("after a SIGTERM restart");

  a.provider.connect();
  await a.synced();
  for (let i = 23; i < 40; i++) edit(i);
  await converged(srv, doc, [a]);
  await srv.stop("SIGKILL");
  a.provider.disconnect();
  await srv.start();
  await check("after a SIGKILL restart");
}, { timeout: 40000 });

collabTest("malformed messages close the connection; other documents keep working", async (t) => {
  const a = client(t, server, "bystander", { user: "alice" });
  const b = client(t, server, "bystander", { user: "bob" });
  await Promise.all([a.synced(), b.synced()]);
  a.text.insert(0, "before");
  await converged(server, "bystander", [a, b]);

  const binary = {
    "unknown message type [9,9,9]": [9, 9, 9],
    "empty message": [],
    "sync message without a step": [0],
    "unknown sync step": [0, 7, 0],
    "update longer than the frame": [0, 2, 5, 1, 2],
    "update that is not a Yjs update": [0, 2, 3, 1, 2, 3],
    "awareness longer than the frame": [1, 10, 1],
  };
  let n = 0;
  for (const [what, bytes] of Object.entries(binary)) {
    const raw = rawCollab(t, server, `bad-${n++}`);
    await raw.opened;
    raw.ws.send(Buffer.from(bytes), { binary: true });
    a.text.insert(a.text.length, ` ${n}`); // the bystanders keep editing meanwhile
    const { code, reason } = await within(5000, raw.closed, `close after ${what}`);
    assert.ok(code === 1003 || code === 1007, `${what} ${JSON.stringify(bytes)}: closed with ${code} ${JSON.stringify(reason)}, want 1003 or 1007`);
    assert.ok(reason.length > 0, `${what}: a close reason is given (code ${code})`);
  }

  const rawText = rawCollab(t, server, "bad-text");
  await rawText.opened;
  rawText.ws.send("hello");
  b.text.insert(0, "B: ");
  const { code, reason } = await within(5000, rawText.closed, "close after a text frame");
  assert.equal(code, 1003, `a text frame: closed with ${code} ${JSON.stringify(reason)}`);
  assert.ok(reason.length > 0, "a close reason is given for a text frame");

  const text = await converged(server, "bystander", [a, b]);
  assert.equal(text, `B: before${Array.from({ length: n }, (_, i) => ` ${i + 1}`).join("")}`);
  assert.deepEqual([a.closes, b.closes], [[], []], "the bystanders' connections were never closed");

  const c = client(t, server, "bad-0", { user: "carol" });
  await c.synced();
  c.text.insert(0, "still usable");
  await converged(server, "bad-0", [c]);
});

collabTest("with --secret a token is required", async (t, ctx) => {
  const srv = await ctx.start({ secret: SECRET });
  const doc = "secret-doc";
  assert.equal(await upgradeStatus(`${srv.collabUrl}/${doc}`), 401, "no token");
  assert.equal(await upgradeStatus(`${srv.collabUrl}/${doc}?user=alice`), 401, "a user but no token");
  assert.equal(await upgradeStatus(`${srv.collabUrl}/${doc}?token=garbage`), 403, "a bad token");
  assert.equal((await fetch(`${srv.httpUrl}/collab/${doc}/text`)).status, 401, "/text without a token");

  const a = client(t, srv, doc, { params: { token: mintToken("alice") } });
  const b = client(t, srv, doc, { params: { token: mintToken("bob") } });
  await Promise.all([a.synced(), b.synced()]);
  a.text.insert(0, "with a token");
  b.text.insert(0, "also ");
  const text = await converged(srv, doc, [a, b], { token: mintToken("carol") });
  assert.ok(text === "also with a token" || text === "with a tokenalso ", text);
});
