"""Who answered a user turn, and how the answer went.

Every user reply and judge verdict is stamped with the simulator that wrote it, and the stamp
travels with the reply (``UserReply.by``) onto the turn it belongs to (the trajectory's
``turns[i]["users"]``, the episode log's ``by`` field, ``userrl episodes show``, the web view)::

    scripted                         the gyms' deterministic rules
    openai:Qwen/Qwen3-32B@v2         backend:model@version (no @version when none is known)
    hf:user-model@3f9a0c1d2e         a local model; its version defaults to a weights fingerprint
    human:alice                      a person in the user's seat (the web view)

A :class:`CallRecord` counts what happened inside one user/judge call: how many generations the
model was asked for, how many replies the gym's parser rejected or were empty, how often the leak
guard tripped. :func:`~userrl.sim_users.llm_user.ask_llm_user` fills the record that the user
worker opened for the request (a context variable, so backends keep their ``ask(query)``
signature); the worker sends it with the reply as ``UserReply.stats``, and the learner turns
them into the simulator-health metrics of every step (:mod:`userrl.learner.sim_health`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "HUMAN",
    "SCRIPTED",
    "CallRecord",
    "current_record",
    "human_stamp",
    "model_fingerprint",
    "recording",
    "simulator_stamp",
    "turn_user",
]

SCRIPTED = "scripted"
#: prefix of a person's stamp
HUMAN = "human:"
_WHO = re.compile(r"[A-Za-z0-9_.@-]{1,40}")


@dataclass(slots=True)
class CallRecord:
    """What happened inside one user/judge call (all zero for scripted users)."""

    attempts: int = 0  #: generations the model was asked for (re-asks included)
    malformed: int = 0  #: replies the gym's parser rejected
    empty: int = 0  #: replies with no text
    leaks: int = 0  #: replies the leak guard tripped on
    redacted: bool = False  #: the last reply still leaked and was redacted
    shared: int = 0  #: generations taken from an identical greedy prompt's (:mod:`userrl.sim_users.shared`)

    def stats(self, ms: float) -> dict[str, Any]:
        """The record as ``UserReply.stats`` (``ms``: the call's latency)."""
        return {
            "ms": round(ms, 1),
            "attempts": self.attempts,
            "malformed": self.malformed,
            "empty": self.empty,
            "leaks": self.leaks,
            "redacted": self.redacted,
            "shared": self.shared,
        }


_CURRENT: ContextVar[CallRecord | None] = ContextVar("userrl_user_call", default=None)


def current_record() -> CallRecord | None:
    """The record of the call being answered in this task (None outside a user worker)."""
    return _CURRENT.get()


@contextmanager
def recording() -> Iterator[CallRecord]:
    """Open a fresh record for one call (each request runs in its own task, so concurrent
    calls never share one)."""
    rec = CallRecord()
    token = _CURRENT.set(rec)
    try:
        yield rec
    finally:
        _CURRENT.reset(token)


def simulator_stamp(backend: str, model: str = "", version: str = "") -> str:
    """``scripted``, or ``backend:model`` with ``@version`` when a version is known."""
    if backend == SCRIPTED:
        return SCRIPTED
    return f"{backend}:{model}" + (f"@{version}" if version else "")


def human_stamp(who: str) -> str:
    """``human:<who>``; ``who`` is 1-40 characters of A-Z a-z 0-9 _ . @ - (a name, not prose)."""
    if not _WHO.fullmatch(who):
        raise ValueError(f"a name in the user's seat must be 1-40 characters of A-Z a-z 0-9 _ . @ -, got {who!r}")
    return HUMAN + who


def model_fingerprint(path: str | Path) -> str:
    """A short version of a local model folder: a hash of its config and of each weight file's
    name, size and modification time (cheap: the weights are not read), so retrained weights
    saved to the same folder get a new stamp. '' when ``path`` is not a folder."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return ""
    h = hashlib.sha256()
    config = folder / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    for f in sorted(folder.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".pt") and f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:10]


def turn_user(hop: int, kind: str, name: str, by: str = "", stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """One user/judge call as recorded on its turn (``turns[i]["users"]``)."""
    return {"hop": int(hop), "kind": kind, "name": name, "by": by, **(stats or {})}
