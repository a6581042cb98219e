"""binance-sdk-spot (PyPI, pinned in requirements.txt), unmodified, against tickcast's Binance
market streams. Driven by tests/binance.rs, against a server running the demo feed in Binance's
shapes (`demo.format = "binance"`):
    python sdk_spot.py ws://127.0.0.1:PORT/binance
The SDK connects to `<url>/stream` with no stream and subscribes live (SUBSCRIBE, uuid ids).
Subscribes btcusdt@trade and btcusdt@bookTicker with the typed helpers, waits for both in their
callbacks (parsed by the SDK's pydantic models, which are strict about types), lists the
subscriptions, unsubscribes both, lists again, then subscribes ethusdt@trade (untyped) and
waits for it: any BTCUSDT frame the SDK received after the second list reply would have been
sent after the unsubscribe. Then it waits for 5 server pings (the SDK pongs by itself) and lists
once more: the connection outlived the server's pong timeout. Prints one JSON line with what it saw; exits 1 (reason on stderr)
on a deadline or an unexpected state.
"""
import asyncio
import json
import logging
import sys
import time

from binance_common.configuration import ConfigurationWebSocketStreams
from binance_sdk_spot.spot import Spot

URL = sys.argv[1]
# Every wait below is bounded by this (a failure bound; a passing run takes ~3 s).
DEADLINE_S = 20.0

out = {
    "trades": 0,
    "book_tickers": 0,
    "eth_frames": 0,
    "errors": [],
    "closed": 0,
    # Server pings the SDK answered (it pongs, then raises its `ping` event).
    "pings": 0,
    # Frames the SDK received and routed to no callback (logged "Received message").
    "unrouted": 0,
    # BTCUSDT frames the SDK got (and logged as unrouted, its callbacks being gone) after the
    # reply to the LIST_SUBSCRIPTIONS sent after the UNSUBSCRIBEs.
    "btc_after_unsubscribe": 0,
}
trades = []
books = []
unsubscribed = False


class Unrouted(logging.Handler):
    """The SDK logs frames no callback takes ("Received message: {...}"): counts BTCUSDT ones
    that arrive after the unsubscribe was confirmed."""

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Received message:"):
            out["unrouted"] += 1
        if unsubscribed and msg.startswith("Received message:") and "btcusdt@" in msg:
            out["btc_after_unsubscribe"] += 1


logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
sdk_log = logging.getLogger()
sdk_log.setLevel(logging.INFO)
for h in sdk_log.handlers:
    h.setLevel(logging.WARNING)
sdk_log.addHandler(Unrouted(level=logging.INFO))


def fail(why):
    print(f"sdk_spot.py: {why}: {json.dumps(out, default=str)}", file=sys.stderr)
    sys.exit(1)


async def until(what, cond):
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        if time.monotonic() > deadline:
            fail(f"deadline: {what}")
        await asyncio.sleep(0.01)


async def main():
    global unsubscribed
    cfg = ConfigurationWebSocketStreams(stream_url=URL)
    client = Spot(config_ws_streams=cfg)
    connection = await client.websocket_streams.create_connection()
    if connection is None:
        fail("create_connection returned None (the SDK logs the handshake error)")
    connection.on_connection("error", lambda e: out["errors"].append(str(e)))
    connection.on_connection("close", lambda *_: out.__setitem__("closed", out["closed"] + 1))
    connection.on_connection("ping", lambda *_: out.__setitem__("pings", out["pings"] + 1))

    trade = await connection.trade(symbol="BTCUSDT")
    trade.on("message", lambda m: trades.append(m))
    book = await connection.book_ticker(symbol="BTCUSDT")
    book.on("message", lambda m: books.append(m))
    await until("5 trades and 3 book tickers", lambda: len(trades) >= 5 and len(books) >= 3)

    listed = await asyncio.wait_for(connection.list_subscribe(), DEADLINE_S)
    out["list"] = listed["result"]
    out["list_id_is_uuid"] = isinstance(listed["id"], str) and len(listed["id"]) == 36

    await trade.unsubscribe()
    await book.unsubscribe()
    out["trades"], out["book_tickers"] = len(trades), len(books)
    after = await asyncio.wait_for(connection.list_subscribe(), DEADLINE_S)
    # Set from the awaiting task: frames the receive loop took before it resumed are not
    # counted (a missed stray, never a false one).
    unsubscribed = True
    out["list_after_unsubscribe"] = after["result"]
    # The SDK dropped its callbacks with the unsubscribe: its own counts must not move.
    out["callbacks_after_unsubscribe"] = len(trades) + len(books) - out["trades"] - out["book_tickers"]

    eth = []
    await connection.subscribe(["ethusdt@trade"])
    connection.on("message", lambda d: eth.append(d), "ethusdt@trade")
    await until("5 ETHUSDT trades", lambda: len(eth) >= 5)
    out["eth_frames"] = len(eth)
    # An untyped subscription's callback gets the whole combined envelope.
    out["eth_envelope"] = {"stream": eth[0]["stream"], "s": eth[0]["data"]["s"]}
    # Keep-alive: the test server pings every second and drops a connection silent for 3 s
    # after a ping; the SDK's pongs keep this one open past that.
    await until("5 server pings", lambda: out["pings"] >= 5)
    final = await asyncio.wait_for(connection.list_subscribe(), DEADLINE_S)
    out["list_final"] = final["result"]

    t = trades[0]
    out["trade"] = {
        "model": type(t).__name__,
        "e": t.e,
        "s": t.s,
        "p": t.p,
        "q": t.q,
        "p_type": type(t.p).__name__,
        "t_type": type(t.t).__name__,
        "T_type": type(t.T).__name__,
        "m_type": type(t.m).__name__,
    }
    ids = [x.t for x in trades]
    out["trade_ids_increasing"] = all(a < b for a, b in zip(ids, ids[1:]))
    b = books[0]
    out["book_ticker"] = {
        "model": type(b).__name__,
        "s": b.s,
        "b": b.b,
        "a": b.a,
        "b_type": type(b.b).__name__,
        "u_type": type(b.u).__name__,
    }
    ups = [x.u for x in books]
    out["update_ids_increasing"] = all(a < b for a, b in zip(ups, ups[1:]))
    await connection.close_connection(close_session=True)
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(), 3 * DEADLINE_S))
    except asyncio.TimeoutError:
        fail("overall deadline")
