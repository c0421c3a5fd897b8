"""The reward worker groups trajectories, scores them as docs/gyms.md defines, and drops bad groups whole."""

from __future__ import annotations

import anyio
import pytest

from userrl.bus.messages import ScoredGroup, Trajectory, decode
from userrl.bus.transport import Bus
from userrl.bus.worker import WorkerSettings
from userrl.learner.reward.worker import RewardWorker
from userrl.learner.rewards import RewardConfig

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

EXAMPLE = [[0, 0, 1], [0, 0.5], [0, 0, 0, 0.2], [1]]  # docs/gyms.md's worked example, 2 tokens per turn


def traj(group: str, i: int, rewards: list[float], size: int, status: str = "ok") -> Trajectory:
    turns = [
        {"reward": r, "prompt_ids": [1], "token_ids": [7, 8], "logprobs": [-0.1, -0.2], "policy_version": 0}
        for r in rewards
    ]
    return Trajectory(
        episode_id=f"{group}/{i}",
        group_id=group,
        env_id="userrl/Function-v0",
        task_id="t",
        turns=turns,
        status=status,
        meta={"group_size": size},
    )


async def run_workers(bus: Bus, n_workers: int = 1, **kw) -> list[ScoredGroup]:
    workers = [
        RewardWorker(bus, WorkerSettings(name=f"r{i}", burst=True, reclaim_interval_s=0.2), **kw)
        for i in range(n_workers)
    ]
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for w in workers:
                tg.start_soon(w.async_run)
    return [decode(f[b"p"]) for _, f in await bus.redis.xrange(bus.keys.stream("learner"))]  # type: ignore[misc]


async def send(bus: Bus, trajs: list[Trajectory]) -> None:
    for t in trajs:
        await bus.send(bus.keys.stream("reward"), t)


@pytest.mark.parametrize(
    ("credit", "score", "first_turn_adv"),
    [
        ("equalized", "sum", [-0.1821] * 3),
        ("r2g", "r2g", [0.2163, 0.2704, 0.338]),
        ("em", "sum", [-0.1366, -0.1366, -0.2732]),
    ],
)
async def test_worked_example_over_the_bus(bus: Bus, credit: str, score: str, first_turn_adv: list[float]) -> None:
    await send(bus, [traj("g", i, r, 4) for i, r in enumerate(EXAMPLE)])
    (sg,) = await run_workers(bus, config=RewardConfig(credit=credit, score=score))
    assert sg.status == "ok" and len(sg.items) == 4
    first = sg.items[0]
    assert [round(t["advantages"][0], 4) for t in first["turns"]] == first_turn_adv
    assert all(len(t["advantages"]) == 2 for t in first["turns"])
    assert [it["return"] for it in sg.items] == pytest.approx([1.0, 0.5, 0.2, 1.0])
    assert await bus.redis.xlen(bus.keys.results) == 1


async def test_concurrent_workers_emit_each_group_once(bus: Bus) -> None:
    trajs = [traj(f"g{g}", i, [float(i % 2)], 4) for g in range(20) for i in range(4)]
    await send(bus, trajs)
    groups = await run_workers(bus, n_workers=3)
    assert sorted(sg.group_id for sg in groups) == sorted(f"g{g}" for g in range(20))


async def test_failed_member_drops_the_group_and_late_members_are_discarded(bus: Bus) -> None:
    await send(bus, [traj("g", 0, [1.0], 2), traj("g", 1, [0.0], 2, status="failed")])
    (sg,) = await run_workers(bus)
    assert sg.status == "dropped" and "failed members" in sg.meta["reason"]
    await send(bus, [traj("g", 1, [0.0], 2, status="failed")])  # a redelivered duplicate
    assert len(await run_workers(bus)) == 1
    assert await bus.redis.hget(bus.keys.counters, "groups_dropped") == b"1"


async def test_incomplete_group_is_dropped_at_the_deadline(bus: Bus) -> None:
    await send(bus, [traj("g", 0, [1.0], 3)])
    w = RewardWorker(bus, WorkerSettings(name="r", reclaim_interval_s=0.2), group_timeout_s=0.3, sweep_interval_s=0.1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.async_run)
        with anyio.fail_after(10):
            while not await bus.redis.xlen(bus.keys.stream("learner")):
                await anyio.sleep(0.05)
        w.stop()
    ((_, f),) = await bus.redis.xrange(bus.keys.stream("learner"))
    sg = decode(f[b"p"])
    assert sg.status == "dropped" and "1/3 members by the deadline" in sg.meta["reason"]  # type: ignore[attr-defined]
    await send(bus, [traj("g", 1, [0.0], 3)])  # a member that arrives after its group was dropped
    assert len(await run_workers(bus)) == 1
    assert await bus.redis.hget(bus.keys.counters, "late_trajectories") == b"1"
