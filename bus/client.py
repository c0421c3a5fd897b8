"""redis-py clients configured on purpose.

The defaults break blocking reads: a ``socket_timeout`` shorter than ``XREADGROUP BLOCK`` turns
every idle read into a timeout. We set it above the BLOCK time, size the pool for the
concurrency we use, and retry connection errors and timeouts with capped exponential backoff
and jitter. Every retried command is safe: commits are idempotent scripts, reads of ``>``
leave undelivered-to-us entries pending (reclaimed later), and duplicate sends are dropped by
the consumer's idempotent commit.

Redis Cluster (``redis_cluster: true``, or ``?cluster=true`` on the URL): redis-py's cluster
client, which discovers the nodes from the one in the URL and sends each command to the node
that owns its slot. Every key of a run shares one hash tag (:mod:`userrl.bus.keys`), so each
commit script and multi-stream read stays within one slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qsl, urlencode

import redis
import redis.cluster
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError

from userrl.errors import ConfigError

#: the client's errors, under names callers outside ``bus/`` catch (they never import redis):
#: any error of a command or connection, a lost or refused connection, a timed-out command
RedisConnectionError = ConnectionError
RedisTimeoutError = TimeoutError
__all__ = [
    "as_str",
    "RedisConnectionError",
    "RedisError",
    "RedisTimeoutError",
    "is_cluster",
    "make_client",
    "make_sync_client",
    "probe",
    "split_cluster_flag",
]

#: set while a task holds a slot of its GatedCluster: the client's own nested calls (a command
#: split over slots runs a pipeline, then may retry parts) must not wait for a second slot
_HOLDING: ContextVar[bool] = ContextVar("userrl_cluster_slot", default=False)

#: the URL query parameter that selects the cluster client (removed before redis-py sees the URL)
CLUSTER_FLAG = "cluster"


def split_cluster_flag(url: str) -> tuple[str, bool]:
    """``url`` without its ``cluster=`` query parameter, and whether that asked for a cluster."""
    base, _, qs = url.partition("?")
    query = parse_qsl(qs, keep_blank_values=True)
    flags = [v for k, v in query if k == CLUSTER_FLAG]
    if not flags:
        return url, False
    value = flags[-1].lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"redis: ?{CLUSTER_FLAG}= takes true or false, got {flags[-1]!r}")
    rest = urlencode([(k, v) for k, v in query if k != CLUSTER_FLAG])
    return base + (f"?{rest}" if rest else ""), value in ("true", "1", "yes")


def _check_url(url: str, cluster: bool) -> None:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"redis: expected 'embedded' or a redis://, rediss:// or unix:// URL, got {url!r}")
    if cluster and url.startswith("unix://"):
        raise ConfigError("redis: a cluster is reached over redis:// or rediss://, not a unix socket")


def make_client(
    url: str,
    *,
    block_ms: int = 1000,
    max_connections: int = 32,
    retries: int = 8,
    connect_timeout_s: float = 5.0,
    client_name: str | None = None,
    tls: Mapping[str, Any] | None = None,
    cluster: bool = False,
) -> Redis:
    """An asyncio client for ``redis://`` or ``rediss://`` URLs (password/ACL user in the URL);
    ``tls``: redis-py ``ssl_*`` arguments, used with ``rediss://`` only; ``cluster`` (or
    ``?cluster=true`` on the URL): a cluster client (typed as ``Redis``: the bus uses the
    commands both share)."""
    url, flagged = split_cluster_flag(url)
    cluster = cluster or flagged
    _check_url(url, cluster)
    common: dict[str, Any] = dict(
        decode_responses=False,
        socket_timeout=block_ms / 1000 + 10.0,
        socket_connect_timeout=connect_timeout_s,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries),
        retry_on_error=[ConnectionError, TimeoutError],
        client_name=client_name,
        **(dict(tls or {}) if url.startswith("rediss://") else {}),
    )
    if cluster:
        return GatedCluster.from_url(url, max_connections=max_connections, **common)  # type: ignore[return-value]
    # A blocking pool: a worker handling more messages at once than it has connections waits for
    # one instead of failing the handler (the plain pool raises MaxConnectionsError).
    pool = BlockingConnectionPool.from_url(url, timeout=30, max_connections=max_connections, **common)
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections


def make_sync_client(
    url: str, *, timeout_s: float = 5.0, tls: Mapping[str, Any] | None = None, cluster: bool = False
) -> redis.Redis:
    """A short-timeout synchronous client (launcher, checks, tests) that follows the same
    cluster selection as :func:`make_client`."""
    url, flagged = split_cluster_flag(url)
    cluster = cluster or flagged
    _check_url(url, cluster)
    kw: dict[str, Any] = dict(
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        **(dict(tls or {}) if url.startswith("rediss://") else {}),
    )
    if cluster:
        return redis.cluster.RedisCluster.from_url(url, **kw)  # type: ignore[return-value]
    return redis.Redis.from_url(url, **kw)


def probe(url: str, timeout_s: float = 3.0, *, assume_cluster: bool = False) -> bool:
    """PING the server at ``url`` (a plain URL: any one node of a cluster answers) and say
    whether it is a cluster node (``INFO cluster``; where INFO is restricted, as on managed
    services: ``assume_cluster``). Raises :class:`RedisError` or ``OSError`` when it does not
    answer."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
        try:
            return bool(client.info("cluster").get("cluster_enabled"))
        except RedisError:
            return assume_cluster
    finally:
        client.close()


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is one of redis-py's cluster clients (async or sync)."""
    return isinstance(client, (RedisCluster, redis.cluster.RedisCluster))


class GatedCluster(RedisCluster):
    """redis-py's async cluster client, whose commands and pipelines wait for a free slot.

    Its per-node pools raise ``MaxConnectionsError`` when more commands run at once than
    ``max_connections``, where the single-server client's blocking pool waits. A worker runs
    more handlers at once than it has connections, so every command and pipeline takes one of
    ``max_connections`` slots first: a node then never holds more connections than that, since
    each slot holder uses at most one connection per node.
    """

    def __init__(self, *args: Any, max_connections: int = 32, **kwargs: Any) -> None:
        super().__init__(*args, max_connections=max_connections, **kwargs)
        self.gate = asyncio.Semaphore(max_connections)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``max_connections`` slots (re-entrant within a task)."""
        if _HOLDING.get():
            yield
            return
        async with self.gate:
            token = _HOLDING.set(True)
            try:
                yield
            finally:
                _HOLDING.reset(token)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.slot():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise ValueError("the cluster pipeline takes no shard_hint")
        return _GatedPipeline(self, transaction)


class _GatedPipeline(ClusterPipeline):
    """A cluster pipeline that holds one of its client's slots while it executes."""

    async def execute(self, *args: Any, **kwargs: Any) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, GatedCluster)
        async with client.slot():
            return await super().execute(*args, **kwargs)


def as_str(v: bytes | str) -> str:
    """A reply value (an entry id, a stream or group name, a field) as text: redis-py gives bytes
    unless the client decodes responses."""
    return v.decode() if isinstance(v, bytes) else str(v)
