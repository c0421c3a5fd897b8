"""``Bus`` is the only door to Redis: no module of the package outside ``bus/`` touches Redis.

The modules are read with ``ast`` (nothing is imported), like tests/test_import_graph.py. A
module outside ``userrl.bus`` breaks the rule when it

- imports ``redis`` (or a submodule, e.g. ``redis.exceptions``): the client's errors are
  re-exported by :mod:`userrl.bus.client` under names that need no such import;
- reads a ``.redis`` attribute (``bus.redis``: the Bus's client) or ``._redis`` (a bus part's);
  the deploy config's ``redis`` field (its URL) is the one exception, read as ``cfg.redis``,
  ``config.redis`` or ``self.redis`` inside a ``*Config`` class;
- uses a name ``redis`` (a client handed in as a parameter or a local: with the import banned,
  there is nothing else it can be);
- imports a client maker of :mod:`userrl.bus.client` (``make_client``, ``make_sync_client``,
  ``GatedCluster``): it would hold a client of its own. ``Bus.open`` and
  :class:`userrl.bus.supervision.SupervisorLink` open one behind the door.

Tests and benchmarks are not the package: they inspect Redis with redis-py directly.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.test_import_graph import modules

#: the package inside which Redis may be reached
DOOR = "userrl.bus"

#: names that hold the deploy config, whose ``redis`` field is the server's URL, not a client
CONFIG_NAMES = frozenset({"cfg", "config"})

#: what userrl.bus.client makes clients with
CLIENT_MAKERS = frozenset({"make_client", "make_sync_client", "GatedCluster"})


def _base_name(node: ast.expr) -> str | None:
    """The last name of an attribute's base: ``self.cfg`` -> ``cfg``, ``bus`` -> ``bus``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


class _Checker(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []
        self._classes: list[str] = []

    def _add(self, node: ast.AST, what: str) -> None:
        self.found.append((getattr(node, "lineno", 0), what))

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._classes.append(node.name)
        self.generic_visit(node)
        self._classes.pop()

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name == "redis" or a.name.startswith("redis."):
                self._add(node, f"import {a.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if not node.level and (mod == "redis" or mod.startswith("redis.")):
            self._add(node, f"from {mod} import ...")
        if mod == f"{DOOR}.client":
            for a in node.names:
                if a.name in CLIENT_MAKERS:
                    self._add(node, f"imports the client maker {a.name}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr == "_redis":
            self._add(node, "reads ._redis")
        elif node.attr == "redis":
            base = _base_name(node.value)
            if base not in CONFIG_NAMES and not (base == "self" and self._in_config()):
                self._add(node, f"reads {ast.unparse(node)}")
        self.generic_visit(node)

    def _in_config(self) -> bool:
        return bool(self._classes) and self._classes[-1].endswith("Config")

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        # the config's own field ``redis: str = "embedded"`` (the URL) is not a client
        if not (isinstance(node.target, ast.Name) and node.target.id == "redis" and self._in_config()):
            self.visit(node.target)
        self.visit(node.annotation)
        if node.value is not None:
            self.visit(node.value)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "redis":
            self._add(node, "uses a Redis client named redis")

    def visit_arg(self, node: ast.arg) -> None:
        if node.arg == "redis":
            self._add(node, "takes a Redis client (parameter redis)")
        self.generic_visit(node)


def violations(source: str) -> list[tuple[int, str]]:
    """Where ``source`` (a module outside bus/) reaches Redis around the Bus: (line, what)."""
    checker = _Checker()
    checker.visit(ast.parse(source))
    return sorted(checker.found)


def outside_door() -> dict[str, Path]:
    return {m: p for m, p in modules().items() if m != DOOR and not m.startswith(DOOR + ".")}


def test_no_module_outside_bus_reaches_redis() -> None:
    bad = {
        f"{m}:{line}": what
        for m, p in sorted(outside_door().items())
        for line, what in violations(p.read_text(encoding="utf-8"))
    }
    assert not bad, f"Redis reached around the Bus (use or add a verb in bus/): {bad}"


def test_the_scan_covers_the_package() -> None:
    """The check reads the modules that talked to Redis before the Bus became the door (a
    scan that found no files would pass for nothing)."""
    mods = outside_door()
    for m in ("userrl.agents.worker", "userrl.envs.worker", "userrl.deploy.launcher", "userrl.ui.seat", "userrl.cli"):
        assert m in mods
    assert not any(m.startswith(DOOR) for m in mods)


def test_the_checker_catches_each_way_around_the_door() -> None:
    planted = {
        "import redis\n": "import redis",
        "import redis.asyncio as r\n": "import redis.asyncio",
        "from redis.exceptions import RedisError\n": "from redis.exceptions import ...",
        "async def f(bus):\n    await bus.redis.get('k')\n": "reads bus.redis",
        "async def f(self):\n    await self.bus.redis.aclose()\n": "reads self.bus.redis",
        "def f(store):\n    return store._redis\n": "reads ._redis",
        "async def f(redis, keys):\n    return await redis.get(keys.x)\n": "takes a Redis client (parameter redis)",
        "from userrl.bus.client import make_client\n": "imports the client maker make_client",
        "from userrl.bus.client import make_sync_client as m\n": "imports the client maker make_sync_client",
        "class Seat:\n    def f(self):\n        return self.redis.get('k')\n": "reads self.redis",
        "class Worker:\n    redis: object = None\n": "uses a Redis client named redis",
    }
    for source, what in planted.items():
        found = [w for _, w in violations(source)]
        assert what in found, (source, found)


def test_the_checker_leaves_the_config_url_and_the_door_alone() -> None:
    fine = (
        "from userrl.bus.client import RedisError, split_cluster_flag\n"
        "def url(cfg, self_cfg):\n"
        "    return cfg.redis if cfg.redis != 'embedded' else self_cfg.config.redis\n"
        "class DeployConfig:\n"
        "    redis: str = 'embedded'\n"
        "    def check(self):\n"
        "        return self.redis.startswith('redis://')\n"
        "async def g(bus):\n"
        "    async with bus:\n"
        "        return await bus.store.snapshot('e')\n"
    )
    assert violations(fine) == []
