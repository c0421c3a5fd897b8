"""Issue #16 with real processes and a real Redis that dies: a worker honours SIGTERM while Redis
is down (its in-flight entries stay pending for a peer), and a kill -9 of the server mid-run of
hundreds of episodes ends every episode finished or reported failed, none twice, none silently."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis as sync_redis

from userrl.bus.client import make_client
from userrl.bus.embedded import EmbeddedRedis
from userrl.bus.keys import Keys
from userrl.bus.messages import UserRequest, encode
from userrl.bus.transport import Bus, BusSettings
from userrl.envs.datasets import load_tasks
from userrl.rollouts import Waiter, make_resets, send_resets

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CI = Path(__file__).resolve().parents[1] / "deploy" / "ci.yaml"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    srv = EmbeddedRedis(data_dir=tmp_path / "redis", persist=True)
    (tmp_path / "redis").mkdir()
    srv.start()
    yield srv
    if srv.proc is not None:
        os.kill(srv.proc.pid, signal.SIGCONT)
    srv.stop()


def _worker(
    args: list[str], name: str, url: str, env: dict[str, str], python: str, tmp: Path, **extra_env: str
) -> subprocess.Popen[bytes]:
    log = open(tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
    p = subprocess.Popen(
        [python, "-m", "userrl", "worker", *args, "--name", name, "--config", str(CI)],
        env={**env, "USERRL_REDIS_URL": url, **extra_env},
        stdout=log,
        stderr=log,
    )
    log.close()
    return p


def _sigterm(w: subprocess.Popen[bytes]) -> tuple[int, float]:
    """SIGTERM the worker; its exit code and how many seconds it took to exit."""
    t0 = time.monotonic()
    w.send_signal(signal.SIGTERM)
    rc = w.wait(timeout=90)
    return rc, time.monotonic() - t0


def _gave_up_on_redis(log: Path) -> bool:
    """Whether the worker's stop abandoned its work because it saw Redis was down (the other
    reason, ``redis_down: false``, is the 15 s grace running out: the slow exit this guards)."""
    lines = [json.loads(x) for x in log.read_text().splitlines() if "worker.shutdown_abandoned" in x]
    return bool(lines) and all(x["redis_down"] is True for x in lines)


def _wait(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _pending(r: sync_redis.Redis, stream: str) -> int:
    try:
        return int(r.xpending(stream, "user")["pending"])
    except sync_redis.ResponseError:  # the worker has not created its group yet
        return 0


@pytest.mark.parametrize("outage", ["sigstop", "kill"])
def test_sigterm_while_redis_is_down(server: EmbeddedRedis, outage: str, subprocess_env, python, tmp_path) -> None:
    """Fix 5: a user worker with requests in flight; Redis freezes (SIGSTOP: commands hang) or
    dies (connections refused); SIGTERM: the worker exits within seconds and every request is
    still pending, for a peer or its restart."""
    r = sync_redis.Redis.from_url(server.url)
    keys = Keys("crash")
    stream = keys.stream("user")
    q = {"env_id": "userrl/Telepathy-v0", "kind": "respond", "name": "yes_no", "payload": {}}
    for i in range(4):
        r.xadd(stream, {b"p": encode(UserRequest(episode_id=f"e{i}", seq=1, hop=1, query=q))})
    w = _worker(
        ["--class", "tests.slow_user_worker:SlowUserWorker", "--set", "run=crash"],
        "slow-0",
        server.url,
        subprocess_env,
        python,
        tmp_path,
        SLOW_USER_S="30",
    )
    try:
        _wait(lambda: _pending(r, stream) == 4, 60, "the worker to take the requests")
        time.sleep(1.5)  # AOF everysec: the deliveries are on disk before the server dies
        assert server.proc is not None
        if outage == "sigstop":
            os.kill(server.proc.pid, signal.SIGSTOP)
        else:
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
            server.stop()  # reaps it and closes its pipe; the data dir stays (persist)
        rc, took = _sigterm(w)
    finally:
        if w.poll() is None:
            w.kill()
    # What happened, not how fast: it saw the outage and gave up at once instead of waiting out its
    # grace. _sigterm's 90 s wait only rules out a hang (generous for a loaded CI machine's teardown).
    assert rc == 0 and _gave_up_on_redis(tmp_path / "slow-0.log"), f"exit {rc} after {took:.1f}s (log: {tmp_path})"
    if outage == "sigstop":
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGCONT)
    else:
        server.start()
        r = sync_redis.Redis.from_url(server.url)
    assert r.xpending(stream, "user")["pending"] == 4, "in-flight requests must stay pending"
    assert r.xlen(keys.stream("env")) == 0, "nothing was answered"


@pytest.mark.timeout(420)
@pytest.mark.parametrize("aof", [False, True], ids=["no-aof", "aof"])
def test_redis_kill_mid_run_loses_nothing_silently(aof: bool, tmp_path, subprocess_env, python) -> None:
    """Reconciler: 240 episodes on env/policy/user/reward worker processes; the server is killed
    with SIGKILL mid-run and restarted, without its data (the worst case: no AOF) or from its AOF
    (appendfsync everysec). Every episode ends finished or reported failed (with the reason),
    exactly once, none silently lost."""
    (tmp_path / "redis").mkdir()
    srv = EmbeddedRedis(data_dir=tmp_path / "redis", persist=aof).start()
    bus_args = ["--set", "run=crash", "--set", "bus.min_idle_ms=1500", "--set", "bus.stall_timeout_ms=20000"]
    procs = [
        _worker([role, *bus_args], f"{role}-0", srv.url, subprocess_env, python, tmp_path)
        for role in ("env", "policy", "user", "reward")
    ]
    tasks = load_tasks("userrl/Telepathy-v0", "train")[:30] + load_tasks("userrl/Function-v0", "train")[:30]
    resets = make_resets("userrl/Telepathy-v0", tasks[:30], group_size=4) + make_resets(
        "userrl/Function-v0", tasks[30:], group_size=4
    )
    assert len(resets) == 240

    async def run() -> tuple[dict, int, int]:
        bus = Bus(
            make_client(srv.url, block_ms=200, retries=2), Keys("crash"), BusSettings(block_ms=200, min_idle_ms=1500)
        )
        waiter = Waiter(bus, [], resets=resets, stall_s=20.0, check_s=1.0)
        await waiter.start(from_start=False)
        await send_resets(bus, resets)
        with anyio.fail_after(120):
            while len(waiter.got) < 60:
                await waiter.poll()
        finished_before = len(waiter.got)
        assert srv.proc is not None
        os.kill(srv.proc.pid, signal.SIGKILL)  # mid-run: some finished, many in flight, the rest queued
        srv.proc.wait()
        srv.stop()
        await anyio.sleep(1.0)
        srv.start()
        got = await waiter.wait(timeout=240, poll_s=0.2)
        await waiter.close()
        redispatched = waiter.reconciler.redispatched if waiter.reconciler else 0
        await bus.redis.aclose()
        return got, finished_before, redispatched

    try:
        got, finished_before, redispatched = anyio.run(run)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        srv.stop()
    assert finished_before < 240, "the kill should land mid-run"
    assert sorted(got) == sorted(r.episode_id for r in resets), "every episode ends"
    doubled = {e: len(v) for e, v in got.items() if len(v) > 1}
    assert not doubled, f"episodes ended twice: {doubled}"
    failed = {e: v[0].error for e, v in got.items() if v[0].status != "ok"}
    assert all(err and err.get("message") for err in failed.values()), "a failure says why"
    if not aof:
        assert redispatched > 0, "episodes lost with the server are re-dispatched"


@pytest.mark.parametrize("role", ["env", "policy", "reward"])
def test_every_role_honours_sigterm_while_redis_is_frozen(
    server: EmbeddedRedis, role: str, subprocess_env, python, tmp_path
) -> None:
    """The same for the other roles, idle in a blocking read when Redis freezes."""
    r = sync_redis.Redis.from_url(server.url)
    w = _worker([role, "--set", "run=crash"], f"{role}-0", server.url, subprocess_env, python, tmp_path)
    try:
        _wait(lambda: bool(r.keys(Keys("crash").heartbeat_pattern(role))), 60, "the worker's heartbeat")
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        rc, took = _sigterm(w)
    finally:
        if w.poll() is None:
            w.kill()
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)
    # What happened, not how fast: it saw the outage and gave up at once instead of waiting out its
    # grace. _sigterm's 90 s wait only rules out a hang (generous for a loaded CI machine's teardown).
    assert rc == 0 and _gave_up_on_redis(tmp_path / f"{role}-0.log"), f"exit {rc} after {took:.1f}s (log: {tmp_path})"
