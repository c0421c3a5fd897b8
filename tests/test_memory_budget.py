"""Issue 26: the bus's memory is set in megabytes (``bus.memory_mb``) and the caps of what
outlives an episode follow from it: finished episodes keep their logs only as far as the log
share holds them at their measured size, and a server over budget is reported."""

from __future__ import annotations

import time

import pytest
from structlog.testing import capture_logs

from userrl.bus import budget
from userrl.bus.transport import Bus, BusSettings
from userrl.config import BusConfig, load_config
from userrl.errors import ConfigError


def test_caps_follow_the_budget_unless_set() -> None:
    s = BusSettings(memory_mb=512)
    assert s.finished_auto
    assert (s.finished_cap, s.results_cap, s.dead_cap) == (
        int(512 * budget.MB * budget.LOG_SHARE) // budget.EPISODE_BYTES_GUESS,
        int(512 * budget.MB * budget.RESULTS_SHARE) // budget.RESULT_BYTES_GUESS,
        int(512 * budget.MB * budget.DEAD_SHARE) // s.dead_payload_bytes,
    )
    double = BusSettings(memory_mb=1024)
    assert (double.finished_cap, double.results_cap, double.dead_cap) == pytest.approx(
        (2 * s.finished_cap, 2 * s.results_cap, 2 * s.dead_cap), abs=1
    )
    fixed = BusSettings(memory_mb=512, finished_cap=7, results_cap=5, dead_cap=3)
    assert (fixed.finished_cap, fixed.results_cap, fixed.dead_cap, fixed.finished_auto) == (7, 5, 3, False)
    tiny = BusSettings(memory_mb=1)
    assert tiny.finished_cap == budget.MIN_FINISHED, "never fewer than the lookups of in-flight groups need"
    cfg = load_config(None, ["bus.memory_mb=64", "bus.dead_cap=11"])
    got = cfg.bus  # the config's section is the bus's settings
    assert (got.memory_mb, got.dead_cap, got.results_cap) == (64, 11, BusSettings(memory_mb=64).results_cap)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [("memory_mb", 0, "bus.memory_mb must be >= 1"), ("finished_cap", -1, "bus.finished_cap must be >= 0")],
)
def test_a_wrong_budget_is_refused_with_the_field_named(field: str, value: int, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        BusConfig(**{field: value})


async def _finished(bus: Bus, n: int, log_bytes: int) -> list[str]:
    """``n`` finished episodes (oldest first), each with a readable log of ``log_bytes`` of text."""
    k, now = bus.keys, time.time()
    eps = [f"b{i:05d}/0" for i in range(n)]
    for i in range(0, n, 500):
        async with bus.redis.pipeline(transaction=False) as pipe:
            for j, ep in enumerate(eps[i : i + 500], start=i):
                pipe.xadd(k.episode(ep), {"role": "assistant", "text": "x" * log_bytes})
                pipe.zadd(k.finished, {ep: now - n + j})
                pipe.zadd(k.groups_done_at, {ep[:-2]: now - n + j})
                pipe.hset(k.groups_done, ep[:-2], "scored")
            await pipe.execute()
    return eps


@pytest.mark.integration
@pytest.mark.anyio
async def test_finished_episodes_keep_their_logs_within_the_log_share(bus: Bus) -> None:
    """2,600 finished episodes with 8 KB logs under a 32 MB budget: the log share (12.8 MB) holds
    about 1,500 of them at their measured size, so the oldest lose their log and index entries,
    the newest keep theirs, and what is kept fits the share."""
    b = Bus(bus.redis, bus.keys, BusSettings(block_ms=100, min_idle_ms=400, memory_mb=32))
    eps = await _finished(b, 2600, 8000)
    removed = await b.cap_finished()
    kept = [e.decode() for e in await b.redis.zrange(b.keys.finished, 0, -1)]
    assert 1000 < len(kept) < 2600 and removed == 2 * (2600 - len(kept))
    assert kept == eps[-len(kept) :], "the newest are kept"
    assert await b.redis.exists(*[b.keys.episode(e) for e in eps]) == len(kept), "only theirs keep a log"
    assert await b.redis.zcard(b.keys.groups_done_at) == await b.redis.hlen(b.keys.groups_done) == len(kept)
    held = 0
    for i in range(0, len(kept), 500):
        async with b.redis.pipeline(transaction=False) as pipe:
            for e in kept[i : i + 500]:
                pipe.memory_usage(b.keys.episode(e), samples=0)
            held += sum(await pipe.execute())
    assert held <= 32 * budget.MB * budget.LOG_SHARE, f"{held / budget.MB:.1f} MB of logs"
    assert await b.cap_finished() == 0, "a second sweep finds nothing to remove"


@pytest.mark.integration
@pytest.mark.anyio
async def test_an_explicit_cap_drops_the_logs_too_and_over_budget_is_reported(bus: Bus) -> None:
    b = Bus(bus.redis, bus.keys, BusSettings(block_ms=100, min_idle_ms=400, memory_mb=1, finished_cap=3))
    eps = await _finished(b, 5, 100)
    budget._last_warning = 0.0  # the warning is rate-limited per process
    with capture_logs() as logs:
        assert await b.cap_finished() == 4  # two episodes and two done groups
    assert [await b.redis.exists(b.keys.episode(e)) for e in eps] == [0, 0, 1, 1, 1]
    (warning,) = [e for e in logs if e["event"] == "bus.over_memory_budget"]
    assert warning["memory_mb"] == 1 and warning["used_mb"] > 1 and "bus.memory_mb" in warning["hint"]
