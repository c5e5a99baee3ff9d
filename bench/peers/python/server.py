"""websocket-shootout on Python asyncio + websockets, a floor for the comparison.

{"type":"echo","payload":P} is answered with the same message; {"type":"broadcast","payload":P} sends
{"type":"broadcast","payload":P} to every client (the sender included), then
{"type":"broadcastResult","payload":P} to the sender. One thread, any path.

usage: python server.py [--listen HOST:PORT]
"""

import argparse
import asyncio
import json

from websockets.asyncio.server import broadcast, serve

# Bytes a client may have queued before it counts as too slow and is dropped.
MAX_BUFFERED = 4 << 20
MAX_MESSAGE = 64 * 1024

CLIENTS = set()


def encode(kind, payload):
    """A shootout message, compact like the other servers'."""
    return json.dumps({"type": kind, "payload": payload}, separators=(",", ":"))


def keeping_up(clients):
    """The clients whose write buffer is under the bound; the others are dropped."""
    ok = []
    for ws in clients:
        if ws.transport.get_write_buffer_size() > MAX_BUFFERED:
            ws.transport.abort()
        else:
            ok.append(ws)
    return ok


async def handler(ws):
    CLIENTS.add(ws)
    try:
        async for text in ws:
            try:
                msg = json.loads(text)
                kind = msg.get("type")
            except (ValueError, AttributeError):
                kind = None
            if kind == "echo":
                await ws.send(encode("echo", msg.get("payload")))
            elif kind == "broadcast":
                payload = msg.get("payload")
                broadcast(keeping_up(CLIENTS), encode("broadcast", payload))
                await ws.send(encode("broadcastResult", payload))
            else:
                await ws.close(1003, "not a shootout message")
                break
    finally:
        CLIENTS.discard(ws)


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:4800", help="HOST:PORT")
    host, _, port = parser.parse_args().listen.rpartition(":")
    # No compression (the load generator offers none), no server pings (the clients ping).
    async with serve(
        handler, host, int(port), compression=None, max_size=MAX_MESSAGE, ping_interval=None, backlog=4096
    ) as server:
        print(f"peer-python-websockets listening on {host}:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
