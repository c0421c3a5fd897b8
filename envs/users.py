"""The gyms' users in this process: each gym's scripted rules, and a direct transport.

:class:`ScriptedBackend` answers a query with the scripted rules of the gym that asked (the
``user_spec`` registered with its class); :class:`InProcessUser` calls a backend directly,
for the Gymnasium adapter, in-process evaluation, SFT demonstrations, checks and notebooks.
Over the bus, the user worker (``userrl worker user``) plays the same backends.
"""

from __future__ import annotations

from typing import Any

from userrl.envs.registry import user_spec
from userrl.sim_users.base import UserBackend, UserQuery

__all__ = ["InProcessUser", "ScriptedBackend"]


class ScriptedBackend:
    """Deterministic user/judge: dispatches to the gym's ``user_spec.scripted``."""

    async def ask(self, query: UserQuery) -> dict[str, Any]:
        return user_spec(query.env_id).scripted(query)


class InProcessUser:
    """Calls a backend directly in this process (scripted unless another is given)."""

    def __init__(self, backend: UserBackend | None = None) -> None:
        self.backend: UserBackend = backend if backend is not None else ScriptedBackend()
        self.calls = 0

    async def ask(self, query: UserQuery) -> dict[str, Any]:
        self.calls += 1
        return await self.backend.ask(query)
