"""ScriptedExpertBackend asks each request's gym for its expert action."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from userrl.agents import scripted
from userrl.agents.base import GenRequest
from userrl.agents.scripted import ScriptedExpertBackend
from userrl.errors import PolicyError


class FakeGym:
    @classmethod
    def expert_action(cls, task: dict[str, Any], messages: list[dict[str, str]]) -> str:
        if task.get("boom"):
            raise RuntimeError("no idea")
        return f"[answer] {task.get('answer', '?')} after {len(messages)}"


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scripted, "get_env_class", lambda env_id: FakeGym)


def test_scripted_expert(registry: None) -> None:
    b = ScriptedExpertBackend()
    msgs = [{"role": "user", "content": "hi"}]
    reqs = [GenRequest("e1", "userrl/Fake-v0", msgs, task={"answer": 42}), GenRequest("e2", "userrl/Fake-v0", msgs)]
    out = anyio.run(b.generate, reqs)
    assert [r.text for r in out] == ["[answer] 42 after 1", "[answer] ? after 1"]
    assert all(r.token_ids == [] and r.logprobs == [] and r.version == 0 for r in out)
    assert b.trainable is False and anyio.run(b.load_weights, "x", 3) == 0.0
    with pytest.raises(PolicyError, match="e3.*no idea"):
        anyio.run(b.generate, [GenRequest("e3", "userrl/Fake-v0", msgs, task={"boom": 1})])
