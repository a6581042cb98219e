"""A real client library with a subscription filter: Python `websockets`. Run by
tests/filters.rs with the interpreter of the suite's virtualenv.

Usage: filters_websockets.py WS_URL HTTP_BASE ADMIN_KEY MESSAGES_JSON
Two connections subscribe to `signals.>`, one with the filter of docs/PROTOCOL.md's example,
one without; each message of MESSAGES_JSON (a JSON array, the last one marked "end": true
and passing the filter) is published to signals.momentum over HTTP, one after the other;
both read until the end marker. Prints one JSON line: the filtered connection's ack and the
`data` each connection received. Exits non-zero on any failure.
"""
import asyncio
import json
import sys

import websockets

from tickcast_http import publish

URL, HTTP, KEY, MESSAGES = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
FILTER = {"strategy": {"in": ["mom", "arb"]}, "score": {"gte": 0.8}}


async def subscribe(ws, extra):
    await ws.recv()  # welcome
    await ws.send(json.dumps({"op": "subscribe", "id": 1, "topics": ["signals.>"], **extra}))
    ack = json.loads(await ws.recv())
    assert ack["op"] == "ack", ack
    return ack


async def until_end(ws):
    got = []
    while True:
        msg = json.loads(await ws.recv())
        if "op" in msg:
            continue
        got.append(msg["data"])
        if isinstance(msg["data"], dict) and msg["data"].get("end") is True:
            return got


async def main():
    async with websockets.connect(URL, open_timeout=30) as filtered, websockets.connect(
        URL, open_timeout=30
    ) as unfiltered:
        ack = await subscribe(filtered, {"filter": FILTER})
        await subscribe(unfiltered, {})
        for data in MESSAGES:
            await asyncio.to_thread(publish, HTTP, KEY, "signals.momentum", data)
        print(json.dumps({
            "ack": ack,
            "filtered": await until_end(filtered),
            "unfiltered": await until_end(unfiltered),
        }))


asyncio.run(asyncio.wait_for(main(), 60))
