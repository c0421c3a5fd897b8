"""The reference's train/test splits of the UserRL release, read from its parquet prompts.

The paper trained and evaluated on the verl prompts under
``parquet/<folder>/{train,test}.parquet``; a task of the gym JSON files belongs to a split
exactly when a row of that split names it, and a task no row names is not imported (the
IntentionGym JSON files hold 1,107 tasks, the reference uses 420). How a row names a task:

- Function, Intention, Search (``bamboogle_multiturn``, test only) and Tau:
  ``reward_model.id`` is the JSON record's ``id``.
- Telepathy: rows carry no id; ``reward_model.title`` is the entity's ``title`` (unique).
- Turtle: rows carry no id; ``reward_model.title`` is the story's ``new_title`` (unique).

Travel and Persuade are converted from their parquet rows directly (see
:mod:`userrl.envs.data_tools.importer.pipeline`), so their splits are the files they come from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from userrl.envs.data_tools.importer.reading import check_parquet_folder, read_parquet, require_keys
from userrl.errors import DataError

SPLITS = ("train", "test")
#: our dataset folder -> the parquet folder holding the reference split
SPLIT_FOLDERS = {
    "function": "function_multiturn",
    "telepathy": "telepathy_multiturn",
    "turtle": "turtle_multiturn",
    "intention": "intention_multiturn",
    "search": "bamboogle_multiturn",
    "tau": "tau_multiturn",
}
#: the field of ``reward_model`` (and of our converted task) that names a task; default id
_KEY = {"telepathy": "title", "turtle": "title"}

Item = tuple[Path, dict[str, Any]]


def task_key(gym: str, task: dict[str, Any]) -> str:
    """What a parquet row of ``gym`` uses to name ``task`` (its id, or its title)."""
    return str(task[_KEY.get(gym, "id")])


def reference_keys(parquet_root: Path, gym: str) -> dict[str, list[str]]:
    """The task keys of each reference split of ``gym``, in the parquet files' order."""
    folder = parquet_root / SPLIT_FOLDERS[gym]
    if not folder.is_dir():
        raise DataError(
            f"{folder}: missing; the train/test split of {gym} comes from the reference's "
            f"parquet files there (train.parquet, test.parquet)"
        )
    check_parquet_folder(folder)
    field = _KEY.get(gym, "id")
    out: dict[str, list[str]] = {}
    for split in SPLITS:
        path = folder / f"{split}.parquet"
        rows = read_parquet(path) if path.is_file() else []  # Bamboogle has no train file
        out[split] = [
            str(require_keys(path, f"row {i} reward_model", r.get("reward_model"), (field,))[field])
            for i, r in enumerate(rows)
        ]
    if not any(out.values()):
        raise DataError(f"{folder}: holds neither train.parquet nor test.parquet")
    both = set(out["train"]) & set(out["test"])
    if both:
        raise DataError(f"{folder}: {len(both)} task(s) in both train and test, e.g. {sorted(both)[0]!r}")
    return out


def assign(parquet_root: Path, gym: str, items: list[Item]) -> dict[str, list[Item]]:
    """``items`` (converted tasks with their source file) by reference split, in source order.

    A task the reference names but the JSON files lack is an error (the split would silently
    shrink); a task it does not name is left out.
    """
    ref = reference_keys(parquet_root, gym)
    have = {task_key(gym, t) for _, t in items}
    for split, keys in ref.items():
        missing = [k for k in keys if k not in have]
        if missing:
            raise DataError(
                f"{parquet_root / SPLIT_FOLDERS[gym] / split}.parquet: {len(missing)} task(s) "
                f"not found in the {gym} JSON files, e.g. {missing[0]!r}"
            )
    wanted = {split: set(keys) for split, keys in ref.items()}
    return {split: [(p, t) for p, t in items if task_key(gym, t) in wanted[split]] for split in SPLITS}
