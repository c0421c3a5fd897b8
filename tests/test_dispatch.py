"""The dispatcher's admission rule: rollouts never run more than max_staleness versions ahead."""

from __future__ import annotations

import pytest

from userrl.envs.datasets import load_tasks
from userrl.learner.dispatch import Dispatcher

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def make(bus, staleness: int) -> Dispatcher:
    tasks = {"userrl/Function-v0": load_tasks("userrl/Function-v0", "train")}
    return Dispatcher(
        bus,
        tasks,
        group_size=2,
        max_in_flight=2 * (staleness + 1),
        max_turns=2,
        sampling={},
        groups_per_step=2,
        max_staleness=staleness,
    )


async def test_synchronous_dispatch_waits_for_the_next_version(bus) -> None:
    d = make(bus, 0)
    first = await d.fill(0)
    assert len({r.group_id for r in first}) == 2
    d.done(first[0].group_id)  # a group came back mid-step: the in-flight cap alone would refill it
    assert await d.fill(0) == []  # ... with version 0 weights, which version 1 would drop as stale
    d.done(first[-1].group_id)
    assert len({r.group_id for r in await d.fill(1)}) == 2  # the learner stepped: the next B go out


async def test_staleness_two_keeps_three_steps_in_flight_and_dropped_groups_are_replaced(bus) -> None:
    d = make(bus, 2)
    sent = await d.fill(0)
    groups = list(dict.fromkeys(r.group_id for r in sent))
    assert len(groups) == 6
    for g in groups[:2]:
        d.done(g)
    assert await d.fill(0) == []  # still version 0: 3 steps' worth were already dispatched
    d.done(groups[2], dropped=True)  # a dropped group trains nothing: its slot is given back
    assert len({r.group_id for r in await d.fill(0)}) == 1
    assert len({r.group_id for r in await d.fill(1)}) == 2


async def test_without_groups_per_step_only_the_in_flight_cap_applies(bus) -> None:
    tasks = {"userrl/Function-v0": load_tasks("userrl/Function-v0", "train")}
    d = Dispatcher(bus, tasks, group_size=1, max_in_flight=3, max_turns=2, sampling={})
    sent = await d.fill(0)
    d.done(sent[0].group_id)
    assert len(await d.fill(0)) == 1
