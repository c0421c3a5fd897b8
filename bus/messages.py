"""Typed, frozen, versioned bus messages and their msgpack codec (never pickle).

Every message names its place in a dialogue with ``episode_id``, ``seq`` (the turn, strictly
increasing) and ``hop`` (0 = the policy call of that turn, 1.. = the user/judge calls inside
it). The commit of a message is made idempotent on ``(kind, episode_id, seq, hop)``.

Wire format: a msgpack map ``{"k": kind, "v": schema version, "d": {field: value}}``.
:func:`decode` checks the kind, the version, every field's presence and type, and the size
cap; anything wrong raises :class:`~userrl.errors.MessageError` (the worker dead-letters it).
A new field bumps its message's ``VERSION``; decoders accept versions up to their own. A field
that is removed is listed in ``RETIRED``, so what older senders still write decodes.

The turn's data travels in the records of :mod:`userrl.bus.records`: a trajectory's ``turns``
are :class:`~userrl.bus.records.TurnRecord`\\ s, an ``ok`` scored group's ``items`` are
:class:`~userrl.bus.records.ScoredTrajectory`\\ s (maps given to the constructor are read into
records, with the same checks as a decode); the codec writes their wire maps.

A failure travels as an :class:`ErrorRecord` (a map ``{"kind", "retryable", "message"}``),
built from and turned back into the error classes of :mod:`userrl.errors`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import msgpack

from userrl.bus.records import Record, ScoredTrajectory, TurnRecord, scored_trajectories, turn_records
from userrl.errors import MessageError, RolloutError, rollout_error

#: payloads above this many bytes are refused on encode and dead-lettered on decode
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

_REGISTRY: dict[str, type[Message]] = {}


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """Why a request or an episode failed, as it travels on the bus: the boundary that failed
    (``kind``: ``policy``, ``user``, ``env``, ``reward``, ``bus``, the ``kind`` of an error
    class in :mod:`userrl.errors`), whether retrying may succeed, and the message."""

    kind: str
    message: str
    retryable: bool = False  #: the error's ``transient``

    @classmethod
    def of(cls, exc: RolloutError) -> ErrorRecord:
        """The record of ``exc`` (its class's ``kind``, ``transient`` and message)."""
        return cls(kind=exc.kind, message=str(exc), retryable=exc.transient)

    def exception(self, context: str = "") -> RolloutError:
        """The error this record stands for, as its class (``context``: a prefix of the message)."""
        message = f"{context}: {self.message}" if context else self.message
        return rollout_error(self.kind, message, transient=self.retryable)

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind, "retryable": self.retryable, "message": self.message}

    @classmethod
    def from_wire(cls, data: Any, where: str = "error") -> ErrorRecord:
        """Read a record; also the older dict form (``transient`` for ``retryable``, and extra
        keys such as ``attempts``, which are ignored)."""
        if not isinstance(data, dict):
            raise MessageError(f"{where}: expected an error record (a map), got {type(data).__name__}")
        kind, message = data.get("kind"), data.get("message", "")
        retryable = data.get("retryable", data.get("transient", False))
        if not isinstance(kind, str) or not isinstance(message, str) or not isinstance(retryable, bool):
            raise MessageError(
                f"{where}: an error record needs kind (str), message (str), retryable (bool); got {sorted(data)}"
            )
        return cls(kind=kind, message=message, retryable=retryable)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    #: removed fields: still accepted (and dropped) when an older sender writes them
    RETIRED: ClassVar[frozenset[str]] = frozenset()

    episode_id: str
    seq: int = 0
    hop: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Reset(Message):
    """Start an episode (dispatcher -> env)."""

    KIND: ClassVar[str] = "reset"
    VERSION: ClassVar[int] = 2  #: 2 added ``options``
    group_id: str
    env_id: str
    task: dict[str, Any]
    seed: int = 0
    max_turns: int = 0  #: 0 = the gym's default
    sampling: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  #: run/split/eval tags, copied to the trajectory
    options: dict[str, Any] = field(default_factory=dict)  #: the gym's options ({} = its defaults)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRequest(Message):
    """Ask for the agent's next action (env -> policy). ``hop`` is 0."""

    KIND: ClassVar[str] = "policy_request"
    #: ``replica`` never steered anything: sticky episodes route by stream (``Keys.replica_stream``)
    RETIRED: ClassVar[frozenset[str]] = frozenset({"replica"})
    env_id: str
    messages: list[dict[str, Any]]
    prompt_ids: list[int] | None = None
    n_seen: int = 0
    sampling: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] | None = None  #: only sent to scripted-expert policies


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyReply(Message):
    """The agent's action with its tokens (policy -> env)."""

    KIND: ClassVar[str] = "policy_reply"
    text: str
    prompt_ids: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    version: int = 0
    finish_reason: str = "stop"
    worker: str = ""
    error: ErrorRecord | None = None  #: set when the backend failed (then there is no text)


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRequest(Message):
    """Ask the simulated user or judge (env -> user). ``hop`` >= 1."""

    KIND: ClassVar[str] = "user_request"
    query: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class UserReply(Message):
    """Notification that the reply of ``(episode, seq, hop)`` is stored (user -> env)."""

    KIND: ClassVar[str] = "user_reply"
    VERSION: ClassVar[int] = 2  #: 2 added ``by`` and ``stats``
    reply: dict[str, Any] = field(default_factory=dict)
    error: ErrorRecord | None = None  #: set when the backend failed (then nothing is stored)
    worker: str = ""
    #: who wrote the reply: ``scripted``, ``<backend>:<model>@<version>`` or ``human:<who>``
    #: ("" from senders older than version 2)
    by: str = ""
    #: how the answer went: ``ms`` (latency), ``attempts``, ``malformed``, ``empty``, ``leaks``,
    #: ``redacted`` (:class:`userrl.sim_users.stamp.CallRecord`)
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class HumanReply(Message):
    """A person's reply for the user's seat of ``(episode, seq, hop)`` (web view -> user): the
    user worker checks the claim and the reply, then commits it like a simulator's."""

    KIND: ClassVar[str] = "human_reply"
    text: str  #: what the person wrote (the gym's reply JSON, or plain words)
    holder: str  #: the claim's secret id: only the claim's holder may answer
    who: str  #: the person's name, stamped as ``human:<who>``


@dataclass(frozen=True, slots=True, kw_only=True)
class Trajectory(Message):
    """A finished (or failed) episode with its turns (env -> reward)."""

    KIND: ClassVar[str] = "trajectory"
    group_id: str
    env_id: str
    task_id: str
    turns: list[TurnRecord]
    status: str = "ok"  #: ok | failed
    error: ErrorRecord | None = None  #: why it failed
    meta: dict[str, Any] = field(default_factory=dict)  #: tags, ``end``, the episode ``score`` (the gym's)

    def __post_init__(self) -> None:
        object.__setattr__(self, "turns", turn_records(self.turns, f"{self.KIND}.turns"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoreGroup(Message):
    """Score this group now (reward -> reward): sent by the commit of its last member, or by
    the deadline sweep with ``force`` (then a partial group is dropped as a whole)."""

    KIND: ClassVar[str] = "score_group"
    group_id: str
    force: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoredGroup(Message):
    """All G trajectories of one task, scored, with per-token advantages (reward -> learner)."""

    KIND: ClassVar[str] = "scored_group"
    group_id: str
    env_id: str
    #: ``ok``: :class:`ScoredTrajectory` records (summaries without turns on the results stream);
    #: ``dropped``: the members' summaries (maps: ``episode_id``, ``status``, ``error``, ``return``,
    #: ``meta``, ``users``)
    items: list[Any]
    status: str = "ok"  #: ok | dropped
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status == "ok":
            object.__setattr__(self, "items", scored_trajectories(self.items, f"{self.KIND}.items"))

    @property
    def trajectories(self) -> list[ScoredTrajectory]:
        """The scored trajectories of an ``ok`` group (none for a dropped one)."""
        return self.items if self.status == "ok" else []


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightsAnnouncement(Message):
    """A new policy version is saved (learner -> policy workers). ``seq`` = version."""

    KIND: ClassVar[str] = "weights"
    version: int
    path: str
    sha256: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe(Message):
    """A diagnostic message for bus benchmarks and fault tests."""

    KIND: ClassVar[str] = "probe"
    body: dict[str, Any] = field(default_factory=dict)


def register(cls: type[Message]) -> type[Message]:
    """Make a message kind decodable (the built-in kinds are registered below)."""
    if not cls.KIND or _REGISTRY.get(cls.KIND, cls) is not cls:
        raise TypeError(f"{cls.__name__}: KIND {cls.KIND!r} is empty or already taken")
    _REGISTRY[cls.KIND] = cls
    return cls


for _cls in (
    Reset,
    PolicyRequest,
    PolicyReply,
    UserRequest,
    UserReply,
    HumanReply,
    Trajectory,
    ScoreGroup,
    ScoredGroup,
    WeightsAnnouncement,
    Probe,
):
    register(_cls)


def kinds() -> dict[str, type[Message]]:
    """All registered message kinds."""
    return dict(_REGISTRY)


# ---- codec -------------------------------------------------------------------------------------


def encode(msg: Message, *, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    if not msg.KIND:
        raise MessageError(f"{type(msg).__name__} has no KIND and cannot be sent")
    d = {name: getattr(msg, name) for name, _ in _fields(type(msg))}
    for name in _records(type(msg)):
        rec = d[name]
        if rec is not None:
            if not isinstance(rec, ErrorRecord):
                raise MessageError(f"cannot encode {msg.KIND}: {name} must be an ErrorRecord, not {type(rec).__name__}")
            d[name] = rec.to_wire()
    for name in _record_lists(type(msg)):
        d[name] = [r.to_wire() if isinstance(r, Record) else r for r in d[name]]
    try:
        raw: bytes = msgpack.packb({"k": msg.KIND, "v": msg.VERSION, "d": d}, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise MessageError(f"cannot encode {msg.KIND}: {exc}") from exc
    if len(raw) > max_bytes:
        raise MessageError(f"{msg.KIND} for episode {msg.episode_id} is {len(raw)} bytes, over the cap of {max_bytes}")
    return raw


def decode(raw: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    if len(raw) > max_bytes:
        raise MessageError(f"payload of {len(raw)} bytes is over the cap of {max_bytes}")
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise MessageError(f"undecodable msgpack payload: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict) or not {"k", "v", "d"} <= obj.keys():
        raise MessageError("payload is not a userrl message (expected a map with k, v, d)")
    kind, version, data = obj["k"], obj["v"], obj["d"]
    cls = _REGISTRY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MessageError(f"unknown message kind {kind!r}; known: {sorted(_REGISTRY)}")
    if not isinstance(version, int) or not 1 <= version <= cls.VERSION:
        raise MessageError(f"{kind} schema version {version!r} not supported (this build reads <= {cls.VERSION})")
    if not isinstance(data, dict):
        raise MessageError(f"{kind}: fields must be a map")
    return _build(cls, data)


def _build(cls: type[Message], data: dict[str, Any]) -> Message:
    fields = _fields(cls)
    hints = _hints(cls)
    unknown = data.keys() - {name for name, _ in fields}
    if unknown:
        if not unknown <= cls.RETIRED:
            raise MessageError(f"{cls.KIND}: unknown fields {sorted(unknown - cls.RETIRED)}")
        data = {k: v for k, v in data.items() if k not in unknown}
    records = _records(cls)
    for name, required in fields:
        if name not in data:
            if required:
                raise MessageError(f"{cls.KIND}: missing field {name!r}")
            continue
        if name in records and data[name] is not None:
            data[name] = ErrorRecord.from_wire(data[name], f"{cls.KIND}.{name}")
        elif not _type_ok(data[name], hints[name]):
            raise MessageError(f"{cls.KIND}.{name}: expected {hints[name]}, got {type(data[name]).__name__}")
    return cls(**data)


_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {}


def _fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """(name, required) of a message class's fields, computed once per class."""
    if cls not in _FIELDS:
        _FIELDS[cls] = tuple(
            (f.name, f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls)
        )
    return _FIELDS[cls]


_RECORDS: dict[type, frozenset[str]] = {}


def _records(cls: type) -> frozenset[str]:
    """Names of a message class's :class:`ErrorRecord` fields (sent as maps)."""
    if cls not in _RECORDS:
        _RECORDS[cls] = frozenset(
            n for n, h in _hints(cls).items() if h is ErrorRecord or ErrorRecord in typing.get_args(h)
        )
    return _RECORDS[cls]


_RECORD_LISTS: dict[type, tuple[str, ...]] = {}


def _record_lists(cls: type) -> tuple[str, ...]:
    """Names of a message class's list fields that may hold records (sent as lists of maps)."""
    if cls not in _RECORD_LISTS:
        _RECORD_LISTS[cls] = tuple(
            n for n, h in _hints(cls).items() if typing.get_origin(h) is list and _is_record(typing.get_args(h)[0])
        )
    return _RECORD_LISTS[cls]


def _is_record(hint: Any) -> bool:
    return hint is Any or (isinstance(hint, type) and issubclass(hint, Record))


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if not isinstance(value, list):
            return False
        if item is int:  # token ids: a tight loop, not one recursive call per token
            return all(type(v) is int for v in value)
        if item is float:
            return all(type(v) is float or type(v) is int for v in value)
        if isinstance(item, type) and issubclass(item, Record):  # a map: read by the constructor
            return True
        return item is Any or all(_type_ok(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)
