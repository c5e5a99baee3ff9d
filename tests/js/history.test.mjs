import assert from "node:assert/strict";
import { useServer, serverTest, openSocket, join, pushOk } from "./server.mjs";

const server = useServer();
const TOTAL = 120;

async function seedRoom(t, topic) {
  const channel = openSocket(t, server, { params: { user: "writer" } }).channel(topic, {});
  await join(channel);
  const acks = [];
  for (let i = 0; i < TOTAL; i++) acks.push(await pushOk(channel, "new_msg", { body: `message ${i}` }));
  acks.forEach((a, i) => assert.equal(a.seq, acks[0].seq + i));
  return acks.map((a, i) => ({ seq: a.seq, id: a.id, user: "writer", body: `message ${i}`, ts: a.ts }));
}

function assertAscendingContiguous(messages) {
  messages.forEach((m, i) => i > 0 && assert.equal(m.seq, messages[i - 1].seq + 1, "ascending, contiguous seqs"));
}

serverTest("join returns the latest 50 and history pages back to the start", server, async (t) => {
  const all = await seedRoom(t, "room:paging");
  const reader = openSocket(t, server, { params: { user: "reader" } }).channel("room:paging", {});
  const joined = await join(reader);
  assert.equal(joined.more, true);
  assert.equal(joined.last_seq, all.at(-1).seq);
  assert.deepEqual(joined.messages, all.slice(-50));

  let pages = [joined.messages];
  let more = joined.more;
  while (more) {
    const page = await pushOk(reader, "history", { before_seq: pages[0][0].seq });
    assert.ok(page.messages.length > 0, "a page with more: true before it is not empty");
    assertAscendingContiguous(page.messages);
    assert.equal(page.messages.at(-1).seq, pages[0][0].seq - 1);
    pages = [page.messages, ...pages];
    more = page.more;
    assert.ok(pages.length <= TOTAL, "paging terminates");
  }
  assert.deepEqual(pages.flat(), all);
});

serverTest("history honours limit and before_seq", server, async (t) => {
  const all = await seedRoom(t, "room:limit");
  const reader = openSocket(t, server, { params: { user: "reader" } }).channel("room:limit", {});
  await join(reader);
  const first = all[0].seq;

  assert.deepEqual(await pushOk(reader, "history", { limit: 10 }), { messages: all.slice(-10), more: true });
  assert.deepEqual(await pushOk(reader, "history", { before_seq: first + 30, limit: 10 }), {
    messages: all.slice(20, 30), more: true,
  });
  assert.deepEqual(await pushOk(reader, "history", { before_seq: first + 10, limit: 10 }), {
    messages: all.slice(0, 10), more: false,
  });
  assert.deepEqual(await pushOk(reader, "history", { before_seq: first + 5, limit: 200 }), {
    messages: all.slice(0, 5), more: false,
  });
  assert.deepEqual(await pushOk(reader, "history", { before_seq: first, limit: 50 }), { messages: [], more: false });
  assert.deepEqual(await pushOk(reader, "history", { limit: 200 }), { messages: all, more: false });

  const back = [];
  let before;
  for (;;) {
    const page = await pushOk(reader, "history", before === undefined ? { limit: 7 } : { before_seq: before, limit: 7 });
    assert.ok(page.messages.length <= 7);
    back.unshift(...page.messages);
    if (!page.more) break;
    before = page.messages[0].seq;
  }
  assert.deepEqual(back, all);
});

serverTest("join with last_seq returns what came after it", server, async (t) => {
  const all = await seedRoom(t, "room:after");
  const last = all.at(-1).seq;
  const joinWith = async (params) => {
    const channel = openSocket(t, server, { params: { user: "reader" } }).channel("room:after", params);
    return join(channel);
  };

  assert.deepEqual(await joinWith({ last_seq: last - 10 }), { messages: all.slice(-10), more: false, last_seq: last });
  assert.deepEqual(await joinWith({ last_seq: last }), { messages: [], more: false, last_seq: last });
  const gap = await joinWith({ last_seq: all[9].seq });
  assert.deepEqual(gap.messages, all.slice(-50));
  assert.equal(gap.more, true);
  assert.equal(gap.last_seq, last);
});

serverTest("an empty room has no history", server, async (t) => {
  const channel = openSocket(t, server, { params: { user: "reader" } }).channel("room:empty", {});
  const joined = await join(channel);
  assert.deepEqual(joined, { messages: [], more: false });
  assert.deepEqual(await pushOk(channel, "history", {}), { messages: [], more: false });
});
