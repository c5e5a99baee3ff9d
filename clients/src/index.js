// @rusher/client: the Rusher protocols as promises and callbacks, on top of the unmodified `phoenix`
// client (chat, geofencing) and `y-websocket` (collaborative documents). Nothing here touches the DOM, so
// it runs in browsers, Node (pass `transport: WebSocket` from the `ws` package) and React Native.

import { Socket, Presence } from "phoenix";
import { WebsocketProvider } from "y-websocket";

/** An error reply from the server: `reason` is the server's words, `event` the push that failed. */
export class RusherError extends Error {
  constructor(event, reason) {
    super(`${event}: ${reason}`);
    this.name = "RusherError";
    this.event = event;
    this.reason = reason;
  }
}

/** Push `event` on `channel` and settle with the reply: ok → resolve, error → RusherError, timeout → Error. */
export function request(channel, event, payload = {}, timeout = 10000) {
  return new Promise((resolve, reject) => {
    channel
      .push(event, payload, timeout)
      .receive("ok", resolve)
      .receive("error", (r) => reject(new RusherError(event, r?.reason ?? JSON.stringify(r))))
      .receive("timeout", () => reject(new Error(`${event}: no reply within ${timeout} ms`)));
  });
}

/**
 * Join `channel`; resolves with the join reply, rejects with the server's reason. `onEveryOk` also sees
 * the replies of the rejoins the phoenix client makes by itself after a reconnect (it keeps the hooks).
 */
function join(channel, timeout, onEveryOk = () => {}) {
  return new Promise((resolve, reject) => {
    channel
      .join(timeout)
      .receive("ok", (reply) => {
        onEveryOk(reply);
        resolve(reply);
      })
      .receive("error", (r) => reject(new RusherError("join", r?.reason ?? JSON.stringify(r))))
      .receive("timeout", () => reject(new Error(`join ${channel.topic}: no reply within ${timeout} ms`)));
  });
}

/**
 * A connection to a Rusher server.
 *
 * `url` is the server's base URL (`ws://host:port` or `wss://…`). With a secret configured on the server,
 * pass `token` (from `rusher token`); in open development mode pass `user`. `transport` is the WebSocket
 * class where there is no global one (Node: the `ws` package).
 */
export class RusherClient {
  constructor(url, { token, user, transport, timeout = 10000, socketOptions = {} } = {}) {
    this.url = url.replace(/\/+$/, "");
    this.token = token;
    this.user = user;
    this.transport = transport;
    this.timeout = timeout;
    const params = token ? { token } : user ? { user } : {};
    this.socket = new Socket(`${this.url}/socket`, { params, timeout, ...(transport ? { transport } : {}), ...socketOptions });
    this.state = "closed";
    this.stateListeners = new Set();
    this.socket.onOpen(() => this.setState("connected"));
    this.socket.onClose(() => this.setState(this.wanted ? "reconnecting" : "closed"));
    this.socket.onError(() => this.setState(this.wanted ? "reconnecting" : "closed"));
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    for (const f of this.stateListeners) f(state);
  }

  /** Open the socket (it reconnects by itself after drops). */
  connect() {
    this.wanted = true;
    if (this.state === "closed") this.setState("connecting");
    this.socket.connect();
    return this;
  }

  /** Close the socket for good. */
  disconnect() {
    this.wanted = false;
    return new Promise((resolve) => this.socket.disconnect(() => {
      this.setState("closed");
      resolve();
    }));
  }

  /** Call `f(state)` on "connecting", "connected", "reconnecting" and "closed"; returns an unsubscribe function. */
  onState(f) {
    this.stateListeners.add(f);
    return () => this.stateListeners.delete(f);
  }

  /** A chat room (`room:<id>`); call `join()` on it. */
  room(id, options) {
    return new ChatRoom(this, id, options);
  }

  /** A geofencing tenant (`geo:<tenant>`); call `join()` on it. */
  geo(tenant, options) {
    return new GeoTenant(this, tenant, options);
  }

  /**
   * A y-websocket provider for the collaborative document `doc` on `/collab`, syncing `ydoc` (a `Y.Doc`).
   * Extra `options` go to `WebsocketProvider` (e.g. `awareness`, `connect: false`).
   */
  collab(doc, ydoc, options = {}) {
    const params = this.token ? { token: this.token } : this.user ? { user: this.user } : {};
    return new WebsocketProvider(`${this.url}/collab`, doc, ydoc, {
      params,
      ...(this.transport ? { WebSocketPolyfill: this.transport } : {}),
      ...options,
    });
  }
}

/**
 * A chat room. Keeps the highest `seq` seen, so a rejoin after a reconnect asks only for what was missed;
 * messages arrive in `seq` order and each once through `onMessage`.
 */
export class ChatRoom {
  constructor(client, id, { presence = true } = {}) {
    this.client = client;
    this.topic = `room:${id}`;
    this.lastSeq = null;
    this.messageListeners = new Set();
    this.channel = client.socket.channel(this.topic, () => ({
      ...(this.lastSeq === null ? {} : { last_seq: this.lastSeq }),
      ...(presence ? {} : { presence: false }),
    }));
    this.presence = new Presence(this.channel);
    this.channel.on("new_msg", (m) => this.deliver(m));
  }

  deliver(m) {
    if (this.lastSeq !== null && m.seq <= this.lastSeq) return;
    this.lastSeq = m.seq;
    for (const f of this.messageListeners) f(m);
  }

  /**
   * Join; resolves with `{messages, more, last_seq}` (the latest messages). The messages missed while
   * disconnected arrive through `onMessage` when the room rejoins by itself.
   */
  join() {
    return join(this.channel, this.client.timeout, (reply) => {
      for (const m of reply.messages ?? []) this.deliver(m);
    });
  }

  /** Send a message; resolves with `{seq, id, ts}` once it is durable. */
  send(body) {
    return request(this.channel, "new_msg", { body }, this.client.timeout);
  }

  /** The page of messages before `beforeSeq` (or the latest), `{messages, more}`. */
  history({ beforeSeq, limit } = {}) {
    const payload = {};
    if (beforeSeq !== undefined) payload.before_seq = beforeSeq;
    if (limit !== undefined) payload.limit = limit;
    return request(this.channel, "history", payload, this.client.timeout);
  }

  /** Tell the others whether this user is typing. */
  typing(typing = true) {
    this.channel.push("typing", { typing });
  }

  /** `f({seq, id, user, body, ts})` for each new message; returns an unsubscribe function. */
  onMessage(f) {
    this.messageListeners.add(f);
    return () => this.messageListeners.delete(f);
  }

  /** `f({user, typing})` when someone else starts or stops typing. */
  onTyping(f) {
    const ref = this.channel.on("typing", f);
    return () => this.channel.off("typing", ref);
  }

  /** `f(users)` with the sorted list of users present, whenever it changes. */
  onPresence(f) {
    this.presence.onSync(() => f(this.users()));
  }

  /** Users present now, sorted. */
  users() {
    return this.presence.list((user) => user).sort();
  }

  leave() {
    return new Promise((resolve) => this.channel.leave().receive("ok", resolve).receive("timeout", resolve));
  }
}

/**
 * A geofencing tenant: positions, fences, subscriptions, queries and live queries (see docs/geo.md).
 * `token` is a grant token (`rusher token --geo-move … --geo-admin`); `fences` subscribes at join.
 */
export class GeoTenant {
  constructor(client, tenant, { token, fences } = {}) {
    this.client = client;
    this.topic = `geo:${tenant}`;
    const params = {};
    if (token) params.token = token;
    if (fences) params.fences = fences;
    this.channel = client.socket.channel(this.topic, params);
  }

  req(event, payload) {
    return request(this.channel, event, payload, this.client.timeout);
  }

  /** Join; resolves with `{fences, objects}` (counts). */
  join() {
    return join(this.channel, this.client.timeout);
  }

  /** Report a position: `{id, lat, lon, ts?, speed?, heading?, props?}`. */
  location(update) {
    return this.req("location", update);
  }

  /** Report many positions in one frame; resolves with `{applied, ignored, errors?}`. */
  locations(updates) {
    return this.req("locations", { updates });
  }

  createFence(fence) {
    return this.req("fence_create", fence).then((r) => r.fence);
  }

  updateFence(fence) {
    return this.req("fence_update", fence).then((r) => r.fence);
  }

  deleteFence(id) {
    return this.req("fence_delete", { id });
  }

  /** One page of fences by id: `{fences, more}`. */
  listFences({ after, limit } = {}) {
    return this.req("fence_list", { ...(after === undefined ? {} : { after }), ...(limit === undefined ? {} : { limit }) });
  }

  /** Receive the events of these fences (`"*"` for all). */
  subscribe(fences = "*") {
    return this.req("subscribe", { fences });
  }

  unsubscribe(fences = "*") {
    return this.req("unsubscribe", { fences });
  }

  nearby({ lat, lon, radius, limit }) {
    return this.req("nearby", { lat, lon, radius, ...(limit ? { limit } : {}) }).then((r) => r.objects);
  }

  within(geometry, { limit } = {}) {
    return this.req("within", { geometry, ...(limit ? { limit } : {}) });
  }

  object(id) {
    return this.req("object", { id });
  }

  history(id, { limit } = {}) {
    return this.req("history", { id, ...(limit ? { limit } : {}) }).then((r) => r.positions);
  }

  /** Create or move the live query `key`; resolves with the objects inside it now. */
  query(key, { lat, lon, radius }) {
    return this.req("query", { key, lat, lon, radius });
  }

  cancelQuery(key) {
    return this.req("query_cancel", { key });
  }

  /** `f({fence, object, event, lat, lon, ts, center?, dist?})` for each fence event subscribed to. */
  onEvent(f) {
    const ref = this.channel.on("geofence_event", f);
    return () => this.channel.off("geofence_event", ref);
  }

  /** `f(kind, {query, id, lat, lon, ts, dist})` with kind "entered", "moved" or "exited". */
  onQuery(f) {
    const refs = ["entered", "moved", "exited"].map((kind) => [kind, this.channel.on(`key_${kind}`, (p) => f(kind, p))]);
    return () => refs.forEach(([kind, ref]) => this.channel.off(`key_${kind}`, ref));
  }

  leave() {
    return new Promise((resolve) => this.channel.leave().receive("ok", resolve).receive("timeout", resolve));
  }
}

/** Shorthand: `connect(url, options)` is `new RusherClient(url, options).connect()`. */
export function connect(url, options) {
  return new RusherClient(url, options).connect();
}
