"""A real client library with compression on: Python `websockets` (it offers permessage-deflate
by default). Run by tests/clients.rs with the interpreter of the suite's virtualenv.

Usage: deflate_websockets.py WS_URL HTTP_BASE ADMIN_KEY
Prints one JSON line: what the client saw. Exits non-zero on any failure.
"""
import asyncio
import json
import sys

import websockets

from tickcast_http import publish

URL, HTTP, KEY = sys.argv[1], sys.argv[2], sys.argv[3]


async def main():
    async with websockets.connect(URL, open_timeout=30) as ws:
        negotiated = [e.name for e in ws.protocol.extensions]
        welcome = json.loads(await ws.recv())
        # Long enough that websockets compresses it (it compresses every message once
        # negotiated) and that the server's inflate matters.
        topics = ["md.%d" % i for i in range(60)]
        await ws.send(json.dumps({"op": "subscribe", "id": 1, "topics": topics}))
        ack = json.loads(await ws.recv())
        data = {"levels": [{"px": "%d.25" % (100 + i), "qty": "1.000"} for i in range(40)]}
        published = await asyncio.to_thread(publish, HTTP, KEY, "md.7", data)
        frame = json.loads(await ws.recv())
        print(json.dumps({
            "extensions": negotiated,
            "welcome": welcome["op"],
            "ack_topics": len(ack.get("topics", [])),
            "frame_ok": frame.get("data") == data and frame.get("seq") == published["seq"],
        }))


asyncio.run(asyncio.wait_for(main(), 60))
