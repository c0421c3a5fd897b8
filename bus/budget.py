"""The bus's memory budget: what a run keeps in Redis after its episodes end, sized in megabytes.

``bus.memory_mb`` (default 512, for the embedded server on a laptop) is split into shares, and
the caps of everything that outlives an episode follow from them unless set explicitly:

- **finished episodes** (:data:`LOG_SHARE`): the readable logs (``episode:{id}``) of the newest
  finished episodes and their index entries. ``bus.finished_cap`` counts them; auto, it is the
  share divided by the measured size of recent logs (``MEMORY USAGE``, so a run of long LLM
  dialogues keeps fewer than one of short scripted ones). The oldest beyond it lose their log
  and index entry (:func:`cap_episode_logs`); logs also expire ``bus.episode_log_ttl_ms`` after
  the end, whichever comes first;
- **results and learner streams** (:data:`RESULTS_SHARE`): ``bus.results_cap`` entries;
- **dead letters** (:data:`DEAD_SHARE`): ``bus.dead_cap`` letters of up to
  ``bus.dead_payload_bytes`` each.

The rest (:data:`WORKING_SHARE`) is left to the working set, which scales with the episode
rate, not with history: the idempotency keys (a window of minutes), the work streams between
trims, the live episodes. docs/operations.md gives the measured bytes per episode of each part
and how to size a server for a rate. The reward workers' sweep applies the caps and warns when
the server's ``used_memory`` exceeds the budget (:func:`check_budget`).
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from redis.asyncio import Redis

from userrl.bus.client import as_str
from userrl.bus.keys import Keys

log = structlog.get_logger(__name__)

MB = 1024 * 1024
LOG_SHARE = 0.40
RESULTS_SHARE = 0.10
DEAD_SHARE = 0.05
WORKING_SHARE = 1.0 - LOG_SHARE - RESULTS_SHARE - DEAD_SHARE
#: bytes per finished episode before any is measured: a 9-entry scripted Telepathy log (4.4 KB
#: with valkey 9) plus its index entries
EPISODE_BYTES_GUESS = 4_600
#: what one finished episode costs besides its log: its members of the finished and done indexes
INDEX_BYTES = 200
#: a learner-stream entry: a scored group with its token ids and logprobs (KBs to MBs)
RESULT_BYTES_GUESS = 64 * 1024
#: never keep fewer finished episodes than this, whatever the budget: waiters and the learner's
#: dispatcher look finished episodes up in the index while their groups are in flight
MIN_FINISHED = 1_000
#: recent logs measured per sweep
SAMPLE = 20


def derived_caps(memory_mb: int, dead_payload_bytes: int) -> dict[str, int]:
    """The caps ``memory_mb`` implies (before any log is measured)."""
    budget = memory_mb * MB
    return {
        "finished_cap": max(MIN_FINISHED, int(budget * LOG_SHARE) // EPISODE_BYTES_GUESS),
        "results_cap": max(100, int(budget * RESULTS_SHARE) // RESULT_BYTES_GUESS),
        "dead_cap": max(100, int(budget * DEAD_SHARE) // max(dead_payload_bytes, 1024)),
    }


async def measured_finished_cap(redis: Redis, keys: Keys, memory_mb: int) -> int:
    """How many finished episodes fit the log share at the size of the ``SAMPLE`` newest logs."""
    newest = await redis.zrevrange(keys.finished, 0, SAMPLE - 1)
    if not newest:
        return derived_caps(memory_mb, 1024)["finished_cap"]
    async with redis.pipeline(transaction=False) as pipe:
        for m in newest:
            pipe.memory_usage(keys.episode(as_str(m)), samples=0)
        sizes = [int(s) for s in await pipe.execute() if s]
    if not sizes:  # logs expired (TTL) or capped away: the index alone is left
        return max(MIN_FINISHED, int(memory_mb * MB * LOG_SHARE) // INDEX_BYTES)
    per_episode = sum(sizes) / len(sizes) + INDEX_BYTES
    return max(MIN_FINISHED, int(memory_mb * MB * LOG_SHARE / per_episode))


async def cap_episode_logs(redis: Redis, keys: Keys, cap: int, pop_oldest: Any) -> int:
    """Keep the newest ``cap`` members of ``episodes:finished``; delete the logs of those
    removed. ``pop_oldest`` is the registered :data:`userrl.bus.scripts.POP_OLDEST` (atomic, so
    concurrent sweeps never remove more than the excess). Returns how many were removed."""
    removed = 0
    while True:
        old = await pop_oldest(keys=[keys.finished], args=[cap, 1000])
        if not old:
            return removed
        await redis.delete(*[keys.episode(as_str(m)) for m in old])
        removed += len(old)


_last_warning = 0.0


async def check_budget(redis: Redis, memory_mb: int, every_s: float = 60.0) -> int:
    """The server's ``used_memory``; a warning (at most every ``every_s``) when it exceeds the
    budget: the working set (the episode rate) outgrew what the caps leave it."""
    global _last_warning
    used = int((await redis.info("memory")).get("used_memory", 0))
    if used > memory_mb * MB and time.monotonic() - _last_warning > every_s:
        _last_warning = time.monotonic()
        log.warning(
            "bus.over_memory_budget",
            used_mb=round(used / MB, 1),
            memory_mb=memory_mb,
            hint="the working set grows with the episode rate: raise bus.memory_mb (docs/operations.md)",
        )
    return used
