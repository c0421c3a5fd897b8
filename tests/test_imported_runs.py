"""Runs on the imported UserRL data (``--set data=<imported>``): training dispatches only the
reference's train tasks, and ``userrl eval`` plays the imported test tasks. Skipped when the
data is not at ``../shared/userrl-data``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from userrl.bus.messages import Reset, decode
from userrl.bus.transport import Bus
from userrl.config import gym_options_for, load_config
from userrl.envs.data_tools.importer.pipeline import import_userrl
from userrl.envs.datasets import data_tasks
from userrl.errors import DataError
from userrl.learner.dispatch import Dispatcher
from userrl.learner.main_job import grpo_tasks

SRC = Path(__file__).resolve().parents[2] / "shared" / "userrl-data"
CI = Path(__file__).resolve().parents[1] / "deploy" / "ci.yaml"
pytestmark = pytest.mark.skipif(not SRC.is_dir(), reason=f"UserRL data not found at {SRC}")
#: gyms with a train split in the reference (Search is test only)
TRAINED = [
    "userrl/Function-v0",
    "userrl/Telepathy-v0",
    "userrl/Turtle-v0",
    "userrl/Intention-v0",
    "userrl/Travel-v0",
    "userrl/Persuade-v0",
    "userrl/Tau-v0",
]


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("userrl")
    import_userrl(SRC, out)
    return out


@pytest.mark.integration
@pytest.mark.anyio
async def test_training_never_dispatches_a_test_task(bus: Bus, imported: Path) -> None:
    cfg = load_config(CI, [f"data={imported}", f"train.gyms=[{', '.join(TRAINED)}]"])
    tasks = grpo_tasks(cfg)
    d = Dispatcher(
        bus,
        tasks,
        group_size=1,
        max_in_flight=512,
        max_turns=4,
        sampling={},
        options={g: gym_options_for(cfg, g) for g in TRAINED},
    )
    total = sum(len(ts) for ts in tasks.values())
    while d.dispatched < total:  # one epoch of every gym (the cycle interleaves them)
        for r in await d.fill(version=0):
            d.done(r.group_id)
    sent = [m for _, f in await bus.redis.xrange(bus.keys.stream("env")) if isinstance(m := decode(f[b"p"]), Reset)]
    for gym in TRAINED:
        train = {t["id"] for t in data_tasks(gym, "train", str(imported))}
        test = {t["id"] for t in data_tasks(gym, "test", str(imported))}
        got = {r.task["id"] for r in sent if r.env_id == gym}
        assert got and got <= train and not got & test, gym
    search = load_config(CI, [f"data={imported}", "train.gyms=[userrl/Search-v0]"])
    with pytest.raises(DataError, match=rf"{imported}/search/train.jsonl not found"):
        grpo_tasks(search)


@pytest.mark.integration
@pytest.mark.slow
def test_eval_plays_imported_test_tasks(imported: Path, tmp_path: Path) -> None:
    # Tau's imported tasks need the τ-bench databases (another change); every other gym here.
    gyms = [g for g in TRAINED if g != "userrl/Tau-v0"] + ["userrl/Search-v0"]
    env = {k: v for k, v in os.environ.items() if k != "USERRL_REDIS_URL"}  # the launcher's own Redis
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "userrl",
            "eval",
            "--model",
            "scripted",
            "--config",
            str(CI),
            "--set",
            f"data={imported}",
            "--set",
            f"run_dir={tmp_path}",
            "--set",
            "run=evalimp",
            "--set",
            "include_final_pick_only=true",  # imported Travel is left out of eval by default
            "--gyms",
            *gyms,
            "--tasks",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    for gym in gyms:
        g = report["gyms"][gym]
        assert (g["tasks"], g["episodes"], g["failed"]) == (2, 2, 0), gym
        assert g["pass@1"] == pytest.approx(g["max"]), gym
