"""Import the UserRL paper's task files into our dataset format.

Reads the layout of the UserRL release (Apache-2.0)::

    FunctionGym/functions.json               list of {id, rule, test_case, expected_result}
    TelepathyGym/all_entities_refined.json   list of {id, title, description, goal,
                                             target_entity, category}
    TurtleGym/all_stories_refined.json       {key: {new_title, new_surface, new_bottom,
                                             evaluation: [{statement, score}], ...}}
    IntentionGym/all_intentions_{train,test}.json
                                             list of {id, category, task, missing_details:
                                             [{description, importance, inquiry, options}]}

plus SearchGym, TauGym and the Travel/Persuade parquet prompts (see
:mod:`userrl.envs._importer_ii`, which also says how those gyms degrade on imported tasks),
and writes ``out_dir/<gym>/{train,test}.jsonl`` for :func:`userrl.envs.datasets.load_tasks`
(a split with no tasks is not written, and an older file of it is removed). Train/test
membership is the reference's: the parquet prompts of each gym (``parquet/function_multiturn/``
...) name the tasks of each split (:mod:`userrl.envs._importer_splits`), so no test task of the
paper lands in our train split.
SearchGym's questions are all test (Bamboogle; UserRL holds the gym out of training). The
reference counts (train/test): Function 460/78, Telepathy 360/41, Turtle 423/48, Intention
380/40, Search 0/125, Tau 500/165, Travel 2,651/471, Persuade 378/42.

What the source lacks, and how the scripted user degrades on imported tasks:

- Telepathy: no attribute table or tags. Attributes are guessed from the category (person,
  animal, food, place, fictional); tags are the words of ``target_entity``'s description. So
  questions about those words or the category are answered well, other attribute questions
  get ``Maybe``, and anything else ``No``. Synonyms: only the title (and a person's surname).
- Turtle: no yes/no facts and no keywords. Key-point keywords are the statement's content
  words, graded leniently (full credit at 60% coverage, half at 30%); yes/no questions are
  answered by word overlap with the hidden story. An LLM judge is much better here.
- Intention: no keywords and no chosen answers. Keywords are the description's words that
  the request itself does not use (words shared by two details are dropped, falling back on
  the whole description as a phrase); the user's answer is the first listed option.
The expert still reaches the maximum on imported tasks: its answers come from the data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import structlog

from userrl.envs import _importer_ii as _ii
from userrl.envs import _importer_splits as _splits_ref
from userrl.envs.gyms._text import STOPWORDS, normalize, stem
from userrl.errors import DataError

log = structlog.get_logger(__name__)

SOURCES: dict[str, tuple[str, ...]] = {
    "FunctionGym": ("functions.json",),
    "TelepathyGym": ("all_entities_refined.json",),
    "TurtleGym": ("all_stories_refined.json",),
    "IntentionGym": ("all_intentions_train.json", "all_intentions_test.json"),
    "SearchGym": ("questions.json",),
    "TauGym": ("tau_train.json", "tau_test.json"),
}
#: words too generic to identify a key point or a detail
_GENERIC = frozenset("""story include includes included reveal reveals revealed explain
    explains explained mention mentions mentioned actually original even different logical
    logically justifiable clearly also specific preference preferences type details detail
    information particular kind level protagonist known commonly found used often produces
    typically usually various many prefer preferred method""".split())
_GENERIC_STEMS = frozenset(stem(w) for w in _GENERIC)
_PERSON = ("person", "figure", "singer", "artist", "composer", "athlete", "scientist", "painter",
           "philosopher", "author", "celebrity", "entertainer", "leader", "mathematician",
           "humanitarian", "actor", "icon", "entrepreneur", "personality")
_ANIMAL = ("animal", "bird", "fish", "creature", "reptile", "marsupial", "dog_breed", "dinosaur")
_FOOD = ("food", "fruit", "dessert", "dish", "beverage", "vegetable", "cuisine")
_PLACE = ("place", "city", "cities", "landmark", "mountain", "park", "country", "location",
          "site", "waterfall", "forest", "island", "museum", "body_of_water", "monument")
_FICTIONAL = ("fictional", "mythical", "legendary", "cartoon", "superhero", "vampire",
              "mythology", "animated")


def keywords_from(text: str, exclude: set[str] = frozenset(), limit: int = 8) -> list[str]:  # type: ignore[assignment]
    """Raw content words of ``text`` (one per stem), minus generic and excluded stems."""
    out: dict[str, str] = {}
    for w in normalize(text).split():
        s = stem(w)
        if len(w) >= 3 and w not in STOPWORDS and s not in _GENERIC_STEMS and s not in exclude:
            out.setdefault(s, w)
    return list(out.values())[:limit]


def _load(path: Path, expected: type) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from exc
    if not isinstance(data, expected):
        raise DataError(f"{path}: expected a JSON {expected.__name__}, got {type(data).__name__}")
    return data


def _need(path: Path, where: str, rec: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(rec, dict) or any(k not in rec for k in keys):
        raise DataError(f"{path}: {where}: expected an object with keys {', '.join(keys)}")
    return rec


def convert_function(path: Path) -> list[dict[str, Any]]:
    out = []
    for i, rec in enumerate(_load(path, list)):
        rec = _need(path, f"entry {i}", rec, ("id", "rule", "test_case", "expected_result"))
        out.append({"id": str(rec["id"]), "rule": rec["rule"], "test_case": rec["test_case"],
                    "expected_result": rec["expected_result"]})
    return out


def _attributes(category: str) -> dict[str, bool]:
    c = category.lower()
    attrs: dict[str, bool] = {}
    if any(k in c for k in _FICTIONAL):
        attrs["fictional"] = True
    if any(k in c for k in _PERSON):
        attrs.update(person=True, animal=False, object=False, food=False, place=False)
    elif any(k in c for k in _ANIMAL):
        attrs.update(animal=True, alive=True, person=False, man_made=False, food=False)
    elif any(k in c for k in _FOOD):
        attrs.update(food=True, person=False, animal=False, place=False)
    elif any(k in c for k in _PLACE):
        attrs.update(place=True, person=False, animal=False, food=False, object=False)
    return attrs


def convert_telepathy(path: Path) -> list[dict[str, Any]]:
    out = []
    for i, rec in enumerate(_load(path, list)):
        keys = ("id", "title", "description", "target_entity", "category")
        rec = _need(path, f"entry {i}", rec, keys)
        title, category = str(rec["title"]), str(rec["category"])
        details = str(rec["target_entity"])
        about = details.split(" - ", 1)[1] if " - " in details else details
        synonyms = []
        if "(" in title:
            synonyms.append(title.split("(")[0].strip())
        attrs = _attributes(category)
        if attrs.get("person") and len(title.split()) > 1:
            synonyms.append(title.split()[-1])
        title_stems = {stem(w) for w in normalize(title).split()}
        out.append({"id": str(rec["id"]), "title": title, "category": category,
                    "description": str(rec["description"]), "synonyms": synonyms,
                    "details": details, "attributes": attrs,
                    "tags": keywords_from(about, title_stems, limit=20)})
    return out


def convert_turtle(path: Path) -> list[dict[str, Any]]:
    out = []
    for key, rec in _load(path, dict).items():
        keys = ("new_title", "new_surface", "new_bottom", "evaluation")
        rec = _need(path, f"story {key!r}", rec, keys)
        points = []
        for j, ev in enumerate(rec["evaluation"]):
            ev = _need(path, f"story {key!r} evaluation {j}", ev, ("statement", "score"))
            points.append({"statement": str(ev["statement"]), "weight": float(ev["score"]),
                           "keywords": [[w] for w in keywords_from(ev["statement"])]})
        out.append({"id": f"turtle-{key}", "title": rec["new_title"],
                    "surface": rec["new_surface"], "bottom": rec["new_bottom"],
                    "key_points": points, "facts": [], "grading": {"full": 0.6, "half": 0.3}})
    return out


def _intention_keywords(task_text: str, descriptions: list[str]) -> list[list[str]]:
    """Per detail, the description words no other detail's description uses.

    Keeping only such words means a question about one detail (by a keyword, or by its whole
    description when none is left) never uncovers another one by accident.
    """
    exclude = {stem(w) for w in normalize(task_text).split()}
    desc_stems = [{stem(w) for w in normalize(d).split()} for d in descriptions]
    out = []
    for i, desc in enumerate(descriptions):
        others = set().union(*(s for j, s in enumerate(desc_stems) if j != i))
        unique = [w for w in keywords_from(desc, exclude) if stem(w) not in others]
        out.append(unique or [normalize(desc)])
    return out


def convert_intention(path: Path) -> list[dict[str, Any]]:
    out = []
    for i, rec in enumerate(_load(path, list)):
        rec = _need(path, f"entry {i}", rec, ("id", "task", "missing_details"))
        raw = rec["missing_details"]
        if not isinstance(raw, list) or not raw:
            raise DataError(f"{path}: entry {i}: 'missing_details' must be a non-empty list")
        for j, d in enumerate(raw):
            _need(path, f"entry {i} detail {j}", d, ("description", "importance"))
        kws = _intention_keywords(str(rec["task"]), [str(d["description"]) for d in raw])
        details = [{
            "description": str(d["description"]), "importance": int(d["importance"]),
            "keywords": k, "inquiry": str(d.get("inquiry", "")),
            "answer": str((d.get("options") or ["I have no preference"])[0]),
        } for d, k in zip(raw, kws, strict=True)]
        out.append({"id": str(rec["id"]), "category": str(rec.get("category", "")),
                    "task": str(rec["task"]), "missing_details": details})
    return out


_GYMS: dict[str, tuple[str, str]] = {  # source folder -> (our dataset folder, env id)
    "FunctionGym": ("function", "userrl/Function-v0"),
    "TelepathyGym": ("telepathy", "userrl/Telepathy-v0"),
    "TurtleGym": ("turtle", "userrl/Turtle-v0"),
    "IntentionGym": ("intention", "userrl/Intention-v0"),
    "SearchGym": ("search", "userrl/Search-v0"),
    "TauGym": ("tau", "userrl/Tau-v0"),
}
_CONVERTERS = {"FunctionGym": convert_function, "TelepathyGym": convert_telepathy,
               "TurtleGym": convert_turtle, "IntentionGym": convert_intention,
               "SearchGym": _ii.convert_search, "TauGym": _ii.convert_tau}
_PARQUET_GYMS = {"travel": "userrl/Travel-v0", "persuade": "userrl/Persuade-v0"}


def _splits(folder: str, src: Path, parquet_root: Path) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """Converted tasks per reference split, each with the file it came from."""
    convert = _CONVERTERS[folder]
    name, env_id = _GYMS[folder]
    items = [(p, t) for p in (src / f for f in SOURCES[folder]) for t in convert(p)]
    _validate(env_id, items)  # a bad task is reported as such, before any split question
    return _splits_ref.assign(parquet_root, name, items)


def _validate(env_id: str, items: list[tuple[Path, dict[str, Any]]]) -> None:
    from userrl.envs.registry import get_env_class

    validate = get_env_class(env_id).validate_task  # type: ignore[attr-defined]
    for path, task in items:
        try:
            validate(task)
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: task {task.get('id')!r} cannot be used by "
                            f"{env_id}: {exc}") from exc


def _check_folder(folder: str, src: Path) -> None:
    expected = SOURCES[folder]
    for name in expected:
        if not (src / name).is_file():
            raise DataError(f"{src / name}: missing; {folder}/ must contain {', '.join(expected)}")
    for p in sorted(src.glob("*.json")):
        if p.name not in expected:
            raise DataError(f"{p}: unknown file; {folder}/ is expected to hold only "
                            f"{', '.join(expected)}")


def import_userrl(src_dir: str | Path, out_dir: str | Path) -> dict[str, dict[str, int]]:
    """Convert the UserRL files under ``src_dir`` into ``out_dir/<gym>/{train,test}.jsonl``.

    Returns the number of tasks written per gym and split, e.g.
    ``{"function": {"train": 460, "test": 78}, ...}``. Gym folders that are absent are
    skipped; a present folder must hold exactly its expected files (``SOURCES``), and the
    parquet folder of its reference split must exist (``_importer_splits.SPLIT_FOLDERS``).
    Travel imports each of the sub-datasets ``parquet/travel{22,...,2222}_multiturn_onechoice``
    present, Persuade ``parquet/persuasion_multiturn``. No id is ever in both splits.
    """
    src_root, out_root = Path(src_dir), Path(out_dir)
    present = [f for f in _GYMS if (src_root / f).is_dir()]
    parquet = _ii.parquet_present(src_root)
    if not present and not parquet:
        raise DataError(f"{src_root}: no UserRL gym folders found; expected any of "
                        + ", ".join(f"{f}/{'|'.join(SOURCES[f])}" for f in _GYMS)
                        + ", " + ", ".join(f"parquet/{d}/" for ds in _ii.PARQUET.values() for d in ds))
    counts: dict[str, dict[str, int]] = {}
    for folder in present:
        _check_folder(folder, src_root / folder)
        name, env_id = _GYMS[folder]
        splits = _splits(folder, src_root / folder, src_root / "parquet")
        counts[name] = _write(out_root, name, splits)
    for name in parquet:
        splits = _ii.parquet_splits(src_root / "parquet", name)
        for items in splits.values():
            _validate(_PARQUET_GYMS[name], items)
        counts[name] = _write(out_root, name, splits)
    return counts


def _write(out_root: Path, name: str, splits: dict[str, list[tuple[Path, dict[str, Any]]]]) -> dict[str, int]:
    """Write one gym's (validated) splits; the number of tasks per split. A split without
    tasks removes an older file of that split, so a re-import never leaves stale tasks."""
    counts: dict[str, int] = {}
    owner: dict[str, str] = {}
    for split, items in splits.items():
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
