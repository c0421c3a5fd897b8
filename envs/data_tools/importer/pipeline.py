"""The import itself: find the gyms of the UserRL release, convert, validate, split, write.

:func:`import_userrl` reads the release's layout (Apache-2.0): the gym folders of
:data:`SOURCES` (converted by :mod:`.converters`, split as the reference's parquet prompts say,
:mod:`.splits`) and the Travel/Persuade parquet folders of :data:`PARQUET` (converted row by
row, split by the file a row is in). It writes ``out_dir/<gym>/{train,test}.jsonl`` for
:func:`userrl.envs.datasets.load_tasks` (a split with no tasks is not written, and an older
file of it is removed), so no test task of the paper lands in our train split.

Travel comes from the eight sub-datasets the paper trained and evaluated on (2,651 train / 471
test prompts; the legacy ``travel_multiturn_onechoice`` folder, whose train file holds only
2,107 of them, is not read). SearchGym's questions are all test (Bamboogle; UserRL holds the
gym out of training). The reference counts (train/test): Function 460/78, Telepathy 360/41,
Turtle 423/48, Intention 380/40, Search 0/125, Tau 500/165, Travel 2,651/471, Persuade 378/42.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from userrl.envs.data_tools.importer import converters, splits
from userrl.envs.data_tools.importer.reading import check_parquet_folder
from userrl.envs.datasets import final_pick_only
from userrl.envs.registry import get_env_class
from userrl.errors import DataError

log = structlog.get_logger(__name__)

Item = splits.Item

SOURCES: dict[str, tuple[str, ...]] = {
    "FunctionGym": ("functions.json",),
    "TelepathyGym": ("all_entities_refined.json",),
    "TurtleGym": ("all_stories_refined.json",),
    "IntentionGym": ("all_intentions_train.json", "all_intentions_test.json"),
    "SearchGym": ("questions.json",),
    "TauGym": ("tau_train.json", "tau_test.json"),
}
_GYMS: dict[str, tuple[str, str]] = {  # source folder -> (our dataset folder, env id)
    "FunctionGym": ("function", "userrl/Function-v0"),
    "TelepathyGym": ("telepathy", "userrl/Telepathy-v0"),
    "TurtleGym": ("turtle", "userrl/Turtle-v0"),
    "IntentionGym": ("intention", "userrl/Intention-v0"),
    "SearchGym": ("search", "userrl/Search-v0"),
    "TauGym": ("tau", "userrl/Tau-v0"),
}
_CONVERTERS: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
    "FunctionGym": converters.convert_function,
    "TelepathyGym": converters.convert_telepathy,
    "TurtleGym": converters.convert_turtle,
    "IntentionGym": converters.convert_intention,
    "SearchGym": converters.convert_search,
    "TauGym": converters.convert_tau,
}

TRAVEL_VARIANTS = ("22", "33", "44", "233", "333", "334", "444", "2222")
#: gym -> its parquet folders (Travel: one per sub-dataset)
PARQUET: dict[str, tuple[str, ...]] = {
    "travel": tuple(f"travel{v}_multiturn_onechoice" for v in TRAVEL_VARIANTS),
    "persuade": ("persuasion_multiturn",),
}
_PARQUET_GYMS = {"travel": "userrl/Travel-v0", "persuade": "userrl/Persuade-v0"}


def _json_splits(folder: str, src: Path, parquet_root: Path) -> dict[str, list[Item]]:
    """Converted tasks per reference split, each with the file it came from."""
    convert = _CONVERTERS[folder]
    name, env_id = _GYMS[folder]
    items = [(p, t) for p in (src / f for f in SOURCES[folder]) for t in convert(p)]
    _validate(env_id, items)  # a bad task is reported as such, before any split question
    return splits.assign(parquet_root, name, items)


def _validate(env_id: str, items: list[Item]) -> None:
    validate = get_env_class(env_id).validate_task  # type: ignore[attr-defined]
    for path, task in items:
        try:
            validate(task)
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: task {task.get('id')!r} cannot be used by {env_id}: {exc}") from exc


def _check_folder(folder: str, src: Path) -> None:
    expected = SOURCES[folder]
    for name in expected:
        if not (src / name).is_file():
            raise DataError(f"{src / name}: missing; {folder}/ must contain {', '.join(expected)}")
    for p in sorted(src.glob("*.json")):
        if p.name not in expected:
            raise DataError(f"{p}: unknown file; {folder}/ is expected to hold only {', '.join(expected)}")


def parquet_splits(src: Path, gym: str) -> dict[str, list[Item]]:
    """Converted tasks per split of a parquet-based gym (``travel`` or ``persuade``); Travel
    reads every sub-dataset folder present."""
    out: dict[str, list[Item]] = {"train": [], "test": []}
    for name in PARQUET[gym]:
        folder = src / name
        if not folder.is_dir():
            continue
        check_parquet_folder(folder)
        for split in out:
            if not (folder / f"{split}.parquet").is_file():
                raise DataError(f"{folder / split}.parquet: missing; {name}/ must hold train.parquet and test.parquet")
        for split in out:
            path = folder / f"{split}.parquet"
            tasks = (
                converters.convert_travel(path, name.split("_")[0])
                if gym == "travel"
                else converters.convert_persuade(path)
            )
            out[split] += [(path, t) for t in tasks]
    return out


def parquet_present(src_root: Path) -> list[str]:
    """The parquet-based gyms with at least one of their folders under ``src_root/parquet``."""
    root = src_root / "parquet"
    return [g for g, subs in PARQUET.items() if any((root / s).is_dir() for s in subs)]


def import_userrl(src_dir: str | Path, out_dir: str | Path) -> dict[str, dict[str, int]]:
    """Convert the UserRL files under ``src_dir`` into ``out_dir/<gym>/{train,test}.jsonl``.

    Returns the number of tasks written per gym and split, e.g.
    ``{"function": {"train": 460, "test": 78}, ...}``. Gym folders that are absent are
    skipped; a present folder must hold exactly its expected files (``SOURCES``), and the
    parquet folder of its reference split must exist (``splits.SPLIT_FOLDERS``).
    Travel imports each of the sub-datasets ``parquet/travel{22,...,2222}_multiturn_onechoice``
    present, Persuade ``parquet/persuasion_multiturn``. No id is ever in both splits.
    """
    src_root, out_root = Path(src_dir), Path(out_dir)
    present = [f for f in _GYMS if (src_root / f).is_dir()]
    parquet = parquet_present(src_root)
    if not present and not parquet:
        raise DataError(
            f"{src_root}: no UserRL gym folders found; expected any of "
            + ", ".join(f"{f}/{'|'.join(SOURCES[f])}" for f in _GYMS)
            + ", "
            + ", ".join(f"parquet/{d}/" for ds in PARQUET.values() for d in ds)
        )
    counts: dict[str, dict[str, int]] = {}
    for folder in present:
        _check_folder(folder, src_root / folder)
        name, env_id = _GYMS[folder]
        gym_splits = _json_splits(folder, src_root / folder, src_root / "parquet")
        counts[name] = _write(out_root, name, gym_splits)
    for name in parquet:
        gym_splits = parquet_splits(src_root / "parquet", name)
        for items in gym_splits.values():
            _validate(_PARQUET_GYMS[name], items)
        counts[name] = _write(out_root, name, gym_splits)
    return counts


#: our dataset folder -> env id, for every gym the importer writes
ENV_IDS = {**{name: env_id for name, env_id in _GYMS.values()}, **_PARQUET_GYMS}


def import_notes(out_dir: str | Path, counts: dict[str, dict[str, int]]) -> dict[str, str]:
    """What a user must know about the imported gyms, per dataset folder: those whose tasks
    can only be judged on the final pick (Travel: the release's prompts hold the request and
    nothing else, so there is no catalog to search and no preference to elicit) and are left
    out of training and evaluation unless asked for."""
    notes = {}
    for name, splits_written in counts.items():
        if splits_written.get("test") and (why := final_pick_only(ENV_IDS[name], out_dir)):
            notes[name] = f"{why}; left out of train and eval unless include_final_pick_only: true"
    return notes


def _write(out_root: Path, name: str, by_split: dict[str, list[Item]]) -> dict[str, int]:
    """Write one gym's (validated) splits; the number of tasks per split. A split without
    tasks removes an older file of that split, so a re-import never leaves stale tasks."""
    counts: dict[str, int] = {}
    owner: dict[str, str] = {}
    for split, items in by_split.items():
        lines = []
        for path, task in items:
            if task["id"] in owner:
                where = "" if owner[task["id"]] == split else f" (also in {owner[task['id']]})"
                raise DataError(f"{path}: duplicate id {task['id']!r}{where}")
            owner[task["id"]] = split
            lines.append(json.dumps(task, ensure_ascii=False, sort_keys=True))
        counts[split] = len(lines)
        target = out_root / name / f"{split}.jsonl"
        if lines:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        else:
            target.unlink(missing_ok=True)
    log.info("userrl_imported", gym=name, **counts)
    return counts
