"""The launcher's Redis: where it is, and the embedded server when the launcher runs one.

``USERRL_REDIS_URL``, else the config's URL, else a live embedded server of this ``run_dir``
(``userrl redis``), else a new one: a random password, an append-only file in
``{run_dir}/redis`` (a new deploy moves an earlier one's to ``redis.prev`` unless it keeps its
data), and its URL in ``{run_dir}/redis.url`` (mode 0600). :meth:`LocalRedis.check` restarts a
server that died on the same port, password and data: workers reconnect on their own.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from userrl.bus.embedded import EmbeddedRedis
from userrl.config import DeployConfig
from userrl.runtime import URL_FILE, live_url_file, write_url_file

log = structlog.get_logger(__name__)


@dataclass
class LocalRedis:
    cfg: DeployConfig
    env: Mapping[str, str] | None = None
    keep_data: bool = False
    """Start the embedded server on the run dir's existing AOF instead of moving it aside."""
    server: EmbeddedRedis | None = field(default=None, init=False)
    """The embedded server, when this launcher started one."""

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run_dir)

    @property
    def restarts(self) -> int | None:
        return self.server.restarts if self.server else None

    def resolve(self) -> str:
        """The URL to use, starting an embedded server when nothing else serves this run."""
        env = self.env if self.env is not None else os.environ
        if env.get("USERRL_REDIS_URL"):
            return env["USERRL_REDIS_URL"]
        if self.cfg.redis != "embedded":
            return self.cfg.redis
        url = live_url_file(self.run_dir)
        if url:  # `userrl redis` (or another launcher) already serves this run_dir
            return url
        data = self.run_dir / "redis"
        if data.exists() and not self.keep_data:  # a new deploy starts empty; the old data stays aside
            old = self.run_dir / "redis.prev"
            shutil.rmtree(old, ignore_errors=True)
            data.rename(old)
        self.server = EmbeddedRedis(data_dir=data, persist=True).start()
        write_url_file(self.run_dir, self.server.url)
        return self.server.url

    def check(self) -> None:
        """Restart the embedded server on its port, password and AOF when it died."""
        if self.server is None or (rc := self.server.exited()) is None:
            return
        log.warning(
            "launcher.redis_exited",
            rc=rc,
            restarts=self.server.restarts + 1,
            log=str(self.server.data_dir / "server.log"),
        )
        self.server.restart()
        log.info("launcher.redis_restarted", url=self.server.safe_url, pid=self.server.proc.pid)  # type: ignore[union-attr]

    def close(self) -> None:
        """Stop the embedded server (if ours) and remove its ``redis.url``."""
        if self.server is not None:
            self.server.stop()
            self.server = None
            (self.run_dir / URL_FILE).unlink(missing_ok=True)
