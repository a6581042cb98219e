#!/usr/bin/env python3
"""Publish throughput through one node, as acknowledged publishes per second.

    perf/scenarios/cluster_publish_rate.py ws://127.0.0.1:8080/ws TOPICS N

One WebSocket connection sends N `publish` ops (with ids, to TOPICS topics round-robin:
md.t0, md.t1, ...) as fast as it can while it reads the acks; prints acks/s. Against a
cluster node (`--cluster nats|redis`) this is the rate at which the broker sequences and
confirms them; against a single node, the rate of the shards. The Python client itself tops
out around 75k messages/s on the 2-core test machine: figures near that are the client's.
Needs `pip install websockets`; the node must allow anonymous publishing and no per-connection
message rate (TICKCAST_AUTH__ANONYMOUS_PUBS='[">"]' TICKCAST_LIMITS__CLIENT_MESSAGES_PER_S=0).
"""
import asyncio
import json
import sys
import time

import websockets


async def main(url: str, topics: int, n: int) -> None:
    async with websockets.connect(url, max_queue=None) as ws:
        await ws.recv()  # welcome
        t0 = time.perf_counter()

        async def sender() -> None:
            for i in range(n):
                op = {"op": "publish", "id": i, "topic": f"md.t{i % topics}", "data": {"i": i}}
                await ws.send(json.dumps(op))

        task = asyncio.create_task(sender())
        acks = errors = 0
        while acks + errors < n:
            m = json.loads(await ws.recv())
            if m.get("op") == "ack":
                acks += 1
            else:
                errors += 1
        await task
        dt = time.perf_counter() - t0
        print(f"topics={topics} n={n} acks={acks} errors={errors} "
              f"{n / dt:.0f} publishes/s ({dt * 1e6 / n:.0f} us each)")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
