"""Converters for SearchGym, TauGym, TravelGym and PersuadeGym data of the UserRL release.

Used by :func:`userrl.envs.importer.import_userrl`. Sources::

    SearchGym/questions.json          list of {id, question, answer} (Bamboogle; all test)
    TauGym/tau_{train,test}.json      list of {id, obs, info: {task: {user_id, actions:
                                      [{name, kwargs}], instruction, outputs}}}
    parquet/travel{22,33,44,233,333,334,444,2222}_multiturn_onechoice/{train,test}.parquet
    parquet/persuasion_multiturn/{train,test}.parquet
                                      verl prompts: prompt (chat), reward_model {id,
                                      ground_truth, claim, argument}

Travel comes from the eight sub-datasets the paper trained and evaluated on (2,651 train / 471
test prompts; the legacy ``travel_multiturn_onechoice`` folder, whose train file holds only
2,107 of them, is not read). A Travel id carries its sub-dataset: ``travel233:`` followed by
the reference id (``flight:3-114|hotel:2-36|rental_car:3-65``).

What the sources lack, and how the gyms degrade on imported tasks:

- Search: no documents. The bundled local index cannot answer Bamboogle questions; play them
  with ``search_backend="serper"`` (web search). The expert searches the question, then answers.
- Tau: the τ-bench databases (retail, airline) are not in the release; TauGym ships them.
  Tasks keep the customer's opening, the instruction (the customer's goal), the gold tool
  calls and outputs, with ``db`` naming τ-bench's database (``tau-bench-retail`` or
  ``tau-bench-airline``).
- Travel: only the request and the gold option id per aspect (no catalog, no preferences).
  Searches find no options and the user has nothing to reveal; a recommendation is scored
  against the gold id (any other id of that aspect's letter is wrong).
- Persuade: the claim and the user's own argument, no counter-arguments. The argument's three
  longest sentences become the points to rebut: an argument using at least two of a point's
  content words (or all of them when it has fewer) moves the stance by 2 levels.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from userrl.envs.gyms._travel_rules import PREFIX_ASPECT
from userrl.errors import DataError

TRAVEL_VARIANTS = ("22", "33", "44", "233", "333", "334", "444", "2222")
#: gym -> its parquet folders (Travel: one per sub-dataset)
PARQUET: dict[str, tuple[str, ...]] = {
    "travel": tuple(f"travel{v}_multiturn_onechoice" for v in TRAVEL_VARIANTS),
    "persuade": ("persuasion_multiturn",)}
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _load(path: Path, expected: type) -> Any:
    from userrl.envs.importer import _load as load

    return load(path, expected)


def _need(path: Path, where: str, rec: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    from userrl.envs.importer import _need as need

    return need(path, where, rec, keys)


def convert_search(path: Path) -> list[dict[str, Any]]:
    out = []
    for i, rec in enumerate(_load(path, list)):
        rec = _need(path, f"entry {i}", rec, ("id", "question", "answer"))
        out.append({"id": str(rec["id"]), "question": str(rec["question"]),
                    "answer": str(rec["answer"]), "aliases": []})
    return out


def convert_tau(path: Path) -> list[dict[str, Any]]:
    """τ-bench tasks; ``db`` names the domain's database (from the id's prefix), which TauGym
    ships. Every gold action must call a tool of that domain with exactly its arguments."""
    from userrl.envs.gyms._tau_domains import DOMAINS, check_actions

    out = []
    for i, rec in enumerate(_load(path, list)):
        rec = _need(path, f"entry {i}", rec, ("id", "obs", "info"))
        task = rec["info"].get("task") if isinstance(rec["info"], dict) else None
        task = _need(path, f"entry {i} info.task", task, ("user_id", "actions", "instruction"))
        actions = []
        for j, a in enumerate(task["actions"]):
            a = _need(path, f"entry {i} action {j}", a, ("name", "kwargs"))
            actions.append({"name": str(a["name"]), "arguments": dict(a["kwargs"])})
        db = f"tau-bench-{str(rec['id']).split('-')[0]}"
        if db not in DOMAINS:
            raise DataError(f"{path}: entry {i}: id {rec['id']!r} names no τ-bench domain "
                            "(expected retail-... or airline-...)")
        try:
            check_actions(DOMAINS[db], actions)
        except ValueError as exc:
            raise DataError(f"{path}: entry {i} ({rec['id']}): {exc}") from exc
        out.append({"id": str(rec["id"]), "db": db, "opening": str(rec["obs"]),
                    "instruction": str(task["instruction"]), "user_id": str(task["user_id"]),
                    "actions": actions, "outputs": [str(o) for o in task.get("outputs") or []]})
    return out


def read_parquet(path: Path) -> list[dict[str, Any]]:
    """Rows of a parquet file as dicts (needs pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(f"{path}: reading UserRL's parquet files needs pyarrow "
                        "(pip install pyarrow, or the 'dev'/'train' extra)") from exc
    try:
        return list(pq.read_table(path).to_pylist())
    except Exception as exc:  # pyarrow raises its own error types
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc


def _user_prompt(path: Path, i: int, row: dict[str, Any]) -> str:
    prompt = row.get("prompt")
    users = [m.get("content", "") for m in prompt or [] if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise DataError(f"{path}: row {i}: 'prompt' has no user message")
    return str(users[0])


def convert_travel(path: Path, dataset: str = "") -> list[dict[str, Any]]:
    """Travel tasks of one parquet file; ids get the ``dataset:`` prefix when given."""
    out = []
    for i, row in enumerate(read_parquet(path)):
        rm = _need(path, f"row {i} reward_model", row.get("reward_model"), ("id", "ground_truth"))
        try:
            gold = ast.literal_eval(str(rm["ground_truth"]))
            parts = [p.split(":") for p in str(rm["id"]).split("|")]
            aspects = [a for a, _ in parts]
            variant = "".join(n.split("-")[0] for _, n in parts)
        except (ValueError, SyntaxError) as exc:
            raise DataError(f"{path}: row {i}: malformed travel id or ground truth ({exc})") from exc
        catalog: dict[str, dict[str, Any]] = {a: {"options": [], "best": [], "acceptable": []}
                                              for a in aspects}
        for g in gold:
            aspect = PREFIX_ASPECT.get(str(g)[:1])
            if aspect not in catalog:
                raise DataError(f"{path}: row {i}: option {g!r} matches no aspect of {rm['id']!r}")
            catalog[aspect]["best"].append(str(g))
        out.append({"id": f"{dataset}:{rm['id']}" if dataset else str(rm["id"]), "variant": variant,
                    "request": _user_prompt(path, i, row).strip(), "aspects": aspects,
                    "preferences": [], "catalog": catalog})
    return out


def _points(argument: str) -> list[str]:
    sentences = [s.strip() for s in _SENTENCE.split(argument.strip()) if s.strip()]
    longest = sorted(sentences, key=lambda s: -len(s))[:3]
    return [s for s in sentences if s in longest]


def _keywords(text: str) -> list[str]:
    """Up to 6 content words, never one that makes the scripted user dig in."""
    from userrl.envs.gyms.persuade import BACKFIRE
    from userrl.envs.importer import keywords_from

    bad = set(BACKFIRE)
    return [w for w in keywords_from(text, limit=10) if not any(w.startswith(b) for b in bad)][:6]


def convert_persuade(path: Path) -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(read_parquet(path)):
        rm = _need(path, f"row {i} reward_model", row.get("reward_model"), ("id", "claim", "argument"))
        points = [(p, _keywords(p)) for p in _points(str(rm["argument"]))]
        points = [(p, k) for p, k in points if k] or [(str(rm["claim"]), _keywords(str(rm["claim"])))]
        if not points[0][1]:
            raise DataError(f"{path}: row {i}: the claim and argument have no content words")
        levels = [6 // len(points) + (1 if j < 6 % len(points) else 0) for j in range(len(points))]
        counters = [{"argument": f"You point to {', '.join(k)}; consider the other side of that.",
                     "point": p, "keywords": [[w] for w in k], "min_hits": min(2, len(k)),
                     "levels": n} for (p, k), n in zip(points, levels, strict=True)]
        out.append({"id": str(rm["id"]), "claim": str(rm["claim"]), "argument": str(rm["argument"]),
                    "initial_stance": 0, "counters": counters})
    return out


def parquet_splits(src: Path, gym: str) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """Converted tasks per split of a parquet-based gym (``travel`` or ``persuade``); Travel
    reads every sub-dataset folder present."""
    out: dict[str, list[tuple[Path, dict[str, Any]]]] = {"train": [], "test": []}
    for name in PARQUET[gym]:
        folder = src / name
        if not folder.is_dir():
            continue
        check_parquet(folder)
        for split in out:
            if not (folder / f"{split}.parquet").is_file():
                raise DataError(f"{folder / split}.parquet: missing; {name}/ must hold train.parquet "
                                "and test.parquet")
        for split in out:
            path = folder / f"{split}.parquet"
            tasks = (convert_travel(path, name.split("_")[0]) if gym == "travel"
                     else convert_persuade(path))
            out[split] += [(path, t) for t in tasks]
    return out


def parquet_present(src_root: Path) -> list[str]:
    root = src_root / "parquet"
    return [g for g, subs in PARQUET.items() if any((root / s).is_dir() for s in subs)]


def check_parquet(folder: Path) -> None:
    for p in sorted(folder.iterdir()):
        if p.name not in ("train.parquet", "test.parquet"):
            raise DataError(f"{p}: unknown file; {folder.name}/ is expected to hold only "
                            "train.parquet and test.parquet")
