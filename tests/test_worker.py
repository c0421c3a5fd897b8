"""The worker base in-process: burst mode, retries into the dead-letter stream, heartbeats, check."""

from __future__ import annotations

import subprocess

import anyio
import pytest

from tests.relay_worker import RelayWorker
from userrl.bus.messages import Probe
from userrl.bus.transport import Bus
from userrl.bus.worker import WorkerSettings

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

FAST = dict(burst=True, reclaim_interval_s=0.2, heartbeat_interval_s=0.1, heartbeat_ttl_s=1.0)


async def _sink_episodes(bus: Bus) -> list[str]:
    rows = await bus.redis.xrange(bus.keys.stream("sink"))
    return [f[b"episode"].decode() for _, f in rows]


async def _feed(bus: Bus, bodies: list[dict]) -> None:
    for i, body in enumerate(bodies):
        await bus.send(bus.keys.stream("relay"), Probe(episode_id=f"e{i}", body=body))


async def test_burst_processes_everything_once(bus: Bus) -> None:
    await _feed(bus, [{}] * 50)
    w = RelayWorker(bus, WorkerSettings(name="w1", **FAST))
    with anyio.fail_after(20):
        await w.async_run()
    assert sorted(await _sink_episodes(bus)) == sorted(f"e{i}" for i in range(50))
    assert w.stats["committed"] == 50 and w.stats["dead_lettered"] == 0


async def test_failures_are_retried_then_dead_lettered(bus: Bus) -> None:
    # e0 fails twice then succeeds (max_deliveries=3); e1 always fails -> dead letter; e2 fine
    await _feed(bus, [{"fail_times": 2}, {"poison": True}, {}])
    await bus.redis.xadd(bus.keys.stream("relay"), {b"p": b"\x93garbage"})  # undecodable
    w = RelayWorker(bus, WorkerSettings(name="w1", **FAST))
    with anyio.fail_after(30):
        await w.async_run()
    assert sorted(await _sink_episodes(bus)) == ["e0", "e2"]
    dead = await bus.dead_letters()
    reasons = sorted(r["error"].split(":")[0] for r in dead)
    assert len(dead) == 2 and reasons == ["delivered 4 times (max 3)", "undecodable"]
    assert [r.get("episode") for r in dead if r["error"].startswith("delivered")] == ["e1"]
    assert (await bus.redis.xpending(bus.keys.stream("relay"), "relay"))["pending"] == 0


async def test_heartbeat_and_check_command(
    bus: Bus, redis_url: str, run_name: str, subprocess_env: dict[str, str], python: str
) -> None:
    w = RelayWorker(bus, WorkerSettings(name="hb1", burst=False, heartbeat_interval_s=0.1, heartbeat_ttl_s=1.0))

    def check(*extra: str) -> int:
        return subprocess.run(
            [python, "-m", "userrl", "check", "relay", "--set", f"run={run_name}", *extra],
            env=subprocess_env,
            capture_output=True,
            timeout=30,
        ).returncode

    async with anyio.create_task_group() as tg:
        tg.start_soon(w.async_run)
        with anyio.fail_after(5):
            while not await bus.redis.exists(bus.keys.heartbeat("relay", "hb1")):
                await anyio.sleep(0.05)
        assert await anyio.to_thread.run_sync(check) == 0
        assert await anyio.to_thread.run_sync(check, "--worker", "hb1") == 0
        assert await anyio.to_thread.run_sync(check, "--worker", "nobody") == 1
        w.stop()
    assert not await bus.redis.exists(bus.keys.heartbeat("relay", "hb1"))
    assert await anyio.to_thread.run_sync(check) == 1
    env = dict(subprocess_env, USERRL_REDIS_URL="redis://127.0.0.1:1/0")
    bad = subprocess.run(
        [python, "-m", "userrl", "check", "relay", "--timeout", "2"], env=env, capture_output=True, timeout=30
    )
    assert bad.returncode == 2


async def test_bad_payloads_are_dead_lettered_with_a_reason(bus: Bus) -> None:
    import dataclasses

    import msgpack

    from userrl.bus.messages import encode

    stream = bus.keys.stream("relay")
    good = encode(Probe(episode_id="ok"))
    bad = {
        "truncated": good[: len(good) // 2],
        "not msgpack": b"\xc1\xc1 plain garbage",
        "wrong version": msgpack.packb({"k": "probe", "v": 99, "d": {"episode_id": "v"}}),
        "over the cap": encode(Probe(episode_id="big", body={"x": "y" * 2_000_000})),
        "no payload": None,
    }
    for payload in bad.values():
        await bus.redis.xadd(stream, {b"p": payload} if payload is not None else {b"other": b"1"})
    await bus.send(stream, Probe(episode_id="ok"))
    bus.settings = dataclasses.replace(bus.settings, max_message_bytes=1_000_000)
    w = RelayWorker(bus, WorkerSettings(name="w1", **FAST))
    with anyio.fail_after(20):
        await w.async_run()  # never crashes
    assert await _sink_episodes(bus) == ["ok"]
    reasons = [r["error"] for r in await bus.dead_letters()]
    assert len(reasons) == 5
    joined = "\n".join(reasons)
    for needle in ("undecodable msgpack payload", "schema version 99", "over the cap of 1000000", "no payload field"):
        assert needle in joined, (needle, joined)
