"""Learner metrics: one JSON line per step, and a PNG plot at the end of a run.

Metric names are fixed (cleanrl style): ``rollout/score_mean``, ``rollout/score/<gym>``,
``loss/policy``, ``policy/clip_frac``, ``policy/kl``, ``policy/ratio_mean``,
``rollout/stale_tokens``, ``rollout/staleness_mean``, ``perf/tokens_per_s``, ``perf/turns_per_s``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, "time": round(time.time(), 3), **metrics}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def plot_metrics(rows: list[dict[str, Any]], out: str | Path,
                 keys: tuple[str, ...] = ("rollout/score_mean", "loss/policy", "policy/clip_frac",
                                          "perf/turns_per_s")) -> Path:
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
