// Cluster mode with real clients: the unmodified phoenix client (chat, presence, geofencing) and
// yjs + y-websocket (collab) on three rusher nodes sharing one Redis and one PostgreSQL, and two
// nodes sharing one port, one of them killed with SIGKILL under its clients.
//
// Needs RUSHER_TEST_REDIS_URL and RUSHER_TEST_POSTGRES_URL: scripts/test runs this file under
// scripts/with-redis and scripts/with-postgres. Without them (a plain `npm test`) it is skipped.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { test, before, after } from "node:test";
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import WebSocket from "ws";
import { Rusher, within, until, openSocket, join, reply, pushOk, record, trackPresence, keysOf } from "./server.mjs";

const REDIS = process.env.RUSHER_TEST_REDIS_URL;
const POSTGRES = process.env.RUSHER_TEST_POSTGRES_URL;
/** Names of rooms, documents and tenants are unique to this run: the database may be shared. */
const RUN = `${process.pid}-${Date.now()}`;
/** A silent node is down, and its leases expire, after this many seconds. */
const CLUSTER_TIMEOUT = "2";
// Each WebsocketProvider and each Rusher listens for the process's "exit".
process.setMaxListeners(64);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

if (!REDIS || !POSTGRES) {
  test("cluster mode", {
    skip: "needs RUSHER_TEST_REDIS_URL and RUSHER_TEST_POSTGRES_URL (scripts/test runs this file under scripts/with-redis scripts/with-postgres)",
  }, () => {});
} else {
  clusterTests();
}

/** A cluster node on `port` (0: any); several may share one. */
function clusterNode(port = 0) {
  return new Rusher({ port, store: POSTGRES, args: ["--cluster", REDIS, "--cluster-timeout", CLUSTER_TIMEOUT] });
}

/** This node's id, from its start log. */
function nodeId(node) {
  const line = node.logs.find((l) => l.includes("listening as a cluster node"));
  const m = line && /node=([0-9a-f]+)/.exec(line);
  assert.ok(m, `no node id in the logs:\n${node.logText()}`);
  return m[1];
}

/** The node a presence ref was made on: its top 24 bits are the node id's first six hex digits. */
function refNode(phxRef) {
  return (BigInt(`0x${phxRef}`) >> 40n).toString(16).padStart(6, "0");
}

function clusterTests() {
  const nodes = [0, 1, 2].map(() => clusterNode());
  before(() => Promise.all(nodes.map((n) => n.start())));
  after(async () => {
    for (const n of nodes) {
      await n.stop();
      rmSync(n.dir, { recursive: true, force: true });
    }
  });

  /** A test with a watchdog that prints the logs of every node it used when it fails. */
  function clusterTest(name, fn, { timeout = 30000 } = {}) {
    test(name, { timeout: timeout + 5000 }, async (t) => {
      const used = new Map(nodes.map((n) => [n, n.logs.length]));
      const start = async (node) => {
        used.set(node, 0);
        t.after(async () => {
          await node.stop("SIGKILL");
          rmSync(node.dir, { recursive: true, force: true });
        });
        return node.start();
      };
      try {
        await within(timeout, fn(t, start), `test "${name}"`);
      } catch (err) {
        for (const [n, mark] of used) {
          console.error(`----- rusher logs (${n.dir}) during "${name}" -----\n${n.logs.slice(mark).join("\n")}`);
        }
        throw err;
      }
    });
  }

  clusterTest("chat and presence span the nodes: each message once, in seq order, on every node", async (t) => {
    const room = `room:js-${RUN}`;
    const members = nodes.map((n, i) => {
      const channel = openSocket(t, n, { params: { user: `u${i}` } }).channel(room, {});
      return { channel, presence: trackPresence(channel), msgs: record(channel, "new_msg") };
    });
    for (const m of members) await join(m.channel);
    for (const m of members) {
      assert.deepEqual(keysOf(await m.presence.until((l) => l.length === 3)), ["u0", "u1", "u2"]);
    }
    const refs = members[0].presence.list().map((p) => p.metas[0].phx_ref);
    assert.equal(new Set(refs.map(refNode)).size, 3, `one member on each node: ${refs}`);

    const acks = [];
    for (const [i, m] of members.entries()) acks.push(await pushOk(m.channel, "new_msg", { body: `hello from u${i}` }));
    assert.deepEqual(acks.map((a) => a.seq).sort(), [1, 2, 3], "one seq per message across nodes");
    for (const m of members) {
      const got = await within(5000, m.msgs.waitCount(3), "three messages");
      assert.deepEqual(got.map((x) => x.seq), [1, 2, 3]);
      assert.deepEqual(got.map((x) => x.user).sort(), ["u0", "u1", "u2"]);
    }
    await sleep(200);
    for (const m of members) assert.equal(m.msgs.items.length, 3, "no message twice");

    await reply(members[2].channel.leave());
    for (const m of members.slice(0, 2)) {
      assert.deepEqual(keysOf(await m.presence.until((l) => l.length === 2)), ["u0", "u1"]);
    }
  });

  /** A y-websocket editor of `doc` on `node`, destroyed when test `t` ends. */
  function editor(t, node, doc, user) {
    const ydoc = new Y.Doc();
    const provider = new WebsocketProvider(node.collabUrl, doc, ydoc, {
      WebSocketPolyfill: WebSocket,
      params: { user },
      // Node has a BroadcastChannel: it would sync this process's editors without the server.
      disableBc: true,
      maxBackoffTime: 300,
    });
    t.after(() => {
      provider.destroy();
      // The awareness's timer stops with the document.
      ydoc.destroy();
    });
    const synced = new Promise((resolve) => {
      const h = (state) => {
        if (state) {
          provider.off("sync", h);
          resolve();
        }
      };
      provider.on("sync", h);
    });
    return { ydoc, provider, text: ydoc.getText("quill"), awareness: provider.awareness, synced };
  }

  clusterTest("collab editors on three nodes converge; a late joiner and /text on every node see it all", async (t) => {
    const doc = `js-${RUN}`;
    const editors = nodes.map((n, i) => editor(t, n, doc, `e${i}`));
    await within(10000, Promise.all(editors.map((e) => e.synced)), "every editor synced");
    editors.forEach((e, i) => e.awareness.setLocalStateField("user", { name: `e${i}` }));
    await until(
      () => editors.every((e) => [...e.awareness.getStates().values()].filter((s) => s.user).length === 3),
      10000,
      "every editor's cursor on every node",
    );
    for (let k = 0; k < 5; k++) {
      editors.forEach((e, i) => e.text.insert(e.text.length, String(i)));
      await sleep(10);
    }
    const converged = () => {
      const first = editors[0].text.toString();
      return first.length === 15 && editors.every((e) => e.text.toString() === first);
    };
    await until(converged, 10000, () => `convergence: ${editors.map((e) => JSON.stringify(e.text.toString()))}`);
    const text = editors[0].text.toString();
    assert.deepEqual([...text].sort().join(""), "000001111122222");

    const late = editor(t, nodes[1], doc, "late");
    await within(10000, late.synced, "the late editor synced");
    await until(() => late.text.toString() === text, 5000, "the late editor's text");
    for (const n of nodes) {
      await until(
        async () => (await (await fetch(`${n.httpUrl}/collab/${doc}/text?type=quill`)).text()) === text,
        5000,
        `the text over HTTP on ${n.httpUrl}`,
      );
    }
  });

  clusterTest("a geofence event reaches a subscriber on another node", async (t) => {
    const tenant = `geo:js-${RUN}`;
    const watcher = openSocket(t, nodes[0], { params: { user: "watcher" } }).channel(tenant, { fences: "*" });
    const events = record(watcher, "geofence_event");
    await join(watcher);
    const admin = openSocket(t, nodes[1], { params: { user: "admin" } }).channel(tenant, {});
    await join(admin);
    const fence = { id: "depot", geometry: { type: "Point", coordinates: [2.35, 48.85], radius: 200 } };
    assert.equal((await pushOk(admin, "fence_create", fence)).fence.id, "depot");
    const driver = openSocket(t, nodes[2], { params: { user: "driver" } }).channel(tenant, {});
    assert.deepEqual(await join(driver), { fences: 1, objects: 0 });
    const r = await pushOk(driver, "locations", {
      updates: [{ id: "truck", lat: 48.86, lon: 2.35, ts: 1000 }, { id: "truck", lat: 48.8501, lon: 2.3501, ts: 2000 }],
    });
    assert.deepEqual(r, { applied: 2, ignored: 0 });
    const e = await within(5000, events.waitFor((e) => e.object === "truck"), "the enter event");
    assert.deepEqual([e.fence, e.event], ["depot", "enter"]);
  });

  clusterTest("a node killed with SIGKILL: its clients reconnect through the shared port, rejoin by themselves, and every acked message is in history", async (t, start) => {
    const a = await start(clusterNode());
    const b = await start(clusterNode(a.port));
    assert.equal(b.port, a.port, "both nodes listen on one port");
    const room = `room:js-kill-${RUN}`;
    const members = [];
    for (let i = 0; i < 8; i++) {
      const socket = openSocket(t, a, { params: { user: `k${i}` } });
      const closes = [];
      socket.onClose(() => closes.push(Date.now()));
      const channel = socket.channel(room, {});
      const joins = [];
      channel.join().receive("ok", (resp) => joins.push(resp));
      members.push({ user: `k${i}`, socket, channel, closes, joins, presence: trackPresence(channel) });
    }
    await until(() => members.every((m) => m.joins.length === 1), 10000, "every member joined");
    await members[0].presence.until((l) => l.length === 8);

    /** Push until acked: while the room's owner is replaced, pushes get errors or time out. */
    const acked = [];
    const send = async (m, body) => {
      for (let attempt = 0; attempt < 40; attempt++) {
        const r = await reply(m.channel.push("new_msg", { body }));
        if (r.status === "ok") {
          acked.push(r.response.seq);
          return;
        }
        await sleep(250);
      }
      assert.fail(`${m.user}: ${body} was never acked`);
    };
    for (const m of members) await send(m, `${m.user} before`);

    // Kill the node of k0 (SO_REUSEPORT spread the others over both).
    const salt = (id) => id.slice(0, 6);
    const k0Ref = members[0].presence.list().find((p) => p.key === "k0").metas[0].phx_ref;
    const victim = refNode(k0Ref) === salt(nodeId(a)) ? a : b;
    const onVictim = members.filter((m) =>
      m.presence.list().find((p) => p.key === m.user)?.metas.some((meta) => refNode(meta.phx_ref) === salt(nodeId(victim))),
    );
    assert.ok(onVictim.length >= 1, "k0 is on the victim");
    await victim.stop("SIGKILL");

    await until(
      () => onVictim.every((m) => m.closes.length >= 1 && m.joins.length >= 2),
      15000,
      () => `the victim's clients to reconnect and rejoin: ${onVictim.map((m) => `${m.user} closes=${m.closes.length} joins=${m.joins.length}`)}`,
    );
    for (const m of members) await send(m, `${m.user} after`);
    await members[0].presence.until((l) => l.length === 8);

    const history = await pushOk(members[0].channel, "history", { limit: 100 });
    const seqs = history.messages.map((msg) => msg.seq);
    assert.ok(seqs.every((s, i) => i === 0 || seqs[i - 1] < s), `no seq twice: ${seqs}`);
    for (const s of acked) assert.ok(seqs.includes(s), `acked seq ${s} is in history ${seqs}`);
    assert.equal(acked.length, 16);
  }, { timeout: 60000 });
}
