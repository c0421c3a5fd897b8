"""Start episodes on the bus and collect their trajectories (the core of dispatch and eval).

A GRPO group is G episodes of one task with different seeds; episode ids are
``{group_id}/{i}``. Sending a reset twice is harmless: the env worker's commit is idempotent on
the reset's identity. :class:`Waiter` collects trajectories as they arrive (its own consumer
group, never a re-read of a stream that reward workers trim). :func:`dispatch_and_wait` is the
order that cannot miss a finish: the waiter's group and the reconciler's marker exist before the
first reset is sent, and the resets go out in pipelined batches.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import anyio
import structlog

from userrl.bus.client import RedisConnectionError, RedisTimeoutError
from userrl.bus.messages import Reset, Trajectory, decode
from userrl.bus.reconcile import Reconciler, send_resets
from userrl.bus.transport import Bus
from userrl.console import EpisodeBar
from userrl.errors import BusError

log = structlog.get_logger(__name__)

__all__ = [
    "Waiter",
    "already_dispatched",
    "dispatch_and_wait",
    "dispatch_resets",
    "make_resets",
    "read_trajectories",
    "send_resets",
    "wait_trajectories",
]


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


async def already_dispatched(bus: Bus, resets: Sequence[Reset]) -> list[str]:
    """Episodes of ``resets`` that run now or ran within the idempotency window: the env worker
    would ignore their resets (same episode ids), so a wait for them would be in vain."""
    return await bus.store.known([r.episode_id for r in resets], bus.keys.group("env"), Reset.KIND)


async def read_trajectories(bus: Bus, stream: str | None = None) -> dict[str, list[Trajectory]]:
    """Every trajectory on the reward stream so far, by episode (a list: duplicates would show)."""
    out: dict[str, list[Trajectory]] = {}
    for _, fields in await bus.entries(stream or bus.keys.stream("reward")):
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
        self.stall_s = stall_s
        self._read: set[str] = set()  #: entry ids taken into ``got``
        self.reconciler = (
            Reconciler(bus, resets, stall_s=stall_s, max_attempts=max_attempts, name=self.name) if resets else None
        )

    async def start(self, *, from_start: bool = True) -> None:
        """Create the group: from the start of the stream (trajectories that arrived before the
        waiter), or only what comes next (``from_start=False``, for a waiter made before sending,
        see :func:`dispatch_and_wait`); then set the reconciler's marker. The consumer is created
        with the group, so a waiter killed before its first read still shows as idle, and the
        reward workers' trim drops its group once it is stale."""
        await self.bus.ensure_group(self.stream, self.group, "0" if from_start else "$")
        await self.bus.add_consumer(self.stream, self.group, self.name)
        if self.reconciler is not None:
            await self.reconciler.start()

    async def send(self, resets: Sequence[Reset], on_batch: Callable[[int], Awaitable[None]] | None = None) -> None:
        """Send resets (pipelined batches) after :meth:`start`; the reconciler remembers their
        entry ids. Resets sent otherwise are still reconciled, more slowly (module docstring of
        :mod:`userrl.bus.reconcile`)."""
        self.want |= {r.episode_id for r in resets}
        if self.reconciler is None:
            self.reconciler = Reconciler(self.bus, resets, stall_s=self.stall_s, name=self.name)
            await self.reconciler.start()
        await self.reconciler.send(resets, on_batch=on_batch)

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
            await self.bus.ack(self.stream, self.group, [d.entry_id for d in ds])
            for d in ds:
                # an entry read twice (a server restarted from an AOF that missed our ack) counts once
                if isinstance(d.msg, Trajectory) and d.msg.episode_id in self.want and d.entry_id not in self._read:
                    self._read.add(d.entry_id)
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
        # shielded: a wait that was cancelled (Ctrl-C, a deploy that gave up) still cleans up
        with anyio.move_on_after(5, shield=True):
            with contextlib.suppress(Exception):  # best effort: a stale group is dropped by the next trim
                await self.bus.drop_group(self.stream, self.group)
            with contextlib.suppress(Exception):  # the marker expires on its own
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
    Trajectories already on the stream count too, but only while the reward workers have not
    trimmed them: to send and wait, use :func:`dispatch_and_wait`, which cannot miss one."""
    w = Waiter(bus, episode_ids, resets=resets, stall_s=stall_s)
    await w.start(from_start=True)
    return await _wait_closing(w, timeout, poll_s)


async def dispatch_and_wait(
    bus: Bus,
    resets: Sequence[Reset],
    *,
    timeout: float = 600.0,
    poll_s: float = 0.1,
    stall_s: float = 900.0,
    check_s: float = 5.0,
    on_sent: Callable[[], None] | None = None,
    on_batch: Callable[[int], Awaitable[None]] | None = None,
) -> dict[str, list[Trajectory]]:
    """Send ``resets`` and wait for all their trajectories, in the order that misses none: the
    waiter's group (from the stream's end) and the reconciler's marker first, then the resets
    in pipelined batches (``on_batch`` after each, ``on_sent`` once all are out), then the wait.
    A data loss at any moment re-sends or reports failed what it took (:class:`Waiter`)."""
    w = Waiter(bus, [], stall_s=stall_s, check_s=check_s)
    await w.start(from_start=False)
    try:
        await w.send(resets, on_batch=on_batch)
    except BaseException:
        await w.close()
        raise
    if on_sent is not None:
        on_sent()
    return await _wait_closing(w, timeout, poll_s)


async def dispatch_resets(
    bus: Bus,
    resets: Sequence[Reset],
    *,
    on_batch: Callable[[int], Awaitable[None]] | None = None,
    max_rounds: int = 3,
) -> int:
    """Send ``resets`` without waiting for them (``userrl dispatch``), and make sure the server
    still holds them when this returns: the reconciler's marker is set first, and if the server
    lost its data during the send (the marker vanished, or the server restarted), everything is
    sent again, up to ``max_rounds`` times. Returns how many times it sent again. A loss after
    this returns is not watched: that needs a waiter (``--wait``)."""
    rec = Reconciler(bus, resets)
    await rec.start()
    try:
        await rec.send(resets, on_batch=on_batch)
        rounds = 0
        while await rec.lost_data():
            if rounds >= max_rounds:
                raise BusError(f"the server lost its data during each of {rounds + 1} sends of {len(resets)} resets")
            rounds += 1
            log.warning("dispatch.resent_after_data_loss", n=len(resets), round=rounds)
            await rec.send(resets)
        return rounds
    finally:
        with anyio.move_on_after(5, shield=True), contextlib.suppress(Exception):
            await rec.close()


async def _wait_closing(w: Waiter, timeout: float, poll_s: float) -> dict[str, list[Trajectory]]:
    bar = EpisodeBar(len(w.want))  # draws only on a terminal under the CLI (userrl.console)

    def progress() -> None:
        bar.update_to(len(w.got), sum(ts[0].status != "ok" for ts in w.got.values()))

    try:
        return await w.wait(timeout=timeout, poll_s=poll_s, on_progress=progress)
    finally:
        bar.close()
        await w.close()
