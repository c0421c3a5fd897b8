"""The bus's settings: the deploy config's ``bus`` section itself (:mod:`userrl.config` uses this
class as the section), so each knob is defined once, with its docstring and its check.

A wrong value raises :class:`~userrl.errors.ConfigError` naming the field (``bus.read_count``)
and what is allowed. The caps left at 0 follow from ``memory_mb`` (:mod:`userrl.bus.budget`): the
fields then hold the derived numbers, and :meth:`BusSettings.as_written` gives back the 0s, so a
config written out and read again derives them again.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from userrl.bus.budget import derived_caps
from userrl.bus.messages import MAX_MESSAGE_BYTES
from userrl.errors import ConfigError

__all__ = ["BusSettings"]

#: the caps 0 derives from ``memory_mb``
AUTO_CAPS = ("dead_cap", "results_cap", "finished_cap")


@dataclass(frozen=True)
class BusSettings:
    """Knobs of the transport, the workers' reclaim and heartbeats, and the Redis client."""

    read_count: int = 128
    """Entries per XREADGROUP (COUNT)."""
    block_ms: int = 1000
    """XREADGROUP BLOCK in milliseconds; the socket timeout is set above it."""
    min_idle_ms: int = 15000
    """Entries idle longer than this are reclaimed from their (dead or stopped) consumer."""
    max_deliveries: int = 5
    """An entry delivered more often than this goes to the dead-letter stream."""
    stream_cap: int = 1_000_000
    """MAXLEN ~ safety cap per stream; normal trimming is by consumption point."""
    max_message_bytes: int = MAX_MESSAGE_BYTES
    """Payload size cap; bigger messages are refused on send and dead-lettered on read."""
    max_connections: int = 64
    """Redis connection pool size per process."""
    reclaim_interval_ms: int = 5000
    """How often each worker looks for idle entries of dead or stopped peers (XAUTOCLAIM)."""
    heartbeat_interval_ms: int = 2000
    """How often each worker refreshes its heartbeat key."""
    heartbeat_ttl_ms: int = 10000
    """Heartbeat key expiry: a worker silent this long is reported dead by `userrl check`."""
    idempotency_ttl_ms: int = 0
    """How long commit keys remember a handled message; 0 = auto: 4 x min_idle_ms x
    (max_deliveries + 1), at least a minute (a duplicate can only come while redelivery can)."""
    memory_mb: int = 512
    """Memory budget of the run's data in Redis, in megabytes (the default suits the embedded
    server on a laptop). What outlives an episode is capped from it: finished episodes' logs and
    index entries (40%), the results and learner streams (10%), dead letters (5%); the rest is
    the working set, which grows with the episode rate (docs/operations.md sizes it). The caps
    below set to 0 follow from it; a reward worker warns when the server's used_memory exceeds it."""
    dead_cap: int = 0
    """MAXLEN ~ of the dead-letter stream; 0 = from memory_mb (5% / dead_payload_bytes)."""
    dead_payload_bytes: int = 65_536
    """A dead letter keeps at most this many bytes of each field (plus its size and sha256)."""
    results_cap: int = 0
    """MAXLEN ~ of the learner and results streams (bounded even when nothing reads them); 0 =
    from memory_mb (10% at 64 KB per entry)."""
    finished_cap: int = 0
    """Finished episodes kept: their readable logs and their members of the finished-episode and
    done-group indexes (oldest dropped first); 0 = from memory_mb: as many as 40% of it holds at
    the measured size of recent logs."""
    episode_log_ttl_ms: int = 3_600_000
    """Readable episode logs expire this long after the episode ends."""
    episode_log_cap: int = 2_000
    """MAXLEN ~ of one readable episode log."""
    stall_timeout_ms: int = 900_000
    """A live episode without progress this long is reported failed (reward workers' sweep and
    waiters: dispatch --wait, eval); a waiter first re-dispatches one whose state vanished."""

    def __post_init__(self) -> None:
        for name in (
            "read_count",
            "block_ms",
            "min_idle_ms",
            "max_deliveries",
            "stream_cap",
            "max_message_bytes",
            "max_connections",
            "reclaim_interval_ms",
            "heartbeat_interval_ms",
            "heartbeat_ttl_ms",
            "memory_mb",
            "dead_payload_bytes",
            "episode_log_ttl_ms",
            "episode_log_cap",
            "stall_timeout_ms",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"bus.{name} must be >= 1, got {getattr(self, name)}")
        for name in AUTO_CAPS:
            if getattr(self, name) < 0:
                raise ConfigError(f"bus.{name} must be >= 0 (0 = from bus.memory_mb), got {getattr(self, name)}")
        window = self.redelivery_window_ms
        if self.idempotency_ttl_ms and self.idempotency_ttl_ms < window:
            raise ConfigError(
                f"bus.idempotency_ttl_ms ({self.idempotency_ttl_ms}) must cover min_idle_ms x "
                f"(max_deliveries + 1) = {window}, or be 0 (auto)"
            )
        if self.stall_timeout_ms <= window:
            raise ConfigError(
                f"bus.stall_timeout_ms ({self.stall_timeout_ms}) must be longer than min_idle_ms x "
                f"(max_deliveries + 1) = {window}: a redelivered step is not a stall"
            )
        if self.heartbeat_ttl_ms <= self.heartbeat_interval_ms:
            raise ConfigError("bus.heartbeat_ttl_ms must be larger than bus.heartbeat_interval_ms")
        if self.min_idle_ms <= self.block_ms:
            raise ConfigError(
                f"bus.min_idle_ms ({self.min_idle_ms}) must be larger than bus.block_ms ({self.block_ms})"
            )
        # the caps written as 0, remembered (not a field: the config's keys stay the YAML's)
        object.__setattr__(self, "auto_caps", frozenset(n for n in AUTO_CAPS if getattr(self, n) == 0))
        for name, cap in derived_caps(self.memory_mb, self.dead_payload_bytes).items():
            if getattr(self, name) == 0:
                object.__setattr__(self, name, cap)

    @property
    def finished_auto(self) -> bool:
        """finished_cap follows the measured log size (it was written as 0)."""
        return "finished_cap" in self.auto_caps

    def as_written(self) -> dict[str, Any]:
        """The fields as the config would write them: the caps derived from memory_mb as 0."""
        return {f.name: 0 if f.name in self.auto_caps else getattr(self, f.name) for f in fields(self)}

    @property
    def redelivery_window_ms(self) -> int:
        """The longest a message can keep coming back: each redelivery waits ``min_idle``."""
        return self.min_idle_ms * (self.max_deliveries + 1)

    @property
    def idempotency_window_ms(self) -> int:
        """TTL of commit keys: a duplicate of a message can only arrive while the message can
        still be redelivered, so 4x that window (at least a minute) is plenty, not days (6
        minutes with the defaults)."""
        return self.idempotency_ttl_ms or max(60_000, 4 * self.redelivery_window_ms)
