"""Learner metrics: one JSON line per step, experiment trackers, and a PNG plot at the end.

Metric names are fixed (cleanrl style): ``rollout/score_mean``, ``rollout/score/<gym>``,
``loss/policy``, ``policy/clip_frac``, ``policy/kl``, ``policy/ratio_mean``, ``policy/entropy``,
``policy/version``, ``rollout/stale_tokens``, ``rollout/staleness_mean``, ``perf/tokens_per_s``,
``perf/turns_per_s``; the sampler/learner mismatch (:mod:`userrl.learner.offpolicy`):
``offpolicy/kl`` (k3) and ``offpolicy/kl_k1`` of KL(engine‖learner), ``offpolicy/ratio_min``,
``_mean``, ``_max``, ``offpolicy/capped_frac``, ``offpolicy/tokens``, ``offpolicy/recomputed_tokens``,
``offpolicy/missing_tokens``; dropped work: ``rollout/groups_dropped``,
``rollout/zero_variance_dropped``, ``rollout/zero_variance_kept``, ``rollout/truncated_turn_cap``,
``rollout/truncated_token_cap``, ``rollout/truncated_masked``; with ``kl_in: reward``
``reward/kl_penalty``.

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
    keys: tuple[str, ...] = ("rollout/score_mean", "loss/policy", "policy/clip_frac", "perf/turns_per_s"),
) -> Path:
    """Draw one panel per metric over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = tuple(k for k in keys if any(k in r for r in rows))
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4 * max(len(keys), 1), 3.2), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=False):
        pts = [(r["step"], r[k]) for r in rows if k in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
