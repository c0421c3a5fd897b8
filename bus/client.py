"""redis-py clients configured on purpose.

The defaults break blocking reads: a ``socket_timeout`` shorter than ``XREADGROUP BLOCK`` turns
every idle read into a timeout. We set it above the BLOCK time, size the pool for the
concurrency we use, and retry connection errors and timeouts with capped exponential backoff
and jitter. Every retried command is safe: commits are idempotent scripts, reads of ``>``
leave undelivered-to-us entries pending (reclaimed later), and duplicate sends are dropped by
the consumer's idempotent commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError, TimeoutError

from userrl.errors import ConfigError


def make_client(
    url: str,
    *,
    block_ms: int = 1000,
    max_connections: int = 32,
    retries: int = 8,
    connect_timeout_s: float = 5.0,
    client_name: str | None = None,
    tls: Mapping[str, Any] | None = None,
) -> Redis:
    """An asyncio client for ``redis://`` or ``rediss://`` URLs (password/ACL user in the URL);
    ``tls``: redis-py ``ssl_*`` arguments, used with ``rediss://`` only."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"redis: expected 'embedded' or a redis://, rediss:// or unix:// URL, got {url!r}")
    # A blocking pool: a worker handling more messages at once than it has connections waits for
    # one instead of failing the handler (the plain pool raises MaxConnectionsError).
    pool = BlockingConnectionPool.from_url(
        url,
        timeout=30,
        decode_responses=False,
        socket_timeout=block_ms / 1000 + 10.0,
        socket_connect_timeout=connect_timeout_s,
        socket_keepalive=True,
        health_check_interval=30,
        max_connections=max_connections,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries),
        retry_on_error=[ConnectionError, TimeoutError],
        client_name=client_name,
        **(dict(tls or {}) if url.startswith("rediss://") else {}),
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections
