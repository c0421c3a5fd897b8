"""The user's seat in Redis: claims on episodes, parked questions, who answered each one.

What the seat is for, and how the user worker and the web view use it, is in
:mod:`userrl.sim_users.seat`; this module keeps its state. Reached as ``Bus.seat``.

Redis layout (under the run's prefix; each key has a TTL, nothing outlives a dead episode):

- ``seat:{episode}``: hash ``holder`` (the claim's secret id), ``who``, ``since``; TTL = the
  claim's timeout, renewed by its holder.
- ``seat:{episode}:asks``: hash ``{seq}:{hop}`` -> the parked question (JSON: ``query``,
  ``at``) and ``{seq}:{hop}:by`` -> who answered it; TTL :data:`ASKS_TTL_S`, renewed by each ask.

Exactly one answer wins each question: whoever first sets its ``:by`` field (``HSETNX``).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from userrl.bus.keys import Keys

#: how long a seat's questions are remembered after the last one was asked
ASKS_TTL_S = 24 * 3600

# a claim is renewed or released only by its holder (compare-and-act in one step)
_RENEW = """
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'who', ARGV[2], 'since', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


@dataclass(frozen=True, slots=True)
class Claim:
    holder: str  #: the claim's secret id (only its holder may reply, renew, release)
    who: str  #: the person's name (stamped ``human:<who>``)
    since: float


def _field(seq: int, hop: int) -> str:
    return f"{seq}:{hop}"


class SeatStore:
    """See the module docstring."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self.keys = keys

    def claim_key(self, episode: str) -> str:
        return f"{self.keys.prefix}seat:{episode}"

    def asks_key(self, episode: str) -> str:
        return f"{self.keys.prefix}seat:{episode}:asks"

    # -- claims ----------------------------------------------------------------------------------
    async def claim(self, episode: str) -> Claim | None:
        """The live claim on ``episode``'s seat, None when nobody holds it."""
        raw = await self._redis.hgetall(self.claim_key(episode))
        if not raw or b"holder" not in raw:
            return None
        return Claim(raw[b"holder"].decode(), raw.get(b"who", b"").decode(), float(raw.get(b"since", b"0")))

    async def claim_ttl_ms(self, episode: str) -> int:
        """Milliseconds the claim has left (negative when there is none)."""
        return int(await self._redis.pttl(self.claim_key(episode)))

    async def take_seat(self, episode: str, who: str, timeout_s: float) -> Claim | None:
        """Claim ``episode``'s seat for ``who``; None when someone holds it."""
        c = Claim(secrets.token_urlsafe(18), who, time.time())
        ok = await self._redis.eval(
            _CLAIM, 1, self.claim_key(episode), c.holder, who, f"{c.since:.3f}", int(timeout_s * 1000)
        )
        return c if ok else None

    async def renew(self, episode: str, holder: str, timeout_s: float) -> bool:
        """Extend the claim by ``timeout_s``; False when ``holder`` does not hold it (expired)."""
        return bool(await self._redis.eval(_RENEW, 1, self.claim_key(episode), holder, int(timeout_s * 1000)))

    async def release(self, episode: str, holder: str) -> bool:
        """Give the seat back to the simulator at once; False when ``holder`` does not hold it."""
        return bool(await self._redis.eval(_RELEASE, 1, self.claim_key(episode), holder))

    # -- questions -------------------------------------------------------------------------------
    async def park(self, episode: str, seq: int, hop: int, query: dict[str, Any]) -> None:
        """List the question (``UserQuery.to_dict()``) under the seat (kept as first asked when
        a redelivery parks it again)."""
        key = self.asks_key(episode)
        ask = json.dumps({"query": query, "at": time.time()})
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hsetnx(key, _field(seq, hop), ask)
            pipe.expire(key, ASKS_TTL_S)
            await pipe.execute()

    async def ask(self, episode: str, seq: int, hop: int) -> dict[str, Any] | None:
        """A parked question (``query``, ``at``), None when it was never parked."""
        raw = await self._redis.hget(self.asks_key(episode), _field(seq, hop))
        return json.loads(raw) if raw else None

    async def answered_by(self, episode: str, seq: int, hop: int) -> str:
        """Who won the question ('' while it is open)."""
        raw = await self._redis.hget(self.asks_key(episode), _field(seq, hop) + ":by")
        return raw.decode() if raw else ""

    async def take(self, episode: str, seq: int, hop: int, by: str) -> str:
        """Mark the question as answered by ``by`` unless someone was first; returns the winner."""
        key, f = self.asks_key(episode), _field(seq, hop) + ":by"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hsetnx(key, f, by)
            pipe.hget(key, f)
            _, winner = await pipe.execute()
        return winner.decode() if winner else by

    async def open_asks(self, episode: str) -> list[dict[str, Any]]:
        """The seat's questions nobody has answered yet, oldest first, each with ``seq`` and ``hop``."""
        raw = {k.decode(): v for k, v in (await self._redis.hgetall(self.asks_key(episode))).items()}
        out = []
        for f, v in raw.items():
            if f.endswith(":by") or f + ":by" in raw:
                continue
            seq, hop = (int(x) for x in f.split(":"))
            out.append({"seq": seq, "hop": hop, **json.loads(v)})
        return sorted(out, key=lambda a: (a["seq"], a["hop"]))
