"""Resolve a deploy config into a live connection: where Redis is, and the Bus on it.

With ``redis: embedded`` the launcher (``userrl up``/``train``) starts a private server and
writes its URL to ``{run_dir}/redis.url``; workers started alone find it there. The
environment variable ``USERRL_REDIS_URL`` overrides everything (containers, tests).
"""

from __future__ import annotations

import os
from pathlib import Path

from userrl.bus.client import make_client
from userrl.bus.embedded import _ping
from userrl.bus.keys import Keys
from userrl.bus.transport import Bus, BusSettings
from userrl.config import DeployConfig
from userrl.errors import ConfigError

URL_FILE = "redis.url"


def redis_url(cfg: DeployConfig) -> str:
    env = os.environ.get("USERRL_REDIS_URL")
    if env:
        return env
    if cfg.redis != "embedded":
        return cfg.redis
    f = Path(cfg.run_dir) / URL_FILE
    if f.is_file():
        url = f.read_text().strip()
        port = url.rsplit(":", 1)[-1].split("/")[0]
        if port.isdigit() and _ping(int(port)):
            return url
    raise ConfigError(
        f"redis: embedded, but no embedded server is running for run_dir {cfg.run_dir!r}. "
        "Start the deploy with `userrl up CONFIG` (it starts the server), "
        "or set USERRL_REDIS_URL / redis: redis://host:port to use your own server."
    )


def bus_settings(cfg: DeployConfig) -> BusSettings:
    b = cfg.bus
    return BusSettings(read_count=b.read_count, block_ms=b.block_ms, min_idle_ms=b.min_idle_ms,
                       max_deliveries=b.max_deliveries, stream_cap=b.stream_cap,
                       max_message_bytes=b.max_message_bytes,
                       idempotency_ttl_ms=b.idempotency_ttl_ms, dead_cap=b.dead_cap,
                       dead_payload_bytes=b.dead_payload_bytes, results_cap=b.results_cap,
                       finished_cap=b.finished_cap, episode_log_ttl_ms=b.episode_log_ttl_ms,
                       episode_log_cap=b.episode_log_cap)


def make_bus(cfg: DeployConfig, url: str | None = None, client_name: str | None = None) -> Bus:
    url = url or redis_url(cfg)
    client = make_client(url, block_ms=cfg.bus.block_ms, max_connections=cfg.bus.max_connections,
                         client_name=client_name)
    return Bus(client, Keys(cfg.run), bus_settings(cfg))
