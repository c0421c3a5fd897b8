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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from userrl.bus.keys import Keys
from userrl.bus.messages import HumanReply, UserRequest
from userrl.envs.registry import user_spec
from userrl.errors import MessageError
from userrl.sim_users.base import UserQuery
from userrl.sim_users.stamp import HUMAN, human_stamp

__all__ = [
    "ASKS_TTL_S",
    "accept",
    "wait_for_seat",
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


# ---- the user worker's side -----------------------------------------------------------------------


async def wait_for_seat(
    redis: Any,
    keys: Keys,
    m: UserRequest,
    query: UserQuery,
    simulator: str,
    poll_s: float,
    on_park: Callable[[UserRequest], None] = lambda m: None,
) -> str:
    """Who answers the user question ``m``: the person (``human:<who>``: their reply's commit
    announces it) or ``simulator``. Without a claim on the episode that is the simulator at once;
    with one the question is parked until the person's reply wins it or the claim ends."""
    ep = m.episode_id
    winner = await answered_by(redis, keys, ep, m.seq, m.hop)
    if not winner and await read_claim(redis, keys, ep) is None:
        return simulator  # the common case: nobody in the seat, nothing parked
    if not winner:
        await park(redis, keys, ep, m.seq, m.hop, query)
        on_park(m)
    while not winner:
        if await read_claim(redis, keys, ep) is None:  # released or timed out: back to the simulator
            return await take(redis, keys, ep, m.seq, m.hop, simulator)
        await anyio.sleep(poll_s)
        winner = await answered_by(redis, keys, ep, m.seq, m.hop)
    return winner if winner.startswith(HUMAN) else simulator


async def accept(redis: Any, keys: Keys, h: HumanReply) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """``(reply, stamp, stats)`` of a person's reply that is still theirs to give: they hold the
    claim, the question is open (or already won by them: a redelivery), the gym accepts the
    reply. :class:`SeatError` with the reason otherwise."""
    ep = h.episode_id
    try:
        by = human_stamp(h.who)
    except ValueError as exc:
        raise MessageError(f"human_reply {ep}:{h.seq}:{h.hop}: {exc}") from exc
    claim = await read_claim(redis, keys, ep)
    if claim is None or claim.holder != h.holder:
        raise SeatError("the claim on the user's seat expired or is someone else's")
    ask = await read_ask(redis, keys, ep, h.seq, h.hop)
    if ask is None:
        raise SeatError("no such question is waiting for the user")
    try:
        reply = human_reply(UserQuery.from_dict(ask["query"]), h.text)
    except ValueError as exc:
        raise SeatError(f"the reply does not fit the gym: {exc}") from exc
    winner = await take(redis, keys, ep, h.seq, h.hop, by)
    if winner != by:
        raise SeatError(f"already answered by {winner}")
    ms = max(0.0, time.time() - float(ask.get("at", time.time()))) * 1000
    return reply, by, {"ms": round(ms, 1), "attempts": 1, "malformed": 0, "empty": 0, "leaks": 0, "redacted": False}
