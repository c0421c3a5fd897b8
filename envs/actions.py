"""The action protocol every gym speaks.

The agent has one tool, ``interact_with_env(choice, content)``; the gym sees the text
``"[action] content"``, ``"[answer] content"``, ``"[search] content"`` or ``"[finish]"``.
Model output is turned into an :class:`Action` by ``userrl.agents.parsing``; plain prefixed
text is parsed here. Anything else is an ``invalid`` action, which a gym answers with its
format-error observation and zero reward (never an exception).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

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
        return {"choice": self.choice, "content": self.content, "raw": self.raw,
                "error": self.error, "via_tool": self.via_tool}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Action:
        choice = str(d.get("choice", "invalid"))
        if choice not in CHOICES and choice != "invalid":
            choice = "invalid"
        return cls(choice=choice, content=str(d.get("content", "")), raw=str(d.get("raw", "")),  # type: ignore[arg-type]
                   error=str(d.get("error", "")), via_tool=bool(d.get("via_tool", False)))


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
