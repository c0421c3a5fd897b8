"""Process lifecycle: children never outlive their parent, signals stop jobs cleanly, and a
worker that cannot run stops the job that needs it.

- :func:`die_with_parent` is a ``preexec_fn``: the child gets ``PR_SET_PDEATHSIG`` (Linux), so
  an embedded Redis or a worker goes away when the process that started it dies, ``kill -9``
  included. Linux sends the signal when the *thread* that forked the child exits, which is why
  the launcher stops its children from the thread that started them.
- :func:`watch_parent` is the second line inside worker processes: once the parent is gone it
  sends itself SIGTERM (finish the batch) and exits hard after a grace period.
- :func:`job_signals` makes SIGTERM behave like Ctrl-C in ``train``/``eval``/``learn``/
  ``dispatch``: ``finally`` blocks run, so workers, the embedded server and ``redis.url`` go.
- :func:`redact_url` hides the password of a Redis URL in anything a person or Redis can read.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

import structlog

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1
_failures: list[str] = []  #: why job launchers of this process gave up
_in_job = threading.Event()  #: set while the CLI's job_signals() is active in the main thread
#: environment variable naming the pid a worker must not outlive
PARENT_ENV = "USERRL_PARENT_PID"


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


# Resolved once in the parent: a preexec_fn must not load libraries after fork.
_prctl = _load_prctl()


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent dies (None off Linux)."""
    if _prctl is None:
        return None
    parent = os.getpid()
    prctl = _prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: nobody will signal us
            os.kill(os.getpid(), sig)

    return preexec


def watch_parent(grace_s: float = 30.0, poll_s: float = 1.0) -> threading.Thread | None:
    """In a worker started with ``USERRL_PARENT_PID``: once that parent is gone, SIGTERM ourselves
    (the worker finishes its batch) and ``os._exit`` if still alive ``grace_s`` later."""
    raw = os.environ.get(PARENT_ENV, "")
    if not raw.isdigit():
        return None
    parent = int(raw)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.warning("worker.parent_gone", parent_pid=parent)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    if os.getppid() != parent:  # started by someone else (or the parent is already gone)
        return None
    t = threading.Thread(target=watch, name="userrl-parent-watch", daemon=True)
    t.start()
    return t


@contextlib.contextmanager
def job_signals() -> Iterator[list[int]]:
    """SIGTERM and SIGINT stop the job like Ctrl-C does (``KeyboardInterrupt``, or a cancelled
    event loop under anyio/asyncio), so every ``finally`` runs. Yields a list that holds the
    signals received, for the exit code."""
    got: list[int] = []

    def on_term(signum: int, frame: FrameType | None) -> None:
        got.append(signum)
        if len(got) > 1:  # already stopping: a repeated SIGTERM must not cut the cleanup short
            return
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not on_term:
            handler(signal.SIGINT, frame)  # asyncio's runner cancels its main task; else raises
        else:
            raise KeyboardInterrupt

    _failures.clear()
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    # default_int_handler even where the shell started us with SIGINT ignored (`cmd &`): asyncio's
    # runner installs its own cancelling handler only over that one.
    old = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_term),
    }
    _in_job.set()
    try:
        yield got
    finally:
        _in_job.clear()
        for s, h in old.items():
            signal.signal(s, h)


def exit_code(signals: list[int]) -> int:
    """Shell convention: 128 + the signal (SIGINT when none was recorded, i.e. Ctrl-C)."""
    return 128 + (signals[0] if signals else int(signal.SIGINT))


def redact_url(url: str, placeholder: str = "***") -> str:
    """``redis://:secret@host:6379/0`` -> ``redis://:***@host:6379/0`` (user names are kept;
    ``placeholder`` stands where the password was)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}:{placeholder}@{host}{port}", parts.path, parts.query, parts.fragment))


# ---- jobs that run their own launcher (train, eval) -------------------------------------------

#: episodes that must have failed, with none succeeded, before a job gives up on its run
JOB_FAIL_ON_ALL_FAILED = 16


def fail_job(line: str) -> None:
    """``Launcher.on_failure`` of a job: remember why and, under the CLI, interrupt the main
    thread (as Ctrl-C would) so the job unwinds through its ``finally`` blocks and the CLI prints
    ``line``. A library caller is not interrupted: its job ends at its own timeout."""
    import _thread

    _failures.append(line)
    if _in_job.is_set():
        _thread.interrupt_main()


def job_failure() -> str | None:
    """Why the last job launcher of this process gave up (None when none did)."""
    return _failures[-1] if _failures else None


def job_launcher_options() -> dict[str, object]:
    """Launcher arguments for a job in this process (``train``, ``eval``): stop when a worker
    cannot run or every episode fails, instead of waiting out the job's timeout."""
    return {"on_failure": fail_job, "fail_on_all_failed": JOB_FAIL_ON_ALL_FAILED}
