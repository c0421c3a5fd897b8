"""The web view's user seat: a person claims a live episode and writes the user's replies.

Served only with ``user.seat: true`` (and a token: a person writes into live episodes); without
it none of these routes exist and the view sends no write command. With it, the view writes
only what :mod:`userrl.sim_users.seat` defines: a claim (and its renewal and release) and a
person's reply, sent as a :class:`~userrl.bus.messages.HumanReply` on the ``user`` stream, where
a user worker checks it again and commits it like a simulator's reply.

Every write is a ``POST`` with a JSON body (a cross-site form cannot send one without a CORS
preflight, which this server never answers), carrying the claim's secret ``holder`` id except
the claim itself: a claimed episode accepts only user replies, only from its holder, and only
for a question the user worker parked for the seat.

::

    GET  /api/seat?id=EP[&holder=H]     the claim (who, since); with the holder: the open questions
    POST /api/seat/claim   {id, who}                     -> {holder, who, timeout_s}
    POST /api/seat/renew   {id, holder}
    POST /api/seat/release {id, holder}
    POST /api/seat/reply   {id, holder, seq, hop, text}  -> 202 once sent on the user stream
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from userrl.bus.messages import HumanReply
from userrl.bus.transport import Bus
from userrl.envs.registry import user_spec
from userrl.sim_users import seat
from userrl.sim_users.base import UserQuery
from userrl.sim_users.stamp import human_stamp

log = structlog.get_logger(__name__)

MAX_BODY = 64 * 1024


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request, *names: str) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise _Refused(415, "send a JSON body (content-type: application/json)")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise _Refused(413, f"the body is over {MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        raise _Refused(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise _Refused(400, "the body must be a JSON object")
    missing = [n for n in names if n not in body]
    if missing:
        raise _Refused(400, f"missing {', '.join(missing)}")
    return body


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def describe_ask(ask: dict[str, Any]) -> dict[str, Any]:
    """What the page shows a person for one open question: the gym's own instructions to a
    model playing the user (persona, hidden facts, reply format), the question itself, and what
    the scripted user would answer."""
    query = UserQuery.from_dict(ask["query"])
    spec = user_spec(query.env_id)
    messages = spec.llm_messages(query)
    try:
        hint = json.dumps(spec.scripted(query), ensure_ascii=False)
    except Exception:  # a hint is a convenience; a gym without one still gets its question shown
        hint = ""
    return {
        "seq": ask["seq"],
        "hop": ask["hop"],
        "name": query.name,
        "instructions": messages[0]["content"] if messages else "",
        "question": messages[-1]["content"] if len(messages) > 1 else json.dumps(query.payload),
        "hint": hint,
        "asked_s": round(max(0.0, time.time() - float(ask.get("at", time.time()))), 1),
    }


class SeatViews:
    """The seat's routes over the view's (read-write) bus."""

    def __init__(self, get_bus: Callable[[], Bus], timeout_s: float) -> None:
        self.get_bus = get_bus  #: the app's Bus (it exists once the app has started)
        self.timeout_s = timeout_s

    @property
    def bus(self) -> Bus:
        return self.get_bus()

    async def seat_workers(self) -> int:
        """User workers alive with the seat on (without one, a claim would change nothing)."""
        return sum(bool(hb.get("seat")) for hb in await self.bus.control.heartbeats("user"))

    async def state(self, request: Request) -> Response:
        q = request.query_params
        eid, holder = q.get("id", ""), q.get("holder", "")
        seats = self.bus.seat
        claim = await seats.claim(eid)
        ttl = await seats.claim_ttl_ms(eid) if claim else -1
        out: dict[str, Any] = {
            "enabled": True,
            "timeout_s": self.timeout_s,
            "live": await self.bus.store.time_in("live", eid) is not None,
            "claim": {"who": claim.who, "since": claim.since, "expires_in_s": max(0, ttl) / 1000} if claim else None,
            "mine": bool(claim and holder and claim.holder == holder),
        }
        if out["mine"]:
            out["asks"] = [describe_ask(a) for a in await seats.open_asks(eid)]
        return JSONResponse(out)

    async def claim(self, request: Request) -> Response:
        try:
            body = await _body(request, "id", "who")
            eid, who = str(body["id"]), str(body["who"])
            human_stamp(who)  # the name is checked before anything is written
        except _Refused as exc:
            return _error(exc.status, str(exc))
        except ValueError as exc:
            return _error(400, str(exc))
        if await self.bus.store.time_in("live", eid) is None:
            return _error(404, f"{eid} is not a live episode")
        if not await self.seat_workers():
            return _error(409, "no user worker has user.seat on: nobody would hand the questions to you")
        c = await self.bus.seat.take_seat(eid, who, self.timeout_s)
        if c is None:
            return _error(409, f"the user's seat of {eid} is taken")
        log.info("ui.seat_claimed", episode_id=eid, who=who)
        return JSONResponse({"holder": c.holder, "who": c.who, "timeout_s": self.timeout_s})

    async def renew(self, request: Request) -> Response:
        try:
            body = await _body(request, "id", "holder")
        except _Refused as exc:
            return _error(exc.status, str(exc))
        if not await self.bus.seat.renew(str(body["id"]), str(body["holder"]), self.timeout_s):
            return _error(410, "the claim is gone (it timed out, or it is not yours)")
        return JSONResponse({"ok": True, "timeout_s": self.timeout_s})

    async def release(self, request: Request) -> Response:
        try:
            body = await _body(request, "id", "holder")
        except _Refused as exc:
            return _error(exc.status, str(exc))
        if not await self.bus.seat.release(str(body["id"]), str(body["holder"])):
            return _error(403, "you do not hold this seat")
        log.info("ui.seat_released", episode_id=body["id"])
        return JSONResponse({"ok": True})

    async def reply(self, request: Request) -> Response:
        try:
            body = await _body(request, "id", "holder", "seq", "hop", "text")
            eid, holder, text = str(body["id"]), str(body["holder"]), body["text"]
            seq, hop = int(body["seq"]), int(body["hop"])
            if not isinstance(text, str):
                raise _Refused(400, "text must be a string")
        except _Refused as exc:
            return _error(exc.status, str(exc))
        except (TypeError, ValueError):
            return _error(400, "seq and hop must be integers")
        seats, k = self.bus.seat, self.bus.keys
        claim = await seats.claim(eid)
        if claim is None or claim.holder != holder:
            return _error(403, "only the holder of the claim on this episode's user seat may reply")
        ask = await seats.ask(eid, seq, hop)
        if ask is None or await seats.answered_by(eid, seq, hop):
            return _error(409, "that question is not waiting for the user (answered, or never asked)")
        try:
            seat.human_reply(UserQuery.from_dict(ask["query"]), text)
        except ValueError as exc:
            return _error(422, f"the reply does not fit: {exc}")
        msg = HumanReply(episode_id=eid, seq=seq, hop=hop, text=text, holder=holder, who=claim.who)
        await self.bus.send(k.stream("user"), msg, {"episode": eid, "who": claim.who})
        await seats.renew(eid, holder, self.timeout_s)  # replying is being there
        log.info("ui.seat_reply", episode_id=eid, seq=seq, hop=hop, who=claim.who)
        return JSONResponse({"sent": True}, status_code=202)


def seat_routes(views: SeatViews) -> list[Route]:
    return [
        Route("/api/seat", views.state),
        Route("/api/seat/claim", views.claim, methods=["POST"]),
        Route("/api/seat/renew", views.renew, methods=["POST"]),
        Route("/api/seat/release", views.release, methods=["POST"]),
        Route("/api/seat/reply", views.reply, methods=["POST"]),
    ]
