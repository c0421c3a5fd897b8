"""A scripted policy worker for the web view's browser test: slow enough that a browser sees
turns arrive one by one, and its first turn of each episode carries markup that a page which
interpreted model text would run (the page must show it as text)."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

import anyio

from userrl.agents.base import GenRequest, GenResult
from userrl.agents.scripted import ScriptedExpertBackend
from userrl.agents.worker import PolicyWorker
from userrl.bus.transport import Bus
from userrl.bus.worker import WorkerSettings

if TYPE_CHECKING:
    from userrl.config import DeployConfig

INJECTED = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


class SlowInjectingBackend(ScriptedExpertBackend):
    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        await anyio.sleep(self.delay_s)
        results = await super().generate(requests)
        return [
            dataclasses.replace(res, text=f"{res.text}\n{INJECTED}")
            if not any(m.get("role") == "assistant" for m in req.messages)
            else res
            for req, res in zip(requests, results, strict=True)
        ]


class SlowPolicyWorker(PolicyWorker):
    @classmethod
    def from_config(cls, bus: Bus, settings: WorkerSettings, cfg: DeployConfig) -> SlowPolicyWorker:
        return cls(bus, settings, backend=SlowInjectingBackend(float(os.environ.get("UI_TEST_POLICY_DELAY", "0.8"))))
