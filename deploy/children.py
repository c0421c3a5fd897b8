"""Worker processes of the launcher: one slot per ``{role}-{index}``, started and stopped here.

A worker gets the Redis URL in its environment (its command line is world-readable in
``/proc``, and the URL may hold a password), its own session (a Ctrl-C at the terminal reaches
only the launcher), and a parent-death signal plus ``USERRL_PARENT_PID`` for its own watchdog:
it never outlives the launcher.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from userrl.lifecycle import PARENT_ENV, die_with_parent


@dataclass
class Child:
    """One worker slot ``{role}-{index}``: its process (None while waiting to restart)."""

    role: str
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    start_at: float = 0.0  #: monotonic time of the next (re)start while proc is None
    failures: int = 0  #: consecutive unasked exits (drives the backoff)
    term_at: float | None = None  #: when SIGTERM was sent (scale-down or stop)
    ready: bool = False  #: its heartbeat was seen since its last start

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"


def worker_command(python: str, c: Child, config_path: str | None, overrides: Sequence[str]) -> list[str]:
    cmd = [python, "-m", "userrl", "worker", c.role, "--name", c.name]
    if config_path:
        cmd += ["--config", str(config_path)]
    for ov in overrides:
        if ov.partition("=")[0].strip() != "redis":  # the URL may hold a password: environment only
            cmd += ["--set", ov]
    return cmd


def spawn(c: Child, cmd: list[str], base_env: Mapping[str, str], url: str, log_path: Path) -> None:
    env = dict(base_env)
    env["USERRL_REDIS_URL"] = url
    env[PARENT_ENV] = str(os.getpid())
    env.pop("USERRL_WORKER_NAME", None)
    with open(log_path, "ab") as out:
        c.proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
    c.started_at = time.monotonic()


def terminate(c: Child, log: Any) -> None:
    """SIGTERM (the worker finishes its in-flight batch); remembers when, for the kill deadline."""
    if c.proc is not None and c.proc.poll() is None:
        if c.term_at is None:
            log.info("launcher.worker_terminating", worker=c.name, pid=c.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            c.proc.send_signal(signal.SIGTERM)
    if c.term_at is None:
        c.term_at = time.monotonic()


def stop_all(children: Iterable[Child], timeout_s: float, log: Any) -> None:
    """SIGTERM every running child, SIGKILL the ones still running ``timeout_s`` later."""
    procs = [c for c in children if c.proc is not None]
    for c in procs:
        terminate(c, log)
    deadline = time.monotonic() + timeout_s
    for c in procs:
        assert c.proc is not None
        try:
            c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("launcher.kill_straggler", worker=c.name, pid=c.proc.pid)
            c.proc.kill()
            c.proc.wait()
        log.info("launcher.worker_stopped", worker=c.name, rc=c.proc.returncode)
