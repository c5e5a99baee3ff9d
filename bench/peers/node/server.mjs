// websocket-shootout on Node.js + ws: {"type":"echo","payload":P} is answered with the same message;
// {"type":"broadcast","payload":P} sends {"type":"broadcast","payload":P} to every client (the sender
// included), then {"type":"broadcastResult","payload":P} to the sender. One thread, any path.
// usage: node server.mjs [--listen HOST:PORT]
import { WebSocketServer, WebSocket } from "ws";

// Bytes a client may have queued before it counts as too slow and is dropped.
const MAX_BUFFERED = 4 << 20;
const MAX_MESSAGE = 64 * 1024;

function listenArg(argv) {
  const i = argv.indexOf("--listen");
  const value = i >= 0 ? argv[i + 1] : "127.0.0.1:4800";
  const m = /^(.+):(\d+)$/.exec(value ?? "");
  if (!m) throw new Error(`--listen HOST:PORT expected, got ${value}`);
  return { host: m[1], port: Number(m[2]) };
}

const { host, port } = listenArg(process.argv.slice(2));
const wss = new WebSocketServer({ host, port, backlog: 4096, perMessageDeflate: false, maxPayload: MAX_MESSAGE });

function send(client, text) {
  if (client.readyState !== WebSocket.OPEN) return;
  if (client.bufferedAmount > MAX_BUFFERED) {
    client.terminate();
    return;
  }
  client.send(text);
}

wss.on("connection", (ws) => {
  ws.on("error", () => ws.terminate());
  ws.on("message", (data, isBinary) => {
    let msg;
    try {
      msg = isBinary ? null : JSON.parse(data.toString());
    } catch {
      msg = null;
    }
    const payload = JSON.stringify(msg?.payload ?? null);
    if (msg?.type === "echo") {
      send(ws, `{"type":"echo","payload":${payload}}`);
    } else if (msg?.type === "broadcast") {
      const copy = `{"type":"broadcast","payload":${payload}}`;
      for (const client of wss.clients) send(client, copy);
      send(ws, `{"type":"broadcastResult","payload":${payload}}`);
    } else {
      ws.close(1003, "not a shootout message");
    }
  });
});

wss.on("listening", () => console.log(`peer-node-ws listening on ${host}:${port}`));
wss.on("error", (e) => {
  console.error(`peer-node-ws: ${e.message}`);
  process.exit(1);
});
