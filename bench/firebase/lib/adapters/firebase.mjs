// The firebase side: the official firebase JS SDK (Realtime Database API) with geofire-common for geo
// queries. The same code talks to firebase-server on loopback or to a real Firebase project. Nothing here
// needs Node, so esbuild bundles this file as the minimal firebase app of the bundle-size figure.
//
// Every operation matches one of the Rusher side (./rusher.mjs); see ../workloads.mjs for the contract.

import { deleteApp, initializeApp } from "firebase/app";
import {
  endAt,
  getDatabase,
  goOffline,
  onChildAdded,
  onChildChanged,
  onChildRemoved,
  onValue,
  orderByChild,
  push,
  query,
  ref,
  remove,
  set,
  startAt,
  update,
} from "firebase/database";
import { distanceBetween, geohashForLocation, geohashQueryBounds } from "geofire-common";

let apps = 0;

/**
 * Clients of the database that `config` (a Firebase web app config with `databaseURL`) names. Every key
 * of the run lives under `base`, so runs never see each other's data.
 */
export function firebaseAdapter({ config, base }) {
  return {
    open: () => new FirebaseClient(config, base),
    /** Delete the run's data (a real project keeps it otherwise). */
    async cleanup() {
      const c = new FirebaseClient(config, base);
      try {
        await remove(ref(c.db, base));
      } finally {
        await c.close();
      }
    },
  };
}

/**
 * Resolve with the first snapshot of `target` that `accept` takes, then stop listening. The SDK may call
 * back before `onValue` returns (data it already holds), hence the `off` dance.
 */
function firstValue(target, accept = () => true) {
  return new Promise((resolve, reject) => {
    let off = null;
    let found = null;
    off = onValue(
      target,
      (snap) => {
        if (found || !accept(snap)) return;
        found = snap;
        if (off) {
          off();
          resolve(snap);
        }
      },
      reject,
    );
    if (found) {
      off();
      resolve(found);
    }
  });
}

/** A geo record as geofire-common queries it: the geohash `g` is the ordered child. */
function geoRecord({ lat, lon }) {
  return { g: geohashForLocation([lat, lon]), lat, lng: lon };
}

/** One SDK client: its own app instance, so its own connection, as a separate device would have. */
class FirebaseClient {
  constructor(config, base) {
    this.app = initializeApp(config, `bench-${++apps}`);
    this.db = getDatabase(this.app);
    this.base = base;
    this.listeners = [];
  }

  ref(path) {
    return ref(this.db, `${this.base}/${path}`);
  }

  /** Resolves once the SDK reports its connection up. */
  async connected() {
    await firstValue(ref(this.db, ".info/connected"), (snap) => snap.val() === true);
  }

  /** Read a topic's messages: the first data an app shows. */
  async firstData(topic) {
    await firstValue(this.ref(`${topic}/log`));
  }

  /**
   * A writer on `topic`: `append(msg)` adds a message to the topic's list (`push`), `announce(msg)`
   * overwrites the topic's latest message (`set`); both resolve when the server acknowledges the write.
   */
  async writer(topic) {
    return {
      append: (msg) => push(this.ref(`${topic}/log`), msg),
      announce: (msg) => set(this.ref(`${topic}/last`), msg),
    };
  }

  /** Call `f(msg)` for each message announced on `topic`; resolves once the listener is in place. */
  async listen(topic, f) {
    let initial = true;
    await new Promise((resolve, reject) => {
      const off = onValue(
        this.ref(`${topic}/last`),
        (snap) => {
          if (initial) {
            initial = false;
            resolve();
            return;
          }
          const msg = snap.val();
          if (msg !== null) f(msg);
        },
        reject,
      );
      this.listeners.push(off);
    });
  }

  /** Positions of `tenant`'s objects: `place(points)` writes many at once, `move(point)` one. */
  async geoWriter(tenant) {
    return {
      place: (points) => update(this.ref(`${tenant}/points`), Object.fromEntries(points.map((p) => [p.id, geoRecord(p)]))),
      move: (p) => set(this.ref(`${tenant}/points/${p.id}`), geoRecord(p)),
    };
  }

  /**
   * GeoFire's query as geofire-common builds it: one `orderByChild('g')` range query per geohash bound
   * of the circle, each point checked against the exact distance. `f(kind, id)` with kind "entered" or
   * "exited"; resolves once every range query has its first data.
   */
  async geoQuery(tenant, { lat, lon, radius }, f) {
    const center = [lat, lon];
    const bounds = geohashQueryBounds(center, radius);
    const ranges = new Map(); // id → indexes of the bounds whose query holds it
    const positions = new Map();
    const inside = new Set();
    const evaluate = (id) => {
      const now = (ranges.get(id)?.size ?? 0) > 0 && distanceBetween(positions.get(id), center) * 1000 <= radius;
      if (now && !inside.has(id)) {
        inside.add(id);
        f("entered", id);
      } else if (!now && inside.has(id)) {
        inside.delete(id);
        f("exited", id);
      }
    };
    const points = this.ref(`${tenant}/points`);
    await Promise.all(
      bounds.map(([start, end], i) => {
        const q = query(points, orderByChild("g"), startAt(start), endAt(end));
        const seen = (snap) => {
          const v = snap.val();
          positions.set(snap.key, [v.lat, v.lng]);
          if (!ranges.has(snap.key)) ranges.set(snap.key, new Set());
          ranges.get(snap.key).add(i);
          evaluate(snap.key);
        };
        const gone = (snap) => {
          ranges.get(snap.key)?.delete(i);
          evaluate(snap.key);
        };
        this.listeners.push(onChildAdded(q, seen), onChildChanged(q, seen), onChildRemoved(q, gone));
        return firstValue(q);
      }),
    );
  }

  async close() {
    for (const off of this.listeners) off();
    this.listeners = [];
    goOffline(this.db);
    await deleteApp(this.app);
  }
}
