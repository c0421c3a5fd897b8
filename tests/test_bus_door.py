"""The Bus's verbs over the keys outside the work streams (store, routes, weights, control,
groups, seat, supervision) and its lifecycle (``open``, ``async with``, ``close``), against a
real Redis. The roles that use them are tested end to end elsewhere; here each verb is checked
against the keys it reads or writes, so a wrong key or a lost field shows up by name."""

from __future__ import annotations

import json
import time

import anyio
import msgpack
import pytest
import redis as sync_redis

from userrl.bus.keys import Keys
from userrl.bus.messages import WeightsAnnouncement
from userrl.bus.seat import Claim
from userrl.bus.store import snapshot_fields
from userrl.bus.supervision import SupervisorLink
from userrl.bus.transport import Bus, BusSettings

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_open_async_with_and_close(redis_url: str, run_name: str) -> None:
    name = f"door-{run_name}"
    raw = sync_redis.Redis.from_url(redis_url)

    def ours() -> int:
        return sum(c.get("name") == name for c in raw.client_list())

    try:
        async with Bus.open(redis_url, run_name, BusSettings(block_ms=100, min_idle_ms=400), client_name=name) as bus:
            assert bus.keys == Keys(run_name) and await bus.ping()
            assert ours() == 1
        # closed: its connection is gone (the server drops it once it reads the close; the bound
        # only keeps a broken close from hanging the test)
        with anyio.fail_after(30):
            while ours():
                await anyio.sleep(0.05)
    finally:
        raw.close()


async def test_store_reads_snapshots_logs_and_indexes(bus: Bus) -> None:
    r, k = bus.redis, bus.keys
    snap = msgpack.packb({"group_id": "g", "env_id": "userrl/Telepathy-v0", "task_id": "t0", "meta": {"a": 1}})
    await r.hset(k.state("e1"), mapping={"episode": snap, "at": "12.5"})
    await r.hset(k.replies("e1"), mapping={b"1:0": b"x"})
    await r.xadd(k.episode("e1"), {"role": "user", "text": "hi", "p": b"\xff"})
    await r.zadd(k.live, {"e1": 100.0, "e2": 200.0})
    await r.zadd(k.finished, {"e0": 50.0})
    s = bus.store
    assert await s.snapshot("e1") == snap and await s.snapshot("nope") is None
    assert await s.snapshots(["e1", "nope"]) == [snap, None]
    assert await s.snapshots_and_replies(["e1"]) == {"e1": (snap, {b"1:0": b"x"})}
    assert await s.progress("e1") == (12.5, snap) and await s.progress("nope") == (None, None)
    assert snapshot_fields(snap) == {
        "group_id": "g",
        "env_id": "userrl/Telepathy-v0",
        "task_id": "t0",
        "meta": {"a": 1},
    }
    assert snapshot_fields(b"\xc1 not msgpack") == {}
    assert await s.log("e1") == [{"role": "user", "text": "hi"}]  # the payload is left out
    assert await s.logs(["e1", "nope"]) == [[{"role": "user", "text": "hi"}], []]
    assert await s.has_log("e1") and not await s.has_log("nope")
    got = await s.tail("e1", "0-0", count=10, block_ms=10)
    assert [e for _, e in got] == [{"role": "user", "text": "hi"}]
    assert await s.tail("e1", got[-1][0], count=10, block_ms=10) == []
    assert await s.newest("live", 5) == [("e2", 200.0), ("e1", 100.0)]
    assert await s.time_in("finished", "e0") == 50.0 and await s.time_in("finished", "e1") is None
    assert await s.times_in("live", ["e1", "e0"]) == [100.0, None]
    assert await s.older_than("live", 150.0, 10) == ["e1"]
    assert await s.count("live") == 2 and await s.count("finished") == 1
    assert await s.known(["e1", "e2"], k.group("env"), "reset") == ["e1"]
    with pytest.raises(ValueError, match="episode index"):
        await s.newest("dead", 1)


async def test_routes_registry_and_weights(bus: Bus) -> None:
    r, k = bus.redis, bus.keys
    routes = bus.routes
    assert await routes.stream_for("pol-a") == k.stream("policy")  # no heartbeat: the shared stream
    await r.set(k.heartbeat("policy", "pol-a"), json.dumps({"memory_sync_ranks": 2}))
    assert await routes.stream_for("pol-a") == k.replica_stream("pol-a")
    await routes.register("pol-a")
    await routes.register("pol-b")
    assert await routes.replicas() == ["pol-a", "pol-b"]
    assert await routes.alive(["pol-a", "pol-b"]) == [True, False]
    assert await routes.heartbeats(["pol-a", "pol-b"]) == [{"memory_sync_ranks": 2}, None]
    await r.xadd(k.replica_stream("pol-b"), {"p": b"x"})
    assert await routes.own_stream_exists("pol-b") and await routes.own_stream_length("pol-b") == 1
    await routes.drop("pol-b")
    assert await routes.replicas() == ["pol-a"] and not await routes.own_stream_exists("pol-b")
    await routes.unregister("pol-a")
    assert await routes.replicas() == []

    assert await bus.weights.latest() is None
    assert await bus.weights.wait("0-0", block_ms=10) is None
    eid = await bus.send(k.weights, WeightsAnnouncement(episode_id="w", version=3, path="/ckpt/3"))
    assert await bus.weights.wait("0-0", block_ms=10) == eid
    row = await bus.weights.latest()
    assert row is not None and row[0] == eid and b"p" in row[1]


async def test_control_plane(bus: Bus) -> None:
    r, k = bus.redis, bus.keys
    c = bus.control
    assert await c.heartbeats() == [] and not await c.any_alive("user")
    await r.set(k.heartbeat("user", "u0"), json.dumps({"role": "user", "worker": "u0", "seat": True}))
    await r.set(k.heartbeat("env", "e0"), b"{not json")  # unreadable: left out
    assert await c.heartbeats("user") == [{"role": "user", "worker": "u0", "seat": True}]
    assert len(await c.heartbeats()) == 1
    assert await c.is_alive("user", "u0") and not await c.is_alive("user", "u9") and await c.any_alive("user")
    assert await c.set_wanted({"env": 2}) == {"env": None}
    assert await c.set_wanted({"env": 3, "user": 1}) == {"env": 2, "user": None}
    assert await c.wanted() == {"env": 3, "user": 1}
    assert not await c.supervised() and await c.supervisor() is None
    await r.set(k.supervisor, json.dumps({"pid": 7}))
    assert await c.supervised() and await c.supervisor() == {"pid": 7}
    await r.hincrby(k.counters, "episodes_ok", 2)
    assert await c.counters() == {"episodes_ok": 2}
    await r.xadd(k.dead, {"group": "g-env", "error": "boom", "f:p": b"\x00"})
    assert await c.dead_by_group() == (1, {"g-env": 1})
    (row,) = await c.newest_dead(5)
    assert row["group"] == "g-env" and row["error"] == "boom" and "f:p" not in row
    assert await c.user_target() is None
    await c.set_user_target('{"id": "x"}')
    assert await c.user_target() == b'{"id": "x"}'
    await c.clear_user_target()
    assert await c.user_target() is None
    assert await c.failure() is None


async def test_groups_and_seat(bus: Bus) -> None:
    r, k = bus.redis, bus.keys
    await r.hset(k.group_members("g1"), mapping={"e1": b"t1", "e2": b"t2"})
    await r.zadd(k.groups_open, {"g1": time.time() - 100, "g2": time.time() + 100})
    await r.hset(k.groups_done, "g0", b"1")
    assert sorted(await bus.groups.members("g1")) == [b"t1", b"t2"] and await bus.groups.members("g9") == []
    assert await bus.groups.opened_before(time.time()) == ["g1"]
    assert await bus.groups.is_scored("g0") and not await bus.groups.is_scored("g1")

    seat = bus.seat
    c = await seat.take_seat("e1", "ann", 30)
    assert c is not None and await seat.claim("e1") == Claim(c.holder, "ann", round(c.since, 3))
    assert await seat.take_seat("e1", "bob", 30) is None  # taken
    assert 0 < await seat.claim_ttl_ms("e1") <= 30_000
    assert await seat.renew("e1", c.holder, 60) and not await seat.renew("e1", "not-the-holder", 60)
    await seat.park("e1", 2, 0, {"q": 1})
    await seat.park("e1", 2, 0, {"q": "again"})  # a redelivery keeps the first
    assert (await seat.ask("e1", 2, 0) or {})["query"] == {"q": 1}
    assert [(a["seq"], a["hop"]) for a in await seat.open_asks("e1")] == [(2, 0)]
    assert await seat.answered_by("e1", 2, 0) == ""
    assert await seat.take("e1", 2, 0, "human:ann") == "human:ann"
    assert await seat.take("e1", 2, 0, "scripted") == "human:ann"  # the first answer wins
    assert await seat.open_asks("e1") == []
    assert not await seat.release("e1", "not-the-holder") and await seat.release("e1", c.holder)
    assert await seat.claim("e1") is None


def test_supervisor_link(redis_url: str, run_name: str) -> None:
    keys = Keys(run_name)
    raw = sync_redis.Redis.from_url(redis_url)
    with SupervisorLink(redis_url, keys, timeout_s=5) as link:
        try:
            assert link.supervisor() is None
            link.publish({"env": 2})
            assert link.wanted() == {"env": b"2"}
            link.beat(json.dumps({"pid": 1}), 60_000)
            assert json.loads(link.supervisor() or b"") == {"pid": 1}
            assert link.heartbeats([("env", "env-0")]) == [None]
            assert link.counters(["episodes_ok"]) == [None]
            link.fail(json.dumps({"line": "x"}), 60)
            link.publish({})  # a new deploy clears the old failure and counts
            assert link.wanted() == {}
            assert link.newest(keys.stream("reward"), 5) == []
            link.withdraw()
            assert link.supervisor() is None
        finally:
            raw.delete(keys.supervisor, keys.replicas, keys.failure)
            raw.close()
