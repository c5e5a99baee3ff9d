import assert from "node:assert/strict";
import { useServer, serverTest, openSocket, join, pushOk } from "./server.mjs";

const server = useServer();

async function metrics() {
  const res = await fetch(`${server.httpUrl}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
  const values = new Map();
  for (const line of (await res.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    assert.ok(m, `malformed metrics line: ${JSON.stringify(line)}`);
    values.set(m[1], Number(m[2]));
  }
  return values;
}

serverTest("/healthz answers 200 ok", server, async () => {
  const res = await fetch(`${server.httpUrl}/healthz`);
  assert.equal(res.status, 200);
  assert.equal((await res.text()).trim(), "ok");
});

serverTest("/metrics is Prometheus text and counts connections, joins and messages", server, async (t) => {
  const before = await metrics();
  for (const name of ["rusher_connections", "rusher_joins_total", "rusher_chat_messages_total"]) {
    assert.ok(before.has(name), `${name} is exported`);
  }
  const socket = openSocket(t, server, { params: { user: "alice" } });
  const channel = socket.channel("room:metrics", {});
  await join(channel);
  await pushOk(channel, "new_msg", { body: "one" });
  await pushOk(channel, "new_msg", { body: "two" });
  const after = await metrics();
  assert.ok(after.get("rusher_connections") >= 1, `rusher_connections ${after.get("rusher_connections")}`);
  assert.equal(after.get("rusher_joins_total") - before.get("rusher_joins_total"), 1);
  assert.equal(after.get("rusher_chat_messages_total") - before.get("rusher_chat_messages_total"), 2);
});

serverTest("an unknown path is not a success", server, async () => {
  const res = await fetch(`${server.httpUrl}/no-such-page`);
  assert.ok(res.status >= 400 && res.status < 500, `status ${res.status}`);
  await res.arrayBuffer();
});
