import assert from "node:assert/strict";
import { useServer, serverTest, openSocket, socketOpened, join, pushOk, record } from "./server.mjs";

const server = useServer();

serverTest("typing reaches the others but not the sender", server, async (t) => {
  const members = [];
  for (const user of ["alice", "bob", "carol", "dave", "erin"]) {
    const socket = openSocket(t, server, { params: { user } });
    await socketOpened(socket);
    const channel = socket.channel("room:typing", {});
    members.push({ user, channel, typing: record(channel, "typing"), msgs: record(channel, "new_msg") });
    await join(channel);
  }
  const [alice, ...others] = members;

  alice.channel.push("typing", { typing: true });
  alice.channel.push("typing", { typing: false });
  alice.channel.push("typing", {});
  await pushOk(alice.channel, "new_msg", { body: "after typing" });

  const expected = [
    { user: "alice", typing: true },
    { user: "alice", typing: false },
    { user: "alice", typing: true },
  ];
  for (const m of others) {
    await m.msgs.waitFor();
    assert.deepEqual(m.typing.items, expected, `typing events seen by ${m.user}`);
  }
  await alice.msgs.waitFor();
  assert.deepEqual(alice.typing.items, [], "the sender does not get its own typing events");
});

serverTest("join, push, reply and broadcast between two sockets", server, async (t) => {
  const alice = openSocket(t, server, { params: { user: "alice" } });
  const bob = openSocket(t, server, { params: { user: "bob" } });
  const ca = alice.channel("room:chat", {});
  const cb = bob.channel("room:chat", {});
  const seenByAlice = record(ca, "new_msg");
  const seenByBob = record(cb, "new_msg");

  const joined = await join(ca);
  assert.deepEqual(joined.messages, []);
  assert.equal(joined.more, false);
  await join(cb);

  const r1 = await pushOk(ca, "new_msg", { body: "hello bob" });
  assert.equal(typeof r1.seq, "number");
  assert.ok(Number.isInteger(r1.seq) && r1.seq >= 1, `seq ${r1.seq}`);
  assert.equal(typeof r1.id, "string");
  assert.ok(r1.id.length > 0);
  assert.ok(r1.ts !== undefined && r1.ts !== null, "reply has ts");

  const r2 = await pushOk(cb, "new_msg", { body: "hi alice" });
  assert.equal(r2.seq, r1.seq + 1);
  assert.equal(typeof r2.id, "string");
  assert.notEqual(r2.id, r1.id);

  const expected = [
    { seq: r1.seq, id: r1.id, user: "alice", body: "hello bob", ts: r1.ts },
    { seq: r2.seq, id: r2.id, user: "bob", body: "hi alice", ts: r2.ts },
  ];
  assert.deepEqual(await seenByAlice.waitCount(2), expected);
  assert.deepEqual(await seenByBob.waitCount(2), expected);
});

serverTest("seq increases by one per message and a later joiner gets them in order", server, async (t) => {
  const alice = openSocket(t, server, { params: { user: "alice" } });
  const ca = alice.channel("room:seq", {});
  await join(ca);
  const bodies = Array.from({ length: 10 }, (_, i) => `m${i}`);
  const acks = [];
  for (const body of bodies) acks.push(await pushOk(ca, "new_msg", { body }));
  acks.forEach((a, i) => assert.equal(a.seq, acks[0].seq + i));
  assert.equal(new Set(acks.map((a) => a.id)).size, acks.length, "ids are unique");

  const carol = openSocket(t, server, { params: { user: "carol" } });
  const cc = carol.channel("room:seq", {});
  const joined = await join(cc);
  assert.equal(joined.more, false);
  assert.equal(joined.last_seq, acks.at(-1).seq);
  assert.deepEqual(
    joined.messages,
    acks.map((a, i) => ({ seq: a.seq, id: a.id, user: "alice", body: bodies[i], ts: a.ts })),
  );
});

serverTest("pipelined pushes are all acked with distinct consecutive seqs", server, async (t) => {
  const alice = openSocket(t, server, { params: { user: "alice" } });
  const ca = alice.channel("room:pipeline", {});
  const seen = record(ca, "new_msg");
  await join(ca);
  const acks = await Promise.all(
    Array.from({ length: 40 }, (_, i) => pushOk(ca, "new_msg", { body: `p${i}` })),
  );
  const seqs = acks.map((a) => a.seq).sort((a, b) => a - b);
  seqs.forEach((s, i) => assert.equal(s, seqs[0] + i));
  const broadcasts = await seen.waitCount(40);
  assert.deepEqual(broadcasts.map((m) => m.seq), seqs, "broadcasts arrive in seq order");
});

serverTest("rooms are independent", server, async (t) => {
  const alice = openSocket(t, server, { params: { user: "alice" } });
  const one = alice.channel("room:one", {});
  const two = alice.channel("room:two", {});
  const inOne = record(one, "new_msg");
  const inTwo = record(two, "new_msg");
  await join(one);
  await join(two);
  const a = await pushOk(one, "new_msg", { body: "for one" });
  const b = await pushOk(two, "new_msg", { body: "for two" });
  assert.equal((await inOne.waitFor()).body, "for one");
  assert.equal((await inTwo.waitFor()).body, "for two");
  const c = await pushOk(one, "new_msg", { body: "again one" });
  assert.equal(c.seq, a.seq + 1);
  await inOne.waitCount(2);
  assert.deepEqual(inOne.items.map((m) => m.body), ["for one", "again one"]);
  assert.deepEqual(inTwo.items.map((m) => m.body), ["for two"]);
  assert.equal(typeof b.seq, "number");
});
