"""What a gym brings travels with its class: registered under another id (a ``-v1``), a gym
keeps its user and judge, its leak guard, its score rule and its maximum."""

from __future__ import annotations

import asyncio
import json
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
from userrl.envs.registry import get_env_class, register, user_spec
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
    assert {cls.id for cls in registry.BUILTIN} == set(registry.list_envs())
    assert all(get_env_class(cls.id) is cls for cls in registry.BUILTIN)


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
