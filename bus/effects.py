"""What one handled message is and what it produces: :class:`Delivery` (a stream entry handed
to a consumer) and :class:`Effects` (the writes its commit applies atomically, see
:mod:`userrl.bus.scripts`), plus :class:`BusSettings`, the transport's knobs.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from userrl.bus.budget import derived_caps
from userrl.bus.messages import MAX_MESSAGE_BYTES, Message, encode

#: the field holding a message's msgpack payload in every stream entry
PAYLOAD = b"p"


@dataclass(frozen=True, slots=True)
class BusSettings:
    """Knobs of the transport (from the deploy config's ``bus`` section)."""

    read_count: int = 128  #: entries per XREADGROUP
    block_ms: int = 1000  #: XREADGROUP BLOCK
    min_idle_ms: int = 15_000  #: reclaim entries idle longer than this
    max_deliveries: int = 5  #: dead-letter an entry delivered more often than this
    #: how long commit keys remember a message; 0 = auto (:attr:`idempotency_window_ms`)
    idempotency_ttl_ms: int = 0
    stream_cap: int = 1_000_000  #: MAXLEN ~ safety cap; normal trimming is by consumption point
    max_message_bytes: int = MAX_MESSAGE_BYTES
    memory_mb: int = 512  #: the budget the caps below follow from when 0 (:mod:`userrl.bus.budget`)
    dead_cap: int = 0  #: MAXLEN ~ of the dead-letter stream (0 = from memory_mb)
    dead_payload_bytes: int = 64 * 1024  #: a dead letter keeps at most this much of each field
    results_cap: int = 0  #: MAXLEN ~ of the results and learner streams, read or not (0 = from memory_mb)
    #: finished episodes kept (their logs and index entries) and done groups; 0 = from memory_mb
    #: at the measured size of recent logs
    finished_cap: int = 0
    episode_log_ttl_ms: int = 3_600_000  #: readable episode logs expire this long after the end
    episode_log_cap: int = 2_000  #: MAXLEN ~ of one readable episode log
    finished_auto: bool = field(init=False, default=False)  #: finished_cap follows the measured log size

    def __post_init__(self) -> None:
        if self.memory_mb < 1:
            raise ValueError(f"bus.memory_mb must be >= 1, got {self.memory_mb}")
        object.__setattr__(self, "finished_auto", self.finished_cap == 0)
        for name, cap in derived_caps(self.memory_mb, self.dead_payload_bytes).items():
            if getattr(self, name) == 0:
                object.__setattr__(self, name, cap)
        for name in (
            "read_count",
            "block_ms",
            "min_idle_ms",
            "max_deliveries",
            "stream_cap",
            "dead_cap",
            "dead_payload_bytes",
            "results_cap",
            "finished_cap",
            "episode_log_ttl_ms",
            "episode_log_cap",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"bus.{name} must be >= 1, got {getattr(self, name)}")
        if self.min_idle_ms <= self.block_ms:
            raise ValueError("bus.min_idle_ms must be larger than bus.block_ms")
        if self.idempotency_ttl_ms and self.idempotency_ttl_ms < self.redelivery_window_ms:
            raise ValueError(
                f"bus.idempotency_ttl_ms ({self.idempotency_ttl_ms}) must cover min_idle_ms x "
                f"(max_deliveries + 1) = {self.redelivery_window_ms} ms, or be 0 (auto)"
            )

    @property
    def redelivery_window_ms(self) -> int:
        """The longest a message can keep coming back: each redelivery waits ``min_idle``."""
        return self.min_idle_ms * (self.max_deliveries + 1)

    @property
    def idempotency_window_ms(self) -> int:
        """TTL of commit keys: a duplicate of a message can only arrive while the message can
        still be redelivered, so 4x that window (at least a minute) is plenty, not days (6
        minutes with the defaults)."""
        return self.idempotency_ttl_ms or max(60_000, 4 * self.redelivery_window_ms)


@dataclass(slots=True)
class Delivery:
    """One stream entry handed to this consumer."""

    stream: str
    group: str
    entry_id: str
    fields: dict[bytes, bytes]
    msg: Message | None = None
    error: str = ""  #: why the payload could not be decoded (then ``msg`` is None)
    epoch: bytes = b""  #: the server epoch it was read under (see ``Keys.epoch``)
    deliveries: int = 1
    received_at: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class Effects:
    """What handling one message produces; applied atomically by :meth:`Bus.commit`."""

    ops: list[tuple[str, str, list[Any]]] = field(default_factory=list)

    def send(
        self,
        stream: str,
        msg: Message,
        readable: dict[str, Any] | None = None,
        *,
        max_bytes: int = MAX_MESSAGE_BYTES,
        maxlen: int = 0,
    ) -> Effects:
        """XADD ``msg`` (plus optional plain readable fields) to ``stream``; ``maxlen`` caps that
        stream (MAXLEN ~) instead of the bus-wide safety cap."""
        args: list[Any] = []
        for k, v in (readable or {}).items():
            args += [k, _plain(v)]
        args += [PAYLOAD, encode(msg, max_bytes=max_bytes)]
        self.ops.append(("XADDN", stream, [int(maxlen), *args]) if maxlen else ("XADD", stream, args))
        return self

    def send_if_hash_len(self, stream: str, msg: Message, hash_key: str, at_least: int) -> Effects:
        """XADD ``msg`` only if ``hash_key`` holds >= ``at_least`` fields when the commit runs
        (after this commit's own HSETs)."""
        self.ops.append(("XADDIFLEN", stream, [_KeyRef(hash_key), int(at_least), PAYLOAD, encode(msg)]))
        return self

    def append(self, stream: str, fields: dict[str, Any], *, maxlen: int = 0) -> Effects:
        """XADD plain fields (an episode log entry), capped at ``maxlen`` entries when given."""
        args: list[Any] = []
        for k, v in fields.items():
            args += [k, _plain(v)]
        self.ops.append(("XADDN", stream, [int(maxlen), *args]) if maxlen else ("XADD", stream, args))
        return self

    def hset(self, key: str, mapping: dict[str, Any]) -> Effects:
        args: list[Any] = []
        for k, v in mapping.items():
            args += [k, v if isinstance(v, (bytes, str)) else _plain(v)]
        self.ops.append(("HSET", key, args))
        return self

    def zadd(self, key: str, score: float, member: str, *, nx: bool = False) -> Effects:
        self.ops.append(("ZADD", key, [*(["NX"] if nx else []), repr(float(score)), member]))
        return self

    def zrem(self, key: str, member: str) -> Effects:
        self.ops.append(("ZREM", key, [member]))
        return self

    def expire(self, key: str, ms: int) -> Effects:
        self.ops.append(("PEXPIRE", key, [int(ms)]))
        return self

    def delete(self, key: str) -> Effects:
        self.ops.append(("DEL", key, []))
        return self

    def incr(self, key: str, name: str, by: int = 1) -> Effects:
        self.ops.append(("HINCRBY", key, [name, int(by)]))
        return self


@dataclass(frozen=True, slots=True)
class _KeyRef:
    """An effect argument that names a key: passed to Lua as its index in KEYS."""

    key: str


def _plain(v: Any) -> str | bytes:
    if isinstance(v, (str, bytes)):
        return v
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def dead_letter_fields(fields: dict[bytes, bytes], keep: int) -> list[Any]:
    """The original entry's fields as ``f:<name>``; an oversized one becomes its first ``keep``
    bytes plus ``size:<name>`` and ``sha256:<name>``, and the letter is marked ``truncated``."""
    out: list[Any] = []
    truncated = False
    for k, v in fields.items():
        name = k if isinstance(k, bytes) else str(k).encode()
        raw = v if isinstance(v, bytes) else str(v).encode()
        if len(raw) > keep:
            truncated = True
            out += [b"size:" + name, str(len(raw)), b"sha256:" + name, hashlib.sha256(raw).hexdigest()]
            raw = raw[:keep]
        out += [b"f:" + name, raw]
    return out + ([b"truncated", b"1"] if truncated else [])


def idempotency_identity(msg: Message) -> tuple[str, str, int, int]:
    return (msg.KIND, msg.episode_id, msg.seq, msg.hop)
