"""The records a turn's data travels in, from the policy's sample to the learner's sequence.

One vocabulary for every role: the env worker builds a :class:`TurnRecord` from the policy's
reply and the gym's step, keeps it in the :class:`EpisodeSnapshot` until the episode ends, sends
it inside the ``trajectory`` message; the reward worker puts the same records, with their
advantages, in a :class:`ScoredTrajectory`; the learner assembles its sequence from them. The
token ids, logprobs and policy version change form once (the policy's output becomes a record)
and are never copied field by field again.

Each record reads and writes the msgpack map the bus has always carried (``to_wire`` /
``from_wire``: same keys, same value types), so live episodes, archives and the web view read
the same. A malformed map raises :class:`~userrl.errors.MessageError` naming the field. Keys a
record does not know are kept in ``extra`` and written back: nothing a newer sender adds is lost.

Records are also read-only mappings over their wire keys (``turn["reward"]``, ``item.get("meta")``),
for code written against the maps; new code reads the attributes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from userrl.errors import EnvError, MessageError

__all__ = [
    "EpisodeSnapshot",
    "Generation",
    "SCORED_TURN_KEYS",
    "Record",
    "Sampling",
    "ScoredTrajectory",
    "TurnRecord",
    "scored_trajectories",
    "turn_records",
]


def _where(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# token lists are long and checked on every read of a snapshot: one pass in C (map, set), not a
# Python-level loop per token
_INT = frozenset({int})
_NUMBER = frozenset({int, float})


def _ints(v: Any) -> bool:
    return isinstance(v, list) and set(map(type, v)) <= _INT


def _floats(v: Any) -> bool:
    return isinstance(v, list) and set(map(type, v)) <= _NUMBER


def _list(v: Any) -> bool:
    return isinstance(v, list)


def _map(v: Any) -> bool:
    return isinstance(v, dict)


_DEEP = frozenset({_ints, _floats})  #: the checks that walk a list

_EXPECTED = {
    _str: "a string",
    _bool: "a bool",
    _int: "an int",
    _float: "a number",
    _ints: "a list of ints",
    _floats: "a list of numbers",
    _list: "a list",
    _map: "a map",
}


class Record(Mapping[str, Any]):
    """A record's wire keys as a read-only mapping. Subclasses list ``WIRE``: (wire key,
    attribute, check) in wire order; an attribute that is ``None`` is absent from the wire."""

    __slots__ = ()
    WIRE: ClassVar[tuple[tuple[str, str, Any], ...]] = ()
    REQUIRED: ClassVar[frozenset[str]] = frozenset()
    NULLABLE: ClassVar[frozenset[str]] = frozenset()  #: keys whose None on the wire means "default"
    _BY_KEY: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls._BY_KEY = {key: attr for key, attr, _ in cls.WIRE}

    def to_wire(self) -> dict[str, Any]:
        out = {key: v for key, attr, _ in self.WIRE if (v := getattr(self, attr)) is not None}
        extra: dict[str, Any] = getattr(self, "extra", {})
        return {**out, **extra} if extra else out

    @classmethod
    def wire_fields(cls, data: Any, where: str, deep: bool = True) -> dict[str, Any]:
        """The constructor's keyword arguments from a wire map (checked; ``deep=False`` checks
        that a token list is a list, not each of its items)."""
        name = cls.__name__
        if not isinstance(data, dict):
            raise MessageError(f"{where or name}: expected a {name} map, got {type(data).__name__}")
        missing = cls.REQUIRED - data.keys()
        if missing:
            raise MessageError(f"{where or name}: missing field {sorted(missing)[0]!r}")
        kw: dict[str, Any] = {}
        for key, attr, check in cls.WIRE:
            if key not in data:
                continue
            v = data[key]
            if v is None and key in cls.NULLABLE:
                continue
            if not (check(v) if deep or check not in _DEEP else isinstance(v, list)):
                raise MessageError(f"{_where(where, key)}: expected {_EXPECTED[check]}, got {type(v).__name__}")
            kw[attr] = v
        extra = {k: v for k, v in data.items() if k not in cls._BY_KEY}
        if extra:
            kw["extra"] = extra
        return kw

    # -- the mapping view ---------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        attr = self._BY_KEY.get(key)
        if attr is not None:
            v = getattr(self, attr)
            if v is not None:
                return v
        extra: dict[str, Any] = getattr(self, "extra", {})
        if key in extra:
            return extra[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_wire())

    def __len__(self) -> int:
        return len(self.to_wire())


@dataclass(frozen=True, slots=True)
class Sampling(Record):
    """How the policy samples: what ``reset`` and ``policy_request`` carry as ``sampling``. A
    wire map may leave settings out (``{}``: all defaults); ``seed`` None is left out."""

    WIRE: ClassVar[tuple[tuple[str, str, Any], ...]] = (
        ("temperature", "temperature", _float),
        ("top_p", "top_p", _float),
        ("max_new_tokens", "max_new_tokens", _int),
        ("seed", "seed", _int),
    )
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"seed"})

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @classmethod
    def from_wire(cls, data: Any, where: str = "sampling") -> Sampling:
        kw = cls.wire_fields(data, where)
        if "extra" in kw:
            raise MessageError(f"{where}: unknown settings {sorted(kw['extra'])}")
        try:
            return cls(**kw)
        except ValueError as exc:
            raise MessageError(f"{where}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Generation(Record):
    """The policy's output for one turn, as the env worker holds it while the gym's step waits
    for user replies (the snapshot's ``pending``)."""

    WIRE: ClassVar[tuple[tuple[str, str, Any], ...]] = (
        ("text", "text", _str),
        ("prompt_ids", "prompt_ids", _ints),
        ("token_ids", "token_ids", _ints),
        ("logprobs", "logprobs", _floats),
        ("version", "version", _int),
        ("worker", "worker", _str),
        ("finish_reason", "finish_reason", _str),
    )
    REQUIRED: ClassVar[frozenset[str]] = frozenset({"text"})

    text: str
    prompt_ids: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    version: int = 0  #: the policy version that sampled it
    worker: str = ""  #: the policy worker (its replica holds the episode's prefix cache)
    finish_reason: str = "stop"  #: ``length``: cut by the token cap
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, data: Any, where: str = "generation", *, deep: bool = True) -> Generation:
        return cls(**cls.wire_fields(data, where, deep))


#: the keys of a turn in a scored trajectory (the learner's input), in wire order
SCORED_TURN_KEYS = (
    "prompt_ids",
    "token_ids",
    "logprobs",
    "policy_version",
    "finish_reason",
    "reward",
    "advantages",
    "users",
)


@dataclass(frozen=True, slots=True)
class TurnRecord(Record):
    """One played turn: the policy's generation (token ids, logprobs, the version that sampled
    them), the parsed action, the gym's step (reward, observation, end flags) and the user calls
    it made. In a scored trajectory it also carries its tokens' ``advantages``."""

    WIRE: ClassVar[tuple[tuple[str, str, Any], ...]] = (
        ("seq", "seq", _int),
        ("reward", "reward", _float),
        ("action", "action", _str),
        ("text", "text", _str),
        ("prompt_ids", "prompt_ids", _ints),
        ("token_ids", "token_ids", _ints),
        ("logprobs", "logprobs", _floats),
        ("policy_version", "policy_version", _int),
        ("finish_reason", "finish_reason", _str),
        ("observation", "observation", _str),
        ("format_error", "format_error", _bool),
        ("worker", "worker", _str),
        ("terminated", "terminated", _bool),
        ("truncated", "truncated", _bool),
        ("info_score", "info_score", _float),
        ("users", "users", _list),
        ("advantages", "advantages", _floats),
    )
    REQUIRED: ClassVar[frozenset[str]] = frozenset({"reward"})

    reward: float  #: the gym's reward for this turn
    seq: int = 0  #: the turn's index in its episode
    action: str = ""  #: the parsed action's text
    text: str = ""  #: the policy's raw output
    prompt_ids: list[int] = field(default_factory=list)  #: the context the policy generated from
    token_ids: list[int] = field(default_factory=list)  #: what it generated
    logprobs: list[float] = field(default_factory=list)  #: the behaviour logprob of each generated token
    policy_version: int = 0
    finish_reason: str = "stop"  #: ``length``: cut by the token cap
    observation: str = ""  #: the gym's observation after the step
    format_error: bool = False  #: the output did not parse as an action
    worker: str = ""  #: the policy worker that generated it
    terminated: bool = False
    truncated: bool = False
    info_score: float | None = None  #: the gym's ``info["score"]`` when it reports one
    users: list[dict[str, Any]] = field(default_factory=list)  #: the user calls (sim_users.stamp.turn_user)
    advantages: list[float] | None = None  #: per generated token; set by the reward worker
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, data: Any, where: str = "turn", *, deep: bool = True) -> TurnRecord:
        """The turn of a wire map; ``deep=False`` trusts the items of its token lists (a turn of
        the env worker's own snapshot, made from messages the codec checked)."""
        kw = cls.wire_fields(data, where, deep)
        kw["reward"] = float(kw["reward"])
        return cls(**kw)

    @classmethod
    def played(
        cls,
        gen: Generation,
        *,
        seq: int,
        reward: float,
        action: str,
        observation: str,
        format_error: bool,
        terminated: bool,
        truncated: bool,
        info_score: float | None,
        users: list[dict[str, Any]],
    ) -> TurnRecord:
        """The record of a turn the env worker played with the policy's generation ``gen``."""
        return cls(
            seq=seq,
            reward=reward,
            action=action,
            text=gen.text,
            prompt_ids=gen.prompt_ids,
            token_ids=gen.token_ids,
            logprobs=gen.logprobs,
            policy_version=gen.version,
            finish_reason=gen.finish_reason,
            observation=observation,
            format_error=format_error,
            worker=gen.worker,
            terminated=terminated,
            truncated=truncated,
            info_score=info_score,
            users=users,
        )

    def scored_wire(self) -> dict[str, Any]:
        """The turn as a scored trajectory carries it: what the learner needs, nothing else."""
        out = {
            "prompt_ids": self.prompt_ids,
            "token_ids": self.token_ids,
            "logprobs": self.logprobs,
            "policy_version": self.policy_version,
            "finish_reason": self.finish_reason,
            "reward": self.reward,
            "advantages": self.advantages if self.advantages is not None else [],
            "users": self.users,
        }
        return {**out, **self.extra} if self.extra else out


def turn_records(turns: Any, where: str = "turns", *, deep: bool = True) -> list[TurnRecord]:
    """``turns`` as records (maps are read with :meth:`TurnRecord.from_wire`)."""
    if not isinstance(turns, list):
        raise MessageError(f"{where}: expected a list of turns, got {type(turns).__name__}")
    return [
        t if isinstance(t, TurnRecord) else TurnRecord.from_wire(t, f"{where}[{i}]", deep=deep)
        for i, t in enumerate(turns)
    ]


@dataclass(frozen=True, slots=True)
class ScoredTrajectory(Record):
    """One episode of a scored group: its GRPO trajectory ``score`` (what the group's advantages
    are computed from), its ``return`` (the sum of its turn rewards) and its turns with their
    advantages: the learner's input. Without ``turns`` it is the summary the results stream
    carries."""

    WIRE: ClassVar[tuple[tuple[str, str, Any], ...]] = (
        ("episode_id", "episode_id", _str),
        ("task_id", "task_id", _str),
        ("score", "score", _float),
        ("return", "return_", _float),
        ("n_turns", "n_turns", _int),
        ("turns", "turns", _list),
        ("meta", "meta", _map),
    )
    REQUIRED: ClassVar[frozenset[str]] = frozenset({"episode_id"})

    episode_id: str
    task_id: str = ""
    score: float = 0.0  #: the GRPO trajectory score
    return_: float = 0.0  #: the return: the sum of the turn rewards (wire key ``return``)
    n_turns: int = 0
    turns: list[TurnRecord] | None = None  #: None in a summary
    meta: dict[str, Any] = field(default_factory=dict)  #: the episode's tags, ``end`` and episode ``score``
    extra: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "episode_id": self.episode_id,
            "task_id": self.task_id,
            "score": self.score,
            "return": self.return_,
            "n_turns": self.n_turns,
        }
        if self.turns is not None:
            out["turns"] = [t.scored_wire() for t in self.turns]
        out["meta"] = self.meta
        return {**out, **self.extra} if self.extra else out

    def summary(self) -> ScoredTrajectory:
        """The same trajectory without its turns (what the results stream carries)."""
        return ScoredTrajectory(
            self.episode_id, self.task_id, self.score, self.return_, self.n_turns, None, self.meta, self.extra
        )

    @classmethod
    def from_wire(cls, data: Any, where: str = "item") -> ScoredTrajectory:
        kw = cls.wire_fields(data, where)
        if "turns" in kw:
            kw["turns"] = turn_records(kw["turns"], f"{where}.turns")
        for key in ("score", "return_"):
            if key in kw:
                kw[key] = float(kw[key])
        return cls(**kw)


def scored_trajectories(items: Any, where: str = "items") -> list[ScoredTrajectory]:
    """``items`` as records (maps are read with :meth:`ScoredTrajectory.from_wire`)."""
    if not isinstance(items, list):
        raise MessageError(f"{where}: expected a list of scored trajectories, got {type(items).__name__}")
    return [
        it if isinstance(it, ScoredTrajectory) else ScoredTrajectory.from_wire(it, f"{where}[{i}]")
        for i, it in enumerate(items)
    ]


@dataclass(slots=True)
class EpisodeSnapshot:
    """Everything an env worker needs to continue an episode: the ``episode`` field of the
    ``state:{episode}`` hash, one msgpack map. Mutable: the worker advances it in place and
    writes it back in the commit of each step."""

    episode_id: str
    group_id: str
    env_id: str
    task_id: str
    env_state: dict[str, Any]
    messages: list[dict[str, Any]]
    seq: int = 0  #: the turn whose policy reply is expected next
    prompt_ids: list[int] | None = None  #: token ids of messages[:n_seen] plus the last generation
    n_seen: int = 0
    turns: list[TurnRecord] = field(default_factory=list)
    pending: Generation | None = None  #: the policy reply of ``seq`` while user replies are awaited
    #: the user calls of the pending turn by hop (``str(hop)`` -> call); on the wire, ``pending["users"]``
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)  #: a :class:`Sampling` wire map
    meta: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0
    #: the gym's options from the reset, so every step (and a re-executed one) uses the same gym
    gym_options: dict[str, Any] = field(default_factory=dict)

    _PLAIN: ClassVar[tuple[str, ...]] = (
        "episode_id",
        "group_id",
        "env_id",
        "task_id",
        "env_state",
        "messages",
        "seq",
        "prompt_ids",
        "n_seen",
    )

    def to_wire(self) -> dict[str, Any]:
        # a shallow map: msgpack walks the nested lists itself (a deep copy is the env worker's
        # hottest line otherwise)
        out = {name: getattr(self, name) for name in self._PLAIN}
        out["turns"] = [t.to_wire() for t in self.turns]
        pending = None
        if self.pending is not None:
            pending = self.pending.to_wire()
            if self.calls:
                pending["users"] = self.calls
        out["pending"] = pending
        out.update(sampling=self.sampling, meta=self.meta, started_at=self.started_at, gym_options=self.gym_options)
        return out

    @classmethod
    def from_wire(cls, data: Any) -> EpisodeSnapshot:
        if not isinstance(data, dict):
            raise MessageError(f"episode snapshot: expected a map, got {type(data).__name__}")
        data = dict(data)
        # the worker's own state, re-read on every step: its token lists were checked when the
        # policy's reply was decoded, and walking every token id again would double the read
        data["turns"] = turn_records(data.get("turns", []), "episode.turns", deep=False)
        pending = data.get("pending")
        if pending is not None:
            if not isinstance(pending, dict):
                raise MessageError(f"episode.pending: expected a map, got {type(pending).__name__}")
            pending = dict(pending)
            calls = pending.pop("users", None) or {}
            if not isinstance(calls, dict):
                raise MessageError(f"episode.pending.users: expected a map, got {type(calls).__name__}")
            data["pending"], data["calls"] = Generation.from_wire(pending, "episode.pending", deep=False), calls
        try:
            return cls(**data)
        except TypeError as exc:
            raise MessageError(f"episode snapshot: {exc}") from exc

    def pack(self) -> bytes:
        return msgpack.packb(self.to_wire(), use_bin_type=True)

    @classmethod
    def unpack(cls, raw: bytes) -> EpisodeSnapshot:
        try:
            return cls.from_wire(msgpack.unpackb(raw, raw=False))
        except Exception as exc:
            raise EnvError(f"corrupt episode snapshot: {type(exc).__name__}: {exc}") from exc
