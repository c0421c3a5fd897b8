"""TelepathyGym: 20 questions. Guess the entity the user is thinking of."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from userrl.envs.actions import Action
from userrl.envs.base import PAPER_MAX_TURNS, Env, State, StepResult, Task
from userrl.envs.gyms import _telepathy_rules as rules
from userrl.envs.gyms._common import (
    assistant_turns,
    dialogue_text,
    gain_over_best,
    history_for_query,
    parse_json_object,
)
from userrl.sim_users.base import SimUser, UserQuery, reply_object

ANSWERS = ("Yes", "No", "Maybe")


def _entity_facts(task: Task) -> str:
    facts = {k: task.get(k) for k in ("title", "category", "synonyms", "details", "attributes", "tags") if task.get(k)}
    return json.dumps(facts, ensure_ascii=False)


class TelepathyUserSpec:
    """The user who thinks of the entity, and the judge of guesses.

    Queries: ``yes_no`` (payload ``question``) -> ``{"answer": "Yes"|"No"|"Maybe"}``;
    ``judge_guess`` (payload ``guess``) -> ``{"correct": bool}``. The scripted rules are in
    :mod:`userrl.envs.gyms._telepathy_rules`; they answer only Yes/No/Maybe, so the entity is
    never named.
    """

    def scripted(self, query: UserQuery) -> dict[str, Any]:
        if query.name == "yes_no":
            return {"answer": rules.answer_question(query.task, str(query.payload["question"]))}
        if query.name == "judge_guess":
            return {"correct": rules.judge_guess(query.task, str(query.payload["guess"]))}
        raise ValueError(f"TelepathyGym has no query {query.name!r}")

    def llm_messages(self, query: UserQuery) -> list[dict[str, str]]:
        if query.name == "yes_no":
            system = (
                "You are playing a guessing game as the person who thinks of an entity. "
                f"The entity and what you know about it: {_entity_facts(query.task)}\n"
                "The player asks yes/no questions. Answer truthfully from these facts and "
                "common knowledge with Yes, No or Maybe (Maybe only when it is unclear). "
                "Never name the entity or give hints beyond the answer. "
                'Reply with JSON only: {"answer": "Yes"} or {"answer": "No"} or {"answer": "Maybe"}.'
            )
            user = f"Dialogue so far:\n{dialogue_text(query)}\n\nQuestion: {query.payload['question']}"
        else:
            system = (
                "You judge a guessing game. The hidden entity: "
                f"{_entity_facts(query.task)}\nThe guess is correct only if it names this "
                "entity or a clear synonym of it, and nothing else: a broader category, a list of "
                "several guesses (however formatted), or a guess that adds other candidates is "
                'wrong. Reply with JSON only: {"correct": true} or {"correct": false}.'
            )
            user = f"Guess: {query.payload['guess']}"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def parse_llm(self, query: UserQuery, text: str) -> dict[str, Any]:
        if query.name == "yes_no":
            obj = parse_json_object(text, {"answer": str})
            answer = obj["answer"].strip().strip(".!").capitalize()
            if answer not in ANSWERS:
                raise ValueError(f"answer must be Yes, No or Maybe, got {obj['answer']!r}")
            return {"answer": answer}
        obj = parse_json_object(text, {"correct": bool})
        return {"correct": obj["correct"]}

    def hidden_facts(self, query: UserQuery, reply: dict[str, Any]) -> list[str]:
        """The leak guard's facts: the entity's title and synonyms, always."""
        t = query.task
        return [str(t.get("title") or ""), *(str(s) for s in t.get("synonyms") or [])]

    def reply_schema(self, query: UserQuery) -> dict[str, Any]:
        """The JSON reply of each query, for structured output (``parse_llm`` reads it)."""
        if query.name == "yes_no":
            return reply_object(answer={"type": "string", "enum": list(ANSWERS)})
        return reply_object(correct={"type": "boolean"})


class TelepathyGym(Env):
    """Guess the entity the simulated user is thinking of by asking yes/no questions.

    Description:
        The user thinks of an entity (an animal, object, place, person, ...) and tells the
        agent only its broad kind. The agent narrows it down with yes/no questions and guesses.

    Actions:
        ``[action] question``: a yes/no question; the user answers Yes, No or Maybe, never
        naming the entity. ``[answer] guess``: names the entity. ``[search]`` is not used.

    Observation:
        The user's reply (``Yes.``/``No.``/``Maybe.``) or the verdict on a guess.

    Reward:
        A guess scores 1.0 if it names the entity or a clear synonym, else 0 (no partial
        credit); the turn reward is the gain over the best score so far, so at most 1.0.

    Episode end:
        Terminated by a correct guess or ``[finish]``; truncated after
        ``max_turns`` (16, UserRL's rollout cap).

    Version history:
        v0: initial version, following UserRL's TelepathyGym.
    """

    id = "userrl/Telepathy-v0"
    data_name: ClassVar[str] = "telepathy"
    user_spec = TelepathyUserSpec()

    @classmethod
    def validate_task(cls, task: Task) -> None:
        for key in ("title", "category", "description"):
            if not isinstance(task.get(key), str) or not task[key].strip():
                raise ValueError(f"{key!r} must be a non-empty string")
        if not isinstance(task.get("synonyms", []), list):
            raise ValueError("'synonyms' must be a list of strings")
        if not isinstance(task.get("attributes", {}), dict):
            raise ValueError("'attributes' must be an object of booleans")
        if not isinstance(task.get("tags", []), list):
            raise ValueError("'tags' must be a list of strings")

    def system_prompt(self, task: Task) -> str:
        return (
            "TelepathyGym is a guessing game. The user is thinking of an entity and tells you "
            "what kind of thing it is. Find out what it is.\n"
            "Actions:\n"
            "- [action] question : ask one yes/no question; the user answers Yes, No or Maybe.\n"
            "- [answer] guess : name the entity. A correct guess wins and ends the game.\n"
            "- [finish] : give up and end the episode.\n"
            "Ask a few questions that split the possibilities, then guess. You may guess "
            "several times, one entity per guess."
        )

    async def on_reset(self, task: Task, seed: int) -> tuple[State, str, dict[str, Any]]:
        obs = f"{task['description']}\nTry to find out what I am thinking of!"
        return {"best": 0.0, "dialogue": [{"role": "user", "content": obs}]}, obs, {"task_id": task["id"]}

    async def on_step(self, state: State, action: Action, user: SimUser) -> StepResult:
        task = state["task"]
        dialogue = state["dialogue"]
        dialogue.append({"role": "assistant", "content": action.text})
        if action.choice == "search":
            obs = "There is nothing to search here: ask yes/no questions or guess."
            reward, info = 0.0, {}
        elif action.choice == "action":
            reply = await user.ask(
                UserQuery(self.id, "respond", "yes_no", {"question": action.content}, task, history_for_query(state))
            )
            obs = f"{reply['answer']}."
            reward, info = 0.0, {"user_answer": reply["answer"]}
        else:
            verdict = await user.ask(
                UserQuery(self.id, "judge", "judge_guess", {"guess": action.content}, task, history_for_query(state))
            )
            score = 1.0 if verdict["correct"] else 0.0
            reward, state["best"] = gain_over_best(state["best"], score)
            obs = (
                "Correct! That is exactly what I was thinking of."
                if score
                else "No, that is not what I am thinking of."
            )
            info = {"score": score}
        dialogue.append({"role": "user", "content": obs})
        done = bool(info.get("score"))
        return StepResult(state, obs, reward, done, False, info)

    @classmethod
    def expert_action(cls, task: Task, messages: list[dict[str, str]], max_turns: int = PAPER_MAX_TURNS) -> str:
        """Confirm the kind, confirm one distinctive trait, then name the entity."""
        k = assistant_turns(messages)
        if k == 0:
            return f"[action] Is it {rules.kind_phrase(task)}?"
        tags = [t for t in task.get("tags", []) if t.strip()]
        if k == 1 and tags:
            return f"[action] Is it associated with {tags[0]}?"
        return f"[answer] {task['title']}"
