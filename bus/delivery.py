"""The two delivery engines a :class:`~userrl.bus.worker.Worker` schedules its messages with.

A worker picks one when it starts (its ``streaming`` flag) and its read loop only asks it three
things: how many entries the next read may take (:meth:`DeliveryEngine.read_budget`), what to do
with what was read (:meth:`~DeliveryEngine.process`), and to wait until everything started is
committed (:meth:`~DeliveryEngine.settle`).

- :class:`BatchDelivery`: handle a read batch concurrently (the role's ``handle_batch``) and
  commit all its results in one pipeline before reading again.
- :class:`StreamingDelivery`: start each message as soon as one of ``concurrency`` slots is free
  and commit it as soon as it is handled (commits that finish together share one pipeline), so
  one slow call never holds up the others; it reads only as many entries as it has free slots.

Both leave what to dead-letter, how a message is handled and what its result commits to the
worker (:meth:`Worker.triage`, :meth:`Worker.handle_one`, :meth:`Worker.classify`).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from userrl.bus.transport import Delivery, Effects

if TYPE_CHECKING:
    from userrl.bus.worker import Worker

Result = Effects | None | BaseException
#: (stream, entry id) -> when the worker started handling it
InFlight = dict[tuple[str, str], float]


class DeliveryEngine(ABC):
    """How a worker handles and commits what its read loop reads (see the module docstring).

    ``in_flight`` is the worker's table of entries being handled, which the engine keeps and
    the worker's heartbeat, claim renewal and shutdown read.
    """

    def __init__(self, worker: Worker, in_flight: InFlight) -> None:
        self.worker = worker
        self.in_flight = in_flight

    async def run(self, read_loop: Callable[[], Awaitable[None]]) -> None:
        """Run the worker's read loop under whatever the engine needs around it."""
        await read_loop()

    @abstractmethod
    async def read_budget(self) -> int:
        """How many entries the next read may take."""

    @abstractmethod
    async def process(self, batch: Sequence[Delivery]) -> None:
        """Handle (or start handling) what one read returned."""

    @abstractmethod
    async def settle(self) -> None:
        """Wait until every message started is committed."""

    def count_commits(self, handled: int, applied: Sequence[bool]) -> None:
        stats = self.worker.stats
        stats["handled"] += handled
        stats["committed"] += sum(applied)
        stats["duplicates"] += len(applied) - sum(applied)


class BatchDelivery(DeliveryEngine):
    """Handle each read batch with ``handle_batch`` and commit it before the next read."""

    async def read_budget(self) -> int:
        return self.worker.bus.settings.read_count

    async def settle(self) -> None:
        """Nothing to wait for: :meth:`process` commits a batch before it returns."""

    async def process(self, batch: Sequence[Delivery]) -> None:
        """Handle ``batch`` and commit it."""
        w = self.worker
        good: list[Delivery] = []
        for d in batch:
            why = w.triage(d)
            if why:
                await w.dead_letter(d, why)
            else:
                good.append(d)
        if not good:
            return
        now = time.monotonic()
        for d in good:
            self.in_flight[(d.stream, d.entry_id)] = now
        try:
            results = await w.handle_batch(good)
            to_commit = await w.classify(list(zip(good, results, strict=True)))
            applied = await w.bus.commit(to_commit)
        finally:
            for d in good:
                self.in_flight.pop((d.stream, d.entry_id), None)
        self.count_commits(len(good), applied)


class StreamingDelivery(DeliveryEngine):
    """Start each message on a free slot; commit each when it is handled (``handle_batch`` is
    not used)."""

    def __init__(self, worker: Worker, in_flight: InFlight) -> None:
        super().__init__(worker, in_flight)
        self._slots = anyio.Semaphore(worker.settings.concurrency)
        self._tg: TaskGroup | None = None  #: the handlers' task group, while the loop runs
        self._done_tx: MemoryObjectSendStream[tuple[Delivery, Result]] | None = None
        self._progress = anyio.Event()  #: set (and replaced) whenever in-flight messages commit

    async def run(self, read_loop: Callable[[], Awaitable[None]]) -> None:
        tx: MemoryObjectSendStream[tuple[Delivery, Result]]
        rx: MemoryObjectReceiveStream[tuple[Delivery, Result]]
        tx, rx = anyio.create_memory_object_stream(max_buffer_size=math.inf)
        self._done_tx = tx
        async with rx, anyio.create_task_group() as outer:
            outer.start_soon(self._committer, rx)
            async with tx, anyio.create_task_group() as tg:
                self._tg = tg
                await read_loop()  # settles (every started message committed) before returning
            self._tg = None
        self._done_tx = None

    async def read_budget(self) -> int:
        """Only as many entries as there are free slots (waiting for one), so a worker never
        hoards entries it cannot start (peers take them, and nothing waits unrenewed)."""
        while self._slots.value < 1:
            await self._progress.wait()
        return min(self.worker.bus.settings.read_count, int(self._slots.value))

    async def settle(self) -> None:
        while self.in_flight:
            await self._progress.wait()

    async def process(self, batch: Sequence[Delivery]) -> None:
        """Start every message of ``batch`` (dead-letter the bad ones); returns without waiting."""
        assert self._tg is not None
        w = self.worker
        for d in batch:
            if (d.stream, d.entry_id) in self.in_flight:
                continue  # reclaimed from ourselves while still being handled
            why = w.triage(d)
            if why:
                await w.dead_letter(d, why)
            else:
                await self._slots.acquire()
                self.in_flight[(d.stream, d.entry_id)] = time.monotonic()
                self._tg.start_soon(self._run_one, d)

    async def _run_one(self, d: Delivery) -> None:
        assert self._done_tx is not None
        result = await self.worker.handle_one(d, self.worker.debug_enabled())
        await self._done_tx.send((d, result))

    async def _committer(self, rx: MemoryObjectReceiveStream[tuple[Delivery, Result]]) -> None:
        """Commit finished messages as they come, those that finished together in one call."""
        async for first in rx:
            done = [first]
            while len(done) < 256:
                try:
                    done.append(rx.receive_nowait())
                except anyio.WouldBlock:
                    break
            try:
                await self._commit_done(done)
            finally:
                for d, _ in done:
                    self.in_flight.pop((d.stream, d.entry_id), None)
                    self._slots.release()
                progress, self._progress = self._progress, anyio.Event()
                progress.set()

    async def _commit_done(self, done: list[tuple[Delivery, Result]]) -> None:
        w = self.worker
        to_commit = await w.classify(done)
        backoff = 0.1
        while True:
            try:
                applied = await w.bus.commit(to_commit)
                w.redis_state(None)
                break
            except (RedisConnectionError, RedisTimeoutError) as exc:
                # the commit is idempotent: retrying until Redis is back loses and doubles nothing;
                # on a stop the entries stay pending instead, for a peer or our restart
                w.redis_state(exc)
                if w.stopping:
                    w.log.warning(f"{w.role}.commit_abandoned", error=repr(exc), n=len(to_commit))
                    return
                w.log.warning(f"{w.role}.commit_retry", error=repr(exc), retry_in_s=backoff, n=len(to_commit))
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        self.count_commits(len(done), applied)
