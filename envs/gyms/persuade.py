"""PersuadeGym: change the mind of a user who agrees with a claim."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from userrl.envs.actions import Action
from userrl.envs.base import PAPER_MAX_TURNS, Env, State, StepResult, Task
from userrl.envs.gyms._common import (
    dialogue_text,
    history_for_query,
    parse_json_object,
)
from userrl.envs.gyms._persuade_rules import (  # noqa: F401  (BACKFIRE: used by the importer)
    BACKFIRE,
    LAST,
    STANCES,
    SYSTEM_PROMPT,
    counter_hit,
    live_groups,
    react,
    stance_index,
)
from userrl.envs.gyms._text import stems
from userrl.sim_users.base import SimUser, UserQuery, reply_object


class PersuadeUserSpec:
    """The user who holds the claim and reacts to the agent's arguments.

    Query ``react`` (payload ``argument``, ``stance``: the current label, ``used``: indices of
    counter-arguments already made) -> ``{"stance": label, "new_points": [indices], "reply"}``.
    Scripted rules, in order: (1) an argument with a hostile word (``BACKFIRE``) moves the
    stance one level back toward agreement; (2) every counter-argument of the task it makes
    for the first time (at most one per argument: the best-matching; all its keyword groups hit, words matched as prefixes of stems; words
    of the claim do not count) moves the stance its ``levels`` toward disagreement, capped at
    Strongly Disagree; (3) repeated or unrelated arguments leave it unchanged; (4) a list of
    talking points (more than 40 content words, or more than two new counter-arguments at
    once), a bare
    phrase (fewer than 4 content words) or an
    echo of the user's own reasoning leaves it unchanged too. The user never recites their
    hidden reasoning.
    """

    def scripted(self, query: UserQuery) -> dict[str, Any]:
        if query.name != "react":
            raise ValueError(f"PersuadeGym has no query {query.name!r}")
        p = query.payload
        return react(
            query.task,
            str(p["argument"]),
            stance_index(str(p["stance"])),
            [int(i) for i in p.get("used", [])],
            query.history,
        )

    def llm_messages(self, query: UserQuery) -> list[dict[str, str]]:
        t, p = query.task, query.payload
        system = (
            f'You firmly believe this claim: "{t["claim"]}". Your reasoning: {t["argument"]}\n'
            f"Your current stance on the claim: {p['stance']}. The possible stances, from "
            f"agreement to disagreement: {json.dumps(list(STANCES))}.\n"
            "Someone is trying to change your mind. Be a reasonable but stubborn person: move "
            "toward disagreement only for new, specific and convincing arguments (usually one "
            "level, at most two per argument), stay put for repeated, vague or weak ones, and "
            "move back toward agreement if they are rude. Do not move for a list of talking "
            "points or keywords, for several arguments crammed into one, or for your own "
            "reasoning repeated back to you. Reply to their argument in one or two "
            'sentences. Reply with JSON only: {"stance": "<one of the stances>", "reply": "..."}.'
        )
        user = f"Dialogue so far:\n{dialogue_text(query)}\n\nTheir argument: {p['argument']}"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def parse_llm(self, query: UserQuery, text: str) -> dict[str, Any]:
        obj = parse_json_object(text, {"stance": str, "reply": str})
        label = STANCES[stance_index(obj["stance"])]
        return {"stance": label, "new_points": [], "reply": f"{obj['reply']} My stance: {label}."}

    def reply_schema(self, query: UserQuery) -> dict[str, Any]:
        """The JSON reply, for structured output (``parse_llm`` reads it)."""
        return reply_object(stance={"type": "string", "enum": list(STANCES)}, reply={"type": "string"})


class PersuadeGym(Env):
    """Persuade a user to change their position on a claim.

    Description:
        The user holds a claim and starts agreeing with it (``initial_stance``, default
        Strongly Agree). The agent argues against it; after each argument the user states a
        stance on a 7-level scale (UserRL's labels): Strongly Agree, Agree, Partly Agree,
        Neutral, Partly Disagree, Disagree, Strongly Disagree.

    Actions:
        ``[action] argument`` or ``[answer] argument`` (UserRL's prompt uses answer): one
        argument against the claim. ``[search]`` is not used.

    Observation:
        The opening shows the claim and the user's stance only (as in UserRL: the user's own
        reasoning is hidden); then the user's reply, ending with ``My stance: <label>.``

    Reward:
        Levels moved toward disagreement since the previous turn, divided by 6 (0 if none or
        backwards); so an episode from Strongly Agree to Strongly Disagree sums to 1.0. Option
        ``reward_mode="best"`` pays only for levels beyond the furthest stance reached (no
        credit for regaining ground lost by a rude argument).

    Episode end:
        Terminated when the user reaches Strongly Disagree or on ``[finish]``; truncated after
        ``max_turns`` (16, UserRL's rollout cap).

    Version history:
        v0: initial version, following UserRL's PersuadeGym.
    """

    id = "userrl/Persuade-v0"
    data_name: ClassVar[str] = "persuade"
    user_spec = PersuadeUserSpec()

    option_defaults: ClassVar[dict[str, Any]] = {"reward_mode": "delta"}

    def __init__(self, max_turns: int | None = None, **options: Any) -> None:
        super().__init__(max_turns, **options)
        self.reward_mode = str(options.get("reward_mode", "delta"))
        if self.reward_mode not in ("delta", "best"):
            raise ValueError(f"reward_mode must be 'delta' or 'best', got {self.reward_mode!r}")

    @classmethod
    def validate_task(cls, task: Task) -> None:
        for key in ("claim", "argument"):
            if not isinstance(task.get(key), str) or not task[key].strip():
                raise ValueError(f"{key!r} must be a non-empty string")
        start = int(task.get("initial_stance", 0))
        if not 0 <= start < LAST:
            raise ValueError(f"'initial_stance' must be 0..{LAST - 1}")
        counters = task.get("counters")
        if not isinstance(counters, list) or not counters:
            raise ValueError("'counters' must be a non-empty list")
        for c in counters:
            if not isinstance(c.get("argument"), str) or not isinstance(c.get("keywords"), list):
                raise ValueError("each counter needs an 'argument' and 'keywords' groups")
            if int(c.get("levels", 0)) < 1:
                raise ValueError("each counter needs 'levels' >= 1")
        if sum(int(c["levels"]) for c in counters) < LAST - start:
            raise ValueError("the counters' levels cannot reach Strongly Disagree")

    @classmethod
    def max_score(cls, task: Task) -> float:
        return round((LAST - int(task.get("initial_stance", 0))) / LAST, 4)

    def system_prompt(self, task: Task) -> str:
        return SYSTEM_PROMPT

    async def on_reset(self, task: Task, seed: int) -> tuple[State, str, dict[str, Any]]:
        stance = int(task.get("initial_stance", 0))
        # UserRL's opening shows the claim only: the user's own reasoning stays hidden
        obs = (
            f"Claim that you oppose but the user holds: {task['claim']}\n"
            f"User: My stance: {STANCES[stance]}.\n"
            "Try to persuade the user to change their position regarding this claim!"
        )
        state = {"stance": stance, "furthest": stance, "used": [], "dialogue": [{"role": "user", "content": obs}]}
        return state, obs, {"task_id": task["id"]}

    async def on_step(self, state: State, action: Action, user: SimUser) -> StepResult:
        task = state["task"]
        state["dialogue"].append({"role": "assistant", "content": action.text})
        if action.choice == "search":
            obs = "There is nothing to search here: make your argument with [action]."
            state["dialogue"].append({"role": "user", "content": obs})
            return StepResult(state, obs, 0.0, False, False, {"stance": STANCES[state["stance"]]})
        reply = await user.ask(
            UserQuery(
                self.id,
                "respond",
                "react",
                {"argument": action.content, "stance": STANCES[state["stance"]], "used": list(state["used"])},
                task,
                history_for_query(state),
            )
        )
        old, new = state["stance"], stance_index(str(reply["stance"]))
        base = state["stance"] if self.reward_mode == "delta" else state["furthest"]
        # differences of rounded positions, so an episode's rewards sum exactly to its progress
        reward = round(max(0.0, round(new / LAST, 4) - round(base / LAST, 4)), 4)
        state["used"] += [int(i) for i in reply.get("new_points", []) if i not in state["used"]]
        state["stance"], state["furthest"] = new, max(state["furthest"], new)
        obs = str(reply["reply"])
        state["dialogue"].append({"role": "user", "content": obs})
        return StepResult(state, obs, reward, new == LAST, False, {"stance": STANCES[new], "previous": STANCES[old]})

    @classmethod
    def expert_action(cls, task: Task, messages: list[dict[str, str]], max_turns: int = PAPER_MAX_TURNS) -> str:
        """Make the task's counter-arguments, strongest first, one per turn.

        The expert knows the scripted user's rules: it replays the dialogue to know which
        points are made, then says the first remaining counter-argument (or a plainer
        version naming two of its keywords) that the user would accept.
        """
        stance, used = int(task.get("initial_stance", 0)), []
        history = [m for m in messages if m.get("role") == "user"][:1]
        for i, m in enumerate(messages):
            if m.get("role") == "assistant":
                out = react(task, _argument_of(m["content"]), stance, used, history)
                stance, used = stance_index(out["stance"]), used + out["new_points"]
                history = [x for x in messages[: i + 2] if x.get("role") == "user"]
        order = sorted(range(len(task["counters"])), key=lambda i: (-int(task["counters"][i]["levels"]), i))
        history = [m for m in messages if m.get("role") == "user"]
        shown = stems("\n".join([SYSTEM_PROMPT, task["claim"], *(m["content"] for m in history)]))
        for i in (i for i in order if i not in used):
            c = task["counters"][i]
            words = [g[0] for g in live_groups(c, shown)]
            for text in (
                c["argument"],
                f"Consider {' and '.join(words[:2])} from the other side: the evidence points the other way.",
            ):
                if react(task, text, stance, used, history)["stance"] != STANCES[stance]:
                    return f"[action] {text}"
        return "[finish]"


def _argument_of(text: str) -> str:
    for prefix in ("[action]", "[answer]"):
        if text.strip().lower().startswith(prefix):
            return text.strip()[len(prefix) :].strip()
    return text
