// Open N Phoenix V2 connections, join each to a chat room (ROOM_SIZE members per room), report when all
// are joined, then hold them idle with heartbeats until stdin closes or HOLD_SECONDS pass.
//
// usage: node hold.mjs URL COUNT [ROOM_SIZE] [HOLD_SECONDS]
//   ROOM_SIZE 0 = upgrade only, join nothing.
import WebSocket from "ws";

const [url, countArg, roomArg = "100", holdArg = "120"] = process.argv.slice(2);
if (!url || !countArg) {
  console.error("usage: node hold.mjs ws://127.0.0.1:4000/socket/websocket?vsn=2.0.0 COUNT [ROOM_SIZE] [HOLD_SECONDS]");
  process.exit(2);
}
const count = Number(countArg);
const roomSize = Number(roomArg);
const holdSeconds = Number(holdArg);
const inFlightMax = 256;

const sockets = [];
let opened = 0;
let joined = 0;
let failed = 0;
let next = 0;
let inFlight = 0;
const started = Date.now();

function finishOne(ok) {
  inFlight--;
  if (ok) joined++;
  else failed++;
  if (joined + failed === count) done();
  else pump();
}

function openOne(i) {
  inFlight++;
  const user = `u${i}`;
  const ws = new WebSocket(`${url}&user=${user}`, { perMessageDeflate: false });
  let settled = false;
  const settle = (ok) => {
    if (!settled) {
      settled = true;
      finishOne(ok);
    }
  };
  ws.on("open", () => {
    opened++;
    sockets.push(ws);
    if (roomSize === 0) return settle(true);
    const topic = `room:bench-${Math.floor(i / roomSize)}`;
    ws.send(JSON.stringify(["1", "1", topic, "phx_join", {}]));
  });
  ws.on("message", (data) => {
    if (settled) return;
    const [, ref, , event, payload] = JSON.parse(data.toString());
    if (event === "phx_reply" && ref === "1") settle(payload.status === "ok");
  });
  ws.on("error", (e) => {
    if (!settled) console.error(`connection ${i}: ${e.message}`);
    settle(false);
  });
  ws.on("close", () => settle(false));
}

function pump() {
  while (inFlight < inFlightMax && next < count) openOne(next++);
}

function done() {
  const secs = (Date.now() - started) / 1000;
  console.log(`joined ${joined} failed ${failed} in ${secs.toFixed(1)} s`);
  let ref = 100;
  const beat = setInterval(() => {
    ref++;
    for (const ws of sockets) if (ws.readyState === WebSocket.OPEN) ws.send(`[null,"${ref}","phoenix","heartbeat",{}]`);
  }, 20_000);
  const stop = () => {
    clearInterval(beat);
    for (const ws of sockets) ws.terminate();
    process.exit(failed === 0 ? 0 : 1);
  };
  setTimeout(stop, holdSeconds * 1000);
  process.stdin.on("end", stop);
  process.stdin.on("close", stop);
  process.stdin.resume();
}

pump();
