"""The web view's routes: four pages, JSON snapshots, and Server-Sent Event streams.

Every route is a GET and every Redis command it sends is a read (XRANGE, XREAD, ZREVRANGE,
HGET, XINFO, SCAN, MGET, ...): the view cannot change the bus. The pages are static HTML with
a little JS that builds the DOM with ``textContent``, so text from models and users is shown,
never interpreted.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from userrl.bus.transport import Bus
from userrl.deploy.episodes import _entry, read_episode, summarize
from userrl.errors import ConfigError
from userrl.ui.data import STATUSES, EpisodeReader, MetricsTail, system_snapshot
from userrl.ui.security import Guard, check_bind, is_loopback

log = structlog.get_logger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"/episodes": "episodes.html", "/episode": "episode.html", "/system": "system.html",
         "/learning": "learning.html"}
_TOKEN_OK = re.compile(r"[A-Za-z0-9._~+/=-]{8,256}")


@dataclass(frozen=True)
class UISettings:
    """How ``userrl ui`` serves (command-line flags; the deploy comes from its config)."""

    host: str = "127.0.0.1"
    """Address to bind; anything but loopback needs ``token``."""
    port: int = 8321
    """TCP port (0 = any free one)."""
    token: str = ""
    """Shared secret every request must carry (header, ``?token=`` or cookie); empty = none."""
    run_dir: str = "runs/local"
    """Run directory whose ``metrics.jsonl`` the learning page plots."""
    refresh_s: float = 1.5
    """Seconds between two snapshots of the episodes list, the system page and the metrics."""
    episode_limit: int = 100
    """Newest live and newest finished episodes listed (each)."""
    block_ms: int = 1000
    """XREAD BLOCK time of an episode stream (a keep-alive comment is sent after each)."""
    gyms: tuple[str, ...] = ()
    """Gyms offered by the list's filter besides those seen in Redis (the deploy's ``gyms``)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"ui.port: {self.port} is not a TCP port (0-65535)")
        if self.token and not _TOKEN_OK.fullmatch(self.token):
            raise ConfigError("ui.token: use 8-256 characters from A-Z a-z 0-9 . _ ~ + / = -")
        if self.refresh_s <= 0:
            raise ConfigError(f"ui.refresh_s: must be > 0, got {self.refresh_s}")
        if self.episode_limit < 1:
            raise ConfigError(f"ui.episode_limit: must be >= 1, got {self.episode_limit}")
        if self.block_ms < 10:
            raise ConfigError(f"ui.block_ms: must be >= 10, got {self.block_ms}")
        check_bind(self.host, self.token)


def sse(event: str, data: Any, event_id: str | None = None) -> str:
    """One Server-Sent Event (JSON data on one line)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _guarded(gen: AsyncIterator[str]) -> AsyncIterator[str]:
    """Ends a stream whose Redis went away with a ``problem`` event; the browser's EventSource
    reconnects by itself after ``retry`` ms (the episode stream resumes from Last-Event-ID)."""
    try:
        async for chunk in gen:
            yield chunk
    except RedisError as exc:
        log.warning("ui.stream_redis_error", error=str(exc))
        yield "retry: 3000\n" + sse("problem", {"error": f"Redis: {type(exc).__name__}: {exc}"})


def _stream(gen: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(_guarded(gen), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


async def _redis_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("ui.redis_error", path=request.url.path, error=str(exc))
    return JSONResponse({"error": f"Redis: {type(exc).__name__}: {exc}"}, status_code=503)


def create_app(settings: UISettings, connect: Callable[[], Bus]) -> Starlette:
    """The ASGI app; ``connect`` makes the (read-only) Bus when the server starts."""
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        bus = connect()
        state["bus"], state["episodes"] = bus, EpisodeReader(bus)
        try:
            yield
        finally:
            await bus.redis.aclose()

    def bus() -> Bus:
        return state["bus"]

    def page(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            return FileResponse(STATIC / name, headers={"cache-control": "no-store"})
        return serve

    def known_gyms() -> list[str]:
        return sorted({g.split("/")[-1] for g in settings.gyms} | state["episodes"].gyms())

    def filters(request: Request) -> tuple[str, str, int]:
        q = request.query_params
        status = q.get("status", "")
        if status and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        limit = min(max(int(q.get("limit", settings.episode_limit)), 1), 1000)
        return q.get("gym", ""), status, limit

    async def api_episodes(request: Request) -> Response:
        try:
            gym, status, limit = filters(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        rows = await state["episodes"].rows(limit, gym, status)
        return JSONResponse({"at": time.time(), "rows": rows, "gyms": known_gyms()})

    async def api_episode(request: Request) -> Response:
        eid = request.query_params.get("id", "")
        entries = await read_episode(bus(), eid)
        gym, task = await state["episodes"].gym_task(eid)
        finished = await bus().redis.zscore(bus().keys.finished, eid) is not None
        live = await bus().redis.zscore(bus().keys.live, eid) is not None
        return JSONResponse({"episode": eid, "gym": gym, "task": task, "entries": entries,
                             "state": "live" if live else "finished" if finished else "unknown",
                             **summarize(entries)})

    async def api_system(request: Request) -> Response:
        try:
            sample = min(max(float(request.query_params.get("sample", "0")), 0.0), 5.0)
        except ValueError:
            return JSONResponse({"error": "sample must be a number of seconds"}, status_code=400)
        return JSONResponse(await system_snapshot(bus(), sample_s=sample))

    async def api_metrics(request: Request) -> Response:
        rows, _ = MetricsTail(Path(settings.run_dir) / "metrics.jsonl").read_new()
        return JSONResponse({"path": str(Path(settings.run_dir) / "metrics.jsonl"), "rows": rows})

    async def stream_episodes(request: Request) -> Response:
        try:
            gym, status, limit = filters(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

        async def gen() -> AsyncIterator[str]:
            while True:
                rows = await state["episodes"].rows(limit, gym, status)
                yield sse("episodes", {"at": time.time(), "rows": rows, "gyms": known_gyms()})
                await anyio.sleep(settings.refresh_s)
        return _stream(gen())

    async def stream_episode(request: Request) -> Response:
        eid = request.query_params.get("id", "")
        start = request.headers.get("last-event-id") or "0-0"  # a reconnecting EventSource resumes
        return _stream(follow_episode(bus(), eid, start, settings.block_ms))

    async def stream_system(request: Request) -> Response:
        async def gen() -> AsyncIterator[str]:
            while True:
                yield sse("system", await system_snapshot(bus(), sample_s=min(1.0, settings.refresh_s)))
                await anyio.sleep(settings.refresh_s)
        return _stream(gen())

    async def stream_metrics(request: Request) -> Response:
        tail = MetricsTail(Path(settings.run_dir) / "metrics.jsonl")

        async def gen() -> AsyncIterator[str]:
            yield sse("info", {"path": str(tail.path)})
            while True:
                rows, reset = tail.read_new()
                if reset:
                    yield sse("reset", {})
                yield sse("rows", rows) if rows else ": idle\n\n"
                await anyio.sleep(settings.refresh_s)
        return _stream(gen())

    async def home(request: Request) -> Response:
        return RedirectResponse("/episodes")

    routes = [Route("/", home),
              *(Route(path, page(name)) for path, name in PAGES.items()),
              Route("/api/episodes", api_episodes), Route("/api/episode", api_episode),
              Route("/api/system", api_system), Route("/api/metrics", api_metrics),
              Route("/api/stream/episodes", stream_episodes), Route("/api/stream/episode", stream_episode),
              Route("/api/stream/system", stream_system), Route("/api/stream/metrics", stream_metrics),
              Mount("/static", StaticFiles(directory=STATIC))]
    middleware = [Middleware(Guard, token=settings.token)]
    if is_loopback(settings.host) and not settings.token:
        # no token: only loopback names, so a page elsewhere cannot reach us by DNS rebinding
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]", "::1"]))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                     exception_handlers={RedisError: _redis_unavailable})


async def follow_episode(bus: Bus, eid: str, start: str, block_ms: int) -> AsyncIterator[str]:
    """Every entry of the episode's stream after ``start``, then new ones as they come (XREAD
    BLOCK); stops after the ``end`` entry, or at once when the episode finished and expired."""
    key = bus.keys.episode(eid)
    if not await bus.redis.exists(key) and await bus.redis.zscore(bus.keys.finished, eid) is not None:
        yield sse("expired", {"episode": eid})
        return
    last = start
    while True:
        resp = await bus.redis.xread({key: last}, count=256, block=block_ms)
        if not resp:
            yield ": waiting\n\n"  # keeps proxies open and notices a closed browser tab
            continue
        for raw_id, fields in resp[0][1]:
            last = raw_id.decode()
            entry = _entry(fields)
            yield sse("entry", entry, event_id=last)
            if entry.get("role") == "end":
                yield sse("end", {"episode": eid})
                return
