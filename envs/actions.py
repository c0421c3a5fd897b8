"""The action protocol every gym speaks, and how text becomes an action.

The agent has one tool, ``interact_with_env(choice, content)``; the gym sees the text
``"[action] content"``, ``"[answer] content"``, ``"[search] content"`` or ``"[finish]"``.
:func:`parse_action` turns a model's output into an :class:`Action` (:func:`parse_prefixed`
reads the plain prefixed text alone). Anything else is an ``invalid`` action, which a gym
answers with its format-error observation and zero reward (never an exception).

This module is a contract shared by gyms, policy backends and the learner: it imports nothing
of ours.

Model output -> :class:`Action`
-------------------------------
Two surface forms are accepted:

* UserRL's one tool, ``interact_with_env(choice, content)``, as a Hermes/Qwen tool call::

      <tool_call>
      {"name": "interact_with_env", "arguments": {"choice": "answer", "content": "42"}}
      </tool_call>

  ``arguments`` may also be a JSON *string* holding that object (OpenAI style). ``choice`` is
  one of ``action``, ``answer``, ``search`` (the tool has no ``finish``; write ``[finish]``).
  A number as ``content`` is accepted and turned into its text; anything else must be a
  non-empty string.
* The plain prefixes ``[action] …``, ``[answer] …``, ``[search] …`` and ``[finish]``.

Rules, in order:

1. ``<think>…</think>`` blocks are removed first (the tokens stay in the trajectory; only the
   action ignores them). A leading ``…</think>`` without an opening tag (templates that put
   ``<think>`` in the prompt) is removed too. An unclosed ``<think>`` swallows the rest of
   the text, so a generation truncated while thinking is invalid.
2. If a ``<tool_call>`` tag remains, **the first tool call decides**: its JSON is decoded
   with a real JSON decoder (so a ``</tool_call>`` *inside* a JSON string cannot end the call
   early) and must be followed by ``</tool_call>``. If that first call is invalid the whole
   output is invalid — later calls are not tried, so spraying attempts never pays. Calls after
   a valid first one are ignored (one turn, one action). Text around the call is allowed.
3. Otherwise the text must be a plain prefixed action (:func:`parse_prefixed`).

:func:`parse_action` never raises: every failure is ``Action("invalid", raw=text, error=…)``
with a reason the env can show the agent as its format-error observation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "CHOICES",
    "MAX_OUTPUT_CHARS",
    "TOOL_CHOICES",
    "TOOL_NAME",
    "TOOL_SCHEMA",
    "Action",
    "Choice",
    "format_tool_call",
    "parse_action",
    "parse_prefixed",
    "strip_think",
]

Choice = Literal["action", "answer", "search", "finish", "invalid"]
CHOICES: tuple[str, ...] = ("action", "answer", "search", "finish")

_PREFIX = re.compile(r"^\s*\[(action|answer|search|finish)\]\s*(.*)\Z", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Action:
    """One parsed agent action.

    ``choice`` is ``invalid`` when the text could not be parsed; ``error`` then says why.
    ``via_tool`` records whether the action came from an ``interact_with_env`` tool call, so
    the env worker can answer with a ``tool`` message rather than a ``user`` one.
    """

    choice: Choice
    content: str = ""
    raw: str = ""
    error: str = ""
    via_tool: bool = False

    @property
    def text(self) -> str:
        """The action as the gym sees it (``"[answer] 42"``); empty for an invalid action."""
        if self.choice == "invalid":
            return ""
        if self.choice == "finish":
            return "[finish]"
        return f"[{self.choice}] {self.content}".rstrip()

    def to_dict(self) -> dict[str, object]:
        return {
            "choice": self.choice,
            "content": self.content,
            "raw": self.raw,
            "error": self.error,
            "via_tool": self.via_tool,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Action:
        choice = str(d.get("choice", "invalid"))
        if choice not in CHOICES and choice != "invalid":
            choice = "invalid"
        return cls(
            choice=choice,
            content=str(d.get("content", "")),
            raw=str(d.get("raw", "")),  # type: ignore[arg-type]
            error=str(d.get("error", "")),
            via_tool=bool(d.get("via_tool", False)),
        )


def parse_prefixed(text: str) -> Action:
    """Parse ``"[choice] content"`` text; anything else is an invalid action with a reason."""
    m = _PREFIX.match(text or "")
    if not m:
        return Action("invalid", raw=text, error="expected one of [action], [answer], [search], [finish]")
    choice = m.group(1).lower()
    content = m.group(2).strip()
    if choice == "finish":
        return Action("finish", raw=text)
    if not content:
        return Action("invalid", raw=text, error=f"[{choice}] needs content")
    return Action(choice, content=content, raw=text)  # type: ignore[arg-type]


__all__ = [
    "MAX_OUTPUT_CHARS",
    "TOOL_CHOICES",
    "TOOL_NAME",
    "TOOL_SCHEMA",
    "format_tool_call",
    "parse_action",
    "strip_think",
]

TOOL_NAME = "interact_with_env"
TOOL_CHOICES: tuple[str, ...] = ("action", "answer", "search")
#: longer outputs are rejected outright (no model turn is legitimately this long)
MAX_OUTPUT_CHARS = 1_000_000

TOOL_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": (
            "Interact with the environment. Use 'action' to act or talk to the user, 'search' to "
            "look something up, and 'answer' to give your final answer."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "choice": {
                    "type": "string",
                    "enum": list(TOOL_CHOICES),
                    "description": "What kind of step this is: action, answer or search.",
                },
                "content": {
                    "type": "string",
                    "description": "The question, action, search query or answer.",
                },
            },
            "required": ["choice", "content"],
        },
    },
}

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_CALL_OPEN, _CALL_CLOSE = "<tool_call>", "</tool_call>"


def format_tool_call(choice: str, content: str) -> str:
    """The canonical text of one ``interact_with_env`` call (``[finish]`` for ``finish``)."""
    if choice == "finish":
        return "[finish]"
    if choice not in TOOL_CHOICES:
        raise ValueError(f"choice must be one of {TOOL_CHOICES} or 'finish', got {choice!r}")
    call = {"name": TOOL_NAME, "arguments": {"choice": choice, "content": content}}
    return f"{_CALL_OPEN}\n{json.dumps(call, ensure_ascii=False)}\n{_CALL_CLOSE}"


def strip_think(text: str) -> tuple[str, str]:
    """Remove thinking blocks; return ``(text, error)`` where error is set if one is unclosed."""
    close = text.find(_THINK_CLOSE)
    open_ = text.find(_THINK_OPEN)
    if close != -1 and (open_ == -1 or close < open_):
        text = text[close + len(_THINK_CLOSE) :]
    parts: list[str] = []
    pos = 0
    while (start := text.find(_THINK_OPEN, pos)) != -1:
        parts.append(text[pos:start])
        end = text.find(_THINK_CLOSE, start + len(_THINK_OPEN))
        if end == -1:
            return "".join(parts), "unterminated <think> block (generation cut off while thinking?)"
        pos = end + len(_THINK_CLOSE)
    parts.append(text[pos:])
    return "".join(parts), ""


def parse_action(text: str) -> Action:
    """Parse one model turn into an action; see the module docstring for the rules."""
    try:
        return _parse(text)
    except Exception as exc:  # never raise: a parser bug must not crash an episode
        return Action("invalid", raw=str(text), error=f"unparseable output ({type(exc).__name__})")


def _invalid(raw: str, error: str) -> Action:
    return Action("invalid", raw=raw, error=error)


def _parse(raw: str) -> Action:
    if not isinstance(raw, str):
        return _invalid(str(raw), f"expected text, got {type(raw).__name__}")
    if len(raw) > MAX_OUTPUT_CHARS:
        return _invalid(raw, f"output longer than {MAX_OUTPUT_CHARS} characters")
    body, err = strip_think(raw)
    if err and not body.strip():
        return _invalid(raw, err)
    start = body.find(_CALL_OPEN)
    if start == -1:
        if _CALL_CLOSE in body:
            return _invalid(raw, "</tool_call> without an opening <tool_call>")
        action = parse_prefixed(body.strip())
        return Action(action.choice, content=action.content, raw=raw, error=action.error)
    return _parse_tool_call(raw, body, start + len(_CALL_OPEN))


def _parse_tool_call(raw: str, body: str, pos: int) -> Action:
    n = len(body)
    while pos < n and body[pos].isspace():
        pos += 1
    try:
        call, end = json.JSONDecoder().raw_decode(body, pos)
    except RecursionError:
        return _invalid(raw, "tool call JSON is nested too deeply")
    except ValueError as exc:
        if _CALL_CLOSE not in body[pos:]:
            return _invalid(raw, "truncated tool call: no closing </tool_call>")
        return _invalid(raw, f"tool call is not valid JSON ({exc.msg} at char {exc.pos - pos})")
    if not body[end:].lstrip().startswith(_CALL_CLOSE):
        if _CALL_CLOSE not in body[end:]:
            return _invalid(raw, "truncated tool call: no closing </tool_call>")
        return _invalid(raw, "unexpected text between the tool call JSON and </tool_call>")
    return _tool_action(raw, call)


def _tool_action(raw: str, call: Any) -> Action:
    if not isinstance(call, dict):
        return _invalid(raw, f"tool call must be a JSON object, got {type(call).__name__}")
    name = call.get("name")
    if name != TOOL_NAME:
        return _invalid(raw, f"unknown tool {str(name)[:80]!r}; the only tool is {TOOL_NAME}")
    args = call.get("arguments", call.get("parameters"))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except (ValueError, RecursionError):
            return _invalid(raw, "tool call 'arguments' is a string but not valid JSON")
    if not isinstance(args, dict):
        return _invalid(raw, "tool call needs an 'arguments' object with 'choice' and 'content'")
    choice = args.get("choice")
    if not isinstance(choice, str) or choice.strip().lower() not in TOOL_CHOICES:
        return _invalid(raw, f"unknown choice {str(choice)[:80]!r}; use one of {', '.join(TOOL_CHOICES)}")
    content = args.get("content")
    if isinstance(content, int | float) and not isinstance(content, bool):
        content = str(content)
    if not isinstance(content, str) or not content.strip():
        return _invalid(raw, f"choice {choice!r} needs a non-empty string 'content'")
    return Action(
        choice.strip().lower(),
        content=content.strip(),
        raw=raw,  # type: ignore[arg-type]
        via_tool=True,
    )
