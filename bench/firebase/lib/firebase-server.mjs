// firebase-server (a Node reimplementation of the Realtime Database wire protocol, data in memory) on a
// free loopback port. Prints `firebase-server listening on http://127.0.0.1:PORT` once it listens; stops
// on SIGTERM or SIGINT.
//
// The server announces its name in the handshake and the SDK reconnects to that host, so the name is
// the address it really listens on.

import http from "node:http";
import FirebaseServer from "firebase-server";

const server = http.createServer((req, res) => res.writeHead(404).end());
server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => {
  const { port } = server.address();
  const firebase = new FirebaseServer({ server }, `127.0.0.1:${port}`);
  console.log(`firebase-server listening on http://127.0.0.1:${port}`);
  const stop = () => firebase.close().finally(() => process.exit(0));
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
});
