// The workloads, written once and driven through either adapter, so both sides do the same thing.
//
// An adapter has `open()` → client and `cleanup()`. A client has:
//   connected()                  resolves once its connection is up
//   firstData(topic)             reads a topic's messages (firebase: a value read; Rusher: the room's join)
//   writer(topic) → {append, announce}
//                                append(msg) adds a message, announce(msg) replaces the latest one; both
//                                resolve on the server's acknowledgement
//   listen(topic, f)             f(msg) for each announced message; resolves once listening
//   geoWriter(tenant) → {place, move}
//                                place([{id, lat, lon}]) positions many objects, move({id, lat, lon}) one
//   geoQuery(tenant, circle, f)  f("entered" | "exited" | "moved", id) as objects cross the circle
//   close()
// Every sample is a duration in milliseconds from `performance.now()` in this process.

import { Countdown, pool, within } from "./async.mjs";
import { summarize } from "./stats.mjs";

/** How long one operation (a connect, an acknowledgement, a round's deliveries) may take. */
const OP_TIMEOUT_MS = 10000;
/** Clients opened or closed at once. */
const CONCURRENCY = 50;

/** Workload sizes: `full` for the benchmark, `tiny` for the test that keeps the harness from rotting. */
export const SCALES = {
  full: {
    connect: { count: 200, seed: 20, warmup: 3 },
    write: { count: 2000, warmup: 50 },
    fanout: [
      { listeners: 10, rounds: 100, warmup: 3 },
      { listeners: 100, rounds: 50, warmup: 3 },
      { listeners: 1000, rounds: 20, warmup: 3 },
    ],
    geo: [
      { listeners: 10, rounds: 100, warmup: 3, background: 0, radius: 1000 },
      { listeners: 10, rounds: 100, warmup: 3, background: 100, radius: 1000 },
    ],
    memory: { clients: 500 },
  },
  tiny: {
    connect: { count: 3, seed: 2, warmup: 1 },
    write: { count: 5, warmup: 1 },
    fanout: [{ listeners: 3, rounds: 2, warmup: 1 }],
    geo: [{ listeners: 2, rounds: 2, warmup: 1, background: 5, radius: 1000 }],
    memory: { clients: 5 },
  },
};

async function openConnected(adapter) {
  const c = adapter.open();
  await within(OP_TIMEOUT_MS, c.connected(), "a client to connect");
  return c;
}

function closeAll(clients) {
  return pool(clients, CONCURRENCY, (c) => within(OP_TIMEOUT_MS, c.close(), "a client to close"));
}

/**
 * (a) Connect: a new client until its connection is up (`open`), and until the first read of a topic
 * holding `seed` messages is answered (`first_data`). Clients are made one after another.
 */
export async function connect(adapter, { count, seed, warmup }) {
  const seeder = await openConnected(adapter);
  const w = await seeder.writer("connect");
  for (let i = 0; i < seed; i++) await within(OP_TIMEOUT_MS, w.append({ seq: i, body: `message ${i}` }), "a seed write");
  const open = [];
  const firstData = [];
  for (let i = 0; i < warmup + count; i++) {
    const t0 = performance.now();
    const c = adapter.open();
    await within(OP_TIMEOUT_MS, c.connected(), "a client to connect");
    const t1 = performance.now();
    await within(OP_TIMEOUT_MS, c.firstData("connect"), "a client's first data");
    const t2 = performance.now();
    await within(OP_TIMEOUT_MS, c.close(), "a client to close");
    if (i >= warmup) {
      open.push(t1 - t0);
      firstData.push(t2 - t0);
    }
  }
  await seeder.close();
  return { open: summarize(open), first_data: summarize(firstData) };
}

/** (b) Write → acknowledgement: one client appends `count` messages, one at a time. */
export async function write(adapter, { count, warmup }) {
  const c = await openConnected(adapter);
  const w = await c.writer("write");
  const samples = [];
  for (let i = 0; i < warmup + count; i++) {
    const t0 = performance.now();
    await within(OP_TIMEOUT_MS, w.append({ seq: i, body: `message ${i}` }), "a write's acknowledgement");
    if (i >= warmup) samples.push(performance.now() - t0);
  }
  await c.close();
  return { ack: summarize(samples) };
}

/**
 * (c) Fan-out: `listeners` clients listen to a topic, one more client announces a message per round;
 * `copy` is the time from the write call until each listener's callback, `every_copy` until the last
 * listener's of the round. A round waits for every copy (or the timeout, counted in `missing`).
 */
export async function fanout(adapter, { listeners, rounds, warmup }) {
  const topic = `fanout-${listeners}`;
  let current = null;
  const hear = (msg) => {
    if (current && msg.seq === current.seq) {
      current.copies.push(performance.now() - current.t0);
      current.countdown.hit();
    }
  };
  const clients = await pool(Array.from({ length: listeners }), CONCURRENCY, async () => {
    const c = await openConnected(adapter);
    await within(OP_TIMEOUT_MS, c.listen(topic, hear), "a listener to subscribe");
    return c;
  });
  const writer = await openConnected(adapter);
  const w = await writer.writer(topic);
  const copies = [];
  const everyCopy = [];
  let missing = 0;
  for (let seq = 0; seq < warmup + rounds; seq++) {
    current = { seq, copies: [], countdown: new Countdown(listeners), t0: performance.now() };
    const ack = w.announce({ seq, body: `round ${seq}` });
    const arrived = await current.countdown.wait(OP_TIMEOUT_MS);
    await within(OP_TIMEOUT_MS, ack, "an announcement's acknowledgement");
    if (seq >= warmup) {
      missing += listeners - arrived;
      copies.push(...current.copies);
      if (arrived === listeners) everyCopy.push(Math.max(...current.copies));
    }
  }
  current = null;
  await closeAll([...clients, writer]);
  return { listeners, copy: summarize(copies), every_copy: summarize(everyCopy), missing };
}

/** A reproducible sequence of numbers in [0, 1) (mulberry32), so both sides get the same points. */
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The point `metres` from `center` towards `bearing` degrees (flat-earth step, fine at city scale). */
export function offset(center, metres, bearing) {
  const b = (bearing * Math.PI) / 180;
  const lat = center.lat + (metres * Math.cos(b)) / 111320;
  const lon = center.lon + (metres * Math.sin(b)) / (111320 * Math.cos((center.lat * Math.PI) / 180));
  return { lat, lon };
}

/** The circle every geo listener watches: central Paris. */
export const GEO_CENTER = { lat: 48.8566, lon: 2.3522 };

/**
 * (d) Geo query update: `listeners` clients watch a circle of `radius` metres; `background` objects sit
 * 1.5 to 8 radii away; each round one object moves from 5 radii out to a random point inside, and
 * `enter` is the time from the write call until each listener reports it entered. Then it moves out
 * again and `exit` is timed the same way. A round waits for every listener (or the timeout, counted in
 * `missing`).
 */
export async function geo(adapter, { listeners, rounds, warmup, background, radius }) {
  const tenant = `geo-${background}`;
  const rand = random(7);
  const points = Array.from({ length: background }, (_, i) => ({
    id: `p${i}`,
    ...offset(GEO_CENTER, radius * (1.5 + 6.5 * rand()), 360 * rand()),
  }));
  const outside = { id: "mover", ...offset(GEO_CENTER, radius * 5, 0) };
  const writerClient = await openConnected(adapter);
  const w = await writerClient.geoWriter(tenant);
  await within(OP_TIMEOUT_MS, w.place([...points, outside]), "the objects to be placed");

  let current = null;
  const hear = (kind, id) => {
    if (current && id === outside.id && kind === current.kind) {
      current.samples.push(performance.now() - current.t0);
      current.countdown.hit();
    }
  };
  const clients = await pool(Array.from({ length: listeners }), CONCURRENCY, async () => {
    const c = await openConnected(adapter);
    await within(OP_TIMEOUT_MS, c.geoQuery(tenant, { ...GEO_CENTER, radius }, hear), "a geo query to start");
    return c;
  });
  const enter = [];
  const exit = [];
  let missing = 0;
  const step = async (kind, to, into, counted) => {
    current = { kind, samples: [], countdown: new Countdown(listeners), t0: performance.now() };
    const ack = w.move({ id: outside.id, ...to });
    const arrived = await current.countdown.wait(OP_TIMEOUT_MS);
    await within(OP_TIMEOUT_MS, ack, "a move's acknowledgement");
    if (counted) {
      missing += listeners - arrived;
      into.push(...current.samples);
    }
  };
  for (let round = 0; round < warmup + rounds; round++) {
    const inside = offset(GEO_CENTER, radius * 0.8 * rand(), 360 * rand());
    await step("entered", inside, enter, round >= warmup);
    await step("exited", outside, exit, round >= warmup);
  }
  current = null;
  await closeAll([...clients, writerClient]);
  return { listeners, background, radius, enter: summarize(enter), exit: summarize(exit), missing };
}
