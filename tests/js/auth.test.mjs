import assert from "node:assert/strict";
import {
  useServer, serverTest, openSocket, join, pushOk, record, trackPresence, keysOf,
  RawClient, upgradeStatus, mintToken, signToken, SECRET,
} from "./server.mjs";

const server = useServer({ secret: SECRET });

function subprotocols(token) {
  return ["phoenix", `base64url.bearer.phx.${Buffer.from(token).toString("base64").replace(/=/g, "")}`];
}

serverTest("a token in params names the user, whatever the payloads say", server, async (t) => {
  const alice = openSocket(t, server, { params: { token: mintToken("alice"), user: "mallory" } });
  const channel = alice.channel("room:auth", { user: "mallory" });
  const presence = trackPresence(channel);
  const msgs = record(channel, "new_msg");
  await join(channel);
  assert.deepEqual(keysOf(await presence.until((l) => l.length === 1)), ["alice"]);
  const ack = await pushOk(channel, "new_msg", { body: "signed", user: "mallory" });
  const got = await msgs.waitFor();
  assert.equal(got.user, "alice");
  assert.equal(got.seq, ack.seq);
});

serverTest("a token as authToken (subprotocol) works", server, async (t) => {
  const bob = openSocket(t, server, { authToken: mintToken("bob") });
  const channel = bob.channel("room:auth-sub", {});
  const presence = trackPresence(channel);
  const msgs = record(channel, "new_msg");
  await join(channel);
  assert.deepEqual(keysOf(await presence.until((l) => l.length === 1)), ["bob"]);
  await pushOk(channel, "new_msg", { body: "via subprotocol" });
  assert.equal((await msgs.waitFor()).user, "bob");

  const raw = await RawClient.open(t, `${server.websocketUrl}?vsn=2.0.0`, { protocols: subprotocols(mintToken("carol")) });
  assert.equal(raw.ws.protocol, "phoenix");
});

serverTest("a connection without a token is refused with 401", server, async (t) => {
  assert.equal(await upgradeStatus(`${server.websocketUrl}?vsn=2.0.0`), 401);
  assert.equal(await upgradeStatus(`${server.websocketUrl}?user=alice&vsn=2.0.0`), 401);
  assert.equal(await upgradeStatus(`${server.websocketUrl}?vsn=2.0.0`, { protocols: ["phoenix"] }), 401);

  const socket = openSocket(t, server, { params: { user: "alice" }, reconnectAfterMs: () => 60000 });
  const error = await new Promise((resolve) => socket.onError(resolve));
  assert.ok(error, "the phoenix client reports an error");
  assert.equal(socket.isConnected(), false);
});

serverTest("a bad or expired token is refused with 403", server, async () => {
  const now = Math.floor(Date.now() / 1000);
  const good = mintToken("alice");
  const [body, sig] = good.split(".");
  const bad = {
    garbage: "not-a-token",
    "other secret": mintToken("alice", { secret: "another-secret-0123456789abcdef" }),
    "tampered signature": `${body}.${sig.slice(0, -2)}${sig.endsWith("AA") ? "BB" : "AA"}`,
    "tampered claims": `${Buffer.from(JSON.stringify({ sub: "root", exp: now + 3600 })).toString("base64url")}.${sig}`,
    expired: signToken({ sub: "alice", exp: now - 60 }),
    "no signature": body,
  };
  for (const [what, token] of Object.entries(bad)) {
    assert.equal(await upgradeStatus(`${server.websocketUrl}?token=${encodeURIComponent(token)}&vsn=2.0.0`), 403, `${what} in params`);
    assert.equal(await upgradeStatus(`${server.websocketUrl}?vsn=2.0.0`, { protocols: subprotocols(token) }), 403, `${what} as subprotocol`);
  }
  assert.equal(await upgradeStatus(`${server.websocketUrl}?token=${good}&vsn=1.0.0`), 403, "a good token with a bad vsn");
});

serverTest("a token signed with the documented format is accepted", server, async (t) => {
  const token = signToken({ sub: "dora", exp: Math.floor(Date.now() / 1000) + 600 });
  const socket = openSocket(t, server, { params: { token } });
  const channel = socket.channel("room:auth-signed", {});
  const presence = trackPresence(channel);
  await join(channel);
  assert.deepEqual(keysOf(await presence.until((l) => l.length === 1)), ["dora"]);
});
