"""User backends for the simulator tests: model-like users without a model server.

Each goes through :func:`~userrl.sim_users.llm_user.ask_llm_user` (prompt, parse, re-asks,
leak guard, the call's record) exactly as the openai and hf backends do; only ``generate`` is
scripted: it answers what the gym's scripted user would, as the JSON the prompt asks for, after
``bad_first`` malformed replies, or always ``always`` (e.g. ``""`` for an empty-reply model).
"""

from __future__ import annotations

import json
from typing import Any

from userrl.envs.registry import user_spec
from userrl.sim_users.base import UserQuery
from userrl.sim_users.llm_user import ask_llm_user, default_spec_lookup


class ScriptedAsLLM:
    """A user model that answers like the scripted user, in the LLM reply format."""

    def __init__(self, *, bad_first: int = 0, always: str | None = None, hang_up: bool = False) -> None:
        self.bad_first = bad_first
        self.always = always
        self.hang_up = hang_up
        self.calls = 0

    def text(self, query: UserQuery, attempt: int) -> str:
        if self.always is not None:
            return self.always
        if attempt < self.bad_first:
            return "Sure! I think the answer is probably yes, but I am not certain."
        reply = user_spec(query.env_id).scripted(query)
        if query.name in ("grade", "judge_story"):
            reply = {"judgments": reply["judgments"]}
        if self.hang_up and "done" in reply:
            reply = {**reply, "reply": "This is taking too long, goodbye.", "done": True}
        return json.dumps(reply)

    async def ask(self, query: UserQuery) -> dict[str, Any]:
        self.calls += 1
        attempt = 0

        async def generate(messages: list[dict[str, str]]) -> str:
            nonlocal attempt
            attempt += 1
            return self.text(query, attempt - 1)

        return await ask_llm_user(query, default_spec_lookup, generate)
