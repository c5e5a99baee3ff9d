import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import {
  useServer, serverTest, openSocket, join, reply, pushOk, record, within, until, mintToken, SECRET,
} from "./server.mjs";

// Open mode, a server with a secret, and one that the restart tests stop and start on its database.
const open = useServer();
const secured = useServer({ secret: SECRET });
const durable = useServer();

// ---------------------------------------------------------------------------------------------------
// Positions and shapes

const EARTH_RADIUS_M = 6_371_008.8;
const RAD = Math.PI / 180;
const HOME = { lat: 48.8566, lon: 2.3522 };
/** Far from everything else: the sentinel fence that marks "all earlier events have arrived". */
const SENTINEL = { lat: -33.8688, lon: 151.2093 };

const round7 = (x) => Math.round(x * 1e7) / 1e7;

/** The position `north` and `east` metres away from `p`. */
function offset(p, north, east = 0) {
  return {
    lat: round7(p.lat + north / EARTH_RADIUS_M / RAD),
    lon: round7(p.lon + east / (EARTH_RADIUS_M * Math.cos(p.lat * RAD)) / RAD),
  };
}

/** Great-circle distance in metres (haversine, mean Earth radius). */
function distance(a, b) {
  const dLat = (b.lat - a.lat) * RAD;
  const dLon = (b.lon - a.lon) * RAD;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * RAD) * Math.cos(b.lat * RAD) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(h)));
}

function circle(center, radius) {
  return { type: "Point", coordinates: [center.lon, center.lat], radius };
}

/** A closed GeoJSON ring: the box `halfSide` metres around `center` (counter-clockwise). */
function boxRing(center, halfSide) {
  const sw = offset(center, -halfSide, -halfSide);
  const ne = offset(center, halfSide, halfSide);
  return [[sw.lon, sw.lat], [ne.lon, sw.lat], [ne.lon, ne.lat], [sw.lon, ne.lat], [sw.lon, sw.lat]];
}

function box(center, halfSide) {
  return { type: "Polygon", coordinates: [boxRing(center, halfSide)] };
}

let lastStamp = 0;
/**
 * A client timestamp as the protocol describes it (`performance.timeOrigin + performance.now()`),
 * strictly increasing and with a fraction; kept to multiples of 1/8 ms so it is exact in binary
 * and in microseconds.
 */
function stamp() {
  let v = Math.floor((performance.timeOrigin + performance.now()) * 8) / 8;
  if (v <= lastStamp) v = lastStamp + 0.125;
  if (Number.isInteger(v)) v += 0.125;
  lastStamp = v;
  return v;
}

function assertClose(actual, expected, tolerance, what) {
  assert.equal(typeof actual, "number", `${what}: ${JSON.stringify(actual)} is not a number`);
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what}: ${actual}, expected ${expected} ± ${tolerance}`);
}

/** The join reply counts fences and objects; a list of them is accepted as well. */
function countOf(v, what) {
  if (Array.isArray(v)) return v.length;
  assert.equal(typeof v, "number", `${what} in the join reply: ${JSON.stringify(v)}`);
  return v;
}

// ---------------------------------------------------------------------------------------------------
// Members of a tenant

let users = 0;

/**
 * Join `geo:<tenant>` on a connection of its own, recording `geofence_event`s and every ok join
 * reply (a rejoin after a reconnect adds one).
 */
async function member(t, server, tenant, joinParams = {}, socketParams = { user: `geo-user-${++users}` }) {
  const socket = openSocket(t, server, { params: socketParams });
  const channel = socket.channel(`geo:${tenant}`, joinParams);
  const events = record(channel, "geofence_event");
  const joins = [];
  const r = await reply(channel.join().receive("ok", (resp) => joins.push(resp)));
  if (r.status !== "ok") {
    channel.leave();
    throw new Error(`join geo:${tenant} failed: ${r.status} ${JSON.stringify(r.response)}`);
  }
  return { socket, channel, events, joins, joined: r.response };
}

/** Move `id` to `p` with a fresh ts; resolve with the position sent `{lat, lon, ts}`. */
async function move(m, id, p, extra = {}) {
  const ts = stamp();
  const payload = { id, lat: p.lat, lon: p.lon, ts, ...extra };
  assert.deepEqual(await pushOk(m.channel, "location", payload), {}, `reply to location ${JSON.stringify(payload)}`);
  return { lat: p.lat, lon: p.lon, ts };
}

/** The event a subscriber should receive for `object` at `pos` (a `move` result). */
function ev(fence, object, event, pos) {
  return { fence, object, event, lat: pos.lat, lon: pos.lon, ts: pos.ts };
}

async function createSentinel(m) {
  await pushOk(m.channel, "fence_create", { id: "sentinel", geometry: circle(SENTINEL, 1000) });
}

let probes = 0;
/**
 * Move a fresh probe object into the sentinel fence and wait until every subscriber in `subs` has
 * its `enter`: events of a tenant arrive in order, so every event caused before has arrived too.
 */
async function settle(mover, ...subs) {
  const id = `probe-${++probes}`;
  await move(mover, id, SENTINEL);
  for (const s of subs) {
    await within(5000, s.events.waitFor((e) => e.object === id), `the sentinel enter of ${id}; got ${JSON.stringify(s.events.items)}`);
  }
}

/** The events a subscriber got, without the probes' (optionally from index `from`). */
function real(sub, from = 0) {
  return sub.events.items.slice(from).filter((e) => !String(e.object).startsWith("probe-"));
}

/** Events sorted into a canonical order, for events of one update whose order is not specified. */
function sorted(events) {
  return [...events].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
}

async function refused(m, event, payload, pattern, what = JSON.stringify(payload).slice(0, 120)) {
  const r = await reply(m.channel.push(event, payload));
  assert.equal(r.status, "error", `${event} ${what} should be refused, got ${r.status} ${JSON.stringify(r.response)}`);
  assert.equal(typeof r.response?.reason, "string", `${event} ${what}: error reply ${JSON.stringify(r.response)} has a reason`);
  assert.match(r.response.reason, pattern, `${event} ${what}: reason ${JSON.stringify(r.response.reason)}`);
  return r.response.reason;
}

const FENCE_KEYS = new Set(["id", "name", "geometry", "roam", "meta", "watch", "detect", "dwell"]);

/** A fence "as stored" has what was sent, and documented defaults at most for the rest. */
function assertStored(stored, sent, what = sent.id) {
  assert.equal(typeof stored, "object", `${what}: stored fence ${JSON.stringify(stored)}`);
  for (const [k, v] of Object.entries(sent)) assert.deepEqual(stored[k], v, `${what}: stored ${k}`);
  for (const k of Object.keys(stored)) {
    assert.ok(FENCE_KEYS.has(k), `${what}: unexpected member ${k} in ${JSON.stringify(stored)}`);
    if (k in sent || stored[k] === null) continue;
    if (k === "watch") assert.deepEqual(stored.watch, "all", `${what}: default watch`);
    else if (k === "detect") {
      const expected = sent.roam ? ["enter", "exit"] : ["enter", "exit", "cross"];
      if (sent.dwell) expected.push("dwell");
      assert.deepEqual([...stored.detect].sort(), expected.sort(), `${what}: default detect`);
    } else assert.fail(`${what}: ${k} ${JSON.stringify(stored[k])} was not sent and has no default`);
  }
}

async function objectFences(m, id) {
  const o = await pushOk(m.channel, "object", { id });
  assert.ok(Array.isArray(o.fences), `object ${id}: ${JSON.stringify(o)}`);
  return [...o.fences].sort();
}

// ---------------------------------------------------------------------------------------------------
// Fences

serverTest("fences: create circle, polygon with a hole and multipolygon; list in pages; update; delete; errors", open, async (t) => {
  const admin = await member(t, open, "crud");
  assert.equal(countOf(admin.joined.fences, "fences"), 0);
  assert.equal(countOf(admin.joined.objects, "objects"), 0);

  const donutAt = offset(HOME, 0, 5000);
  const multiA = offset(HOME, 5000, 0);
  const multiB = offset(HOME, 5000, 3000);
  const fences = [
    { id: "c-circle", name: "Depot", geometry: circle(HOME, 250), meta: { zone: 3, tags: ["a"] } },
    { id: "c-donut", geometry: { type: "Polygon", coordinates: [boxRing(donutAt, 1000), boxRing(donutAt, 300).reverse()] } },
    {
      id: "c-multi",
      geometry: { type: "MultiPolygon", coordinates: [[boxRing(multiA, 200)], [boxRing(multiB, 200)]] },
      watch: "all",
      detect: ["enter", "exit"],
    },
    { id: "c-Zeta", geometry: circle(offset(HOME, -9000), 100) },
  ];
  const stored = {};
  for (const f of fences) {
    const r = await pushOk(admin.channel, "fence_create", f);
    assert.deepEqual(Object.keys(r), ["fence"], `fence_create ${f.id} reply`);
    assertStored(r.fence, f);
    stored[f.id] = r.fence;
  }

  // Which fences contain what: the hole is outside, the ring around it inside, the second polygon counts.
  const sub = await member(t, open, "crud", { fences: "*" });
  const mover = await member(t, open, "crud");
  const inCircle = await move(mover, "in-circle", offset(HOME, 50));
  const inHole = await move(mover, "in-hole", donutAt);
  await move(mover, "in-ring", offset(donutAt, 600));
  await move(mover, "in-multi", multiB);
  await move(mover, "nowhere", offset(HOME, 20000));
  assert.deepEqual(await objectFences(mover, "in-circle"), ["c-circle"]);
  assert.deepEqual(await objectFences(mover, "in-hole"), [], "a point in the hole is outside the polygon");
  assert.deepEqual(await objectFences(mover, "in-ring"), ["c-donut"]);
  assert.deepEqual(await objectFences(mover, "in-multi"), ["c-multi"], "a point in the second polygon is inside");
  assert.deepEqual(await objectFences(mover, "nowhere"), []);
  const enters = await within(5000, sub.events.waitCount(3), "the three enters");
  assert.deepEqual(sorted(enters).map((e) => [e.fence, e.object, e.event]), [
    ["c-circle", "in-circle", "enter"], ["c-donut", "in-ring", "enter"], ["c-multi", "in-multi", "enter"],
  ]);

  const later = await member(t, open, "crud");
  assert.equal(countOf(later.joined.fences, "fences"), 4);
  assert.equal(countOf(later.joined.objects, "objects"), 5);

  // Pages in byte order ("Z" < "c").
  const ids = (page) => page.fences.map((f) => f.id);
  const all = await pushOk(admin.channel, "fence_list", {});
  assert.deepEqual(ids(all), ["c-Zeta", "c-circle", "c-donut", "c-multi"]);
  assert.equal(all.more, false);
  assert.deepEqual(all.fences, ["c-Zeta", "c-circle", "c-donut", "c-multi"].map((id) => stored[id]), "listed as stored");
  const p1 = await pushOk(admin.channel, "fence_list", { limit: 2 });
  assert.deepEqual([ids(p1), p1.more], [["c-Zeta", "c-circle"], true]);
  const p2 = await pushOk(admin.channel, "fence_list", { after: "c-circle", limit: 2 });
  assert.deepEqual([ids(p2), p2.more], [["c-donut", "c-multi"], false]);
  const p3 = await pushOk(admin.channel, "fence_list", { after: "c-d", limit: 1 });
  assert.deepEqual([ids(p3), p3.more], [["c-donut"], true], "after need not be an existing id");
  const p4 = await pushOk(admin.channel, "fence_list", { after: "c-multi" });
  assert.deepEqual([ids(p4), p4.more], [[], false]);

  // Update replaces the fence (no name, no meta any more) and re-evaluates the objects already there.
  const updated = { id: "c-circle", geometry: circle(donutAt, 100) };
  const before = stamp();
  const u = await pushOk(admin.channel, "fence_update", updated);
  const after = stamp();
  assert.deepEqual(Object.keys(u), ["fence"]);
  assertStored(u.fence, updated);
  assert.equal(u.fence.name ?? undefined, undefined, "the update replaced the name");
  assert.equal(u.fence.meta ?? undefined, undefined, "the update replaced the meta");
  const [exit, enter] = await within(5000, sub.events.waitCount(5), "the update's exit and enter")
    .then((items) => sorted(items.slice(3)));
  // The ts of an event caused by a fence change: the object's position's ts, or the server's time.
  for (const [e, pos] of [[exit, inCircle], [enter, inHole]]) {
    assert.ok(e.ts === pos.ts || (e.ts >= before - 5 && e.ts <= after + 5), `ts of ${JSON.stringify(e)}`);
  }
  assert.deepEqual(exit, { ...ev("c-circle", "in-circle", "exit", inCircle), ts: exit.ts });
  assert.deepEqual(enter, { ...ev("c-circle", "in-hole", "enter", inHole), ts: enter.ts });
  assert.deepEqual(await objectFences(mover, "in-circle"), []);
  assert.deepEqual(await objectFences(mover, "in-hole"), ["c-circle"]);
  const listed = await pushOk(admin.channel, "fence_list", { after: "c-Zeta", limit: 1 });
  assert.deepEqual(listed, { fences: [u.fence], more: true });

  // Delete sends nothing; creating the fence again evaluates the objects as for a new fence.
  assert.deepEqual(await pushOk(admin.channel, "fence_delete", { id: "c-circle" }), {});
  assert.deepEqual(ids(await pushOk(admin.channel, "fence_list", {})), ["c-Zeta", "c-donut", "c-multi"]);
  assert.deepEqual(await objectFences(mover, "in-hole"), []);
  await pushOk(admin.channel, "fence_create", { id: "c-circle", geometry: circle(donutAt, 100) });
  await within(5000, sub.events.waitCount(6), "the enter of the re-created fence");
  assert.deepEqual(sub.events.items.slice(5).map((e) => [e.fence, e.object, e.event]), [["c-circle", "in-hole", "enter"]],
    "deleting the fence sent nothing");

  // Errors.
  await refused(admin, "fence_create", { id: "c-donut", geometry: circle(HOME, 10) }, /c-donut|exist|already|duplicate/i);
  await refused(admin, "fence_update", { id: "nope", geometry: circle(HOME, 10) }, /nope|not found|no such|unknown|exist/i);
  await refused(admin, "fence_delete", { id: "nope" }, /nope|not found|no such|unknown|exist/i);
  const final = await pushOk(admin.channel, "fence_list", {});
  assert.deepEqual(ids(final), ["c-Zeta", "c-circle", "c-donut", "c-multi"]);
  assert.deepEqual(final.fences.find((f) => f.id === "c-donut"), stored["c-donut"], "the duplicate create changed nothing");
});

// ---------------------------------------------------------------------------------------------------
// Events

serverTest("enter and exit reach subscribers on other connections, by join param and by subscribe", open, async (t) => {
  const tenant = "enter-exit";
  const admin = await member(t, open, tenant);
  await pushOk(admin.channel, "fence_create", { id: "zone", geometry: circle(HOME, 200) });
  await pushOk(admin.channel, "fence_create", { id: "other", geometry: circle(offset(HOME, 0, 2000), 200) });
  await createSentinel(admin);

  const all = await member(t, open, tenant, { fences: "*" });
  const some = await member(t, open, tenant);
  assert.deepEqual(await pushOk(some.channel, "subscribe", { fences: ["zone", "sentinel"] }), {});
  const mover = await member(t, open, tenant);

  await move(mover, "truck-7", offset(HOME, 1000));
  const inside = await move(mover, "truck-7", offset(HOME, 50, 20));
  const atOther = await move(mover, "truck-7", offset(HOME, 10, 2000));
  await settle(mover, all, some);

  assert.equal(inside.ts % 1 !== 0, true, "the ts sent has a fraction");
  const [first, ...rest] = real(all);
  assert.deepEqual(first, ev("zone", "truck-7", "enter", inside), "enter, with the update's ts echoed");
  assert.deepEqual(sorted(rest), sorted([ev("zone", "truck-7", "exit", atOther), ev("other", "truck-7", "enter", atOther)]));
  assert.deepEqual(real(some), [ev("zone", "truck-7", "enter", inside), ev("zone", "truck-7", "exit", atOther)],
    "a subscriber of a list gets only those fences");
  assert.deepEqual(mover.events.items, [], "a member that subscribed to nothing gets no events");
  assert.deepEqual(admin.events.items, []);

  // After unsubscribe the fence's events stop; the others continue.
  assert.deepEqual(await pushOk(some.channel, "unsubscribe", { fences: ["zone"] }), {});
  const seenBySome = some.events.items.length;
  const seenByAll = all.events.items.length;
  const again = await move(mover, "truck-7", HOME);
  await settle(mover, all, some);
  assert.deepEqual(sorted(real(all, seenByAll)), sorted([ev("other", "truck-7", "exit", again), ev("zone", "truck-7", "enter", again)]));
  assert.deepEqual(real(some, seenBySome), [], "no events of an unsubscribed fence");
});

serverTest("a path through a polygon between two outside updates is a cross", open, async (t) => {
  const tenant = "cross";
  // Subscribed to "*" before the fences exist: "*" covers fences created later.
  const sub = await member(t, open, tenant, { fences: "*" });
  const admin = await member(t, open, tenant);
  await pushOk(admin.channel, "fence_create", { id: "square", geometry: box(HOME, 200) });
  await createSentinel(admin);

  await move(admin, "bus", offset(HOME, 0, -1000));
  const east = await move(admin, "bus", offset(HOME, 0, 1000));
  await move(admin, "bus", offset(HOME, 1000, 1000));
  await move(admin, "bus", offset(HOME, 1000, -1000));
  await settle(admin, sub);
  assert.deepEqual(real(sub), [ev("square", "bus", "cross", east)], "one cross, and only for the path through the square");
});

serverTest("dwell fires once for an object that stays, and not for one that leaves before", open, async (t) => {
  const tenant = "dwell";
  const admin = await member(t, open, tenant);
  const fence = { id: "stay", geometry: circle(HOME, 200), dwell: 1 };
  assertStored((await pushOk(admin.channel, "fence_create", fence)).fence, fence);
  await createSentinel(admin);
  const sub = await member(t, open, tenant, { fences: "*" });

  await move(admin, "stayer", offset(HOME, 1000));
  await move(admin, "leaver", offset(HOME, -1000));
  const entered = await move(admin, "stayer", offset(HOME, 30));
  const leaverIn = await move(admin, "leaver", offset(HOME, -30));
  await sleep(300);
  const leaverOut = await move(admin, "leaver", offset(HOME, -1000));

  const dwell = await within(2500 - (stamp() - entered.ts), sub.events.waitFor((e) => e.event === "dwell"), "the dwell event");
  const firedBy = stamp();
  assert.ok(dwell.ts >= entered.ts + 1000 - 5 && dwell.ts <= firedBy + 5,
    `dwell ts ${dwell.ts} is the server's time when it fired, 1 s after the enter at ${entered.ts}`);
  assert.deepEqual(dwell, { ...ev("stay", "stayer", "dwell", entered), ts: dwell.ts });

  // Past the second due time of the leaver's, and long enough for a repeated dwell to show.
  await sleep(Math.max(0, entered.ts + 2500 - stamp()));
  await settle(admin, sub);
  assert.deepEqual(real(sub), [
    ev("stay", "stayer", "enter", entered),
    ev("stay", "leaver", "enter", leaverIn),
    ev("stay", "leaver", "exit", leaverOut),
    dwell,
  ], "exactly one dwell, for the object that stayed");
}, { timeout: 10000 });

serverTest("a roaming fence around a moving object: another object approaches, then the centre leaves", open, async (t) => {
  const tenant = "roam";
  const admin = await member(t, open, tenant);
  await createSentinel(admin);
  const aHome = await move(admin, "a", HOME);
  await move(admin, "b", offset(HOME, 2000));
  const sub = await member(t, open, tenant, { fences: "*" });
  const fence = { id: "near-a", roam: { object: "a", radius: 100 } };
  assertStored((await pushOk(admin.channel, "fence_create", fence)).fence, fence);

  await move(admin, "b", offset(HOME, 500));
  const bNear = await move(admin, "b", offset(HOME, 60, 10));
  const aAway = await move(admin, "a", offset(HOME, -1000));
  await settle(admin, sub);

  const events = real(sub);
  assert.equal(events.length, 2, `an enter and an exit: ${JSON.stringify(events)}`);
  const [enter, exit] = events;
  const { dist: enterDist, ...enterRest } = enter;
  assert.deepEqual(enterRest, { ...ev("near-a", "b", "enter", bNear), center: "a" });
  assertClose(enterDist, distance(aHome, bNear), 1, "dist at enter");
  // The exit is caused by a's update; it reports b's position and the ts of b's update that reported it.
  const { dist: exitDist, ...exitRest } = exit;
  assert.deepEqual(exitRest, { ...ev("near-a", "b", "exit", bNear), center: "a" },
    "the exit caused by a's update: b's position and its ts");
  assertClose(exitDist, distance(aAway, bNear), 1, "dist at exit");
});

serverTest("an update older than the last one is ignored and changes nothing", open, async (t) => {
  const tenant = "out-of-order";
  const admin = await member(t, open, tenant);
  await pushOk(admin.channel, "fence_create", { id: "zone", geometry: circle(HOME, 200) });
  await createSentinel(admin);
  const sub = await member(t, open, tenant, { fences: "*" });

  const newer = await move(admin, "o", offset(HOME, 1000), { speed: 2 });
  const old = { id: "o", lat: HOME.lat, lon: HOME.lon, ts: newer.ts - 5000.5 };
  assert.deepEqual(await pushOk(admin.channel, "location", old), { ignored: "out_of_order" });
  await settle(admin, sub);
  assert.deepEqual(real(sub), [], "no event from the ignored update");
  assert.deepEqual(await pushOk(admin.channel, "object", { id: "o" }),
    { id: "o", lat: newer.lat, lon: newer.lon, ts: newer.ts, speed: 2, props: {}, fences: [] });
  assert.deepEqual(await pushOk(admin.channel, "history", { id: "o" }),
    { id: "o", positions: [{ lat: newer.lat, lon: newer.lon, ts: newer.ts, speed: 2 }] });

  // The next update in order works as usual.
  const inside = await move(admin, "o", HOME);
  await settle(admin, sub);
  assert.deepEqual(real(sub), [ev("zone", "o", "enter", inside)]);
});

serverTest("a locations batch applies each update in order and reports the ones it refused", open, async (t) => {
  const tenant = "batch";
  const admin = await member(t, open, tenant);
  await pushOk(admin.channel, "fence_create", { id: "zone", geometry: circle(HOME, 200) });
  await createSentinel(admin);
  const sub = await member(t, open, tenant, { fences: "*" });

  const base = stamp();
  const away = offset(HOME, 1000);
  const updates = [
    { id: "g1", lat: away.lat, lon: away.lon, ts: base },
    { id: "g1", lat: HOME.lat, lon: HOME.lon, ts: base + 1.5 },
    { id: "g2", lat: 95, lon: 0, ts: base },
    { id: "g1", lat: away.lat, lon: away.lon, ts: base + 0.5 },
    { id: "g2", lat: HOME.lat, lon: HOME.lon, ts: base + 2 },
  ];
  const r = await pushOk(admin.channel, "locations", { updates });
  assert.equal(r.applied, 3, JSON.stringify(r));
  assert.equal(r.ignored, 1, "the older g1 update is ignored");
  assert.equal(r.errors.length, 1);
  assert.equal(r.errors[0].index, 2);
  assert.match(r.errors[0].reason, /out of range/);
  await settle(admin, sub);
  assert.deepEqual(sorted(real(sub)), sorted([
    ev("zone", "g1", "enter", updates[1]),
    ev("zone", "g2", "enter", updates[4]),
  ]));
  await refused(admin, "locations", { updates: [] }, /1 to 1000 updates/);
  await refused(admin, "locations", { updates: {} }, /updates/);
});

serverTest("a live query reports objects entering, moving in and leaving it, and follows its own moves", open, async (t) => {
  const tenant = "live-query";
  const mover = await member(t, open, tenant);
  const watcher = await member(t, open, tenant);
  const seen = [];
  for (const ev of ["key_entered", "key_moved", "key_exited"]) {
    watcher.channel.on(ev, (p) => seen.push({ ev, ...p }));
  }
  const inside = await move(mover, "q1", offset(HOME, 50));
  await move(mover, "q2", offset(HOME, 5000));
  const r = await pushOk(watcher.channel, "query", { key: "near-home", lat: HOME.lat, lon: HOME.lon, radius: 300 });
  assert.deepEqual(r.objects.map((o) => o.id), ["q1"], "the reply lists what is inside");
  assert.equal(r.more, false);
  assertClose(r.objects[0].dist, distance(HOME, inside), 1, "dist in the reply");

  const q2in = await move(mover, "q2", offset(HOME, -100));
  const q1moved = await move(mover, "q1", offset(HOME, 60));
  const q1out = await move(mover, "q1", offset(HOME, 2000));
  await until(() => seen.length >= 3, 5000, () => `three query events, got ${JSON.stringify(seen)}`);
  assert.deepEqual(seen.map((e) => [e.ev, e.id]), [["key_entered", "q2"], ["key_moved", "q1"], ["key_exited", "q1"]]);
  for (const [e, p] of [[seen[0], q2in], [seen[1], q1moved], [seen[2], q1out]]) {
    assert.equal(e.query, "near-home");
    assert.deepEqual([e.lat, e.lon, e.ts], [p.lat, p.lon, p.ts]);
    assertClose(e.dist, distance(HOME, p), 1, `dist of ${e.ev}`);
  }
  // Moving the query onto q1 and away from q2 reports both changes.
  seen.length = 0;
  const moved = await pushOk(watcher.channel, "query", { key: "near-home", lat: q1out.lat, lon: q1out.lon, radius: 300 });
  assert.deepEqual(moved.objects.map((o) => o.id), ["q1"]);
  await until(() => seen.length >= 2, 5000, () => `two query events, got ${JSON.stringify(seen)}`);
  assert.deepEqual(seen.map((e) => [e.ev, e.id]).sort(), [["key_entered", "q1"], ["key_exited", "q2"]]);
  // Once cancelled, the query reports nothing more.
  assert.deepEqual(await pushOk(watcher.channel, "query_cancel", { key: "near-home" }), {});
  seen.length = 0;
  await move(mover, "q1", offset(q1out, 10));
  await pushOk(mover.channel, "object", { id: "q1" });
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.deepEqual(seen, [], "a cancelled query reports nothing");
  await refused(watcher, "query_cancel", { key: "near-home" }, /no live query/);
  await refused(watcher, "query", { key: "k", lat: 0, lon: 0, radius: 0 }, /radius/);
  for (let i = 0; i < 10; i++) await pushOk(watcher.channel, "query", { key: `k${i}`, lat: 0, lon: 0, radius: 10 });
  await refused(watcher, "query", { key: "k10", lat: 0, lon: 0, radius: 10 }, /at most 10 live queries/);
});

// ---------------------------------------------------------------------------------------------------
// Queries

serverTest("queries: nearby, within, object, history", open, async (t) => {
  const tenant = "queries";
  const m = await member(t, open, tenant);
  await pushOk(m.channel, "fence_create", { id: "qz", geometry: circle(HOME, 30) });
  const q10 = await move(m, "q-10", offset(HOME, 10), { speed: 3.5, heading: 90, props: { kind: "bike", n: 1 } });
  const q50 = await move(m, "q-50", offset(HOME, 0, 50));
  const q200 = await move(m, "q-200", offset(HOME, -200));
  await move(m, "q-far", offset(HOME, 5000));

  const near = (id, p) => ({ id, lat: p.lat, lon: p.lon, ts: p.ts });
  const checkNearby = (got, expected, what) => {
    assert.deepEqual(got.objects.map(({ dist, ...rest }) => rest), expected.map(([id, p]) => near(id, p)), what);
    got.objects.forEach((o, i) => assertClose(o.dist, distance(HOME, expected[i][1]), 0.5, `${what}: dist of ${o.id}`));
  };
  const everything = await pushOk(m.channel, "nearby", { lat: HOME.lat, lon: HOME.lon, radius: 300 });
  assert.deepEqual(Object.keys(everything), ["objects"]);
  checkNearby(everything, [["q-10", q10], ["q-50", q50], ["q-200", q200]], "nearby, nearest first");
  checkNearby(await pushOk(m.channel, "nearby", { lat: HOME.lat, lon: HOME.lon, radius: 300, limit: 2 }),
    [["q-10", q10], ["q-50", q50]], "nearby with limit 2");
  checkNearby(await pushOk(m.channel, "nearby", { lat: HOME.lat, lon: HOME.lon, radius: 5 }), [], "nearby, nothing that close");

  assert.deepEqual(await pushOk(m.channel, "within", { geometry: box(HOME, 100) }),
    { objects: [near("q-10", q10), near("q-50", q50)], more: false });
  assert.deepEqual(await pushOk(m.channel, "within", { geometry: box(HOME, 100), limit: 1 }),
    { objects: [near("q-10", q10)], more: true });
  assert.deepEqual(await pushOk(m.channel, "within", { geometry: circle(HOME, 250) }),
    { objects: [near("q-10", q10), near("q-200", q200), near("q-50", q50)], more: false }, "by id, in byte order");

  assert.deepEqual(await pushOk(m.channel, "object", { id: "q-10" }),
    { id: "q-10", lat: q10.lat, lon: q10.lon, ts: q10.ts, speed: 3.5, heading: 90, props: { kind: "bike", n: 1 }, fences: ["qz"] });
  assert.deepEqual(await pushOk(m.channel, "object", { id: "q-50" }),
    { id: "q-50", lat: q50.lat, lon: q50.lon, ts: q50.ts, props: {}, fences: [] });
  await refused(m, "object", { id: "nobody" }, /nobody|not found|no such|unknown/i);

  // History: oldest first; a limit keeps the latest positions. Props absent: unchanged.
  const path = [];
  path.push(await move(m, "q-h", offset(HOME, 1000), { props: { a: 1 } }));
  path.push(await move(m, "q-h", offset(HOME, 1010), { speed: 1.5 }));
  path.push(await move(m, "q-h", offset(HOME, 1020), { speed: 2.25, heading: 359.5 }));
  path.push(await move(m, "q-h", offset(HOME, 1030)));
  assert.deepEqual((await pushOk(m.channel, "object", { id: "q-h" })).props, { a: 1 }, "props kept when absent");
  path.push(await move(m, "q-h", offset(HOME, 1040), { heading: 0, props: { b: 2 } }));
  assert.deepEqual((await pushOk(m.channel, "object", { id: "q-h" })).props, { b: 2 }, "props replaced");
  const positions = [
    { ...path[0] },
    { ...path[1], speed: 1.5 },
    { ...path[2], speed: 2.25, heading: 359.5 },
    { ...path[3] },
    { ...path[4], heading: 0 },
  ];
  assert.deepEqual(await pushOk(m.channel, "history", { id: "q-h" }), { id: "q-h", positions });
  assert.deepEqual(await pushOk(m.channel, "history", { id: "q-h", limit: 2 }), { id: "q-h", positions: positions.slice(3) });
});

// ---------------------------------------------------------------------------------------------------
// Watch filters

serverTest("fences watching ids or properties report only the objects they watch", open, async (t) => {
  const tenant = "watch";
  const admin = await member(t, open, tenant);
  const byIds = { id: "by-ids", geometry: circle(HOME, 300), watch: { ids: ["w-1", "w-3"] } };
  const byProps = { id: "by-props", geometry: circle(HOME, 300), watch: { props: { kind: "truck", electric: true, axles: 3 } } };
  assertStored((await pushOk(admin.channel, "fence_create", byIds)).fence, byIds);
  assertStored((await pushOk(admin.channel, "fence_create", byProps)).fence, byProps);
  await createSentinel(admin);
  const sub = await member(t, open, tenant, { fences: "*" });

  const objects = {
    "w-1": { kind: "truck", electric: true, axles: 3 },
    "w-2": { kind: "truck", electric: true, axles: 3 },
    "w-3": { kind: "truck", electric: false, axles: 3 },
    "w-4": { kind: "van" },
    "w-5": { kind: "truck", electric: true },
    "w-6": { kind: "truck", electric: "true", axles: 3 },
    "w-7": { kind: "truck", electric: true, axles: 3, colour: "red" },
  };
  // Properties set outside; the move inside leaves them unchanged.
  for (const [id, props] of Object.entries(objects)) await move(admin, id, offset(HOME, 2000), { props });
  const at = {};
  for (const id of Object.keys(objects)) at[id] = await move(admin, id, offset(HOME, 10));
  await settle(admin, sub);
  assert.deepEqual(sorted(real(sub)), sorted([
    ev("by-ids", "w-1", "enter", at["w-1"]),
    ev("by-ids", "w-3", "enter", at["w-3"]),
    ev("by-props", "w-1", "enter", at["w-1"]),
    ev("by-props", "w-2", "enter", at["w-2"]),
    ev("by-props", "w-7", "enter", at["w-7"]),
  ]));
});

// ---------------------------------------------------------------------------------------------------
// Bad input

serverTest("bad positions and fences are refused with a clear reason, and the server keeps serving", open, async (t) => {
  const tenant = "bad";
  const m = await member(t, open, tenant, { fences: "*" });
  const at = { lat: HOME.lat, lon: HOME.lon };
  // Every case is tried; the test then fails listing all the cases that were not refused clearly.
  const problems = [];
  const check = (...args) => refused(m, ...args).catch((err) => problems.push(err.message.split("\n")[0]));

  await check("location", { id: "b", lat: 91, lon: 0 }, /lat/, "lat 91");
  await check("location", { id: "b", lat: -90.5, lon: 0 }, /lat/, "lat -90.5");
  await check("location", { id: "b", lat: 0, lon: -181 }, /lon/, "lon -181");
  await check("location", { id: "b", lat: "NaN", lon: 0 }, /lat/, "lat \"NaN\"");
  await check("location", { id: "b", lat: 0, lon: "NaN" }, /lon/, "lon \"NaN\"");
  await check("location", { id: "b", lat: null, lon: 0 }, /lat/, "lat null");
  await check("location", { id: "b", lon: 0 }, /lat/, "no lat");
  await check("location", { ...at }, /\bid\b/, "no id");
  await check("location", { id: "", ...at }, /\bid\b/, "empty id");
  await check("location", { id: 7, ...at }, /\bid\b/, "numeric id");
  await check("location", { id: "x".repeat(129), ...at }, /\bid\b.*(128|long|bytes)|(128|long|bytes).*\bid\b/, "id of 129 bytes");
  await check("location", { id: "é".repeat(64) + "x", ...at }, /\bid\b/, "id of 129 bytes in 65 characters");
  await check("location", { id: "a\u0001b", ...at }, /\bid\b|control/, "id with a control character");
  await check("location", { id: "b", ...at, ts: Date.now() + 120_000 }, /ts is in the future/, "ts 2 minutes ahead");
  await check("location", { id: "b", ...at, ts: "now" }, /\bts\b/, "ts a string");
  await check("location", { id: "b", ...at, props: { blob: "x".repeat(1100) } }, /props/, "props over 1,024 bytes");
  await check("location", { id: "b", ...at, props: "kind=truck" }, /props/, "props a string");
  await check("location", { id: "b", ...at, speed: -1 }, /speed/, "speed -1");
  await check("location", { id: "b", ...at, heading: 360 }, /heading/, "heading 360");
  await check("object", { id: "b" }, /\bb\b|not found|no such|unknown/i, "the refused object was not stored");

  const near = [[2.35, 48.85], [2.36, 48.85]];
  await check("fence_create", { id: "f", geometry: { type: "Polygon", coordinates: [[...near, near[0]]] } }, /ring|position|vert|coordinates/i, "a ring of 3 positions");
  await check("fence_create", { id: "f", geometry: { type: "Polygon", coordinates: [near] } }, /ring|position|vert|coordinates/i, "a ring of 2 positions");
  await check("fence_create", { id: "f", geometry: { type: "LineString", coordinates: near } }, /LineString|type/, "a LineString");
  await check("fence_create", { id: "f", geometry: circle(HOME, 100), roam: { object: "a", radius: 100 } }, /geometry.*roam|roam.*geometry/s, "geometry and roam");
  await check("fence_create", { id: "f" }, /geometry|roam/, "neither geometry nor roam");
  await check("fence_create", { id: "f", geometry: circle(HOME, 0) }, /radius/, "radius 0");
  await check("fence_create", { id: "f", geometry: circle(HOME, -5) }, /radius/, "radius -5");
  await check("fence_create", { id: "f", geometry: { type: "Point", coordinates: [HOME.lon, HOME.lat] } }, /radius/, "a Point without radius");
  await check("fence_create", { id: "f", roam: { object: "a", radius: 0 } }, /radius/, "roam radius 0");
  await check("fence_create", { id: "f", geometry: circle(HOME, 100), detect: ["enter", "teleport"] }, /teleport|detect/, "detect teleport");
  await check("fence_create", { id: "f", geometry: circle(HOME, 100), detect: ["dwell"] }, /dwell/, "detect dwell without dwell seconds");
  await check("fence_create", { id: "f", geometry: circle(HOME, 100), dwell: 0 }, /dwell/, "dwell 0");
  await check("fence_create", { id: "x".repeat(129), geometry: circle(HOME, 100) }, /\bid\b/, "fence id of 129 bytes");
  await check("fence_create", { id: "f", geometry: { type: "Polygon", coordinates: [[[2.35, 48.85], [2.36, 48.85], [2.36, 91], [2.35, 48.85]]] } }, /lat|range|position/i, "a vertex at lat 91");
  await check("teleport", { id: "b" }, /teleport|unknown|event/i, "an unknown event");
  assert.deepEqual(await pushOk(m.channel, "fence_list", {}), { fences: [], more: false }, "no refused fence was stored");

  // Still serving on the same channel, and longest ids are accepted.
  const longId = "é".repeat(64);
  const f = await pushOk(m.channel, "fence_create", { id: "ok", geometry: circle(HOME, 100) });
  assert.equal(f.fence.id, "ok");
  const inside = await move(m, longId, HOME);
  const enter = await within(5000, m.events.waitFor(), "an enter after the refusals");
  assert.deepEqual(enter, ev("ok", longId, "enter", inside));
  const other = await member(t, open, tenant);
  assert.equal(countOf(other.joined.objects, "objects"), 1);
  assert.equal(countOf(other.joined.fences, "fences"), 1);
  assert.deepEqual(problems, [], `${problems.length} bad inputs were not refused with a clear reason:\n${problems.join("\n")}`);
});

// ---------------------------------------------------------------------------------------------------
// Authorization

serverTest("with a secret, grant tokens decide who moves which objects and who edits fences", secured, async (t) => {
  const tenant = "auth";
  const as = (user) => ({ token: mintToken(user) });
  const mover = await member(t, secured, tenant, { token: mintToken("alice", { geoMove: ["truck-*", "van-1"] }) }, as("alice"));
  for (const id of ["alice", "alice/phone", "truck-1", "truck-", "van-1"]) await move(mover, id, HOME);
  for (const id of ["bob", "alicex", "van-2", "truck", "bob/alice"]) {
    await refused(mover, "location", { id, lat: HOME.lat, lon: HOME.lon }, /not allowed|forbidden|unauthori[sz]ed|permission|may not|cannot|denied/i, `id ${id}`);
  }
  await refused(mover, "object", { id: "bob" }, /bob|not found|no such|unknown/i, "bob was not stored");
  await refused(mover, "fence_create", { id: "f", geometry: circle(HOME, 100) }, /admin|not allowed|forbidden|permission|denied/i, "without --geo-admin");

  // Any member lists, subscribes and queries.
  assert.deepEqual(await pushOk(mover.channel, "fence_list", {}), { fences: [], more: false });
  assert.deepEqual(await pushOk(mover.channel, "subscribe", { fences: "*" }), {});
  const near = await pushOk(mover.channel, "nearby", { lat: HOME.lat, lon: HOME.lon, radius: 10 });
  assert.deepEqual(near.objects.map((o) => o.id).sort(), ["alice", "alice/phone", "truck-", "truck-1", "van-1"]);

  // A plain token is a grant for the user's own objects only; --geo-admin edits fences.
  const plain = await member(t, secured, tenant, { token: mintToken("alice") }, as("alice"));
  await move(plain, "alice/watch", offset(HOME, 1000));
  await refused(plain, "location", { id: "truck-2", lat: HOME.lat, lon: HOME.lon }, /not allowed|forbidden|unauthori[sz]ed|permission|may not|cannot|denied/i, "truck-2 without a pattern");
  const admin = await member(t, secured, tenant, { token: mintToken("alice", { geoAdmin: true }) }, as("alice"));
  const fence = { id: "f", geometry: circle(HOME, 100) };
  assertStored((await pushOk(admin.channel, "fence_create", fence)).fence, fence);
  await refused(plain, "fence_delete", { id: "f" }, /admin|not allowed|forbidden|permission|denied/i, "delete without --geo-admin");
  await refused(plain, "fence_update", { id: "f", geometry: circle(HOME, 50) }, /admin|not allowed|forbidden|permission|denied/i, "update without --geo-admin");
  const enters = await within(5000, mover.events.waitCount(5), "the enters of the objects already inside");
  assert.deepEqual(enters.map((e) => e.object).sort(), ["alice", "alice/phone", "truck-", "truck-1", "van-1"]);
  // "*" matches every id.
  const anyone = await member(t, secured, tenant, { token: mintToken("bob", { geoMove: ["*"] }) }, as("bob"));
  await move(anyone, "bob", HOME);
  await move(anyone, "alice", offset(HOME, 5));

  // The grant token must name the socket's user.
  const socket = openSocket(t, secured, { params: as("alice") });
  const r = await reply(socket.channel(`geo:${tenant}`, { token: mintToken("bob", { geoAdmin: true }) }).join());
  assert.equal(r.status, "error", `a join with bob's grant on alice's socket: ${JSON.stringify(r.response)}`);
  assert.match(r.response.reason, /grant|token|user/i);
  const bogus = await reply(openSocket(t, secured, { params: as("alice") }).channel(`geo:${tenant}`, { token: "not-a-token" }).join());
  assert.equal(bogus.status, "error", "a join with a malformed grant");
  assert.deepEqual((await pushOk(admin.channel, "fence_list", {})).fences.map((x) => x.id), ["f"]);
});

// ---------------------------------------------------------------------------------------------------
// Restarts

/**
 * Create a fence, move `car` in and see the enter, stop the server with `signal` and start it on the
 * same database; the subscriber reconnects by itself. Moving inside again sends no second enter,
 * leaving sends exit.
 */
async function enterSurvivesRestart(t, tenant, signal) {
  const admin = await member(t, durable, tenant);
  const fence = { id: "zone", geometry: circle(HOME, 200), name: "zone" };
  const stored = (await pushOk(admin.channel, "fence_create", fence)).fence;
  await createSentinel(admin);
  const sub = await member(t, durable, tenant, { fences: "*" });
  await move(admin, "car", offset(HOME, 1000));
  const inside = await move(admin, "car", offset(HOME, 20));
  await within(5000, sub.events.waitFor((e) => e.object === "car"), "the enter before the restart");
  assert.deepEqual(sub.events.items, [ev("zone", "car", "enter", inside)]);
  admin.socket.disconnect();

  const status = await durable.stop(signal);
  if (signal === "SIGTERM") assert.deepEqual(status, { code: 0, signal: null }, "SIGTERM drains and exits 0");
  else assert.equal(status.signal, "SIGKILL");
  await durable.start();

  await until(() => sub.joins.length >= 2, 10000, "the subscriber to rejoin after the restart");
  const seen = sub.events.items.length;
  const mover = await member(t, durable, tenant);
  assert.equal(countOf(mover.joined.fences, "fences"), 2);
  const list = await pushOk(mover.channel, "fence_list", {});
  assert.deepEqual([list.fences.map((f) => f.id), list.more], [["sentinel", "zone"], false]);
  assert.deepEqual(list.fences[1], stored, "the fence survived the restart as stored");
  if (signal === "SIGTERM") {
    assert.deepEqual(await pushOk(mover.channel, "object", { id: "car" }),
      { id: "car", lat: inside.lat, lon: inside.lon, ts: inside.ts, props: {}, fences: ["zone"] }, "the last position was written at shutdown");
  }

  await move(mover, "car", offset(HOME, -20));
  const out = await move(mover, "car", offset(HOME, -1000));
  await settle(mover, sub);
  assert.deepEqual(real(sub, seen), [ev("zone", "car", "exit", out)], "no second enter after the restart, and the exit");
}

serverTest("after a SIGTERM restart an object inside stays inside: no second enter", durable, async (t) => {
  await enterSurvivesRestart(t, "restart-term", "SIGTERM");
}, { timeout: 25000 });

serverTest("after a SIGKILL a delivered enter is not repeated", durable, async (t) => {
  await enterSurvivesRestart(t, "restart-kill", "SIGKILL");
}, { timeout: 25000 });
