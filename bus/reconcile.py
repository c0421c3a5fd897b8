"""The reconciler: no dispatched episode ends silently.

A Redis server that restarts without its data (no AOF, or an external server that lost a
replica) takes the in-flight dialogues with it: their snapshots, their messages, the consumer
groups. Nothing inside Redis can notice that, so the process that dispatched the episodes does:
it remembers its resets, and every ``check`` it looks at the episodes not yet finished:

- **state vanished** (no snapshot, and either the dispatcher's marker key vanished too, i.e.
  the server lost its data, or the snapshot has been missing for ``stall_s`` while the env
  stream has no backlog): the reset is sent again (a fresh start; the env worker ignores a reset
  of an episode that runs) up to ``max_attempts`` times, then the episode is reported failed;
- **stalled** (a snapshot whose last progress is older than ``stall_s``, e.g. one of its messages
  was dead-lettered): reported failed.

Reporting failed is one atomic commit: a failed :class:`Trajectory` (error kind ``bus``, the
reason) to the reward stream, so the reward worker drops and counts the group and waiters
finish, plus the bookkeeping of an ended episode (:func:`release_episode`). A message of that
episode that still arrives finds no snapshot and is dropped by the env worker.

Stalls need no dispatcher: :func:`sweep_stalled` (run by the reward workers) reports live
episodes whose snapshot stopped progressing, so a training run drops such groups too.

``stall_s`` must be longer than any step can legitimately take (at least the redelivery window
``min_idle x (max_deliveries + 1)``; the default is 15 minutes).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import structlog

from userrl.bus.messages import ErrorRecord, Reset, Trajectory
from userrl.bus.transport import Bus, Effects
from userrl.errors import BusError

log = structlog.get_logger(__name__)

#: the commit group of reconciler reports (its idempotency keys live under it)
GROUP = "reconciler"


def release_episode(eff: Effects, bus: Bus, episode_id: str, status: str) -> Effects:
    """The bookkeeping of an ended episode, in the commit that sends its trajectory: its
    snapshot and stored replies are deleted (the trajectory carries everything the learner
    needs), its readable log expires after ``episode_log_ttl_ms``, it moves from the live set to
    the (capped) finished set. Memory per finished episode is then bounded, not a week of keys."""
    k = bus.keys
    eff.delete(k.state(episode_id)).delete(k.replies(episode_id))
    eff.expire(k.episode(episode_id), bus.settings.episode_log_ttl_ms)
    eff.zrem(k.live, episode_id).zadd(k.finished, time.time(), episode_id)
    return eff.incr(k.counters, f"episodes_{status}")


@dataclass
class Reconciler:
    """Watches the episodes of one dispatch (see the module docstring)."""

    bus: Bus
    resets: Sequence[Reset]
    stall_s: float = 900.0
    max_attempts: int = 2
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    attempts: dict[str, int] = field(default_factory=dict)  #: episode -> resets sent
    missing_since: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  #: episode -> reason reported
    redispatched: int = 0

    def __post_init__(self) -> None:
        if self.stall_s <= 0 or self.max_attempts < 1:
            raise ValueError(f"stall_s must be > 0 and max_attempts >= 1, got {self.stall_s}, {self.max_attempts}")
        self._by_id = {r.episode_id: r for r in self.resets}
        self._marker = self.bus.keys.waiter_marker(self.name)

    def track(self, resets: Sequence[Reset]) -> None:
        """Watch more episodes (a dispatcher that keeps sending)."""
        for r in resets:
            self._by_id[r.episode_id] = r
            self.attempts.setdefault(r.episode_id, 1)

    def forget(self, episode_ids: Iterable[str]) -> None:
        """Stop watching finished episodes (bounded memory for a long-running dispatcher)."""
        for e in episode_ids:
            self._by_id.pop(e, None)
            self.attempts.pop(e, None)
            self.missing_since.pop(e, None)
            self.failed.pop(e, None)

    async def start(self) -> None:
        """Set the marker key (before the resets are sent): its loss means the server's was."""
        await self.bus.redis.set(self._marker, b"1", px=self._marker_ttl_ms())
        for r in self.resets:
            self.attempts.setdefault(r.episode_id, 1)

    def _marker_ttl_ms(self) -> int:
        return int(max(self.stall_s, 60.0) * 4000)

    async def check(
        self, unfinished: Iterable[str], refresh: Callable[[], Awaitable[set[str]]] | None = None
    ) -> list[str]:
        """Re-send or report the unfinished episodes that need it; returns those reported failed.
        ``refresh`` reads the trajectories that arrived meanwhile and returns what is still
        unfinished: it runs after the snapshots are read, because a finishing episode's
        snapshot is deleted in the same commit that sends its trajectory."""
        todo = [e for e in unfinished if e in self._by_id and e not in self.failed]
        lost = not await self.bus.redis.set(self._marker, b"1", xx=True, px=self._marker_ttl_ms())
        if lost:
            log.warning("reconcile.server_lost_data", waiter=self.name, unfinished=len(todo))
            await self.bus.redis.set(self._marker, b"1", px=self._marker_ttl_ms())
        if not todo:
            return []
        progress = await self._progress(todo)
        backlog = await self._env_backlog()
        if refresh is not None:
            still = await refresh()
            todo = [e for e in todo if e in still]
        now = time.time()
        out = []
        for ep in todo:
            at = progress[ep]
            if at is not None:
                self.missing_since.pop(ep, None)
                if now - at > self.stall_s:
                    out += [ep] if await self.report_failed(ep, f"stalled: no progress for {now - at:.0f}s") else []
                continue
            since = self.missing_since.setdefault(ep, now)
            if not (lost or (not backlog and now - since > self.stall_s)):
                continue
            if self.attempts.get(ep, 1) >= self.max_attempts:
                out += (
                    [ep]
                    if await self.report_failed(ep, f"lost: state vanished after {self.attempts[ep]} dispatches")
                    else []
                )
                continue
            await self.redispatch(ep)
        return out

    async def _progress(self, eps: Sequence[str]) -> dict[str, float | None]:
        """Last progress time of each episode's snapshot (None: no snapshot)."""
        out: dict[str, float | None] = {}
        for i in range(0, len(eps), 500):
            chunk = eps[i : i + 500]
            async with self.bus.redis.pipeline(transaction=False) as pipe:
                for ep in chunk:
                    pipe.hmget(self.bus.keys.state(ep), ["at", "seq"])
                rows = await pipe.execute()
            for ep, (at, seq) in zip(chunk, rows, strict=True):
                out[ep] = float(at) if at is not None else (time.time() if seq is not None else None)
        return out

    async def _env_backlog(self) -> bool:
        """Whether the env stream still holds undelivered or pending entries (resets may wait)."""
        for g in await self.bus.group_info(self.bus.keys.stream("env")):
            if g.get("name") == self.bus.keys.group("env"):
                return bool(int(g.get("lag") or 0) or int(g.get("pending") or 0))
        return False

    async def redispatch(self, ep: str) -> None:
        self.attempts[ep] = self.attempts.get(ep, 1) + 1
        self.missing_since.pop(ep, None)
        self.redispatched += 1
        r = self._by_id[ep]
        log.warning("reconcile.redispatch", episode_id=ep, attempt=self.attempts[ep])
        await self.bus.send(self.bus.keys.stream("env"), r, {"episode": ep, "env": r.env_id})
        await self.bus.redis.hincrby(self.bus.keys.counters, "episodes_redispatched", 1)

    async def report_failed(self, ep: str, reason: str) -> bool:
        """Report ``ep`` failed (see :func:`report_failed`); False if it was already reported."""
        r = self._by_id[ep]
        self.failed[ep] = reason
        # a stall has one identity whoever reports it (a waiter, a reward worker's sweep); a
        # loss is reported per dispatch attempt
        attempt = 0 if reason.startswith("stalled") else self.attempts.get(ep, 1)
        return await report_failed(
            self.bus,
            ep,
            reason,
            group_id=r.group_id,
            env_id=r.env_id,
            task_id=str(r.task.get("id", "")),
            meta=r.meta,
            attempt=attempt,
        )

    async def close(self) -> None:
        await self.bus.redis.delete(self._marker)


async def report_failed(
    bus: Bus, ep: str, reason: str, *, group_id: str, env_id: str, task_id: str, meta: dict[str, Any], attempt: int = 0
) -> bool:
    """One atomic commit: a failed :class:`Trajectory` (error kind ``bus``, the reason) to the
    reward stream and the episode released. Returns False if it was already reported."""
    traj = Trajectory(
        episode_id=ep,
        group_id=group_id,
        env_id=env_id,
        task_id=task_id,
        turns=[],
        status="failed",
        error=ErrorRecord.of(BusError(reason, transient=True)),
        meta={**meta, "end": "failed", "score": 0.0, "reconciled": reason},
    )
    eff = Effects().send(bus.keys.stream("reward"), traj, {"episode": ep, "status": "failed"})
    release_episode(eff, bus, ep, "failed").incr(bus.keys.counters, "episodes_reconciled")
    applied = await bus.commit_once(("reconcile", ep, 0, attempt), GROUP, eff)
    log.warning("reconcile.reported_failed", episode_id=ep, reason=reason, applied=applied)
    return applied


async def sweep_stalled(bus: Bus, stall_s: float, limit: int = 200) -> int:
    """Report failed the live episodes whose snapshot has not progressed for ``stall_s`` (a
    message of theirs was dead-lettered, or lost) or vanished. Needs no dispatcher: the reward
    workers run it, so training runs drop such groups too. Returns how many were reported."""
    now = time.time()
    old = await bus.redis.zrangebyscore(bus.keys.live, "-inf", now - stall_s, start=0, num=limit)
    n = 0
    for raw_ep in old:
        ep = raw_ep.decode() if isinstance(raw_ep, bytes) else str(raw_ep)
        at, blob = await bus.redis.hmget(bus.keys.state(ep), ["at", "episode"])
        if at is not None and now - float(at) <= stall_s:
            continue
        snap = _snapshot_fields(blob)
        reason = f"stalled: no progress for {now - float(at):.0f}s" if at is not None else "lost: state vanished"
        n += await report_failed(
            bus,
            ep,
            reason,
            group_id=snap.get("group_id") or ep.rsplit("/", 1)[0],
            env_id=snap.get("env_id", ""),
            task_id=snap.get("task_id", ""),
            meta=snap.get("meta") or {},
        )
    return n


def _snapshot_fields(blob: bytes | None) -> dict[str, Any]:
    """group_id, env_id, task_id and meta of an env snapshot (a msgpack map), if readable."""
    if not blob:
        return {}
    try:
        d = msgpack.unpackb(blob, raw=False)
    except Exception:  # a corrupt snapshot still gets its episode reported
        return {}
    return {k: d[k] for k in ("group_id", "env_id", "task_id", "meta") if isinstance(d, dict) and k in d}
