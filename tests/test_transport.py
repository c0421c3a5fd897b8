"""Contract tests of the Redis Streams transport against a real server."""

from __future__ import annotations

import anyio
import pytest

from userrl.bus.messages import Probe, decode
from userrl.bus.transport import Bus, Effects

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

IN, GROUP = "in", "relay"


async def _send(bus: Bus, n: int, start: int = 0) -> list[str]:
    stream = bus.keys.stream(IN)
    return [await bus.send(stream, Probe(episode_id=f"e{i}", seq=i)) for i in range(start, start + n)]


async def test_read_and_commit_forward_and_ack(bus: Bus) -> None:
    await _send(bus, 3)
    ds = await bus.read(bus.keys.stream(IN), GROUP, "c1")
    assert [d.msg.episode_id for d in ds] == ["e0", "e1", "e2"]  # type: ignore[union-attr]
    out = bus.keys.stream("out")
    applied = await bus.commit(
        [
            (d, Effects().send(out, Probe(episode_id=d.msg.episode_id, hop=1)))  # type: ignore[union-attr]
            for d in ds
        ]
    )
    assert applied == [True, True, True]
    assert await bus.redis.xlen(out) == 3
    assert (await bus.redis.xpending(bus.keys.stream(IN), GROUP))["pending"] == 0


async def test_commit_is_idempotent_per_message_identity(bus: Bus) -> None:
    stream, out = bus.keys.stream(IN), bus.keys.stream("out")
    await bus.send(stream, Probe(episode_id="e", seq=1))
    await bus.send(stream, Probe(episode_id="e", seq=1))  # the same message sent twice
    ds = await bus.read(stream, GROUP, "c1")
    assert len(ds) == 2
    eff = [
        (d, Effects().send(out, Probe(episode_id="e", hop=1)).hset(bus.keys.state("e"), {"state": b"x"})) for d in ds
    ]
    assert await bus.commit(eff) == [True, False]
    assert await bus.redis.xlen(out) == 1
    assert (await bus.redis.xpending(stream, GROUP))["pending"] == 0  # both acked


async def test_effects_apply_atomically_with_readable_fields(bus: Bus) -> None:
    await _send(bus, 1)
    (d,) = await bus.read(bus.keys.stream(IN), GROUP, "c1")
    ep = bus.keys.episode("e0")
    eff = (
        Effects()
        .send(bus.keys.stream("out"), Probe(episode_id="e0"), {"role": "env", "text": "hello"})
        .append(ep, {"role": "user", "turn": 1, "text": "hi", "reward": 0.5})
        .hset(bus.keys.state("e0"), {"state": b"\x00\x01", "seq": 2})
        .zadd(bus.keys.live, 123.0, "e0")
        .incr(bus.keys.counters, "turns", 2)
    )
    assert await bus.commit([(d, eff)]) == [True]
    ((eid, fields),) = await bus.redis.xrange(ep)
    assert fields == {b"role": b"user", b"turn": b"1", b"text": b"hi", b"reward": b"0.5"}
    ((_, out_fields),) = await bus.redis.xrange(bus.keys.stream("out"))
    assert out_fields[b"text"] == b"hello" and decode(out_fields[b"p"]).episode_id == "e0"
    assert await bus.redis.hget(bus.keys.state("e0"), "state") == b"\x00\x01"
    assert await bus.redis.zscore(bus.keys.live, "e0") == 123.0
    assert await bus.redis.hget(bus.keys.counters, "turns") == b"2"


async def test_own_pending_is_redelivered_with_counts(bus: Bus) -> None:
    await _send(bus, 2)
    first = await bus.read(bus.keys.stream(IN), GROUP, "c1")
    assert len(first) == 2
    again = await bus.read(bus.keys.stream(IN), GROUP, "c1", pending=True)
    assert [d.entry_id for d in again] == [d.entry_id for d in first]
    assert all(d.deliveries >= 1 for d in again)
    # a different consumer does not see them as new
    assert await bus.read(bus.keys.stream(IN), GROUP, "c2", block_ms=10) == []


async def test_reclaim_after_min_idle_counts_deliveries(bus: Bus) -> None:
    await _send(bus, 2)
    await bus.read(bus.keys.stream(IN), GROUP, "dead-consumer")
    assert await bus.reclaim(bus.keys.stream(IN), GROUP, "c2") == []  # not idle yet
    await anyio.sleep(bus.settings.min_idle_ms / 1000 + 0.1)
    got = await bus.reclaim(bus.keys.stream(IN), GROUP, "c2")
    assert [d.msg.episode_id for d in got] == ["e0", "e1"]  # type: ignore[union-attr]
    assert [d.deliveries for d in got] == [2, 2]


async def test_renew_keeps_a_slow_holder_from_being_reclaimed(bus: Bus) -> None:
    await _send(bus, 1)
    (d,) = await bus.read(bus.keys.stream(IN), GROUP, "slow")
    for _ in range(3):
        await anyio.sleep(bus.settings.min_idle_ms / 2000)
        assert await bus.renew(d.stream, GROUP, "slow", [d.entry_id]) == [d.entry_id]
    assert await bus.reclaim(bus.keys.stream(IN), GROUP, "c2") == []
    # renew never steals an entry back from a peer that owns it now
    assert await bus.renew(d.stream, GROUP, "other", [d.entry_id]) == []


async def test_dead_letter_and_replay(bus: Bus) -> None:
    stream = bus.keys.stream(IN)
    await bus.redis.xadd(stream, {b"p": b"\xc1 not msgpack"})
    await _send(bus, 1)
    ds = await bus.read(stream, GROUP, "c1")
    bad = [d for d in ds if d.msg is None]
    assert len(bad) == 1 and "undecodable" in bad[0].error
    await bus.dead_letter(bad[0], "undecodable: " + bad[0].error)
    rows = await bus.dead_letters()
    assert len(rows) == 1 and rows[0]["stream"] == stream and "undecodable" in rows[0]["error"]
    assert (await bus.redis.xpending(stream, GROUP))["pending"] == 1  # the good one only
    assert await bus.replay_dead() == 1
    assert await bus.dead_letters() == []
    replayed = await bus.read(stream, GROUP, "c1")
    assert len(replayed) == 1 and replayed[0].fields[b"p"] == b"\xc1 not msgpack"


async def test_nogroup_is_recreated_and_counted(bus: Bus) -> None:
    stream = bus.keys.stream(IN)
    await _send(bus, 1)
    assert len(await bus.read(stream, GROUP, "c1")) == 1
    await bus.redis.delete(stream)  # what a restart without persistence looks like
    assert await bus.read(stream, GROUP, "c1", block_ms=10) == []
    assert bus.nogroup_recreated == 1
    await _send(bus, 1, start=5)
    (d,) = await bus.read(stream, GROUP, "c1")
    assert d.msg.episode_id == "e5"  # type: ignore[union-attr]
    assert await bus.redis.hget(bus.keys.counters, "nogroup_recreated") == b"1"


async def test_trim_by_consumption_point_keeps_pending(bus: Bus) -> None:
    stream = bus.keys.stream(IN)
    ids = await _send(bus, 6)
    ds = await bus.read(stream, GROUP, "c1", count=4)
    await bus.commit([(d, Effects()) for d in ds[:1] + ds[2:]])  # entry 1 stays pending
    await bus.trim(stream, approximate=False)
    left = [eid.decode() for eid, _ in await bus.redis.xrange(stream)]
    assert left == ids[1:]  # everything from the oldest pending entry on survives
    rest = await bus.read(stream, GROUP, "c1")
    await bus.commit([(d, Effects()) for d in rest])
    own = await bus.read(stream, GROUP, "c1", pending=True)
    await bus.commit([(d, Effects()) for d in own])
    await bus.trim(stream, approximate=False)
    assert await bus.redis.xlen(stream) == 0


async def test_commit_once_without_ack(bus: Bus) -> None:
    eff = Effects().send(bus.keys.stream("out"), Probe(episode_id="r"))
    assert await bus.commit_once(("reset", "r", 0, 0), "dispatch", eff) is True
    assert await bus.commit_once(("reset", "r", 0, 0), "dispatch", eff) is False
    assert await bus.redis.xlen(bus.keys.stream("out")) == 1


async def test_send_if_hash_len_fires_once_the_hash_is_full(bus: Bus) -> None:
    stream, out, h = bus.keys.stream(IN), bus.keys.stream("out"), bus.keys.state("grp")
    await _send(bus, 3)
    ds = await bus.read(stream, GROUP, "c1")
    for i, d in enumerate(ds):
        eff = Effects().hset(h, {f"m{i}": b"x"}).send_if_hash_len(out, Probe(episode_id="ready"), h, 3)
        await bus.commit([(d, eff)])
        assert await bus.redis.xlen(out) == (1 if i == 2 else 0)
