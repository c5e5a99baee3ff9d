import assert from "node:assert/strict";
import {
  useServer, serverTest, openSocket, socketOpened, join, pushOk, reply, record, RawClient, bytes, asArray,
} from "./server.mjs";

const server = useServer();

function encodePush(joinRef, ref, topic, event, data) {
  const head = [joinRef, ref, topic, event].map((s) => Buffer.from(s));
  return Buffer.concat([Buffer.from([0, ...head.map((b) => b.length)]), ...head, Buffer.from(data)]);
}

function decodeFrame(buf) {
  const kind = buf[0];
  const fields = { 0: ["join_ref", "topic", "event"], 1: ["join_ref", "ref", "topic", "status"], 2: ["topic", "event"] }[kind];
  assert.ok(fields, `unknown binary frame kind ${kind}`);
  const out = { kind };
  let offset = 1 + fields.length;
  fields.forEach((name, i) => {
    const len = buf[1 + i];
    out[name] = buf.subarray(offset, offset + len).toString();
    offset += len;
  });
  out.data = Array.from(buf.subarray(offset));
  return out;
}

serverTest("a blob is relayed to the others and the sender gets a binary ok", server, async (t) => {
  const members = [];
  for (const user of ["alice", "bob", "carol", "dave", "erin"]) {
    const socket = openSocket(t, server, { params: { user } });
    await socketOpened(socket);
    const channel = socket.channel("room:bin", {});
    members.push({ user, channel, blobs: record(channel, "blob"), msgs: record(channel, "new_msg") });
    await join(channel);
  }
  const [alice, ...others] = members;

  const r = await reply(alice.channel.push("blob", bytes(1, 2, 3, 0xfa)));
  assert.equal(r.status, "ok");
  assert.ok(r.response instanceof ArrayBuffer, `reply is ${Object.prototype.toString.call(r.response)}`);
  assert.equal(r.response.byteLength, 0);

  const all = Uint8Array.from({ length: 20000 }, (_, i) => (i * 7) % 256);
  assert.equal((await reply(alice.channel.push("blob", all.buffer))).status, "ok");
  await pushOk(alice.channel, "new_msg", { body: "after the blobs" });

  for (const m of others) {
    await m.msgs.waitFor();
    assert.equal(m.blobs.items.length, 2, `${m.user} got ${m.blobs.items.length} of 2 blobs before the next new_msg`);
    const [small, big] = m.blobs.items;
    assert.ok(small instanceof ArrayBuffer, `broadcast payload is ${Object.prototype.toString.call(small)}`);
    assert.deepEqual(asArray(small), [1, 2, 3, 0xfa]);
    assert.deepEqual(asArray(big), Array.from(all));
  }
  await alice.msgs.waitFor();
  assert.deepEqual(alice.blobs.items, [], "the sender does not get its own blob");
});

serverTest("binary frames have the V2 layout on the wire", server, async (t) => {
  const url = `${server.websocketUrl}?vsn=2.0.0`;
  const sender = await RawClient.open(t, `${url}&user=ann`);
  const receiver = await RawClient.open(t, `${url}&user=ben`);
  sender.send(["5", "5", "room:wire", "phx_join", {}]);
  receiver.send(["9", "9", "room:wire", "phx_join", {}]);
  assert.equal((await sender.replyTo("5"))[4].status, "ok");
  assert.equal((await receiver.replyTo("9"))[4].status, "ok");

  sender.ws.send(encodePush("5", "6", "room:wire", "blob", [0, 255, 10, 13]));
  const isBinary = (m) => Buffer.isBuffer(m);
  assert.deepEqual(decodeFrame(await sender.next(isBinary)), {
    kind: 1, join_ref: "5", ref: "6", topic: "room:wire", status: "ok", data: [],
  });
  assert.deepEqual(decodeFrame(await receiver.next(isBinary)), {
    kind: 2, topic: "room:wire", event: "blob", data: [0, 255, 10, 13],
  });
});
