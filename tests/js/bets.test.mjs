// Wallets (`user:<name>`) and live bets (`bet:<market>`) through the real phoenix client.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import {
  Rusher, useServer, serverTest, openSocket, join, reply, pushOk, record, mintToken, SECRET,
} from "./server.mjs";

const server = useServer({ secret: SECRET });

/** A socket of `user`; with `operator`, its channels get an operator grant token. */
function session(t, user, { operator = false, on = server } = {}) {
  const socket = openSocket(t, on, { params: { token: mintToken(user) } });
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

/** An operator with a funded bettor and an open market `id` with outcomes home 250 / away 180. */
async function market(t, id, bettor, funds) {
  const op = session(t, `op-${id}`, { operator: true });
  const opWallet = await wallet(op, `op-${id}`);
  const opMarket = op.channel(`bet:${id}`);
  await join(opMarket);
  await pushOk(opMarket, "create", { outcomes: { home: 250, away: 180 } });
  const s = session(t, bettor);
  const w = await wallet(s, bettor);
  await credit(opWallet, bettor, funds, `fund-${id}`);
  await w.balances.waitFor((b) => b.balance === funds);
  const m = s.channel(`bet:${id}`);
  const odds = record(m, "odds");
  const states = record(m, "market");
  const joined = await join(m);
  return { op, opMarket, w, m, odds, states, joined };
}

serverTest("live flow: odds stream, a stake is held, a winner is paid exactly once", server, async (t) => {
  const { opMarket, w, m, odds, joined } = await market(t, "m1", "eve-b1", 1000);
  assert.equal(joined.status, "open");
  assert.deepEqual(joined.outcomes, { home: 250, away: 180 });
  await pushOk(opMarket, "odds", { outcome: "home", odds: 240 });
  assert.deepEqual(await odds.waitFor(), { outcome: "home", odds: 240, version: 2 });
  const stale = await reply(m.push("place", { outcome: "home", stake: 100, odds: 250, req_id: "r1" }));
  assert.equal(stale.status, "error");
  assert.match(stale.response.reason, /odds changed: now 240/);
  const bet = await pushOk(m, "place", { outcome: "home", stake: 100, odds: 240, req_id: "r1" });
  assert.equal(bet.state, "open");
  assert.deepEqual(await w.balances.waitFor((b) => b.held === 100), { balance: 900, held: 100, open: 1 });
  assert.equal((await w.bets.waitFor((b) => b.req_id === "r1")).state, "open");
  // A retried push with the same req_id cannot bet twice.
  assert.deepEqual(await pushOk(m, "place", { outcome: "home", stake: 100, odds: 240, req_id: "r1" }), bet);
  await pushOk(m, "place", { outcome: "away", stake: 50, odds: 180, req_id: "r2" });
  await pushOk(opMarket, "settle", { winner: "home" });
  const won = await w.bets.waitFor((b) => b.req_id === "r1" && b.state === "won");
  assert.equal(won.payout, 240);
  assert.equal((await w.bets.waitFor((b) => b.req_id === "r2" && b.state === "lost")).payout, 0);
  await w.balances.waitFor((b) => b.balance === 850 + 240 && b.held === 0);
  const again = await reply(opMarket.push("settle", { winner: "away" }));
  assert.match(again.response.reason, /closed/);
  assert.deepEqual(await pushOk(w.channel, "balance", {}), { balance: 1090, held: 0, open: 0 });
});

serverTest("a suspended market takes no bets; void refunds every stake", server, async (t) => {
  const { opMarket, w, m, states } = await market(t, "m2", "finn-b2", 300);
  await pushOk(opMarket, "suspend", {});
  assert.equal((await states.waitFor((s) => s.status === "suspended")).status, "suspended");
  const r = await reply(m.push("place", { outcome: "home", stake: 10, odds: 250, req_id: "s1" }));
  assert.match(r.response.reason, /suspended/);
  assert.deepEqual(await pushOk(w.channel, "balance", {}), { balance: 300, held: 0, open: 0 });
  await pushOk(opMarket, "resume", {});
  await pushOk(m, "place", { outcome: "home", stake: 120, odds: 250, req_id: "s2" });
  await pushOk(opMarket, "void", {});
  assert.equal((await w.bets.waitFor((b) => b.state === "void")).payout, 120);
  assert.deepEqual(await pushOk(w.channel, "balance", {}), { balance: 300, held: 0, open: 0 });
});

serverTest("bad input on a market changes nothing", server, async (t) => {
  const { opMarket, w, m } = await market(t, "m3", "gus-b3", 100);
  const bad = [
    [{ outcome: "home", stake: -1, odds: 250, req_id: "b" }, /stake must be an integer/],
    [{ outcome: "home", stake: 2.5, odds: 250, req_id: "b" }, /stake must be an integer/],
    [{ outcome: "home", stake: 1e300, odds: 250, req_id: "b" }, /stake must be an integer/],
    [{ outcome: "home", stake: 10, odds: 250 }, /req_id/],
    [{ outcome: "draw", stake: 10, odds: 250, req_id: "b" }, /unknown outcome/],
    [{ outcome: "home", stake: 101, odds: 250, req_id: "b" }, /insufficient funds/],
  ];
  for (const [payload, reason] of bad) {
    const r = await reply(m.push("place", payload));
    assert.equal(r.status, "error", JSON.stringify(payload));
    assert.match(r.response.reason, reason);
  }
  for (const odds of [100, 100001, -3, 1.5]) {
    const r = await reply(opMarket.push("odds", { outcome: "home", odds }));
    assert.match(r.response.reason, /odds must be integers/);
  }
  const notOp = await reply(m.push("settle", { winner: "home" }));
  assert.match(notOp.response.reason, /operator/);
  const unknown = w.channel.socket.channel("bet:nowhere", {});
  await join(unknown);
  const r = await reply(unknown.push("place", { outcome: "home", stake: 1, odds: 250, req_id: "u" }));
  assert.match(r.response.reason, /unknown market/);
  assert.deepEqual(await pushOk(w.channel, "balance", {}), { balance: 100, held: 0, open: 0 });
});

serverTest("a bet survives a restart and is paid exactly once, also after another restart", server, async (t) => {
  const own = new Rusher({ secret: SECRET });
  t.after(async () => {
    await own.stop();
    rmSync(own.dir, { recursive: true, force: true });
  });
  await own.start();
  const connect = async () => {
    const op = session(t, "op-r", { operator: true, on: own });
    const opWallet = await wallet(op, "op-r");
    const opMarket = op.channel("bet:restart");
    await join(opMarket);
    const hal = await wallet(session(t, "hal-r", { on: own }), "hal-r");
    const m = hal.channel.socket.channel("bet:restart", {});
    return { op, opWallet, opMarket, hal, m, joined: await join(m) };
  };
  let c = await connect();
  await pushOk(c.opMarket, "create", { outcomes: { yes: 300, no: 140 } });
  await credit(c.opWallet, "hal-r", 200, "fund");
  await c.hal.balances.waitFor((b) => b.balance === 200);
  await pushOk(c.m, "place", { outcome: "yes", stake: 50, odds: 300, req_id: "k1" });
  await c.hal.balances.waitFor((b) => b.held === 50);

  c.op.socket.disconnect();
  c.hal.channel.socket.disconnect();
  await own.stop();
  await own.start();
  c = await connect();
  assert.deepEqual(c.hal.joined, { balance: 150, held: 50, open: 1 });
  assert.equal(c.joined.bets[0].state, "open");
  // The retry of a bet taken before the restart is answered with that bet.
  assert.equal((await pushOk(c.m, "place", { outcome: "yes", stake: 50, odds: 300, req_id: "k1" })).state, "open");
  await pushOk(c.opMarket, "settle", { winner: "yes" });
  assert.equal((await c.hal.bets.waitFor((b) => b.state === "won")).payout, 150);
  assert.deepEqual(await pushOk(c.hal.channel, "balance", {}), { balance: 300, held: 0, open: 0 });

  c.op.socket.disconnect();
  c.hal.channel.socket.disconnect();
  await own.stop();
  await own.start();
  c = await connect();
  // The settled market loads again and resends its payouts: the wallet pays none twice.
  assert.equal(c.joined.status, "settled");
  assert.equal(c.joined.bets[0].state, "won");
  assert.match((await reply(c.opMarket.push("settle", { winner: "no" }))).response.reason, /closed/);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.deepEqual(await pushOk(c.hal.channel, "balance", {}), { balance: 300, held: 0, open: 0 });
  assert.equal(c.hal.bets.items.length, 0, "no second payout event");
}, { timeout: 40000 });

serverTest("a user cannot touch another user's bet or join their private topic", server, async (t) => {
  const { w, m } = await market(t, "m4", "ivy-b4", 100);
  await pushOk(m, "place", { outcome: "away", stake: 40, odds: 180, req_id: "mine" });
  const jon = session(t, "jon-b4");
  const jm = jon.channel("bet:m4");
  const joined = await join(jm);
  assert.deepEqual(joined.bets, [], "another user's bets are not shown");
  // The same req_id from another user is that user's own request: it needs their own funds.
  const r = await reply(jm.push("place", { outcome: "away", stake: 40, odds: 180, req_id: "mine" }));
  assert.match(r.response.reason, /insufficient funds/);
  const spy = await reply(jon.channel("user:ivy-b4").join());
  assert.match(spy.response.reason, /private/);
  assert.deepEqual(await pushOk(w.channel, "balance", {}), { balance: 60, held: 40, open: 1 });
});
