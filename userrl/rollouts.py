"""Start episodes on the bus and collect their trajectories (the core of dispatch and eval).

A GRPO group is G episodes of one task with different seeds; episode ids are
``{group_id}/{i}``. Sending a reset twice is harmless: the env worker's commit is idempotent on
the reset's identity. :class:`Waiter` collects trajectories as they arrive (its own consumer
group, never a re-read of a stream that reward workers trim).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import anyio
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from userrl.bus.messages import Reset, Trajectory, decode
from userrl.bus.reconcile import Reconciler
from userrl.bus.transport import Bus
from userrl.console import EpisodeBar

log = structlog.get_logger(__name__)


def make_resets(
    env_id: str,
    tasks: Iterable[dict[str, Any]],
    *,
    group_size: int = 1,
    seed: int = 0,
    max_turns: int = 0,
    sampling: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    prefix: str = "",
    options: dict[str, Any] | None = None,
) -> list[Reset]:
    out = []
    for task in tasks:
        group = f"{prefix}{env_id.split('/')[-1]}:{task['id']}"
        for i in range(group_size):
            out.append(
                Reset(
                    episode_id=f"{group}/{i}",
                    group_id=group,
                    env_id=env_id,
                    task=task,
                    seed=seed * 1_000_003 + i,
                    max_turns=max_turns,
                    sampling=dict(sampling or {}),
                    meta={**(meta or {}), "group_size": group_size},
                    options=dict(options or {}),
                )
            )
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


class Waiter:
    """Collects the trajectories of a set of episodes as they arrive on the reward stream.

    It reads through its own consumer group (``wait:<name>``) and acks as it reads, so the
    reward workers' trimming (``XTRIM MINID`` to the slowest group) never removes an entry it has
    not seen, and each poll costs only the new entries, however long the load runs. Given the
    resets, a :class:`~userrl.bus.reconcile.Reconciler` re-sends or reports failed the episodes a
    Redis crash or a dead letter took away, so a wait always ends. ``close`` drops the group;
    a waiter that died without closing is dropped by the next trim once it is stale.
    """

    def __init__(
        self,
        bus: Bus,
        episode_ids: Iterable[str],
        *,
        resets: Sequence[Reset] = (),
        stall_s: float = 900.0,
        max_attempts: int = 2,
        check_s: float = 5.0,
    ) -> None:
        self.bus = bus
        self.want = set(episode_ids) | {r.episode_id for r in resets}
        self.got: dict[str, list[Trajectory]] = {}
        self.name = uuid.uuid4().hex[:12]
        self.group = bus.keys.waiter_group(self.name)
        self.stream = bus.keys.stream("reward")
        self.check_s = check_s
        self.reconciler = (
            Reconciler(bus, resets, stall_s=stall_s, max_attempts=max_attempts, name=self.name) if resets else None
        )

    async def start(self, *, from_start: bool = True) -> None:
        """Create the group: from the start of the stream (trajectories that arrived before the
        waiter), or only what comes next (``from_start=False``, for a waiter made before sending)."""
        await self.bus.ensure_group(self.stream, self.group, "0" if from_start else "$")
        if self.reconciler is not None:
            await self.reconciler.start()

    async def poll(self, block_ms: int = 100) -> int:
        """Read what arrived (blocking up to ``block_ms`` for the first entry); returns how many."""
        n, first = 0, True
        while True:
            if first:
                ds = await self.bus.read(self.stream, self.group, self.name, count=512, block_ms=max(1, block_ms))
            else:
                ds = await self.bus.read_many([self.stream], self.group, self.name, count=512, block=False)
            first = False
            if not ds:
                return n
            await self.bus.redis.xack(self.stream, self.group, *[d.entry_id for d in ds])
            for d in ds:
                if isinstance(d.msg, Trajectory) and d.msg.episode_id in self.want:
                    self.got.setdefault(d.msg.episode_id, []).append(d.msg)
                    n += 1

    async def _refresh(self) -> set[str]:
        await self.poll(block_ms=1)
        return self.missing

    @property
    def missing(self) -> set[str]:
        return self.want - self.got.keys()

    async def wait(
        self, timeout: float = 60.0, poll_s: float = 0.1, on_progress: Callable[[], None] | None = None
    ) -> dict[str, list[Trajectory]]:
        """Until every episode has a trajectory; TimeoutError otherwise. ``on_progress`` is
        called after each read (a progress bar)."""
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + self.check_s
        backoff = 0.1
        while self.missing:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.missing)} of {len(self.want)} episodes unfinished after {timeout}s")
            try:
                if self.reconciler is not None and time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.check_s
                    await self.reconciler.check(self.missing, refresh=self._refresh)
                if await self.poll(block_ms=max(1, int(poll_s * 1000))) and on_progress is not None:
                    on_progress()
                backoff = 0.1
            except (RedisConnectionError, RedisTimeoutError) as exc:
                # Redis is down (or restarting): what was read is kept; the reconciler finds
                # what the server lost once it is back
                log.warning("waiter.redis_unavailable", error=repr(exc), retry_in_s=backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        return self.got

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort: a stale group is dropped by the next trim
            await self.bus.redis.xgroup_destroy(self.stream, self.group)
            if self.reconciler is not None:
                await self.reconciler.close()


async def wait_trajectories(
    bus: Bus,
    episode_ids: Iterable[str],
    timeout: float = 60.0,
    poll_s: float = 0.1,
    *,
    resets: Sequence[Reset] = (),
    stall_s: float = 900.0,
) -> dict[str, list[Trajectory]]:
    """Wait until every episode has a trajectory on the reward stream; TimeoutError otherwise.
    With ``resets``, lost or stalled episodes are re-sent or reported failed (:class:`Waiter`).
    Trajectories already on the stream count too (call it right after sending)."""
    w = Waiter(bus, episode_ids, resets=resets, stall_s=stall_s)
    bar = EpisodeBar(len(w.want))  # draws only on a terminal under the CLI (userrl.console)

    def progress() -> None:
        bar.update_to(len(w.got), sum(ts[0].status != "ok" for ts in w.got.values()))

    await w.start(from_start=True)
    try:
        return await w.wait(timeout=timeout, poll_s=poll_s, on_progress=progress)
    finally:
        bar.close()
        await w.close()
