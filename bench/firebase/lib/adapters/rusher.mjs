// The Rusher side: @rusher/client (over the unmodified phoenix client) against a rusher server. Nothing
// here needs Node (Node passes the `ws` class as `transport`), so esbuild bundles this file as the minimal
// Rusher app of the bundle-size figure.
//
// Every operation matches one of the firebase side (./firebase.mjs); see ../workloads.mjs for the contract.

import { RusherClient } from "@rusher/client";

let users = 0;

/**
 * Clients of the rusher at `url` (`ws://host:port`). Every room and tenant of the run is named with
 * `prefix`, so runs never see each other's data.
 */
export function rusherAdapter({ url, prefix, transport }) {
  return {
    open: () => new RusherSide(url, prefix, transport),
    /** Rusher keeps the run's rooms and tenants in its own database, which the run throws away. */
    async cleanup() {},
  };
}

class RusherSide {
  constructor(url, prefix, transport) {
    this.client = new RusherClient(url, { user: `bench-${++users}`, transport }).connect();
    this.prefix = prefix;
  }

  name(topic) {
    return `${this.prefix}-${topic}`;
  }

  /** Resolves once the socket is open. */
  connected() {
    return new Promise((resolve) => {
      if (this.client.state === "connected") return resolve();
      const off = this.client.onState((state) => {
        if (state === "connected") {
          off();
          resolve();
        }
      });
    });
  }

  /** Join the topic's room: its reply carries the latest messages, the first data an app shows. */
  async firstData(topic) {
    await this.client.room(this.name(topic), { presence: false }).join();
  }

  /** A writer on `topic`: both `append` and `announce` send a message, resolved once it is durable. */
  async writer(topic) {
    const room = this.client.room(this.name(topic), { presence: false });
    await room.join();
    const send = (msg) => room.send(JSON.stringify(msg));
    return { append: send, announce: send };
  }

  /** Call `f(msg)` for each message sent on `topic`; resolves once joined. */
  async listen(topic, f) {
    const room = this.client.room(this.name(topic), { presence: false });
    room.onMessage((m) => f(JSON.parse(m.body)));
    await room.join();
  }

  /** Positions of `tenant`'s objects: `place(points)` in `locations` pushes of up to 1,000, `move(point)` one. */
  async geoWriter(tenant) {
    const geo = this.client.geo(this.name(tenant));
    await geo.join();
    const update = ({ id, lat, lon }) => ({ id, lat, lon, ts: performance.timeOrigin + performance.now() });
    return {
      place: async (points) => {
        for (let i = 0; i < points.length; i += 1000) await geo.locations(points.slice(i, i + 1000).map(update));
      },
      move: (p) => geo.location(update(p)),
    };
  }

  /**
   * A live query on the circle: `f(kind, id)` with kind "entered", "moved" or "exited"; resolves once it
   * is in place. Objects inside from the start are reported "entered", as GeoFire does.
   */
  async geoQuery(tenant, { lat, lon, radius }, f) {
    const geo = this.client.geo(this.name(tenant));
    geo.onQuery((kind, p) => f(kind, p.id));
    await geo.join();
    const { objects } = await geo.query("circle", { lat, lon, radius });
    for (const o of objects) f("entered", o.id);
  }

  close() {
    return this.client.disconnect();
  }
}
