"""What a gym brings travels with its class: registered under another id (a ``-v1``), a gym
keeps its user and judge, its leak guard, its score rule and its maximum."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from userrl.envs import registry
from userrl.envs.base import Env
from userrl.envs.check import check_tasks, rollout
from userrl.envs.datasets import load_tasks
from userrl.envs.gyms._turtle_rules import grade_story
from userrl.envs.gyms.intention import IntentionGym
from userrl.envs.gyms.travel import TravelGym
from userrl.envs.registry import get_env_class, register, register_entry_point, user_spec
from userrl.envs.users import InProcessUser
from userrl.sim_users.base import UserQuery
from userrl.sim_users.guards import REDACTED, reply_leaks
from userrl.sim_users.llm_user import ask_llm_user, default_spec_lookup


@pytest.fixture
def v1(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A private copy of the registry for the test, so the aliases do not outlive it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    yield


def alias(cls: type[Env]) -> type[Env]:
    """``cls`` as a new version of itself, registered under ``...-v1``."""
    return register(type(cls.__name__ + "V1", (cls,), {"id": cls.id.replace("-v0", "-v1")}))


def test_the_builtin_gyms_are_registered_by_the_registry() -> None:
    assert set(registry.BUILTIN) == set(registry.list_envs())
    for env_id, entry_point in registry.BUILTIN.items():
        cls = get_env_class(env_id)
        assert cls.id == env_id and f"{cls.__module__}:{cls.__qualname__}" == entry_point
        assert get_env_class(env_id) is cls  # loaded once, then kept


LAZY = """
import sys
import userrl.envs.actions
import userrl.envs.registry as registry

def gyms():
    return sorted(m for m in sys.modules if m.startswith("userrl.envs.gyms"))

assert gyms() == [], gyms()
assert "userrl.envs.gymnasium_adapter" not in sys.modules
assert registry.list_envs() == sorted(registry.BUILTIN) and gyms() == []
try:
    registry.get_env_class("userrl/Nope-v0")
except registry.UnknownEnvError as exc:
    assert str(exc) == "unknown env id 'userrl/Nope-v0'; known ids: " + ", ".join(registry.list_envs()), exc
    assert gyms() == []
else:
    raise AssertionError("an unknown id was looked up")
env = registry.make("userrl/Telepathy-v0", max_turns=3)
assert env.id == "userrl/Telepathy-v0" and env.max_turns == 3
assert "userrl.envs.gyms.telepathy" in gyms() and "userrl.envs.gyms.tau" not in gyms(), gyms()
for env_id in registry.list_envs():
    assert registry.make(env_id).id == env_id
    assert registry.user_spec(env_id) is registry.get_env_class(env_id).user_spec

import gymnasium
genv = gymnasium.make("userrl/Turtle-v0")
assert genv.unwrapped.env.id == "userrl/Turtle-v0"
genv.close()
print("ok")
"""


def test_importing_a_contract_or_the_registry_imports_no_gym() -> None:
    """Gyms are registered by entry-point strings: importing the actions contract (which runs
    ``userrl.envs``'s Gymnasium registration) and the registry, listing the ids and looking up
    an unknown id import no gym; making an id imports that gym only; every id still makes."""
    out = subprocess.run([sys.executable, "-c", LAZY], capture_output=True, text=True, timeout=110)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_register_entry_point_is_lazy_and_checked(v1: None) -> None:
    register_entry_point("userrl/Late-v0", "userrl.envs.gyms.telepathy:TelepathyGym")
    assert "userrl/Late-v0" in registry.list_envs()
    with pytest.raises(ValueError, match="registered as 'userrl/Late-v0' but its id is 'userrl/Telepathy-v0'"):
        get_env_class("userrl/Late-v0")
    register_entry_point("userrl/Odd-v0", "userrl.envs.gyms.telepathy:TelepathyUserSpec")
    with pytest.raises(TypeError, match="is not an Env subclass"):
        get_env_class("userrl/Odd-v0")
    register_entry_point("userrl/Gone-v0", "userrl.envs.gyms.no_such_gym:Gym")
    with pytest.raises(ModuleNotFoundError):
        get_env_class("userrl/Gone-v0")
    with pytest.raises(ValueError, match="must look like 'package.module:Class'"):
        register_entry_point("userrl/Bad-v0", "no colon")
    with pytest.raises(ValueError, match="must look like 'userrl/Name-v0'"):
        register_entry_point("Bad", "a.b:C")
    # the same entry point again is fine (a reload); another one under a taken id is not
    register_entry_point("userrl/Telepathy-v0", registry.BUILTIN["userrl/Telepathy-v0"])
    with pytest.raises(ValueError, match="already registered"):
        register_entry_point("userrl/Telepathy-v0", "userrl.envs.gyms.turtle:TurtleGym")
    with pytest.raises(ValueError, match="already registered"):
        register(type("TelepathyGym2", (IntentionGym,), {"id": "userrl/Telepathy-v0"}))


def test_a_v1_alias_keeps_its_leak_guard(v1: None) -> None:
    cls = alias(IntentionGym)
    task = load_tasks("userrl/Intention-v0", "test")[0]
    answers = [d["answer"] for d in task["missing_details"]]
    q = UserQuery(
        cls.id,
        "respond",
        "clarify",
        {"question": "How long is the trip?", "remaining": list(range(len(answers)))},
        task,
    )
    leak = {"uncovered": [0], "reply": f"{answers[0]}, and {answers[1]}."}
    assert user_spec(cls.id) is IntentionGym.user_spec
    assert reply_leaks(q, leak, user_spec(cls.id)) == [answers[1]]

    async def llm(messages: list[dict[str, str]]) -> str:  # an LLM user that always leaks
        return json.dumps(leak)

    reply = asyncio.run(ask_llm_user(q, default_spec_lookup, llm, max_reasks=1))
    assert reply == {"uncovered": [0], "reply": f"{answers[0]}, and {REDACTED}."}


def test_a_v1_alias_keeps_its_user_score_rule_and_maximum(v1: None) -> None:
    cls = alias(TravelGym)
    tasks = load_tasks("userrl/Travel-v0", "test")[:2]
    check_tasks(cls.id, tasks)  # the scripted user answers it; the expert reaches max_score and max_return
    user = InProcessUser()
    tr = asyncio.run(rollout(cls(), tasks[0], cls.expert_action, user=user))
    assert user.calls > 0 and tr.score == cls.max_score(tasks[0]) == 1.0
    assert tr.total_reward == cls.max_return(tasks[0]) > 1.0  # elicitation rewards are not score


def test_travel_scores_the_aspects_even_when_cut_short() -> None:
    """The score of an episode that ends before every aspect has a recommendation is the mean
    over all aspects (the missing ones score 0); elicitation rewards never count."""
    task = load_tasks("userrl/Travel-v0", "test")[0]
    cls = get_env_class("userrl/Travel-v0")
    expert_turns = len(asyncio.run(rollout(cls(), task, cls.expert_action)).rewards)
    for cap in range(1, expert_turns):
        tr = asyncio.run(rollout(cls(max_turns=cap), task, cls.expert_action))
        assert tr.truncated
        choices: dict[str, Any] = tr.states[-1]["choices"]
        assert tr.score == round(sum(choices.values()) / len(task["aspects"]), 4) < 1.0
    assert tr.total_reward > tr.score  # the last cut: every preference elicited, one aspect open


def test_the_default_score_is_the_sum_of_the_rewards() -> None:
    """Turtle's judge reports each story's own score; the episode's score is the best one (the
    sum of the gain-over-best rewards), not the last story's."""
    cls = get_env_class("userrl/Turtle-v0")
    # a task whose first checklist statement alone is a partial story
    task = next(
        t for t in load_tasks("userrl/Turtle-v0", "test") if 0 < grade_story(t, t["key_points"][0]["statement"])[0] < 1
    )

    def policy(task: dict[str, Any], messages: list[dict[str, str]]) -> str:
        n = sum(m["role"] == "assistant" for m in messages)
        return f"[answer] {task['key_points'][0]['statement']}" if n == 0 else "[answer] A man was in a room."

    tr = asyncio.run(rollout(cls(max_turns=2), task, policy))
    assert tr.truncated and 0 < tr.rewards[0] < 1 and tr.rewards[1] == 0
    assert tr.score == tr.total_reward == tr.rewards[0]
