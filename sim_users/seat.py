"""A person in the user's seat: claims, open questions, and who answered each one.

Off unless ``user.seat: true``. With it, a person with the web view's token can **claim** a live
episode (``userrl ui``: "Take the user's seat"); while the claim lives, the user worker does not
answer that episode's user questions (``respond`` queries; judge verdicts stay with the
simulator, so a person shapes the dialogue but never grades it). It **parks** each question
instead: the request stays in flight (its stream entry is renewed like any slow call) and the
question is listed under the episode's seat, where the web view shows it. The person's reply
travels back through the same ``user`` stream as a :class:`~userrl.bus.messages.HumanReply`;
a user worker checks it (the claim's holder, an open question, the gym's reply format) and
commits it exactly like a simulator's reply, stamped ``human:<who>``, and the episode goes on.

Claims expire: the page renews its claim every few seconds, and one left alone for
``user.seat_timeout_s`` is gone, so its open question falls back to the simulator. Exactly one
answer wins each question: whoever first sets the question's ``:by`` field (``HSETNX``), the
person (``human:<who>``) or the simulator (``scripted``, ``openai:...``); the loser's reply is
dropped. A worker that dies after winning finds its own mark when the message is redelivered.

Redis layout (under the run's prefix; each key has a TTL, nothing outlives a dead episode):

- ``seat:{episode}``: hash ``holder`` (the claim's secret id), ``who``, ``since``; TTL = the
  claim's timeout, renewed by its holder.
- ``seat:{episode}:asks``: hash ``{seq}:{hop}`` -> the parked question (JSON: ``query``,
  ``at``) and ``{seq}:{hop}:by`` -> who answered it; TTL :data:`ASKS_TTL_S`, renewed by each ask.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from userrl.bus.keys import Keys
from userrl.envs.registry import user_spec
from userrl.sim_users.base import UserQuery

__all__ = [
    "ASKS_TTL_S",
    "Claim",
    "SeatError",
    "answered_by",
    "asks_key",
    "claim_key",
    "human_reply",
    "open_asks",
    "park",
    "read_ask",
    "read_claim",
    "release",
    "renew",
    "take",
    "take_seat",
]

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


class SeatError(Exception):
    """A seat operation that cannot be done (taken, not the holder, nothing asked)."""


@dataclass(frozen=True, slots=True)
class Claim:
    holder: str  #: the claim's secret id (only its holder may reply, renew, release)
    who: str  #: the person's name (stamped ``human:<who>``)
    since: float


def claim_key(keys: Keys, episode: str) -> str:
    return f"{keys.prefix}seat:{episode}"


def asks_key(keys: Keys, episode: str) -> str:
    return f"{keys.prefix}seat:{episode}:asks"


def _field(seq: int, hop: int) -> str:
    return f"{seq}:{hop}"


async def read_claim(redis: Any, keys: Keys, episode: str) -> Claim | None:
    raw = await redis.hgetall(claim_key(keys, episode))
    if not raw or b"holder" not in raw:
        return None
    return Claim(raw[b"holder"].decode(), raw.get(b"who", b"").decode(), float(raw.get(b"since", b"0")))


async def take_seat(redis: Any, keys: Keys, episode: str, who: str, timeout_s: float) -> Claim:
    """Claim ``episode``'s seat for ``who``; :class:`SeatError` when someone holds it."""
    c = Claim(secrets.token_urlsafe(18), who, time.time())
    ok = await redis.eval(_CLAIM, 1, claim_key(keys, episode), c.holder, who, f"{c.since:.3f}", int(timeout_s * 1000))
    if not ok:
        raise SeatError(f"the user's seat of {episode} is taken")
    return c


async def renew(redis: Any, keys: Keys, episode: str, holder: str, timeout_s: float) -> bool:
    """Extend the claim by ``timeout_s``; False when ``holder`` does not hold it (expired)."""
    return bool(await redis.eval(_RENEW, 1, claim_key(keys, episode), holder, int(timeout_s * 1000)))


async def release(redis: Any, keys: Keys, episode: str, holder: str) -> bool:
    """Give the seat back to the simulator at once; False when ``holder`` does not hold it."""
    return bool(await redis.eval(_RELEASE, 1, claim_key(keys, episode), holder))


async def park(redis: Any, keys: Keys, episode: str, seq: int, hop: int, query: UserQuery) -> None:
    """List the question under the seat (kept as first asked when a redelivery parks it again)."""
    key = asks_key(keys, episode)
    ask = json.dumps({"query": query.to_dict(), "at": time.time()})
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hsetnx(key, _field(seq, hop), ask)
        pipe.expire(key, ASKS_TTL_S)
        await pipe.execute()


async def read_ask(redis: Any, keys: Keys, episode: str, seq: int, hop: int) -> dict[str, Any] | None:
    raw = await redis.hget(asks_key(keys, episode), _field(seq, hop))
    return json.loads(raw) if raw else None


async def answered_by(redis: Any, keys: Keys, episode: str, seq: int, hop: int) -> str:
    """Who won the question ('' while it is open)."""
    raw = await redis.hget(asks_key(keys, episode), _field(seq, hop) + ":by")
    return raw.decode() if raw else ""


async def take(redis: Any, keys: Keys, episode: str, seq: int, hop: int, by: str) -> str:
    """Mark the question as answered by ``by`` unless someone was first; returns the winner."""
    key, f = asks_key(keys, episode), _field(seq, hop) + ":by"
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hsetnx(key, f, by)
        pipe.hget(key, f)
        _, winner = await pipe.execute()
    return winner.decode() if winner else by


async def open_asks(redis: Any, keys: Keys, episode: str) -> list[dict[str, Any]]:
    """The seat's questions nobody has answered yet, oldest first, each with ``seq`` and ``hop``."""
    raw = {k.decode(): v for k, v in (await redis.hgetall(asks_key(keys, episode))).items()}
    out = []
    for f, v in raw.items():
        if f.endswith(":by") or f + ":by" in raw:
            continue
        seq, hop = (int(x) for x in f.split(":"))
        out.append({"seq": seq, "hop": hop, **json.loads(v)})
    return sorted(out, key=lambda a: (a["seq"], a["hop"]))


def human_reply(query: UserQuery, text: str) -> dict[str, Any]:
    """The reply dict for what a person wrote, checked by the gym's own parser (``ValueError``
    with the reason when it does not fit).

    A JSON object is read as the gym's reply format (what its LLM prompt asks for). Plain words
    are the reply's text (``reply``, or ``answer`` for yes/no questions), and the fields the
    words cannot give (which hidden detail a question uncovers, a stance) come from the gym's
    scripted rules for the same question."""
    spec = user_spec(query.env_id)
    t = text.strip()
    if not t:
        raise ValueError("the reply is empty")
    if len(t) > 8000:
        raise ValueError(f"the reply is {len(t)} characters; at most 8000")
    if t.startswith("{"):
        return spec.parse_llm(query, t)
    template = spec.scripted(query)
    key = next((k for k in ("reply", "answer", "text") if isinstance(template.get(k), str)), None)
    if key is None:
        raise ValueError(f"write this reply as JSON in the gym's format, e.g. {json.dumps(template)}")
    return spec.parse_llm(query, json.dumps({**template, key: t}))
