"""Console output of the CLI: stage headers with wall times, progress bars, JSON to stdout.

Progress bars are off until the CLI turns them on (:func:`enable_progress`), and then drawn on
stderr only when stderr is a terminal: a library user, a pipe or a log file never gets ``\\r``
bar frames. Headers and stage times go to stdout (the CLI's results channel); library code that
calls :func:`stage` while progress is off only logs them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from userrl.bus.client import RedisError, probe, split_cluster_flag
from userrl.errors import ConfigError
from userrl.lifecycle import redact_url

log = structlog.get_logger(__name__)

_enabled = False
_headers = False


def enable_progress(on: bool = True, *, headers: bool = True) -> None:
    """Called by the CLI: draw bars (when stderr is a terminal) and print stage headers."""
    global _enabled, _headers
    _enabled, _headers = on, on and headers
    if on and not sys.stderr.isatty():
        # other libraries' bars (TRL's trainer, datasets) would write frames into a pipe or log
        os.environ.setdefault("TQDM_DISABLE", "1")


def progress_on() -> bool:
    return _enabled and sys.stderr.isatty()


class _NoBar:
    """What :func:`progress` returns when bars are off: accepts the calls, draws nothing."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Any:
    """A tqdm bar on stderr when progress is on and stderr is a terminal, else a no-op."""
    if not progress_on():
        bar = _NoBar()
        bar.n = initial
        return bar
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.5, file=sys.stderr
    )


class EpisodeBar:
    """Episodes done / total and failures, updated from absolute counts."""

    def __init__(self, total: int, desc: str = "episodes") -> None:
        self.bar = progress(total, desc, unit="ep")
        self.done = 0
        self.failed = 0

    def update_to(self, done: int, failed: int) -> None:
        if done > self.done:
            self.bar.update(done - self.done)
            self.done = done
        if failed != self.failed:
            self.failed = failed
            self.bar.set_postfix(failed=failed)

    def close(self) -> None:
        self.bar.close()


@contextmanager
def stage(title: str, times: dict[str, float] | None = None) -> Iterator[None]:
    """A header before a stage and its wall time after it (``times[title]`` gets the seconds)."""
    if _headers:
        print(f"\n== {title} ==", flush=True)
    t0 = time.monotonic()
    try:
        yield
    finally:
        dt = time.monotonic() - t0
        if times is not None:
            times[title] = round(dt, 1)
        if _headers:
            print(f"-- {title}: {dt:.1f}s", flush=True)
        log.info("stage.done", stage=title, seconds=round(dt, 1))


def print_json(obj: Any, *, indent: int | None = None) -> None:
    """One JSON document to stdout; a reader that closed the pipe (``| head``) ends the command
    quietly (see :func:`quiet_broken_pipe`)."""
    sys.stdout.write(json.dumps(obj, indent=indent) + "\n")
    sys.stdout.flush()


def quiet_broken_pipe() -> int:
    """After a BrokenPipeError on stdout: point stdout at /dev/null so the interpreter's final
    flush does not raise again, and return the shell's code for SIGPIPE (128 + 13)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141


def check_redis(url: str, timeout_s: float = 3.0, cluster: bool = False) -> None:
    """Fail at start with one line when the deploy's Redis URL does not answer a PING, or names
    a cluster node while the cluster client is not selected (commands on other nodes' slots
    would fail with MOVED)."""
    plain, flagged = split_cluster_flag(url)  # any one node of a cluster answers a PING
    try:  # INFO may be restricted (managed services): not checked then
        enabled = probe(plain, timeout_s, assume_cluster=cluster or flagged)
    except (RedisError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"redis: cannot reach {redact_url(url)}: {reason}") from None
    if enabled and not (cluster or flagged):
        raise ConfigError(
            f"redis: {redact_url(url)} is a Redis Cluster node; set redis_cluster: true "
            "(or end the URL with ?cluster=true) to use the cluster client"
        )
