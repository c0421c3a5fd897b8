"""A scripted policy worker for the user-seat tests: each episode's first action waits until the
test opens its gate (the key ``test:go:<episode>``), so a person can claim the user's seat
before the agent asks its first question, whatever the machine's load."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from userrl.agents.base import GenRequest, GenResult
from userrl.agents.scripted import ScriptedExpertBackend
from userrl.agents.worker import PolicyWorker
from userrl.bus.transport import Bus
from userrl.bus.worker import WorkerSettings

if TYPE_CHECKING:
    from userrl.config import DeployConfig


def gate_key(bus: Bus, episode_id: str) -> str:
    return f"{bus.keys.prefix}test:go:{episode_id}"


class GatedExpert(ScriptedExpertBackend):
    def __init__(self, bus: Bus) -> None:
        super().__init__()
        self.bus = bus

    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        for req in requests:
            if not any(m.get("role") == "assistant" for m in req.messages):
                with anyio.fail_after(300):
                    while not await self.bus.redis.exists(gate_key(self.bus, req.episode_id)):
                        await anyio.sleep(0.05)
        return await super().generate(requests)


class GatedPolicyWorker(PolicyWorker):
    @classmethod
    def from_config(cls, bus: Bus, settings: WorkerSettings, cfg: DeployConfig) -> GatedPolicyWorker:
        return cls(bus, settings, backend=GatedExpert(bus))
