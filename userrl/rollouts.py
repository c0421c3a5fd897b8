"""Start episodes on the bus and collect their trajectories (the core of dispatch and eval).

A GRPO group is G episodes of one task with different seeds; episode ids are
``{group_id}/{i}``. Sending a reset twice is harmless: the env worker's commit is idempotent on
the reset's identity.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import anyio

from userrl.bus.messages import Reset, Trajectory, decode
from userrl.bus.transport import Bus
from userrl.console import EpisodeBar


def make_resets(env_id: str, tasks: Iterable[dict[str, Any]], *, group_size: int = 1, seed: int = 0,
                max_turns: int = 0, sampling: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
                prefix: str = "", options: dict[str, Any] | None = None) -> list[Reset]:
    out = []
    for task in tasks:
        group = f"{prefix}{env_id.split('/')[-1]}:{task['id']}"
        for i in range(group_size):
            out.append(Reset(episode_id=f"{group}/{i}", group_id=group, env_id=env_id, task=task,
                             seed=seed * 1_000_003 + i, max_turns=max_turns, sampling=dict(sampling or {}),
                             meta={**(meta or {}), "group_size": group_size}, options=dict(options or {})))
    return out


async def send_resets(bus: Bus, resets: Sequence[Reset]) -> None:
    stream = bus.keys.stream("env")
    for r in resets:
        await bus.send(stream, r, {"episode": r.episode_id, "env": r.env_id})


async def read_trajectories(bus: Bus, stream: str | None = None) -> dict[str, list[Trajectory]]:
    """Every trajectory on the reward stream so far, by episode (a list: duplicates would show)."""
    out: dict[str, list[Trajectory]] = {}
    for _, fields in await bus.redis.xrange(stream or bus.keys.stream("reward")):
        msg = decode(fields[b"p"])
        if isinstance(msg, Trajectory):
            out.setdefault(msg.episode_id, []).append(msg)
    return out


async def wait_trajectories(bus: Bus, episode_ids: Iterable[str], timeout: float = 60.0,
                            poll_s: float = 0.1) -> dict[str, list[Trajectory]]:
    """Wait until every episode has a trajectory on the reward stream; TimeoutError otherwise."""
    want = set(episode_ids)
    deadline = time.monotonic() + timeout
    bar = EpisodeBar(len(want))  # draws only on a terminal under the CLI (userrl.console)
    try:
        while True:
            got = await read_trajectories(bus)
            mine = [got[e][0] for e in want & got.keys()]
            bar.update_to(len(mine), sum(t.status != "ok" for t in mine))
            if want <= got.keys():
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(want - got.keys())} of {len(want)} episodes unfinished after {timeout}s")
            await anyio.sleep(poll_s)
    finally:
        bar.close()
