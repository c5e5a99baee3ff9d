import assert from "node:assert/strict";
import {
  useServer, serverTest, openSocket, socketOpened, join, reply, pushOk, switchableTransport, within,
} from "./server.mjs";

const server = useServer();

/**
 * A member of `topic` that remembers every message it has seen and rejoins with
 * `{last_seq}` of the newest one.
 */
function follower(t, topic, socketOpts) {
  const socket = openSocket(t, server, socketOpts);
  const seen = [];
  const joinParams = [];
  const joinResponses = [];
  let waiters = [];
  const until = (pred) => new Promise((resolve) => (pred() ? resolve() : waiters.push([pred, resolve])));
  const notify = () => {
    waiters = waiters.filter(([pred, resolve]) => (pred() ? (resolve(), false) : true));
  };
  const lastSeen = () => (seen.length ? Math.max(...seen.map((m) => m.seq)) : null);
  const channel = socket.channel(topic, () => {
    const last = lastSeen();
    const params = last === null ? {} : { last_seq: last };
    joinParams.push(params);
    return params;
  });
  const accept = (m) => {
    seen.push(m);
    notify();
  };
  channel.on("new_msg", accept);
  const firstJoin = new Promise((resolve, reject) => {
    channel.join()
      .receive("ok", (resp) => {
        joinResponses.push(resp);
        resp.messages.forEach(accept);
        notify();
        resolve(resp);
      })
      .receive("error", (e) => reject(new Error(`join: ${JSON.stringify(e)}`)));
  });
  const closes = [];
  const closeReasons = [];
  socket.onClose((e) => {
    closes.push(e.code);
    closeReasons.push(e.reason);
  });
  return {
    socket, channel, seen, joinParams, joinResponses, closes, closeReasons, firstJoin,
    /** Resolve once a message with seq >= `seq` has been seen. */
    seenUpTo: (seq) => until(() => lastSeen() >= seq),
    /** Resolve with the n-th ok join response. */
    joined: async (n) => {
      await until(() => joinResponses.length >= n);
      return joinResponses[n - 1];
    },
  };
}

/** Every message of `channel`'s room, oldest first, paging back through `history`. */
async function wholeHistory(channel) {
  const stored = [];
  let page = await pushOk(channel, "history", { limit: 200 });
  stored.unshift(...page.messages);
  while (page.more) {
    page = await pushOk(channel, "history", { before_seq: stored[0].seq, limit: 200 });
    stored.unshift(...page.messages);
  }
  return stored;
}

async function postMany(channel, prefix, n) {
  const acks = [];
  for (let i = 0; i < n; i++) {
    const body = `${prefix} ${i}`;
    acks.push({ ...(await pushOk(channel, "new_msg", { body })), body });
  }
  return acks;
}

function assertExactlyOnce(seen, from, to) {
  const seqs = seen.map((m) => m.seq);
  assert.equal(new Set(seqs).size, seqs.length, `duplicates in ${seqs}`);
  const sorted = [...seqs].sort((a, b) => a - b);
  assert.deepEqual(sorted, Array.from({ length: to - from + 1 }, (_, i) => from + i), "every seq seen exactly once");
}

async function restart() {
  const status = await server.stop("SIGTERM");
  assert.deepEqual(status, { code: 0, signal: null }, "SIGTERM drains and exits 0");
  await server.start();
}

serverTest("after a restart a client rejoins with last_seq and gets exactly what it missed", server, async (t) => {
  const network = await switchableTransport();
  const c1 = follower(t, "room:restart", { params: { user: "c1" }, transport: network.transport, heartbeatIntervalMs: 300 });
  await c1.firstJoin;
  const before = await postMany(c1.channel, "before", 15);
  await c1.seenUpTo(before.at(-1).seq);

  network.offline = true;
  await restart();
  assert.equal(c1.closes[0], 1001, "the server closed the connection with 1001 when draining");

  const c2 = openSocket(t, server, { params: { user: "c2" } }).channel("room:restart", {});
  const c2Joined = await join(c2);
  assert.deepEqual(c2Joined.messages.map((m) => m.seq), before.map((a) => a.seq), "the messages survived the restart");
  const missed = await postMany(c2, "missed", 20);
  assert.equal(missed[0].seq, before.at(-1).seq + 1, "seq continues after the restart");

  network.offline = false;
  const rejoin = await c1.joined(2);
  await c1.seenUpTo(missed.at(-1).seq);
  assert.deepEqual(c1.joinParams.at(-1), { last_seq: before.at(-1).seq });
  assert.deepEqual(
    rejoin.messages.map((m) => [m.seq, m.id, m.user, m.body]),
    missed.map((a) => [a.seq, a.id, "c2", a.body]),
    "the rejoin returns exactly the missed messages",
  );
  assert.equal(rejoin.more, false);

  const after = await pushOk(c1.channel, "new_msg", { body: "back" });
  assert.equal(after.seq, missed.at(-1).seq + 1);
  await c1.seenUpTo(after.seq);
  assertExactlyOnce(c1.seen, before[0].seq, after.seq);
}, { timeout: 30000 });

serverTest("messages posted while a client reconnects are neither lost nor duplicated", server, async (t) => {
  const c1 = follower(t, "room:race", { params: { user: "c1" }, heartbeatIntervalMs: 300 });
  await c1.firstJoin;
  const before = await postMany(c1.channel, "before", 10);
  await c1.seenUpTo(before.at(-1).seq);

  await restart();
  const c2socket = openSocket(t, server, { params: { user: "c2" } });
  await socketOpened(c2socket);
  const c2 = c2socket.channel("room:race", {});
  await join(c2);
  const acks = await Promise.all(
    Array.from({ length: 40 }, (_, i) => pushOk(c2, "new_msg", { body: `during ${i}` })),
  );
  const last = Math.max(...acks.map((a) => a.seq));
  await c1.seenUpTo(last);
  assert.ok(c1.joinResponses.length >= 2, "the client rejoined by itself");
  assertExactlyOnce(c1.seen, before[0].seq, last);
}, { timeout: 30000 });

serverTest("every message acked before a SIGKILL is in history after restart", server, async (t) => {
  const socket = openSocket(t, server, { params: { user: "writer" } });
  const channel = socket.channel("room:kill", {});
  await join(channel);

  const acked = [];
  let killed = false;
  let kill;
  const killedNow = new Promise((resolve) => { kill = resolve; });
  const writer = async (w) => {
    for (let i = 0; !killed; i++) {
      const body = `w${w} ${i}`;
      const r = await reply(channel.push("new_msg", { body }));
      if (r.status === "ok") {
        acked.push({ ...r.response, body });
        if (acked.length >= 60) kill();
      }
    }
  };
  const writers = [1, 2, 3, 4].map(writer);
  await killedNow;
  const status = await server.stop("SIGKILL");
  killed = true;
  assert.equal(status.signal, "SIGKILL");
  await Promise.all(writers);
  socket.disconnect();

  await server.start();
  const reader = openSocket(t, server, { params: { user: "reader" } }).channel("room:kill", {});
  await join(reader);
  const stored = await wholeHistory(reader);
  const bySeq = new Map(stored.map((m) => [m.seq, m]));
  for (const a of acked) {
    const m = bySeq.get(a.seq);
    assert.ok(m, `acked seq ${a.seq} (${a.body}) is missing after SIGKILL; ${stored.length} stored, ${acked.length} acked`);
    assert.deepEqual([m.id, m.user, m.body, m.ts], [a.id, "writer", a.body, a.ts]);
  }
  assertExactlyOnce(stored, stored[0].seq, stored.at(-1).seq);
  const next = await pushOk(reader, "new_msg", { body: "after the crash" });
  assert.equal(next.seq, stored.at(-1).seq + 1, "seqs are not reused after a crash");
}, { timeout: 30000 });

serverTest("SIGTERM while clients publish: 1001 with a reason, every acked message kept, reconnects catch up", server, async (t) => {
  const topic = "room:term-load";
  const clients = Array.from({ length: 6 }, (_, i) =>
    follower(t, topic, { params: { user: `w${i}` }, heartbeatIntervalMs: 300 }));
  await Promise.all(clients.map((c) => c.firstJoin));

  const acked = [];
  let stopped = false;
  let cutoff;
  const enough = new Promise((resolve) => { cutoff = resolve; });
  // Each client publishes on four lanes, one message after another on each, until the server has been
  // stopped; a push sent while the server drained may get no reply (a timeout), never a wrong one.
  const writers = clients.flatMap((c, w) => [0, 1, 2, 3].map(async (lane) => {
    const replies = { ok: 0, error: 0, timeout: 0 };
    for (let i = 0; !stopped && i < 10000; i++) {
      const body = `w${w}.${lane} ${i}`;
      const r = await reply(c.channel.push("new_msg", { body }));
      replies[r.status] += 1;
      if (r.status === "ok") {
        acked.push({ ...r.response, body, user: `w${w}` });
        if (acked.length >= 300) cutoff();
      }
    }
    return replies;
  }));
  await enough;
  const ackedBeforeStop = acked.length;
  const status = await server.stop("SIGTERM");
  stopped = true;
  assert.deepEqual(status, { code: 0, signal: null }, "SIGTERM drains and exits 0");
  for (const c of clients) {
    assert.equal(c.closes[0], 1001, `${c.socket.params().user}: closed with 1001 (got ${c.closes})`);
    assert.match(c.closeReasons[0], /shutting down/, "the close frame says why");
  }
  const replies = await Promise.all(writers);
  await server.start();

  // The phoenix client reconnects by itself, to the same port; each rejoins with the newest seq it saw.
  for (const c of clients) {
    const rejoin = await within(10000, c.joined(2), "a rejoin after the restart");
    assert.ok("last_seq" in c.joinParams.at(-1), `rejoined with last_seq: ${JSON.stringify(c.joinParams.at(-1))}`);
    if (rejoin.more) {
      // More was missed than one join page holds: read the rest back from history.
      let page = rejoin;
      while (page.more) {
        page = await pushOk(c.channel, "history", { before_seq: page.messages[0].seq, limit: 200 });
        page.messages.forEach((m) => c.seen.push(m));
      }
    }
  }
  const reader = openSocket(t, server, { params: { user: "reader" } }).channel(topic, {});
  await join(reader);
  const stored = await wholeHistory(reader);
  const bySeq = new Map(stored.map((m) => [m.seq, m]));
  for (const a of acked) {
    const m = bySeq.get(a.seq);
    assert.ok(m, `acked seq ${a.seq} (${a.body}) is missing after SIGTERM; ${stored.length} stored, ${acked.length} acked`);
    assert.deepEqual([m.id, m.user, m.body, m.ts], [a.id, a.user, a.body, a.ts]);
  }
  assertExactlyOnce(stored, stored[0].seq, stored.at(-1).seq);
  const last = stored.at(-1).seq;
  for (const c of clients) {
    await within(10000, c.seenUpTo(last), "every client to catch up");
    const seen = new Set(c.seen.map((m) => m.seq));
    const missing = stored.filter((m) => !seen.has(m.seq)).map((m) => m.seq);
    assert.deepEqual(missing, [], "each client has every stored message after reconnecting");
  }
  const totals = replies.reduce((s, r) => ({ ok: s.ok + r.ok, error: s.error + r.error, timeout: s.timeout + r.timeout }));
  t.diagnostic(`${ackedBeforeStop} acked when SIGTERM was sent, ${acked.length} in all; replies ${JSON.stringify(totals)}; ${stored.length} stored`);
}, { timeout: 40000 });
