"""centrifuge-python (pinned in requirements.txt), unmodified, against tickcast's Centrifugo
endpoint. Driven by tests/centrifugo.rs:
    python sdk.py <ws url> <http base> <admin key> <json: tokens and channels>
Prints one JSON line with what the SDK's own events reported; exits 1 on a deadline.
"""
import asyncio
import json
import sys
import time
import urllib.request

from centrifuge import (
    Client,
    ClientEventHandler,
    SubscriptionEventHandler,
)

URL, HTTP, ADMIN, ARGS = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
out = {"events": []}


def post(path, body):
    req = urllib.request.Request(
        HTTP + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + ADMIN},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def refreshes():
    """Refreshes the server counted (tickcast_security_events_total{event="refreshed"})."""
    with urllib.request.urlopen(HTTP + "/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()
    return sum(
        float(l.rsplit(" ", 1)[1])
        for l in lines
        if l.startswith("tickcast_security_events_total") and 'event="refreshed"' in l
    )


async def until(what, cond, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"deadline: {what} {json.dumps([out, pubs, subscribed], default=str)}")
        await asyncio.sleep(0.01)


class ClientEvents(ClientEventHandler):
    async def on_connected(self, ctx):
        out["client"] = ctx.client
        out["connected"] = out.get("connected", 0) + 1

    async def on_connecting(self, ctx):
        out["events"].append({"connecting": ctx.code, "reason": ctx.reason})

    async def on_error(self, ctx):
        out["events"].append({"client_error": ctx.code})


pubs, subscribed, denied = [], [], []


class SubEvents(SubscriptionEventHandler):
    async def on_subscribed(self, ctx):
        subscribed.append(
            {
                "was_recovering": ctx.was_recovering,
                "recovered": ctx.recovered,
                "recoverable": ctx.recoverable,
                "positioned": ctx.positioned,
            }
        )

    async def on_publication(self, ctx):
        pubs.append({"offset": ctx.pub.offset, "n": ctx.pub.data["n"]})


joins, leaves = [], []


class WatchEvents(SubscriptionEventHandler):
    async def on_subscribed(self, ctx):
        out["watching"] = True

    async def on_join(self, ctx):
        joins.append({"user": ctx.info.user, "client": ctx.info.client})

    async def on_leave(self, ctx):
        leaves.append({"user": ctx.info.user, "client": ctx.info.client})


class OtherEvents(ClientEventHandler):
    async def on_connected(self, ctx):
        out["other"] = ctx.client


class DeniedEvents(SubscriptionEventHandler):
    async def on_unsubscribed(self, ctx):
        denied.append({"code": ctx.code, "reason": ctx.reason})


async def main():
    async def get_token():
        return ARGS["token"]

    client = Client(
        URL,
        events=ClientEvents(),
        token=ARGS["token"],
        get_token=get_token,
        name="tickcast-test",
        proxy=None,
    )
    sub = client.new_subscription(ARGS["channel"], events=SubEvents())
    await client.connect()
    await sub.subscribe()
    await until("subscribed", lambda: len(subscribed) == 1)
    for i in range(1, 6):
        await asyncio.to_thread(post, "/v1/publish", {"topic": ARGS["channel"], "data": {"n": i}})
    await until("5 publications", lambda: len(pubs) >= 5)
    # The server closes the connection with a reconnect code; what is published meanwhile is
    # recovered on resubscribe.
    await asyncio.to_thread(
        post, "/v1/disconnect", {"conn": out["client"], "code": 4100, "reason": "go away"}
    )
    await until("reconnecting", lambda: any(e.get("connecting") == 4100 for e in out["events"]))
    for i in range(6, 11):
        await asyncio.to_thread(post, "/v1/publish", {"topic": ARGS["channel"], "data": {"n": i}})
    await until("resubscribed", lambda: len(subscribed) == 2)
    await until("10 publications", lambda: len(pubs) >= 10)
    await client.publish(ARGS["channel"], {"n": 11})
    await until("own publication", lambda: len(pubs) >= 11)
    hist = await client.history(ARGS["channel"], limit=3, reverse=True)
    out["history"] = {
        "offsets": [p.offset for p in hist.publications],
        "top": hist.offset,
        "epoch": hist.epoch,
        "n": [p.data["n"] for p in hist.publications],
    }
    watch = client.new_subscription(ARGS["presence"], events=WatchEvents(), join_leave=True)
    await watch.subscribe()
    await until("watching", lambda: out.get("watching"))
    pres = await client.presence(ARGS["presence"])
    out["presence"] = [c.user for c in pres.clients.values()]
    stats = await client.presence_stats(ARGS["presence"])
    out["presence_stats"] = {"clients": stats.num_clients, "users": stats.num_users}
    other = Client(URL, events=OtherEvents(), token=ARGS["token"], proxy=None)
    other_sub = other.new_subscription(ARGS["presence"])
    await other.connect()
    await other_sub.subscribe()
    await until("join", lambda: any(j["client"] == out.get("other") for j in joins))
    await other.disconnect()
    await until("leave", lambda: any(j["client"] == out.get("other") for j in leaves))
    out["join_leave"] = {
        "joins": [j for j in joins if j["client"] == out["other"]],
        "leaves": [j for j in leaves if j["client"] == out["other"]],
        "other": out["other"],
    }
    forbidden = client.new_subscription(ARGS["forbidden"], events=DeniedEvents())
    await forbidden.subscribe()
    await until("denied", lambda: len(denied) == 1)
    await client.disconnect()

    # An expired token: error 109 (the SDK's own error event), a fresh token from get_token,
    # connected; that token expires in seconds, so the SDK refreshes it on the connection.
    fresh = []
    errors = []

    async def next_token():
        fresh.append(1)
        return ARGS["short"] if len(fresh) == 1 else ARGS["token"]

    class ExpiredEvents(ClientEventHandler):
        async def on_error(self, ctx):
            errors.append(getattr(ctx.error, "code", None))

        async def on_connected(self, ctx):
            out["expired_connects"] = out.get("expired_connects", 0) + 1

    c2 = Client(
        URL,
        events=ExpiredEvents(),
        token=ARGS["expired"],
        get_token=next_token,
        min_reconnect_delay=0.05,
        proxy=None,
    )
    await c2.connect()
    await until("refreshed", lambda: len(fresh) >= 2, 30.0)
    # The refresh command reached the server: its count of refreshes moved (/metrics).
    deadline = time.monotonic() + 30
    while await asyncio.to_thread(refreshes) < 1:
        if time.monotonic() > deadline:
            raise TimeoutError("the server never counted the refresh")
        await asyncio.sleep(0.1)
    out["expired"] = {
        "errors": errors,
        "token_calls": len(fresh),
        "connects": out.get("expired_connects", 0),
        "state": str(c2.state.value if hasattr(c2.state, "value") else c2.state),
    }
    await c2.disconnect()
    out.update(pubs=pubs, subscribed=subscribed, denied=denied[0])
    print(json.dumps(out))


asyncio.run(asyncio.wait_for(main(), 60))
