"""Bus throughput and turn latency: the framework's worker base next to raw redis-py.

Default: a 4-hop turn pipeline (policy -> env -> user -> reward, then the episode's next turn)
built on :class:`userrl.bus.worker.Worker` with instant handlers; every hop is the framework's
atomic Lua commit (idempotency key, XADD, XACK) with message decoding and validation. Next to
it, the same pipeline in raw redis-py: batched XREADGROUP, one pipelined XADD+XACK per batch,
no framework. Both run in this one process and event loop against the same private Redis, one
after the other, at 1, 64 and 1024 episodes in flight. Prints turns/s, p50/p99 turn latency,
and the ratio userrl / raw.

``--gym`` instead runs the real env, policy and user workers on TelepathyGym (a scripted
user answers every turn) next to a raw 4-hop relay.

``--parser`` picks redis-py's reply parser (and command packer) for every client: ``default``
(what redis-py picks: hiredis when it is installed), ``python`` (redis-py's own, even with
hiredis installed), ``hiredis``, or ``both``: each in-flight count runs under both,
interleaved (``--repeat N`` times), and two more rows give the hiredis/python ratio of the
median turns/s, raw and userrl.

    python benchmarks/bus.py [--inflight 1 64 1024] [--seconds 8] [--gym] [--parser both] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio
import msgpack
from redis.asyncio import Connection, Redis
from redis.asyncio.connection import _AsyncHiredisParser, _AsyncRESP3Parser
from redis.utils import HIREDIS_AVAILABLE

from userrl.agents.base import GenRequest, GenResult
from userrl.bus.client import make_client
from userrl.bus.embedded import EmbeddedRedis
from userrl.bus.keys import Keys
from userrl.bus.messages import Probe
from userrl.bus.transport import Bus, BusSettings, Delivery, Effects
from userrl.bus.worker import Worker, WorkerSettings
from userrl.envs.datasets import load_tasks
from userrl.envs.worker import EnvWorker
from userrl.logs import configure_logging
from userrl.rollouts import make_resets, send_resets
from userrl.sim_users.worker import UserWorker


class PythonParserConnection(Connection):
    """redis-py's pure-Python reply parser and command packer, even when hiredis is installed."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**{**kwargs, "parser_class": _AsyncRESP3Parser})  # type: ignore[arg-type]
        self._command_packer = None  # redis-py packs with hiredis whenever it is importable


class HiredisParserConnection(Connection):
    """hiredis's C reply parser (and command packer)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**{**kwargs, "parser_class": _AsyncHiredisParser})  # type: ignore[arg-type]


PARSERS: dict[str, type[Connection] | None] = {
    "default": None,
    "python": PythonParserConnection,
    "hiredis": HiredisParserConnection,
}
#: the parser every client of the current measurement uses (set by main)
parser = "default"


def client(url: str) -> Redis:
    """The bus's client for ``url``, its connections using :data:`parser`."""
    r = make_client(url, block_ms=50, max_connections=64)
    cls = PARSERS[parser]
    if cls is not None:
        r.connection_pool.connection_class = cls  # no connection is open yet
    return r


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


async def run_gym(url: str, inflight: int, seconds: float) -> float:
    from userrl.agents.worker import PolicyWorker

    keys = Keys(f"bench{inflight}")
    settings = BusSettings(read_count=256, block_ms=50, min_idle_ms=60_000)
    bus = Bus(client(url), keys, settings)
    ws = lambda n: WorkerSettings(name=n, concurrency=256, heartbeat_interval_s=1.0)  # noqa: E731
    env = EnvWorker(bus, ws("env"))
    workers = [env, PolicyWorker(bus, ws("policy"), backend=AskingPolicy()), UserWorker(bus, ws("user"))]
    tasks = load_tasks(ENV_ID, "train")
    started = 0

    def feed(n: int) -> list:
        nonlocal started
        out = make_resets(
            ENV_ID,
            [dict(tasks[i % len(tasks)], id=f"{tasks[i % len(tasks)]['id']}-{i}") for i in range(started, started + n)],
            max_turns=MAX_TURNS,
        )
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


async def run_gym_raw(url: str, inflight: int, seconds: float) -> float:
    r = client(url)
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


# ---- the 4-hop turn pipeline on the worker base, instant handlers -----------------------------

HOPS = ("policy", "env", "user", "reward")


class Hop(Worker):
    """One stage of the turn pipeline: forward the probe to the next stage, nothing else."""

    role = "hop"
    latencies: list[float] = []

    def __init__(self, bus: Bus, settings: WorkerSettings, stage: int, counter: list[int]) -> None:
        self.role = f"bench_{HOPS[stage]}"  # type: ignore[misc]
        super().__init__(bus, settings)
        self.stage, self.counter = stage, counter
        self.next_stream = bus.keys.stream(f"bench_{HOPS[(stage + 1) % 4]}")

    async def handle(self, d: Delivery) -> Effects:
        m = d.msg
        assert isinstance(m, Probe)
        t0 = m.body["t0"]
        if self.stage == 3:  # the turn is done: count it and start the episode's next turn
            self.counter[0] += 1
            Hop.latencies.append(time.perf_counter() - t0)
            nxt = Probe(episode_id=m.episode_id, seq=m.seq + 1, hop=0, body={"t0": time.perf_counter()})
        else:
            nxt = Probe(episode_id=m.episode_id, seq=m.seq, hop=m.hop + 1, body={"t0": t0})
        return Effects().send(self.next_stream, nxt)


async def run_pipeline(url: str, inflight: int, seconds: float) -> tuple[float, float, float]:
    keys = Keys(f"pipe{inflight}")
    bus = Bus(client(url), keys, BusSettings(read_count=256, block_ms=50, min_idle_ms=60_000))
    counter = [0]
    Hop.latencies = []
    workers = [
        Hop(bus, WorkerSettings(name=f"w{i}", concurrency=1024, heartbeat_interval_s=1.0), i, counter) for i in range(4)
    ]
    for i in range(inflight):
        await bus.send(keys.stream("bench_policy"), Probe(episode_id=f"e{i}", body={"t0": time.perf_counter()}))
    async with anyio.create_task_group() as tg:
        for w in workers:
            tg.start_soon(w.async_run)
        await anyio.sleep(1.0)
        n0, t0, lat0 = counter[0], time.perf_counter(), len(Hop.latencies)
        await anyio.sleep(seconds)
        n1, t1 = counter[0], time.perf_counter()
        lats = sorted(Hop.latencies[lat0:])
        for w in workers:
            w.stop()
    await bus.redis.flushdb()
    await bus.redis.aclose()
    return (n1 - n0) / (t1 - t0), _pct(lats, 0.5), _pct(lats, 0.99)


async def run_pipeline_raw(url: str, inflight: int, seconds: float) -> tuple[float, float, float]:
    r = client(url)
    streams = [f"rawpipe{inflight}:{h}" for h in HOPS]
    for name in streams:
        await r.xgroup_create(name, "g", id="0", mkstream=True)
    turns, lats = [0], []
    stop = anyio.Event()

    async def hop(stage: int) -> None:
        src, dst = streams[stage], streams[(stage + 1) % 4]
        while not stop.is_set():
            resp = await r.xreadgroup("g", "c", {src: ">"}, count=256, block=50)
            if not resp:
                continue
            async with r.pipeline(transaction=False) as p:
                for eid, f in resp[0][1]:
                    m = msgpack.unpackb(f[b"p"])
                    if stage == 3:
                        turns[0] += 1
                        lats.append(time.perf_counter() - m["t0"])
                        m = {"ep": m["ep"], "t0": time.perf_counter()}
                    p.xadd(dst, {b"p": msgpack.packb(m)})
                    p.xack(src, "g", eid)
                await p.execute()

    async with anyio.create_task_group() as tg:
        for stage in range(4):
            tg.start_soon(hop, stage)
        for i in range(inflight):
            await r.xadd(streams[0], {b"p": msgpack.packb({"ep": i, "t0": time.perf_counter()})})
        await anyio.sleep(1.0)
        n0, t0, lat0 = turns[0], time.perf_counter(), len(lats)
        await anyio.sleep(seconds)
        n1, t1 = turns[0], time.perf_counter()
        window = sorted(lats[lat0:])
        stop.set()
    await r.flushdb()
    await r.aclose()
    return (n1 - n0) / (t1 - t0), _pct(window, 0.5), _pct(window, 0.99)


def _pct(xs: list[float], q: float) -> float:
    return xs[min(int(q * len(xs)), len(xs) - 1)] * 1000 if xs else float("nan")


async def main(inflight: list[int], seconds: float, gym: bool, parsers: list[str], repeat: int) -> None:
    global parser
    configure_logging("warning")
    both = len(parsers) > 1
    col = f" {'parser':>8}" if both else ""
    with EmbeddedRedis() as server:
        if gym:
            print("end to end on TelepathyGym (env + policy + user workers, scripted):")
            print(f"{'in flight':>10}{col} {'raw turns/s':>12} {'userrl turns/s':>15} {'ratio':>7}")
        else:
            print("4-hop turn pipeline (policy -> env -> user -> reward), instant handlers:")
            print(
                f"{'in flight':>10}{col} {'raw turns/s':>12} {'p50/p99 ms':>13} {'userrl turns/s':>15} "
                f"{'p50/p99 ms':>13} {'ratio':>7}"
            )
        for n in inflight:
            turns: dict[str, dict[str, list[float]]] = {p: {"raw": [], "userrl": []} for p in parsers}
            for rep in range(repeat):
                # interleaved: the parsers' order alternates, so a drift in the machine's load
                # does not always favour the same one
                order = parsers if (n + rep) % 2 == 0 else parsers[::-1]
                rows: dict[str, str] = {}
                for parser in order:
                    tag = f" {parser:>8}" if both else ""
                    if gym:
                        raw = await run_gym_raw(server.url, n, seconds)
                        ours = await run_gym(server.url, n, seconds)
                        rows[parser] = f"{n:>10}{tag} {raw:>12.0f} {ours:>15.0f} {ours / raw:>7.2f}"
                    else:
                        raw, rp50, rp99 = await run_pipeline_raw(server.url, n, seconds)
                        ours, p50, p99 = await run_pipeline(server.url, n, seconds)
                        rows[parser] = (
                            f"{n:>10}{tag} {raw:>12.0f} {rp50:>6.1f}/{rp99:<6.1f} {ours:>15.0f} "
                            f"{p50:>6.1f}/{p99:<6.1f} {ours / raw:>7.2f}"
                        )
                    turns[parser]["raw"].append(raw)
                    turns[parser]["userrl"].append(ours)
                for p in parsers:
                    print(rows[p], flush=True)
            if both:
                for side in ("raw", "userrl"):
                    speedup = statistics.median(turns["hiredis"][side]) / statistics.median(turns["python"][side])
                    print(f"{n:>10} {f'hiredis/python {side} turns/s (median of {repeat})':>50} {speedup:>7.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inflight", type=int, nargs="+", default=[1, 64, 1024])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--gym", action="store_true", help="end to end on a real gym instead of instant handlers")
    ap.add_argument(
        "--parser",
        choices=["default", "python", "hiredis", "both"],
        default="default",
        help="redis-py's reply parser: default (hiredis when installed), python, hiredis, or both interleaved",
    )
    ap.add_argument("--repeat", type=int, default=1, help="measurements of each in-flight count (per parser)")
    a = ap.parse_args()
    if a.parser in ("hiredis", "both") and not HIREDIS_AVAILABLE:
        ap.error("--parser hiredis/both needs hiredis>=3.2 (pip install 'redis[hiredis]')")
    if a.repeat < 1:
        ap.error("--repeat must be >= 1")
    parsers = ["python", "hiredis"] if a.parser == "both" else [a.parser]
    anyio.run(main, a.inflight, a.seconds, a.gym, parsers, a.repeat)
