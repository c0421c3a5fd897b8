"""The UserRL data importer, on the paper's files when they are present."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from userrl.envs.check import check_tasks
from userrl.envs.data_tools.importer import splits as _splits
from userrl.envs.data_tools.importer.pipeline import TRAVEL_VARIANTS, import_userrl
from userrl.envs.datasets import load_tasks
from userrl.envs.gyms import _telepathy_rules, turtle
from userrl.errors import DataError

#: the UserRL release (USERRL_REFERENCE_DATA overrides where it lives, e.g. from a worktree)
SRC = Path(os.environ.get("USERRL_REFERENCE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "userrl-data")
needs_data = pytest.mark.skipif(not SRC.is_dir(), reason=f"UserRL data not found at {SRC}")
IDS = {
    "function": "userrl/Function-v0",
    "telepathy": "userrl/Telepathy-v0",
    "turtle": "userrl/Turtle-v0",
    "intention": "userrl/Intention-v0",
}
IDS_II = {
    "search": "userrl/Search-v0",
    "tau": "userrl/Tau-v0",
    "travel": "userrl/Travel-v0",
    "persuade": "userrl/Persuade-v0",
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, int]]]:
    if not SRC.is_dir():
        pytest.skip(f"UserRL data not found at {SRC}")
    out = tmp_path_factory.mktemp("imported")
    return out, import_userrl(SRC, out)


def _task(out: Path, gym: str, task_id: str) -> dict:
    for split in ("train", "test"):
        if not (out / gym / f"{split}.jsonl").exists():
            continue
        for t in load_tasks({**IDS, **IDS_II}[gym], split, out):
            if t["id"] == task_id:
                return t
    raise AssertionError(f"{task_id} not imported")


#: the reference's splits (train, test): the parquet prompts the paper trained and tested on
REFERENCE = {
    "function": (460, 78),
    "telepathy": (360, 41),
    "turtle": (423, 48),
    "intention": (380, 40),
    "search": (0, 125),
    "tau": (500, 165),
    "travel": (2651, 471),
    "persuade": (378, 42),
}


@needs_data
def test_counts_are_the_reference_splits(imported: tuple[Path, dict[str, dict[str, int]]]) -> None:
    _, counts = imported
    assert {g: (c["train"], c["test"]) for g, c in counts.items()} == REFERENCE


def _ids(out: Path, gym: str, split: str) -> list[str]:
    if not (out / gym / f"{split}.jsonl").exists():
        return []
    return [t["id"] for t in load_tasks({**IDS, **IDS_II}[gym], split, out)]


@needs_data
@pytest.mark.parametrize("gym", list(REFERENCE))
def test_no_test_task_in_train(imported: tuple[Path, dict[str, dict[str, int]]], gym: str) -> None:
    out, _ = imported
    train, test = _ids(out, gym, "train"), _ids(out, gym, "test")
    assert (len(train), len(test)) == REFERENCE[gym]
    assert not set(train) & set(test)


@needs_data
@pytest.mark.parametrize("gym", list(_splits.SPLIT_FOLDERS))
def test_membership_follows_the_parquet_files(imported: tuple[Path, dict[str, dict[str, int]]], gym: str) -> None:
    """Each imported split holds exactly the tasks the reference's parquet split names."""
    out, _ = imported
    ref = _splits.reference_keys(SRC / "parquet", gym)
    for split in ("train", "test"):
        tasks = load_tasks({**IDS, **IDS_II}[gym], split, out) if ref[split] else []
        assert sorted(_splits.task_key(gym, t) for t in tasks) == sorted(ref[split])


@needs_data
def test_travel_reads_the_eight_sub_datasets(imported: tuple[Path, dict[str, dict[str, int]]]) -> None:
    out, _ = imported
    prefixes = {i.split(":")[0] for split in ("train", "test") for i in _ids(out, "travel", split)}
    assert prefixes == {f"travel{v}" for v in TRAVEL_VARIANTS}


@needs_data
def test_known_items(imported: tuple[Path, dict[str, dict[str, int]]]) -> None:
    out, _ = imported
    fn = _task(out, "function", "func-1")
    assert (fn["rule"], fn["test_case"], fn["expected_result"]) == ("c * (a * b) * d", [3, 5, 5, 3], 225.0)
    ein = _task(out, "telepathy", "entity_001")
    assert ein["title"] == "Albert Einstein" and "Einstein" in ein["synonyms"]
    assert _telepathy_rules.answer_question(ein, "Is it a physicist?") == "Yes"
    assert _telepathy_rules.answer_question(ein, "Is it a person?") == "Yes"
    assert _telepathy_rules.answer_question(ein, "Is it an animal?") == "No"
    assert _telepathy_rules.judge_guess(ein, "Einstein")
    sister = _task(out, "turtle", "turtle-5")
    assert sister["title"] == "The Disappeared Sister"
    assert [kp["weight"] for kp in sister["key_points"]] == [0.5, 0.2, 0.2, 0.1]
    statements = " ".join(kp["statement"] for kp in sister["key_points"])
    assert turtle.grade_story(sister, statements)[0] == 1.0
    paris = _task(out, "intention", "49662622-692c-457b-b06f-64740e120bea")
    first = paris["missing_details"][0]
    assert (first["description"], first["importance"], first["answer"]) == ("Duration of the trip", 3, "3-5 days")


@needs_data
def test_known_items_of_search_tau_travel_persuade(imported: tuple[Path, dict[str, dict[str, int]]]) -> None:
    out, _ = imported
    q = _task(out, "search", "Bamboogle-1")
    assert q["answer"] == "james madison" and "Citibank" in q["question"]
    tau = _task(out, "tau", "retail-000")
    assert tau["db"] == "tau-bench-retail" and tau["opening"].startswith("Hello! I recently received")
    assert tau["actions"][0] == {
        "name": "find_user_id_by_name_zip",
        "arguments": {"first_name": "Yusuf", "last_name": "Rossi", "zip": "19122"},
    }
    assert _task(out, "tau", "retail-train-000")["user_id"] == "omar_anderson_3203"
    trip = _task(out, "travel", "travel22:flight:2-97|hotel:2-64")
    assert trip["variant"] == "22" and trip["aspects"] == ["flight", "hotel"]
    assert (trip["catalog"]["flight"]["best"], trip["catalog"]["hotel"]["best"]) == (["F16"], ["H7"])
    assert trip["request"].startswith("I am planning a trip from New York City to San Francisco")
    claim = _task(out, "persuade", "YV3MRNMKH6MV")
    assert claim["claim"] == "Anti-aging therapies should be made available even if expensive"
    assert claim["argument"].startswith("While anti-aging therapies")
    assert sum(c["levels"] for c in claim["counters"]) == 6


@needs_data
def test_scripted_users_on_imported_tasks_know_what_their_task_says(
    imported: tuple[Path, dict[str, dict[str, int]]],
) -> None:
    out, _ = imported
    rainbow = _task(out, "telepathy", "entity_022")
    assert rainbow["title"] == "Rainbow"
    assert [_telepathy_rules.answer_question(rainbow, q) for q in ("Is it an animal?", "Is it man-made?")] == ["No"] * 2
    assert _telepathy_rules.answer_question(rainbow, "Does it appear in the sky?") == "Yes"
    everest = _task(out, "telepathy", "entity_375")
    assert _telepathy_rules.judge_guess(everest, "Mount Everest") and not _telepathy_rules.judge_guess(everest, "K2")
    murder = _task(out, "turtle", "turtle-1")
    assert "murder" in murder["bottom"]
    answers = [turtle.answer_question(murder, q) for q in ("Did someone die?", "Was the killer a woman?")]
    assert answers == ["Yes", "No"]
    assert turtle.answer_question(murder, "Is the story about aliens from Mars?") == "Maybe"  # beside the story


@needs_data
def test_turtle_grader_gives_the_hidden_story_what_it_should(imported: tuple[Path, dict[str, dict[str, int]]]) -> None:
    out, _ = imported
    stories = load_tasks("userrl/Turtle-v0", "test", out)
    scores = [turtle.grade_story(t, t["bottom"])[0] for t in stories]
    assert sum(scores) / len(scores) >= 0.85  # 0.643 before the lexicon and rule 4 (issue 24)
    assert all(turtle.grade_story(t, t["surface"])[0] == 0.0 for t in stories)  # the surface earns nothing


@needs_data
def test_scripted_users_are_as_accurate_as_docs_users_md_says(imported: tuple[Path, dict[str, dict[str, int]]]) -> None:
    """The floors sit a little under the accuracy docs/users.md reports, so a change that makes a
    scripted user worse on the paper's data fails here."""
    from userrl.envs.data_tools.user_checks import check_user

    out, _ = imported
    floors = {
        "userrl/Telepathy-v0": 0.85,
        "userrl/Turtle-v0": 0.75,
        "userrl/Intention-v0": 0.55,
        "userrl/Search-v0": 0.85,
        "userrl/Persuade-v0": 0.5,
        "userrl/Tau-v0": 0.95,
    }
    for env_id, floor in floors.items():
        res = check_user(env_id, out)
        assert res.accuracy >= floor, f"{env_id}: {res.accuracy:.2f} < {floor}; misses: {res.misses}"


@needs_data
def test_importer_says_imported_travel_is_judged_on_the_final_pick_only(
    imported: tuple[Path, dict[str, dict[str, int]]],
) -> None:
    from userrl.envs.data_tools.importer.pipeline import import_notes
    from userrl.envs.gyms.travel import FINAL_PICK_ONLY

    out, counts = imported
    notes = import_notes(out, counts)
    assert list(notes) == ["travel"] and notes["travel"].startswith(FINAL_PICK_ONLY)
    assert "include_final_pick_only" in notes["travel"]


@needs_data
def test_split_is_deterministic(imported: tuple[Path, dict[str, dict[str, int]]], tmp_path: Path) -> None:
    out, _ = imported
    import_userrl(SRC, tmp_path)
    for gym in IDS:
        for split in ("train", "test"):
            rel = Path(gym) / f"{split}.jsonl"
            assert (out / rel).read_bytes() == (tmp_path / rel).read_bytes()


@needs_data
@pytest.mark.parametrize("gym", list(IDS))
def test_expert_reaches_max_on_imported_test_tasks(imported: tuple[Path, dict[str, dict[str, int]]], gym: str) -> None:
    out, _ = imported
    check_tasks(IDS[gym], load_tasks(IDS[gym], "test", out))


@needs_data
@pytest.mark.parametrize("gym", ["search", "travel", "persuade"])
def test_expert_reaches_max_on_imported_tasks_ii(imported: tuple[Path, dict[str, dict[str, int]]], gym: str) -> None:
    out, _ = imported
    check_tasks(IDS_II[gym], load_tasks(IDS_II[gym], "test", out))


def _src(tmp_path: Path, folder: str, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / "src" / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / folder / name).write_text(text, encoding="utf-8")
    return tmp_path / "src"


@pytest.mark.parametrize(
    ("folder", "files", "message"),
    [
        ("FunctionGym", {"functions.json": "[{"}, r"functions\.json:1: malformed JSON"),
        ("FunctionGym", {"functions.json": "{}"}, r"functions\.json: expected a JSON list"),
        (
            "FunctionGym",
            {"functions.json": '[{"id": "f", "rule": "a"}]'},
            r"functions\.json: entry 0: expected an object with keys id, rule, test_case",
        ),
        (
            "FunctionGym",
            {
                "functions.json": json.dumps(
                    [{"id": "f", "rule": "a / 0", "test_case": [1, 2, 3, 4], "expected_result": 1}]
                )
            },
            r"task 'f' cannot be used",
        ),
        ("FunctionGym", {"functions.json": "[]", "extra.json": "[]"}, r"extra\.json: unknown file"),
        ("IntentionGym", {"all_intentions_train.json": "[]"}, r"all_intentions_test\.json: missing"),
        (
            "TurtleGym",
            {"all_stories_refined.json": '{"1": {"new_title": "t"}}'},
            r"story '1': expected an object with keys new_title, new_surface",
        ),
        ("TelepathyGym", {"all_entities_refined.json": "[1]"}, r"entry 0: expected an object"),
        (
            "SearchGym",
            {"questions.json": '[{"id": "q", "question": "?"}]'},
            r"questions\.json: entry 0: expected an object with keys id, question, answer",
        ),
        (
            "SearchGym",
            {"questions.json": '[{"id": "q", "question": "", "answer": "a"}]'},
            r"task 'q' cannot be used by userrl/Search-v0",
        ),
        ("TauGym", {"tau_train.json": "[]"}, r"tau_test\.json: missing"),
        (
            "TauGym",
            {"tau_train.json": "[]", "tau_test.json": '[{"id": "r", "obs": "hi", "info": {}}]'},
            r"entry 0 info\.task: expected an object with keys user_id, actions",
        ),
        (
            "parquet/persuasion_multiturn",
            {"train.parquet": "x", "test.parquet": "x"},
            r"train\.parquet: not a readable parquet file",
        ),
        ("parquet/persuasion_multiturn", {"train.parquet": "x"}, r"test\.parquet: missing"),
        ("parquet/travel22_multiturn_onechoice", {"train.parquet": "", "notes.txt": ""}, r"notes\.txt: unknown file"),
        (
            "FunctionGym",
            {"functions.json": '[{"id": "f", "rule": "a", "test_case": [1, 2, 3, 4], "expected_result": 1}]'},
            r"parquet/function_multiturn: missing; the train/test split of function",
        ),
    ],
)
def test_malformed_sources(tmp_path: Path, folder: str, files: dict[str, str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        import_userrl(_src(tmp_path, folder, files), tmp_path / "out")


def test_empty_source_names_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="FunctionGym/functions.json"):
        import_userrl(tmp_path, tmp_path / "out")


def _parquet(path: Path, rows: list[dict]) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_parquet_rows_are_checked(tmp_path: Path) -> None:
    folder = tmp_path / "src" / "parquet" / "travel22_multiturn_onechoice"
    row = {
        "prompt": [{"role": "user", "content": "Trip!"}],
        "reward_model": {"id": "flight:2-1|hotel:2-2", "ground_truth": "['F1', 'H2']"},
    }
    _parquet(folder / "train.parquet", [row])
    _parquet(folder / "test.parquet", [{**row, "reward_model": {**row["reward_model"], "ground_truth": "['Z9']"}}])
    with pytest.raises(DataError, match=r"test\.parquet: row 0: option 'Z9' matches no aspect"):
        import_userrl(tmp_path / "src", tmp_path / "out")
    _parquet(folder / "test.parquet", [row])
    with pytest.raises(DataError, match=r"duplicate id 'travel22:flight:2-1\|hotel:2-2' \(also in train\)"):
        import_userrl(tmp_path / "src", tmp_path / "out")
    _parquet(folder / "test.parquet", [{**row, "reward_model": {**row["reward_model"], "id": "flight:2-3|hotel:2-4"}}])
    counts = import_userrl(tmp_path / "src", tmp_path / "out")
    assert counts == {"travel": {"train": 1, "test": 1}}
    assert _ids(tmp_path / "out", "travel", "test") == ["travel22:flight:2-3|hotel:2-4"]


def _function_rows(ids: list[str]) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": "go"}], "reward_model": {"id": i}} for i in ids]


def test_split_comes_from_the_parquet_ids(tmp_path: Path) -> None:
    rules = [{"id": f"f{i}", "rule": "a + b", "test_case": [1, 2, 3, 4], "expected_result": 3} for i in range(4)]
    src = _src(tmp_path, "FunctionGym", {"functions.json": json.dumps(rules)})
    folder = src / "parquet" / "function_multiturn"
    _parquet(folder / "train.parquet", _function_rows(["f2", "f0"]))
    _parquet(folder / "test.parquet", _function_rows(["f3"]))
    assert import_userrl(src, tmp_path / "out") == {"function": {"train": 2, "test": 1}}
    assert _ids(tmp_path / "out", "function", "train") == ["f0", "f2"]  # f1: in no split, left out
    assert _ids(tmp_path / "out", "function", "test") == ["f3"]
    _parquet(folder / "test.parquet", _function_rows(["f3", "f9"]))
    with pytest.raises(
        DataError, match=r"test\.parquet: 1 task\(s\) not found in the function JSON files, e\.g\. 'f9'"
    ):
        import_userrl(src, tmp_path / "out")
    _parquet(folder / "test.parquet", _function_rows(["f3", "f0"]))
    with pytest.raises(DataError, match=r"function_multiturn: 1 task\(s\) in both train and test, e\.g\. 'f0'"):
        import_userrl(src, tmp_path / "out")


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    src = _src(tmp_path, "parquet/persuasion_multiturn", {"train.parquet": "", "test.parquet": ""})
    with pytest.raises(DataError, match="needs pyarrow"):
        import_userrl(src, tmp_path / "out")


@needs_data
def test_partial_source_imports_present_gyms(tmp_path: Path) -> None:
    shutil.copytree(SRC / "FunctionGym", tmp_path / "src" / "FunctionGym")
    shutil.copytree(SRC / "parquet" / "function_multiturn", tmp_path / "src" / "parquet" / "function_multiturn")
    counts = import_userrl(tmp_path / "src", tmp_path / "out")
    assert counts == {"function": {"train": 460, "test": 78}}
