import assert from "node:assert/strict";
import { setTimeout as delay } from "node:timers/promises";
import { useServer, serverTest, openSocket, socketOpened, join, pushOk, RawClient, within } from "./server.mjs";

const server = useServer({ heartbeatTimeout: 1 });

serverTest("a heartbeating socket outlives the heartbeat timeout", server, async (t) => {
  const socket = openSocket(t, server, { params: { user: "alice" }, heartbeatIntervalMs: 100 });
  const closes = [];
  const errors = [];
  let heartbeatReplies = 0;
  socket.onClose((e) => closes.push(e.code));
  socket.onError((e) => errors.push(String(e?.message ?? e)));
  socket.onMessage((m) => {
    if (m.topic === "phoenix" && m.event === "phx_reply" && m.payload.status === "ok") heartbeatReplies++;
  });
  await socketOpened(socket);
  const channel = socket.channel("room:hb", {});
  await join(channel);

  await delay(2000);

  assert.deepEqual(closes, [], "the socket was never closed");
  assert.deepEqual(errors, []);
  assert.ok(socket.isConnected());
  assert.ok(heartbeatReplies >= 10, `only ${heartbeatReplies} heartbeat replies in 2 s`);
  assert.equal(channel.state, "joined");
  await pushOk(channel, "new_msg", { body: "still here" });
});

serverTest("a silent connection is closed by the server", server, async (t) => {
  const raw = await RawClient.open(t, `${server.websocketUrl}?vsn=2.0.0`);
  const opened = Date.now();
  const { code } = await within(3500, raw.closed, "the server to close a connection silent for 3.5 s (--heartbeat-timeout 1)");
  const elapsed = Date.now() - opened;
  assert.ok(elapsed >= 900, `closed after ${elapsed} ms, before the timeout`);
  assert.ok(elapsed <= 3000, `closed after ${elapsed} ms`);
  assert.notEqual(code, 1006, "the server closes with a close frame");
}, { timeout: 6000 });

serverTest("heartbeats on a raw connection are answered and keep it open", server, async (t) => {
  const raw = await RawClient.open(t, `${server.websocketUrl}?vsn=2.0.0`);
  let closed = false;
  raw.closed.then(() => { closed = true; });
  for (let i = 0; i < 8; i++) {
    const ref = String(100 + i);
    raw.send([null, ref, "phoenix", "heartbeat", {}]);
    assert.deepEqual(await raw.replyTo(ref), [null, ref, "phoenix", "phx_reply", { status: "ok", response: {} }]);
    await delay(250);
  }
  assert.equal(closed, false, "connection stayed open for 2 s of heartbeats");
});
