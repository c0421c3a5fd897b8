"""The embedded server's password stays secret, and a kill -9 of that server loses nothing
committed: one `userrl up` on deploy/ci.yaml (embedded default) for the module."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as sync_redis

from tests.proc_utils import (
    CI,
    REPO,
    alive,
    cli_env,
    cmdline,
    descendants,
    start_cli,
    wait_gone,
    wait_until,
)
from userrl.bus.keys import Keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN = "secrets"


@dataclass
class Deploy:
    proc: subprocess.Popen[bytes]
    run_dir: Path
    log: Path

    @property
    def url(self) -> str:
        return (self.run_dir / "redis.url").read_text()

    @property
    def password(self) -> str:
        return sync_redis.connection.parse_url(self.url)["password"]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "userrl",
                *args,
                "-c",
                CI,
                "--set",
                f"run_dir={self.run_dir}",
                "--set",
                f"run={RUN}",
            ],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )

    def workers(self) -> set[int]:
        return {p for p in descendants(self.proc.pid) if " worker " in cmdline(p)}

    def server_pid(self) -> int | None:
        return next(
            (p for p in descendants(self.proc.pid) if "redis-server" in cmdline(p) or "valkey" in cmdline(p)), None
        )


def _ready(run_dir: Path) -> bool:
    try:
        with sync_redis.Redis.from_url((run_dir / "redis.url").read_text(), socket_timeout=2) as r:
            return all(r.exists(Keys(RUN).heartbeat(role, f"{role}-0")) for role in ("env", "policy", "user", "reward"))
    except (OSError, sync_redis.RedisError):
        return False


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deploy]:
    run_dir = tmp_path_factory.mktemp("up")
    log = run_dir / "up.log"
    proc = start_cli(["up", CI, "--set", f"run_dir={run_dir}", "--set", f"run={RUN}", "--set", "log_level=info"], log)
    try:
        wait_until(lambda: _ready(run_dir), 120, "the deploy's workers", poll=0.3)
        yield Deploy(proc, run_dir, log)
    finally:
        kids = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            proc.kill()
            proc.wait()
            for p in wait_gone(kids, timeout=10):
                os.kill(p, signal.SIGKILL)


def test_password_never_leaks(deploy: Deploy) -> None:
    pw = deploy.password
    assert len(pw) >= 20
    assert stat.S_IMODE((deploy.run_dir / "redis.url").stat().st_mode) == 0o600
    assert stat.S_IMODE((deploy.run_dir / "redis" / "redis.conf").stat().st_mode) == 0o600
    with (
        pytest.raises(sync_redis.AuthenticationError),
        sync_redis.Redis(port=sync_redis.connection.parse_url(deploy.url)["port"]) as anonymous,
    ):
        anonymous.ping()
    status = deploy.cli("status", "--json", "--sample", "0")
    assert status.returncode == 0, status.stderr
    sup = json.loads(status.stdout)["supervisor"]
    assert sup["url"].startswith("redis://:***@127.0.0.1:")
    with sync_redis.Redis.from_url(deploy.url) as r:
        raw = r.get(Keys(RUN).supervisor)
    pids = descendants(deploy.proc.pid) | {deploy.proc.pid}
    assert len(deploy.workers()) == 4
    haystacks = {
        "status --json": status.stdout + status.stderr,
        "deploy:supervisor": raw.decode(),
        "up.log": deploy.log.read_text(),
    }
    haystacks.update({f"/proc/{p}/cmdline": cmdline(p) for p in pids})
    haystacks.update({str(f): f.read_text() for f in (deploy.run_dir / "logs").glob("*.log")})
    assert "launcher.started" in haystacks["up.log"]
    leaks = [where for where, text in haystacks.items() if pw in text]
    assert not leaks


def three_episodes(deploy: Deploy, prefix: str) -> subprocess.CompletedProcess[str]:
    """``dispatch --wait`` of 3 FunctionGym episodes with ids under ``prefix``."""
    args = ["dispatch", "--wait", "--gyms", "userrl/Function-v0", "--tasks", "3", "--prefix", prefix]
    return deploy.cli(*args, "--timeout", "120", timeout=150)


def test_dispatch_wait_and_sigterm(deploy: Deploy) -> None:
    ok = three_episodes(deploy, "a:")
    assert ok.returncode == 0, ok.stderr
    assert "finished 3 (3 ok)" in ok.stdout
    log = deploy.run_dir / "dispatch.log"
    proc = start_cli(
        [
            "dispatch",
            "--wait",
            "--gyms",
            "userrl/Function-v0",
            "--tasks",
            "20",
            "--group-size",
            "4",
            "--prefix",
            "b:",
            "-c",
            CI,
            "--set",
            f"run_dir={deploy.run_dir}",
            "--set",
            f"run={RUN}",
        ],
        log,
    )
    try:
        wait_until(lambda: "dispatched" in log.read_text(), 60, "dispatch to send its episodes")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
    assert "Traceback" not in log.read_text()


def test_redis_kill9_comes_back_with_its_data_and_workers_carry_on(deploy: Deploy) -> None:
    url, workers = deploy.url, deploy.workers()
    # episodes of its own before the kill (the module's other tests may or may not have run)
    before = three_episodes(deploy, "k:")
    assert before.returncode == 0 and "finished 3 (3 ok)" in before.stdout, before.stderr
    with sync_redis.Redis.from_url(url) as r:
        r.set(Keys(RUN).prefix + "probe", "committed")
        finished_before = r.zcard(Keys(RUN).finished)
    assert finished_before >= 3
    time.sleep(1.5)  # appendfsync everysec
    old = deploy.server_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    new = wait_until(lambda: (p := deploy.server_pid()) not in (None, old) and p, 30, "a restarted server")
    assert deploy.url == url  # same port and password

    def answers() -> bool:
        try:
            with sync_redis.Redis.from_url(url, socket_timeout=2) as r:
                return bool(r.ping())
        except sync_redis.RedisError:
            return False

    wait_until(answers, 30, "the restarted server to answer")
    with sync_redis.Redis.from_url(url) as r:
        assert r.get(Keys(RUN).prefix + "probe") == b"committed"
        assert r.zcard(Keys(RUN).finished) >= finished_before
    assert {p for p in workers if alive(p)} == workers  # nobody crashed on the outage
    after = three_episodes(deploy, "c:")
    assert after.returncode == 0, after.stderr
    assert "finished 3 (3 ok)" in after.stdout
    assert alive(new)
    sup = json.loads(deploy.cli("status", "--json", "--sample", "0").stdout)["supervisor"]
    assert sup["redis_restarts"] == 1
