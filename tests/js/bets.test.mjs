// Wallets (`user:<name>`) and live bets (`bet:<market>`) through the real phoenix client.
import assert from "node:assert/strict";
import {
  useServer, serverTest, openSocket, join, reply, pushOk, record, mintToken, SECRET,
} from "./server.mjs";

const server = useServer({ secret: SECRET });

/** A socket of `user`; with `operator`, its channels get an operator grant token. */
function session(t, user, { operator = false } = {}) {
  const socket = openSocket(t, server, { params: { token: mintToken(user) } });
  const grant = operator ? { token: mintToken(user, { operator: true }) } : {};
  return {
    socket,
    channel: (topic) => socket.channel(topic, topic.startsWith("user:") || topic.startsWith("bet:") ? grant : {}),
  };
}

/** Join `user:<name>` and record its `balance` events. */
async function wallet(s, user) {
  const channel = s.channel(`user:${user}`);
  const balances = record(channel, "balance");
  const bets = record(channel, "bet");
  const joined = await join(channel);
  return { channel, balances, bets, joined };
}

async function credit(op, user, amount, req_id) {
  return pushOk(op.channel, "credit", { user, amount, req_id });
}

serverTest("a user joins only their own private topic", server, async (t) => {
  const alice = session(t, "alice-w1");
  const mine = await wallet(alice, "alice-w1");
  assert.deepEqual(mine.joined, { balance: 0, held: 0, open: 0 });
  const theirs = await reply(alice.channel("user:bob-w1").join());
  assert.equal(theirs.status, "error");
  assert.match(theirs.response.reason, /private/);
});

serverTest("an operator credits a wallet once per req_id, live", server, async (t) => {
  const op = await wallet(session(t, "op-w2", { operator: true }), "op-w2");
  const carol = await wallet(session(t, "carol-w2"), "carol-w2");
  const first = await credit(op, "carol-w2", 500, "c-1");
  assert.equal(first.duplicate, false);
  assert.deepEqual(await carol.balances.waitFor((b) => b.balance === 500), { balance: 500, held: 0, open: 0 });
  const again = await credit(op, "carol-w2", 500, "c-1");
  assert.equal(again.duplicate, true);
  assert.deepEqual(await pushOk(carol.channel, "balance", {}), { balance: 500, held: 0, open: 0 });
});

serverTest("credits need an operator and a well-formed amount", server, async (t) => {
  const dave = await wallet(session(t, "dave-w3"), "dave-w3");
  const denied = await reply(dave.channel.push("credit", { user: "dave-w3", amount: 10, req_id: "x" }));
  assert.equal(denied.status, "error");
  assert.match(denied.response.reason, /operator/);
  const op = await wallet(session(t, "op-w3", { operator: true }), "op-w3");
  for (const amount of [-5, 0, 1.5, "10", 1e16, null]) {
    const r = await reply(op.channel.push("credit", { user: "dave-w3", amount, req_id: `bad-${amount}` }));
    assert.equal(r.status, "error", `amount ${amount}`);
    assert.match(r.response.reason, /amount must be an integer/);
  }
  const noReq = await reply(op.channel.push("credit", { user: "dave-w3", amount: 5 }));
  assert.match(noReq.response.reason, /req_id/);
  assert.deepEqual(await pushOk(dave.channel, "balance", {}), { balance: 0, held: 0, open: 0 });
});
