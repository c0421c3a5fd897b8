"""A user worker whose backend takes ``SLOW_USER_S`` seconds per reply (shutdown tests)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import anyio

from userrl.bus.transport import Bus
from userrl.bus.worker import WorkerSettings
from userrl.sim_users.base import UserQuery
from userrl.sim_users.worker import UserWorker

if TYPE_CHECKING:
    from userrl.config import DeployConfig


class SlowBackend:
    async def ask(self, query: UserQuery) -> dict[str, Any]:
        await anyio.sleep(float(os.environ.get("SLOW_USER_S", "3")))
        return {"text": "yes"}


class SlowUserWorker(UserWorker):
    @classmethod
    def from_config(cls, bus: Bus, settings: WorkerSettings, cfg: DeployConfig) -> SlowUserWorker:
        return cls(bus, settings, backend=SlowBackend())  # type: ignore[arg-type]
