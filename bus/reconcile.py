"""The reconciler: no dispatched episode ends silently.

A Redis server that restarts without its data (no AOF, or an external server that lost a
replica) takes the in-flight dialogues with it: their snapshots, their messages, the consumer
groups; one that restarts from its AOF may miss the last second of writes. Nothing inside Redis
can notice that, so the process that dispatched the episodes does: it sets a marker key before
its first reset, sends the resets itself (:func:`send_resets`, remembering each one's entry id
on the env stream), and every ``check`` it looks at the episodes not yet finished:

- **lost** (no snapshot, no trajectory, and its reset neither waits on the env stream nor is
  being handled; or, for a reset whose entry id is unknown, the marker vanished, or the snapshot
  has been missing for ``stall_s`` while the env stream has no backlog): the reset is sent again
  (a fresh start; the env worker ignores a reset of an episode that runs) up to
  ``max_attempts`` times, then the episode is reported failed. A reset that was dead-lettered
  is lost in this sense too;
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

import anyio
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from userrl.bus.messages import ErrorRecord, Reset, Trajectory
from userrl.bus.store import snapshot_fields
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


#: resets per pipelined XADD batch: one round trip each, where one awaited XADD per reset made a
#: 9,600-episode dispatch spend 12 s sending before anything else happened
SEND_BATCH = 500


def reset_fields(r: Reset) -> dict[str, Any]:
    """The readable fields next to a reset's payload on the env stream."""
    return {"episode": r.episode_id, "env": r.env_id}


async def send_resets(
    bus: Bus,
    resets: Sequence[Reset],
    *,
    batch: int = SEND_BATCH,
    on_batch: Callable[[int], Awaitable[None]] | None = None,
    retry_s: float = 60.0,
) -> dict[str, str]:
    """XADD ``resets`` to the env stream in pipelined batches; returns episode -> entry id.
    A batch that meets a connection error (the server restarting) is sent again, with backoff
    for up to ``retry_s``, then the error propagates: a reset sent twice is harmless (the env
    worker ignores a reset of an episode that runs, and its commit of one that ran). ``on_batch``
    gets the number sent so far after each batch."""
    stream = bus.keys.stream("env")
    ids: dict[str, str] = {}
    for i in range(0, len(resets), batch):
        chunk = resets[i : i + batch]
        deadline, backoff = time.monotonic() + retry_s, 0.1
        while True:
            try:
                got = await bus.send_many(stream, [(r, reset_fields(r)) for r in chunk])
                break
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if time.monotonic() + backoff > deadline:
                    raise
                log.warning("dispatch.send_retry", error=repr(exc), sent=len(ids), retry_in_s=backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        ids.update(zip((r.episode_id for r in chunk), got, strict=True))
        if on_batch is not None:
            await on_batch(len(ids))
    return ids


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
    entry_ids: dict[str, str] = field(default_factory=dict)  #: episode -> env stream id of its last reset
    redispatched: int = 0
    data_losses: int = 0  #: times the server was found to have lost (or possibly lost) data

    def __post_init__(self) -> None:
        if self.stall_s <= 0 or self.max_attempts < 1:
            raise ValueError(f"stall_s must be > 0 and max_attempts >= 1, got {self.stall_s}, {self.max_attempts}")
        self._by_id = {r.episode_id: r for r in self.resets}
        self._marker = self.bus.keys.waiter_marker(self.name)
        self._run_id: str | None = None
        self._suspect = False  #: a loss was seen and not yet reconciled by a completed check

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
            self.entry_ids.pop(e, None)

    @property
    def tracked(self) -> set[str]:
        return set(self._by_id)

    async def start(self) -> None:
        """Set the marker key, before the first reset is sent: its loss means the server's was."""
        await self.bus.redis.set(self._marker, b"1", px=self._marker_ttl_ms())
        self._run_id = await self._server_run_id()
        for r in self.resets:
            self.attempts.setdefault(r.episode_id, 1)

    async def send(self, resets: Sequence[Reset], on_batch: Callable[[int], Awaitable[None]] | None = None) -> None:
        """Track ``resets`` and send them (:func:`send_resets`), remembering their entry ids."""
        self.track(resets)
        self.entry_ids.update(await send_resets(self.bus, resets, on_batch=on_batch))

    def _marker_ttl_ms(self) -> int:
        return int(max(self.stall_s, 60.0) * 4000)

    async def _server_run_id(self) -> str | None:
        try:
            return str((await self.bus.redis.info("server")).get("run_id") or "") or None
        except ResponseError:  # INFO refused (an ACL user without it): only the marker tells
            return None

    async def lost_data(self) -> bool:
        """Whether the server lost data since the last call: the marker vanished (restarted
        empty, flushed) or the server restarted (its AOF may miss the last second). Re-arms."""
        lost = not await self.bus.redis.set(self._marker, b"1", xx=True, px=self._marker_ttl_ms())
        if lost:
            await self.bus.redis.set(self._marker, b"1", px=self._marker_ttl_ms())
        run_id = await self._server_run_id()
        restarted = None not in (run_id, self._run_id) and run_id != self._run_id
        self._run_id = run_id or self._run_id
        if lost or restarted:
            self.data_losses += 1
            log.warning("reconcile.server_lost_data", waiter=self.name, marker_lost=lost, restarted=restarted)
        return lost or restarted

    async def check(
        self, unfinished: Iterable[str], refresh: Callable[[], Awaitable[set[str]]] | None = None
    ) -> list[str]:
        """Re-send or report the unfinished episodes that need it; returns those reported failed.
        ``refresh`` reads the trajectories that arrived meanwhile and returns what is still
        unfinished. The order of the reads is what makes "lost" safe to conclude: whether each
        reset still waits on the env stream, then the snapshots, then ``refresh``, because a
        reset is acked in the commit that writes its snapshot, and a snapshot is deleted in the
        commit that sends its trajectory. (Skipping the resets still queued, and the live set,
        only narrow the work to the episodes that might be lost.)"""
        todo = [e for e in unfinished if e in self._by_id and e not in self.failed]
        # a loss stays suspected until a check has run through: a check cut short by the
        # server going away again must not forget it
        lost = self._suspect = await self.lost_data() or self._suspect
        delivered = await self._last_delivered()
        if not lost:  # queued resets exist (nothing deletes undelivered env entries) and wait
            todo = [e for e in todo if not (e in self.entry_ids and _id(self.entry_ids[e]) > delivered)]
        if not todo:
            self._suspect = False
            return []
        out: list[str] = []
        now = time.time()
        cands = []
        old = []  #: live long enough to have stalled: their last progress is read
        for ep, started in (await self._live(todo)).items():
            if started is None:
                cands.append(ep)
                continue
            self.missing_since.pop(ep, None)
            if now - started > self.stall_s:
                old.append(ep)
        for ep, at in (await self._progress(old)).items():
            if at is not None and now - at > self.stall_s:
                out += [ep] if await self.report_failed(ep, f"stalled: no progress for {now - at:.0f}s") else []
        waiting = await self._waiting(cands, delivered)
        for ep in waiting:
            self.missing_since.pop(ep, None)
        cands = [e for e in cands if e not in waiting]
        started = {e for e, at in (await self._progress(cands)).items() if at is not None}
        backlog = await self._env_backlog()
        if refresh is not None:
            still = await refresh()
            cands = [e for e in cands if e in still]
        now = time.time()
        resend: list[str] = []
        for ep in cands:
            if ep in started:
                continue
            since = self.missing_since.setdefault(ep, now)
            # a known reset that is neither queued nor being handled, without a snapshot or a
            # trajectory, is gone; an unknown one is judged by the marker, or after stall_s
            if not (lost or ep in self.entry_ids or (not backlog and now - since > self.stall_s)):
                continue
            if self.attempts.get(ep, 1) >= self.max_attempts:
                reason = f"lost: state vanished after {self.attempts.get(ep, 1)} dispatches"
                out += [ep] if await self.report_failed(ep, reason) else []
                continue
            resend.append(ep)
        await self.redispatch(resend)
        self._suspect = False
        return out

    async def _last_delivered(self) -> tuple[int, int]:
        """The env group's last delivered id (0-0 when it has none yet)."""
        for g in await self.bus.group_info(self.bus.keys.stream("env")):
            if g.get("name") == self.bus.keys.group("env"):
                return _id(str(g.get("last-delivered-id") or "0-0"))
        return (0, 0)

    async def _waiting(self, eps: Sequence[str], delivered: tuple[int, int]) -> set[str]:
        """Episodes whose last reset still waits on the env stream: undelivered (after the env
        group's last ``delivered`` id, and still in the stream) or pending (being handled)."""
        stream, group = self.bus.keys.stream("env"), self.bus.keys.group("env")
        known = [e for e in eps if e in self.entry_ids]
        out: set[str] = set()
        for i in range(0, len(known), 500):
            chunk = known[i : i + 500]
            async with self.bus.redis.pipeline(transaction=False) as pipe:
                for ep in chunk:
                    eid = self.entry_ids[ep]
                    if _id(eid) > delivered:
                        pipe.xrange(stream, eid, eid, count=1)
                    else:
                        pipe.xpending_range(stream, group, min=eid, max=eid, count=1)
                rows = await pipe.execute(raise_on_error=False)
            out |= {ep for ep, row in zip(chunk, rows, strict=True) if isinstance(row, list) and row}
        return out

    async def _live(self, eps: Sequence[str]) -> dict[str, float | None]:
        """Start time of each episode in the live set (None: not live). An episode is live
        exactly while it has a snapshot: both are written and removed in the same commits."""
        out: dict[str, float | None] = {}
        for i in range(0, len(eps), 1000):
            chunk = list(eps[i : i + 1000])
            out.update(zip(chunk, await self.bus.redis.zmscore(self.bus.keys.live, chunk), strict=True))
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
                lag = g.get("lag")  # None: Redis cannot tell (entries were deleted): assume some
                return lag is None or bool(int(lag) or int(g.get("pending") or 0))
        return False

    async def redispatch(self, eps: Sequence[str]) -> None:
        """Send the resets of ``eps`` again (one attempt more each), in pipelined batches."""
        if not eps:
            return
        for ep in eps:
            self.attempts[ep] = self.attempts.get(ep, 1) + 1
            self.missing_since.pop(ep, None)
        self.redispatched += len(eps)
        log.warning("reconcile.redispatch", n=len(eps), first=eps[0], attempt=self.attempts[eps[0]])
        self.entry_ids.update(await send_resets(self.bus, [self._by_id[ep] for ep in eps]))
        await self.bus.redis.hincrby(self.bus.keys.counters, "episodes_redispatched", len(eps))

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


def _id(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a comparable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


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
    n = 0
    for ep in await bus.store.older_than("live", now - stall_s, limit):
        at, blob = await bus.store.progress(ep)
        if at is not None and now - at <= stall_s:
            continue
        snap = snapshot_fields(blob)
        reason = f"stalled: no progress for {now - at:.0f}s" if at is not None else "lost: state vanished"
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
