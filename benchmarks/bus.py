"""Bus throughput: turns/s of the framework next to a raw 4-hop Redis Streams pipeline.

One "turn" is what a dialogue step costs on the bus: env -> policy -> env -> user -> env.

* raw: four asyncio consumers move a tiny payload around that loop with plain XREADGROUP /
  XADD / XACK (pipelined per batch), no idempotency, no snapshots, no episode logs.
* userrl: the real env, policy and user workers on TelepathyGym (every turn asks the scripted
  user a yes/no question), with an instant policy that always asks a question (16-turn episodes, replaced as they
  finish); every hop is an
  atomic Lua commit with its idempotency key, the state snapshot and the readable episode log.

Both run in this one process and event loop against the same private Redis, one after the
other, at 1, 64 and 1024 episodes in flight. Prints turns/s and the ratio userrl / raw.

    python benchmarks/bus.py [--inflight 1 64 1024] [--seconds 8]
"""

from __future__ import annotations

import argparse
import time

import anyio
import msgpack

from userrl.agents.base import GenRequest, GenResult
from userrl.bus.client import make_client
from userrl.bus.embedded import EmbeddedRedis
from userrl.bus.keys import Keys
from userrl.bus.transport import Bus, BusSettings
from userrl.bus.worker import WorkerSettings
from userrl.envs.datasets import load_tasks
from userrl.envs.worker import EnvWorker
from userrl.logs import configure_logging
from userrl.rollouts import make_resets, send_resets
from userrl.sim_users.worker import UserWorker

ENV_ID = "userrl/Telepathy-v0"
MAX_TURNS = 16  # the paper's rollout cap; finished episodes are replaced to keep the load constant


class AskingPolicy:
    """An instant policy that keeps asking; episodes end at the turn cap."""

    trainable = False
    version = 0

    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        return [GenResult(text="[action] Is it a living thing?") for _ in requests]

    async def load_weights(self, path: str, version: int) -> float:
        return 0.0


async def count_turns(bus: Bus) -> int:
    return int(await bus.redis.hget(bus.keys.counters, "bench_turns") or 0)


async def run_userrl(url: str, inflight: int, seconds: float) -> float:
    from userrl.agents.worker import PolicyWorker

    keys = Keys(f"bench{inflight}")
    settings = BusSettings(read_count=256, block_ms=50, min_idle_ms=60_000)
    bus = Bus(make_client(url, block_ms=50, max_connections=64), keys, settings)
    ws = lambda n: WorkerSettings(name=n, concurrency=256, heartbeat_interval_s=1.0)  # noqa: E731
    env = EnvWorker(bus, ws("env"), episode_ttl_s=60)
    workers = [env, PolicyWorker(bus, ws("policy"), backend=AskingPolicy()), UserWorker(bus, ws("user"))]
    tasks = load_tasks(ENV_ID, "train")
    started = 0

    def feed(n: int) -> list:
        nonlocal started
        out = make_resets(ENV_ID, [dict(tasks[i % len(tasks)], id=f"{tasks[i % len(tasks)]['id']}-{i}")
                                   for i in range(started, started + n)], max_turns=MAX_TURNS)
        started += n
        return out

    async def refill() -> None:  # keep `inflight` episodes live: a finished one is replaced
        while True:
            await anyio.sleep(0.02)
            done = int(await bus.redis.hget(bus.keys.counters, "episodes_ok") or 0)
            if started - done < inflight:
                await send_resets(bus, feed(inflight - (started - done)))

    await send_resets(bus, feed(inflight))
    async with anyio.create_task_group() as tg:
        for w in workers:
            tg.start_soon(w.async_run)
        tg.start_soon(refill)
        await anyio.sleep(1.0)  # warm up
        t0, n0 = time.perf_counter(), env.stats["committed"]
        await anyio.sleep(seconds)
        t1, n1 = time.perf_counter(), env.stats["committed"]
        for w in workers:
            w.stop()
        tg.cancel_scope.cancel()
    await bus.redis.flushdb()
    await bus.redis.aclose()
    # the env worker commits 2 messages per turn (policy reply, user reply), plus resets
    return (n1 - n0) * MAX_TURNS / (2 * MAX_TURNS + 1) / (t1 - t0)


async def run_raw(url: str, inflight: int, seconds: float) -> float:
    r = make_client(url, block_ms=50, max_connections=64)
    s = {h: f"raw{inflight}:{h}" for h in ("env", "policy", "user")}
    for name in s.values():
        await r.xgroup_create(name, "g", id="0", mkstream=True)
    turns = 0
    stop = anyio.Event()

    async def hop(src: str, route) -> None:
        nonlocal turns
        while not stop.is_set():
            resp = await r.xreadgroup("g", "c", {src: ">"}, count=256, block=50)
            if not resp:
                continue
            entries = resp[0][1]
            async with r.pipeline(transaction=False) as p:
                for eid, f in entries:
                    msg = msgpack.unpackb(f[b"p"])
                    dst, msg2 = route(msg)
                    if msg2.get("turn_done"):
                        turns += 1
                    p.xadd(dst, {b"p": msgpack.packb(msg2)})
                    p.xack(src, "g", eid)
                await p.execute()

    def env_route(m: dict) -> tuple[str, dict]:
        if m["from"] == "policy":
            return s["user"], {"ep": m["ep"], "from": "env"}
        return s["policy"], {"ep": m["ep"], "from": "env", "turn_done": m["from"] == "user"}

    async with anyio.create_task_group() as tg:
        tg.start_soon(hop, s["env"], env_route)
        tg.start_soon(hop, s["policy"], lambda m: (s["env"], {"ep": m["ep"], "from": "policy"}))
        tg.start_soon(hop, s["user"], lambda m: (s["env"], {"ep": m["ep"], "from": "user"}))
        for i in range(inflight):
            await r.xadd(s["policy"], {b"p": msgpack.packb({"ep": i, "from": "env"})})
        await anyio.sleep(1.0)
        t0, n0 = time.perf_counter(), turns
        await anyio.sleep(seconds)
        t1, n1 = time.perf_counter(), turns
        stop.set()
    await r.flushdb()
    await r.aclose()
    return (n1 - n0) / (t1 - t0)


async def main(inflight: list[int], seconds: float) -> None:
    configure_logging("warning")
    with EmbeddedRedis() as server:
        print(f"{'in flight':>10} {'raw turns/s':>12} {'userrl turns/s':>15} {'ratio':>7}")
        for n in inflight:
            raw = await run_raw(server.url, n, seconds)
            ours = await run_userrl(server.url, n, seconds)
            print(f"{n:>10} {raw:>12.0f} {ours:>15.0f} {ours / raw:>7.2f}", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inflight", type=int, nargs="+", default=[1, 64, 1024])
    ap.add_argument("--seconds", type=float, default=8.0)
    a = ap.parse_args()
    anyio.run(main, a.inflight, a.seconds)
