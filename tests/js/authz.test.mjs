// The authorization matrix, through the real clients (phoenix for rooms and geofence tenants, yjs +
// y-websocket for documents). One table per topic family says how a client of that family is opened
// and observed, and what an authorized client does there; every bad credential is tried on every
// family, and every refused client must get an error AND nothing of what authorized clients produce
// right after. A new family is one more entry in FAMILIES (and, for rules inside the channel, in
// CHANNEL_RULES).
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import WebSocket from "ws";
import {
  useServer, serverTest, openSocket, join, reply, pushOk, record, trackPresence, keysOf, within, until,
  RawClient, upgradeRefusal, mintToken, signToken, SECRET,
} from "./server.mjs";

const server = useServer({ secret: SECRET });
// Each WebsocketProvider and phoenix Socket here listens for the process's "exit".
process.setMaxListeners(128);

/** How long a refused client keeps listening after the authorized clients saw everything. */
const QUIET_MS = 600;

const nowSecs = () => Math.floor(Date.now() / 1000);

/** Replace the claims of a validly signed token, keeping its signature. */
function withClaims(token, claims) {
  return `${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${token.split(".")[1]}`;
}

/** Flip one character of the signature. */
function flipSignature(token) {
  const [body, sig] = token.split(".");
  return `${body}.${sig[0] === "A" ? "B" : "A"}${sig.slice(1)}`;
}

/**
 * Bad socket credentials: each is refused at the upgrade with `status` and a body matching `reason`.
 * `token` is null for "no token at all" (a `user` parameter alone names nobody with a secret set).
 */
const BAD_CREDENTIALS = [
  { what: "missing", token: () => null, status: 401, reason: /token is required/ },
  { what: "malformed", token: () => "not-a-token", status: 403, reason: /invalid token/ },
  { what: "malformed (three parts)", token: () => `${mintToken("mallory")}.x`, status: 403, reason: /invalid token/ },
  { what: "expired", token: () => signToken({ sub: "mallory", exp: nowSecs() - 5 }), status: 403, reason: /expired/ },
  { what: "tampered signature", token: () => flipSignature(mintToken("mallory")), status: 403, reason: /invalid token/ },
  {
    what: "tampered payload (another user, same signature)",
    token: () => withClaims(mintToken("mallory"), { sub: "alice", exp: nowSecs() + 3600 }),
    status: 403,
    reason: /invalid token/,
  },
  {
    what: "signed with another secret",
    token: () => mintToken("mallory", { secret: "another-secret-0123456789abcdef" }),
    status: 403,
    reason: /invalid token/,
  },
];

/** How a phoenix client presents a token: as the `token` parameter or as `authToken` (a subprotocol). */
const PHOENIX_TRANSPORTS = [
  { via: "params", opts: (token) => ({ params: token === null ? { user: "alice" } : { token, user: "alice" } }) },
  { via: "authToken", opts: (token) => (token === null ? { params: { user: "alice" } } : { authToken: token }) },
];

/** The HTTP status in a `ws` client's "Unexpected server response: N" error, or null. */
function statusOf(error) {
  const m = /Unexpected server response: (\d+)/.exec(error?.message ?? "");
  return m ? Number(m[1]) : null;
}

/**
 * A phoenix client that tries to join `topic` and records everything the server ever sends it: every
 * message on the socket, and the ok replies of its join.
 */
function phoenixObserver(t, topic, socketOpts, joinParams = {}) {
  const socket = openSocket(t, server, { ...socketOpts, reconnectAfterMs: () => 200 });
  const received = [];
  const errors = [];
  let opened = false;
  socket.onOpen(() => { opened = true; });
  socket.onError((e) => errors.push(e));
  socket.onMessage((m) => received.push(m));
  const channel = socket.channel(topic, joinParams);
  channel.join().receive("ok", (r) => received.push({ event: "join ok", payload: r }));
  return {
    describe: () => `opened=${opened}, received ${JSON.stringify(received).slice(0, 500)}`,
    refusedWith: async () => {
      await until(() => errors.length > 0, 5000, "the connection error");
      return statusOf(errors[0]);
    },
    leaked: () => (opened ? ["the socket opened", ...received] : received),
  };
}

/**
 * Socket-level families: `observe` opens a real client of the family with `token` (the `via` variant)
 * and returns `{refusedWith(), leaked(), describe()}`; `produce` has authorized clients make history,
 * presence, messages or events there, and resolves once an authorized observer has seen them all.
 * `upgradeUrl` is where a raw upgrade tells the status and the reason.
 */
const FAMILIES = [
  {
    family: "room:<id>",
    transports: PHOENIX_TRANSPORTS,
    upgradeUrl: (token) => `${server.websocketUrl}?vsn=2.0.0${token === null ? "" : `&token=${encodeURIComponent(token)}`}`,
    observe: (t, name, token, via) => phoenixObserver(t, `room:${name}`, via.opts(token), { presence: true }),
    async produce(t, name) {
      const alice = openSocket(t, server, { params: { token: mintToken("alice") } }).channel(`room:${name}`, {});
      await join(alice);
      const bobSocket = openSocket(t, server, { authToken: mintToken("bob") });
      const bob = bobSocket.channel(`room:${name}`, {});
      const presence = trackPresence(bob);
      const msgs = record(bob, "new_msg");
      const typing = record(bob, "typing");
      const joined = await join(bob);
      const ack = await pushOk(alice, "new_msg", { body: "for members only", user: "mallory" });
      alice.push("typing", { typing: true }); // typing has no reply
      assert.equal((await within(5000, msgs.waitFor(), "the message")).user, "alice", "the token names the author");
      await within(5000, typing.waitFor(), "typing");
      assert.deepEqual(keysOf(await within(5000, presence.until((l) => l.length === 2), "presence")), ["alice", "bob"]);
      const history = await pushOk(bob, "history", { limit: 10 });
      assert.ok(history.messages.some((m) => m.seq === ack.seq), "members read history");
      assert.ok(Array.isArray(joined.messages));
    },
  },
  {
    family: "geo:<tenant>",
    transports: PHOENIX_TRANSPORTS,
    upgradeUrl: (token) => `${server.websocketUrl}?vsn=2.0.0${token === null ? "" : `&token=${encodeURIComponent(token)}`}`,
    observe: (t, name, token, via) => phoenixObserver(t, `geo:${name}`, via.opts(token), { fences: "*" }),
    async produce(t, name) {
      const admin = openSocket(t, server, { params: { token: mintToken("alice") } })
        .channel(`geo:${name}`, { token: mintToken("alice", { geoAdmin: true, geoMove: ["truck-*"] }) });
      await join(admin);
      const sub = openSocket(t, server, { params: { token: mintToken("bob") } }).channel(`geo:${name}`, { fences: "*" });
      const events = record(sub, "geofence_event");
      await join(sub);
      await pushOk(admin, "fence_create", { id: "zone", geometry: { type: "Point", coordinates: [2.35, 48.85], radius: 500 } });
      await pushOk(admin, "location", { id: "truck-1", lat: 48.85, lon: 2.35 });
      const e = await within(5000, events.waitFor(), "the enter");
      assert.deepEqual([e.fence, e.object, e.event], ["zone", "truck-1", "enter"]);
    },
  },
  {
    family: "/collab/<doc>",
    transports: [{ via: "params" }],
    upgradeUrl: (token) => `${server.collabUrl}/authz-raw${token === null ? "?user=alice" : `?token=${encodeURIComponent(token)}`}`,
    observe(t, name, token) {
      const c = yClient(t, name, token === null ? { user: "alice" } : { token, user: "alice" });
      const leaked = [];
      c.provider.on("sync", (s) => s && leaked.push("synced"));
      c.ydoc.on("update", () => leaked.push(`document update: ${JSON.stringify(c.text.toString())}`));
      c.awareness.on("change", ({ added }) => {
        const others = added.filter((id) => id !== c.ydoc.clientID);
        if (others.length) leaked.push(`awareness of ${others}`);
      });
      return {
        describe: () => `status ${c.provider.wsconnected ? "connected" : "not connected"}, ${JSON.stringify(leaked)}`,
        refusedWith: async () => {
          await until(() => c.errors.length > 0, 5000, "the connection error");
          return statusOf(c.errors[0]);
        },
        leaked: () => (c.opened ? ["the socket opened", ...leaked] : leaked),
      };
    },
    async produce(t, name) {
      const a = yClient(t, name, { token: mintToken("alice") });
      const b = yClient(t, name, { token: mintToken("bob") });
      a.awareness.setLocalStateField("user", { name: "alice" });
      a.text.insert(0, "for editors only");
      await until(() => b.text.toString() === "for editors only", 5000, "bob to see alice's text");
      await until(() => b.awareness.getStates().has(a.ydoc.clientID), 5000, "bob to see alice's awareness");
      const text = await fetch(`${server.httpUrl}/collab/${name}/text?token=${encodeURIComponent(mintToken("carol"))}`);
      assert.equal(await text.text(), "for editors only", "any user reads the text");
    },
  },
];

/** A y-websocket client of `doc` with these URL parameters, recording connection errors. */
function yClient(t, doc, params) {
  const ydoc = new Y.Doc();
  const provider = new WebsocketProvider(server.collabUrl, doc, ydoc, {
    WebSocketPolyfill: WebSocket,
    params,
    disableBc: true,
    maxBackoffTime: 300,
  });
  const c = { ydoc, provider, text: ydoc.getText("quill"), awareness: provider.awareness, errors: [], opened: false };
  provider.on("connection-error", (e) => c.errors.push(e));
  provider.on("status", ({ status }) => { if (status === "connected") c.opened = true; });
  t.after(() => {
    provider.destroy();
    ydoc.destroy();
  });
  return c;
}

let names = 0;
const fresh = (what) => `authz-${what}-${++names}`;

for (const f of FAMILIES) {
  serverTest(`${f.family}: every bad credential is refused at the upgrade with a status and a reason`, server, async () => {
    for (const bad of BAD_CREDENTIALS) {
      const { status, body } = await upgradeRefusal(f.upgradeUrl(bad.token()));
      assert.equal(status, bad.status, `${bad.what}: ${body}`);
      assert.match(body, bad.reason, `${bad.what}: reason`);
    }
  });

  serverTest(`${f.family}: a client refused for a bad credential gets no history, presence, messages or events`, server, async (t) => {
    const name = fresh("refused");
    const observers = [];
    for (const via of f.transports) {
      for (const bad of BAD_CREDENTIALS) {
        observers.push({ what: `${bad.what} via ${via.via}`, bad, o: f.observe(t, name, bad.token(), via) });
      }
    }
    for (const { what, bad, o } of observers) {
      assert.equal(await o.refusedWith(), bad.status, `${what}: the client's error names the status`);
    }
    await f.produce(t, name);
    await sleep(QUIET_MS);
    for (const { what, o } of observers) {
      assert.deepEqual(o.leaked(), [], `${what}: nothing may reach a refused client (${o.describe()})`);
    }
  }, { timeout: 30000 });
}

// ---------------------------------------------------------------------------------------------------
// Rules inside a channel, for a connection that did authenticate

/** A grant token for `user` that the server must refuse at the join, and why. */
const BAD_GRANTS = [
  { what: "expired", token: () => signToken({ sub: "alice", exp: nowSecs() - 5, geo_admin: true }), reason: /expired/ },
  { what: "tampered signature", token: () => flipSignature(mintToken("alice", { geoAdmin: true })), reason: /signature/ },
  {
    what: "tampered payload (geo_admin added)",
    token: () => withClaims(mintToken("alice"), { sub: "alice", exp: nowSecs() + 3600, geo_admin: true, geo_move: ["*"] }),
    reason: /signature/,
  },
  { what: "another user's", token: () => mintToken("bob", { geoAdmin: true, geoMove: ["*"] }), reason: /another user/ },
  { what: "malformed", token: () => "not-a-token", reason: /malformed/ },
  { what: "signed with another secret", token: () => mintToken("alice", { secret: "another-secret-0123456789abcdef", geoAdmin: true }), reason: /signature/ },
];

serverTest("geo:<tenant>: a join with a bad grant token is refused with a reason and gets no fences, objects or events", server, async (t) => {
  const tenant = fresh("grant");
  const refused = [];
  for (const bad of BAD_GRANTS) {
    const socket = openSocket(t, server, { params: { token: mintToken("alice") } });
    const channel = socket.channel(`geo:${tenant}`, { token: bad.token(), fences: "*" });
    const events = record(channel, "geofence_event");
    const r = await reply(channel.join());
    assert.equal(r.status, "error", `${bad.what}: ${JSON.stringify(r.response)}`);
    assert.deepEqual(Object.keys(r.response), ["reason"], `${bad.what}: the refusal carries a reason only`);
    assert.match(r.response.reason, /grant token/, bad.what);
    assert.match(r.response.reason, bad.reason, bad.what);
    const other = [];
    socket.onMessage((m) => { if (m.topic === `geo:${tenant}` && m.event !== "phx_reply") other.push(m); });
    refused.push({ bad, channel, events, other });
  }
  await FAMILIES.find((f) => f.family === "geo:<tenant>").produce(t, tenant);
  await sleep(QUIET_MS);
  for (const { bad, events, other } of refused) {
    assert.deepEqual(events.items, [], `${bad.what}: no geofence events`);
    assert.deepEqual(other, [], `${bad.what}: nothing on the topic but join refusals`);
  }
}, { timeout: 30000 });

/**
 * Pushes a member may not make, per family: `setup` joins the members it needs, `attempts` are the
 * refused pushes with the reason expected, `unchanged` checks afterwards that none of them had an
 * effect, and `observer` (a member's recorder) must have received nothing because of them.
 */
const CHANNEL_RULES = [
  {
    family: "geo:<tenant>",
    async setup(t, tenant) {
      const plain = openSocket(t, server, { params: { token: mintToken("alice") } }).channel(`geo:${tenant}`, {});
      await join(plain);
      const admin = openSocket(t, server, { params: { token: mintToken("carol") } })
        .channel(`geo:${tenant}`, { token: mintToken("carol", { geoAdmin: true }) });
      await join(admin);
      await pushOk(admin, "fence_create", { id: "zone", geometry: { type: "Point", coordinates: [2.35, 48.85], radius: 500 } });
      const sub = openSocket(t, server, { params: { token: mintToken("bob") } }).channel(`geo:${tenant}`, { fences: "*" });
      const events = record(sub, "geofence_event");
      await join(sub);
      await pushOk(admin, "location", { id: "carol", lat: 48.85, lon: 2.35 });
      await within(5000, events.waitFor((e) => e.object === "carol"), "carol's enter");
      return { as: plain, admin, events };
    },
    attempts: [
      ["location", { id: "bob", lat: 48.85, lon: 2.35 }, /not allowed/, "another user's object"],
      ["location", { id: "carol", lat: 10, lon: 10 }, /not allowed/, "moving another user's object out"],
      ["location", { id: "alicex", lat: 48.85, lon: 2.35 }, /not allowed/, "a name that only starts like the user's"],
      ["locations", { updates: [{ id: "truck-9", lat: 48.85, lon: 2.35 }] }, null, "a batch with an object not granted"],
      ["fence_create", { id: "mine", geometry: { type: "Point", coordinates: [2.35, 48.85], radius: 50 } }, /geo_admin/, "create without geo_admin"],
      ["fence_update", { id: "zone", geometry: { type: "Point", coordinates: [0, 0], radius: 50 } }, /geo_admin/, "update without geo_admin"],
      ["fence_delete", { id: "zone" }, /geo_admin/, "delete without geo_admin"],
    ],
    async unchanged({ as, admin, events }) {
      const list = await pushOk(as, "fence_list", {});
      assert.deepEqual(list.fences.map((f) => [f.id, f.geometry.coordinates]), [["zone", [2.35, 48.85]]], "fences unchanged");
      const near = await pushOk(admin, "nearby", { lat: 48.85, lon: 2.35, radius: 1000 });
      assert.deepEqual(near.objects.map((o) => o.id), ["carol"], "no object moved or created");
      assert.deepEqual(events.items.map((e) => [e.object, e.event]), [["carol", "enter"]], "no event caused");
    },
  },
  {
    family: "room:<id> (pushes on a room not joined)",
    async setup(t, room) {
      const member = openSocket(t, server, { params: { token: mintToken("bob") } }).channel(`room:${room}`, {});
      const msgs = record(member, "new_msg");
      await join(member);
      const ack = await pushOk(member, "new_msg", { body: "members only" });
      const raw = await RawClient.open(t, `${server.websocketUrl}?vsn=2.0.0&token=${mintToken("alice")}`);
      return { raw, room, msgs, ack, member };
    },
    rawAttempts: [
      ["history", { limit: 50 }, /unmatched topic/, "history without joining"],
      ["new_msg", { body: "sneaked in" }, /unmatched topic/, "a message without joining"],
      ["typing", { typing: true }, /unmatched topic/, "typing without joining"],
    ],
    async unchanged({ raw, room, msgs, ack, member }) {
      assert.deepEqual(msgs.items.map((m) => m.seq), [ack.seq], "nothing was broadcast");
      const history = await pushOk(member, "history", { limit: 50 });
      assert.deepEqual(history.messages.map((m) => m.body), ["members only"], "nothing was stored");
      const onTopic = raw.received.filter((m) => m[2] === `room:${room}` && m[3] !== "phx_reply");
      assert.deepEqual(onTopic, [], "the raw client got nothing of the room");
    },
  },
];

for (const rule of CHANNEL_RULES) {
  serverTest(`${rule.family}: a member's forbidden pushes are refused with a reason and change nothing`, server, async (t) => {
    const name = fresh("rules");
    const ctx = await rule.setup(t, name);
    for (const [event, payload, reason, what] of rule.attempts ?? []) {
      const r = await reply(ctx.as.push(event, payload));
      if (reason === null) {
        // A batch is answered ok as a whole, with each refused update listed.
        assert.equal(r.status, "ok", `${what}: ${JSON.stringify(r.response)}`);
        assert.equal(r.response.applied, 0, what);
        assert.match(r.response.errors?.[0]?.reason ?? "", /not allowed/, `${what}: ${JSON.stringify(r.response)}`);
      } else {
        assert.equal(r.status, "error", `${what}: ${JSON.stringify(r.response)}`);
        assert.match(r.response.reason, reason, what);
      }
    }
    let ref = 0;
    for (const [event, payload, reason, what] of rule.rawAttempts ?? []) {
      const msgRef = `r${++ref}`;
      ctx.raw.send([null, msgRef, `room:${ctx.room}`, event, payload]);
      const [, , , , r] = await ctx.raw.replyTo(msgRef);
      assert.equal(r.status, "error", `${what}: ${JSON.stringify(r)}`);
      assert.deepEqual(Object.keys(r.response), ["reason"], `${what}: the refusal carries a reason only`);
      assert.match(r.response.reason, reason, what);
    }
    await sleep(QUIET_MS);
    await rule.unchanged(ctx);
  });
}

serverTest("every family: the token, not the payload or the user parameter, names the user", server, async (t) => {
  const socket = openSocket(t, server, { params: { token: mintToken("alice"), user: "bob" } });
  const room = socket.channel(`room:${fresh("who")}`, { user: "bob" });
  const presence = trackPresence(room);
  await join(room);
  assert.deepEqual(keysOf(await presence.until((l) => l.length === 1)), ["alice"]);
  const geo = socket.channel(`geo:${fresh("who")}`, {});
  await join(geo);
  assert.deepEqual(await pushOk(geo, "location", { id: "alice", lat: 1, lon: 1 }), {}, "alice moves her own object");
  const r = await reply(geo.push("location", { id: "bob", lat: 1, lon: 1 }));
  assert.equal(r.status, "error", "the user parameter does not make alice bob");
  await pushOk(geo, "location", { id: "alice/phone", lat: 1, lon: 1 });

  // A user named inside alice's namespace does not own alice's object by its name.
  const slashed = openSocket(t, server, { params: { token: mintToken("alice/phone") } }).channel(geo.topic, {});
  await join(slashed);
  const s = await reply(slashed.push("location", { id: "alice/phone", lat: 2, lon: 2 }));
  assert.equal(s.status, "error", `user alice/phone moving alice's object alice/phone: ${JSON.stringify(s.response)}`);
  assert.match(s.response.reason, /not allowed/);
  const o = await pushOk(geo, "object", { id: "alice/phone" });
  assert.deepEqual([o.lat, o.lon], [1, 1], "alice's object did not move");
});
