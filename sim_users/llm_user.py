"""What every LLM user/judge backend shares: build the prompt, parse, re-ask on malformed output.

A backend supplies only ``generate(messages) -> text``; :func:`ask_llm_user` asks the gym's
:class:`~userrl.sim_users.base.UserSpec` for the messages, parses the reply with
``spec.parse_llm`` and, when that raises ``ValueError``, appends the bad reply and a correction
and asks again, at most ``max_reasks`` times. Whatever still fails becomes a
:class:`~userrl.errors.UserError`; malformed text is never passed on as the user's words.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from userrl.errors import UserError, boundary
from userrl.sim_users.base import UserQuery, UserSpec

__all__ = ["CORRECTION", "Generate", "SpecLookup", "ask_llm_user", "default_spec_lookup"]

log = structlog.get_logger(__name__)

Generate = Callable[[list[dict[str, str]]], Awaitable[str]]
SpecLookup = Callable[[str], UserSpec]

CORRECTION = ("Your previous reply could not be used ({error}). Reply again, following the "
              "required format exactly and writing nothing else.")


def default_spec_lookup(env_id: str) -> UserSpec:
    """The registered gym's ``user_spec`` (imported lazily: envs import sim_users)."""
    from userrl.envs.registry import get_env_class

    return get_env_class(env_id).user_spec


async def ask_llm_user(query: UserQuery, spec_lookup: SpecLookup, generate: Generate, *,
                       max_reasks: int = 2) -> dict[str, Any]:
    """Answer ``query`` with an LLM; see the module docstring. Raises ``UserError``."""
    with boundary(UserError):
        spec = spec_lookup(query.env_id)
        messages = list(spec.llm_messages(query))
    error = ""
    for attempt in range(max_reasks + 1):
        with boundary(UserError):
            text = await generate(messages)
        try:
            return spec.parse_llm(query, text)
        except ValueError as exc:
            error = str(exc) or type(exc).__name__
            log.warning("user.malformed_reply", env_id=query.env_id, name=query.name,
                        attempt=attempt + 1, error=error, reply=text[:200])
            messages = [*messages, {"role": "assistant", "content": text},
                        {"role": "user", "content": CORRECTION.format(error=error)}]
        except Exception as exc:  # a parser bug still fails only this rollout
            raise UserError(f"{query.env_id}: parse_llm raised "
                            f"{type(exc).__name__}: {exc}") from exc
    raise UserError(f"{query.env_id} {query.kind}/{query.name}: malformed reply after "
                    f"{max_reasks + 1} attempts: {error}", transient=False)
