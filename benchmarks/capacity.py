"""What one turn costs the Redis server, and the turn rate at which one server core saturates.

Drives scripted GRPO groups through a deploy's four roles (env, policy, user, reward workers,
built from ``deploy/ci.yaml`` as ``userrl worker`` builds them, in this process) plus a
learner-like consumer that reads and acks the scored groups, on the paper's training gyms
(Travel, Tau, Turtle, Persuade, Function; scripted expert policy and users, turn cap 16). Before
and after each run it reads the server's own counters (``INFO everything``): commands per name
(commandstats), CPU of the process and of its main thread, network bytes in and out, and
``used_memory``. Divided by the turns, episodes and groups the run finished, that is the cost
of a turn, an episode and a GRPO group; one core saturates at 10^6 / (main-thread CPU µs per
turn) turns/s.

Two regimes bound a real deploy: ``batched`` (``bus.read_count`` 128: few busy workers, one read
and one commit script per batch) and ``unbatched`` (``read_count`` 1: every message is read and
committed on its own, as with many lightly loaded workers). Counts of commands and bytes come
from the server's counters exactly; they still vary a little between runs, since how many
messages a read finds depends on timing. Server CPU measured on a loaded machine is noisy:
each regime runs ``--repeats`` times on fresh run names and the table gives the median and
the range. Background traffic of idle workers (heartbeats, reclaim scans, blocking reads that
time out) is measured apart, per second.

    python benchmarks/capacity.py [--groups 48] [--group-size 8] [--repeats 3]
    python benchmarks/capacity.py --at-cap           # 16-turn episodes, the user asked every turn
    python benchmarks/capacity.py --tokens 0         # text only: what the token ids cost
    python benchmarks/capacity.py --cluster          # on a local 3-node Redis Cluster
    python benchmarks/capacity.py --url redis://...  # an existing server (keep it otherwise idle)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import random
import statistics
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from redis.asyncio import Redis

from userrl.agents.base import GenRequest, GenResult
from userrl.agents.scripted import ScriptedExpertBackend
from userrl.agents.worker import PolicyWorker
from userrl.bus.client import is_cluster, split_cluster_flag
from userrl.bus.effects import Effects
from userrl.bus.embedded import EmbeddedRedis
from userrl.bus.local_cluster import LocalCluster
from userrl.bus.messages import Reset, ScoredGroup
from userrl.bus.transport import Bus
from userrl.bus.worker import Worker, WorkerSettings
from userrl.config import DeployConfig, load_config
from userrl.envs.datasets import load_tasks
from userrl.envs.worker import EnvWorker
from userrl.learner.reward.worker import RewardWorker
from userrl.logs import configure_logging
from userrl.rollouts import make_resets, send_resets
from userrl.runtime import make_bus
from userrl.sim_users.worker import UserWorker

CI = Path(__file__).resolve().parents[1] / "deploy" / "ci.yaml"
GYMS = ["userrl/Travel-v0", "userrl/Tau-v0", "userrl/Turtle-v0", "userrl/Persuade-v0", "userrl/Function-v0"]
MAX_TURNS = 16
CAP_GYM = "userrl/Telepathy-v0"  #: --at-cap: a policy that keeps asking this gym's user
REGIMES = {"batched": 128, "unbatched": 1}  #: regime -> bus.read_count
OWN = {"info", "memory|usage", "scan", "xrange", "client|setinfo", "hello", "auth", "ping", "cluster|slots"}


def counters(info: dict[str, Any]) -> dict[str, float]:
    """The counters of one ``INFO everything`` reply this benchmark diffs."""
    out = {
        "cpu_us": (info["used_cpu_user"] + info["used_cpu_sys"]) * 1e6,
        "main_us": (info.get("used_cpu_user_main_thread", 0) + info.get("used_cpu_sys_main_thread", 0)) * 1e6,
        "in": info["total_net_input_bytes"],
        "out": info["total_net_output_bytes"],
        "mem": info["used_memory"],
    }
    for k, v in info.items():
        if k.startswith("cmdstat_") and isinstance(v, dict):
            out[f"calls:{k[8:]}"] = v["calls"]
    return out


def diff(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    d = {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}
    # the benchmark's own reads (INFO, the memory census) are not the deploy's cost
    d = {k: v for k, v in d.items() if k.split(":", 1)[-1] not in OWN or k in ("in", "out")}
    d["calls"] = sum(v for k, v in d.items() if k.startswith("calls:"))
    if not d["main_us"]:  # a server without per-thread CPU: the process's
        d["main_us"] = d["cpu_us"]
    return d


async def node_client(bus: Bus, url: str) -> Redis:
    """A plain client to the one server holding this run (the slot's node on a cluster)."""
    plain, _ = split_cluster_flag(url)
    if not is_cluster(bus.redis):
        return Redis.from_url(plain)
    await bus.redis.initialize()  # type: ignore[attr-defined]  # the slot map
    node = bus.redis.get_node_from_key(bus.keys.epoch)  # type: ignore[attr-defined]
    pw = bus.redis.get_connection_kwargs().get("password")  # type: ignore[attr-defined]
    return Redis(host=node.host, port=node.port, password=pw)


class TokenExpert(ScriptedExpertBackend):
    """The scripted expert, plus the token traffic of a real policy: prompt ids extended by the
    newly seen messages (about 4 characters a token), ``tokens`` generated ids and their
    logprobs, ids drawn from a Qwen3-sized vocabulary (their msgpack size is a real one's)."""

    def __init__(self, tokens: int, asking: bool = False) -> None:
        super().__init__()
        self.tokens, self.asking = tokens, asking
        self.rng = random.Random(0)

    def ids(self, n: int) -> list[int]:
        return [self.rng.randrange(151_936) for _ in range(n)]

    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        if self.asking:  # keeps asking the user: every episode runs to the turn cap
            out = [GenResult(text="[action] Is it a living thing?") for _ in requests]
        else:
            out = await super().generate(requests)
        if not self.tokens:
            return out
        results = []
        for req, res in zip(requests, out, strict=True):
            new = sum(max(1, len(m.get("content") or "") // 4) for m in req.messages[req.n_seen :])
            prompt = list(req.prompt_ids or []) + self.ids(new)
            logprobs = [-self.rng.random() for _ in range(self.tokens)]
            results.append(
                dataclasses.replace(res, prompt_ids=prompt, token_ids=self.ids(self.tokens), logprobs=logprobs)
            )
        return results


def workers(bus: Bus, cfg: DeployConfig, tokens: int, asking: bool) -> list[Worker]:
    ws = lambda role: WorkerSettings(name=f"{role}-0", concurrency=256, heartbeat_interval_s=1.0)  # noqa: E731
    return [
        EnvWorker.from_config(bus, ws("env"), cfg),
        PolicyWorker(bus, ws("policy"), backend=TokenExpert(tokens, asking)),
        UserWorker.from_config(bus, ws("user"), cfg),
        RewardWorker.from_config(bus, ws("reward"), cfg),
    ]


async def learner(bus: Bus, n_groups: int, turns: list[int], done: anyio.Event) -> None:
    """Read and ack scored groups as the learner does (XREADGROUP, an empty commit each)."""
    stream, group = bus.keys.stream("learner"), bus.keys.group("learner")
    seen = 0
    while seen < n_groups:
        ds = await bus.read(stream, group, "learner-0", count=64, block_ms=200)
        await bus.commit([(d, Effects()) for d in ds])
        for d in ds:
            assert isinstance(d.msg, ScoredGroup) and d.msg.status == "ok", d.msg
            turns[0] += sum(int(it["n_turns"]) for it in d.msg.items)
        seen += len(ds)
    done.set()


async def census(r: Redis, prefix: str) -> Counter[str]:
    """Bytes held per key kind of the run (``MEMORY USAGE`` of each key)."""
    out: Counter[str] = Counter()
    async for key in r.scan_iter(match=prefix + "*", count=1000):
        rest = key.decode()[len(prefix) :].split(":")
        kind = ":".join(rest[:2]) if rest[0] in ("stream", "episodes", "groups", "deploy") else rest[0]
        out[kind] += int(await r.memory_usage(key) or 0)
    return out


def make_groups(groups: int, group_size: int, gyms: list[str]) -> list[Reset]:
    """``groups`` GRPO groups, the gyms taking turns, each task under a fresh id."""
    tasks = {g: load_tasks(g, "train") for g in gyms}
    out: list[Reset] = []
    for i in range(groups):
        g = gyms[i % len(gyms)]
        task = tasks[g][(i // len(gyms)) % len(tasks[g])]
        out += make_resets(g, [dict(task, id=f"{task['id']}-{i}")], group_size=group_size, max_turns=MAX_TURNS)
    return out


async def sample_peak(r: Redis, peak: list[float]) -> None:
    """The highest ``used_memory`` while the run's episodes are live."""
    while True:
        peak[0] = max(peak[0], (await r.info("memory"))["used_memory"])
        await anyio.sleep(0.1)


async def one_run(url: str, regime: str, args: argparse.Namespace) -> dict[str, Any]:
    run = f"cap-{regime}-{uuid.uuid4().hex[:6]}"
    # commit keys live an hour here (6 minutes by default) so none expires before the census
    sets = [f"run={run}", f"bus.read_count={REGIMES[regime]}", "bus.block_ms=200", "bus.idempotency_ttl_ms=3600000"]
    cfg = load_config(CI, sets)
    bus = make_bus(cfg, url)
    r = await node_client(bus, url)
    resets = make_groups(args.groups, args.group_size, [CAP_GYM] if args.at_cap else GYMS)
    ws = workers(bus, cfg, args.tokens, args.at_cap)
    turns, done, peak = [0], anyio.Event(), [0.0]
    try:
        async with anyio.create_task_group() as tg:
            for w in ws:
                tg.start_soon(w.async_run)
            await anyio.sleep(1.0)  # groups created, first blocking reads out
            i0 = counters(await r.info("everything"))
            await anyio.sleep(args.idle_seconds)
            i1, t0 = counters(await r.info("everything")), time.perf_counter()
            tg.start_soon(learner, bus, args.groups, turns, done)
            tg.start_soon(sample_peak, r, peak)
            await send_resets(bus, resets)
            with anyio.fail_after(600):
                await done.wait()
            i2, wall = counters(await r.info("everything")), time.perf_counter() - t0
            for w in ws:
                w.stop()
            tg.cancel_scope.cancel()
        # work streams are trimmed to their consumption point every few seconds: what stays is
        # what the run retains (logs, commit keys, results), so trim them before measuring it
        async for key in r.scan_iter(match=bus.keys.prefix + "stream:*", count=1000):
            if await r.type(key) == b"stream":
                await bus.trim(key.decode(), approximate=False)
        held = await census(r, bus.keys.prefix)
    finally:
        with contextlib.suppress(Exception):
            async for key in r.scan_iter(match=bus.keys.prefix + "*", count=1000):
                await r.delete(key)
        await r.aclose()
        await bus.redis.aclose()
    load = diff(i1, i2)
    load["held"] = sum(held.values())
    load["peak"] = peak[0] - i1["mem"]
    load["user"] = ws[2].stats["committed"]
    return {
        "idle": diff(i0, i1),
        "idle_s": args.idle_seconds,
        "load": load,
        "turns": turns[0],
        "episodes": len(resets),
        "groups": args.groups,
        "wall": wall,
        "held": held,
    }


def med(xs: list[float]) -> str:
    m = statistics.median(xs)
    spread = f" [{min(xs):,.0f}–{max(xs):,.0f}]" if max(xs) - min(xs) > 0.05 * abs(m) else ""
    return f"{m:,.0f}{spread}" if abs(m) >= 10 else f"{m:.2f}"


ROWS = [
    ("commands (in scripts too)", lambda d: d["calls"]),
    ("  commit scripts (EVALSHA)", lambda d: d.get("calls:evalsha", 0) + d.get("calls:eval", 0)),
    ("  reads (XREADGROUP)", lambda d: d.get("calls:xreadgroup", 0)),
    ("server CPU µs, main thread", lambda d: d["main_us"]),
    ("server CPU µs, process", lambda d: d["cpu_us"]),
    ("bytes in", lambda d: d["in"]),
    ("bytes out", lambda d: d["out"]),
    ("bytes of memory kept", lambda d: d["held"]),
]


def report(results: dict[str, list[dict[str, Any]]], tokens: int, at_cap: bool) -> None:
    for regime, runs in results.items():
        r0 = runs[0]
        print(
            f"\n{regime} (bus.read_count {REGIMES[regime]}){' at the turn cap' if at_cap else ''}: {len(runs)} runs of {r0['groups']} groups x "
            f"{r0['episodes'] // r0['groups']} episodes, {tokens} generated tokens a turn; turns/episode "
            f"{med([r['turns'] / r['episodes'] for r in runs])}, user replies/turn "
            f"{med([r['load']['user'] / r['turns'] for r in runs])}"
        )
        print(f"{'per':<28} {'turn':>16} {'episode':>20} {'GRPO group':>24}")
        for name, f in ROWS:
            cells = [med([f(r["load"]) / r[unit] for r in runs]) for unit in ("turns", "episodes", "groups")]
            print(f"{name:<28} {cells[0]:>16} {cells[1]:>20} {cells[2]:>24}")
        sat = [1e6 * r["turns"] / r["load"]["main_us"] for r in runs]
        print(f"ONE CORE SATURATES AT: {med(sat)} turns/s (10^6 / main-thread CPU µs per turn)")
        print(f"this box drove {med([r['turns'] / r['wall'] for r in runs])} turns/s (bound by the Python workers)")
        peak = med([r["load"]["peak"] / r["episodes"] for r in runs])
        print(f"peak memory while all episodes were live: {peak} bytes per episode dispatched")
        idle = [(r["idle"], r["idle_s"]) for r in runs]
        print(
            f"idle background (4 workers + learner at rest): {med([d['calls'] / t for d, t in idle])} commands/s, "
            f"{med([d['main_us'] / t for d, t in idle])} CPU µs/s"
        )
        per_cmd: Counter[str] = Counter()
        held: Counter[str] = Counter()
        for r in runs:
            per_cmd.update({k[6:]: v / r["turns"] / len(runs) for k, v in r["load"].items() if k.startswith("calls:")})
            held.update({k: v / r["turns"] / len(runs) for k, v in r["held"].items()})
        print("commands per turn: " + ", ".join(f"{k} {v:.2f}" for k, v in per_cmd.most_common(11) if v >= 0.01))
        print("memory kept per turn by key kind (bytes): " + ", ".join(f"{k} {v:,.0f}" for k, v in held.most_common(6)))


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning")
    with contextlib.ExitStack() as stack:
        if args.url:
            url = args.url
        elif args.cluster:
            url = stack.enter_context(LocalCluster(3)).url
        else:
            url = stack.enter_context(EmbeddedRedis()).url
        where = (
            "a local 3-node cluster" if args.cluster else ("the server at --url" if args.url else "a private server")
        )
        print(f"server cost per turn on {where}; median [min–max] of {args.repeats} runs per regime")
        results: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.repeats):  # interleaved: drift in the machine's load hits both regimes
            for regime in args.regimes:
                results.setdefault(regime, []).append(await one_run(url, regime, args))
        report(results, args.tokens, args.at_cap)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=48, help="GRPO groups per run")
    ap.add_argument("--group-size", type=int, default=8, help="episodes per group (the paper: 8)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=200, help="generated tokens per policy turn (0: text only)")
    ap.add_argument(
        "--at-cap", action="store_true", help="every episode runs to the 16-turn cap, the user asked every turn"
    )
    ap.add_argument("--regimes", nargs="+", choices=list(REGIMES), default=list(REGIMES))
    ap.add_argument("--idle-seconds", type=float, default=3.0, help="idle window measured before each run")
    ap.add_argument("--url", help="an existing server (keep it otherwise idle: its counters are server-wide)")
    ap.add_argument("--cluster", action="store_true", help="start a local 3-node Redis Cluster and run on it")
    anyio.run(main, ap.parse_args())
