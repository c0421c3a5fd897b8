"""TravelGym: elicit a traveller's hidden preferences, search a catalog, recommend options."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from userrl.envs.actions import Action
from userrl.envs.base import Env, State, StepResult, Task
from userrl.envs.gyms._common import history_for_query
from userrl.envs.gyms._travel_rules import (
    ANSWER_SCORES,
    TravelUserSpec,
    answer_ids,
    is_plain_answer,
    option_label,
    search_catalog,
)
from userrl.sim_users.base import SimUser, UserQuery

#: UserRL trains with 0.8 per elicited preference (its evaluation uses 0.6: a gym option)
DEFAULT_ELICIT_REWARD = 0.8
DEFAULT_FAIL_EVERY = 5
SYSTEM_ERROR = "System error: the search service is temporarily unavailable. Please try again."
_REPLIES = {
    "best": "Great choice, that is exactly what I was hoping for!",
    "acceptable": "That works for me, although I wonder whether something cheaper fit too.",
    "wrong": "Hmm, that does not really fit what I need, but I will go with it.",
}


class TravelGym(Env):
    """Plan a trip: find out what the traveller wants, search, and recommend one option each.

    Description:
        The traveller needs several items (aspects: flight, hotel, apartment, rental car,
        restaurant), each with hidden preferences (the task's ``variant`` names how many per
        aspect, e.g. ``233``) that the user reveals only when asked about them, often
        implicitly. After 3 off-topic turns in a row the user volunteers one. A catalog lists
        options per aspect; the best option is the cheapest one meeting every preference.

    Actions:
        ``[action] message``: talk to the traveller. ``[search] aspect query``: list the
        catalog's options for the aspect named in the query; every 5th search fails with a
        system error on purpose (option ``search_fail_every``, 0 disables). ``[answer] id``:
        recommend exactly one option id (the id alone, or with a few words such as "I
        recommend"); one final choice per aspect. With option ``require_search`` (default
        true; not in UserRL, whose step accepts any catalog id) only an option that came up in
        one of the agent's searches can be recommended, so blind guesses of ids earn nothing.

    Observation:
        The traveller's reply, the search results, or the traveller's reaction to a choice.

    Reward:
        A preference elicited by the agent's question earns ``elicit_reward`` (option,
        default 0.8 as in UserRL's training; its evaluation uses 0.6: set
        ``elicit_reward: 0.6`` in the eval gym options; volunteered ones earn nothing). One
        message elicits at most one preference (as in UserRL); a keyword list (more than 15
        content words, or touching more than two preferences) elicits none.
        A recommendation earns 1.0 for the best option, 0.8 for an acceptable one, 0 for a
        wrong one. ``info["score"]`` at the end is the paper's evaluation score: the mean
        answer score over the aspects. Searches earn 0.

    Episode end:
        Terminated when every aspect has its one choice (UserRL's step does not end there),
        or on ``[finish]``; truncated after ``max_turns`` (20).

    Version history:
        v0: initial version, following UserRL's TravelGym (from UserBench).
    """

    id = "userrl/Travel-v0"
    data_name: ClassVar[str] = "travel"
    user_spec = TravelUserSpec()
    default_max_turns = 20

    option_defaults: ClassVar[dict[str, Any]] = {
        "elicit_reward": DEFAULT_ELICIT_REWARD,
        "search_fail_every": DEFAULT_FAIL_EVERY,
        "require_search": True,
    }

    def __init__(self, max_turns: int | None = None, **options: Any) -> None:
        super().__init__(max_turns, **options)
        self.elicit_reward = float(options.get("elicit_reward", DEFAULT_ELICIT_REWARD))
        self.fail_every = int(options.get("search_fail_every", DEFAULT_FAIL_EVERY))
        self.require_search = bool(options.get("require_search", True))
        if not 0.0 <= self.elicit_reward <= 1.0 or self.fail_every < 0:
            raise ValueError("elicit_reward must be in [0, 1] and search_fail_every >= 0")

    @classmethod
    def validate_task(cls, task: Task) -> None:
        if not isinstance(task.get("request"), str) or not task["request"].strip():
            raise ValueError("'request' must be a non-empty string")
        aspects, catalog = task.get("aspects"), task.get("catalog")
        if not isinstance(aspects, list) or not aspects or not isinstance(catalog, dict):
            raise ValueError("'aspects' must be a non-empty list and 'catalog' a dict")
        for a in aspects:
            cat = catalog.get(a)
            if not isinstance(cat, dict) or not isinstance(cat.get("best"), list) or not cat["best"]:
                raise ValueError(f"catalog[{a!r}] needs a non-empty 'best' list of option ids")
        for p in task.get("preferences", []):
            if p.get("aspect") not in aspects or not p.get("keywords") or not p.get("statement"):
                raise ValueError("each preference needs an 'aspect' of the task, 'keywords' and a 'statement'")

    @classmethod
    def episode_score(cls, rewards: Sequence[float], state: State) -> float:
        """The paper's score: the mean answer score over the aspects (an aspect without a
        recommendation scores 0); elicitation rewards do not count. At the episode's natural
        end this is the last step's ``info["score"]``; its maximum is 1.0."""
        aspects = (state.get("task") or {}).get("aspects") or []
        choices = state.get("choices") or {}
        return round(sum(choices.values()) / len(aspects), 4) if aspects else 0.0

    @classmethod
    def max_return(cls, task: Task, elicit_reward: float = DEFAULT_ELICIT_REWARD) -> float:
        return round(len(task["aspects"]) + elicit_reward * len(task.get("preferences", [])), 4)

    def system_prompt(self, task: Task) -> str:
        return (
            "TravelGym: help a traveller plan a trip. Their request is incomplete: for each "
            "travel aspect they have hidden preferences that they reveal only when you ask, "
            "often implicitly.\n"
            "Actions:\n"
            "- [action] message : ask the traveller a clear, specific question.\n"
            "- [search] aspect query : list the catalog's options for one aspect (e.g. "
            "[search] hotel in the old town). The search service sometimes fails; retry.\n"
            "- [answer] option id : recommend exactly one option id (e.g. [answer] H12). "
            "Only one recommendation per aspect counts, so ask first.\n"
            "- [finish] : stop.\n"
            "Among the options that meet every preference, the traveller wants the cheapest."
        )

    async def on_reset(self, task: Task, seed: int) -> tuple[State, str, dict[str, Any]]:
        obs = str(task["request"])
        state = {
            "revealed": [],
            "off_topic": 0,
            "searches": 0,
            "choices": {},
            "dialogue": [{"role": "user", "content": obs}],
        }
        return state, obs, {"task_id": task["id"]}

    async def on_step(self, state: State, action: Action, user: SimUser) -> StepResult:
        task = state["task"]
        state["dialogue"].append({"role": "assistant", "content": action.text})
        reward, info = 0.0, {}
        if action.choice == "search":
            state["searches"] += 1
            failed = self.fail_every and state["searches"] % self.fail_every == 0
            obs = SYSTEM_ERROR if failed else search_catalog(task, action.content)
            state["seen"] = sorted(set(state.get("seen", [])) | set(answer_ids(obs)))
        elif action.choice == "action":
            reply = await user.ask(
                UserQuery(
                    self.id,
                    "respond",
                    "talk",
                    {"message": action.content, "revealed": list(state["revealed"]), "off_topic": state["off_topic"]},
                    task,
                    history_for_query(state),
                )
            )
            new = [int(i) for i in reply["reveal"] if int(i) not in state["revealed"]]
            state["revealed"] += new
            state["off_topic"] = 0 if new else state["off_topic"] + 1
            if not reply.get("volunteered"):
                reward = round(self.elicit_reward * len(new), 4)
            obs, info = str(reply["reply"]), {"revealed": new, "volunteered": bool(reply.get("volunteered"))}
        else:
            obs, reward, info = self._answer(state, action.content, self.require_search)
        state["dialogue"].append({"role": "user", "content": obs})
        done = all(a in state["choices"] for a in task["aspects"])
        if done:
            info["aspect_scores"] = dict(state["choices"])
            info["score"] = round(sum(state["choices"].values()) / len(task["aspects"]), 4)
        return StepResult(state, obs, reward, done, False, info)

    @staticmethod
    def _answer(state: State, content: str, require_search: bool) -> tuple[str, float, dict[str, Any]]:
        task = state["task"]
        ids = answer_ids(content)
        if len(ids) != 1 or not is_plain_answer(content):
            return ("Please recommend exactly one option id, e.g. [answer] H12.", 0.0, {"answer_error": "one id"})
        found = option_label(task, ids[0])
        if found is None:
            return f"{ids[0]} is not an option in the catalog.", 0.0, {"answer_error": "unknown id"}
        aspect, label = found
        if require_search and task["catalog"][aspect].get("options") and ids[0] not in state.get("seen", []):
            return (
                f"{ids[0]} has not come up in your searches; search the catalog first.",
                0.0,
                {"answer_error": "not searched"},
            )
        if aspect in state["choices"]:
            return (
                f"You already recommended an option for the {aspect.replace('_', ' ')}; only the first choice counts.",
                0.0,
                {"answer_error": "already chosen"},
            )
        score = ANSWER_SCORES[label]
        state["choices"][aspect] = score
        return _REPLIES[label], score, {"aspect": aspect, "label": label}

    @classmethod
    def expert_action(cls, task: Task, messages: list[dict[str, str]]) -> str:
        """Per aspect: ask about each preference, search the aspect, recommend the best.

        Plan steps advance unless the reply was a search system error (then it retries).
        """
        plan = []
        for aspect in task["aspects"]:
            plan += [f"[action] {p['question']}" for p in task.get("preferences", []) if p["aspect"] == aspect]
            plan += [f"[search] {aspect.replace('_', ' ')} options", f"[answer] {task['catalog'][aspect]['best'][0]}"]
        step = 0
        for i, m in enumerate(messages):
            if m.get("role") != "assistant":
                continue
            reply = next((x.get("content", "") for x in messages[i + 1 :] if x.get("role") != "assistant"), "")
            step += 0 if SYSTEM_ERROR in reply else 1
        return plan[step] if step < len(plan) else "[finish]"
