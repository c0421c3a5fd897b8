"""TauGym's domains: where a task's tools and database come from.

A task's ``db`` names its domain: ``userrl-retail`` (the default; our own shop on SQLite,
``_tau_db``/``_tau_tools``) or τ-bench's ``tau-bench-retail`` and ``tau-bench-airline``
(``_taubench_*``). The gym only talks to a :class:`Domain`: an episode's database is always
rebuilt from the base by replaying the write calls its state records, so the state stays a
small list and no database handle lives across steps.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

from userrl.envs.gyms import _tau_tools as shop
from userrl.envs.gyms._tau_db import episode_db
from userrl.envs.gyms._tau_db import fingerprint as shop_fingerprint
from userrl.envs.gyms._taubench_airline import TOOLS as AIRLINE_TOOLS
from userrl.envs.gyms._taubench_db import EpisodeDB, load
from userrl.envs.gyms._taubench_retail import TOOLS as RETAIL_TOOLS
from userrl.envs.gyms._taubench_tools import Tool, ToolError
from userrl.errors import DataError, EnvError

BUNDLED = "userrl-retail"
Call = dict[str, Any]  # {"name": str, "arguments": {...}}
SHOP_HELP = (
    "Verify the customer's identity first (name and zip code, or email), find their "
    "user id, look up what you need with read tools, explain what you will change and "
    "get an explicit yes before any write tool (cancel, modify, return, exchange), tell "
    "the customer any figures they asked for, and ask whether there is anything else."
)


class Domain(ABC):
    """The tools and database of one domain."""

    name: str
    #: what the agent serves, for the system prompt
    business: str

    @abstractmethod
    def tools(self) -> dict[str, tuple[str, ...]]:
        """Tool name -> its argument names."""

    @abstractmethod
    def listing(self) -> str:
        """The tools as ``[search] tools`` shows them."""

    @abstractmethod
    def policy(self) -> str:
        """The domain's procedure (``[search] help``)."""

    @abstractmethod
    def is_write(self, name: str) -> bool: ...

    def is_terminal(self, name: str) -> bool:
        """Whether a successful call of ``name`` ends the episode (τ-bench: a transfer)."""
        return False

    @abstractmethod
    def call(self, writes: list[Call], name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        """Run one tool on the database after ``writes``: (observation, succeeded)."""

    @abstractmethod
    def fingerprint(self, writes: list[Call]) -> str:
        """A hash of the whole database after ``writes`` (equal iff the databases are)."""

    @abstractmethod
    def goal(self, actions: list[Call]) -> str:
        """The fingerprint after the task's gold ``actions``."""


class ShopDomain(Domain):
    """Our own bundled shop (SQLite); a write that fails changes nothing."""

    name, business = BUNDLED, "an online shop"

    def tools(self) -> dict[str, tuple[str, ...]]:
        return dict(shop.ARGS)

    def listing(self) -> str:
        return shop.tool_list()

    def policy(self) -> str:
        return SHOP_HELP

    def is_write(self, name: str) -> bool:
        return name in shop.WRITE_TOOLS

    def call(self, writes: list[Call], name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        conn = episode_db(writes)
        try:
            return json.dumps(shop.call_tool(conn, name, arguments), sort_keys=True, ensure_ascii=False), True
        except shop.ToolError as exc:
            return f"Error: {exc}", False
        finally:
            conn.close()

    def fingerprint(self, writes: list[Call]) -> str:
        conn = episode_db(writes)
        try:
            return shop_fingerprint(conn)
        finally:
            conn.close()

    def goal(self, actions: list[Call]) -> str:
        return self.fingerprint([a for a in actions if a["name"] in shop.WRITE_TOOLS])


class TauBenchDomain(Domain):
    """τ-bench's retail or airline domain (see ``_taubench_db``)."""

    def __init__(self, name: str, business: str, tools: dict[str, Tool]) -> None:
        self.name, self.business, self._tools = name, business, tools

    def tools(self) -> dict[str, tuple[str, ...]]:
        return {n: tuple(t.params) for n, t in self._tools.items()}

    def listing(self) -> str:
        return "\n".join(t.signature() for t in self._tools.values())

    def policy(self) -> str:
        return str(load(self.name)["wiki"])

    def is_write(self, name: str) -> bool:
        return name in self._tools and self._tools[name].write

    def is_terminal(self, name: str) -> bool:
        return name in self._tools and self._tools[name].terminal

    def _open(self, writes: list[Call]) -> EpisodeDB:
        db = EpisodeDB(self.name)
        for w in writes:
            try:
                self._tools[w["name"]](db, dict(w["arguments"]))
            except (ToolError, KeyError) as exc:  # a recorded write succeeded once: data changed?
                raise DataError(f"{self.name}: replaying {w.get('name')} failed: {exc}") from exc
        return db

    def call(self, writes: list[Call], name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        if name not in self._tools:
            return f"Error: unknown tool {name!r}; call [search] tools for the list", False
        try:
            return self._tools[name](self._open(writes), arguments), True
        except ToolError as exc:
            return f"Error: {exc}", False

    def fingerprint(self, writes: list[Call]) -> str:
        return self._open(writes).fingerprint()

    def goal(self, actions: list[Call]) -> str:
        """τ-bench's ground truth: every gold call in order on a fresh database; a call that
        fails changes nothing, as in τ-bench; terminal tools are skipped."""
        db = EpisodeDB(self.name)
        for a in actions:
            if not self.is_terminal(a["name"]):
                try:
                    self._tools[a["name"]](db, dict(a["arguments"]))
                except ToolError:
                    pass
        return db.fingerprint()


DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in (
        ShopDomain(),
        TauBenchDomain("tau-bench-retail", "an online retail store", RETAIL_TOOLS),
        TauBenchDomain("tau-bench-airline", "an airline", AIRLINE_TOOLS),
    )
}


def domain_of(task: dict[str, Any]) -> Domain:
    db = task.get("db", BUNDLED)
    if db not in DOMAINS:
        raise EnvError(f"task {task.get('id')}: unknown database {db!r}; known: {sorted(DOMAINS)}")
    return DOMAINS[db]


def check_actions(domain: Domain, actions: list[Any]) -> None:
    """ValueError unless every action is ``{name, arguments}`` calling a tool of ``domain``
    with exactly its arguments."""
    tools = domain.tools()
    for a in actions:
        if not isinstance(a, dict) or not isinstance(a.get("arguments"), dict):
            raise ValueError("each action needs a 'name' and an 'arguments' object")
        if set(a["arguments"]) != set(tools.get(str(a.get("name")), ("?",))):
            raise ValueError(f"action {a.get('name')!r} is not a call of a {domain.name} tool")
