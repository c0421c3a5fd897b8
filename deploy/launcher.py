"""The local launcher: start every role's worker processes and keep them running.

``userrl up CONFIG`` builds a :class:`Launcher` and calls :meth:`Launcher.run`. It

- finds Redis, or starts and supervises an embedded one (:mod:`userrl.deploy.local_redis`);
- starts ``replicas`` processes per role (``userrl worker ROLE --name ROLE-i``, see
  :mod:`userrl.deploy.children`), each logging to ``{run_dir}/logs/ROLE-i.log``; a stable name
  lets a restarted worker drain its own pending;
- restarts a worker that exits unasked after a capped exponential backoff, counting restarts
  per role, but gives up on one that exits with an error before it ever ran (no heartbeat) or
  crash-loops (``give_up_after`` quick exits in a row; exits by a signal, such as kill -9 or the
  OOM killer, do not count): records one line (:attr:`failure`, and ``deploy:failure`` for
  ``dispatch --wait``), calls ``on_failure`` and stops; ``run`` then returns 1;
- follows the ``replicas`` hash (``userrl scale``): more processes, or SIGTERM to the
  highest-index ones, which finish their in-flight batch and exit 0;
- refreshes the ``supervisor`` heartbeat (JSON, with a TTL, the URL's password masked);
- on SIGTERM/SIGINT or :meth:`stop`: SIGTERM every worker, SIGKILL the ones still running after
  ``stop_timeout_s``, stop the embedded server and remove ``redis.url``.

Children get a parent-death signal, which Linux sends when the *thread* that started them
ends: in background mode the supervisor thread stops what it started before it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from userrl.bus.client import RedisConnectionError, RedisError
from userrl.bus.keys import Keys
from userrl.bus.supervision import SupervisorLink
from userrl.config import DeployConfig
from userrl.deploy.children import Child, spawn, stop_all, terminate, worker_command
from userrl.deploy.local_redis import LocalRedis
from userrl.deploy.watch import (
    WorkerFailure,
    all_failed_so_far,
    exit_verdict,
    heartbeat_pids,
    last_error_line,
)
from userrl.errors import ConfigError
from userrl.lifecycle import redact_url
from userrl.runtime import tls_kwargs

log = structlog.get_logger(__name__)

#: roles the launcher runs (each has a worker class in ``userrl.cli.WORKER_CLASSES``)
LAUNCHED_ROLES = ("env", "policy", "user", "reward")
#: a worker that ran this long before exiting counts as healthy: its backoff starts over
STABLE_AFTER_S = 10.0
#: how long ``deploy:failure`` stays readable after the launcher gave up
FAILURE_TTL_S = 3600


@dataclass
class Launcher:
    """Supervise the worker processes of one deploy. See the module docstring."""

    cfg: DeployConfig
    config_path: str | None = None
    overrides: Sequence[str] = ()
    python: str = sys.executable
    env: Mapping[str, str] | None = None
    poll_s: float = 0.5
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    stop_timeout_s: float = 20.0
    supervisor_ttl_s: float = 10.0
    give_up_after: int = 3
    """Quick error exits in a row after which a worker counts as crash-looping (0: never give up)."""
    fail_on_all_failed: int = 0
    """Give up once this many episodes failed and none succeeded (0: off; jobs turn it on)."""
    keep_data: bool = False
    """Start the embedded server on the run dir's existing AOF instead of moving it aside."""
    _local: LocalRedis = field(init=False, repr=False)
    on_failure: Callable[[str], None] | None = None
    """Called (from the supervisor thread) with the failure line when the launcher gives up."""
    failure: str | None = field(default=None, init=False)
    """Why the launcher gave up (one line), or None."""
    restarts: dict[str, int] = field(default_factory=dict, init=False)
    """Unasked exits per role since start."""
    url: str = field(default="", init=False, repr=False)
    """The Redis URL the workers were given (set by :meth:`start`)."""
    _children: dict[tuple[str, int], Child] = field(default_factory=dict, init=False, repr=False)
    _wanted: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _link: SupervisorLink | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _halt: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _signalled: int = field(default=0, init=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _stopped: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.keys = Keys(self.cfg.run)
        self.run_dir = Path(self.cfg.run_dir)
        self.roles = [r for r in LAUNCHED_ROLES if r in self.cfg.workers]
        self.restarts = {r: 0 for r in self.roles}
        self.log = log.bind(run=self.cfg.run)
        self._local = LocalRedis(self.cfg, self.env, self.keep_data)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Launcher:
        """Find or start Redis, publish the wanted replicas, start the workers."""
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.url = self._local.resolve()
        tls = tls_kwargs(self.cfg) if self.url.startswith("rediss://") else {}
        self._link = SupervisorLink(self.url, self.keys, timeout_s=5, tls=tls, cluster=self.cfg.redis_cluster)
        try:
            other = self._link.supervisor()
            if other:
                raise ConfigError(
                    f"run {self.cfg.run!r} already has a live supervisor ({other.decode()}); "
                    "stop it first or choose another run name"
                )
            self._warn_leftovers()
            self._wanted = {r: self.cfg.workers[r].replicas for r in self.roles}
            self._link.publish(self._wanted)
        except RedisConnectionError as exc:  # unreachable, refused TLS, wrong password: one line
            self._close()
            raise ConfigError(f"cannot reach Redis at {redact_url(self.url)}: {exc}") from None
        except BaseException:
            self._close()
            raise
        self.log.info("launcher.started", url=redact_url(self.url), replicas=self._wanted, pid=os.getpid())
        self.supervise_once()
        return self

    def _warn_leftovers(self) -> None:
        """Workers of an earlier launcher that was killed -9 keep running in their own sessions;
        new ones under the same names would share their consumer identity."""
        assert self._link is not None
        for role in self.roles:
            for i in range(self.cfg.workers[role].replicas):
                (raw,) = self._link.heartbeats([(role, f"{role}-{i}")])
                if raw:
                    hb = json.loads(raw)
                    self.log.warning(
                        "launcher.worker_already_running",
                        worker=f"{role}-{i}",
                        pid=hb.get("pid"),
                        host=hb.get("host"),
                        hint="stop it (it finishes its batch on SIGTERM) or use another run name",
                    )

    def start_background(self) -> Launcher:
        """Supervise in a daemon thread (tests, embedding); :meth:`stop` ends it."""
        self._thread = threading.Thread(target=self._thread_main, name="userrl-launcher", daemon=True)
        self._thread.start()
        return self

    def run(self) -> int:
        """Start, supervise until SIGTERM/SIGINT, stop. Returns the exit code."""

        def on_signal(signum: int, _frame: Any) -> None:
            # Only a plain assignment here: Event.set() or a log write inside a signal handler can
            # deadlock on a lock the interrupted main thread already holds (Event.wait holds one).
            self._signalled = signum

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            self._loop()
        finally:
            self.stop()
            for s, h in old.items():
                signal.signal(s, h)
        return 1 if self.failure else 0

    def _thread_main(self) -> None:
        try:
            self._loop()
        finally:  # this thread started children: they get their parent-death signal as it ends
            self._shutdown()

    def _loop(self) -> None:
        while not self._halt.wait(self.poll_s):
            if self._signalled:
                self.log.info("launcher.signal", signal=signal.Signals(self._signalled).name)
                break
            try:
                self.supervise_once()
            except RedisError as exc:  # Redis down: keep the workers, retry next poll
                self.log.warning("launcher.redis_unavailable", error=repr(exc))
            except Exception:  # a supervisor that dies quietly is worse than one that logs and retries
                self.log.exception("launcher.supervise_failed")

    def stop(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL after the timeout) and the embedded server."""
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.poll_s + self.stop_timeout_s + 15)
        self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            stop_all(self._children.values(), self.stop_timeout_s, self.log)
            self._children.clear()
            with contextlib.suppress(RedisError):
                if self._link is not None:
                    self._link.withdraw()
            self._close()
        self.log.info("launcher.stopped", restarts=self.restarts, failure=self.failure)

    def _close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
        self._local.close()

    # -- supervision ----------------------------------------------------------------------------
    def supervise_once(self) -> None:
        """One pass: read wanted counts, reap exits, start/stop processes, write the heartbeat."""
        with self._lock:
            if self._link is None or self._stopped:
                return
            self._local.check()
            self._read_wanted()
            now = time.monotonic()
            for c in list(self._children.values()):
                self._reap(c, now)
            self._scale(now)
            for c in self._children.values():
                if c.proc is None and now >= c.start_at:
                    self._spawn(c)
                elif c.term_at is not None and c.proc is not None and now - c.term_at > self.stop_timeout_s:
                    self.log.warning("launcher.kill_straggler", worker=c.name, pid=c.proc.pid)
                    c.proc.kill()
            self._see_ready()
            self._check_episodes()
            self._heartbeat()

    def _see_ready(self) -> None:
        """A worker whose heartbeat appeared got past its start (model loaded, Redis reached)."""
        waiting = [c for c in self._children.values() if c.proc is not None and not c.ready]
        if waiting:
            assert self._link is not None
            for c, pid in zip(waiting, heartbeat_pids(self._link, waiting), strict=True):
                c.ready = pid == c.proc.pid  # type: ignore[union-attr]  # not an old incarnation's key

    def _check_episodes(self) -> None:
        """With ``fail_on_all_failed``: give up once that many episodes failed and none succeeded."""
        if self.fail_on_all_failed and not self.failure:
            assert self._link is not None
            line = all_failed_so_far(self._link, self.fail_on_all_failed)
            if line:
                self._give_up(line)

    def _give_up(self, line: str, body: str | None = None) -> None:
        self.failure = line
        self.log.error("launcher.giving_up", reason=line)
        with contextlib.suppress(RedisError):
            assert self._link is not None
            self._link.fail(body or json.dumps({"line": line}), FAILURE_TTL_S)
        self._halt.set()
        if self.on_failure is not None:
            self.on_failure(line)

    def _read_wanted(self) -> None:
        assert self._link is not None
        for role, v in self._link.wanted().items():
            try:
                n = int(v)
                if n < 0:
                    raise ValueError(n)
            except ValueError:
                self.log.warning("launcher.bad_replicas", role=role, value=v.decode(errors="replace"))
                continue
            if role not in self.roles:
                self.log.warning("launcher.unknown_role", role=role)
            elif self._wanted.get(role) != n:
                self.log.info("launcher.scaled", role=role, replicas=n, was=self._wanted.get(role))
                self._wanted[role] = n

    def _reap(self, c: Child, now: float) -> None:
        if c.proc is None or c.proc.poll() is None:
            return
        rc, ran = c.proc.returncode, now - c.started_at
        c.proc = None
        if c.term_at is not None:  # asked to stop (scale-down)
            self.log.info("launcher.worker_stopped", worker=c.name, rc=rc)
            del self._children[(c.role, c.index)]
            return
        c.failures = 1 if ran >= STABLE_AFTER_S else c.failures + 1
        delay = min(self.backoff_base_s * 2 ** (c.failures - 1), self.backoff_cap_s)
        c.start_at = now + delay
        self.restarts[c.role] = self.restarts.get(c.role, 0) + 1
        self.log.warning(
            "launcher.worker_exited",
            worker=c.name,
            rc=rc,
            ran_s=round(ran, 2),
            restart_in_s=delay,
            restarts=self.restarts[c.role],
            log=str(self._log_path(c)),
        )
        self._judge_exit(c, rc, ran)
        c.ready = False

    def _judge_exit(self, c: Child, rc: int, ran: float) -> None:
        if self.failure or not (why := exit_verdict(rc, c.ready, ran < STABLE_AFTER_S, c.failures, self.give_up_after)):
            return
        log_path = self._log_path(c)
        failure = WorkerFailure(worker=c.name, rc=rc, why=why, error=last_error_line(log_path), log=str(log_path))
        self._give_up(failure.line(), failure.to_json())

    def _scale(self, now: float) -> None:
        for role in self.roles:
            n = self._wanted.get(role, 0)
            for i in range(n):
                if (role, i) not in self._children:
                    self._children[(role, i)] = Child(role, i, start_at=now)
            for (r, i), c in list(self._children.items()):
                if r != role or i < n or c.term_at is not None:
                    continue
                if c.proc is None:  # waiting to restart: just forget the slot
                    del self._children[(r, i)]
                else:
                    self._terminate(c)

    def _terminate(self, c: Child) -> None:
        terminate(c, self.log)

    def _spawn(self, c: Child) -> None:
        cmd = worker_command(self.python, c, self.config_path, self.overrides)
        spawn(c, cmd, self.env if self.env is not None else os.environ, self.url, self._log_path(c))
        self.log.info("launcher.worker_started", worker=c.name, pid=c.proc.pid, attempt=c.failures)  # type: ignore[union-attr]

    def _log_path(self, c: Child) -> Path:
        return self.run_dir / "logs" / f"{c.name}.log"

    def _heartbeat(self) -> None:
        assert self._link is not None
        body = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "at": time.time(),
            "url": redact_url(self.url),
            "roles": self.workers(),
            "replicas": dict(self._wanted),
            "restarts": dict(self.restarts),
            "redis_restarts": self._local.restarts,
        }
        self._link.beat(json.dumps(body), int(self.supervisor_ttl_s * 1000))

    # -- introspection --------------------------------------------------------------------------
    def workers(self) -> dict[str, list[dict[str, Any]]]:
        """Per role: each slot's name, pid (None while waiting to restart) and state."""
        out: dict[str, list[dict[str, Any]]] = {r: [] for r in self.roles}
        for (role, _), c in sorted(self._children.items()):
            state = "stopping" if c.term_at is not None else ("running" if c.proc else "restarting")
            out[role].append({"name": c.name, "pid": c.proc.pid if c.proc else None, "state": state})
        return out

    def pids(self) -> dict[str, int]:
        """Worker name -> pid of every running process."""
        with self._lock:
            return {c.name: c.proc.pid for c in self._children.values() if c.proc is not None}
