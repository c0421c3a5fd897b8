"""Issue #16, bus level, in process against a real Redis: a waiter outlasts trimming, every role
dead-letters a message of the wrong kind on first delivery, oversized dead letters stay small
and the dead-letter stream is capped, and a finished episode leaves only bounded, expiring keys."""

from __future__ import annotations

import hashlib
import time

import anyio
import msgpack
import pytest

from tests.relay_worker import RelayWorker
from userrl.agents.scripted import ScriptedExpertBackend
from userrl.agents.worker import PolicyWorker
from userrl.bus.messages import Probe, Trajectory, UserRequest, decode
from userrl.bus.transport import Bus, BusSettings, Effects
from userrl.bus.worker import Worker, WorkerSettings
from userrl.envs.datasets import load_tasks
from userrl.envs.worker import EnvWorker
from userrl.learner.reward.worker import RewardWorker
from userrl.rollouts import make_resets, send_resets, wait_trajectories
from userrl.sim_users.worker import UserWorker

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

FAST = dict(reclaim_interval_s=0.2, heartbeat_interval_s=0.1, heartbeat_ttl_s=1.0)


def traj(group: str, i: int, size: int = 1) -> Trajectory:
    turns = [{"reward": 1.0, "prompt_ids": [1], "token_ids": [7], "logprobs": [-0.1], "policy_version": 0}]
    return Trajectory(
        episode_id=f"{group}/{i}",
        group_id=group,
        env_id="userrl/Function-v0",
        task_id="t",
        turns=turns,
        meta={"group_size": size},
    )


async def test_waiter_outlasts_the_trim_interval(bus: Bus) -> None:
    """Fix 1: a load that takes several trim intervals. The reward worker trims every 0.2 s what
    it consumed; the old waiter re-read the whole stream and never saw the early trajectories."""
    reward = RewardWorker(bus, WorkerSettings(name="r0", trim_interval_s=0.2, **FAST))
    ids = [f"g{i}/0" for i in range(60)]

    async def produce() -> None:
        for i in range(60):
            await bus.send(bus.keys.stream("reward"), traj(f"g{i}", 0))
            await anyio.sleep(0.03)  # 1.8 s of arrivals: nine trim intervals

    async with anyio.create_task_group() as tg:
        tg.start_soon(reward.async_run)
        tg.start_soon(produce)
        with anyio.fail_after(30):
            got = await wait_trajectories(bus, ids, timeout=25)
        reward.stop()
    assert sorted(got) == sorted(ids) and all(len(v) == 1 for v in got.values())
    assert await bus.redis.xlen(bus.keys.stream("reward")) < 60, "the reward worker should have trimmed"
    groups = [g["name"] for g in await bus.group_info(bus.keys.stream("reward"))]
    assert groups == ["reward"], f"the waiter's group must be gone: {groups}"


async def test_stale_waiter_group_is_dropped_by_trim(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    import userrl.bus.transport as transport

    stream = bus.keys.stream("reward")
    await bus.redis.xgroup_create(stream, "wait:dead", id="0", mkstream=True)
    await bus.send(stream, traj("g", 0))
    await bus.redis.xreadgroup("wait:dead", "w", {stream: ">"}, count=1)  # a waiter that then died
    await bus.send(stream, traj("g", 1))
    monkeypatch.setattr(transport, "WAITER_STALE_MS", 0)
    await anyio.sleep(0.01)
    await bus.trim(stream, approximate=False)
    assert [g["name"] for g in await bus.group_info(stream)] == []


def _workers(bus: Bus, burst: bool = True) -> list[Worker]:
    s = lambda n: WorkerSettings(name=n, burst=burst, **FAST)  # noqa: E731
    return [
        EnvWorker(bus, s("env"), send_task_to_policy=True),
        PolicyWorker(bus, s("policy"), backend=ScriptedExpertBackend()),
        UserWorker(bus, s("user")),
        RewardWorker(bus, s("reward")),
    ]


@pytest.mark.parametrize("role", ["env", "policy", "user", "reward"])
async def test_wrong_kind_is_dead_lettered_on_first_delivery(bus: Bus, role: str) -> None:
    """Fix 2: a valid message of a kind the role does not handle (a probe; a user request on the
    policy stream) goes to the dead letters at once; the worker neither raises nor exits."""
    (w,) = [w for w in _workers(bus) if w.role == role]
    stream = bus.keys.stream(role)
    wrong = UserRequest(episode_id="e1", seq=1, hop=1, query={}) if role != "user" else Probe(episode_id="e1")
    await bus.send(stream, wrong)
    await bus.send(stream, Probe(episode_id="e2"))
    with anyio.fail_after(20):
        await w.async_run()  # burst: returns once drained; a crash would raise here
    dead = await bus.dead_letters()
    assert sorted(d["episode"] for d in dead) == ["e1", "e2"]
    assert all(d["error"].startswith("wrong kind") and d["deliveries"] == "1" for d in dead), dead
    assert (await bus.redis.xpending(stream, role))["pending"] == 0


async def test_oversized_dead_letter_keeps_prefix_size_and_hash(redis_url: str, run_name: str) -> None:
    """Fix 6: a 20 MB payload costs the dead-letter stream a 1 KiB prefix, not 20 MB, and the
    dead-letter stream stays at its cap."""
    from userrl.bus.client import make_client
    from userrl.bus.keys import Keys

    bus = Bus(
        make_client(redis_url, block_ms=100),
        Keys(run_name),
        BusSettings(block_ms=100, min_idle_ms=400, max_deliveries=3, dead_cap=20, dead_payload_bytes=1024),
    )
    try:
        stream = bus.keys.stream("relay")
        big = b"\x00" * (20 * 1024 * 1024)
        await bus.redis.xadd(stream, {b"p": big})
        for i in range(250):
            await bus.redis.xadd(stream, {b"p": b"garbage %d" % i})
        w = RelayWorker(bus, WorkerSettings(name="w", burst=True, **FAST))
        with anyio.fail_after(60):
            await w.async_run()
        assert w.stats["dead_lettered"] == 251
        # MAXLEN ~ trims whole nodes (100 entries): the cap holds within one node
        assert await bus.redis.xlen(bus.keys.dead) <= 20 + 100
        assert await bus.redis.memory_usage(bus.keys.dead) < 1024 * 1024
        await bus.redis.xtrim(bus.keys.dead, maxlen=0)
        await bus.redis.xadd(stream, {b"p": big})
        w = RelayWorker(bus, WorkerSettings(name="w", burst=True, **FAST))
        with anyio.fail_after(60):
            await w.async_run()
        ((_, f),) = await bus.redis.xrange(bus.keys.dead)
        assert f[b"f:p"] == big[:1024] and f[b"size:p"] == str(len(big)).encode()
        assert f[b"sha256:p"] == hashlib.sha256(big).hexdigest().encode() and f[b"truncated"] == b"1"
        assert await bus.replay_dead() == 0, "a truncated letter cannot be replayed"
    finally:
        async for key in bus.redis.scan_iter(match=bus.keys.prefix + "*", count=500):
            await bus.redis.delete(key)
        await bus.redis.aclose()


async def test_capped_sends_hold_their_cap(bus: Bus) -> None:
    for i in range(300):
        await bus.commit_once(
            ("probe", f"e{i}", 0, 0),
            "t",
            Effects().send("x", Probe(episode_id=f"e{i}"), maxlen=10).append("y", {"i": i}, maxlen=10),
        )
    assert await bus.redis.xlen("x") <= 110 and await bus.redis.xlen("y") <= 110
    await bus.redis.delete("x", "y")


async def _keys(bus: Bus, kind: str) -> list[bytes]:
    return [k async for k in bus.redis.scan_iter(match=f"{bus.keys.prefix}{kind}*", count=1000)]


async def test_finished_episodes_release_their_keys(redis_url: str, run_name: str) -> None:
    """Fix 7: after episodes finish, no snapshot or stored replies remain, logs and idempotency
    keys expire within their configured windows, and the indexes and streams hold their caps."""
    from userrl.bus.client import make_client
    from userrl.bus.keys import Keys

    settings = BusSettings(
        block_ms=100,
        min_idle_ms=400,
        max_deliveries=3,
        finished_cap=3,
        results_cap=2,
        episode_log_ttl_ms=30_000,
        episode_log_cap=5,
    )
    bus = Bus(make_client(redis_url, block_ms=100), Keys(run_name), settings)
    try:
        resets = make_resets("userrl/Telepathy-v0", load_tasks("userrl/Telepathy-v0", "test")[:6], group_size=2)
        await send_resets(bus, resets)
        async with anyio.create_task_group() as tg:
            for w in _workers(bus, burst=False):
                tg.start_soon(w.async_run)
            got = await wait_trajectories(bus, [r.episode_id for r in resets], timeout=60)
            with anyio.fail_after(30):
                while await bus.redis.hlen(bus.keys.groups_done) < 6:
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        assert all(v[0].status == "ok" for v in got.values())
        assert await _keys(bus, "state:") == [] and await _keys(bus, "replies:") == []
        logs = await _keys(bus, "episode:")
        assert len(logs) == 12
        for k in logs:
            assert 0 < await bus.redis.pttl(k) <= 30_000
        done = await _keys(bus, "done:")
        assert done and all(0 < t <= settings.idempotency_window_ms for t in [await bus.redis.pttl(k) for k in done])
        assert settings.idempotency_window_ms <= 3_600_000, "minutes, not days"
        await bus.cap_finished()
        assert await bus.redis.zcard(bus.keys.finished) == 3
        assert await bus.redis.hlen(bus.keys.groups_done) == 3 and await bus.redis.zcard(bus.keys.groups_done_at) == 3
    finally:
        async for key in bus.redis.scan_iter(match=bus.keys.prefix + "*", count=500):
            await bus.redis.delete(key)
        await bus.redis.aclose()


async def test_reward_sweep_reports_stalled_episodes(bus: Bus) -> None:
    """A live episode whose snapshot stopped progressing (a message of it was dead-lettered) is
    reported failed, so its group is dropped and counted; a progressing one is left alone."""
    k = bus.keys
    now = time.time()
    for ep, at in (("g/0", now - 60), ("h/0", now)):
        blob = msgpack.packb(
            {"group_id": ep[0], "env_id": "userrl/Function-v0", "task_id": "t", "meta": {"group_size": 1}}
        )
        await bus.redis.hset(k.state(ep), mapping={"episode": blob, "seq": 2, "at": f"{at:.3f}"})
        await bus.redis.zadd(k.live, {ep: now - 60})
    w = RewardWorker(bus, WorkerSettings(name="r", **FAST), sweep_interval_s=0.1, stall_s=5.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.async_run)
        with anyio.fail_after(20):
            while not await bus.redis.xlen(k.stream("learner")):
                await anyio.sleep(0.05)
        w.stop()
    ((_, f),) = await bus.redis.xrange(k.stream("learner"))
    sg = decode(f[b"p"])
    assert sg.group_id == "g" and sg.status == "dropped", sg  # type: ignore[attr-defined]
    assert "stalled" in sg.items[0]["error"]["message"]  # type: ignore[attr-defined]
    assert not await bus.redis.exists(k.state("g/0")) and await bus.redis.exists(k.state("h/0"))
    assert [m.decode() for m in await bus.redis.zrange(k.live, 0, -1)] == ["h/0"]
    assert await bus.redis.hget(k.counters, "episodes_reconciled") == b"1"
