"""Logging setup. Libraries never configure logging; the entry points (our CLI) do.

Used as a library (``import userrl``, ``gymnasium.make("userrl/Telepathy-v0")``), userrl routes
its structlog events to the standard :mod:`logging` module and adds no handler: Python's
last-resort handler shows warnings and errors on stderr and nothing below, until the
application configures :mod:`logging` (``logging.basicConfig(level=logging.DEBUG)`` shows
everything) or structlog itself. :func:`library_defaults` does this only while structlog is
unconfigured, so an application that configured structlog before importing userrl keeps its
setup.

The CLI calls :func:`configure_logging`: JSON lines (or a console renderer on a TTY, or as
``--log-format`` says) to stderr, with ``role``/``worker``/``episode_id`` bound by the workers
through structlog's contextvars. With ``log_file`` (``userrl train``) every event also goes to
that file as JSON and stderr only shows warnings and errors, so log lines do not interleave
with the progress bars.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
FORMATS = ("auto", "json", "console")

#: the stderr format chosen on the command line (``--log-format``); ``auto`` = console on a TTY
log_format = "auto"


def library_defaults() -> None:
    """Route userrl's structlog events to :mod:`logging` (quiet below warning) unless the
    application configured structlog already. Called when :mod:`userrl` is imported."""
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,  # drops debug/info cheaply while logging is unset
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _use_json(json: bool | None) -> bool:
    if json is not None:
        return json
    if log_format != "auto":
        return log_format == "json"
    return not sys.stderr.isatty()


def _renderer(json: bool) -> Any:
    return structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(level: str = "info", *, json: bool | None = None, log_file: str | Path | None = None) -> None:
    """Configure structlog for a CLI process (see the module docstring)."""
    lvl = _LEVELS.get(level, logging.INFO)
    if log_file is not None:
        return _configure_with_file(lvl, _use_json(json), Path(log_file))
    structlog.configure(
        processors=[*_SHARED, structlog.processors.format_exc_info, _renderer(_use_json(json))],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _configure_with_file(lvl: int, json: bool, path: Path) -> None:
    """Everything at ``lvl`` to ``path`` as JSON; warnings and errors to stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )

    def formatter(renderer: Any) -> logging.Formatter:
        return structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=_SHARED,
        )

    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(formatter(structlog.processors.JSONRenderer()))
    to_file.setLevel(lvl)
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(formatter(_renderer(json)))
    to_stderr.setLevel(logging.WARNING)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_userrl", False):  # a second call replaces ours, keeps the user's
            root.removeHandler(h)
            h.close()
    for h in (to_file, to_stderr):
        h._userrl = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(logging.WARNING)  # other libraries (httpx, transformers): warnings only
    logging.getLogger("userrl").setLevel(lvl)
