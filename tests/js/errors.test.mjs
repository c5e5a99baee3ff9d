import assert from "node:assert/strict";
import {
  useServer, serverTest, openSocket, join, reply, pushOk, RawClient, upgradeStatus,
} from "./server.mjs";

const server = useServer();

async function joinedChannel(t, topic) {
  const socket = openSocket(t, server, { params: { user: "alice" } });
  const channel = socket.channel(topic, {});
  await join(channel);
  return channel;
}

async function assertErrorReply(channel, event, payload, reason) {
  const r = await reply(channel.push(event, payload));
  assert.equal(r.status, "error", `${event} ${JSON.stringify(payload).slice(0, 80)} gave ${r.status} ${JSON.stringify(r.response)}`);
  assert.equal(typeof r.response?.reason, "string");
  if (reason !== undefined) assert.equal(r.response.reason, reason);
  return r.response;
}

serverTest("invalid message bodies get an error reply", server, async (t) => {
  const channel = await joinedChannel(t, "room:bodies");
  for (const payload of [{ body: "" }, { body: "   " }, { body: "\n\t " }, { body: 42 }, { body: null }, { body: ["a"] }, {}]) {
    await assertErrorReply(channel, "new_msg", payload);
  }
  const ok = await pushOk(channel, "new_msg", { body: "valid" });
  const joined = await join(openSocket(t, server, { params: { user: "bob" } }).channel("room:bodies", {}));
  assert.deepEqual(joined.messages.map((m) => m.seq), [ok.seq], "refused bodies were not stored");
});

serverTest("bodies are limited to 4096 bytes", server, async (t) => {
  const channel = await joinedChannel(t, "room:sizes");
  await pushOk(channel, "new_msg", { body: "x".repeat(4096) });
  await assertErrorReply(channel, "new_msg", { body: "x".repeat(4097) });
  await pushOk(channel, "new_msg", { body: "é".repeat(2048) });
  await assertErrorReply(channel, "new_msg", { body: "é".repeat(2049) });
  await assertErrorReply(channel, "new_msg", { body: "y".repeat(60000) });
});

serverTest("an unknown event gets an error naming it", server, async (t) => {
  const channel = await joinedChannel(t, "room:unknown");
  await assertErrorReply(channel, "x", {}, 'unknown event "x"');
  await assertErrorReply(channel, "shout", { body: "hi" }, 'unknown event "shout"');
  await pushOk(channel, "new_msg", { body: "the channel still works" });
});

serverTest("history rejects limits outside 1..200", server, async (t) => {
  const channel = await joinedChannel(t, "room:limits");
  await assertErrorReply(channel, "history", { limit: 0 });
  await assertErrorReply(channel, "history", { limit: 201 });
  await assertErrorReply(channel, "history", { limit: -1 });
  await assertErrorReply(channel, "history", { limit: "ten" });
  assert.deepEqual(await pushOk(channel, "history", { limit: 200 }), { messages: [], more: false });
  assert.deepEqual(await pushOk(channel, "history", { limit: 1 }), { messages: [], more: false });
});

serverTest("joining an unmatched topic is refused", server, async (t) => {
  const socket = openSocket(t, server, { params: { user: "alice" } });
  for (const topic of ["lobby", "room:", "rooms:x", "chat:1", `room:${"a".repeat(129)}`]) {
    const channel = socket.channel(topic, {});
    const r = await reply(channel.join());
    channel.leave();
    assert.deepEqual(r, { status: "error", response: { reason: "unmatched topic" } }, `join ${topic.slice(0, 40)}`);
  }
  await join(socket.channel(`room:${"a".repeat(128)}`, {}));
  await join(socket.channel("room:1", {}));
});

serverTest("a push on a topic that is not joined is refused (raw ws)", server, async (t) => {
  const raw = await RawClient.open(t, `${server.websocketUrl}?vsn=2.0.0`);
  raw.send(["1", "2", "room:x", "new_msg", { body: "a" }]);
  assert.deepEqual(await raw.replyTo("2"), [null, "2", "room:x", "phx_reply", { status: "error", response: { reason: "unmatched topic" } }]);
  raw.send([null, "3", "room:x", "history", {}]);
  assert.deepEqual(await raw.replyTo("3"), [null, "3", "room:x", "phx_reply", { status: "error", response: { reason: "unmatched topic" } }]);
  raw.send(["4", "4", "room:x", "phx_leave", {}]);
  assert.deepEqual(await raw.replyTo("4"), ["4", "4", "room:x", "phx_reply", { status: "ok", response: {} }]);
  raw.send([null, "5", "phoenix", "heartbeat", {}]);
  assert.deepEqual(await raw.replyTo("5"), [null, "5", "phoenix", "phx_reply", { status: "ok", response: {} }]);
});

serverTest("the phoenix client refuses a push before join", server, async (t) => {
  const socket = openSocket(t, server, { params: { user: "alice" } });
  const channel = socket.channel("room:early", {});
  assert.throws(() => channel.push("new_msg", { body: "too early" }), /before joining/);
  const joinPush = channel.join();
  const buffered = reply(channel.push("new_msg", { body: "buffered until joined" }));
  assert.equal((await reply(joinPush)).status, "ok");
  assert.equal((await buffered).status, "ok");
});

serverTest("a socket may join at most 100 channels", server, async (t) => {
  const raw = await RawClient.open(t, `${server.websocketUrl}?vsn=2.0.0`);
  for (let i = 1; i <= 100; i++) raw.send([String(i), String(i), `room:many-${i}`, "phx_join", {}]);
  for (let i = 1; i <= 100; i++) {
    const r = await raw.replyTo(String(i));
    assert.equal(r[4].status, "ok", `join ${i}: ${JSON.stringify(r)}`);
  }
  raw.send(["101", "101", "room:many-101", "phx_join", {}]);
  assert.deepEqual(await raw.replyTo("101"), ["101", "101", "room:many-101", "phx_reply", { status: "error", response: { reason: "too many channels joined" } }]);
  raw.send(["1", "102", "room:many-1", "phx_leave", {}]);
  assert.equal((await raw.replyTo("102"))[4].status, "ok");
  raw.send(["103", "103", "room:many-101", "phx_join", {}]);
  assert.equal((await raw.replyTo("103"))[4].status, "ok", "a slot frees up after a leave");
});

serverTest("a bad vsn is refused with 403", server, async () => {
  assert.equal(await upgradeStatus(`${server.websocketUrl}?vsn=1.0.0`), 403);
  assert.equal(await upgradeStatus(`${server.websocketUrl}?vsn=3.0.0`), 403);
  assert.equal(await upgradeStatus(`${server.websocketUrl}`), 403);
});

serverTest("malformed frames do not break the connection", server, async (t) => {
  const raw = await RawClient.open(t, `${server.websocketUrl}?vsn=2.0.0`);
  raw.ws.send("not json");
  raw.ws.send(JSON.stringify({ topic: "room:x", event: "phx_join", payload: {}, ref: "1" }));
  raw.ws.send(JSON.stringify(["1", "2", "room:x"]));
  raw.send([null, "9", "phoenix", "heartbeat", {}]);
  const answer = await Promise.race([raw.replyTo("9"), raw.closed]);
  if (Array.isArray(answer)) {
    assert.deepEqual(answer, [null, "9", "phoenix", "phx_reply", { status: "ok", response: {} }]);
  } else {
    assert.ok([1003, 1007, 1008].includes(answer.code), `closed with ${answer.code} ${answer.reason}`);
  }
});
