"""The dispatcher: turns the train split into GRPO groups, with admission control.

No more than ``groups_per_step * (max_staleness + 1)`` groups are in flight, so rollouts can
never run further ahead of the learner than the staleness bound allows: anything dispatched
is at most ``max_staleness`` versions old when it is trained on (stale turns that still slip
through, e.g. after a redelivery, are dropped by the learner and counted).

It dispatches only the tasks it is given: ``userrl train`` gives it the train split of the
config's ``data`` (:func:`userrl.learner.train.grpo_tasks`), so no test task is trained on.
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
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  #: gym options by env id
    in_flight: set[str] = field(default_factory=set)
    dispatched: int = 0

    def __post_init__(self) -> None:
        self._cycle = task_cycle(self.tasks, self.seed)

    async def fill(self, version: int) -> list[Reset]:
        """Dispatch groups until ``max_in_flight`` are out; return the resets sent."""
        sent: list[Reset] = []
        while len(self.in_flight) < self.max_in_flight:
            env_id, task = next(self._cycle)
            resets = make_resets(env_id, [task], group_size=self.group_size, seed=self.seed + self.dispatched,
                                 max_turns=self.max_turns, sampling=self.sampling,
                                 meta={"split": "train", "dispatched_at_version": version},
                                 prefix=f"{self.run_tag}{self.dispatched:06d}:",
                                 options=self.options.get(env_id))
            self.dispatched += 1
            self.in_flight.add(resets[0].group_id)
            sent += resets
        await send_resets(self.bus, sent)
        return sent

    def done(self, group_id: str) -> None:
        self.in_flight.discard(group_id)
