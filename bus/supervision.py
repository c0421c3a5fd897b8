"""The launcher's synchronous door to Redis (it supervises from a plain thread, no event loop).

The launcher (:mod:`userrl.deploy.launcher`) publishes the wanted replica counts
(``Keys.replicas``) and re-reads them each pass (``userrl scale`` changes them), watches its
workers' heartbeats appear, reads the run's counters and failed trajectories to give up on a
deploy whose every episode fails, records the failure (``Keys.failure``), and keeps its own
record alive (``Keys.supervisor``, with a TTL). :class:`SupervisorLink` holds a short-timeout
synchronous client for all of that; the async side reads the same keys through
:mod:`userrl.bus.control`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from userrl.bus.client import make_sync_client
from userrl.bus.keys import Keys


class SupervisorLink:
    """See the module docstring. ``close()`` when done (also usable as a context manager)."""

    def __init__(
        self,
        url: str,
        keys: Keys,
        *,
        timeout_s: float = 5.0,
        tls: Mapping[str, Any] | None = None,
        cluster: bool = False,
    ) -> None:
        self._redis = make_sync_client(url, timeout_s=timeout_s, tls=tls, cluster=cluster)
        self.keys = keys

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> SupervisorLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the supervisor's record -----------------------------------------------------------------
    def supervisor(self) -> bytes | None:
        """The live supervisor's record (JSON), None when no launcher supervises the run."""
        return self._redis.get(self.keys.supervisor)  # type: ignore[return-value]

    def beat(self, body: str, ttl_ms: int) -> None:
        """Write the supervisor's record, alive for ``ttl_ms``."""
        self._redis.set(self.keys.supervisor, body, px=ttl_ms)

    def publish(self, wanted: Mapping[str, int]) -> None:
        """A new deploy: the wanted replica counts replace any old ones; an old failure is cleared."""
        self._redis.delete(self.keys.replicas, self.keys.failure)
        if wanted:
            self._redis.hset(self.keys.replicas, mapping=dict(wanted))

    def wanted(self) -> dict[str, bytes]:
        """The wanted replica counts as stored (role -> raw value: ``userrl scale`` wrote them)."""
        return {k.decode(): v for k, v in self._redis.hgetall(self.keys.replicas).items()}  # type: ignore[union-attr]

    def withdraw(self) -> None:
        """The launcher stops: its record and the wanted counts go."""
        self._redis.delete(self.keys.supervisor, self.keys.replicas)

    def fail(self, body: str, ttl_s: int) -> None:
        """Record why the deploy gave up (``userrl`` jobs attached to it read it and stop)."""
        self._redis.set(self.keys.failure, body, ex=ttl_s)

    # -- what the workers report -----------------------------------------------------------------
    def heartbeats(self, workers: Sequence[tuple[str, str]]) -> list[bytes | None]:
        """The heartbeat (JSON) of each (role, worker), None where there is none."""
        if not workers:
            return []
        return list(self._redis.mget([self.keys.heartbeat(r, w) for r, w in workers]))  # type: ignore[arg-type]

    def counters(self, names: Sequence[str]) -> list[bytes | None]:
        """These counters of the run, None where never counted."""
        return list(self._redis.hmget(self.keys.counters, list(names)))  # type: ignore[arg-type]

    def newest(self, stream: str, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """The newest ``count`` entries of a stream, newest first."""
        return list(self._redis.xrevrange(stream, count=count))  # type: ignore[arg-type]
