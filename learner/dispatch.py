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
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from userrl.bus.messages import Reset
from userrl.bus.transport import Bus
from userrl.rollouts import make_resets, send_resets


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

    def __post_init__(self) -> None:
        self._cycle = task_cycle(self.tasks, self.seed)

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
            sent += resets
        await send_resets(self.bus, sent)
        return sent

    def done(self, group_id: str, *, dropped: bool = False) -> None:
        """``group_id`` came back; a dropped group gives its admission slot back."""
        if group_id in self.in_flight and dropped:
            self.dropped += 1
        self.in_flight.discard(group_id)
