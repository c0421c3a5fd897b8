"""The episode store: what the bus keeps about each episode, read and written through verbs.

Per episode: the env worker's state snapshot (``Keys.state``: a hash with ``episode``, the
msgpack snapshot, and ``at``, when it last progressed), its stored user replies
(``Keys.replies``), and its readable log (``Keys.episode``, a stream of string fields the CLI
and the web view show). Across episodes: the ``live`` and ``finished`` indexes (sorted sets,
score = start or end time). The snapshots are *written* inside commits (:mod:`userrl.bus.effects`);
this module reads them, and reads the logs and indexes for ``episodes``, the web view and the
dispatchers. Reached as ``Bus.store``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
from redis.asyncio import Redis

from userrl.bus.client import as_str
from userrl.bus.keys import Keys

#: the episode indexes by name: ``live`` (score = start time) and ``finished`` (score = end time)
INDEXES = ("live", "finished")

#: one entry of an episode's readable log: its string fields (the binary payload left out)
Entry = dict[str, str]

#: how many ids one pipelined or multi-key command carries (bounds one reply's size)
CHUNK = 500


def log_entry(fields: dict[bytes, bytes]) -> Entry:
    """An episode-log entry's fields as strings, without the message payload (``p``)."""
    return {k.decode(): v.decode(errors="replace") for k, v in fields.items() if k != b"p"}


def snapshot_fields(blob: bytes | None) -> dict[str, Any]:
    """group_id, env_id, task_id and meta of an env snapshot (a msgpack map), if readable."""
    if not blob:
        return {}
    try:
        d = msgpack.unpackb(blob, raw=False)
    except Exception:  # a corrupt snapshot still gets its episode reported
        return {}
    return {k: d[k] for k in ("group_id", "env_id", "task_id", "meta") if isinstance(d, dict) and k in d}


class EpisodeStore:
    """Snapshots, stored replies, logs and indexes of a run's episodes (see the module docstring)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self.keys = keys

    def _index(self, name: str) -> str:
        if name not in INDEXES:
            raise ValueError(f"episode index: expected one of {INDEXES}, got {name!r}")
        return self.keys.live if name == "live" else self.keys.finished

    # -- snapshots -------------------------------------------------------------------------------
    async def snapshot(self, episode_id: str) -> bytes | None:
        """The env worker's msgpack snapshot of an episode (None when unknown or released)."""
        return await self._redis.hget(self.keys.state(episode_id), "episode")

    async def snapshots(self, episode_ids: Sequence[str]) -> list[bytes | None]:
        """:meth:`snapshot` of many episodes in one pipeline."""
        if not episode_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for e in episode_ids:
                pipe.hget(self.keys.state(e), "episode")
            return list(await pipe.execute())

    async def replies(self, episode_id: str) -> dict[bytes, bytes]:
        """The user replies stored for an episode (field -> msgpack reply)."""
        return await self._redis.hgetall(self.keys.replies(episode_id))

    async def snapshots_and_replies(
        self, episode_ids: Sequence[str]
    ) -> dict[str, tuple[bytes | None, dict[bytes, bytes]]]:
        """Snapshot and stored replies of each episode, all in one pipeline (one round trip)."""
        if not episode_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for e in episode_ids:
                pipe.hget(self.keys.state(e), "episode")
                pipe.hgetall(self.keys.replies(e))
            res = await pipe.execute()
        return {e: (res[2 * i], res[2 * i + 1]) for i, e in enumerate(episode_ids)}

    async def progress(self, episode_id: str) -> tuple[float | None, bytes | None]:
        """When the episode's snapshot last progressed (unix seconds), and the snapshot."""
        at, blob = await self._redis.hmget(self.keys.state(episode_id), ["at", "episode"])
        return (None if at is None else float(at)), blob

    async def known(self, episode_ids: Sequence[str], env_group: str, reset_kind: str) -> list[str]:
        """The episodes that run now (a snapshot exists) or whose reset was committed within the
        idempotency window (its done key exists)."""
        k = self.keys
        out: list[str] = []
        for i in range(0, len(episode_ids), CHUNK):
            chunk = episode_ids[i : i + CHUNK]
            async with self._redis.pipeline(transaction=False) as pipe:
                for e in chunk:
                    pipe.exists(k.state(e), k.done(env_group, reset_kind, e, 0, 0))
                rows = await pipe.execute()
            out += [e for e, n in zip(chunk, rows, strict=True) if n]
        return out

    # -- indexes ---------------------------------------------------------------------------------
    async def newest(self, index: str, n: int) -> list[tuple[str, float]]:
        """The ``n`` newest members of an index (``live`` or ``finished``) with their times."""
        if n <= 0:
            return []
        rows = await self._redis.zrevrange(self._index(index), 0, n - 1, withscores=True)
        return [(m.decode(errors="replace"), float(score)) for m, score in rows]

    async def time_in(self, index: str, episode_id: str) -> float | None:
        """The episode's time in an index, None when it is not in it."""
        return await self._redis.zscore(self._index(index), episode_id)

    async def times_in(self, index: str, episode_ids: Sequence[str]) -> list[float | None]:
        """:meth:`time_in` for many episodes (in chunks of :data:`CHUNK`)."""
        out: list[float | None] = []
        for i in range(0, len(episode_ids), CHUNK):
            out += await self._redis.zmscore(self._index(index), list(episode_ids[i : i + CHUNK]))
        return out

    async def older_than(self, index: str, before: float, limit: int) -> list[str]:
        """Up to ``limit`` members of an index whose time is at or before ``before``."""
        rows = await self._redis.zrangebyscore(self._index(index), "-inf", before, start=0, num=limit)
        return [as_str(m) for m in rows]

    async def count(self, index: str) -> int:
        """How many episodes an index holds."""
        return int(await self._redis.zcard(self._index(index)))

    # -- logs ------------------------------------------------------------------------------------
    async def log(self, episode_id: str) -> list[Entry]:
        """Every entry of an episode's log, oldest first (``[]`` when unknown or expired)."""
        return [log_entry(f) for _, f in await self._redis.xrange(self.keys.episode(episode_id))]

    async def logs(self, episode_ids: Sequence[str]) -> list[list[Entry]]:
        """:meth:`log` of many episodes in one pipeline."""
        if not episode_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for e in episode_ids:
                pipe.xrange(self.keys.episode(e))
            streams = await pipe.execute()
        return [[log_entry(f) for _, f in s] for s in streams]

    async def has_log(self, episode_id: str) -> bool:
        """Whether the episode's log still exists (it expires after the episode ends)."""
        return bool(await self._redis.exists(self.keys.episode(episode_id)))

    async def tail(self, episode_id: str, after: str, *, count: int, block_ms: int) -> list[tuple[str, Entry]]:
        """The log entries after entry id ``after`` (waiting up to ``block_ms`` for the first),
        as (entry id, fields) pairs."""
        resp = await self._redis.xread({self.keys.episode(episode_id): after}, count=count, block=block_ms)
        if not resp:
            return []
        return [(as_str(eid), log_entry(f)) for eid, f in resp[0][1]]
