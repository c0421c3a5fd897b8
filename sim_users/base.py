"""The simulated-user interface that env code awaits.

Env code asks its user through one awaitable, whatever transport carries it; the query's
``kind`` says whether the user speaks or judges, and the reply is a gym-specific dict::

    reply = await user.ask(UserQuery(env_id, "respond", "yes_no", payload, task))  # e.g. {"answer": "yes"}
    verdict = await user.ask(UserQuery(env_id, "judge", "judge_guess", payload, task))  # e.g. {"correct": True}

A :class:`UserQuery` is a plain, msgpack-serializable value: the gym, the hidden task data the
user knows, a gym-specific query ``name`` and its ``payload``. Transports: in-process
(:class:`userrl.envs.users.InProcessUser`, for the Gymnasium adapter and notebooks) and over
the bus (``userrl.envs.worker``: the query goes to the ``user`` stream and the reply is stored
under ``(episode, seq, hop)``). Backends (scripted, openai, hf) turn a query into a reply dict
using the gym's :class:`UserSpec`, which the gym class carries (``Env.user_spec``). Users are
never trained: nothing here produces policy tokens.

This module is a contract shared by gyms and user backends: it imports nothing of ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol, runtime_checkable

QueryKind = Literal["respond", "judge"]


@dataclass(frozen=True, slots=True)
class UserQuery:
    """One question to the simulated user or judge.

    Fields:
        env_id: the gym asking (``userrl/Telepathy-v0``); selects the :class:`UserSpec`.
        kind: ``respond`` (the user speaks) or ``judge`` (a verdict on the agent's answer).
        name: gym-specific query name (``"yes_no"``, ``"judge_answer"``, ...).
        payload: what the gym passes for this query (the agent's question, answer, ...).
        task: the hidden task data the user/judge knows (never shown to the policy).
        history: the dialogue so far as chat messages, for LLM users.
    """

    env_id: str
    kind: QueryKind
    name: str
    payload: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        # shallow: the nested values are plain data already (asdict would deep-copy the task)
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UserQuery:
        kind = d.get("kind")
        if kind not in ("respond", "judge"):
            raise ValueError(f"UserQuery.kind must be 'respond' or 'judge', got {kind!r}")
        return cls(
            env_id=str(d["env_id"]),
            kind=kind,
            name=str(d["name"]),
            payload=dict(d.get("payload") or {}),
            task=dict(d.get("task") or {}),
            history=list(d.get("history") or []),
        )


class UserSpec(Protocol):
    """What a gym supplies so any backend can play its user and judge: its one home for the
    user's scripted rules, the LLM prompt and its parsing, and the leak guard's facts.

    A spec may also define ``hidden_facts(query, reply) -> list[str]``: the hidden task facts
    that ``reply`` must not state verbatim (see :mod:`userrl.sim_users.guards`); without it an
    LLM user's replies are not guarded.

    And ``reply_schema(query) -> dict | None``: the JSON schema of the reply ``parse_llm``
    expects (built with :func:`reply_object`), which the ``openai`` backend sends as structured
    output so the server can only generate replies of that shape; without it (or for None) the
    reply is free text.
    """

    def scripted(self, query: UserQuery) -> dict[str, Any]:
        """Deterministic reply computed from the hidden task data."""

    def llm_messages(self, query: UserQuery) -> list[dict[str, str]]:
        """Chat messages (persona + hidden facts + instructions) for an LLM user/judge."""

    def parse_llm(self, query: UserQuery, text: str) -> dict[str, Any]:
        """Turn an LLM's reply into the reply dict; raise ValueError on malformed output."""


def reply_object(**properties: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a reply object with exactly ``properties``, every one required.

    Stay within what both OpenAI's strict structured outputs and vLLM's grammars take: ``type``,
    ``enum``, ``properties``, ``items``, ``minItems``/``maxItems``; no string lengths or formats
    (OpenAI rejects the whole request for a keyword it does not support).
    """
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


@runtime_checkable
class UserBackend(Protocol):
    """Turns queries into replies (scripted rules, an OpenAI-compatible server, a local model)."""

    async def ask(self, query: UserQuery) -> dict[str, Any]: ...


class SimUser(Protocol):
    """What env code awaits: ``ask``, for both kinds of query (see the module docstring)."""

    async def ask(self, query: UserQuery) -> dict[str, Any]: ...
