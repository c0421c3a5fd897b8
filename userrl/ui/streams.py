"""Server-Sent Event streams of the web view: the episode log (XREAD BLOCK), periodic
snapshots (episodes list, system) and the tail of ``metrics.jsonl``.

Each stream sends something at least every ``block_ms``/``refresh_s`` (an event or a comment):
writing is how a server notices that the browser tab is gone, and it keeps proxies open.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import structlog
from starlette.responses import StreamingResponse

from userrl.bus.client import RedisError
from userrl.bus.transport import Bus
from userrl.ui.data import MetricsTail

log = structlog.get_logger(__name__)

_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


def sse(event: str, data: Any, event_id: str | None = None) -> str:
    """One Server-Sent Event (JSON data on one line)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def resume_id(last_event_id: str | None) -> str:
    """Where a reconnecting EventSource resumes the episode stream (its Last-Event-ID header
    when that is a stream id, else the start)."""
    return last_event_id if last_event_id and _STREAM_ID.fullmatch(last_event_id) else "0-0"


def event_stream(gen: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        _guarded(gen), media_type="text/event-stream", headers={"cache-control": "no-store", "x-accel-buffering": "no"}
    )


async def _guarded(gen: AsyncIterator[str]) -> AsyncIterator[str]:
    """Ends a stream whose Redis went away with a ``problem`` event; the browser's EventSource
    reconnects by itself after ``retry`` ms (the episode stream resumes from Last-Event-ID)."""
    try:
        async for chunk in gen:
            yield chunk
    except RedisError as exc:
        log.warning("ui.stream_redis_error", error=str(exc))
        yield "retry: 3000\n" + sse("problem", {"error": f"Redis: {type(exc).__name__}: {exc}"})


async def snapshots(event: str, take: Callable[[], Awaitable[Any]], every_s: float) -> AsyncIterator[str]:
    """``take()`` as an event every ``every_s`` seconds."""
    while True:
        yield sse(event, await take())
        await anyio.sleep(every_s)


async def follow_episode(bus: Bus, eid: str, start: str, block_ms: int) -> AsyncIterator[str]:
    """Every entry of the episode's stream after ``start``, then new ones as they come (XREAD
    BLOCK); stops after the ``end`` entry, or at once when the episode finished and expired."""
    if not await bus.store.has_log(eid) and await bus.store.time_in("finished", eid) is not None:
        yield sse("expired", {"episode": eid})
        return
    last = start
    while True:
        got = await bus.store.tail(eid, last, count=256, block_ms=block_ms)
        if not got:
            yield ": waiting\n\n"
            continue
        for last, entry in got:
            yield sse("entry", entry, event_id=last)
            if entry.get("role") == "end":
                yield sse("end", {"episode": eid})
                return


async def tail_metrics(tail: MetricsTail, every_s: float) -> AsyncIterator[str]:
    """New rows of ``metrics.jsonl`` as they are written (``reset`` when the file was replaced)."""
    yield sse("info", {"path": str(tail.path)})
    while True:
        rows, reset = tail.read_new()
        if reset:
            yield sse("reset", {})
        yield sse("rows", rows) if rows else ": idle\n\n"
        await anyio.sleep(every_s)
