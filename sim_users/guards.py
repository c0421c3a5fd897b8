"""The leak guard: an LLM user must not state hidden task facts verbatim unless the gym allows it.

A simulated user knows the hidden task (the entity in TelepathyGym, the full story in TurtleGym,
the missing details in IntentionGym); a model playing it sometimes just says it. The guard
checks every string of a parsed reply against the facts the gym keeps hidden *for this reply*:

- ``userrl/Telepathy-v0``: the entity's title and synonyms, always;
- ``userrl/Turtle-v0``: the full story (``bottom``) and the checklist statements, always;
- ``userrl/Intention-v0``: the answers of the missing details that are still hidden and that
  this reply does not uncover (uncovering a detail *is* telling its answer; that is allowed);
- ``userrl/Travel-v0``: the statements of the preferences neither revealed before nor by this
  reply (it may reveal one: UserRL's user elicits at most one preference per utterance);
- any gym whose ``user_spec`` defines ``hidden_facts(query, reply) -> list[str]``: those (this
  hook wins over the table above); other gyms: nothing.

"Verbatim" is judged on words (case, punctuation and spacing ignored): a fact of at most
``window`` words leaks when all its words appear in a row; a longer fact leaks when any
``window`` consecutive words of it do. :func:`~userrl.sim_users.llm_user.ask_llm_user` re-asks
the model once the guard trips (with a correction naming what it must not say) and, when the
re-asks are used up, redacts the leaked words (``[…]``) rather than pass them on::

    leaked = reply_leaks(query, reply)            # [] when clean
    reply = redact_reply(reply, leaked)           # the same reply with leaked words blanked

Scripted users are not guarded: their rules never state hidden facts they should not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from userrl.sim_users.base import UserQuery

__all__ = ["REDACTED", "WINDOW", "find_leaks", "hidden_facts", "redact", "redact_reply", "reply_leaks"]

#: consecutive words of a long fact that count as stating it verbatim
WINDOW = 6
#: what replaces leaked words
REDACTED = "[…]"

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

FactRule = Callable[[UserQuery, dict[str, Any]], list[str]]


def _telepathy(query: UserQuery, reply: dict[str, Any]) -> list[str]:
    t = query.task
    return [str(t.get("title") or ""), *(str(s) for s in t.get("synonyms") or [])]


def _turtle(query: UserQuery, reply: dict[str, Any]) -> list[str]:
    t = query.task
    return [str(t.get("bottom") or ""), *(str(kp.get("statement") or "") for kp in t.get("key_points") or [])]


def _intention(query: UserQuery, reply: dict[str, Any]) -> list[str]:
    details = query.task.get("missing_details") or []
    allowed = {int(i) for i in reply.get("uncovered") or [] if isinstance(i, int)}
    hidden = [int(i) for i in query.payload.get("remaining") or [] if int(i) not in allowed]
    facts = [str(details[i].get("answer") or "") for i in hidden if 0 <= i < len(details)]
    # one short word ("yes", "two") is too common to be a leak of anything
    return [f for f in facts if len(_words(f)) > 1 or len(f.strip()) > 3]


def _travel(query: UserQuery, reply: dict[str, Any]) -> list[str]:
    # one preference per utterance: the ones this reply does not reveal must not be said
    prefs = query.task.get("preferences") or []
    allowed = {int(i) for i in reply.get("reveal") or [] if isinstance(i, int)}
    allowed |= {int(i) for i in query.payload.get("revealed") or []}
    return [str(p.get("statement") or "") for i, p in enumerate(prefs) if i not in allowed]


#: per-gym hidden facts (see the module docstring); a spec's ``hidden_facts`` wins
RULES: dict[str, FactRule] = {
    "userrl/Telepathy-v0": _telepathy,
    "userrl/Turtle-v0": _turtle,
    "userrl/Intention-v0": _intention,
    "userrl/Travel-v0": _travel,
}


def _words(text: str) -> list[str]:
    return [m.group().casefold() for m in _WORD.finditer(text)]


def hidden_facts(query: UserQuery, reply: dict[str, Any], spec: Any = None) -> list[str]:
    """The facts ``reply`` must not state: the spec's ``hidden_facts`` hook, else :data:`RULES`."""
    hook = getattr(spec, "hidden_facts", None)
    facts = hook(query, reply) if callable(hook) else RULES.get(query.env_id, lambda q, r: [])(query, reply)
    return [f for f in (str(x) for x in facts) if len("".join(_words(f))) >= 3]


def _phrases(facts: Iterable[str], window: int) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for fact in facts:
        w = _words(fact)
        if not w:
            continue
        if len(w) <= window:
            out.append(tuple(w))
        else:
            out += [tuple(w[i:i + window]) for i in range(len(w) - window + 1)]
    return out


def _covered(tokens: list[str], phrases: list[tuple[str, ...]]) -> list[bool]:
    """Per token: whether it is part of an occurrence of some phrase."""
    cov = [False] * len(tokens)
    by_first: dict[str, list[tuple[str, ...]]] = {}
    for p in phrases:
        by_first.setdefault(p[0], []).append(p)
    for i, tok in enumerate(tokens):
        for p in by_first.get(tok, ()):
            if tuple(tokens[i:i + len(p)]) == p:
                for j in range(i, i + len(p)):
                    cov[j] = True
    return cov


def find_leaks(text: str, facts: Iterable[str], *, window: int = WINDOW) -> list[str]:
    """The facts that ``text`` states verbatim (in the words sense of the module docstring)."""
    tokens = _words(text)
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
        out += [text[pos:matches[i].start()], mark]
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


def reply_leaks(query: UserQuery, reply: dict[str, Any], spec: Any = None, *, window: int = WINDOW) -> list[str]:
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
