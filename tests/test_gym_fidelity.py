"""Issue 24: the paper's 16 turns, imported Travel as it is, the judges' remaining holes, and
the scripted users on imported data (bundled tasks here; tests/test_importer.py plays the
imported ones when the UserRL release is present)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_gyms import INT, play
from userrl.cli import main
from userrl.config import load_config
from userrl.envs.base import PAPER_MAX_TURNS
from userrl.envs.check import GymReport, check_tasks
from userrl.envs.datasets import load_tasks, select_gyms
from userrl.envs.gyms import _text, intention
from userrl.envs.gyms import _travel_rules as travel_rules
from userrl.envs.gyms.travel import FINAL_PICK_ONLY, TravelGym
from userrl.envs.registry import get_env_class, list_envs
from userrl.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def test_every_gym_plays_the_papers_16_turns() -> None:
    assert PAPER_MAX_TURNS == 16
    assert all(get_env_class(g)().max_turns == 16 for g in list_envs())


def test_paper_config_is_the_papers_protocol() -> None:
    cfg = load_config(REPO / "deploy" / "paper.yaml")
    assert sorted(cfg.gyms) == list_envs() and cfg.train.max_turns == 16
    assert cfg.train.group_size == 8 and cfg.train.groups_per_step == 128 and cfg.train.lr == 1e-6
    assert cfg.reward.credit == "equalized" and cfg.reward.score == "sum" and cfg.user.temperature == 0
    travel = cfg.eval_gym_options["userrl/Travel-v0"]
    assert travel["elicit_reward"] == 0.6 and travel["search_reward"] == 0.2
    assert cfg.gym_options["userrl/Travel-v0"]["elicit_reward"] == 0.8
    # the evaluation plays UserRL's rules where ours are hardened for training
    assert cfg.eval_gym_options["userrl/Function-v0"] == {"max_answers": None, "min_probe_distance": 0.0}
    assert cfg.eval_gym_options["userrl/Search-v0"]["max_answers"] is None


def test_travel_expert_reaches_the_maximum_score_in_16_turns_and_check_says_what_return_is_left() -> None:
    tasks = load_tasks("userrl/Travel-v0", "test")
    got, offered = check_tasks("userrl/Travel-v0", tasks)  # every expert episode at score 1.0
    assert got < offered  # some tasks have more preferences than 16 turns hold
    task = max(tasks, key=lambda t: len(t["preferences"]))
    n = len(task["aspects"])
    assert TravelGym.max_return_within(task, 16) == round(n + 0.8 * min(len(task["preferences"]), 16 - 2 * n), 4)
    assert TravelGym.max_return_within(task, 100) == TravelGym.max_return(task)
    line = GymReport(
        "userrl/Travel-v0", 16, len(tasks), round(got / len(tasks), 4), round(offered / len(tasks), 4)
    ).line()
    assert "experts at the maximum score; their return" in line and "16 turns leave no room" in line


def test_function_refuses_probes_within_one_of_the_test_case() -> None:
    task = load_tasks("userrl/Function-v0", "test")[0]
    a, b, c, d = task["test_case"]
    near = play("userrl/Function-v0", task, [f"[action] {a + 1e-9!r} {b} {c} {d}", f"[action] {a + 0.5} {b} {c} {d}"])
    assert all("within 1 of the test case" in r.observation for r in near)
    far = play("userrl/Function-v0", task, [f"[action] {a + 1} {b} {c} {d}"])[0]
    assert far.observation.startswith("f(")
    reference = play("userrl/Function-v0", task, [f"[action] {a + 1e-9!r} {b} {c} {d}"], min_probe_distance=0.0)
    assert reference[0].observation.startswith("f(")  # UserRL's rule: only the test case itself


def test_intention_a_topic_the_user_lacks_beside_one_they_have_is_a_sweep() -> None:
    def ask(question: str) -> list[int]:
        return intention.uncovered_by(INT, question, [0, 1, 2], INT["task"])

    assert ask("What is your budget?") == [0]
    assert ask("Could you tell me about the budget and the colour?") == []  # "the colour": not theirs
    assert ask("Could you tell me about the colour and the budget?") == []
    assert ask("What is your budget, and when do you want to go?") == [0, 1]  # both theirs: the 0.2 penalty
    assert ask("Could you tell me about the size or the budget?") == []  # a common topic the user lacks
    assert ask("Is the budget tight or flexible?") == [0]  # values of one topic
    assert ask("Which food do you like, such as sushi, pasta, or curry?") == [2]  # examples of one topic
    assert intention.turn_reward(INT, ask("What is your budget, and when do you want to go?")) == 0.8


def test_travel_messages_must_ask_and_must_not_sweep() -> None:
    task = {
        "id": "t",
        "request": "A trip to Rome.",
        "aspects": ["flight", "hotel"],
        "catalog": {"flight": {"best": ["F1"], "options": []}, "hotel": {"best": ["H1"], "options": []}},
        "preferences": [
            {"aspect": "flight", "keywords": ["layover", "stop"], "statement": "Layovers wear me out."},
            {"aspect": "hotel", "keywords": ["pool"], "statement": "I swim every morning."},
        ],
    }
    assert travel_rules.is_focused(task, "Do you mind layovers?")
    assert travel_rules.is_focused(task, "Tell me about layovers")
    assert not travel_rules.is_focused(task, "layover pool price")  # a bag of words asks nothing
    assert not travel_rules.is_focused(task, "Could you tell me about the layovers and the breakfast?")
    assert travel_rules.is_focused(task, "Could you tell me about the layovers and the pool?")
    assert _text.is_question("What time?") and not _text.is_question("please actions a time")


def test_imported_travel_is_left_out_of_training_and_evaluation_unless_asked(tmp_path: Path) -> None:
    travel = tmp_path / "travel"
    travel.mkdir()
    task = {
        "id": "travel22:hotel:1",
        "request": "A hotel in Austin.",
        "aspects": ["hotel"],
        "catalog": {"hotel": {"best": ["H3"], "acceptable": [], "options": []}},
        "preferences": [],
    }
    for split in ("train", "test"):
        (travel / f"{split}.jsonl").write_text(json.dumps(task) + "\n")
    assert TravelGym.final_pick_only(task) == FINAL_PICK_ONLY
    assert TravelGym.final_pick_only(load_tasks("userrl/Travel-v0", "test")[0]) is None
    kept, left = select_gyms(["userrl/Travel-v0", "userrl/Function-v0"], tmp_path)
    assert kept == ["userrl/Function-v0"] and left == {"userrl/Travel-v0": FINAL_PICK_ONLY}
    assert select_gyms(["userrl/Travel-v0"], tmp_path, include_final_pick_only=True) == (["userrl/Travel-v0"], {})
    assert select_gyms(["userrl/Travel-v0"], "") == (["userrl/Travel-v0"], {})  # bundled tasks play in full
    with pytest.raises(DataError, match="include_final_pick_only"):
        select_gyms(["userrl/Travel-v0"], tmp_path)


def test_check_env_reports_final_pick_only_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    travel = tmp_path / "travel"
    travel.mkdir()
    rows = [
        {
            "id": f"travel22:{a}:{i}",
            "request": "A trip.",
            "aspects": [a],
            "catalog": {a: {"best": [f"{a[0].upper()}{i}"], "acceptable": [], "options": []}},
            "preferences": [],
        }
        for i, a in enumerate(["hotel", "flight", "hotel", "restaurant"], 1)
    ]
    for split in ("train", "test"):
        (travel / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["test-gym", "userrl/Travel-v0", "--set", f"data={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "ok   userrl/Travel-v0 (16 turns)" in out and "only the final pick is judged" in out
    assert "the exploits are reported, not held" in out


def test_persuade_speaks_userrls_stance_labels_and_reads_the_old_ones() -> None:
    from userrl.envs.gyms._persuade_rules import STANCES, stance_index

    assert STANCES[2] == "Partly Agree" and STANCES[4] == "Partly Disagree"
    assert stance_index("Slightly Disagree") == stance_index("partly disagree.") == 4
