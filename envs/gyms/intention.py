"""IntentionGym: clarify a vague request by asking about its missing details."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from userrl.envs.actions import Action
from userrl.envs.base import PAPER_MAX_TURNS, Env, State, StepResult, Task
from userrl.envs.gyms._common import (
    assistant_turns,
    clip01,
    dialogue_text,
    history_for_query,
    parse_json_object,
)
from userrl.envs.gyms._text import (
    STOPWORDS,
    content_words,
    has_phrase,
    is_sweep,
    normalize,
    parse_groups,
    stem,
    stems,
)
from userrl.sim_users import guards
from userrl.sim_users.base import SimUser, UserQuery, reply_object

#: turn reward by the highest importance a question uncovers
IMPORTANCE_REWARD: dict[int, float] = {3: 1.0, 2: 0.7, 1: 0.4}
#: subtracted for every further detail the same question uncovers (focused questions win)
EXTRA_DETAIL_PENALTY = 0.2


#: a question with more content words than this is a list, not a question: it uncovers nothing
MAX_QUESTION_WORDS = 15
#: a question touching more details than this at once is a keyword list: it uncovers nothing
MAX_DETAILS_PER_QUESTION = 2
UNFOCUSED_REPLY = "That is a lot at once. Please ask me one thing at a time."

#: common clarifying topics, each a group of synonyms: an alternative a question offers ("the
#: budget or the date?") that names one of them must be the user's, or the question sweeps
TOPICS = parse_groups(
    "budget|cost|price|money|spend|afford|affordable|salary|expensive|cheap;"
    "time frame|timeframe|date|dates|deadline|timeline|schedule|when|recent|latest;"
    "duration|how long|length;frequency|how often;format|file type;style|tone|mood|theme|genre;"
    "location|located|city|region|neighborhood|neighbourhood|country|where do you live;"
    "size|how big|dimension|dimensions;number|how many|quantity|amount|guests;"
    "experience|skill|skill level|experience level|beginner|expert|proficiency|knowledge|prepared|preparation;"
    "restriction|constraint|requirement|limitation|allergy|allergies|dietary|diet;"
    "source|sources|outlet|outlets|website|websites;tool|tools|library|libraries|software|framework;"
    "equipment|hardware;purpose|goal|aim|intended use|use it for|used for;audience|readers|who will;"
    "brand|manufacturer;feature|features|functionality;compatibility|compatible|work with;"
    "age|how old;topic|topics|subject|subjects;language|programming language"
)
SYSTEM_PROMPT = (
    "IntentionGym: a user asks you for help, but the request is vague and important "
    "details are missing. Find out what they really want before doing anything.\n"
    "Actions:\n"
    "- [action] question : ask the user one clarifying question.\n"
    "- [finish] : stop once you know enough.\n"
    "Ask focused questions, one detail per question, most important first."
)


def shown_text(messages: list[dict[str, str]]) -> str:
    """What the agent was shown: the rules and every user message (request and replies)."""
    said = [str(m.get("content", "")) for m in messages if m.get("role") == "user"]
    return "\n".join([SYSTEM_PROMPT, *said])


def live_keywords(detail: dict[str, Any], shown: list[str]) -> list[str]:
    """A detail's keyword phrases minus those the agent was shown (repeating the request,
    the rules or the user's replies asks about nothing). When none is left, the words of the
    detail's description that were not shown stand in; the keywords only if none of those."""
    kept = [kw for kw in detail["keywords"] if not has_phrase(shown, kw)]
    if kept:
        return kept
    seen = set(shown)
    words = [
        w
        for w in normalize(str(detail.get("description", ""))).split()
        if w not in STOPWORDS and len(w) >= 3 and stem(w) not in seen
    ]
    return list(dict.fromkeys(words)) or list(detail["keywords"])


def touched_by(task: Task, question: str, among: list[int], shown: str = "") -> list[int]:
    """The details among ``among`` whose live keywords (any one phrase) the question uses."""
    q, seen = stems(question), stems(shown)
    details = task["missing_details"]
    return [i for i in among if any(has_phrase(q, kw) for kw in live_keywords(details[i], seen))]


def is_focused(task: Task, question: str, shown: str = "") -> bool:
    """Not a keyword list or a sweep: short, about at most two of the task's details (all of
    them, uncovered or not, so a list cannot sneak through once a few are known), and every
    bare topic it adds ("... the budget and *the date*?", :func:`bare_topics`) is one of the
    user's details: a topic the user has nothing on, added to one they have, is a sweep."""
    details = task["missing_details"]
    every = list(range(len(details)))
    if len(content_words(question)) > MAX_QUESTION_WORDS:
        return False
    touched = len(touched_by(task, question, every, shown))
    if touched > MAX_DETAILS_PER_QUESTION:
        return False
    seen = stems(shown)
    live = [kw for d in details for kw in live_keywords(d, seen)]
    own = stems(" ".join(f"{d['description']} {' '.join(d['keywords'])}" for d in details))
    return not is_sweep(question, lambda part: any(has_phrase(part, kw) for kw in live), own, TOPICS, seen)


def uncovered_by(task: Task, question: str, remaining: list[int], shown: str = "") -> list[int]:
    """Scripted judge: the remaining details a focused question asks about (see
    :func:`is_focused`; an unfocused one uncovers nothing)."""
    if not is_focused(task, question, shown):
        return []
    return touched_by(task, question, remaining, shown)


def turn_reward(task: Task, uncovered: list[int]) -> float:
    """By the highest importance uncovered, minus the penalty per extra detail; 0 if none."""
    if not uncovered:
        return 0.0
    top = max(IMPORTANCE_REWARD[int(task["missing_details"][i]["importance"])] for i in uncovered)
    return round(clip01(top - EXTRA_DETAIL_PENALTY * (len(uncovered) - 1)), 4)


def _reply_text(task: Task, uncovered: list[int], repeated: list[int], focused: bool = True) -> str:
    details = task["missing_details"]

    def said(i: int) -> str:
        return f"{details[i]['description']}: {details[i]['answer'].rstrip('.')}."

    if not focused:
        return UNFOCUSED_REPLY
    if uncovered:
        return " ".join(said(i) for i in uncovered)
    if repeated:
        return "As I said, " + " ".join(said(i) for i in repeated)
    return "I don't have a preference about that. Is there anything else you need to know?"


class IntentionUserSpec:
    """The user with a vague request, who reveals a hidden detail only when asked about it.

    Query ``clarify`` (payload ``question`` and ``remaining``: indices of details not yet
    uncovered) -> ``{"uncovered": [indices], "reply": str}``. Scripted rule: a detail is
    uncovered when the question contains one of its keyword phrases (stemmed, whole words)
    that the agent was not shown (the rules, the request and the replies do not count),
    unless the question is a keyword list (more than 15 content words, or touching more than
    two of the task's details): that uncovers nothing. The reply states the answers of exactly
    the uncovered details and nothing else.
    """

    def scripted(self, query: UserQuery) -> dict[str, Any]:
        if query.name != "clarify":
            raise ValueError(f"IntentionGym has no query {query.name!r}")
        task, question = query.task, str(query.payload["question"])
        remaining = [int(i) for i in query.payload["remaining"]]
        shown = shown_text(query.history)
        uncovered = uncovered_by(task, question, remaining, shown)
        done = [i for i in range(len(task["missing_details"])) if i not in remaining]
        focused = is_focused(task, question, shown)
        # a follow-up on a known detail may use the words of its answer: it earns nothing anyway
        repeated = touched_by(task, question, done) if focused else []
        return {"uncovered": uncovered, "reply": _reply_text(task, uncovered, repeated, focused)}

    def llm_messages(self, query: UserQuery) -> list[dict[str, str]]:
        t = query.task
        remaining = [int(i) for i in query.payload["remaining"]]
        # the words that ask about each detail (the scripted rule's live keywords): without them a
        # small user model cannot tell which detail "How many days?" asks about (docs/users.md)
        seen = stems(shown_text(query.history))
        hidden = [
            {"index": i, "detail": d["description"], "asked_with": live_keywords(d, seen), "your_answer": d["answer"]}
            for i, d in enumerate(t["missing_details"])
            if i in remaining
        ]
        system = (
            f'You are a user who asked an assistant: "{t["task"]}". You left out details; '
            f"the ones not yet discussed, with words that ask about them and your answers: "
            f"{json.dumps(hidden, ensure_ascii=False)}\n"
            "Decide which of these details the assistant's latest question actually asks "
            "about, and answer only those, briefly and naturally. Do not volunteer the others. "
            "A list of keywords or topics, or a question about many things at once, is not a "
            "real question: uncover nothing and ask for one thing at a time. Your own request "
            "or earlier answers repeated back to you ask about nothing new. "
            'Reply with JSON only: {"uncovered": [indices], "reply": "your answer"}.'
        )
        user = f"Dialogue so far:\n{dialogue_text(query)}\n\nQuestion: {query.payload['question']}"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def parse_llm(self, query: UserQuery, text: str) -> dict[str, Any]:
        obj = parse_json_object(text, {"uncovered": list, "reply": str})
        remaining = {int(i) for i in query.payload["remaining"]}
        idx = obj["uncovered"]
        if not all(isinstance(i, int) and not isinstance(i, bool) and i in remaining for i in idx):
            raise ValueError(f"'uncovered' must list indices from {sorted(remaining)}")
        return {"uncovered": sorted(set(idx)), "reply": obj["reply"]}

    def hidden_facts(self, query: UserQuery, reply: dict[str, Any]) -> list[str]:
        """The leak guard's facts: the answers of the details still hidden that this reply
        does not uncover (uncovering a detail *is* telling its answer)."""
        details = query.task.get("missing_details") or []
        allowed = {int(i) for i in reply.get("uncovered") or [] if isinstance(i, int)}
        hidden = [int(i) for i in query.payload.get("remaining") or [] if int(i) not in allowed]
        facts = [str(details[i].get("answer") or "") for i in hidden if 0 <= i < len(details)]
        # one short word ("yes", "two") is too common to be a leak of anything
        return [f for f in facts if len(guards.words(f)) > 1 or len(f.strip()) > 3]

    def reply_schema(self, query: UserQuery) -> dict[str, Any]:
        """The JSON reply, for structured output: ``uncovered`` lists indices still hidden."""
        remaining = sorted({int(i) for i in query.payload["remaining"]})
        index = {"type": "integer", "enum": remaining} if remaining else {"type": "integer"}
        return reply_object(
            uncovered={"type": "array", "items": index, "maxItems": len(remaining)}, reply={"type": "string"}
        )


class IntentionGym(Env):
    """Find out what a user with a vague request really wants.

    Description:
        The user states a task with important details missing (each hidden detail has an
        importance 1-3). The agent asks clarifying questions; a judge decides which hidden
        details a question uncovers and the user answers only those.

    Actions:
        ``[action] question``: a clarifying question. ``[answer]`` and ``[search]`` are
        accepted but earn nothing: this gym scores questions only.

    Observation:
        The user's reply.

    Reward:
        Per question, by the highest importance uncovered: 3 -> 1.0, 2 -> 0.7, 1 -> 0.4, minus
        0.2 per extra detail uncovered by the same question, clipped to [0, 1]; 0 if none.
        A keyword list (a "question" of more than 15 content words, or touching more than two
        details) uncovers nothing: the judge's guard against dumps, not a UserRL rule.
        The episode maximum is the sum over the details of their importance reward (one
        focused question each), see :meth:`max_score`.

    Episode end:
        Terminated when every missing detail is uncovered or on ``[finish]``; truncated
        after ``max_turns`` (16, UserRL's rollout cap).

    Version history:
        v0: initial version, following UserRL's IntentionGym.
    """

    id = "userrl/Intention-v0"
    data_name: ClassVar[str] = "intention"
    user_spec = IntentionUserSpec()

    @classmethod
    def validate_task(cls, task: Task) -> None:
        if not isinstance(task.get("task"), str) or not task["task"].strip():
            raise ValueError("'task' must be a non-empty string")
        details = task.get("missing_details")
        if not isinstance(details, list) or not details:
            raise ValueError("'missing_details' must be a non-empty list")
        for d in details:
            if not isinstance(d, dict) or int(d.get("importance", 0)) not in IMPORTANCE_REWARD:
                raise ValueError("each missing detail needs an importance of 1, 2 or 3")
            kws = d.get("keywords")
            if not isinstance(kws, list) or not kws or not all(isinstance(k, str) for k in kws):
                raise ValueError("each missing detail needs a non-empty 'keywords' list")
            if not isinstance(d.get("answer"), str) or not isinstance(d.get("description"), str):
                raise ValueError("each missing detail needs 'description' and 'answer' strings")

    @classmethod
    def max_score(cls, task: Task) -> float:
        return round(sum(IMPORTANCE_REWARD[int(d["importance"])] for d in task["missing_details"]), 4)

    def system_prompt(self, task: Task) -> str:
        return SYSTEM_PROMPT

    async def on_reset(self, task: Task, seed: int) -> tuple[State, str, dict[str, Any]]:
        obs = str(task["task"])
        remaining = list(range(len(task["missing_details"])))
        state = {"remaining": remaining, "dialogue": [{"role": "user", "content": obs}]}
        return state, obs, {"task_id": task["id"]}

    async def on_step(self, state: State, action: Action, user: SimUser) -> StepResult:
        task = state["task"]
        state["dialogue"].append({"role": "assistant", "content": action.text})
        if action.choice != "action":
            obs = "Please ask me a clarifying question with [action] so I can tell you more."
            state["dialogue"].append({"role": "user", "content": obs})
            return StepResult(state, obs, 0.0, False, False, {"uncovered": []})
        reply = await user.ask(
            UserQuery(
                self.id,
                "respond",
                "clarify",
                {"question": action.content, "remaining": list(state["remaining"])},
                task,
                history_for_query(state),
            )
        )
        uncovered = [i for i in reply["uncovered"] if i in state["remaining"]]
        state["remaining"] = [i for i in state["remaining"] if i not in uncovered]
        obs = str(reply["reply"])
        state["dialogue"].append({"role": "user", "content": obs})
        return StepResult(
            state, obs, turn_reward(task, uncovered), not state["remaining"], False, {"uncovered": uncovered}
        )

    @classmethod
    def expert_action(cls, task: Task, messages: list[dict[str, str]], max_turns: int = PAPER_MAX_TURNS) -> str:
        """One focused question per detail, most important first."""
        details = task["missing_details"]
        order = sorted(range(len(details)), key=lambda i: (-int(details[i]["importance"]), i))
        k = assistant_turns(messages)
        if k >= len(order):
            return "[finish]"
        target, remaining = order[k], order[k:]
        d = details[target]
        candidates = [str(d.get("inquiry") or "")]
        shown = shown_text(messages)
        candidates += [
            f"Could you tell me about the {kw}?" for kw in live_keywords(d, stems(shown)) + list(d["keywords"])
        ]
        for q in candidates:
            if q and uncovered_by(task, q, remaining, shown) == [target]:
                return f"[action] {q}"
        return f"[action] {candidates[-1]}"
