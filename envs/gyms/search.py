"""SearchGym: answer open-domain questions by searching a document collection."""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar

import httpx
import structlog

from userrl.envs.actions import Action
from userrl.envs.base import PAPER_MAX_TURNS, Env, State, StepResult, Task
from userrl.envs.gyms._common import (
    assistant_turns,
    dialogue_text,
    gain_over_best,
    history_for_query,
    parse_json_object,
)
from userrl.envs.gyms._search_index import get_index, snippet
from userrl.envs.gyms._text import STOPWORDS, normalize
from userrl.errors import EnvError
from userrl.sim_users.base import SimUser, UserQuery, reply_object

log = structlog.get_logger(__name__)

MAX_SEARCHES, TOP_K = 5, 5
#: an answer may add this many words around the gold answer ("It was 1873.")
EXTRA_WORDS = 6
SERPER_URL = "https://google.serper.dev/search"
SERPER_KEY_ENV = "SERPER_API_KEY"
_ARTICLES = frozenset({"a", "an", "the"})
_FILLER = frozenset("answer think believe guess final correct sure".split())
#: wrong answers allowed before the episode ends. UserRL allows any number, but then a policy
#: can answer every name the search results show, one per turn, and collect the right one
#: without reading (0.44 of the maximum on our bundled questions; 0.26 with two answers, since
#: the top result of a one-hop question names the answer among two names). The user asked one
#: question: the agent searches as much as it likes (5 searches), then commits to one answer.
#: ``max_answers: null`` restores UserRL's rule
DEFAULT_MAX_ANSWERS = 1


_MONTHS = {
    m: i
    for i, names in enumerate(
        (
            "jan january",
            "feb february",
            "mar march",
            "apr april",
            "may",
            "jun june",
            "jul july",
            "aug august",
            "sep sept september",
            "oct october",
            "nov november",
            "dec december",
        ),
        1,
    )
    for m in names.split()
}
_DAY_MONTH_YEAR = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)? (?:of )?([a-z]+),? (\d{3,4})\b")
_MONTH_DAY_YEAR = re.compile(r"\b([a-z]+) (\d{1,2})(?:st|nd|rd|th)?,? (\d{3,4})\b")


def _dates(text: str) -> str:
    """Dates written either way ("20 June 1837", "June 20, 1837") as one form: "1837 6 20"."""

    def dmy(m: re.Match[str]) -> str:
        month = _MONTHS.get(m.group(2))
        return f"{m.group(3)} {month} {int(m.group(1))}" if month else m.group(0)

    def mdy(m: re.Match[str]) -> str:
        month = _MONTHS.get(m.group(1))
        return f"{m.group(3)} {month} {int(m.group(2))}" if month else m.group(0)

    text = text.lower().replace(",", " ").replace("  ", " ")
    return _MONTH_DAY_YEAR.sub(mdy, _DAY_MONTH_YEAR.sub(dmy, text))


def _norm_words(text: str) -> list[str]:
    return [w for w in normalize(_dates(text)).split() if w not in _ARTICLES]


def match_answer(task: Task, answer: str) -> bool:
    """Normalized-match judge: the gold answer (or an alias) occurs in the answer as whole
    words (dates compared in one form, "20 June 1837" = "June 20, 1837"), with at most :data:`EXTRA_WORDS` other words, each of them a function word, filler
    (``answer``, ``think``) or a word of the question: an answer that adds any other candidate
    (``Paris London``, ``Paris or Rome``) hedges and fails."""
    got = _norm_words(answer)
    allowed = STOPWORDS | _FILLER | set(normalize(task["question"]).split())
    for gold in [task["answer"], *task.get("aliases", [])]:
        want = _norm_words(str(gold))
        n = len(want)
        for i in range(len(got) - n + 1):
            extra = got[:i] + got[i + n :]
            if n and got[i : i + n] == want and len(extra) <= EXTRA_WORDS and all(w in allowed for w in extra):
                return True
    return False


class SearchUserSpec:
    """The judge of answers (SearchGym has no user to talk to).

    Query ``judge_answer`` (payload ``answer``) -> ``{"correct": bool}``. Scripted rule:
    :func:`match_answer` (normalized words, articles dropped, gold or alias contained, at most
    six extra words).
    """

    def scripted(self, query: UserQuery) -> dict[str, Any]:
        if query.name != "judge_answer":
            raise ValueError(f"SearchGym has no query {query.name!r}")
        return {"correct": match_answer(query.task, str(query.payload["answer"]))}

    def llm_messages(self, query: UserQuery) -> list[dict[str, str]]:
        t = query.task
        golds = [t["answer"], *t.get("aliases", [])]
        system = (
            "You judge answers to a question. Question: "
            f"{t['question']}\n"
            f"Gold answer (or accepted aliases): {golds}\n"
            "An answer is correct if it gives the same entity, number or fact as the gold answer "
            "(ignore case, articles and harmless extra words); it is wrong if it is different, "
            "hedges between several options or lists other candidates next to the right one "
            "(however formatted), or is missing. "
            'Reply with JSON only: {"correct": true} or {"correct": false}.'
        )
        user = f"Dialogue so far:\n{dialogue_text(query)}\n\nAnswer: {query.payload['answer']}"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def parse_llm(self, query: UserQuery, text: str) -> dict[str, Any]:
        return {"correct": parse_json_object(text, {"correct": bool})["correct"]}

    def reply_schema(self, query: UserQuery) -> dict[str, Any]:
        """The JSON verdict, for structured output (``parse_llm`` reads it)."""
        return reply_object(correct={"type": "boolean"})


async def serper_search(query: str, k: int = TOP_K, api_key: str | None = None) -> list[str]:
    """Web results from a Serper-compatible API (key from ``$SERPER_API_KEY``)."""
    key = api_key or os.environ.get(SERPER_KEY_ENV)
    if not key:
        raise EnvError(f"search_backend='serper' needs an API key in ${SERPER_KEY_ENV}")
    url = os.environ.get("SERPER_URL", SERPER_URL)
    async with httpx.AsyncClient(timeout=20) as client:
        r = await client.post(url, json={"q": query, "num": k}, headers={"X-API-KEY": key})
    if r.status_code != 200:
        raise EnvError(f"web search failed: HTTP {r.status_code}", transient=r.status_code >= 500)
    items = r.json().get("organic", [])[:k]
    return [f"{it.get('title', '')}: {it.get('snippet', '')} ({it.get('link', '')})" for it in items]


class SearchGym(Env):
    """Answer a question by searching a document collection step by step.

    Description:
        The agent gets a question (often multi-hop) and a search engine. By default the
        engine is a local full-text index (SQLite FTS5, or pure-Python BM25 where FTS5 is
        missing) over the bundled collection of a fictional world, so it is deterministic,
        offline and fast; option ``search_backend="serper"`` uses a Serper-compatible web
        search API instead (key in ``$SERPER_API_KEY``; never used in tests).

    Actions:
        ``[search] query``: up to 5 results (id, title, snippet); at most 5 searches per
        episode. ``[answer] text``: a short answer, judged. ``[action]`` is not used.

    Observation:
        Search results, or the verdict on an answer.

    Reward:
        1.0 for a correct answer (scripted normalized-match judge, or an LLM judge), else 0;
        an answer that names other candidates besides the right one is wrong;
        searches earn 0. Gain over the best answer so far, so at most 1.0 per episode.

    Episode end:
        Terminated by a correct answer, by the ``max_answers``-th wrong one (option, default 1:
        the user asked one question; UserRL allows any number, which lets a policy answer every
        name the results show, one per turn: ``max_answers: null`` restores it) or
        ``[finish]``; truncated after
        ``max_turns`` (16, UserRL's rollout cap).

    Version history:
        v0: initial version, following UserRL's SearchGym with a local index.
    """

    id = "userrl/Search-v0"
    data_name: ClassVar[str] = "search"
    user_spec = SearchUserSpec()

    option_defaults: ClassVar[dict[str, Any]] = {"search_backend": "local", "max_answers": DEFAULT_MAX_ANSWERS}

    def __init__(self, max_turns: int | None = None, **options: Any) -> None:
        super().__init__(max_turns, **options)
        self.backend = str(options.get("search_backend", "local"))
        if self.backend not in ("local", "serper"):
            raise ValueError(f"search_backend must be 'local' or 'serper', got {self.backend!r}")
        limit = options.get("max_answers", DEFAULT_MAX_ANSWERS)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise ValueError(f"max_answers must be a positive integer or null, got {limit!r}")
        self.max_answers: int | None = limit

    @classmethod
    def validate_task(cls, task: Task) -> None:
        for key in ("question", "answer"):
            if not isinstance(task.get(key), str) or not task[key].strip():
                raise ValueError(f"{key!r} must be a non-empty string")
        if not isinstance(task.get("aliases", []), list):
            raise ValueError("'aliases' must be a list of strings")

    def system_prompt(self, task: Task) -> str:
        return (
            "SearchGym is a question-answering game. Find the answer to the question by "
            "searching, step by step.\n"
            "Actions:\n"
            f"- [search] query : a search query; returns up to {TOP_K} results. At most "
            f"{MAX_SEARCHES} searches.\n"
            "- [answer] text : a short answer (a name, a number, a place). A correct answer ends "
            "the game"
            + (
                f"; so does wrong answer number {self.max_answers}.\n"
                if self.max_answers
                else "; you may answer several times.\n"
            )
            + "- [finish] : give up.\n"
            "Plan the hops of the question, search for one fact at a time, then answer briefly."
        )

    async def on_reset(self, task: Task, seed: int) -> tuple[State, str, dict[str, Any]]:
        obs = (
            f"{task['question']}\nPlease make a plan to search for information step by step "
            "and provide your answer to my question!"
        )
        return (
            {"best": 0.0, "searches": 0, "dialogue": [{"role": "user", "content": obs}]},
            obs,
            {"task_id": task["id"]},
        )

    async def on_step(self, state: State, action: Action, user: SimUser) -> StepResult:
        task = state["task"]
        state["dialogue"].append({"role": "assistant", "content": action.text})
        reward, info = 0.0, {}
        if action.choice == "search":
            obs = await self._search(state, action.content)
        elif action.choice == "action":
            obs = "There is no one to talk to here: use [search] query or [answer] text."
        else:
            verdict = await user.ask(
                UserQuery(self.id, "judge", "judge_answer", {"answer": action.content}, task, history_for_query(state))
            )
            right = bool(verdict["correct"])
            reward, state["best"] = gain_over_best(state["best"], 1.0 if right else 0.0)
            state["answers"] = int(state.get("answers", 0)) + 1
            last = not right and self.max_answers is not None and state["answers"] >= self.max_answers
            obs = (
                "Correct!" if right else "That answer is not correct." + (" That was your last answer." if last else "")
            )
            info = {"score": 1.0 if right else 0.0}
            if last:
                state["dialogue"].append({"role": "user", "content": obs})
                return StepResult(state, obs, reward, True, False, info)
        state["dialogue"].append({"role": "user", "content": obs})
        return StepResult(state, obs, reward, state["best"] >= 1.0, False, info)

    async def _search(self, state: State, query: str) -> str:
        if state["searches"] >= MAX_SEARCHES:
            return f"You have used all {MAX_SEARCHES} searches. Answer with [answer]."
        state["searches"] += 1
        if self.backend == "serper":
            results = await serper_search(query)
        else:
            results = [snippet(d) for d in get_index().search(query, TOP_K)]
        left = MAX_SEARCHES - state["searches"]
        if not results:
            return f"No results for {query!r}. ({left} searches left)"
        return "\n".join(f"{i}. {r}" for i, r in enumerate(results, 1)) + f"\n({left} searches left)"

    @classmethod
    def expert_action(cls, task: Task, messages: list[dict[str, str]], max_turns: int = PAPER_MAX_TURNS) -> str:
        """Search the task's planned queries (at most 4), then answer."""
        k = assistant_turns(messages)
        queries = list(task.get("queries") or [task["question"]])[: MAX_SEARCHES - 1]
        if k < len(queries):
            return f"[search] {queries[k]}"
        return f"[answer] {task['answer']}"
