// Sign-in and the connection to rusher. The app signs in through the server's development endpoint
// (POST /dev/token, open mode only) and then uses the token exactly as it would use a production one.
// Development tokens are signed with a key the server makes at start, so after a server restart the
// old token is refused: the connection then fetches a fresh one for the same name and goes on.

import { RusherClient } from "@rusher/client";

const STORAGE_KEY = "rusher.session";
/** Least time between two token refreshes while the server refuses or cannot be reached. */
const REFRESH_EVERY_MS = 2000;

/** `{user, token}` kept for this tab, or null. */
export function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(STORAGE_KEY));
    return typeof s?.user === "string" && typeof s?.token === "string" ? s : null;
  } catch {
    return null;
  }
}

function saveSession(session) {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
}

export function clearSession() {
  sessionStorage.removeItem(STORAGE_KEY);
}

/** Ask the server for a token for `name`; rejects with the server's words. */
export async function signIn(name) {
  const response = await fetch("/dev/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name }),
  });
  if (!response.ok) {
    const why = (await response.text()).trim();
    throw new Error(response.status === 404 ? "This server has a secret: development sign-in is off." : why);
  }
  const session = await response.json();
  saveSession(session);
  return session;
}

/** The WebSocket base URL of the server that served this page. */
function serverUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
}

/**
 * One RusherClient for the signed-in user, whose socket always connects with the latest token, plus
 * y-websocket providers that do the same.
 */
export class Connection {
  constructor(session) {
    this.session = session;
    this.tokenListeners = new Set();
    this.lastRefresh = 0;
    this.client = new RusherClient(serverUrl(), {
      // A function, so each reconnect sends the token current at that moment.
      socketOptions: { params: () => ({ token: this.session.token }) },
    });
    this.client.socket.onError(() => this.refreshToken());
    this.client.connect();
  }

  get user() {
    return this.session.user;
  }

  /** Fetch a new token for the same name, at most once per REFRESH_EVERY_MS and one at a time. */
  refreshToken() {
    const now = Date.now();
    if (this.refreshing || now - this.lastRefresh < REFRESH_EVERY_MS) return;
    this.lastRefresh = now;
    this.refreshing = signIn(this.session.user)
      .then((session) => {
        this.session = session;
        for (const f of this.tokenListeners) f(session.token);
      })
      // The server is down or restarting: the next failed attempt tries again.
      .catch(() => {})
      .finally(() => {
        this.refreshing = null;
      });
  }

  /**
   * A y-websocket provider for document `doc` that follows token refreshes. `close()` destroys the
   * provider and stops following.
   */
  collab(doc, ydoc) {
    const provider = this.client.collab(doc, ydoc, { params: { token: this.session.token } });
    const follow = (token) => {
      provider.params = { token };
    };
    this.tokenListeners.add(follow);
    // A refused upgrade (an old token) shows up as an error, like an unreachable server.
    provider.on("connection-error", () => this.refreshToken());
    return {
      provider,
      close: () => {
        this.tokenListeners.delete(follow);
        provider.destroy();
      },
    };
  }

  close() {
    this.tokenListeners.clear();
    return this.client.disconnect();
  }
}
