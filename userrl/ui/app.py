"""The web view's routes: four pages, JSON snapshots, and Server-Sent Event streams.

Every route is a GET and every Redis command it sends is a read (XRANGE, XREAD, ZREVRANGE,
HGET, XINFO, SCAN, MGET, ...): the view cannot change the bus. The one exception is opt-in:
with ``user.seat`` on (and a token), the seat's routes (:mod:`userrl.ui.seat`) let a person
claim a live episode and write its user's replies. The pages are static HTML with a little JS
that builds the DOM with ``textContent``, so text from models and users is shown, never
interpreted.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from userrl.bus.client import RedisError
from userrl.bus.transport import Bus
from userrl.deploy.episodes import read_episode, summarize
from userrl.errors import ConfigError
from userrl.ui.data import STATUSES, EpisodeReader, MetricsTail, system_snapshot
from userrl.ui.seat import SeatViews, seat_routes
from userrl.ui.security import Guard, check_bind, is_loopback
from userrl.ui.streams import event_stream, follow_episode, resume_id, snapshots, tail_metrics

log = structlog.get_logger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
PAGES = {
    "/episodes": "episodes.html",
    "/episode": "episode.html",
    "/system": "system.html",
    "/learning": "learning.html",
}
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
    seat: bool = False
    """Serve the user's seat (the deploy's ``user.seat``): a person may claim a live episode and
    write its user's replies. Needs ``token``; off, the view only reads."""
    seat_timeout_s: float = 60.0
    """A claim its page stops renewing expires after this long (the deploy's ``user.seat_timeout_s``)."""

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
        if self.seat and not self.token:
            raise ConfigError(
                "user.seat: the web view's user seat writes into live episodes, so it needs a token "
                "(--token or USERRL_UI_TOKEN)"
            )


class Views:
    """The route handlers; ``connect`` makes the (read-only) Bus when the server starts."""

    def __init__(self, settings: UISettings, connect: Callable[[], Bus]) -> None:
        self.settings = settings
        self.connect = connect
        self._bus: Bus | None = None
        self._episodes: EpisodeReader | None = None

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._bus = self.connect()
        self._episodes = EpisodeReader(self._bus)
        try:
            yield
        finally:
            await self._bus.close()

    @property
    def bus(self) -> Bus:
        assert self._bus is not None, "the app's lifespan has not started"
        return self._bus

    @property
    def episodes(self) -> EpisodeReader:
        assert self._episodes is not None, "the app's lifespan has not started"
        return self._episodes

    @property
    def metrics_path(self) -> Path:
        return Path(self.settings.run_dir) / "metrics.jsonl"

    # -- pages -----------------------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        return RedirectResponse("/episodes")

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / PAGES[request.url.path], headers={"cache-control": "no-store"})

    # -- JSON snapshots ----------------------------------------------------------------------
    def known_gyms(self) -> list[str]:
        return sorted({g.split("/")[-1] for g in self.settings.gyms} | self.episodes.gyms())

    def filters(self, request: Request) -> tuple[str, str, int]:
        q = request.query_params
        status = q.get("status", "")
        if status and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        try:
            limit = min(max(int(q.get("limit", self.settings.episode_limit)), 1), 1000)
        except ValueError:
            raise ValueError("limit must be an integer") from None
        return q.get("gym", ""), status, limit

    async def episode_list(self, gym: str, status: str, limit: int) -> dict[str, Any]:
        rows = await self.episodes.rows(limit, gym, status)
        return {"at": time.time(), "rows": rows, "gyms": self.known_gyms()}

    async def api_episodes(self, request: Request) -> Response:
        try:
            gym, status, limit = self.filters(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(await self.episode_list(gym, status, limit))

    async def api_episode(self, request: Request) -> Response:
        eid = request.query_params.get("id", "")
        entries = await read_episode(self.bus, eid)
        gym, task = await self.episodes.gym_task(eid)
        live = await self.bus.store.time_in("live", eid) is not None
        finished = await self.bus.store.time_in("finished", eid) is not None
        return JSONResponse(
            {
                "episode": eid,
                "gym": gym,
                "task": task,
                "entries": entries,
                "state": "live" if live else "finished" if finished else "unknown",
                "seat": self.settings.seat,
                **summarize(entries),
            }
        )

    async def api_system(self, request: Request) -> Response:
        try:
            sample = min(max(float(request.query_params.get("sample", "0")), 0.0), 5.0)
        except ValueError:
            return JSONResponse({"error": "sample must be a number of seconds"}, status_code=400)
        return JSONResponse(await system_snapshot(self.bus, sample_s=sample))

    async def api_metrics(self, request: Request) -> Response:
        rows, _ = MetricsTail(self.metrics_path).read_new()
        return JSONResponse({"path": str(self.metrics_path), "rows": rows})

    # -- Server-Sent Events ------------------------------------------------------------------
    async def stream_episodes(self, request: Request) -> Response:
        try:
            gym, status, limit = self.filters(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return event_stream(
            snapshots("episodes", lambda: self.episode_list(gym, status, limit), self.settings.refresh_s)
        )

    async def stream_episode(self, request: Request) -> Response:
        start = resume_id(request.headers.get("last-event-id"))  # a reconnecting EventSource resumes
        return event_stream(follow_episode(self.bus, request.query_params.get("id", ""), start, self.settings.block_ms))

    async def stream_system(self, request: Request) -> Response:
        sample = min(1.0, self.settings.refresh_s)
        return event_stream(
            snapshots("system", lambda: system_snapshot(self.bus, sample_s=sample), self.settings.refresh_s)
        )

    async def stream_metrics(self, request: Request) -> Response:
        return event_stream(tail_metrics(MetricsTail(self.metrics_path), self.settings.refresh_s))


async def _redis_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("ui.redis_error", path=request.url.path, error=str(exc))
    return JSONResponse({"error": f"Redis: {type(exc).__name__}: {exc}"}, status_code=503)


def create_app(settings: UISettings, connect: Callable[[], Bus]) -> Starlette:
    """The ASGI app; ``connect`` makes the (read-only) Bus when the server starts."""
    v = Views(settings, connect)
    routes = [
        Route("/", v.home),
        *(Route(path, v.page) for path in PAGES),
        Route("/api/episodes", v.api_episodes),
        Route("/api/episode", v.api_episode),
        Route("/api/system", v.api_system),
        Route("/api/metrics", v.api_metrics),
        Route("/api/stream/episodes", v.stream_episodes),
        Route("/api/stream/episode", v.stream_episode),
        Route("/api/stream/system", v.stream_system),
        Route("/api/stream/metrics", v.stream_metrics),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    if settings.seat:
        routes += seat_routes(SeatViews(lambda: v.bus, settings.seat_timeout_s))
    middleware = [Middleware(Guard, token=settings.token)]
    if is_loopback(settings.host) and not settings.token:
        # no token: only loopback names, so a page elsewhere cannot reach us by DNS rebinding
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "::1"]))
    return Starlette(
        routes=routes, middleware=middleware, lifespan=v.lifespan, exception_handlers={RedisError: _redis_unavailable}
    )
