"""Turn what went wrong in worker processes into one line for the person who started the job.

- :func:`last_error_line`: the most telling line of a worker's log (its last error event, the
  CLI's ``userrl: error:`` line, or a traceback's last line).
- :func:`failure_reasons`: the most common reasons of failed episodes, from the trajectories on
  the reward stream.
- :func:`watch_deploy`: for ``dispatch --wait``, raise :class:`JobFailed` when the deploy's
  launcher gave up on a worker (its ``deploy:failure`` key).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio

from userrl.bus.client import RedisConnectionError
from userrl.bus.messages import Trajectory, decode
from userrl.bus.supervision import SupervisorLink
from userrl.errors import UserRLError

T = TypeVar("T")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERRORISH = re.compile(r"error|exception|traceback|failed|fatal|killed", re.I)


class JobFailed(UserRLError):
    """A job stopped because its workers cannot run or every episode failed."""


@dataclass(frozen=True)
class WorkerFailure:
    """A worker the launcher gave up on."""

    worker: str
    rc: int | None
    why: str  #: "failed at start" or "crash-looped (N exits in a row)"
    error: str  #: the last error line of its log
    log: str  #: path of its log

    def line(self) -> str:
        rc = f" (exit {self.rc})" if self.rc is not None else ""
        return f"worker {self.worker} {self.why}{rc}: {self.error or 'no error in its log'} [log: {self.log}]"

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "line": self.line()})


def _render(line: str) -> str | None:
    """A structlog JSON line as ``event: error``; None when it is not an error event."""
    try:
        ev = json.loads(line)
    except ValueError:
        return None
    if not isinstance(ev, dict):
        return None
    if ev.get("level") not in ("error", "critical", "exception") and "failed" not in str(ev.get("event", "")):
        return None
    detail = ev.get("error") or ev.get("exception") or ev.get("message") or ""
    detail = str(detail).strip().splitlines()[-1] if str(detail).strip() else ""
    return f"{ev.get('event', '?')}: {detail}".rstrip(": ")


def last_error_line(log: str | Path, tail_bytes: int = 64_000) -> str:
    """The last error-looking line of a log file ('' when there is none or no file)."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - tail_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [_ANSI.sub("", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    for ln in reversed(lines):
        if ln.startswith("{"):
            rendered = _render(ln)
            if rendered:
                return rendered[:500]
        elif _ERRORISH.search(ln) and not ln.startswith(("File ", "^", "~")):
            return ln.removeprefix("userrl: error: ")[:500]
    return lines[-1][:500] if lines else ""


def reason_of(t: Trajectory) -> str:
    """One line for a failed episode: ``kind: message``."""
    kind, msg = (t.error.kind, t.error.message.strip()) if t.error else ("?", "")
    return f"{kind}: {msg.splitlines()[-1] if msg else 'no message'}"[:300]


def count_reasons(trajs: Iterable[Trajectory]) -> Counter[str]:
    return Counter(reason_of(t) for t in trajs if t.status != "ok")


def all_failed_message(trajs: list[Trajectory]) -> str | None:
    """The job's one-line verdict when every episode failed (None when any succeeded or none ran)."""
    if not trajs or any(t.status == "ok" for t in trajs):
        return None
    ((reason, n),) = count_reasons(trajs).most_common(1)
    return f"all {len(trajs)} episodes failed; most common reason ({n}x): {reason}"


def failure_reasons(link: SupervisorLink, count: int = 500) -> Counter[str]:
    """Reasons of the failed trajectories among the newest ``count`` on the reward stream."""
    out: Counter[str] = Counter()
    for _, fields in link.newest(link.keys.stream("reward"), count):
        if fields.get(b"status") != b"failed":
            continue
        try:
            msg = decode(fields[b"p"])
        except Exception:  # a malformed entry is the reward worker's to dead-letter, not ours
            continue
        if isinstance(msg, Trajectory):
            out[reason_of(msg)] += 1
    return out


def exit_verdict(rc: int, ready: bool, quick: bool, in_a_row: int, give_up_after: int) -> str | None:
    """Why to give up on a worker that exited unasked, or None to restart it. Exits by a signal
    (rc < 0: kill -9, the OOM killer, chaos tests) are someone else's doing: those restart."""
    if not give_up_after or rc <= 0:
        return None
    if not ready:
        return "failed at start"
    if quick and in_a_row >= give_up_after:
        return f"crash-looped ({in_a_row} exits in a row)"
    return None


def heartbeat_pids(link: SupervisorLink, children: list[Any]) -> list[int | None]:
    """The pid in each child's heartbeat (None: no heartbeat yet)."""
    out: list[int | None] = []
    for raw in link.heartbeats([(c.role, c.name) for c in children]):
        try:
            out.append(json.loads(raw).get("pid") if raw else None)
        except (ValueError, AttributeError):
            out.append(None)
    return out


def all_failed_so_far(link: SupervisorLink, threshold: int) -> str | None:
    """A verdict once ``threshold`` episodes failed and none succeeded (from the run's counters)."""
    ok, failed = link.counters(["episodes_ok", "episodes_failed"])
    if int(ok or 0) or int(failed or 0) < threshold:
        return None
    top = failure_reasons(link).most_common(1)
    return f"all {int(failed)} episodes so far failed" + (
        f"; most common reason ({top[0][1]}x): {top[0][0]}" if top else ""
    )


async def watch_deploy(bus: Any, poll_s: float = 1.0) -> None:
    """Return never; raise :class:`JobFailed` once the deploy's launcher records a failure."""
    while True:
        raw = await bus.control.failure()
        if raw:
            try:
                line = str(json.loads(raw)["line"])
            except (KeyError, TypeError, ValueError):
                line = raw.decode(errors="replace")
            raise JobFailed(f"the deploy stopped: {line}")
        await anyio.sleep(poll_s)


async def wait_watching(bus: Any, wait: Callable[[], Awaitable[T]]) -> T:
    """``await wait()`` unless the deploy gives up first (:class:`JobFailed`, not wrapped in an
    exception group); losing Redis on the way is a :class:`JobFailed` too."""
    out: list[T] = []
    errors: list[BaseException] = []

    async def run(job: Callable[[], Awaitable[Any]], keep: bool, scope: anyio.CancelScope) -> None:
        try:
            got = await job()
            if keep:
                out.append(got)
        except Exception as exc:  # re-raised below, outside the task group
            errors.append(exc)
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, wait, True, tg.cancel_scope)
        tg.start_soon(run, lambda: watch_deploy(bus), False, tg.cancel_scope)
    if errors:
        if isinstance(errors[0], RedisConnectionError):
            raise JobFailed(
                f"lost the connection to Redis ({errors[0]}); is the deploy still running? (`userrl status`)"
            ) from errors[0]
        raise errors[0]
    return out[0]
