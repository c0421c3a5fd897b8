"""What one handled message is and what it produces: :class:`Delivery` (a stream entry handed
to a consumer) and :class:`Effects` (the writes its commit applies atomically, see
:mod:`userrl.bus.scripts`); :class:`BusSettings` (the transport's knobs, and the deploy config's
``bus`` section) is :mod:`userrl.bus.settings`'s, imported here for the transport.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from userrl.bus.messages import MAX_MESSAGE_BYTES, Message, encode
from userrl.bus.settings import BusSettings as BusSettings  # the transport imports it from here

#: the field holding a message's msgpack payload in every stream entry
PAYLOAD = b"p"


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
