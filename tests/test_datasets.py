"""Bundled datasets and the JSONL loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from userrl.envs.data_tools import generate
from userrl.envs.datasets import DATA_DIR, load_tasks
from userrl.errors import DataError, UnknownEnvError

GYMS = ["userrl/Function-v0", "userrl/Telepathy-v0", "userrl/Turtle-v0", "userrl/Intention-v0"]


@pytest.mark.parametrize("env_id", GYMS)
def test_bundled_splits_are_big_enough_with_unique_ids(env_id: str) -> None:
    train, test = load_tasks(env_id, "train"), load_tasks(env_id, "test")
    assert len(train) >= 40 and len(test) >= 15
    ids = [t["id"] for t in train + test]
    assert len(ids) == len(set(ids)) and all(isinstance(i, str) for i in ids)


def test_bundled_files_match_the_generator() -> None:
    assert generate.main(["--check"]) == 0


def test_regenerating_elsewhere_is_byte_identical(tmp_path: Path) -> None:
    """``--out`` writes the same bytes as the bundled files; ``--check`` sees a missing or
    changed file (so the check above can fail)."""
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1  # nothing there yet
    assert generate.main(["--out", str(tmp_path)]) == 0
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(written) == 18  # 8 gyms x {train,test}, the search corpus, the shop database
    for rel in written:
        assert (tmp_path / rel).read_bytes() == (DATA_DIR / rel).read_bytes(), rel
    assert generate.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / written[0]).write_text("{}\n", encoding="utf-8")
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1


def test_load_returns_fresh_copies() -> None:
    a = load_tasks("userrl/Function-v0", "test")
    a[0]["rule"] = "mutated"
    assert load_tasks("userrl/Function-v0", "test")[0]["rule"] != "mutated"


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


FN = json.dumps({"id": "f1", "rule": "a + b + c + d", "test_case": [1, 2, 3, 4]})


def test_user_file_and_folder_layouts(tmp_path: Path) -> None:
    f = _write(tmp_path / "mine.jsonl", [FN, ""])
    assert [t["id"] for t in load_tasks("userrl/Function-v0", "test", f)] == ["f1"]
    _write(tmp_path / "nested" / "function" / "train.jsonl", [FN])
    assert len(load_tasks("userrl/Function-v0", "train", tmp_path / "nested")) == 1
    _write(tmp_path / "flat" / "test.jsonl", [FN])
    assert len(load_tasks("userrl/Function-v0", "test", tmp_path / "flat")) == 1


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([FN, "{not json"], r"bad\.jsonl:2: malformed JSON"),
        (["[1, 2]"], r"bad\.jsonl:1: expected a JSON object"),
        (['{"rule": "a"}'], r"bad\.jsonl:1: every task needs a non-empty string 'id'"),
        ([FN, FN], r"bad\.jsonl:2: duplicate id 'f1' \(first on line 1\)"),
        (['{"id": "f2", "rule": "a +", "test_case": [1, 2, 3, 4]}'], r"bad\.jsonl:1: invalid"),
        (['{"id": "f3", "rule": "a / (b - b)", "test_case": [1, 2, 3, 4]}'], r"undefined"),
        ([""], r"no tasks"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, lines: list[str], message: str) -> None:
    f = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError, match=message):
        load_tasks("userrl/Function-v0", "test", f)


def test_missing_file_unknown_split_and_unknown_env(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_tasks("userrl/Function-v0", "test", tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match="unknown split"):
        load_tasks("userrl/Function-v0", "dev")
    with pytest.raises(UnknownEnvError):
        load_tasks("userrl/Nope-v0", "test")


def test_gym_specific_validation(tmp_path: Path) -> None:
    bad_turtle = {
        "id": "t",
        "title": "x",
        "surface": "s",
        "bottom": "b",
        "key_points": [{"statement": "s", "weight": 0.5, "keywords": [["s"]]}],
    }
    f = _write(tmp_path / "t.jsonl", [json.dumps(bad_turtle)])
    with pytest.raises(DataError, match="weights must sum to 1"):
        load_tasks("userrl/Turtle-v0", "test", f)
    bad_int = {
        "id": "i",
        "task": "t",
        "missing_details": [{"description": "d", "importance": 5, "keywords": ["k"], "answer": "a"}],
    }
    f = _write(tmp_path / "i.jsonl", [json.dumps(bad_int)])
    with pytest.raises(DataError, match="importance"):
        load_tasks("userrl/Intention-v0", "test", f)
