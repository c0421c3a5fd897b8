"""Episode records kept by env workers, and the replaying user that makes steps re-executable.

An episode's whole progress lives in one msgpack blob in the ``state:{episode}`` hash, written
in the same atomic commit as the messages a step sends. A step that needs the simulated user
runs against a :class:`ReplayUser`: replies already stored for ``(episode, seq, hop)`` are
returned in order; the first missing one raises :class:`NeedReply`, the worker commits the
request, and when the reply arrives the step is re-executed from the same snapshot with one
more stored reply. Gyms are deterministic given (state, action, replies), so re-executing is
exact; nothing is ever asked twice and nothing waits on a reply sent to a dead worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import msgpack

from userrl.errors import EnvError
from userrl.sim_users.base import UserMixin, UserQuery


def feedback_text(observation: str, reward: float, show_reward: bool = True) -> str:
    """What the policy sees after a step: the gym's feedback and, in training, ``Reward: r``."""
    return observation + (f"\nReward: {reward:g}" if show_reward else "")


class NeedReply(Exception):  # noqa: N818 - control flow, not an error
    """Raised by :class:`ReplayUser` when a step asks for a reply that is not stored yet."""

    def __init__(self, hop: int, query: UserQuery) -> None:
        super().__init__(f"reply for hop {hop} not stored yet")
        self.hop = hop
        self.query = query


class ReplayUser(UserMixin):
    """Answers from stored replies, in order; raises NeedReply at the first missing hop."""

    def __init__(self, replies: dict[int, dict[str, Any]], history: list[dict[str, Any]] | None = None) -> None:
        self.replies = replies
        self.history = history or []
        self.hop = 0

    async def ask(self, query: UserQuery) -> dict[str, Any]:
        self.hop += 1
        if not query.history and self.history:
            query = UserQuery(env_id=query.env_id, kind=query.kind, name=query.name, payload=query.payload,
                              task=query.task, history=self.history)
        reply = self.replies.get(self.hop)
        if reply is None:
            raise NeedReply(self.hop, query)
        return reply


@dataclass
class Episode:
    """Everything an env worker needs to continue an episode (msgpack-serializable)."""

    episode_id: str
    group_id: str
    env_id: str
    task_id: str
    env_state: dict[str, Any]
    messages: list[dict[str, Any]]
    seq: int = 0  #: the turn whose policy reply is expected next
    prompt_ids: list[int] | None = None  #: token ids of messages[:n_seen] plus the last generation
    n_seen: int = 0
    turns: list[dict[str, Any]] = field(default_factory=list)
    pending: dict[str, Any] | None = None  #: the policy reply of ``seq`` while user replies are awaited
    sampling: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0
    #: the gym's options from the reset, so every step (and a re-executed one) uses the same gym
    gym_options: dict[str, Any] = field(default_factory=dict)

    def pack(self) -> bytes:
        # a shallow dict: msgpack walks the nested lists itself (asdict's deep copy is the
        # env worker's hottest line otherwise)
        return msgpack.packb({f.name: getattr(self, f.name) for f in fields(self)}, use_bin_type=True)

    @classmethod
    def unpack(cls, raw: bytes) -> Episode:
        try:
            return cls(**msgpack.unpackb(raw, raw=False))
        except Exception as exc:
            raise EnvError(f"corrupt episode snapshot: {type(exc).__name__}: {exc}") from exc
