"""Test fixtures: one real Redis-compatible server per test session (never a mock for the bus)."""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from userrl.bus.client import make_client
from userrl.bus.embedded import EmbeddedRedis
from userrl.bus.keys import Keys
from userrl.bus.transport import Bus, BusSettings
from userrl.runtime import cpu_thread_defaults

# as every userrl process: on a loaded CI machine spinning OpenMP threads slow torch many times
cpu_thread_defaults()

# Property tests draw the same examples on every run: CI must not fail by luck. Set
# HYPOTHESIS_PROFILE=explore locally to search with fresh random examples.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SHARED_DATA = REPO.parent / "shared" / "userrl-data"


@pytest.fixture(autouse=True)
def _drop_userrl_log_handlers() -> Iterator[None]:
    """A CLI command run in-process (``configure_logging`` with a log file) adds a handler on the
    test's captured stderr, which pytest closes after the test: later tests' warnings then hit a
    closed file. Remove ours after each test (the next command adds its own)."""
    yield
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_userrl", False):
            root.removeHandler(h)
            h.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def run_name() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def fast_settings() -> BusSettings:
    return BusSettings(read_count=16, block_ms=100, min_idle_ms=400, max_deliveries=3)


@pytest.fixture
async def bus(redis_url: str, run_name: str, fast_settings: BusSettings) -> AsyncIterator[Bus]:
    client = make_client(redis_url, block_ms=fast_settings.block_ms)
    b = Bus(client, Keys(run_name), fast_settings)
    yield b
    async for key in client.scan_iter(match=b.keys.prefix + "*", count=500):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
def subprocess_env(redis_url: str) -> dict[str, str]:
    """Environment for worker subprocesses: the test server and the tests folder on the path."""
    env = dict(os.environ)
    env["USERRL_REDIS_URL"] = redis_url
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def python() -> str:
    return sys.executable
