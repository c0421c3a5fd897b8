"""TurtleGym: "turtle soup" lateral-thinking puzzles answered with yes/no questions."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from userrl.envs.actions import Action
from userrl.envs.base import PAPER_MAX_TURNS, Env, State, StepResult, Task
from userrl.envs.gyms._common import (
    assistant_turns,
    dialogue_text,
    gain_over_best,
    history_for_query,
    parse_json_object,
)
from userrl.envs.gyms._lexicon import expansions
from userrl.envs.gyms._text import content_words, groups_hit, stem, stems
from userrl.envs.gyms._turtle_rules import grade_story
from userrl.sim_users.base import SimUser, UserQuery, reply_object

#: UserRL's success threshold: the episode ends when every key point is covered
DEFAULT_THRESHOLD = 1.0


def _coverage(text: str, groups: list[list[str]]) -> float:
    return groups_hit(text, groups) / len(groups) if groups else 0.0


def feedback(task: Task, judgments: list[float], solved: bool) -> str:
    """The grade as UserRL shows it: the checklist points the explanation fully covers, no
    number, nothing about the points it misses or covers partly (not even how many there are)."""
    points = task["key_points"]
    full = [kp["statement"] for kp, j in zip(points, judgments, strict=True) if j >= 1.0]
    if not full:
        return "Your answer does not effectively cover any evaluation points."
    lines = ["Here's the evaluation points that your story effectively covers:"]
    lines += [f"{st.rstrip('.')}: Covered" for st in full]
    lines.append(
        "You uncovered it!"
        if solved
        else "There might be more hidden twists that you haven't covered. Try to continue ask related "
        "questions and answer with creativity."
    )
    return "\n".join(lines)


#: words of a question that ask about the story in general, never a fact of it
_QUESTION_FRAME = frozenset(
    stems(
        "story happen happened really actually involve involved related someone something narrator protagonist main character"
    )
)


def _confirmed(word: str, story: set[str], prefixes: set[str]) -> bool:
    """Whether the story says ``word``: the word itself, a word of its lexicon family or of a
    family implying it ("the killer" says "die"), or a form sharing its first 5 letters."""
    return word in story or any(stem(w) in story for w in expansions(word)) or (len(word) >= 5 and word[:5] in prefixes)


def answer_question(task: Task, question: str) -> str:
    """The scripted yes/no answer.

    1. The authored fact whose keyword groups the question covers best (at least half of them)
       gives its answer. 2. Otherwise, on an authored task, a question covering at least half of
       some key point's keyword groups is on the right track: ``Yes``; anything else ``No``.
    3. Tasks without facts (imported ones) answer from the hidden story's words: ``Yes`` when
       the story says at least 60% of the question's content words (a word, a word of its
       family in :mod:`._lexicon`, or another form of it); ``Maybe`` when it says none of them
       and neither does the surface (a question beside the story, as UserRL's host answers);
       otherwise ``No``.
    """
    best: tuple[float, int, str] | None = None
    for fact in task.get("facts", []):
        hits = groups_hit(question, fact["keywords"])
        ratio = hits / len(fact["keywords"]) if fact["keywords"] else 0.0
        if hits and ratio >= 0.5 and (best is None or (ratio, hits) > best[:2]):
            best = (ratio, hits, str(fact["answer"]))
    if best is not None:
        return "Yes" if best[2].lower().startswith("y") else "No"
    if task.get("facts"):
        on_track = any(kp["keywords"] and _coverage(question, kp["keywords"]) >= 0.5 for kp in task["key_points"])
        return "Yes" if on_track else "No"
    words = [w for w in content_words(question) if w not in _QUESTION_FRAME]
    story = set(content_words(task["bottom"]))
    prefixes = {w[:5] for w in story if len(w) >= 5}
    said = sum(1 for w in words if _confirmed(w, story, prefixes))
    if words and said >= 0.6 * len(words):
        return "Yes"
    known = story | set(content_words(f"{task.get('title', '')} {task.get('surface', '')}"))
    if not any(_confirmed(w, known, {k[:5] for k in known if len(k) >= 5}) for w in words):
        return "Maybe"
    return "No"


class TurtleUserSpec:
    """The host who knows the full story, and the judge of explanations.

    Queries: ``yes_no`` (payload ``question``) -> ``{"answer": "Yes"|"No"|"Maybe"}``; ``grade``
    (payload ``story``) -> ``{"score": float, "judgments": [0|0.5|1, ...]}``.
    """

    def scripted(self, query: UserQuery) -> dict[str, Any]:
        if query.name == "yes_no":
            return {"answer": answer_question(query.task, str(query.payload["question"]))}
        if query.name == "grade":
            score, judgments = grade_story(query.task, str(query.payload["story"]))
            return {"score": score, "judgments": judgments}
        raise ValueError(f"TurtleGym has no query {query.name!r}")

    def llm_messages(self, query: UserQuery) -> list[dict[str, str]]:
        t = query.task
        if query.name == "yes_no":
            system = (
                "You host a lateral-thinking puzzle. The player saw only this surface: "
                f"{t['surface']}\nThe hidden full story: {t['bottom']}\n"
                "Answer the player's yes/no question truthfully from the full story with Yes or "
                "No; Maybe only when the question is beside the story and cannot be told from it "
                "(use it as little as possible). Never reveal or paraphrase the story. "
                'Reply with JSON only: {"answer": "Yes"}, {"answer": "No"} or {"answer": "Maybe"}.'
            )
            user = f"Dialogue so far:\n{dialogue_text(query)}\n\nQuestion: {query.payload['question']}"
        else:
            points = [kp["statement"] for kp in t["key_points"]]
            system = (
                "You grade a player's explanation of a puzzle against a checklist. The full "
                f"story: {t['bottom']}\nChecklist: {json.dumps(points, ensure_ascii=False)}\n"
                "For each checklist item, judge 1 if the explanation clearly contains it, 0.5 "
                "if partially, 0 if not. The player saw this surface: "
                f"{t['surface']}\nRepeating the surface earns nothing. An explanation must "
                "tell one story: a list of keywords, several alternative stories, or a dump of "
                "guesses earns 0 on every item. Reply with JSON only: "
                '{"judgments": [one number per item, in order]}.'
            )
            user = f"Explanation: {query.payload['story']}"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def parse_llm(self, query: UserQuery, text: str) -> dict[str, Any]:
        if query.name == "yes_no":
            answer = parse_json_object(text, {"answer": str})["answer"].strip().strip(".!")
            if answer.capitalize() not in ("Yes", "No", "Maybe"):
                raise ValueError(f"answer must be Yes, No or Maybe, got {answer!r}")
            return {"answer": answer.capitalize()}
        judgments = parse_json_object(text, {"judgments": list})["judgments"]
        points = query.task["key_points"]
        if len(judgments) != len(points) or any(j not in (0, 0.5, 1) for j in judgments):
            raise ValueError(f"expected {len(points)} judgments, each 0, 0.5 or 1")
        score = sum(float(kp["weight"]) * float(j) for kp, j in zip(points, judgments, strict=True))
        return {"score": round(min(1.0, score), 4), "judgments": [float(j) for j in judgments]}

    def hidden_facts(self, query: UserQuery, reply: dict[str, Any]) -> list[str]:
        """The leak guard's facts: the full story and the checklist statements, always."""
        t = query.task
        return [str(t.get("bottom") or ""), *(str(kp.get("statement") or "") for kp in t.get("key_points") or [])]

    def reply_schema(self, query: UserQuery) -> dict[str, Any]:
        """The JSON reply of each query, for structured output: the grade has one judgment per
        checklist item."""
        if query.name == "yes_no":
            return reply_object(answer={"type": "string", "enum": ["Yes", "No"]})
        n = len(query.task["key_points"])
        judgment = {"type": "number", "enum": [0, 0.5, 1]}
        return reply_object(judgments={"type": "array", "items": judgment, "minItems": n, "maxItems": n})


class TurtleGym(Env):
    """Uncover the hidden story behind a strange situation ("turtle soup").

    Description:
        The agent sees a puzzling story surface; the user knows the full story (the bottom)
        and answers yes/no questions about it. The agent finally tells the story it inferred,
        which a judge grades against a checklist of weighted key points.

    Actions:
        ``[action] question``: a yes/no question, answered Yes or No (Maybe for a question
        beside the story, as UserRL's host; the scripted host says it on imported tasks only,
        whose stories have no authored facts). ``[answer] story``: the
        agent's explanation, graded. ``[search]`` is not used.

    Observation:
        The user's reply (``Yes.`` / ``No.`` / ``Maybe.``) or, for an explanation, the checklist points it
        fully covers, in UserRL's words (no numeric score, nothing about the rest).

    Reward:
        Each key point is judged 0, 0.5 or 1; the score is the weighted sum in [0, 1]. The turn
        reward is the gain over the best score so far, so the episode sums to the best score.

    Episode end:
        Terminated when the best score reaches ``success_threshold`` (option, default 1.0 as
        in UserRL: every key point covered) or on ``[finish]``; truncated after ``max_turns``
        (16, UserRL's rollout cap).

    Version history:
        v0: initial version, following UserRL's TurtleGym. The scripted judge ignores words
        the surface shows and rejects keyword lists (see ``_turtle_rules``).
    """

    id = "userrl/Turtle-v0"
    data_name: ClassVar[str] = "turtle"
    user_spec = TurtleUserSpec()

    option_defaults: ClassVar[dict[str, Any]] = {"success_threshold": DEFAULT_THRESHOLD}

    def __init__(self, max_turns: int | None = None, **options: Any) -> None:
        super().__init__(max_turns, **options)
        self.success_threshold = float(options.get("success_threshold", DEFAULT_THRESHOLD))
        if not 0.0 < self.success_threshold <= 1.0:
            raise ValueError(f"success_threshold must be in (0, 1], got {self.success_threshold}")

    @classmethod
    def validate_task(cls, task: Task) -> None:
        for key in ("title", "surface", "bottom"):
            if not isinstance(task.get(key), str) or not task[key].strip():
                raise ValueError(f"{key!r} must be a non-empty string")
        points = task.get("key_points")
        if not isinstance(points, list) or not points:
            raise ValueError("'key_points' must be a non-empty list")
        for kp in points:
            if not isinstance(kp.get("statement"), str) or not isinstance(kp.get("keywords"), list):
                raise ValueError("each key point needs a 'statement' and 'keywords' groups")
        total = sum(float(kp.get("weight", 0)) for kp in points)
        if abs(total - 1.0) > 1e-3:
            raise ValueError(f"key point weights must sum to 1, got {total}")

    def system_prompt(self, task: Task) -> str:
        return (
            "TurtleGym is a lateral-thinking puzzle. You see the surface of a strange story; "
            "the user knows the hidden full story. Uncover it.\n"
            "Actions:\n"
            "- [action] question : ask one yes/no question about the hidden story.\n"
            "- [answer] story : tell the full story you inferred, with every twist; it is "
            "graded against the key points of the hidden story.\n"
            "- [finish] : give up and end the episode.\n"
            "Test bold guesses with questions, then answer. You may answer several times."
        )

    async def on_reset(self, task: Task, seed: int) -> tuple[State, str, dict[str, Any]]:
        obs = f"Title: {task['title']}\nSurface: {task['surface']}\nUncover the hidden story behind this surface!"
        return {"best": 0.0, "dialogue": [{"role": "user", "content": obs}]}, obs, {"task_id": task["id"]}

    async def on_step(self, state: State, action: Action, user: SimUser) -> StepResult:
        task = state["task"]
        state["dialogue"].append({"role": "assistant", "content": action.text})
        info: dict[str, Any] = {}
        reward = 0.0
        if action.choice == "search":
            obs = "There is nothing to search here: ask yes/no questions or answer."
        elif action.choice == "action":
            reply = await user.ask(
                UserQuery(self.id, "respond", "yes_no", {"question": action.content}, task, history_for_query(state))
            )
            obs, info = f"{reply['answer']}.", {"user_answer": reply["answer"]}
        else:
            verdict = await user.ask(
                UserQuery(self.id, "judge", "grade", {"story": action.content}, task, history_for_query(state))
            )
            score = float(verdict["score"])
            reward, state["best"] = gain_over_best(state["best"], score)
            judgments = [float(j) for j in verdict.get("judgments", [])]
            if len(judgments) != len(task["key_points"]):
                judgments = [0.0] * len(task["key_points"])
            obs = feedback(task, judgments, state["best"] >= self.success_threshold - 1e-9)
            info = {"score": score, "judgments": judgments}
        state["dialogue"].append({"role": "user", "content": obs})
        done = state["best"] >= self.success_threshold - 1e-9
        return StepResult(state, obs, reward, done, False, info)

    @classmethod
    def expert_action(cls, task: Task, messages: list[dict[str, str]], max_turns: int = PAPER_MAX_TURNS) -> str:
        """Ask up to two questions the story answers with yes, then tell the key points."""
        k = assistant_turns(messages)
        yes = [
            f["question"]
            for f in task.get("facts", [])
            if str(f.get("answer", "")).lower().startswith("y") and f.get("question")
        ]
        if not yes:
            yes = [f"Is it true that {task['key_points'][0]['statement'].rstrip('.').lower()}?"]
        if k < min(2, len(yes)):
            return f"[action] {yes[k]}"
        return "[answer] " + " ".join(kp["statement"] for kp in task["key_points"])
