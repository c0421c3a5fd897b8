"""Helpers of tests/test_ui.py: uvicorn in a thread, an SSE reader, a deploy handle."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import redis
import uvicorn

from tests.conftest import REPO
from userrl.bus.client import make_client
from userrl.bus.keys import Keys
from userrl.bus.transport import Bus
from userrl.config import load_config
from userrl.deploy.launcher import Launcher
from userrl.envs.datasets import load_tasks
from userrl.rollouts import make_resets, send_resets, wait_trajectories
from userrl.ui import UISettings, create_app

CI = str(REPO / "deploy" / "ci.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """uvicorn serving ``app`` on a free port in a thread (the real server, SSE included)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", ws="none", timeout_graceful_shutdown=1
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "uvicorn did not stop"


def sse_events(
    client: httpx.Client,
    path: str,
    until: Callable[[list[tuple[str, Any]]], bool],
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> list[tuple[str, Any]]:
    """Read ``(event, data)`` pairs (``id`` joined into data as ``_id``) until ``until`` holds."""
    events: list[tuple[str, Any]] = []
    deadline = time.monotonic() + timeout
    with client.stream("GET", path, headers=headers, timeout=timeout) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        name, eid = "", None
        for line in resp.iter_lines():
            assert time.monotonic() < deadline, f"stream {path} timed out with {events[-3:]}"
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("id: "):
                eid = line[4:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if eid and isinstance(data, dict):
                    data["_id"] = eid
                events.append((name, data))
                name, eid = "", None
                if until(events):
                    return events
    raise AssertionError(f"stream {path} ended early: {events[-3:]}")


def run_async(fn: Callable[[Bus], Any], url: str, run: str) -> Any:
    async def go() -> Any:
        bus = Bus(make_client(url), Keys(run))
        try:
            return await fn(bus)
        finally:
            await bus.redis.aclose()

    return anyio.run(go)


class Deploy:
    def __init__(self, redis_url: str, run: str, run_dir: Path, overrides: list[str]) -> None:
        self.redis_url, self.run, self.run_dir, self.overrides = redis_url, run, run_dir, overrides
        self.cfg = load_config(CI, overrides)

    def dispatch(self, gyms: list[str], tasks: int, prefix: str, wait: bool = True, max_turns: int = 0) -> list[str]:
        resets = []
        for gym in gyms:
            resets += make_resets(gym, load_tasks(gym, "test")[:tasks], seed=3, prefix=prefix, max_turns=max_turns)

        async def go(bus: Bus) -> None:
            await send_resets(bus, resets)
            if wait:
                await wait_trajectories(bus, [r.episode_id for r in resets], timeout=120)

        run_async(go, self.redis_url, self.run)
        return [r.episode_id for r in resets]


@contextmanager
def live_deploy(
    redis_url: str, run: str, run_dir: Path, overrides: list[str], policy_class: str, env: dict[str, str]
) -> Iterator[Deploy]:
    """The launcher's env, user and reward workers plus one policy worker of ``policy_class``
    (a test class, ``module:Class``), once all four heartbeat; every key of the run removed after."""
    overrides = [f"run={run}", f"redis={redis_url}", f"run_dir={run_dir}", *overrides]
    overrides += [f"workers.{role}.replicas=1" for role in ("env", "user", "reward")] + ["workers.policy.replicas=0"]
    env = {
        **os.environ,
        "USERRL_REDIS_URL": redis_url,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        **env,
    }
    d = Deploy(redis_url, run, run_dir, overrides)
    la = Launcher(d.cfg, CI, overrides, env=env, stop_timeout_s=15).start().start_background()
    argv = [sys.executable, "-m", "userrl", "worker", "--class", policy_class, "--name", "policy-0", "--config", CI]
    argv += sum((["--set", o] for o in overrides), [])
    log_path = run_dir / "policy.log"
    with open(log_path, "wb") as log:
        policy = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
    try:
        with redis.Redis.from_url(redis_url) as r:
            deadline = time.monotonic() + 90
            for role, name in (("env", "env-0"), ("user", "user-0"), ("reward", "reward-0"), ("policy", "policy-0")):
                while not r.exists(Keys(run).heartbeat(role, name)):
                    assert time.monotonic() < deadline and policy.poll() is None, log_path.read_text()[-2000:]
                    time.sleep(0.1)
        yield d
    finally:
        policy.terminate()
        try:
            policy.wait(timeout=15)
        except subprocess.TimeoutExpired:
            policy.kill()
            policy.wait()
        la.stop()
        with redis.Redis.from_url(redis_url) as r:
            for key in r.scan_iter(match=Keys(run).prefix + "*", count=500):
                r.delete(key)


def refusals(r: redis.Redis, user: str) -> list[dict[str, Any]]:
    return [
        {"count": int(e["count"]), "object": e["object"]} for e in r.acl_log(count=128) if e.get("username") == user
    ]


def make_ui(deploy: Deploy, url: str, **kw: Any) -> Any:
    cfg = deploy.cfg
    settings = UISettings(run_dir=str(deploy.run_dir), refresh_s=0.3, block_ms=300, **kw)
    return create_app(settings, lambda: Bus(make_client(url, block_ms=300), Keys(cfg.run)))


def add_dead_letter(deploy: Deploy) -> None:
    async def go(bus: Bus) -> None:
        stream = bus.keys.stream("audit")
        await bus.ensure_group(stream, "audit")
        await bus.redis.xadd(stream, {"p": b"\xc1 not msgpack"})
        (d,) = await bus.read(stream, "audit", "audit-0")
        await bus.dead_letter(d, "undecodable: <b>not msgpack</b>")

    run_async(go, deploy.redis_url, deploy.run)


def wait_until(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = fn()
        except Exception:  # the element is not there yet / went stale while the page redrew it
            got = None
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
