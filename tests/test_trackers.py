"""Experiment tracking (``train.report_to``): GRPO metrics in TensorBoard event files, read back
with TensorBoard's own reader; a missing tracker package is a clear error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from userrl.errors import ConfigError
from userrl.learner.metrics import MetricsLog

pytest.importorskip("tensorboard")
torch = pytest.importorskip("torch")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from tests.test_learner import group, model_dir  # noqa: E402, F401

pytestmark = pytest.mark.train


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_trackers_get_the_new_and_the_deprecated_metric_name(tmp_path: Path) -> None:
    with MetricsLog(tmp_path / "metrics.jsonl", ["tensorboard"], run_name="t") as m:
        m.log(1, {"rollout/return_mean": 0.25, "rollout/return/Function-v0": 0.5})
    got = scalars(tmp_path / "tensorboard")
    assert got["rollout/return_mean"] == got["rollout/score_mean"] == [(1, 0.25)]
    assert got["rollout/return/Function-v0"] == got["rollout/score/Function-v0"] == [(1, 0.5)]


def test_metrics_log_writes_tensorboard_scalars(tmp_path: Path) -> None:
    with MetricsLog(tmp_path / "metrics.jsonl", ["tensorboard"], run_name="t") as m:
        m.log(1, {"rollout/score_mean": 0.25, "policy/version": 1, "note": "text is skipped"})
        m.log(2, {"rollout/score_mean": 0.5, "policy/version": 2, "flag": True})
    got = scalars(tmp_path / "tensorboard")
    assert set(got) == {"rollout/score_mean", "policy/version"}
    assert got["rollout/score_mean"] == [(1, 0.25), (2, 0.5)]
    assert got["policy/version"] == [(1, 1.0), (2, 2.0)]
    assert len(m.read()) == 2 and m.read()[0]["note"] == "text is skipped"  # jsonl unchanged


@pytest.mark.parametrize("kind", ["wandb", "trackio", "tensorboard"])
def test_missing_tracker_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.setitem(sys.modules, kind, None)  # import fails as if not installed
    with pytest.raises(
        ConfigError,
        match=rf"train.report_to: {kind} needs the {kind} package "
        rf"\(pip install 'userrl\[{kind}\]'\)",
    ):
        MetricsLog(tmp_path / "metrics.jsonl", [kind])


def test_unknown_tracker(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'mlflow' is not one of"):
        MetricsLog(tmp_path / "metrics.jsonl", ["mlflow"])


@pytest.mark.integration
@pytest.mark.anyio
async def test_grpo_run_reports_to_tensorboard(model_dir: Path, tmp_path: Path, bus) -> None:  # noqa: F811
    """The learner loop over the bus, three GRPO steps: every metrics.jsonl number is in the
    event files under the same name, at the same step, with the policy version."""
    from userrl.bus.messages import ScoredGroup
    from userrl.envs.datasets import load_tasks
    from userrl.learner.dispatch import Dispatcher
    from userrl.learner.grpo_learner import GRPOLearner
    from userrl.learner.loop import learn
    from userrl.learner.losses import LossConfig

    learner = GRPOLearner(model_dir, tmp_path / "learner", lr=1e-2, loss=LossConfig(max_staleness=100))
    for i in range(3):
        g = group(learner)
        await bus.send(
            bus.keys.stream("learner"),
            ScoredGroup(episode_id=f"g{i}", group_id=f"g{i}", env_id=g["env_id"], items=g["items"]),
        )
    tasks = {"userrl/Function-v0": load_tasks("userrl/Function-v0", "train")}
    dispatcher = Dispatcher(bus, tasks, group_size=2, max_in_flight=0, max_turns=2, sampling={})
    with MetricsLog(tmp_path / "metrics.jsonl", ["tensorboard"]) as metrics:
        rows = await learn(
            bus,
            learner,
            dispatcher,
            steps=3,
            groups_per_step=1,
            metrics=metrics,
            time_budget_s=600,
            checkpoint_every=10,
            group_timeout_s=10,
        )
    got = scalars(tmp_path / "tensorboard")
    assert [v for _, v in got["policy/version"]] == [1.0, 2.0, 3.0]
    for row in rows:
        for name, value in row.items():
            if name != "step" and isinstance(value, (int, float)):
                assert (row["step"], pytest.approx(float(value), rel=1e-6)) in got[name], name
    assert {"rollout/score_mean", "loss/policy", "policy/clip_frac", "perf/step_s"} <= set(got)
    assert got["rollout/return_mean"] == got["rollout/score_mean"]  # the new name, and the deprecated one


@pytest.mark.slow
def test_wandb_runs_offline_without_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No WANDB_API_KEY and no network: an offline run in run_dir/wandb, to `wandb sync` later."""
    pytest.importorskip("wandb")
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials either
    monkeypatch.chdir(tmp_path)
    with MetricsLog(tmp_path / "run" / "metrics.jsonl", ["wandb"], run_name="offline") as m:
        assert m.trackers[0].run.offline
        m.log(1, {"rollout/score_mean": 0.25, "policy/version": 1})
    [run] = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert next(run.glob("run-*.wandb")).stat().st_size > 0


def test_trackio_calls_follow_its_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """trackio (gradio-based, not installed here) through a stand-in module with its documented
    signatures: init(project, name, config), log(metrics, step), finish()."""
    import types

    calls: list[tuple] = []

    def init(project: str, name: str | None = None, config: dict | None = None) -> object:
        calls.append(("init", project, name, config))
        return object()

    def log(metrics: dict, step: int | None = None) -> None:
        calls.append(("log", metrics, step))

    stub = types.ModuleType("trackio")
    stub.init, stub.log, stub.finish = init, log, lambda: calls.append(("finish",))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "trackio", stub)
    monkeypatch.delenv("TRACKIO_PROJECT", raising=False)
    with MetricsLog(tmp_path / "metrics.jsonl", ["trackio"], run_name="r1", config={"seed": 0}) as m:
        m.log(3, {"rollout/score_mean": 0.5, "policy/version": 3})
    assert calls == [
        ("init", "userrl", "r1", {"seed": 0}),
        ("log", {"rollout/score_mean": 0.5, "policy/version": 3.0}, 3),
        ("finish",),
    ]
