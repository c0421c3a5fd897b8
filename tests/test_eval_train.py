"""The real entry points in subprocesses: ``userrl eval`` through the workers on all eight gyms
with the scripted experts, and a tiny ``userrl train`` run end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CI = Path(__file__).resolve().parents[1] / "deploy" / "ci.yaml"
ALL = [
    "userrl/Function-v0",
    "userrl/Telepathy-v0",
    "userrl/Turtle-v0",
    "userrl/Intention-v0",
    "userrl/Travel-v0",
    "userrl/Persuade-v0",
    "userrl/Search-v0",
    "userrl/Tau-v0",
]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "USERRL_REDIS_URL"}  # the launcher's own Redis
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_eval_scripted_experts_reach_the_maximum_on_every_gym(tmp_path: Path) -> None:
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
            f"run_dir={tmp_path}",
            "--set",
            "run=evaltest",
            "--gyms",
            *ALL,
            "--tasks",
            "4",
            "--k",
            "2",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert set(report["gyms"]) == set(ALL)
    for gym, g in report["gyms"].items():
        assert g["episodes"] == 8 and g["failed"] == 0, gym
        assert g["pass@1"] == pytest.approx(g["max"]) and g["pass@2"] == pytest.approx(g["max"]), gym
    assert (tmp_path / "eval" / "report.png").stat().st_size > 1000
    assert "pass@2" in out.stdout and "overall" in out.stdout


@pytest.mark.train
@pytest.mark.timeout(900)  # two `userrl train` runs; minutes on a loaded 2-core machine
def test_train_main_job_smoke(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    sets = [
        f"run_dir={tmp_path}",
        "run=trainsmoke",
        "train.steps=2",
        "train.sft_epochs=1",
        "train.eval_tasks=2",
        "train.groups_per_step=2",
        "train.group_size=2",
        "train.max_turns=2",
        "policy.max_new_tokens=8",
        "train.checkpoint_every=1",
        "train.eval_samples=1",
        "policy.tiny_size={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, "
        "num_attention_heads: 2, num_key_value_heads: 1, head_dim: 16}",
    ]
    args = [sys.executable, "-m", "userrl", "train", "--config", str(CI)]
    for s in sets:
        args += ["--set", s]
    args += ["--set", "policy.backend=hf", "--set", "policy.model=tiny"]
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    report_to = ["--set", "train.report_to=[tensorboard]"] if tensorboard else []
    out = subprocess.run(
        [*args, *report_to, "--set", "log_level=info"], env=_env(), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["eval"]) == {"base", "sft", "sft+grpo"}
    assert report["check"]["steps"] == 2
    assert set(report["seconds"]) == {"model", "sft", "grpo", "eval", "total"}
    assert report["seconds"]["total"] >= report["seconds"]["sft"] + report["seconds"]["grpo"]
    for claim in ("train_margin_holds", "heldout_margin_holds"):
        assert isinstance(report["check"][claim], bool)
    assert "claim >= +0.15" in out.stdout and "stages: model" in out.stdout
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all("loss/policy" in r for r in rows)
    # the sampler/learner mismatch and the entropy are logged every step and summed up on stdout
    assert all("offpolicy/kl" in r and "policy/entropy" in r for r in rows) and "off-policy: engine vs" in out.stdout
    assert (tmp_path / "metrics.png").is_file() and (tmp_path / "eval.png").is_file()
    assert (tmp_path / "learner" / "groups.msgpack").stat().st_size > 0
    assert "sft+grpo" in out.stdout
    # console: a header and a wall time per stage on stdout; info logs in the run's log file only
    for stage in ("SFT", "GRPO", "evaluation"):
        assert f"== {stage} ==" in out.stdout and f"-- {stage}: " in out.stdout, out.stdout
    assert '"level": "info"' not in out.stderr and "[info" not in out.stderr, out.stderr[-3000:]
    # the SFT trainer's summary dict goes to the log file, and no deprecation warning of ours shows
    assert "'train_runtime'" not in out.stdout + out.stderr and "is deprecated" not in out.stderr, out.stderr[-3000:]
    logged = [json.loads(line)["event"] for line in (tmp_path / "logs" / "train.log").read_text().splitlines()]
    assert "train.base_model" in logged and "learner.step" in logged and "sft.trainer_output" in logged
    if tensorboard:  # train.report_to: GRPO scalars and TRL's SFT events
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
        assert list((tmp_path / "sft-model" / "trainer").rglob("events.out.tfevents.*"))
    # resume: the checkpoint of step 2 continues to step 3 (no second SFT)
    sft_written = (tmp_path / "sft-model" / "config.json").stat().st_mtime_ns
    again = subprocess.run(
        [*args, "--set", "train.steps=3", "--set", "train.resume=true"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "sft-model" / "config.json").stat().st_mtime_ns == sft_written
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[-1]["policy/version"] == 3
