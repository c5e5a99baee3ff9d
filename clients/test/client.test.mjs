// @rusher/client against a real rusher process: chat with presence, history and reconnect; geofencing
// with fences, events and a live query; a collaborative document through the y-websocket provider.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import * as Y from "yjs";

import { RusherClient, RusherError } from "../src/index.js";
import { Rusher, switchableTransport, until, within } from "../../tests/js/server.mjs";

let server;
before(async () => {
  server = await new Rusher().start();
});
after(async () => {
  await server.stop();
});

const base = () => `ws://127.0.0.1:${server.port}`;

function client(t, user) {
  const c = new RusherClient(base(), { user, transport: WebSocket }).connect();
  t.after(() => c.disconnect());
  return c;
}

test("chat: presence, messages in order, typing, history pages and errors", async (t) => {
  const alice = client(t, "alice");
  const bob = client(t, "bob");
  const a = alice.room("client-chat");
  const b = bob.room("client-chat");
  const seen = [];
  b.onMessage((m) => seen.push(m));
  const typing = [];
  b.onTyping((e) => typing.push(e));
  let present = [];
  b.onPresence((users) => { present = users; });
  await a.join();
  await b.join();
  await until(() => present.length === 2, 5000, () => `both present, saw ${present}`);
  assert.deepEqual(b.users(), ["alice", "bob"]);

  const acks = [];
  for (const body of ["one", "two", "three"]) acks.push(await a.send(body));
  assert.deepEqual(acks.map((x) => x.seq), [1, 2, 3]);
  await until(() => seen.length === 3, 5000, "three messages at bob");
  assert.deepEqual(seen.map((m) => [m.seq, m.user, m.body]), [[1, "alice", "one"], [2, "alice", "two"], [3, "alice", "three"]]);
  a.typing(true);
  await until(() => typing.length === 1, 5000, "a typing event");
  assert.deepEqual(typing[0], { user: "alice", typing: true });

  const page = await b.history({ beforeSeq: 3, limit: 1 });
  assert.deepEqual(page.messages.map((m) => m.body), ["two"]);
  assert.equal(page.more, true);
  await assert.rejects(a.send(""), (e) => e instanceof RusherError && /must not be empty/.test(e.reason));
});

test("chat: after the server restarts the room rejoins and delivers only what was missed", async (t) => {
  const reader = client(t, "reader");
  const writer = client(t, "writer");
  const r = reader.room("client-restart");
  const w = writer.room("client-restart");
  const seen = [];
  r.onMessage((m) => seen.push(m.body));
  const states = [];
  reader.onState((s) => states.push(s));
  await r.join();
  await w.join();
  await w.send("before");
  await until(() => seen.length === 1, 5000, "the first message");

  await server.stop();
  await until(() => reader.state === "reconnecting", 5000, () => `reconnecting, states ${states}`);
  await server.start();
  await until(() => reader.state === "connected" && writer.state === "connected", 15000, "both reconnected");
  // The writer's channel rejoins by itself; wait until a send is accepted.
  await until(async () => { try { await w.send("after"); return true; } catch { return false; } }, 15000, "a send after the restart");
  await until(() => seen.includes("after"), 10000, () => `the message after the restart, saw ${seen}`);
  assert.deepEqual(seen.filter((b) => b === "before"), ["before"], "nothing delivered twice");
  assert.ok(states.includes("reconnecting") && states.at(-1) === "connected", `states ${states}`);
});

test("chat: messages sent while a member's connection was down arrive when it rejoins", async (t) => {
  // While `offline`, the reader's reconnects go to a port where nothing listens.
  const sw = await switchableTransport();
  const reader = new RusherClient(base(), { user: "away", transport: sw.transport, socketOptions: { reconnectAfterMs: () => 100 } }).connect();
  t.after(() => reader.disconnect());
  const writer = client(t, "stayed");
  const r = reader.room("client-missed");
  const w = writer.room("client-missed");
  const seen = [];
  r.onMessage((m) => seen.push(m.body));
  await r.join();
  await w.join();
  await w.send("while here");
  await until(() => seen.length === 1, 5000, "the first message");

  // A restart drops both connections; only the writer comes back before the next message.
  sw.offline = true;
  await server.stop();
  await until(() => reader.state === "reconnecting", 5000, "the reader's connection dropped");
  await server.start();
  await until(async () => { try { await w.send("while away"); return true; } catch { return false; } }, 15000, "a send after the restart");
  assert.deepEqual(seen, ["while here"]);
  sw.offline = false;
  await until(() => seen.length === 2, 10000, () => `the missed message, saw ${seen}`);
  assert.deepEqual(seen, ["while here", "while away"]);
});

test("geo: fences, an enter event, queries and a live query", async (t) => {
  const admin = client(t, "dispatcher");
  const watcher = client(t, "watcher");
  const g = admin.geo("client-geo");
  const w = watcher.geo("client-geo", { fences: "*" });
  const events = [];
  w.onEvent((e) => events.push(e));
  const live = [];
  w.onQuery((kind, p) => live.push([kind, p.id]));
  await g.join();
  await w.join();
  const fence = await g.createFence({ id: "depot", geometry: { type: "Point", coordinates: [2.35, 48.85], radius: 200 } });
  assert.equal(fence.id, "depot");
  assert.deepEqual((await g.listFences()).fences.map((f) => f.id), ["depot"]);
  const inside = await w.query("around", { lat: 48.85, lon: 2.35, radius: 500 });
  assert.deepEqual(inside.objects, []);

  await g.location({ id: "van", lat: 48.8501, lon: 2.3501, ts: 1764320000123.5 });
  await until(() => events.length === 1 && live.length === 1, 5000, () => `an event and a query entry: ${JSON.stringify([events, live])}`);
  assert.deepEqual(events[0], { fence: "depot", object: "van", event: "enter", lat: 48.8501, lon: 2.3501, ts: 1764320000123.5 });
  assert.deepEqual(live, [["entered", "van"]]);
  const near = await w.nearby({ lat: 48.85, lon: 2.35, radius: 100 });
  assert.deepEqual(near.map((o) => o.id), ["van"]);
  assert.deepEqual((await w.history("van")).map((p) => p.ts), [1764320000123.5]);
  const batch = await g.locations([{ id: "van", lat: 48.9, lon: 2.35, ts: 1764320000200 }, { id: "bad", lat: 91, lon: 0 }]);
  assert.equal(batch.applied, 1);
  assert.equal(batch.errors[0].index, 1);
  await until(() => events.length === 2 && live.length === 2, 5000, "the exit and the query exit");
  assert.equal(events[1].event, "exit");
  assert.deepEqual(live[1], ["exited", "van"]);
  await assert.rejects(g.createFence({ id: "depot", geometry: { type: "Point", coordinates: [0, 0], radius: 1 } }), /exists/);
});

test("collab: two documents converge through the provider", async (t) => {
  const c1 = client(t, "writer-1");
  const c2 = client(t, "writer-2");
  const d1 = new Y.Doc();
  const d2 = new Y.Doc();
  const p1 = c1.collab("client-doc", d1);
  const p2 = c2.collab("client-doc", d2);
  // Destroying the documents also stops their awareness timers.
  t.after(() => { p1.destroy(); p2.destroy(); d1.destroy(); d2.destroy(); });
  await within(10000, Promise.all([p1, p2].map((p) => new Promise((resolve) => {
    if (p.synced) resolve();
    else p.once("synced", resolve);
  }))), "both providers synced");
  d1.getText("quill").insert(0, "hello ");
  d2.getText("quill").insert(0, "world");
  await until(() => d1.getText("quill").toString() === d2.getText("quill").toString()
    && d1.getText("quill").length === 11, 5000, () => `convergence: ${d1.getText("quill")} / ${d2.getText("quill")}`);
});
