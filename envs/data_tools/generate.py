"""Build the bundled datasets in ``envs/data/<gym>/{train,test}.jsonl``.

FunctionGym rules are generated procedurally (random expression trees over ``a b c d`` with a
fixed seed); the other gyms are built from the authored tables and seeded builders in
``envs/data_tools/authored/<gym>.py``. Besides the task files, SearchGym's document collection
(``search/corpus.jsonl``) and TauGym's base database (``tau/retail_db.json``) are written here.
The output is deterministic, and committed, so loading never depends on running this::

    python -m userrl.envs.data_tools.generate              # rewrite envs/data
    python -m userrl.envs.data_tools.generate --check      # fail if envs/data is out of date
    python -m userrl.envs.data_tools.generate --out DIR    # write the same files under DIR
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import structlog

from userrl.envs.data_tools.authored import (
    intention,
    persuade,
    search,
    tau,
    telepathy,
    travel,
    turtle,
)
from userrl.envs.datasets import DATA_DIR
from userrl.envs.gyms._text import parse_groups
from userrl.envs.gyms.function import evaluate_rule

log = structlog.get_logger(__name__)

SEED = 20250919
N_FUNCTION = {"train": 60, "test": 20}


def _split_every_fourth(items: list[dict[str, Any]], prefix: str) -> dict[str, list[dict[str, Any]]]:
    """Every fourth item to test (spreads the kinds of items across both splits)."""
    out: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for i, item in enumerate(items):
        split = "test" if i % 4 == 3 else "train"
        out[split].append({"id": f"{prefix}-{split}-{len(out[split]) + 1:03d}", **item})
    return out


# -- FunctionGym -----------------------------------------------------------------------------
def _random_rule(rng: random.Random) -> str:
    """A random expression using each of a, b, c, d once, with + - * / and squares."""
    terms = list("abcd")
    rng.shuffle(terms)
    while len(terms) > 1:
        i = rng.randrange(len(terms) - 1)
        op = rng.choices(["+", "-", "*", "/"], weights=[4, 4, 4, 1])[0]
        left, right = terms[i], terms[i + 1]
        if rng.random() < 0.15 and len(left) == 1:
            left = f"{left} ** 2"
        expr = f"{left} {op} {right}"
        terms[i : i + 2] = [f"({expr})" if len(terms) > 2 and rng.random() < 0.6 else expr]
    return terms[0]


def function_tasks() -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(SEED)
    out: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    seen: set[str] = set()
    for split, n in N_FUNCTION.items():
        while len(out[split]) < n:
            rule = _random_rule(rng)
            case = [rng.randint(1, 10) for _ in range(4)]
            try:
                value = evaluate_rule(rule, case)
            except (ZeroDivisionError, OverflowError):
                continue
            # a test value that is also a training value could be guessed from memory
            taken = {t["expected_result"] for t in out["train"]} if split == "test" else set()
            if rule in seen or abs(value) > 1e5 or round(value, 4) in taken:
                continue
            seen.add(rule)
            out[split].append(
                {
                    "id": f"fn-{split}-{len(out[split]) + 1:03d}",
                    "rule": rule,
                    "test_case": case,
                    "expected_result": round(value, 4),
                }
            )
    return out


# -- TelepathyGym / TurtleGym ------------------------------------------------------------------
def telepathy_tasks() -> dict[str, list[dict[str, Any]]]:
    return _split_every_fourth(telepathy.entities(), "tel")


def turtle_tasks() -> dict[str, list[dict[str, Any]]]:
    items = [
        {
            "title": title,
            "surface": surface,
            "bottom": bottom,
            "key_points": [{"statement": s, "weight": w, "keywords": parse_groups(k)} for s, w, k in points],
            "facts": [{"question": q, "answer": a, "keywords": parse_groups(k)} for q, a, k in facts],
        }
        for title, surface, bottom, points, facts in turtle.STORIES
    ]
    return _split_every_fourth(items, "turtle")


# -- IntentionGym ------------------------------------------------------------------------------
def intention_tasks() -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(SEED + 1)
    items: list[dict[str, Any]] = []
    for domain in intention.DOMAINS:
        templates, fills, pool = domain["templates"], domain["fills"], domain["details"]
        for j, fill in enumerate(fills):  # type: ignore[arg-type]
            template = templates[j % len(templates)]  # type: ignore[index]
            chosen = sorted(rng.sample(range(len(pool)), rng.randint(3, min(5, len(pool)))))  # type: ignore[arg-type]
            details = []
            for k in chosen:
                desc, imp, kws, inquiry, answers = pool[k]  # type: ignore[index]
                details.append(
                    {
                        "description": desc,
                        "importance": imp,
                        "keywords": kws,
                        "inquiry": inquiry,
                        "answer": rng.choice(answers),
                    }
                )
            items.append({"category": domain["category"], "task": template.format(x=fill), "missing_details": details})
    return _split_every_fourth(items, "int")


# -- PersuadeGym / TravelGym / SearchGym / TauGym ------------------------------------------------
def persuade_tasks() -> dict[str, list[dict[str, Any]]]:
    items = [
        {
            "claim": claim,
            "argument": argument,
            "initial_stance": 0,
            "counters": [{"argument": a, "keywords": parse_groups(k), "levels": n} for a, k, n in counters],
        }
        for claim, argument, counters in persuade.CLAIMS
    ]
    return _split_every_fourth(items, "persuade")


def travel_tasks() -> dict[str, list[dict[str, Any]]]:
    return travel.build(SEED + 2)


def search_tasks() -> dict[str, list[dict[str, Any]]]:
    return search.build(SEED + 3)[1]


def tau_tasks() -> dict[str, list[dict[str, Any]]]:
    return tau.build(SEED + 4)[1]


BUILDERS = {
    "function": function_tasks,
    "telepathy": telepathy_tasks,
    "turtle": turtle_tasks,
    "intention": intention_tasks,
    "persuade": persuade_tasks,
    "travel": travel_tasks,
    "search": search_tasks,
    "tau": tau_tasks,
}


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(r, ensure_ascii=False, sort_keys=True) for r in rows) + "\n"


def render(root: Path = DATA_DIR) -> dict[Path, str]:
    """Every dataset file under ``root`` and its exact content."""
    files: dict[Path, str] = {}
    for gym, build in BUILDERS.items():
        for split, tasks in build().items():
            files[root / gym / f"{split}.jsonl"] = _jsonl(tasks)
    files[root / "search" / "corpus.jsonl"] = _jsonl(search.build(SEED + 3)[0])
    db = tau.build(SEED + 4)[0]
    tables = [
        f'"{t}": [\n' + ",\n".join(json.dumps(r, sort_keys=True) for r in rows) + "\n]" for t, rows in db.items()
    ]  # one row per line: readable diffs
    files[root / "tau" / "retail_db.json"] = "{\n" + ",\n".join(tables) + "\n}\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are out of date")
    parser.add_argument(
        "--out", type=Path, default=DATA_DIR, help="the folder to write (or check) instead of envs/data"
    )
    args = parser.parse_args(argv)
    stale = []
    for path, content in render(args.out).items():
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != content:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        log.info("dataset_written", path=str(path), n=content.count("\n"))
    if stale:
        sys.stderr.write("out of date: " + ", ".join(stale) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
