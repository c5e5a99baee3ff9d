import assert from "node:assert/strict";
import {
  useServer, serverTest, openSocket, join, reply, pushOk, record, trackPresence, keysOf, RawClient,
} from "./server.mjs";

const server = useServer();

function assertMeta(meta) {
  assert.equal(typeof meta.phx_ref, "string");
  assert.ok(meta.phx_ref.length > 0);
}

serverTest("presence state after join, diffs on join and leave", server, async (t) => {
  const alice = openSocket(t, server, { params: { user: "alice" } });
  const ca = alice.channel("room:presence", {});
  const pa = trackPresence(ca);
  await join(ca);
  const own = await pa.until((l) => l.length === 1);
  assert.deepEqual(keysOf(own), ["alice"]);
  assert.equal(own[0].metas.length, 1);
  assertMeta(own[0].metas[0]);

  const bob = openSocket(t, server, { params: { user: "bob" } });
  const cb = bob.channel("room:presence", {});
  const pb = trackPresence(cb);
  await join(cb);
  assert.deepEqual(keysOf(await pb.until((l) => l.length === 2)), ["alice", "bob"]);
  assert.deepEqual(keysOf(await pa.until((l) => l.length === 2)), ["alice", "bob"]);
  assert.ok(pa.joins.some((j) => j.key === "bob" && j.current === undefined), "alice saw bob join");
  const bobMeta = pa.list().find((p) => p.key === "bob").metas[0];
  assertMeta(bobMeta);
  assert.notEqual(bobMeta.phx_ref, own[0].metas[0].phx_ref);

  await reply(cb.leave());
  assert.deepEqual(keysOf(await pa.until((l) => l.length === 1)), ["alice"]);
  const left = pa.leaves.find((l) => l.key === "bob");
  assert.ok(left, "alice saw bob leave");
  assert.deepEqual(left.leftPres.metas.map((m) => m.phx_ref), [bobMeta.phx_ref]);
});

serverTest("a disconnected socket leaves presence", server, async (t) => {
  const alice = openSocket(t, server, { params: { user: "alice" } });
  const ca = alice.channel("room:presence-drop", {});
  const pa = trackPresence(ca);
  await join(ca);
  const bob = openSocket(t, server, { params: { user: "bob" } });
  await join(bob.channel("room:presence-drop", {}));
  await pa.until((l) => l.length === 2);
  bob.disconnect();
  assert.deepEqual(keysOf(await pa.until((l) => l.length === 1)), ["alice"]);
});

serverTest("two sockets of one user give two metas under one key", server, async (t) => {
  const alice = openSocket(t, server, { params: { user: "alice" } });
  const ca = alice.channel("room:devices", {});
  const pa = trackPresence(ca);
  await join(ca);

  const phone = openSocket(t, server, { params: { user: "bob" } });
  const laptop = openSocket(t, server, { params: { user: "bob" } });
  const cPhone = phone.channel("room:devices", {});
  const cLaptop = laptop.channel("room:devices", {});
  const pPhone = trackPresence(cPhone);
  await join(cPhone);
  await join(cLaptop);

  const twoMetas = (l) => l.length === 2 && l.find((p) => p.key === "bob")?.metas.length === 2;
  const seen = await pa.until(twoMetas);
  assert.deepEqual(keysOf(seen), ["alice", "bob"]);
  const refs = seen.find((p) => p.key === "bob").metas.map((m) => m.phx_ref);
  assert.equal(new Set(refs).size, 2, "metas have distinct phx_refs");
  await pPhone.until(twoMetas);

  laptop.disconnect();
  const after = await pa.until((l) => l.find((p) => p.key === "bob")?.metas.length === 1);
  assert.deepEqual(keysOf(after), ["alice", "bob"]);
  assert.ok(refs.includes(after.find((p) => p.key === "bob").metas[0].phx_ref));
  await pPhone.until((l) => l.find((p) => p.key === "bob")?.metas.length === 1);
});

serverTest("presence_state follows the join reply and carries the join ref", server, async (t) => {
  const raw = await RawClient.open(t, `${server.websocketUrl}?user=zoe&vsn=2.0.0`);
  raw.send(["7", "7", "room:presence-raw", "phx_join", {}]);
  const first = await raw.next();
  assert.deepEqual(first.slice(0, 4), ["7", "7", "room:presence-raw", "phx_reply"]);
  assert.equal(first[4].status, "ok");
  const second = await raw.next();
  assert.deepEqual(second.slice(0, 4), ["7", null, "room:presence-raw", "presence_state"]);
  assert.deepEqual(Object.keys(second[4]), ["zoe"]);
  assertMeta(second[4].zoe.metas[0]);
  const diff = await raw.next((m) => m[3] === "presence_diff");
  assert.deepEqual(diff.slice(0, 3), [null, null, "room:presence-raw"]);
  assert.deepEqual(diff[4].leaves, {});
  assert.deepEqual(diff[4].joins, second[4]);
});

serverTest("without a user param the presence key is an anon- name", server, async (t) => {
  const anon = openSocket(t, server);
  const channel = anon.channel("room:anon", {});
  const presence = trackPresence(channel);
  const msgs = record(channel, "new_msg");
  await join(channel);
  const [only] = await presence.until((l) => l.length === 1);
  assert.match(only.key, /^anon-/);
  await pushOk(channel, "new_msg", { body: "who am I" });
  assert.equal((await msgs.waitFor()).user, only.key);
});
