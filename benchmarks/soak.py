"""Soak: continuous episodes under random kill -9 of workers; Redis memory must stay under the
bus's memory budget (``bus.memory_mb``) and flat.

Starts a deploy the way ``userrl up`` does (the launcher: a private Redis, 2 replicas per role,
scripted policy and users from ``deploy/ci.yaml``, with the ``bus`` section at its defaults, the
embedded server's: budget, caps, log TTL, idempotency window), keeps ``--inflight`` GRPO groups of
4 episodes in flight (a new group whenever one finishes), SIGKILLs a random worker every
``--kill-every`` seconds (the launcher restarts it), and every ``--sample-s`` seconds prints Redis
``used_memory`` against the budget, the number of keys, the mean worker RSS and the stream
lengths. Halfway and at the end it measures what each kind of key holds (``MEMORY USAGE`` of a
sample of each, times their count) and per finished episode. At the end it stops dispatching,
drains, and prints the peak against the budget, the growth between minute ``--warmup`` and the
end, and the episodes lost (dispatched, never finished) and doubled (two trajectories), counted
from the reward stream through the soak's own consumer group.

    python benchmarks/soak.py                # 30 minutes
    python benchmarks/soak.py --minutes 6    # quick
    python benchmarks/soak.py --set bus.memory_mb=128   # another budget (any config override)
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from userrl.bus.client import make_client
from userrl.bus.messages import Trajectory
from userrl.bus.reconcile import Reconciler
from userrl.bus.transport import Bus, BusSettings
from userrl.config import load_config
from userrl.deploy.launcher import Launcher
from userrl.envs.datasets import load_tasks
from userrl.logs import configure_logging
from userrl.rollouts import make_resets

REPO = Path(__file__).resolve().parents[1]
GYMS = ("userrl/Telepathy-v0", "userrl/Function-v0")
STREAMS = ("env", "policy", "user", "reward", "learner")


def overrides(run_dir: str, extra: list[str]) -> list[str]:
    """Two replicas per role; every ``bus`` field at its default (deploy/ci.yaml shortens some
    for the tests), then ``extra``."""
    out = [f"run_dir={run_dir}", "run=soak", "log_level=warning"]
    out += [f"bus.{k}={v}" for k, v in BusSettings().as_written().items()]
    return out + [f"workers.{r}.replicas=2" for r in ("env", "policy", "user", "reward")] + extra


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Soak:
    def __init__(self, bus: Bus, launcher: Launcher, args: argparse.Namespace) -> None:
        self.bus, self.launcher, self.args = bus, launcher, args
        self.tasks = {g: load_tasks(g, "train") for g in GYMS}
        self.reconciler = Reconciler(bus, [], stall_s=120.0)
        self.group = f"wait:soak-{os.getpid()}"
        self.pending: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.status: Counter[str] = Counter()
        self.dispatched = 0
        self.kills = 0
        self.samples: list[dict[str, Any]] = []
        self.budget_mb = bus.settings.memory_mb
        self.breakdowns: list[tuple[float, list[tuple[str, int, float, int, float]]]] = []

    async def dispatch(self) -> None:
        while len(self.pending) < self.args.inflight * 4:
            gym = GYMS[self.dispatched % len(GYMS)]
            task = random.choice(self.tasks[gym])
            resets = make_resets(gym, [task], group_size=4, seed=self.dispatched, prefix=f"s{self.dispatched:07d}:")
            self.dispatched += 1
            self.pending |= {r.episode_id for r in resets}
            await self.reconciler.send(resets)

    async def read(self) -> set[str]:
        stream = self.bus.keys.stream("reward")
        ds = await self.bus.read(stream, self.group, "soak", count=512, block_ms=200)
        if ds:
            await self.bus.redis.xack(stream, self.group, *[d.entry_id for d in ds])
        done = []
        for d in ds:
            if isinstance(d.msg, Trajectory):
                self.counts[d.msg.episode_id] += 1
                self.status[d.msg.status] += 1
                done.append(d.msg.episode_id)
        self.pending -= set(done)
        self.reconciler.forget(done)
        return self.pending

    def kill_one(self) -> None:
        pids = self.launcher.pids()
        if pids:
            name, pid = random.choice(sorted(pids.items()))
            os.kill(pid, signal.SIGKILL)
            self.kills += 1

    async def sample(self, t0: float) -> None:
        r = self.bus.redis
        info = await r.info("memory")
        rss = [x for x in (rss_mb(p) for p in self.launcher.pids().values()) if x is not None]
        lens = {s: int(await r.xlen(self.bus.keys.stream(s))) for s in STREAMS}
        lens["results"] = int(await r.xlen(self.bus.keys.results))
        lens["dead"] = int(await r.xlen(self.bus.keys.dead))
        finished = sum(self.counts.values())
        prev = self.samples[-1] if self.samples else {"min": 0.0, "finished": 0}
        minute = (time.monotonic() - t0) / 60
        rate = (finished - prev["finished"]) / max((minute - prev["min"]) * 60, 1e-9)
        used = info["used_memory"] / 2**20
        # what the server holds scales with the episode rate (TTL windows x rate), so a flat
        # state shows as flat memory per episode/s when the machine's load changes the rate
        row = {
            "min": round(minute, 2),
            "used_mb": round(used, 2),
            "of_budget": f"{used / self.budget_mb:.0%}",
            "keys": int(await r.dbsize()),
            "rss_mb": round(sum(rss) / max(len(rss), 1), 1),
            "finished": finished,
            "eps_per_s": round(rate, 1),
            "kb_per_eps": round(used * 1024 / max(rate, 1e-9), 1),
            "in_flight": len(self.pending),
            "kills": self.kills,
            **lens,
        }
        self.samples.append(row)
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)

    async def breakdown(self, t0: float) -> None:
        """What each kind of key holds: its count, MB (``MEMORY USAGE`` of up to 200 of them,
        scaled to the count), bytes per key and per episode finished so far (what is capped or
        expires holds less per episode the longer the run)."""
        r, prefix = self.bus.redis, self.bus.keys.prefix
        kinds: Counter[str] = Counter()
        sizes: dict[str, list[int]] = {}
        async for key in r.scan_iter(match=f"{prefix}*", count=2000):
            parts = key.decode()[len(prefix) :].split(":")
            kind = ":".join(parts[:2]) if parts[0] in ("stream", "episodes", "groups") and len(parts) > 1 else parts[0]
            kinds[kind] += 1
            if len(sizes.setdefault(kind, [])) < 200:
                sizes[kind].append(int(await r.memory_usage(key, samples=0) or 0))
        finished = max(sum(self.counts.values()), 1)
        rows = []
        for kind, n in kinds.items():
            mb = sum(sizes[kind]) / len(sizes[kind]) * n / 2**20
            rows.append((kind, n, round(mb, 2), round(mb * 2**20 / n), round(mb * 2**20 / finished, 1)))
        rows.sort(key=lambda row: -row[2])
        self.breakdowns.append((round((time.monotonic() - t0) / 60, 1), rows))
        print(f"by kind at minute {self.breakdowns[-1][0]} ({finished} episodes finished so far):")
        for kind, n, mb, per_key, per_ep in [row for row in rows if row[2] >= 0.01]:
            print(
                f"  {kind:<20} keys {n:>8}  {mb:>8.2f} MB  {per_key:>9} B per key  "
                f"{per_ep:>8.1f} B per episode finished so far"
            )

    async def run(self) -> None:
        stream = self.bus.keys.stream("reward")
        await self.bus.ensure_group(stream, self.group, "$")
        await self.reconciler.start()
        t0 = time.monotonic()
        end = t0 + self.args.minutes * 60
        next_kill = t0 + self.args.kill_every
        next_sample = t0
        next_check = t0 + 5
        halfway = t0 + self.args.minutes * 30
        while time.monotonic() < end:
            now = time.monotonic()
            if halfway and now >= halfway:
                halfway = 0
                await self.breakdown(t0)
            await self.dispatch()
            await self.read()
            if now >= next_check:
                next_check = now + 5
                await self.reconciler.check(set(self.pending), refresh=self.read)
            if now >= next_kill:
                next_kill = now + self.args.kill_every
                self.kill_one()
            if now >= next_sample:
                next_sample = now + self.args.sample_s
                await self.sample(t0)
        if time.monotonic() - t0 - self.samples[-1]["min"] * 60 > 10:  # a rate over a few seconds is noise
            await self.sample(t0)
        await self.breakdown(t0)
        drain_end = time.monotonic() + self.args.drain_s
        while self.pending and time.monotonic() < drain_end:  # no new episodes: let them finish
            await self.read()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 5
                await self.reconciler.check(set(self.pending), refresh=self.read)
        await self.bus.redis.xgroup_destroy(stream, self.group)
        await self.reconciler.close()

    def report(self) -> None:
        warm = [s for s in self.samples if s["min"] >= self.args.warmup] or self.samples[-1:]
        first, last = warm[0], self.samples[-1]

        def growth(k: str) -> str:
            return f"{first[k]} -> {last[k]} ({(last[k] - first[k]) / max(first[k], 1e-9) * 100:+.1f}%)"

        doubled = sum(1 for n in self.counts.values() if n > 1)
        peak = max(self.samples, key=lambda s: s["used_mb"])
        over = [s for s in self.samples if s["used_mb"] > self.budget_mb]
        print(
            f"\nmemory budget (bus.memory_mb) {self.budget_mb} MB: peak used_memory {peak['used_mb']} MB "
            f"({peak['used_mb'] / self.budget_mb:.0%}) at minute {peak['min']}; "
            + (
                f"under the budget in all {len(self.samples)} samples"
                if not over
                else f"OVER the budget in {len(over)} of {len(self.samples)} samples"
            )
        )
        print(
            f"\nafter warm-up (minute {first['min']} -> {last['min']}): used_memory MB {growth('used_mb')}, "
            f"keys {growth('keys')}, mean worker RSS MB {growth('rss_mb')}, episodes/s "
            f"{growth('eps_per_s')}, used_memory KB per episode/s {growth('kb_per_eps')}"
        )
        print(
            f"episodes: dispatched {self.dispatched * 4}, finished {len(self.counts)} "
            f"(ok {self.status['ok']}, failed {self.status['failed']}), lost {len(self.pending)}, "
            f"doubled {doubled}; kill -9s {self.kills}; re-dispatched {self.reconciler.redispatched}"
        )


async def main(args: argparse.Namespace) -> None:
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="userrl-soak-")
    ov = overrides(run_dir, args.set)
    cfg = load_config(REPO / "deploy" / "ci.yaml", ov)
    launcher = Launcher(cfg, config_path=str(REPO / "deploy" / "ci.yaml"), overrides=ov).start()
    launcher.start_background()
    bus = Bus(make_client(launcher.url, block_ms=cfg.bus.block_ms), launcher.keys, cfg.bus)
    soak = Soak(bus, launcher, args)
    try:
        await soak.run()
    finally:
        await bus.redis.aclose()
        launcher.stop()
    soak.report()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=5.0, help="growth is measured from this minute on")
    p.add_argument("--inflight", type=int, default=16, help="GRPO groups (of 4 episodes) in flight")
    p.add_argument("--kill-every", type=float, default=20.0, help="seconds between kill -9s of a random worker")
    p.add_argument("--sample-s", type=float, default=30.0)
    p.add_argument("--drain-s", type=float, default=120.0)
    p.add_argument("--run-dir", default="")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    args = p.parse_args()
    configure_logging("warning")
    anyio.run(main, args)
