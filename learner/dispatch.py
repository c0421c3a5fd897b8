"""The dispatcher: turns the train split into GRPO groups, with admission control.

No more than ``groups_per_step * (max_staleness + 1)`` groups are in flight, and (with
``groups_per_step`` set) no group is dispatched that the learner could only reach more than
``max_staleness`` versions later: by version ``v`` the learner has consumed ``v * B`` groups,
so at most ``(v + max_staleness + 1) * B`` (plus one for every dropped group, which trains
nothing) may have been dispatched since the dispatcher started. The in-flight cap alone lets a
group freed mid-step be refilled with the old version, which the learner then drops as stale;
with ``max_staleness`` 0 this is what makes the loop truly synchronous (AReaL's admission rule).
Stale turns that still slip through (a redelivery, a slow worker) are dropped and counted.

It dispatches only the tasks it is given: ``userrl train`` gives it the train split of the
config's ``data`` (:func:`userrl.learner.main_job.grpo_tasks`), so no test task is trained on.

No group waits on episodes that no longer exist: a :class:`~userrl.bus.reconcile.Reconciler`
sets its marker before the first reset and remembers every reset it sends; every ``check_s``
(from ``fill``) it re-sends the episodes of in-flight groups that a data loss took (same
episode ids, so the group completes), or reports them failed after ``max_attempts``, so the
reward workers drop the group and it comes back as dropped. Both are counted in
:meth:`Dispatcher.stats` (the learner's metrics) and logged as warnings (the console).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from userrl.bus.messages import Reset
from userrl.bus.reconcile import Reconciler
from userrl.bus.transport import Bus
from userrl.rollouts import make_resets

log = structlog.get_logger(__name__)


def task_cycle(tasks: dict[str, list[dict[str, Any]]], seed: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """Interleave gyms; reshuffle each gym's tasks every epoch (seeded)."""
    rng = random.Random(seed)
    orders = {g: [] for g in tasks}  # type: dict[str, list[dict[str, Any]]]
    while True:
        for g in sorted(tasks):
            if not orders[g]:
                orders[g] = list(tasks[g])
                rng.shuffle(orders[g])
            yield g, orders[g].pop()


@dataclass
class Dispatcher:
    bus: Bus
    tasks: dict[str, list[dict[str, Any]]]
    group_size: int
    max_in_flight: int
    max_turns: int
    sampling: dict[str, Any]
    seed: int = 0
    run_tag: str = "train"
    groups_per_step: int = 0
    """B; with 0 only the in-flight cap applies (no per-version admission)."""
    max_staleness: int = 0
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  #: gym options by env id
    in_flight: set[str] = field(default_factory=set)
    dispatched: int = 0
    dropped: int = 0
    first_version: int | None = None
    stall_s: float = 900.0
    """Reconciler: a live episode without progress this long is reported failed."""
    check_s: float = 5.0
    """Reconciler: how often ``fill`` looks for episodes a data loss took."""
    reported_failed: int = 0

    def __post_init__(self) -> None:
        self._cycle = task_cycle(self.tasks, self.seed)
        self._members: dict[str, list[str]] = {}  #: in-flight group -> its episode ids
        self._reconciler: Reconciler | None = None
        self._next_check = 0.0

    def admitted(self, version: int) -> int:
        """How many groups may have been dispatched by ``version`` (see the module docstring)."""
        if self.groups_per_step <= 0:
            return 1 << 62
        if self.first_version is None:
            self.first_version = version
        steps_done = version - self.first_version
        return (steps_done + self.max_staleness + 1) * self.groups_per_step + self.dropped

    async def fill(self, version: int) -> list[Reset]:
        """Dispatch groups until ``max_in_flight`` are out (and the version admits them); return
        the resets sent."""
        await self.reconcile()
        sent: list[Reset] = []
        while len(self.in_flight) < self.max_in_flight and self.dispatched < self.admitted(version):
            env_id, task = next(self._cycle)
            resets = make_resets(
                env_id,
                [task],
                group_size=self.group_size,
                seed=self.seed + self.dispatched,
                max_turns=self.max_turns,
                sampling=self.sampling,
                meta={"split": "train", "dispatched_at_version": version},
                prefix=f"{self.run_tag}{self.dispatched:06d}:",
                options=self.options.get(env_id),
            )
            self.dispatched += 1
            self.in_flight.add(resets[0].group_id)
            self._members[resets[0].group_id] = [r.episode_id for r in resets]
            sent += resets
        if sent:
            assert self._reconciler is not None
            await self._reconciler.send(sent)
        return sent

    def done(self, group_id: str, *, dropped: bool = False) -> None:
        """``group_id`` came back; a dropped group gives its admission slot back."""
        if group_id in self.in_flight and dropped:
            self.dropped += 1
        self.in_flight.discard(group_id)
        if self._reconciler is not None:
            self._reconciler.forget(self._members.pop(group_id, []))

    async def reconcile(self) -> None:
        """Start the reconciler (its marker before the first reset), then every ``check_s`` let
        it re-send or report failed the in-flight episodes that no longer exist (module docstring)."""
        if self._reconciler is None:
            self._reconciler = Reconciler(self.bus, [], stall_s=self.stall_s)
            await self._reconciler.start()
        if time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + self.check_s
        rec = self._reconciler
        before = (rec.redispatched, self.reported_failed, rec.data_losses)
        failed = await rec.check(await self._unfinished(), refresh=self._unfinished)
        self.reported_failed += len(failed)
        if (rec.redispatched, self.reported_failed, rec.data_losses) != before:
            log.warning("dispatch.episodes_lost", **self.stats(), in_flight_groups=len(self.in_flight))

    async def _unfinished(self) -> set[str]:
        """The tracked episodes not in the finished index (``release_episode`` adds each in the
        commit of its trajectory); their groups stay tracked until scored, as a data loss can
        still take the trajectories the reward workers hold."""
        assert self._reconciler is not None
        eps = sorted(self._reconciler.tracked)
        scores = await self.bus.store.times_in("finished", eps)
        return {e for e, sc in zip(eps, scores, strict=True) if sc is None}

    def stats(self) -> dict[str, int]:
        """What data losses cost so far: episodes re-sent and reported failed, losses seen."""
        rec = self._reconciler
        return {
            "episodes_resent": rec.redispatched if rec else 0,
            "episodes_reported_failed": self.reported_failed,
            "data_losses": rec.data_losses if rec else 0,
        }
