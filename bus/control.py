"""The deploy's control keys, read and written through verbs: heartbeats, the wanted replica
counts, the supervisor's record, the failure line, the counters, the dead letters' summary.

``userrl status``, ``userrl check``, ``userrl scale``, the web view and the seat read these;
workers write their own heartbeats (:mod:`userrl.bus.worker`) and the launcher writes the
supervisor record and the wanted counts (:mod:`userrl.bus.supervision`, synchronous).
Reached as ``Bus.control``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from userrl.bus.keys import Keys


def _int_map(raw: Mapping[bytes, bytes]) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in raw.items()}


class ControlPlane:
    """See the module docstring."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self.keys = keys

    # -- heartbeats ------------------------------------------------------------------------------
    async def heartbeats(self, role: str = "*") -> list[dict[str, Any]]:
        """The live heartbeats of a role (``*``: every role), unordered; unreadable ones left out."""
        keys = [k async for k in self._redis.scan_iter(match=self.keys.heartbeat_pattern(role), count=500)]
        if not keys:
            return []
        out = []
        for raw in await self._redis.mget(keys):
            if raw is None:  # expired between SCAN and MGET
                continue
            try:
                hb = json.loads(raw)
            except ValueError:
                continue
            if isinstance(hb, dict):
                out.append(hb)
        return out

    async def is_alive(self, role: str, worker: str) -> bool:
        """Whether this worker's heartbeat lives."""
        return bool(await self._redis.exists(self.keys.heartbeat(role, worker)))

    async def any_alive(self, role: str) -> bool:
        """Whether any worker of the role has a live heartbeat."""
        async for _ in self._redis.scan_iter(match=self.keys.heartbeat_pattern(role), count=100):
            return True
        return False

    # -- replicas, supervisor, failure, counters -------------------------------------------------
    async def wanted(self) -> dict[str, int]:
        """The replica counts the launcher keeps (role -> count)."""
        return _int_map(await self._redis.hgetall(self.keys.replicas))

    async def set_wanted(self, counts: Mapping[str, int]) -> dict[str, int | None]:
        """Set the wanted replica counts of these roles; returns what they were (None: unset)."""
        roles = list(counts)
        old = await self._redis.hmget(self.keys.replicas, roles)
        await self._redis.hset(self.keys.replicas, mapping=dict(counts))
        return {r: None if v is None else int(v) for r, v in zip(roles, old, strict=True)}

    async def supervised(self) -> bool:
        """Whether a live launcher supervises the run (its record has not expired)."""
        return bool(await self._redis.exists(self.keys.supervisor))

    async def supervisor(self) -> dict[str, Any] | None:
        """The live launcher's record, None when no launcher supervises the run."""
        raw = await self._redis.get(self.keys.supervisor)
        return json.loads(raw) if raw else None

    async def failure(self) -> bytes | None:
        """The launcher's failure record (JSON), None while the deploy has not failed."""
        return await self._redis.get(self.keys.failure)

    async def counters(self) -> dict[str, int]:
        """The run's counters (episodes ok/failed, redispatched, dead-lettered, ...)."""
        return _int_map(await self._redis.hgetall(self.keys.counters))

    # -- the user role's target (:mod:`userrl.sim_users.simulators`) ---------------------------
    @property
    def user_target_key(self) -> str:
        return f"{self.keys.prefix}user:target"

    async def user_target(self) -> bytes | None:
        """The run's user target (JSON), None when the workers answer with their own config."""
        return await self._redis.get(self.user_target_key)

    async def set_user_target(self, body: str) -> None:
        await self._redis.set(self.user_target_key, body)

    async def clear_user_target(self) -> None:
        await self._redis.delete(self.user_target_key)

    # -- streams and dead letters ----------------------------------------------------------------
    async def stream_length(self, stream: str) -> int:
        return int(await self._redis.xlen(stream))

    async def dead_by_group(self, limit: int = 10_000) -> tuple[int, dict[str, int]]:
        """How many dead letters there are, and how many of the oldest ``limit`` each group made."""
        total = int(await self._redis.xlen(self.keys.dead))
        by: dict[str, int] = {}
        for _, f in await self._redis.xrange(self.keys.dead, count=limit):
            g = f.get(b"group", b"?").decode(errors="replace")
            by[g] = by.get(g, 0) + 1
        return total, by

    async def newest_dead(self, count: int = 50) -> list[dict[str, Any]]:
        """The newest dead letters first, as ``Bus.dead_letters`` shows them (reason in ``error``)."""
        out = []
        for eid, f in await self._redis.xrevrange(self.keys.dead, count=count):
            item: dict[str, Any] = {"id": eid.decode()}
            item.update({k.decode(): v.decode(errors="replace") for k, v in f.items() if not k.startswith(b"f:")})
            out.append(item)
        return out
