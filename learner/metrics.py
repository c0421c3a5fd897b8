"""Learner metrics: one JSON line per step, experiment trackers, and a PNG plot at the end.

Metric names are fixed (cleanrl style): ``rollout/return_mean`` (the mean return: sum of turn
rewards, of the step's trajectories), ``rollout/return/<gym>``, ``loss/policy``, ``policy/clip_frac``, ``policy/kl``, ``policy/ratio_mean``, ``policy/entropy``,
``policy/version``, ``rollout/stale_tokens``, ``rollout/staleness_mean``, ``perf/tokens_per_s``,
``perf/turns_per_s``; the sampler/learner mismatch (:mod:`userrl.learner.offpolicy`):
``offpolicy/kl`` (k3) and ``offpolicy/kl_k1`` of KL(engine‖learner), ``offpolicy/ratio_min``,
``_mean``, ``_max``, ``offpolicy/capped_frac``, ``offpolicy/tokens``, ``offpolicy/recomputed_tokens``,
``offpolicy/missing_tokens``; dropped work: ``rollout/groups_dropped``,
``rollout/zero_variance_dropped``, ``rollout/zero_variance_kept``, ``rollout/truncated_turn_cap``,
``rollout/truncated_token_cap``, ``rollout/truncated_masked``; with ``kl_in: reward``
``reward/kl_penalty``.

Four numbers were all called "score" before; each has its own name now: the **return** (the sum
of an episode's turn rewards, what training maximizes), the **episode score** (the gym's
``Env.episode_score``, what evaluation reports: ``meta["score"]`` of a trajectory), the **GRPO
trajectory score** (``items[].score`` of a scored group, what the advantages are computed from)
and the **advantage**. Renamed metrics are listed in :data:`RENAMED`: for one release
``metrics.jsonl`` and the trackers carry both names (the old one is deprecated), and readers
take either (:func:`metric`).

``train.report_to`` sends the same numbers, under the same names and with the GRPO step as the
step, to the trackers TRL users know (:mod:`userrl.learner.trackers`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from userrl.learner.trackers import open_tracker

#: Deprecated metric names (one release) -> their new names. ``rollout/score_mean`` was the mean
#: return, not a score; ``rollout/score/<gym>`` (a prefix, ending in ``/``) the mean return per gym.
RENAMED: dict[str, str] = {
    "rollout/score_mean": "rollout/return_mean",
    "rollout/score/": "rollout/return/",
}


def old_name(name: str) -> str | None:
    """The deprecated name of metric ``name`` (None when it was not renamed)."""
    for old, new in RENAMED.items():
        if name == new or (new.endswith("/") and name.startswith(new)):
            return old + name[len(new) :]
    return None


def with_deprecated(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` plus the deprecated name of each renamed metric in it (what is logged this
    release, so dashboards and scripts reading the old names keep working)."""
    out = dict(metrics)
    for name, value in metrics.items():
        old = old_name(name)
        if old is not None:
            out.setdefault(old, value)
    return out


def metric(row: dict[str, Any], name: str, default: Any = None) -> Any:
    """Metric ``name`` of a logged row, read under its deprecated name when the row predates the
    rename (a ``metrics.jsonl`` of an older run)."""
    if name in row:
        return row[name]
    old = old_name(name)
    return row.get(old, default) if old is not None else default


class MetricsLog:
    """``metrics.jsonl`` in ``path``'s folder, plus the trackers named in ``report_to``
    (``tensorboard`` writes to ``<folder>/tensorboard``). Close it to flush the trackers."""

    def __init__(
        self,
        path: str | Path,
        report_to: Sequence[str] = (),
        *,
        run_name: str = "userrl",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.trackers = [open_tracker(kind, self.path.parent, run_name, config or {}) for kind in report_to]

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        metrics = with_deprecated(metrics)
        row = {"step": step, "time": round(time.time(), 3), **metrics}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for tracker in self.trackers:
            tracker.log(step, scalars)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def plot_metrics(
    rows: list[dict[str, Any]],
    out: str | Path,
    keys: tuple[str, ...] = ("rollout/return_mean", "loss/policy", "policy/clip_frac", "perf/turns_per_s"),
) -> Path:
    """Draw one panel per metric over steps (a renamed metric also from its old name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = tuple(k for k in keys if any(metric(r, k) is not None for r in rows))
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4 * max(len(keys), 1), 3.2), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=False):
        pts = [(r["step"], metric(r, k)) for r in rows if metric(r, k) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
