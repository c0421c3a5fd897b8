"""The reward workers' GRPO groups, read through verbs.

A group's trajectories gather in a hash (``Keys.group_members``) until the group is complete or
overdue; open groups are indexed by when their first member came (``Keys.groups_open``) and
scored ones are remembered (``Keys.groups_done``) so late members are counted, not re-scored.
These keys are *written* inside commits (:mod:`userrl.bus.effects`); reached as ``Bus.groups``.
"""

from __future__ import annotations

from redis.asyncio import Redis

from userrl.bus.client import as_str
from userrl.bus.keys import Keys


class GroupStore:
    """See the module docstring."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self.keys = keys

    async def is_scored(self, group_id: str) -> bool:
        """Whether the group was scored already."""
        return bool(await self._redis.hexists(self.keys.groups_done, group_id))

    async def members(self, group_id: str) -> list[bytes]:
        """The encoded trajectories gathered for the group so far (``[]`` once scored)."""
        return list((await self._redis.hgetall(self.keys.group_members(group_id))).values())

    async def opened_before(self, before: float) -> list[str]:
        """The open groups whose first member came at or before ``before`` (unix seconds)."""
        rows = await self._redis.zrangebyscore(self.keys.groups_open, "-inf", before)
        return [as_str(g) for g in rows]
