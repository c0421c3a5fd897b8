"""Metric names that say which number they are: the mean return is ``rollout/return_mean``; for
one release the deprecated ``rollout/score_mean`` names are written too, and readers take either."""

from __future__ import annotations

import json
from pathlib import Path

from userrl.bus.records import ScoredTrajectory
from userrl.learner.loop import rollout_metrics
from userrl.learner.metrics import RENAMED, MetricsLog, metric, old_name, with_deprecated


def test_every_renamed_metric_has_its_old_name() -> None:
    assert RENAMED == {"rollout/score_mean": "rollout/return_mean", "rollout/score/": "rollout/return/"}
    assert old_name("rollout/return_mean") == "rollout/score_mean"
    assert old_name("rollout/return/Telepathy-v0") == "rollout/score/Telepathy-v0"
    assert old_name("loss/policy") is None and old_name("rollout/return_meanx") is None


def test_rollout_metrics_are_mean_returns_under_the_new_names() -> None:
    items = [ScoredTrajectory("a", score=-1.0, return_=3.0), ScoredTrajectory("b", score=1.0, return_=1.0)]
    groups = [{"env_id": "userrl/Travel-v0", "items": items}, {"env_id": "userrl/Turtle-v0", "items": [items[0]]}]
    got = rollout_metrics(groups)
    # the returns, not the GRPO trajectory scores (-1, 1), are averaged
    assert got == {"rollout/return_mean": 7 / 3, "rollout/return/Travel-v0": 2.0, "rollout/return/Turtle-v0": 3.0}
    both = with_deprecated(got)
    assert both["rollout/score_mean"] == both["rollout/return_mean"]
    assert both["rollout/score/Travel-v0"] == 2.0 and len(both) == 6


def test_metrics_jsonl_carries_both_names_and_readers_take_either(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.log(1, {"rollout/return_mean": 0.5, "rollout/return/Function-v0": 0.25, "loss/policy": 0.1})
    (row,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert row["rollout/return_mean"] == row["rollout/score_mean"] == 0.5
    assert row["rollout/return/Function-v0"] == row["rollout/score/Function-v0"] == 0.25
    old_run = {"step": 1, "rollout/score_mean": 0.75}  # a metrics.jsonl written before the rename
    assert metric(old_run, "rollout/return_mean") == 0.75 and metric(row, "rollout/return_mean") == 0.5
    assert metric(old_run, "loss/policy") is None and metric(old_run, "loss/policy", 0.0) == 0.0
