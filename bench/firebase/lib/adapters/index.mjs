// The two sides as Node runs them: a target description (plain JSON, so it can be handed to a child
// process) turned into an adapter.

import WebSocket from "ws";
import { firebaseAdapter } from "./firebase.mjs";
import { rusherAdapter } from "./rusher.mjs";

/**
 * `target` is `{kind: "firebase", config, base}` (a Firebase web config with `databaseURL`; every key
 * under `base`) or `{kind: "rusher", url, prefix}` (`ws://host:port`; every room and tenant named with
 * `prefix`).
 */
export function makeAdapter(target) {
  switch (target.kind) {
    case "firebase":
      return firebaseAdapter(target);
    case "rusher":
      return rusherAdapter({ ...target, transport: WebSocket });
    default:
      throw new Error(`unknown target kind ${JSON.stringify(target.kind)}`);
  }
}
