"""Task datasets: one JSON object per line, each with a unique string ``id``.

Bundled datasets live in ``envs/data/<gym>/{train,test}.jsonl`` (``<gym>`` is the lower-case
gym name: ``function``, ``telepathy``, ``turtle``, ``intention``, ``travel``, ``persuade``,
``search``, ``tau``); they are authored for this project (see ``envs/data_tools/generate.py``). ``path`` may name a JSONL file of your own, or a folder laid
out like ``envs/data`` (``<folder>/<gym>/<split>.jsonl``) or holding ``<split>.jsonl``, such
as the output of :func:`userrl.envs.data_tools.importer.pipeline.import_userrl`. A deploy config's ``data`` setting
names such a folder for every command (:func:`data_tasks`).

Every line is checked when it is read: malformed JSON, a non-object, a missing or duplicate
``id``, or a task the gym rejects (its ``validate_task``) raises :class:`DataError` naming
``file:line``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from userrl.envs.registry import get_env_class
from userrl.errors import DataError

log = structlog.get_logger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLITS = ("train", "test")

_cache: dict[tuple[str, str, float], list[dict[str, Any]]] = {}


def gym_dir_name(env_id: str) -> str:
    """``userrl/Telepathy-v0`` -> ``telepathy`` (the dataset folder of a gym)."""
    cls = get_env_class(env_id)
    name = getattr(cls, "data_name", None)
    return str(name) if name else env_id.split("/")[-1].split("-")[0].lower()


def dataset_path(env_id: str, split: str, path: str | Path | None = None) -> Path:
    """The JSONL file :func:`load_tasks` reads for these arguments."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    gym = gym_dir_name(env_id)
    if path is None:
        return DATA_DIR / gym / f"{split}.jsonl"
    p = Path(path)
    if p.is_dir():
        nested = p / gym / f"{split}.jsonl"
        return nested if nested.exists() else p / f"{split}.jsonl"
    return p


def data_tasks(env_id: str, split: str, data: str | Path = "") -> list[dict[str, Any]]:
    """The tasks of ``env_id``'s ``split`` from a deploy config's ``data`` folder (``""``: the
    bundled tasks). Unlike :func:`load_tasks`, the folder must be laid out like ``envs/data``
    (``<data>/<gym>/<split>.jsonl``); a missing or empty folder, or a gym or split missing
    from it, is a :class:`DataError` naming the path."""
    if not data:
        return load_tasks(env_id, split)
    root = Path(data)
    hint = "write one with `userrl data import-userrl SRC --out DIR`, or set data: '' for the bundled tasks"
    if not root.is_dir():
        raise DataError(f"data: {root} is not a folder; {hint}")
    gyms = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not gyms:
        raise DataError(f"data: {root} holds no gym folders; {hint}")
    gym = gym_dir_name(env_id)
    if gym not in gyms:
        raise DataError(f"data: {root} has no {gym}/ folder for {env_id} (it holds {', '.join(gyms)})")
    file = root / gym / f"{split}.jsonl"
    if not file.is_file():
        raise DataError(f"data: {file} not found: {env_id} has no {split} split in {root}")
    return load_tasks(env_id, split, file)


def check_data(data: str | Path, env_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Load and validate every split of ``env_ids`` in ``data`` ("" = bundled): the number of
    tasks per gym and split. Each gym needs a test split; train may be absent (SearchGym's
    imported questions are all test). Raises :class:`DataError` naming the path."""
    out: dict[str, dict[str, int]] = {}
    for env_id in env_ids:
        out[env_id] = {"test": len(data_tasks(env_id, "test", data))}
        try:
            out[env_id]["train"] = len(data_tasks(env_id, "train", data))
        except DataError:
            if not data or (Path(data) / gym_dir_name(env_id) / "train.jsonl").exists():
                raise  # a train file that exists but does not load is broken data
    return out


def final_pick_only(env_id: str, data: str | Path = "") -> str | None:
    """Why ``env_id``'s tasks in ``data`` can be judged on their final pick only (every test
    task says so: :meth:`Env.final_pick_only`, e.g. imported TravelGym), or None."""
    if not data:
        return None
    cls = get_env_class(env_id)
    try:
        tasks = data_tasks(env_id, "test", data)
    except DataError:
        return None  # missing data is the loading command's error to report, with its path
    reasons = {cls.final_pick_only(t) for t in tasks}
    return next(iter(reasons)) if len(reasons) == 1 and None not in reasons else None


def select_gyms(
    gyms: Sequence[str], data: str | Path = "", include_final_pick_only: bool = False
) -> tuple[list[str], dict[str, str]]:
    """The gyms of ``gyms`` that training and evaluation on ``data`` play, and those left out
    with why: a gym whose tasks there are judged on the final pick only (imported TravelGym)
    teaches nothing but a prior over the answers and would weigh in averages for it, so it is
    left out unless ``include_final_pick_only``. A :class:`DataError` when nothing is left."""
    kept: list[str] = []
    left: dict[str, str] = {}
    for g in gyms:
        why = None if include_final_pick_only else final_pick_only(g, data)
        if why is None:
            kept.append(g)
        else:
            left[g] = why
    if gyms and not kept:
        raise DataError(
            f"data: {data}: every gym asked for is left out ({'; '.join(f'{g}: {w}' for g, w in left.items())}); "
            "set include_final_pick_only: true to use them anyway"
        )
    return kept, left


def load_tasks(env_id: str, split: str, path: str | Path | None = None) -> list[dict[str, Any]]:
    """The tasks of ``env_id``'s ``split`` (bundled, or from ``path``); fresh copies each call."""
    file = dataset_path(env_id, split, path)
    try:
        mtime = file.stat().st_mtime
    except OSError as exc:
        raise DataError(f"{file}: dataset file not found for {env_id} split {split!r}") from exc
    key = (str(file), env_id, mtime)
    if key not in _cache:
        _cache[key] = _read(file, env_id)
        log.debug("tasks_loaded", env_id=env_id, split=split, file=str(file), n=len(_cache[key]))
    return copy.deepcopy(_cache[key])


def _read(file: Path, env_id: str) -> list[dict[str, Any]]:
    validate = getattr(get_env_class(env_id), "validate_task", None)
    tasks: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: cannot read dataset ({exc})") from exc
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{file}:{lineno}"
        try:
            task = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: malformed JSON ({exc.msg})") from exc
        if not isinstance(task, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(task).__name__}")
        tid = task.get("id")
        if not isinstance(tid, str) or not tid:
            raise DataError(f"{where}: every task needs a non-empty string 'id'")
        if tid in seen:
            raise DataError(f"{where}: duplicate id {tid!r} (first on line {seen[tid]})")
        seen[tid] = lineno
        if validate is not None:
            try:
                validate(task)
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{where}: invalid {env_id} task {tid!r}: {exc}") from exc
        tasks.append(task)
    if not tasks:
        raise DataError(f"{file}: dataset has no tasks")
    return tasks
