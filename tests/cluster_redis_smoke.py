#!/usr/bin/env python3
"""End-to-end smoke test of the Redis cluster engine (cluster.engine = "redis").

Runs a real redis-server and tickcast nodes (3, plus fresh ones for recovery checks), and a
`websockets` client. What it checks:

1. Ordering / exactly once: 300 publishes to `md.x` on node A reach the subscribers on nodes
   B and C exactly once each, with seq 1..300 in publish order (data `i` == seq).
2. Idempotency: the same `idem` key twice -> the second ack has `duplicate: true` and the same
   seq; subscribers get the message once.
3. `since` recovery served from the broker's history: on node A (no local history for the
   topic) and on a freshly started node D: since seq K -> frames K+1..last, no gap.
4. Redis restart without persistence (kill -9, start again on the same port): the nodes stay
   up, reconnect, re-subscribe; publishing resumes with a new epoch and seq from 1; the
   subscribers on B and C receive the new messages (a `gap` frame / epoch change may be seen,
   never a crash).
5. Redis with persistence (default save points): SHUTDOWN (saves), start again: the topic
   keeps its epoch and seq continues; a fresh node recovers with `since` across the restart.

Usage: python3 tests/cluster_redis_smoke.py [path/to/tickcast]
(default: $TICKCAST_BIN or /work/target-redis/debug/tickcast). Needs redis-server and
redis-cli on PATH. Exit status 0 = all checks passed.
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import websockets

BIN = (sys.argv[1] if len(sys.argv) > 1 else None) or os.environ.get(
    "TICKCAST_BIN", "/work/target-redis/debug/tickcast"
)
TOPIC = "md.x"
TMP = tempfile.mkdtemp(prefix="tc-redis-smoke-")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"  ok: {what}", flush=True)


class RedisServer:
    def __init__(self, port):
        self.port = port
        self.proc = None

    def start(self, persist):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--daemonize", "no", "--dir", TMP, "--dbfilename", f"dump-{self.port}.rdb"]
        if not persist:
            args += ["--save", "", "--appendonly", "no"]
        log = open(os.path.join(TMP, f"redis-{self.port}.log"), "a")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        for _ in range(100):
            r = subprocess.run(["redis-cli", "-p", str(self.port), "ping"],
                               capture_output=True, text=True)
            if r.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def shutdown_save(self):
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "save"],
                       capture_output=True)
        self.proc.wait(timeout=10)


class Node:
    def __init__(self, name, redis_port):
        env = dict(os.environ)
        env.update({
            "TICKCAST_CLUSTER__ENGINE": "redis",
            "TICKCAST_CLUSTER__URL": f"redis://127.0.0.1:{redis_port}",
            "TICKCAST_CLUSTER__NODE_ID": f"node-{name}",
            "TICKCAST_AUTH__ANONYMOUS_PUBS": '[">"]',
            "TICKCAST_AUTH__ANONYMOUS_SUBS": '[">"]',
            "TICKCAST_SERVER__PIN_CORES": "false",
            "TICKCAST_TOPICS": '[{pattern="md.>",history_size=1000}]',
            # The test client pipelines hundreds of publishes on one connection.
            "TICKCAST_LIMITS__CLIENT_MESSAGES_PER_S": "0",
        })
        self.name = name
        self.log = os.path.join(TMP, f"node-{name}.log")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:0", "--shards", "2"],
            env=env, stdout=subprocess.PIPE, stderr=open(self.log, "w"), text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"node {name}: unexpected first line {line!r}")
        self.addr = line.split()[-1]

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Client:
    """One WebSocket connection: data frames, replies by id, other messages (gap, …)."""

    def __init__(self, ws):
        self.ws = ws
        self.frames = []
        self.replies = {}
        self.events = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, node):
        return cls(await websockets.connect(f"ws://{node.addr}/ws", max_size=None))

    async def _read(self):
        try:
            async for raw in self.ws:
                m = json.loads(raw)
                if "op" not in m:
                    self.frames.append(m)
                elif "id" in m and m["op"] in ("ack", "error"):
                    self.replies[m["id"]] = m
                else:
                    self.events.append(m)
        except websockets.ConnectionClosed:
            pass

    async def send(self, req):
        await self.ws.send(json.dumps(req))

    async def reply(self, rid, timeout=10.0):
        end = time.monotonic() + timeout
        while rid not in self.replies:
            if time.monotonic() > end:
                raise AssertionError(f"no reply to request {rid}")
            await asyncio.sleep(0.005)
        return self.replies.pop(rid)

    async def request(self, req, timeout=10.0):
        await self.send(req)
        return await self.reply(req["id"], timeout)

    async def wait_frames(self, pred, n, timeout=10.0):
        end = time.monotonic() + timeout
        while sum(1 for f in self.frames if pred(f)) < n and time.monotonic() < end:
            await asyncio.sleep(0.01)
        return [f for f in self.frames if pred(f)]

    async def close(self):
        await self.ws.close()
        self.reader.cancel()


_ids = iter(range(1000, 10**9))


def nid():
    return next(_ids)


async def publish_many(client, values, idem=None):
    ids = []
    for v in values:
        rid = nid()
        req = {"op": "publish", "id": rid, "topic": TOPIC, "data": v}
        if idem:
            req["idem"] = idem
        await client.send(req)
        ids.append(rid)
    return [await client.reply(rid) for rid in ids]


async def publish_until_ok(client, value, timeout=30.0):
    """Publishes `value` until the cluster accepts it (after a broker restart)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ack = await client.request({"op": "publish", "id": nid(), "topic": TOPIC, "data": value})
        if ack["op"] == "ack":
            return ack
        await asyncio.sleep(0.2)
    raise AssertionError("publishing did not recover after the redis restart")


async def recover_on(node, since_seq, epoch, last):
    c = await Client.open(node)
    ack = await c.request({"op": "subscribe", "id": 3, "topics": [TOPIC],
                           "since": {TOPIC: {"seq": since_seq, "epoch": epoch}}})
    check(ack["op"] == "ack", f"node {node.name}: since subscribe acked: {ack}")
    want = last - since_seq
    got = await c.wait_frames(lambda f: f.get("topic") == TOPIC, want)
    seqs = [f["seq"] for f in got]
    check(seqs == list(range(since_seq + 1, last + 1)),
          f"node {node.name}: since {since_seq} replays {since_seq + 1}..{last} "
          f"(got {len(seqs)}: {seqs[:3]}…{seqs[-3:]})")
    check(not [e for e in c.events if e.get("op") == "gap"],
          f"node {node.name}: no gap on recovery (events: {c.events})")
    await c.close()


async def main():
    port = free_port()
    redis = RedisServer(port)
    redis.start(persist=False)
    nodes = {n: Node(n, port) for n in "abc"}
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    print(f"redis on {port}; nodes {[(n.name, n.addr) for n in nodes.values()]}; logs in {TMP}")
    await asyncio.sleep(1.0)
    try:
        pa, sb, sc = await Client.open(a), await Client.open(b), await Client.open(c)
        for s in (sb, sc):
            ack = await s.request({"op": "subscribe", "id": 1, "topics": [TOPIC]})
            check(ack["op"] == "ack", f"subscribe acked: {ack}")

        print("1. 300 publishes on A, subscribers on B and C")
        n = 300
        acks = await publish_many(pa, [{"i": i} for i in range(1, n + 1)])
        check(all(x["op"] == "ack" for x in acks), "every publish acked")
        check([x["seq"] for x in acks] == list(range(1, n + 1)), "acks carry seq 1..300 in order")
        epoch = acks[0]["epoch"]
        check(all(x["epoch"] == epoch for x in acks), f"one epoch {epoch}")
        for s, name in ((sb, "B"), (sc, "C")):
            got = await s.wait_frames(lambda f: f.get("topic") == TOPIC, n)
            await asyncio.sleep(0.3)  # a duplicate would show up by now
            got = [f for f in s.frames if f.get("topic") == TOPIC]
            check([f["seq"] for f in got] == list(range(1, n + 1)),
                  f"{name}: every message exactly once, seq 1..{n} (got {len(got)})")
            check(all(f["data"]["i"] == f["seq"] for f in got), f"{name}: publish order kept")

        print("2. idempotency")
        first = await pa.request({"op": "publish", "id": nid(), "topic": TOPIC,
                                  "data": {"i": "idem"}, "idem": "k1"})
        second = await pa.request({"op": "publish", "id": nid(), "topic": TOPIC,
                                   "data": {"i": "idem"}, "idem": "k1"})
        check(first["op"] == "ack" and not first.get("duplicate"), f"first idem publish: {first}")
        check(second.get("duplicate") is True and second["seq"] == first["seq"],
              f"second idem publish is a duplicate with the same seq: {second}")
        last = first["seq"]
        for s, name in ((sb, "B"), (sc, "C")):
            await s.wait_frames(lambda f: f.get("topic") == TOPIC, last)
            await asyncio.sleep(0.3)
            got = [f["seq"] for f in s.frames if f.get("topic") == TOPIC]
            check(got == list(range(1, last + 1)), f"{name}: idem message delivered once")

        print("3. since recovery from the broker's history")
        await recover_on(a, 100, epoch, last)
        d = Node("d", port)
        nodes["d"] = d
        await asyncio.sleep(1.0)
        await recover_on(d, 250, epoch, last)
        gone = await Client.open(d)
        ack = await gone.request({"op": "subscribe", "id": 3, "topics": [TOPIC],
                                  "since": {TOPIC: {"seq": 5, "epoch": "0000000000000001"}}})
        await asyncio.sleep(0.5)
        gaps = [e for e in gone.events if e.get("op") == "gap"]
        check(ack["op"] == "ack" and gaps and gaps[0]["reason"] == "epoch",
              f"a wrong epoch in since gets a gap with reason epoch: {gaps}")
        await gone.close()

        print("4. redis restart without persistence (kill -9) mid-stream")
        stop = asyncio.Event()
        during = {"ok": 0, "err": 0}

        async def stream():
            i = 0
            while not stop.is_set():
                i += 1
                x = await pa.request({"op": "publish", "id": nid(), "topic": TOPIC,
                                      "data": {"i": f"during-{i}"}}, timeout=20)
                during["ok" if x["op"] == "ack" else "err"] += 1
                await asyncio.sleep(0.01)

        streamer = asyncio.create_task(stream())
        await asyncio.sleep(0.5)
        redis.kill()
        await asyncio.sleep(1.5)
        redis.start(persist=False)
        await asyncio.sleep(0.5)
        stop.set()
        await streamer
        print(f"  publishes during the restart: {during}")
        ack = await publish_until_ok(pa, {"i": "after-0"})
        # Let every node's pub/sub come back and re-subscribe.
        await asyncio.sleep(3.0)
        acks = await publish_many(pa, [{"i": f"after-{k}"} for k in range(1, 21)])
        check(all(x["op"] == "ack" for x in acks), "publishing works after the restart")
        new_epoch = acks[-1]["epoch"]
        check(new_epoch != epoch, f"the topic has a new epoch ({epoch} -> {new_epoch})")
        for s, name in ((sb, "B"), (sc, "C")):
            got = await s.wait_frames(
                lambda f: f.get("topic") == TOPIC and f["data"]["i"] == "after-20", 1, 15)
            check(got, f"{name}: receives messages published after the restart")
            tail = [f["data"]["i"] for f in s.frames if str(f["data"]["i"]).startswith("after-")]
            check(tail[-20:] == [f"after-{k}" for k in range(1, 21)],
                  f"{name}: post-restart messages in order, none lost")
            print(f"  {name}: events {[(e['op'], e.get('reason')) for e in s.events]}")
        check(all(nd.alive() for nd in nodes.values()), "every node is still running")

        print("5. redis with persistence: SHUTDOWN SAVE and start again")
        redis.kill()
        redis.start(persist=True)
        first = await publish_until_ok(pa, {"i": "p-0"})
        acks = await publish_many(pa, [{"i": f"p-{k}"} for k in range(1, 20)])
        p_epoch, p_last = acks[-1]["epoch"], acks[-1]["seq"]
        check(first["seq"] == 1 and p_last == 20, f"fresh redis: seq 1..20 ({first['seq']}..{p_last})")
        redis.shutdown_save()
        redis.start(persist=True)
        ack = await publish_until_ok(pa, {"i": "p-20"})
        check(ack["epoch"] == p_epoch and ack["seq"] == p_last + 1,
              f"history survived: same epoch, seq continues ({ack})")
        e = Node("e", port)
        nodes["e"] = e
        await asyncio.sleep(1.0)
        await recover_on(e, 5, p_epoch, p_last + 1)
        check(all(nd.alive() for nd in nodes.values()), "every node is still running")
        for s in (pa, sb, sc):
            await s.close()
        print("ALL CHECKS PASSED")
    finally:
        for nd in nodes.values():
            nd.stop()
        if redis.proc and redis.proc.poll() is None:
            redis.kill()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except AssertionError as e:
        print(f"FAILED: {e} (logs in {TMP})")
        sys.exit(1)
    else:
        shutil.rmtree(TMP, ignore_errors=True)
