"""What every LLM user/judge backend shares: build the prompt, parse, re-ask on malformed output.

A backend supplies only ``generate(messages) -> text``; :func:`ask_llm_user` asks the gym's
:class:`~userrl.sim_users.base.UserSpec` for the messages, parses the reply with
``spec.parse_llm`` and, when that raises ``ValueError``, appends the bad reply and a correction
and asks again, at most ``max_reasks`` times. An empty reply (no text, or a user reply whose
``reply`` text is blank) is re-asked the same way. What still fails is a typed error:
:class:`~userrl.errors.UserEmptyError` when the last reply was empty, else
:class:`~userrl.errors.UserMalformedError` (both ``UserError``s, not transient); malformed text
is never passed on as the user's words, and the episode fails with that kind on the record.
Each generation, rejected reply and leak is counted on the call's
:class:`~userrl.sim_users.stamp.CallRecord` when the user worker opened one.

The leak guard (:mod:`userrl.sim_users.guards`) checks each parsed reply: a reply that states a
hidden task fact verbatim, where the gym does not allow it, is re-asked the same way (the
correction names what must not be said), and the last attempt's leaked words are redacted.

Structured output: :func:`reply_schema` is the JSON schema a gym declares for a query's reply
(``UserSpec.reply_schema``), which a backend may hand to its server so that only replies of that
shape can be generated; :func:`schema_name` names it. The reply still goes through ``parse_llm``
(a schema cannot say everything, e.g. that a free-text field was cut at ``max_tokens``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from userrl.envs.registry import user_spec
from userrl.errors import UserEmptyError, UserError, UserMalformedError, boundary
from userrl.sim_users.base import UserQuery, UserSpec
from userrl.sim_users.guards import redact_reply, reply_leaks
from userrl.sim_users.stamp import CallRecord, current_record

__all__ = [
    "CORRECTION",
    "LEAK_CORRECTION",
    "Generate",
    "SpecLookup",
    "ask_llm_user",
    "default_spec_lookup",
    "reply_schema",
    "schema_name",
]

log = structlog.get_logger(__name__)

Generate = Callable[[list[dict[str, str]]], Awaitable[str]]
SpecLookup = Callable[[str], UserSpec]

CORRECTION = (
    "Your previous reply could not be used ({error}). Reply again, following the "
    "required format exactly and writing nothing else."
)
LEAK_CORRECTION = (
    "Your previous reply revealed hidden information you must not state: {facts}. "
    "Reply again, in the same format, without revealing it."
)


#: the spec registered with the gym of ``env_id`` (``Env.user_spec``)
default_spec_lookup: SpecLookup = user_spec


def reply_schema(query: UserQuery, spec_lookup: SpecLookup) -> dict[str, Any] | None:
    """The JSON schema the gym of ``query`` declares for its reply; None when it declares none.
    Raises ``UserError`` for an unknown gym or a schema that is not a JSON object."""
    with boundary(UserError):
        spec = spec_lookup(query.env_id)
        method = getattr(spec, "reply_schema", None)
        schema = method(query) if callable(method) else None
    if schema is not None and not isinstance(schema, dict):
        raise UserError(f"{query.env_id}: reply_schema returned {type(schema).__name__}, not a dict")
    return schema


def schema_name(query: UserQuery) -> str:
    """``Telepathy-v0_judge_guess``: gym and query, in the characters OpenAI allows a schema name."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{query.env_id.rsplit('/', 1)[-1]}_{query.name}")[:64]


async def ask_llm_user(
    query: UserQuery, spec_lookup: SpecLookup, generate: Generate, *, max_reasks: int = 2, leak_guard: bool = True
) -> dict[str, Any]:
    """Answer ``query`` with an LLM; see the module docstring. Raises ``UserError``."""
    with boundary(UserError):
        spec = spec_lookup(query.env_id)
        messages = list(spec.llm_messages(query))
    error, empty = "", False
    rec = current_record() or CallRecord()
    for attempt in range(max_reasks + 1):
        rec.attempts += 1
        with boundary(UserError):
            text = await generate(messages)
        try:
            if not text.strip():
                raise _Empty("the reply was empty")
            reply = spec.parse_llm(query, text)
            if _blank_reply(query, reply):
                raise _Empty("the reply's text was empty")
        except ValueError as exc:
            error, empty = str(exc) or type(exc).__name__, isinstance(exc, _Empty)
            rec.empty += empty
            rec.malformed += not empty
            log.warning(
                "user.malformed_reply",
                env_id=query.env_id,
                name=query.name,
                attempt=attempt + 1,
                error=error,
                reply=text[:200],
            )
            messages = [
                *messages,
                {"role": "assistant", "content": text},
                {"role": "user", "content": CORRECTION.format(error=error)},
            ]
            continue
        except Exception as exc:  # a parser bug still fails only this rollout
            raise UserError(f"{query.env_id}: parse_llm raised {type(exc).__name__}: {exc}") from exc
        if not leak_guard:
            return reply
        with boundary(UserError):
            leaked = reply_leaks(query, reply, spec)
        if not leaked:
            return reply
        rec.leaks += 1
        if attempt == max_reasks:
            log.warning("user.leak_redacted", env_id=query.env_id, name=query.name, n_facts=len(leaked))
            rec.redacted = True
            return redact_reply(reply, leaked)
        log.warning("user.leak", env_id=query.env_id, name=query.name, attempt=attempt + 1, n_facts=len(leaked))
        facts = "; ".join(f'"{f}"' for f in leaked)
        messages = [
            *messages,
            {"role": "assistant", "content": text},
            {"role": "user", "content": LEAK_CORRECTION.format(facts=facts)},
        ]
    what = "empty" if empty else "malformed"
    cls = UserEmptyError if empty else UserMalformedError
    raise cls(f"{query.env_id} {query.kind}/{query.name}: {what} reply after {max_reasks + 1} attempts: {error}")


class _Empty(ValueError):
    """An empty reply (re-asked like a malformed one, reported as empty)."""


def _blank_reply(query: UserQuery, reply: dict[str, Any]) -> bool:
    """A user's reply (not a verdict) whose words are blank: the user said nothing."""
    text = reply.get("reply", reply.get("text")) if query.kind == "respond" else None
    return isinstance(text, str) and not text.strip()
