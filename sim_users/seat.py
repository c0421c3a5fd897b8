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

The claims and parked questions are kept in Redis by :mod:`userrl.bus.seat` (``Bus.seat``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import anyio

from userrl.bus.messages import HumanReply, UserRequest
from userrl.bus.seat import ASKS_TTL_S, Claim, SeatStore
from userrl.envs.registry import user_spec
from userrl.errors import MessageError
from userrl.sim_users.base import UserQuery
from userrl.sim_users.stamp import HUMAN, human_stamp

__all__ = ["ASKS_TTL_S", "Claim", "SeatError", "accept", "human_reply", "wait_for_seat"]


class SeatError(Exception):
    """A seat operation that cannot be done (taken, not the holder, nothing asked)."""


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
    seats: SeatStore,
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
    winner = await seats.answered_by(ep, m.seq, m.hop)
    if not winner and await seats.claim(ep) is None:
        return simulator  # the common case: nobody in the seat, nothing parked
    if not winner:
        await seats.park(ep, m.seq, m.hop, query.to_dict())
        on_park(m)
    while not winner:
        if await seats.claim(ep) is None:  # released or timed out: back to the simulator
            return await seats.take(ep, m.seq, m.hop, simulator)
        await anyio.sleep(poll_s)
        winner = await seats.answered_by(ep, m.seq, m.hop)
    return winner if winner.startswith(HUMAN) else simulator


async def accept(seats: SeatStore, h: HumanReply) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """``(reply, stamp, stats)`` of a person's reply that is still theirs to give: they hold the
    claim, the question is open (or already won by them: a redelivery), the gym accepts the
    reply. :class:`SeatError` with the reason otherwise."""
    ep = h.episode_id
    try:
        by = human_stamp(h.who)
    except ValueError as exc:
        raise MessageError(f"human_reply {ep}:{h.seq}:{h.hop}: {exc}") from exc
    claim = await seats.claim(ep)
    if claim is None or claim.holder != h.holder:
        raise SeatError("the claim on the user's seat expired or is someone else's")
    ask = await seats.ask(ep, h.seq, h.hop)
    if ask is None:
        raise SeatError("no such question is waiting for the user")
    try:
        reply = human_reply(UserQuery.from_dict(ask["query"]), h.text)
    except ValueError as exc:
        raise SeatError(f"the reply does not fit the gym: {exc}") from exc
    winner = await seats.take(ep, h.seq, h.hop, by)
    if winner != by:
        raise SeatError(f"already answered by {winner}")
    ms = max(0.0, time.time() - float(ask.get("at", time.time()))) * 1000
    return reply, by, {"ms": round(ms, 1), "attempts": 1, "malformed": 0, "empty": 0, "leaks": 0, "redacted": False}
