"""How far the scripted users can be trusted on the paper's data: their accuracy on small
labelled check sets of our own.

Each file of ``checks/`` (one per gym with a scripted user on imported tasks) holds queries
about imported test tasks, named by their id, with the answer a careful person who knows the
hidden task would give (written for userrl from common knowledge and the task's own text, not
taken from the UserRL release). A line is ``{"task": id, "query": name, "payload": {...},
"truth": {...}}``; the truth's keys are compared with the scripted reply's:

- ``answer`` (Yes/No), ``correct`` (a guess or an answer judged right), ``uncovered`` (the
  detail indices a clarifying question asks about, compared as sets);
- ``moves``: whether an argument moves the persuadee toward disagreement;
- ``agrees``: whether the customer says yes to a proposal; ``done``: whether they end the call.

``python -m userrl.envs.data_tools.user_checks DATA`` prints the accuracy per gym and query
for data imported with ``userrl data import-userrl`` (docs/users.md shows the table); the
tests hold each gym to a floor. FunctionGym has no user, and imported TravelGym nothing to
ask (no preferences): they have no check set.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from userrl.envs.datasets import load_tasks
from userrl.envs.gyms._persuade_rules import stance_index
from userrl.envs.registry import get_env_class
from userrl.errors import DataError
from userrl.sim_users.base import UserQuery

CHECKS = Path(__file__).resolve().parent / "checks"
FILES = {
    "userrl/Telepathy-v0": "telepathy.jsonl",
    "userrl/Turtle-v0": "turtle.jsonl",
    "userrl/Intention-v0": "intention.jsonl",
    "userrl/Search-v0": "search.jsonl",
    "userrl/Persuade-v0": "persuade.jsonl",
    "userrl/Tau-v0": "tau.jsonl",
}


@dataclass
class Result:
    """Right and total per query name, and the items the scripted user got wrong."""

    right: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    misses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return sum(self.right.values()) / max(1, sum(self.total.values()))


def load_checks(env_id: str) -> list[dict[str, Any]]:
    """The labelled items of ``env_id`` (comment lines, ``{"_about": ...}``, skipped)."""
    path = CHECKS / FILES[env_id]
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: malformed JSON ({exc.msg})") from exc
        if "_about" not in item:
            items.append(item)
    return items


def _observed(item: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in item["truth"]:
        if key == "moves":
            out[key] = stance_index(str(reply["stance"])) > stance_index(str(item["payload"]["stance"]))
        elif key == "agrees":
            out[key] = str(reply["reply"]).startswith("Yes")
        elif key == "uncovered":
            out[key] = sorted(int(i) for i in reply["uncovered"])
        else:
            out[key] = reply.get(key)
    return out


def check_user(env_id: str, data: str | Path) -> Result:
    """The scripted user of ``env_id`` on its check set, against ``data``'s test tasks."""
    spec = get_env_class(env_id).user_spec
    tasks = {str(t["id"]): t for t in load_tasks(env_id, "test", data)}
    result = Result()
    for item in load_checks(env_id):
        task = tasks.get(str(item["task"]))
        if task is None:
            raise DataError(f"{FILES[env_id]}: task {item['task']!r} is not in {data}'s {env_id} test split")
        query = UserQuery(env_id, "respond", item["query"], dict(item["payload"]), task, [])
        truth = {k: sorted(v) if k == "uncovered" else v for k, v in item["truth"].items()}
        got = _observed(item, spec.scripted(query))
        name = item["query"]
        result.total[name] = result.total.get(name, 0) + 1
        if got == truth:
            result.right[name] = result.right.get(name, 0) + 1
        else:
            result.misses.append({**item, "got": got})
    return result


def table(data: str | Path) -> str:
    """The accuracy table of every gym's check set (markdown)."""
    lines = ["| gym | query | right / items | accuracy |", "|---|---|---|---|"]
    for env_id in FILES:
        res = check_user(env_id, data)
        for name, total in res.total.items():
            right = res.right.get(name, 0)
            lines.append(f"| {env_id} | {name} | {right} / {total} | {right / total:.0%} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - a report for docs/users.md
    sys.stdout.write(table(sys.argv[1] if len(sys.argv) > 1 else "data/userrl") + "\n")
