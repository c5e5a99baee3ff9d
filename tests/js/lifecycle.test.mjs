import assert from "node:assert/strict";
import {
  useServer, serverTest, openSocket, join, reply, pushOk, record, trackPresence, keysOf, RawClient,
} from "./server.mjs";

const server = useServer();

serverTest("leave replies ok, closes the channel and the others see a presence leave", server, async (t) => {
  const alice = openSocket(t, server, { params: { user: "alice" } });
  const bob = openSocket(t, server, { params: { user: "bob" } });
  const ca = alice.channel("room:leave", {});
  const cb = bob.channel("room:leave", {});
  const pb = trackPresence(cb);
  const bobMsgs = record(cb, "new_msg");
  const aliceMsgs = record(ca, "new_msg");
  await join(ca);
  await join(cb);
  await pb.until((l) => l.length === 2);

  const closed = new Promise((resolve) => ca.onClose(resolve));
  const r = await reply(ca.leave());
  assert.deepEqual(r, { status: "ok", response: {} });
  await closed;
  assert.equal(ca.state, "closed");
  assert.ok(!alice.channels.includes(ca), "the client removed the channel");

  assert.deepEqual(keysOf(await pb.until((l) => l.length === 1)), ["bob"]);
  assert.ok(pb.leaves.some((l) => l.key === "alice"));

  await pushOk(cb, "new_msg", { body: "alice is gone" });
  await bobMsgs.waitFor();
  assert.deepEqual(aliceMsgs.items, [], "a channel that left gets no broadcasts");
});

serverTest("leave on the wire: reply, phx_close, then the topic is unmatched (raw ws)", server, async (t) => {
  const raw = await RawClient.open(t, `${server.websocketUrl}?user=ann&vsn=2.0.0`);
  raw.send(["1", "1", "room:l", "phx_join", {}]);
  assert.equal((await raw.replyTo("1"))[4].status, "ok");
  raw.send(["1", "2", "room:l", "phx_leave", {}]);
  assert.deepEqual(await raw.replyTo("2"), ["1", "2", "room:l", "phx_reply", { status: "ok", response: {} }]);
  assert.deepEqual(await raw.next((m) => m[3] === "phx_close"), ["1", "1", "room:l", "phx_close", {}]);
  raw.send(["1", "3", "room:l", "new_msg", { body: "after leave" }]);
  assert.deepEqual(await raw.replyTo("3"), [null, "3", "room:l", "phx_reply", { status: "error", response: { reason: "unmatched topic" } }]);
});

serverTest("a duplicate join closes the old channel (raw ws)", server, async (t) => {
  const raw = await RawClient.open(t, `${server.websocketUrl}?user=ann&vsn=2.0.0`);
  raw.send(["1", "1", "room:d", "phx_join", {}]);
  raw.send(["3", "3", "room:d", "phx_join", {}]);
  assert.deepEqual(await raw.next((m) => m[3] === "phx_close"), ["1", "1", "room:d", "phx_close", {}]);
  const second = await raw.replyTo("3");
  assert.deepEqual(second.slice(0, 4), ["3", "3", "room:d", "phx_reply"]);
  assert.equal(second[4].status, "ok");
  const order = raw.received.map((m) => `${m[1]}:${m[3]}`);
  assert.ok(order.indexOf("1:phx_close") < order.indexOf("3:phx_reply"), `order ${order}`);
  const firstReply = raw.received.find((m) => m[1] === "1" && m[3] === "phx_reply");
  if (firstReply) {
    assert.equal(firstReply[4].status, "ok");
    assert.ok(order.indexOf("1:phx_reply") < order.indexOf("1:phx_close"), `order ${order}`);
  }

  raw.send(["1", "4", "room:d", "new_msg", { body: "stale join ref" }]);
  raw.send(["3", "5", "room:d", "new_msg", { body: "current join ref" }]);
  const ok = await raw.replyTo("5");
  assert.equal(ok[4].status, "ok");
  const broadcast = await raw.next((m) => m[3] === "new_msg");
  assert.equal(broadcast[4].body, "current join ref");
  raw.send(["3", "6", "room:d", "history", {}]);
  const history = await raw.replyTo("6");
  assert.deepEqual(history[4].response.messages.map((m) => m.body), ["current join ref"], "the stale push was ignored");
  assert.equal(raw.queue.filter((m) => m[1] === "4").length, 0, "no reply to the stale push");
});

serverTest("a duplicate join after the first one completed (raw ws)", server, async (t) => {
  const observer = openSocket(t, server, { params: { user: "olga" } }).channel("room:d2", {});
  const presence = trackPresence(observer);
  await join(observer);
  const raw = await RawClient.open(t, `${server.websocketUrl}?user=ann&vsn=2.0.0`);
  raw.send(["1", "1", "room:d2", "phx_join", {}]);
  assert.equal((await raw.replyTo("1"))[4].status, "ok");
  const before = await presence.until((l) => l.some((p) => p.key === "ann"));
  const oldRef = before.find((p) => p.key === "ann").metas[0].phx_ref;

  raw.send(["3", "3", "room:d2", "phx_join", {}]);
  assert.deepEqual(await raw.next((m) => m[3] === "phx_close"), ["1", "1", "room:d2", "phx_close", {}]);
  assert.equal((await raw.replyTo("3"))[4].status, "ok");
  const state = await raw.next((m) => m[3] === "presence_state" && m[0] === "3");
  assert.equal(state[4].ann.metas.length, 1, `presence_state ${JSON.stringify(state[4])}`);
  const after = await presence.until((l) => {
    const ann = l.find((p) => p.key === "ann");
    return ann && ann.metas.length === 1 && ann.metas[0].phx_ref !== oldRef;
  });
  assert.deepEqual(keysOf(after), ["ann", "olga"]);
});

serverTest("the phoenix client can rejoin a topic on the same socket", server, async (t) => {
  const alice = openSocket(t, server, { params: { user: "alice" } });
  const first = alice.channel("room:again", {});
  await join(first);
  const firstClosed = new Promise((resolve) => first.onClose(resolve));
  const second = alice.channel("room:again", {});
  const msgs = record(second, "new_msg");
  await join(second);
  await firstClosed;
  const ack = await pushOk(second, "new_msg", { body: "on the second channel" });
  assert.equal((await msgs.waitFor()).seq, ack.seq);
});
