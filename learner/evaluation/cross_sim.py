"""``userrl users eval``: the same test tasks under several simulated users, side by side.

A policy that learned the task scores about the same whoever plays the user; one that learned
one simulator's quirks does not. This plays the evaluation of ``userrl eval`` (same protocol,
tasks, seeds and policy) once per simulator and reports each gym's pass@1 under each, with the
gap (the largest minus the smallest), in ``report.json`` and ``report.png``.

One deploy serves every simulator: the policy workers stay up and the user role is pointed at
each simulator in turn with the run's user target (:mod:`userrl.sim_users.simulators`, what
``userrl users swap`` does); every user worker must confirm the switch before that simulator's
episodes start, and the report counts which stamps actually answered each simulator's episodes
(``answered_by``), so a straggler would show. Episodes that fail carry their typed reason
(``user_malformed``, ``user_empty``, ...) in the report; a failed episode scores 0 and is
counted, never silently.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import structlog

from userrl.config import DeployConfig, gym_options_for
from userrl.deploy.launcher import Launcher
from userrl.envs.datasets import data_tasks
from userrl.learner.evaluation.over_bus import model_overrides, play_test_split, summarize
from userrl.lifecycle import job_launcher_options
from userrl.runtime import make_bus, redis_url
from userrl.sim_users.simulators import read_target, restore_target, wait_applied, with_user, write_target

log = structlog.get_logger(__name__)

#: how long the user workers may take to switch simulators (a local model loads on first use)
SWITCH_TIMEOUT_S = 120.0


def answered_by(trajs: dict[str, list[Any]]) -> dict[str, int]:
    """User calls per stamp over the episodes' turns."""
    c: Counter[str] = Counter()
    for t, *_ in trajs.values():
        for turn in t.turns:
            c.update(str(u.get("by") or "unknown") for u in turn.users)
    return dict(c.most_common())


def failure_kinds(trajs: dict[str, list[Any]]) -> dict[str, int]:
    """Failed episodes per error kind (``user_malformed``, ``user_empty``, ``policy``, ...)."""
    c = Counter(t.error.kind if t.error else "unknown" for t, *_ in trajs.values() if t.status != "ok")
    return dict(c.most_common())


def side_by_side(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per gym: each simulator's pass@1 and the gap (largest minus smallest); the same overall."""
    labels = list(reports)
    gyms = list(next(iter(reports.values()))["gyms"]) if reports else []
    rows: dict[str, Any] = {}
    for g in gyms:
        scores = {lbl: reports[lbl]["gyms"][g]["pass@1"] for lbl in labels}
        rows[g] = {"scores": scores, "gap": max(scores.values()) - min(scores.values())}
    overall = {lbl: reports[lbl]["overall"] for lbl in labels}
    return {"gyms": rows, "overall": overall, "gap": max(overall.values()) - min(overall.values()) if overall else 0.0}


def format_side_by_side(report: dict[str, Any]) -> str:
    labels = list(report["simulators"])
    width = max(12, *(len(lbl) for lbl in labels))
    head = ["gym", *labels, "gap"]
    lines = [" | ".join(f"{h:>{width}}" for h in head)]
    for g, row in report["side_by_side"]["gyms"].items():
        cells = [g.split("/")[-1], *(f"{row['scores'][lbl]:.3f}" for lbl in labels), f"{row['gap']:.3f}"]
        lines.append(" | ".join(f"{c:>{width}}" for c in cells))
    sbs = report["side_by_side"]
    cells = ["overall", *(f"{sbs['overall'][lbl]:.3f}" for lbl in labels), f"{sbs['gap']:.3f}"]
    lines.append(" | ".join(f"{c:>{width}}" for c in cells))
    for lbl, sim in report["simulators"].items():
        by = ", ".join(f"{s} x{n}" for s, n in sim["answered_by"].items()) or "no user calls"
        failed = ", ".join(f"{k} x{n}" for k, n in sim["failed"].items())
        lines.append(f"{lbl}: user turns by {by}" + (f"; failed episodes: {failed}" if failed else ""))
    return "\n".join(lines)


def plot_side_by_side(report: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(report["simulators"])
    gyms = list(report["side_by_side"]["gyms"])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(gyms) * max(1, len(labels)) / 2), 3.4))
    width = 0.8 / max(1, len(labels))
    for i, lbl in enumerate(labels):
        xs = [j + i * width for j in range(len(gyms))]
        ax.bar(xs, [report["side_by_side"]["gyms"][g]["scores"][lbl] for g in gyms], width, label=lbl)
    ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(gyms))], [g.split("/")[-1] for g in gyms])
    ax.set_ylabel("pass@1 on the test split")
    ax.set_title("the same tasks under each simulated user")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def run_cross_sim(
    cfg: DeployConfig,
    config_path: str | None,
    overrides: Sequence[str],
    *,
    model: str,
    simulators: Sequence[tuple[str, dict[str, Any]]],
    gyms: Sequence[str],
    n_tasks: int = 10_000,
    k: int = 1,
    temperature: float = 0.0,
    max_turns: int = 0,
    api_model: str = "",
    out_dir: str | Path | None = None,
    timeout_s: float = 3600.0,
    attach: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` under each ``(label, user fields)`` simulator; see the module docstring."""
    if len(simulators) < 2:
        raise ValueError("a cross-simulator evaluation needs two or more simulators")
    for _, fields in simulators:  # a bad spec fails here, before any process starts
        with_user(cfg, fields)
    for g in gyms:
        data_tasks(g, "test", cfg.data)
    out = Path(out_dir or Path(cfg.run_dir) / "eval-users")
    out.mkdir(parents=True, exist_ok=True)
    tag = f"xsim{int(time.time())}"
    launcher = None
    if not attach:
        ovs = [*overrides, *model_overrides(model, api_model), "workers.reward.replicas=0"]
        launcher = Launcher(cfg, config_path, ovs, **job_launcher_options()).start().start_background()
    per_sim: dict[str, dict[str, Any]] = {}
    try:
        url = launcher.url if launcher else redis_url(cfg)

        async def main() -> None:
            bus = make_bus(cfg, url=url)
            before = await read_target(bus)  # an attached deploy's own target
            try:
                for i, (label, fields) in enumerate(simulators):
                    target = await write_target(bus, cfg, fields)
                    workers = await wait_applied(bus, target.id, SWITCH_TIMEOUT_S)
                    log.info("xsim.simulator", label=label, target=target.id, workers=len(workers))
                    trajs, tasks = await play_test_split(
                        bus,
                        gyms,
                        n_tasks=n_tasks,
                        k=k,
                        temperature=temperature,
                        max_turns=max_turns,
                        max_new_tokens=cfg.policy.max_new_tokens,
                        timeout_s=timeout_s,
                        tag=f"{tag}-{i}",
                        data=cfg.data,
                        options={g: gym_options_for(cfg, g, evaluation=True) for g in gyms},
                    )
                    per_sim[label] = {
                        "spec": fields,
                        "report": summarize(trajs, tasks, k),
                        "answered_by": answered_by(trajs),
                        "failed": failure_kinds(trajs),
                        "workers": [hb.get("by") for hb in workers],
                    }
            finally:
                try:
                    await restore_target(bus, before)  # the deploy's user role as it was
                finally:
                    await bus.close()

        anyio.run(main)
    finally:
        if launcher:
            launcher.stop()
    report: dict[str, Any] = {
        "model": model,
        "k": k,
        "temperature": temperature,
        "max_turns": max_turns,
        "simulators": per_sim,
        "side_by_side": side_by_side({lbl: s["report"] for lbl, s in per_sim.items()}),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    plot_side_by_side(report, out / "report.png")
    log.info("xsim.done", out=str(out), gap=round(report["side_by_side"]["gap"], 4))
    return report
