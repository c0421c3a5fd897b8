"""Helpers every gym shares: best-score rewards, JSON replies from LLM users, transcripts."""

from __future__ import annotations

import json
import re
from typing import Any

from userrl.sim_users.base import UserQuery

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


def clip01(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def gain_over_best(best: float, score: float) -> tuple[float, float]:
    """Turn reward and new best for a scored answer: the gain over the best so far.

    Rewards are never negative and clipped to [0, 1]; rounding to 4 decimals keeps the sum of
    a transcript's rewards equal to its best score without float drift.
    """
    score = round(clip01(score), 4)
    reward = round(max(0.0, score - best), 4)
    return reward, max(best, score)


def parse_json_object(text: str, required: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """Parse an LLM reply that should be one JSON object with the ``required`` typed keys.

    Code fences and text around the object are tolerated (LLMs add them); anything else that
    is not such an object raises ``ValueError`` so the caller can retry or fail the episode.
    """
    raw = _FENCE.sub("", (text or "").strip())
    start, end = raw.find("{"), raw.rfind("}")
    if start < 0 or end <= start:
        raise ValueError(f"expected a JSON object, got {text[:200]!r}")
    try:
        obj = json.loads(raw[start : end + 1])
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON reply: {exc.msg}") from exc
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    for key, typ in required.items():
        if key not in obj:
            raise ValueError(f"JSON reply lacks the key {key!r}")
        if not isinstance(obj[key], typ) or isinstance(obj[key], bool) and typ in (int, float):
            raise ValueError(f"JSON key {key!r} has the wrong type {type(obj[key]).__name__}")
    return obj


def dialogue_text(query: UserQuery, limit: int = 20) -> str:
    """The last ``limit`` messages as plain text, for LLM user prompts."""
    lines = [f"{m.get('role', '?')}: {m.get('content', '')}" for m in query.history[-limit:]]
    return "\n".join(lines) if lines else "(no messages yet)"


def assistant_turns(messages: list[dict[str, str]]) -> int:
    """How many actions the agent has taken so far in a chat transcript."""
    return sum(1 for m in messages if m.get("role") == "assistant")


def history_for_query(state: dict[str, Any], limit: int = 40) -> list[dict[str, str]]:
    """The dialogue the gym kept in its state, as chat messages (for LLM users)."""
    return [dict(m) for m in state.get("dialogue", [])[-limit:]]
