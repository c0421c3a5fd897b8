"""The worker base class every role builds on.

A worker is one class: typed settings and the bus injected in the constructor; one
``async def handle(delivery) -> Effects`` per role (or ``handle_batch`` when the role batches,
like the policy worker); ``run()`` installs signal handlers and blocks, ``async_run()`` runs
inside an existing event loop (tests); ``burst`` exits when the input stream is drained.

The read loop reads first this consumer's own pending entries, then periodically entries
reclaimed from dead or stopped peers, else new ones, and hands them to one of two delivery
engines (:mod:`userrl.bus.delivery`), picked once when the worker starts: by default each batch
is handled concurrently and all its results are committed in one pipeline (each commit atomic
and idempotent); a role that sets ``streaming`` instead starts each message as soon as one of
its ``concurrency`` slots is free and commits it as soon as it is handled, so one slow call (an
LLM user) never holds up the others. What goes wrong:

- undecodable payload, a message of a kind the role does not accept (``accepts``), or
  delivered more than ``max_deliveries`` times -> dead-letter stream, on first sight;
- ``handle`` raises -> logged, left pending; reclaimed after ``min_idle`` and retried, until the
  delivery count sends it to the dead-letter stream;
- SIGTERM/SIGINT -> stop reading, finish and commit the in-flight batch, exit 0. While Redis
  is unreachable (or after ``shutdown_grace_s`` in any case) the in-flight work is abandoned
  instead: its entries stay pending and a peer reclaims them, so nothing is lost.

Entries held longer than a third of ``min_idle`` get their claim renewed, so a slow handler
is not mistaken for a dead one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from userrl.bus.delivery import BatchDelivery, DeliveryEngine, InFlight, StreamingDelivery
from userrl.bus.messages import Message
from userrl.bus.transport import Bus, Delivery, Effects
from userrl.errors import MessageError

log = structlog.get_logger(__name__)


def default_worker_name(role: str) -> str:
    return os.environ.get("USERRL_WORKER_NAME") or f"{role}-{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Settings shared by every role."""

    name: str = ""  #: stable consumer name (a restart under the same name drains its own pending)
    concurrency: int = 64  #: messages handled at once within a batch
    burst: bool = False  #: exit when the input stream is drained
    heartbeat_interval_s: float = 2.0
    heartbeat_ttl_s: float = 10.0
    reclaim_interval_s: float = 5.0
    trim_interval_s: float = 10.0
    shutdown_grace_s: float = 15.0  #: after a stop, how long in-flight work may take to commit

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.shutdown_grace_s <= 0:
            raise ValueError(f"shutdown_grace_s must be > 0, got {self.shutdown_grace_s}")
        if self.heartbeat_ttl_s <= self.heartbeat_interval_s:
            raise ValueError("heartbeat_ttl_s must be larger than heartbeat_interval_s")


class Worker:
    """Base class of every role. Subclasses set ``role`` and implement ``handle``."""

    role: ClassVar[str] = ""
    #: message kinds this role handles; anything else is dead-lettered on first delivery
    #: (empty = any kind, for ad-hoc workers)
    accepts: ClassVar[tuple[type[Message], ...]] = ()
    #: start each message on a free slot and commit it when done, instead of handling and
    #: committing whole batches (see the module docstring); ``handle_batch`` is not used then
    streaming: ClassVar[bool] = False

    def __init__(self, bus: Bus, settings: WorkerSettings | None = None) -> None:
        if not self.role:
            raise TypeError(f"{type(self).__name__} must set the class attribute 'role'")
        self.bus = bus
        self.settings = settings or WorkerSettings()
        self.name = self.settings.name or default_worker_name(self.role)
        self.stream = bus.keys.stream(self.role)
        self.group = bus.keys.group(self.role)
        self.stats = {"handled": 0, "committed": 0, "duplicates": 0, "dead_lettered": 0, "errors": 0}
        self._stopping = anyio.Event()
        self._in_flight: InFlight = {}  #: (stream, entry id) -> start time; the engine keeps it
        self._engine: DeliveryEngine = BatchDelivery(self, self._in_flight)  #: picked again at start
        self._redis_down = False  #: the last Redis call failed with a connection error
        self.log = log.bind(role=self.role, worker=self.name)

    # -- to implement ---------------------------------------------------------------------------
    async def handle(self, d: Delivery) -> Effects | None:
        """Handle one decoded message; return its effects (None = commit an ack only)."""
        raise NotImplementedError

    async def handle_batch(self, ds: Sequence[Delivery]) -> list[Effects | None | BaseException]:
        """Handle a batch; default: ``handle`` concurrently, at most ``concurrency`` at a time."""
        results: list[Effects | None | BaseException] = [None] * len(ds)
        debug = self.debug_enabled()

        async def run(i: int, d: Delivery) -> None:
            results[i] = await self.handle_one(d, debug)

        if len(ds) <= self.settings.concurrency:  # the common case: no limiter to pay for
            async with anyio.create_task_group() as tg:
                for i, d in enumerate(ds):
                    tg.start_soon(run, i, d)
            return results
        limiter = anyio.CapacityLimiter(self.settings.concurrency)

        async def limited(i: int, d: Delivery) -> None:
            async with limiter:
                await run(i, d)

        async with anyio.create_task_group() as tg:
            for i, d in enumerate(ds):
                tg.start_soon(limited, i, d)
        return results

    async def handle_one(self, d: Delivery, debug: bool) -> Effects | None | BaseException:
        """``handle(d)`` with the episode bound to the log context; what it raised is returned
        (classified by :meth:`classify`)."""
        assert d.msg is not None
        token = structlog.contextvars.bind_contextvars(episode_id=d.msg.episode_id)
        t0 = time.perf_counter()
        result: Effects | None | BaseException
        try:
            result = await self.handle(d)
        except Exception as exc:
            result = exc
        finally:
            structlog.contextvars.reset_contextvars(**token)
        if debug:
            self.log.debug(
                "worker.handled",
                kind=d.msg.KIND,
                seq=d.msg.seq,
                hop=d.msg.hop,
                ms=round((time.perf_counter() - t0) * 1000, 2),
            )
        return result

    def debug_enabled(self) -> bool:
        """Whether debug lines would be written (skips building per-message log fields)."""
        return bool(getattr(self.log, "is_enabled_for", lambda _lvl: True)(10))

    async def on_start(self) -> None:
        """Hook: load models, connect backends."""

    async def on_stop(self) -> None:
        """Hook: release resources."""

    # -- lifecycle ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the worker to stop after the in-flight batch (what SIGTERM does)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> int:
        """Blocking entry point: installs SIGTERM/SIGINT handlers; returns the exit code."""

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_signals, tg.cancel_scope)
                await self.async_run()
                tg.cancel_scope.cancel()

        anyio.run(main)
        return 0

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self.log.info("worker.signal", signal=signal.Signals(signum).name)
                self.stop()

    async def async_run(self) -> None:
        """Run until stopped (or drained, in burst mode)."""
        await self.bus.ensure_group(self.stream, self.group)
        await self.on_start()
        # chosen once, after on_start: a role's ``streaming`` may depend on its backend
        self._engine = (StreamingDelivery if self.streaming else BatchDelivery)(self, self._in_flight)
        self.log.info("worker.started", stream=self.stream, burst=self.settings.burst)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._renew_loop)
                tg.start_soon(self._shutdown_watch, tg.cancel_scope)
                await self._loop()
                tg.cancel_scope.cancel()
        finally:
            await self._clear_heartbeat()
            await self.on_stop()
            self.log.info("worker.stopped", **self.stats)

    async def _shutdown_watch(self, scope: anyio.CancelScope) -> None:
        """After a stop, abandon in-flight work at once if Redis is unreachable (a commit
        would retry until it is back), else after ``shutdown_grace_s``. Abandoned entries stay
        pending: a peer (or this worker's restart) reclaims them, the commit is idempotent."""
        await self._stopping.wait()
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        while not self._redis_down and time.monotonic() < deadline:
            await self._probe_redis()
            await anyio.sleep(0.2)
        self.log.warning("worker.shutdown_abandoned", in_flight=len(self._in_flight), redis_down=self._redis_down)
        scope.cancel()

    async def _probe_redis(self) -> None:
        # A commit stuck in the client's retries has not raised yet: ask Redis directly.
        try:
            with anyio.fail_after(2.0):
                await self.bus.redis.ping()
        except Exception as exc:
            self.redis_state(exc)

    def redis_state(self, exc: BaseException | None) -> None:
        """Record whether Redis answers (``exc`` None) or not: a stop during an outage exits now."""
        self._redis_down = exc is not None

    # -- hooks for roles that read differently ----------------------------------------------------
    def input_streams(self) -> list[str]:
        """Streams this worker consumes (its group on each); read together, the first first."""
        return [self.stream]

    async def extra_reclaim(self) -> list[Delivery]:
        """More entries to take over on a reclaim round (e.g. a dead replica's own stream)."""
        return []

    # -- the loop ---------------------------------------------------------------------------------
    async def _loop(self) -> None:
        await self._engine.run(self._read_loop)

    async def _read_loop(self) -> None:
        streams = self.input_streams()
        # 1) entries delivered to this consumer name before a restart
        for stream in streams:
            while not self.stopping:
                own = await self.bus.read(
                    stream, self.group, self.name, pending=True, count=await self._engine.read_budget()
                )
                if not own:
                    break
                await self._engine.process(own)
                await self._engine.settle()
        next_reclaim = time.monotonic() + self.settings.reclaim_interval_s
        next_trim = time.monotonic() + self.settings.trim_interval_s
        backoff = 0.1
        while not self.stopping:
            count = await self._engine.read_budget()
            now = time.monotonic()
            try:
                if now >= next_reclaim:
                    next_reclaim = now + self.settings.reclaim_interval_s
                    batch = [d for s in streams for d in await self.bus.reclaim(s, self.group, self.name, count=count)]
                    batch += await self.extra_reclaim()
                else:
                    batch = await self.bus.read_many(streams, self.group, self.name, count=count)
                if batch:
                    await self._engine.process(batch)
                elif self.settings.burst and not self._in_flight and await self._drained():
                    break
                if now >= next_trim:
                    next_trim = now + self.settings.trim_interval_s
                    for s in streams:
                        await self.bus.trim(s)
                backoff = 0.1
                self.redis_state(None)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                # Redis is down past the client's retry policy: nothing was acked that was not
                # committed, so waiting and reading again loses nothing.
                self.redis_state(exc)
                self.log.warning("worker.redis_unavailable", error=repr(exc), retry_in_s=backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        await self._engine.settle()  # stopping (SIGTERM) or drained: finish and commit what is in flight

    async def _drained(self) -> bool:
        for stream in self.input_streams():
            for g in await self.bus.group_info(stream):
                if g.get("name") == self.group and (int(g.get("pending") or 0) or int(g.get("lag") or 0)):
                    return False
        return True

    def triage(self, d: Delivery) -> str:
        """Why ``d`` goes straight to the dead-letter stream ('' = handle it): undecodable, a kind
        this role does not accept (a valid message on the wrong stream must not crash-loop the
        worker), or delivered too often."""
        if d.msg is None:
            return f"undecodable: {d.error}"
        if self.accepts and not isinstance(d.msg, self.accepts):
            allowed = sorted(k.KIND for k in self.accepts)
            return f"wrong kind: the {self.role} worker does not handle {d.msg.KIND!r} (accepts {allowed})"
        if d.deliveries > self.bus.settings.max_deliveries:
            return f"delivered {d.deliveries} times (max {self.bus.settings.max_deliveries})"
        return ""

    async def classify(
        self, done: Sequence[tuple[Delivery, Effects | None | BaseException]]
    ) -> list[tuple[Delivery, Effects]]:
        """What to commit: invalid messages go to the dead-letter stream; a handler that raised
        leaves its entry pending (retried after ``min_idle``, dead-lettered after N deliveries)."""
        to_commit: list[tuple[Delivery, Effects]] = []
        for d, r in done:
            if isinstance(r, MessageError):
                await self.dead_letter(d, f"invalid message: {r}")
            elif isinstance(r, BaseException):
                self.stats["errors"] += 1
                self.log.error(
                    "worker.handle_failed",
                    episode_id=d.msg.episode_id if d.msg else None,
                    entry=d.entry_id,
                    deliveries=d.deliveries,
                    error=repr(r),
                )
            else:
                to_commit.append((d, r if r is not None else Effects()))
        return to_commit

    async def dead_letter(self, d: Delivery, why: str) -> None:
        self.stats["dead_lettered"] += 1
        await self.bus.dead_letter(d, why)

    # -- background loops -----------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        key = self.bus.keys.heartbeat(self.role, self.name)
        while True:
            body = json.dumps(
                {
                    "role": self.role,
                    "worker": self.name,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "at": time.time(),
                    "in_flight": len(self._in_flight),
                    **self.stats,
                    **self.heartbeat_extra(),
                }
            )
            try:
                await self.bus.redis.set(key, body, px=int(self.settings.heartbeat_ttl_s * 1000))
            except Exception as exc:  # a missed heartbeat must not kill the worker
                self.log.warning("worker.heartbeat_failed", error=repr(exc))
            await anyio.sleep(self.settings.heartbeat_interval_s)

    def heartbeat_extra(self) -> dict[str, Any]:
        """Role-specific fields for the heartbeat (e.g. the policy version)."""
        return {}

    async def _clear_heartbeat(self) -> None:
        try:
            with anyio.fail_after(2):
                await self.bus.redis.delete(self.bus.keys.heartbeat(self.role, self.name))
        except Exception:  # the key expires on its own
            pass

    async def _renew_loop(self) -> None:
        every = self.bus.settings.min_idle_ms / 3000
        while True:
            await anyio.sleep(every)
            by_stream: dict[str, list[str]] = {}
            for (stream, eid), t in list(self._in_flight.items()):
                if time.monotonic() - t > every:
                    by_stream.setdefault(stream, []).append(eid)
            for stream, ids in by_stream.items():
                try:
                    await self.bus.renew(stream, self.group, self.name, ids)
                except Exception as exc:
                    self.log.warning("worker.renew_failed", error=repr(exc))
