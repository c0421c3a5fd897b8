"""Simulator health: how the simulated users behaved in one GRPO step's episodes.

The learner logs these with every step (``metrics.jsonl``, the trackers, the web view's
Learning page), from the groups it trained on and the groups the reward worker dropped (failed
episodes are in those), using what each turn records about its user calls
(``turns[i]["users"]``, :mod:`userrl.sim_users.stamp`):

==============================  ==========================================================
``sim/episodes``                episodes in the step (trained and dropped)
``sim/ended/<why>``             episodes by how they ended: ``terminated``, ``truncated``,
                                ``hangup`` (the user ended it, task done), ``hangup_early``
                                (the user ended it before the task was done),
                                ``failed_<kind>`` (``failed_user_malformed``, ...)
``sim/early_hangups``           episodes the user ended early; ``sim/early_hangup_rate``
                                their share of the episodes
``sim/user_calls``              user and judge calls answered
``sim/format_error_rate``       malformed or empty model replies per generation (re-asks
                                included; 0 when no model generated)
``sim/empty_replies``           empty model replies
``sim/leak_hits``               replies the leak guard tripped on; ``sim/leak_rate`` per
                                generation
``sim/user_latency_ms``         mean latency of a user call; ``sim/user_latency_ms_p95``
``sim/shared_generations``      generations an identical greedy prompt's call shared (a group's
                                judge calls on the same answer, :mod:`userrl.sim_users.shared`)
``sim/by/<stamp>``              user calls answered by each simulator (``scripted``,
                                ``openai:MODEL@VERSION``, ``human:NAME``)
``sim/user``                    the same as text, most calls first (``metrics.jsonl`` only:
                                trackers take numbers)
==============================  ==========================================================
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

__all__ = ["end_reason", "simulator_metrics"]


def end_reason(status: str, meta: dict[str, Any], error: dict[str, Any] | None = None) -> str:
    """Why an episode ended, as one histogram bucket."""
    if status != "ok":
        kind = (error or {}).get("kind") or "unknown"
        return f"failed_{kind}"
    hangup = meta.get("hangup")
    if hangup:
        return "hangup_early" if hangup == "early" else "hangup"
    return str(meta.get("end") or "unknown")


def _p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, math.ceil(0.95 * len(s)) - 1)]


def simulator_metrics(groups: Iterable[dict[str, Any]], dropped_items: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """The metrics of the module docstring. ``groups``: trained scored groups (``items`` with
    ``meta`` and ``turns``); ``dropped_items``: the summaries of dropped groups' members
    (``status``, ``error``, ``meta``, ``users``)."""
    ended: Counter[str] = Counter()
    calls: list[dict[str, Any]] = []
    for g in groups:
        for it in g.get("items", []):
            ended[end_reason("ok", it.get("meta") or {})] += 1
            calls += [u for t in it.get("turns", []) for u in t.get("users") or []]
    for it in dropped_items:
        ended[end_reason(str(it.get("status", "ok")), it.get("meta") or {}, it.get("error"))] += 1
        calls += list(it.get("users") or [])
    n = sum(ended.values())
    out: dict[str, Any] = {"sim/episodes": n}
    out.update({f"sim/ended/{why}": c for why, c in sorted(ended.items())})
    early = ended.get("hangup_early", 0)
    out["sim/early_hangups"] = early
    out["sim/early_hangup_rate"] = early / n if n else 0.0
    out["sim/user_calls"] = len(calls)
    if not calls:
        return out
    generations = sum(int(c.get("attempts") or 0) for c in calls)
    bad = sum(int(c.get("malformed") or 0) + int(c.get("empty") or 0) for c in calls)
    leaks = sum(int(c.get("leaks") or 0) for c in calls)
    out["sim/format_error_rate"] = bad / generations if generations else 0.0
    out["sim/empty_replies"] = sum(int(c.get("empty") or 0) for c in calls)
    out["sim/leak_hits"] = leaks
    out["sim/leak_rate"] = leaks / generations if generations else 0.0
    out["sim/shared_generations"] = sum(int(c.get("shared") or 0) for c in calls)
    ms = [float(c["ms"]) for c in calls if isinstance(c.get("ms"), (int, float))]
    if ms:
        out["sim/user_latency_ms"] = round(sum(ms) / len(ms), 2)
        out["sim/user_latency_ms_p95"] = round(_p95(ms), 2)
    by = Counter(str(c.get("by") or "unknown") for c in calls)
    out.update({f"sim/by/{stamp}": k for stamp, k in sorted(by.items())})
    out["sim/user"] = ", ".join(f"{stamp} ({k})" for stamp, k in by.most_common())
    return out
