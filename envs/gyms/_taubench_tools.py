"""What τ-bench's retail and airline tools share: the tool record, argument checks, and the
tools both domains have (calculate, think, transfer_to_human_agents).

A tool is a function ``(db, **arguments) -> str`` over an :class:`EpisodeDB`; it returns the
text the agent sees (τ-bench's tools return strings: JSON of a record, an id, a message) or
raises :class:`ToolError`, which the agent sees as ``Error: <message>`` (τ-bench's wording).
Arguments are checked against the tool's parameters before the call, so a tool body never
fails half-way on a malformed argument: a write either happens whole or not at all.
"""

from __future__ import annotations

import ast
import copy
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from userrl.envs.gyms._taubench_db import EpisodeDB

#: parameter type names (JSON schema's) -> the Python check of a value
_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "strings": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "objects": lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
}


class ToolError(ValueError):
    """A tool call that cannot be carried out; the message is what the agent sees."""


@dataclass(frozen=True)
class Tool:
    """One tool: its function, parameters (name -> type, in order) and a one-line summary.

    ``fields`` gives the keys (and their types) every object of an ``objects`` parameter
    must carry.
    """

    fn: Callable[..., str]
    params: dict[str, str]
    summary: str
    write: bool = False
    terminal: bool = False
    fields: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.fn.__name__

    def signature(self) -> str:
        args = ", ".join(f"{p}: {t}" for p, t in self.params.items())
        return f"- {self.name}({args}): {self.summary}"

    def __call__(self, db: EpisodeDB, arguments: dict[str, Any]) -> str:
        if set(arguments) != set(self.params):
            raise ToolError(f"{self.name} takes the arguments {sorted(self.params)}, got {sorted(arguments)}")
        for p, kind in self.params.items():
            if not _TYPES[kind](arguments[p]):
                raise ToolError(f"{self.name}: {p!r} must be of type {kind}")
            for obj in arguments[p] if kind == "objects" else ():
                for key, key_kind in self.fields.get(p, {}).items():
                    if key not in obj or not _TYPES[key_kind](obj[key]):
                        raise ToolError(f"{self.name}: every object of {p!r} needs {key!r} of type {key_kind}")
        # the tool may keep the arguments in the database: never alias the caller's objects
        return self.fn(db, **copy.deepcopy(arguments))


_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.operand))
    raise ToolError("only numbers, + - * / and parentheses are allowed")


def calculate(db: EpisodeDB, expression: str) -> str:
    if not all(c in "0123456789+-*/(). " for c in expression):
        raise ToolError("invalid characters in expression")
    try:
        value = _eval(ast.parse(expression, mode="eval"))
    except (SyntaxError, ZeroDivisionError, OverflowError, RecursionError) as exc:
        raise ToolError(str(exc) or type(exc).__name__) from exc
    return str(round(float(value), 2))


def think(db: EpisodeDB, thought: str) -> str:
    return ""


def transfer_to_human_agents(db: EpisodeDB, summary: str) -> str:
    return "Transfer successful"


COMMON = (
    Tool(
        calculate,
        {"expression": "string"},
        "evaluate an arithmetic expression (numbers, + - * /, parentheses), rounded to 2 decimals",
    ),
    Tool(think, {"thought": "string"}, "note a thought; changes nothing"),
    Tool(
        transfer_to_human_agents,
        {"summary": "string"},
        "hand the customer to a human agent with a summary of the issue (ends the conversation)",
        terminal=True,
    ),
)
