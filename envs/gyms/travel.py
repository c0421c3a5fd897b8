"""TravelGym: elicit a traveller's hidden preferences, search a catalog, recommend options."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from userrl.envs.actions import Action
from userrl.envs.base import PAPER_MAX_TURNS, Env, State, StepResult, Task
from userrl.envs.gyms._common import history_for_query
from userrl.envs.gyms._travel_rules import (
    ANSWER_SCORES,
    TravelUserSpec,
    answer_ids,
    find_aspect,
    is_plain_answer,
    option_label,
    search_catalog,
)
from userrl.sim_users.base import SimUser, UserQuery

#: UserRL trains with 0.8 per elicited preference (its evaluation uses 0.6: a gym option)
DEFAULT_ELICIT_REWARD = 0.8
#: UserRL trains with 0 per successful search (its evaluation and its gym's default use 0.2)
DEFAULT_SEARCH_REWARD = 0.0
DEFAULT_FAIL_EVERY = 5
#: why a task without catalog options and preferences (every imported one) is judged on the
#: final pick alone, for the importer, ``test-gym`` and the commands that leave it out
FINAL_PICK_ONLY = (
    "only the final pick is judged: UserRL's release has no catalog options and no preferences "
    "for its Travel tasks (their prompts hold only the request; the best ids are the ground truth), "
    "so there is nothing to search and nothing to elicit"
)
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
        implicitly. After 3 off-topic turns in a row the user volunteers one at random on the
        next (UserRL's ``elicitation_interval``). A catalog lists options per aspect; the best
        option is the cheapest one meeting every preference. A task without catalog options
        and preferences (every imported one: UserRL's release lacks them) is judged on the
        final pick alone (:meth:`final_pick_only`).

    Actions:
        ``[action] message``: talk to the traveller. ``[search] aspect query``: list the
        catalog's options for the aspect named in the query, once per aspect (a repeated
        search refers to the earlier results, as UserRL's); every 5th search fails with a
        system error on purpose (option ``search_fail_every``, 0 disables). UserRL's LLM also
        checks the query's arguments (destination, dates) against the task's; ours needs the
        aspect's name only (no data carries the arguments). ``[answer] id``: recommend an
        option id (the id alone, or with a few words such as "I recommend"); several ids of
        different aspects may be listed (``H12, F3``), as in UserRL. One final choice per
        aspect: an answer naming a second option of an aspect (in it, or after an earlier
        choice) earns nothing and its aspects count as chosen with 0 (UserRL records the
        first id and pays nothing). With option ``require_search`` (default true; not in
        UserRL, whose step accepts any catalog id) only an option that came up in one of the
        agent's searches can be recommended, so blind guesses of ids earn nothing.

    Observation:
        The traveller's reply, the search results, or the traveller's reaction to a choice.

    Reward:
        A preference elicited by the agent's question earns ``elicit_reward`` (option,
        default 0.8 as in UserRL's training; its evaluation uses 0.6: set
        ``elicit_reward: 0.6`` in the eval gym options; volunteered ones earn nothing). One
        message elicits at most one preference (as in UserRL); a keyword list (more than 15
        content words, or touching more than two preferences) elicits none. The first
        successful search of an aspect earns ``search_reward`` (option, default 0 as in
        UserRL's training; its evaluation uses 0.2). A recommendation earns 1.0 for the best
        option, 0.8 for an acceptable one, 0 for a wrong one. ``info["score"]`` at the end is
        the paper's evaluation score: the mean answer score over the aspects.

    Episode end:
        Terminated when every aspect has its one choice (UserRL's ``one_choice_per_aspect``),
        or on ``[finish]``; truncated after ``max_turns`` (16, UserRL's rollout cap).

    Version history:
        v0: initial version, following UserRL's TravelGym (from UserBench).
    """

    id = "userrl/Travel-v0"
    data_name: ClassVar[str] = "travel"
    user_spec = TravelUserSpec()

    option_defaults: ClassVar[dict[str, Any]] = {
        "elicit_reward": DEFAULT_ELICIT_REWARD,
        "search_reward": DEFAULT_SEARCH_REWARD,
        "search_fail_every": DEFAULT_FAIL_EVERY,
        "require_search": True,
    }

    def __init__(self, max_turns: int | None = None, **options: Any) -> None:
        super().__init__(max_turns, **options)
        self.elicit_reward = float(options.get("elicit_reward", DEFAULT_ELICIT_REWARD))
        self.search_reward = float(options.get("search_reward", DEFAULT_SEARCH_REWARD))
        self.fail_every = int(options.get("search_fail_every", DEFAULT_FAIL_EVERY))
        self.require_search = bool(options.get("require_search", True))
        if not (0.0 <= self.elicit_reward <= 1.0 and 0.0 <= self.search_reward <= 1.0) or self.fail_every < 0:
            raise ValueError("elicit_reward and search_reward must be in [0, 1] and search_fail_every >= 0")
        if self.fail_every == 1:
            raise ValueError("search_fail_every: 1 would fail every search; use 0 (never) or >= 2")

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
    def final_pick_only(cls, task: Task) -> str | None:
        """Why only the final pick of ``task`` can be judged (no catalog options and no
        preferences: nothing to search or elicit), or None for a task that plays in full."""
        empty = not any(task["catalog"][a].get("options") for a in task["aspects"])
        return FINAL_PICK_ONLY if empty and not task.get("preferences") else None

    @classmethod
    def episode_score(cls, rewards: Sequence[float], state: State) -> float:
        """The paper's score: the mean answer score over the aspects (an aspect without a
        recommendation scores 0); elicitation rewards do not count. At the episode's natural
        end this is the last step's ``info["score"]``; its maximum is 1.0."""
        aspects = (state.get("task") or {}).get("aspects") or []
        choices = state.get("choices") or {}
        return round(sum(choices.values()) / len(aspects), 4) if aspects else 0.0

    @classmethod
    def max_return(
        cls, task: Task, elicit_reward: float = DEFAULT_ELICIT_REWARD, search_reward: float = DEFAULT_SEARCH_REWARD
    ) -> float:
        n = len(task["aspects"])
        return round(n + search_reward * n + elicit_reward * len(task.get("preferences", [])), 4)

    @classmethod
    def max_return_within(cls, task: Task, max_turns: int) -> float:
        """An episode at the maximum score searches and answers every aspect (plus the
        searches that fail on purpose); each turn left elicits at most one preference."""
        n, prefs = len(task["aspects"]), len(task.get("preferences", []))
        spare = max(0, max_turns - _searches_needed(n) - n)
        return round(n + DEFAULT_SEARCH_REWARD * n + DEFAULT_ELICIT_REWARD * min(prefs, spare), 4)

    def system_prompt(self, task: Task) -> str:
        return (
            "TravelGym: help a traveller plan a trip. Their request is incomplete: for each "
            "travel aspect they have hidden preferences that they reveal only when you ask, "
            "often implicitly.\n"
            "Actions:\n"
            "- [action] message : ask the traveller a clear, specific question.\n"
            "- [search] aspect query : list the catalog's options for one aspect (e.g. "
            "[search] hotel in the old town). The search service sometimes fails; retry.\n"
            "- [answer] option id : recommend one option id (e.g. [answer] H12). "
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
            "searched": [],
            "choices": {},
            "dialogue": [{"role": "user", "content": obs}],
        }
        return state, obs, {"task_id": task["id"]}

    async def on_step(self, state: State, action: Action, user: SimUser) -> StepResult:
        task = state["task"]
        state["dialogue"].append({"role": "assistant", "content": action.text})
        reward, info = 0.0, {}
        if action.choice == "search":
            obs, reward = self._search(state, action.content)
        elif action.choice == "action":
            payload = {
                "message": action.content,
                "revealed": list(state["revealed"]),
                "off_topic": state["off_topic"],
                "seed": int(state["seed"]) * 1009 + int(state["turn"]),
            }
            reply = await user.ask(UserQuery(self.id, "respond", "talk", payload, task, history_for_query(state)))
            new = [int(i) for i in reply["reveal"] if int(i) not in state["revealed"]]
            state["revealed"] += new
            state["off_topic"] = 0 if new else state["off_topic"] + 1
            if not reply.get("volunteered"):
                reward = round(self.elicit_reward * len(new), 4)
            obs, info = str(reply["reply"]), {"revealed": new, "volunteered": bool(reply.get("volunteered"))}
        else:
            obs, reward, info = self._answer(state, action.content)
        state["dialogue"].append({"role": "user", "content": obs})
        done = all(a in state["choices"] for a in task["aspects"])
        if done:
            info["aspect_scores"] = dict(state["choices"])
            info["score"] = round(sum(state["choices"].values()) / len(task["aspects"]), 4)
        return StepResult(state, obs, reward, done, False, info)

    def _search(self, state: State, query: str) -> tuple[str, float]:
        """A catalog search: the aspect's options the first time, a pointer to them after."""
        task = state["task"]
        state["searches"] += 1
        if self.fail_every and state["searches"] % self.fail_every == 0:
            return SYSTEM_ERROR, 0.0
        aspect = find_aspect(task, query)
        if aspect is not None and aspect in state["searched"]:
            return (
                f"You already have the search results for the {aspect.replace('_', ' ')}; refer to them.",
                0.0,
            )
        obs = search_catalog(task, query)
        if aspect is None:
            return obs, 0.0
        state["searched"].append(aspect)
        state["seen"] = sorted(set(state.get("seen", [])) | set(answer_ids(obs)))
        return obs, self.search_reward

    def _answer(self, state: State, content: str) -> tuple[str, float, dict[str, Any]]:
        """UserRL's answer rule: the ids in order, one final choice per aspect."""
        task = state["task"]
        ids = answer_ids(content)
        if not ids or not is_plain_answer(content):
            return ("Please recommend option ids only, e.g. [answer] H12.", 0.0, {"answer_error": "format"})
        picks = []
        for oid in ids:
            found = option_label(task, oid)
            if found is None:
                return f"{oid} is not an option in the catalog.", 0.0, {"answer_error": "unknown id"}
            aspect, label = found
            if self.require_search and task["catalog"][aspect].get("options") and oid not in state.get("seen", []):
                return (
                    f"{oid} has not come up in your searches; search the catalog first.",
                    0.0,
                    {"answer_error": "not searched"},
                )
            picks.append((oid, aspect, label))
        named: list[str] = []
        for _oid, aspect, _label in picks:
            if aspect in state["choices"] or aspect in named:
                for a in named:  # UserRL keeps them chosen, and the answer earns nothing
                    state["choices"][a] = 0.0
                return (
                    f"You already recommended an option for the {aspect.replace('_', ' ')}; only one choice "
                    "per aspect counts, so this answer earns nothing.",
                    0.0,
                    {"answer_error": "already chosen"},
                )
            named.append(aspect)
        reward = 0.0
        for _oid, aspect, label in picks:
            state["choices"][aspect] = ANSWER_SCORES[label]
            reward += ANSWER_SCORES[label]
        reply = " ".join(_REPLIES[label] for _o, _a, label in picks)
        labels = {aspect: label for _o, aspect, label in picks}
        return reply, round(reward, 4), {"aspects": labels}

    @classmethod
    def expert_action(cls, task: Task, messages: list[dict[str, str]], max_turns: int = PAPER_MAX_TURNS) -> str:
        """Per aspect: ask about its preferences, search the aspect, recommend the best. When
        ``max_turns`` cannot hold every question, the last ones are left out: every aspect's
        search and answer come first (the score), then as many preferences as fit.

        Plan steps advance unless the reply was a search system error (then it retries).
        """
        n = len(task["aspects"])
        spare = max(0, max_turns - _searches_needed(n) - n)
        questions = [p for p in task.get("preferences", []) if p["aspect"] in task["aspects"]][:spare]
        plan = []
        for aspect in task["aspects"]:
            plan += [f"[action] {p['question']}" for p in questions if p["aspect"] == aspect]
            plan += [f"[search] {aspect.replace('_', ' ')} options", f"[answer] {task['catalog'][aspect]['best'][0]}"]
        step = 0
        for i, m in enumerate(messages):
            if m.get("role") != "assistant":
                continue
            reply = next((x.get("content", "") for x in messages[i + 1 :] if x.get("role") != "assistant"), "")
            step += 0 if SYSTEM_ERROR in reply else 1
        return plan[step] if step < len(plan) else "[finish]"


def _searches_needed(aspects: int, fail_every: int = DEFAULT_FAIL_EVERY) -> int:
    """Searches that list every aspect once when every ``fail_every``-th one fails."""
    if not fail_every or aspects == 0:
        return aspects
    return aspects + (aspects - 1) // (fail_every - 1)
