"""The leak guard: an LLM user must not state hidden task facts verbatim unless the gym allows it.

A simulated user knows the hidden task (the entity in TelepathyGym, the full story in TurtleGym,
the missing details in IntentionGym); a model playing it sometimes just says it. The guard
checks every string of a parsed reply against the facts the gym keeps hidden *for this reply*,
which the gym's user spec names in ``hidden_facts(query, reply) -> list[str]``, next to its
scripted rules and LLM prompt (so a gym registered under a new id keeps its guard). A spec
without that method is not guarded.

"Verbatim" is judged on words (case, punctuation and spacing ignored): a fact of at most
``window`` words leaks when all its words appear in a row; a longer fact leaks when any
``window`` consecutive words of it do. :func:`~userrl.sim_users.llm_user.ask_llm_user` re-asks
the model once the guard trips (with a correction naming what it must not say) and, when the
re-asks are used up, redacts the leaked words (``[…]``) rather than pass them on::

    leaked = reply_leaks(query, reply, spec)      # [] when clean
    reply = redact_reply(reply, leaked)           # the same reply with leaked words blanked

Scripted users are not guarded: their rules never state hidden facts they should not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from userrl.sim_users.base import UserQuery, UserSpec

__all__ = ["REDACTED", "WINDOW", "find_leaks", "hidden_facts", "redact", "redact_reply", "reply_leaks", "words"]

#: consecutive words of a long fact that count as stating it verbatim
WINDOW = 6
#: what replaces leaked words
REDACTED = "[…]"

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def words(text: str) -> list[str]:
    """The words of ``text``, case-folded (punctuation and spacing dropped)."""
    return [m.group().casefold() for m in _WORD.finditer(text)]


def hidden_facts(query: UserQuery, reply: dict[str, Any], spec: UserSpec) -> list[str]:
    """The facts ``reply`` must not state: the spec's ``hidden_facts`` ([] without one), less
    facts too short to be a leak of anything (under three letters)."""
    hook = getattr(spec, "hidden_facts", None)
    facts = hook(query, reply) if callable(hook) else []
    return [f for f in (str(x) for x in facts) if len("".join(words(f))) >= 3]


def _phrases(facts: Iterable[str], window: int) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for fact in facts:
        w = words(fact)
        if not w:
            continue
        if len(w) <= window:
            out.append(tuple(w))
        else:
            out += [tuple(w[i : i + window]) for i in range(len(w) - window + 1)]
    return out


def _covered(tokens: list[str], phrases: list[tuple[str, ...]]) -> list[bool]:
    """Per token: whether it is part of an occurrence of some phrase."""
    cov = [False] * len(tokens)
    by_first: dict[str, list[tuple[str, ...]]] = {}
    for p in phrases:
        by_first.setdefault(p[0], []).append(p)
    for i, tok in enumerate(tokens):
        for p in by_first.get(tok, ()):
            if tuple(tokens[i : i + len(p)]) == p:
                for j in range(i, i + len(p)):
                    cov[j] = True
    return cov


def find_leaks(text: str, facts: Iterable[str], *, window: int = WINDOW) -> list[str]:
    """The facts that ``text`` states verbatim (in the words sense of the module docstring)."""
    tokens = words(text)
    leaked = []
    for fact in facts:
        if any(_covered(tokens, _phrases([fact], window))):
            leaked.append(fact)
    return leaked


def redact(text: str, facts: Iterable[str], *, window: int = WINDOW, mark: str = REDACTED) -> str:
    """``text`` with every verbatim occurrence of a fact (or a leaked window of it) replaced by
    ``mark``; adjacent leaked words become one mark."""
    matches = list(_WORD.finditer(text))
    cov = _covered([m.group().casefold() for m in matches], _phrases(facts, window))
    out, pos, i = [], 0, 0
    while i < len(matches):
        if not cov[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(matches) and cov[j + 1]:
            j += 1
        out += [text[pos : matches[i].start()], mark]
        pos = matches[j].end()
        i = j + 1
    out.append(text[pos:])
    return "".join(out)


def strings_in(value: Any) -> Iterable[str]:
    """Every string inside nested dicts, lists and tuples (a task's hidden text)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings_in(v)


def reply_leaks(query: UserQuery, reply: dict[str, Any], spec: UserSpec, *, window: int = WINDOW) -> list[str]:
    """The hidden facts that some string of ``reply`` states verbatim ([] when clean)."""
    facts = hidden_facts(query, reply, spec)
    if not facts:
        return []
    text = "\n".join(strings_in(reply))
    return find_leaks(text, facts, window=window) if text else []


def redact_reply(reply: dict[str, Any], facts: Iterable[str], *, window: int = WINDOW) -> dict[str, Any]:
    """A copy of ``reply`` whose strings have ``facts`` redacted (numbers, bools, keys untouched)."""
    facts = list(facts)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return redact(v, facts, window=window)
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(reply) if facts else dict(reply)
