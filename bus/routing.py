"""Policy routing and the weights channel.

**Sticky episodes.** Every policy worker (replica) reads the shared ``policy`` stream and its
own ``policy:{name}`` stream (``Keys.replica_stream``) and registers its name in a set
(``Keys.policy_replicas``). The env worker sends turn 2.. of an episode to
:meth:`PolicyRoutes.stream_for` the replica that answered the previous turn: its own stream
while its heartbeat lives, else the shared stream. Peers adopt the streams of replicas whose
heartbeat expired (the policy worker's ``adopt_orphans``) and unregister them once drained.

**Weights.** The learner announces each new policy version on the ``weights`` stream
(:class:`userrl.bus.messages.WeightsAnnouncement`); policy workers read the newest announcement
and wait for the next one. Reached as ``Bus.routes`` and ``Bus.weights``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from userrl.bus.client import as_str
from userrl.bus.keys import Keys


class PolicyRoutes:
    """Where policy requests go, and the registry of policy replicas (see the module docstring)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self.keys = keys

    async def stream_for(self, replica: str) -> str:
        """Where to send an episode's next policy request: the own stream of ``replica`` (the
        worker that answered its previous turn) while that replica's heartbeat lives, else the
        shared ``policy`` stream."""
        if replica and await self._redis.exists(self.keys.heartbeat("policy", replica)):
            return self.keys.replica_stream(replica)
        return self.keys.stream("policy")

    async def register(self, name: str) -> None:
        """Add a replica to the registry (idempotent)."""
        await self._redis.sadd(self.keys.policy_replicas, name)

    async def unregister(self, name: str) -> None:
        """Remove a replica from the registry (its stream stays)."""
        await self._redis.srem(self.keys.policy_replicas, name)

    async def drop(self, name: str) -> None:
        """Unregister a replica and delete its own stream (once drained)."""
        await self._redis.srem(self.keys.policy_replicas, name)
        await self._redis.delete(self.keys.replica_stream(name))

    async def replicas(self) -> list[str]:
        """Every registered replica, sorted."""
        return sorted(as_str(n) for n in await self._redis.smembers(self.keys.policy_replicas))

    async def alive(self, names: Sequence[str], role: str = "policy") -> list[bool]:
        """Whether each worker's heartbeat lives (one pipeline)."""
        if not names:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.exists(self.keys.heartbeat(role, n))
            return [bool(x) for x in await pipe.execute()]

    async def heartbeats(self, names: Sequence[str], role: str = "policy") -> list[dict[str, Any] | None]:
        """The heartbeat bodies of these workers (None where expired or unreadable)."""
        if not names:
            return []
        out: list[dict[str, Any] | None] = []
        for raw in await self._redis.mget([self.keys.heartbeat(role, n) for n in names]):
            try:
                out.append(json.loads(raw) if raw else None)
            except ValueError:
                out.append(None)
        return out

    async def own_stream_exists(self, name: str) -> bool:
        return bool(await self._redis.exists(self.keys.replica_stream(name)))

    async def own_stream_length(self, name: str) -> int:
        return int(await self._redis.xlen(self.keys.replica_stream(name)))


class WeightsChannel:
    """The ``weights`` stream of announcements (see the module docstring)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self.keys = keys

    async def latest(self) -> tuple[str, dict[bytes, Any]] | None:
        """The newest announcement as (entry id, fields), None before the first."""
        rows = await self._redis.xrevrange(self.keys.weights, count=1)
        return (as_str(rows[0][0]), rows[0][1]) if rows else None

    async def wait(self, after: str, block_ms: int = 1000) -> str | None:
        """Wait up to ``block_ms`` for announcements after entry id ``after`` (``$``: after
        now); the id of the newest that came, None if none did."""
        got = await self._redis.xread({self.keys.weights: after}, count=16, block=block_ms)
        return as_str(got[0][1][-1][0]) if got else None
