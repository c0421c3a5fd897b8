"""``userrl eval``: the paper's evaluation protocol, run through the same workers as training.

Each gym's test split is played by the deploy's env, policy and user workers (started by the
local launcher, or already running with ``--attach``): temperature 0, 16 turns, pass@1 by
default, and no ``Reward: r`` line shown to the policy. The turn cap defaults to each gym's own
(``--max-turns 16`` is the paper's; TravelGym's expert needs up to 18 turns). An episode's score is its gym's
``episode_score`` (the sum of its turn rewards; TravelGym: the mean answer score over the
aspects) and a gym's maximum its ``max_score``. A gym's score is
the mean over its episodes; pass@k the mean over tasks of the best of k samples, pass^k (τ-bench's:
all k must succeed) the mean over tasks of the worst of them; the overall
score is the mean over gyms weighted by their number of test tasks. The tasks are the test
split of the config's ``data`` (bundled when empty); the gyms run with ``eval_gym_options``
(falling back on ``gym_options``), e.g. TravelGym's elicitation reward 0.6 as the paper evaluates.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import structlog

from userrl.bus.messages import Reset
from userrl.config import DeployConfig, gym_options_for
from userrl.deploy.launcher import Launcher
from userrl.deploy.watch import all_failed_message, count_reasons
from userrl.envs.datasets import data_tasks
from userrl.envs.registry import get_env_class
from userrl.lifecycle import job_launcher_options
from userrl.rollouts import dispatch_and_wait, make_resets
from userrl.runtime import make_bus, redis_url

log = structlog.get_logger(__name__)


def model_overrides(model: str, api_model: str = "") -> list[str]:
    """Deploy overrides that make the policy workers serve ``model``."""
    if model == "scripted":
        return ["policy.backend=scripted"]
    if model.startswith(("http://", "https://")):
        return ["policy.backend=openai", f"policy.base_url={model}", f"policy.model={api_model or 'default'}"]
    return ["policy.backend=hf", f"policy.model={model}"]


def summarize(trajs: dict[str, list[Any]], tasks: dict[str, list[dict[str, Any]]], k: int) -> dict[str, Any]:
    report: dict[str, Any] = {"gyms": {}}
    for gym, gym_tasks in tasks.items():
        by_task: dict[str, list[float]] = defaultdict(list)
        failed = 0
        reasons: Counter[str] = Counter()
        for t, *_ in trajs.values():
            if t.env_id != gym:
                continue
            failed += t.status != "ok"
            reasons += count_reasons([t])
            by_task[t.task_id].append(float(t.meta.get("score", 0.0)) if t.status == "ok" else 0.0)
        scores = [s for v in by_task.values() for s in v]
        cls = get_env_class(gym)
        maxes = [float(cls.max_score(task)) for task in gym_tasks]
        report["gyms"][gym] = {
            "tasks": len(gym_tasks),
            "episodes": len(scores),
            "failed": failed,
            "pass@1": sum(scores) / max(len(scores), 1),
            f"pass@{k}": sum(max(v) for v in by_task.values()) / max(len(by_task), 1),
            f"pass^{k}": sum(min(v) for v in by_task.values()) / max(len(by_task), 1),
            "max": sum(maxes) / max(len(maxes), 1),
            "failures": dict(reasons.most_common(5)),  # why episodes failed, most common first
        }
    n = sum(g["tasks"] for g in report["gyms"].values())
    report["overall"] = sum(g["pass@1"] * g["tasks"] for g in report["gyms"].values()) / max(n, 1)
    return report


def format_report(report: dict[str, Any], k: int) -> str:
    cols = ["gym", "tasks", "pass@1"] + ([f"pass@{k}", f"pass^{k}"] if k > 1 else []) + ["max", "failed"]
    lines = [" | ".join(f"{c:>13}" for c in cols)]
    for gym, g in report["gyms"].items():
        cells = [gym.split("/")[-1], str(g["tasks"]), f"{g['pass@1']:.3f}"]
        cells += [f"{g[f'pass@{k}']:.3f}", f"{g[f'pass^{k}']:.3f}"] if k > 1 else []
        cells += [f"{g['max']:.3f}", str(g["failed"])]
        lines.append(" | ".join(f"{c:>13}" for c in cells))
    lines.append(f"overall (weighted by tasks): {report['overall']:.3f}")
    for gym, g in report["gyms"].items():
        for reason, n in g.get("failures", {}).items():
            lines.append(f"failed {gym.split('/')[-1]} x{n}: {reason}")
    return "\n".join(lines)


def plot_report(report: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gyms = list(report["gyms"])
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(gyms)), 3.2))
    xs = range(len(gyms))
    ax.bar([x - 0.2 for x in xs], [report["gyms"][g]["pass@1"] for g in gyms], 0.4, label="pass@1")
    ax.bar([x + 0.2 for x in xs], [report["gyms"][g]["max"] for g in gyms], 0.4, label="max", alpha=0.4)
    ax.set_xticks(list(xs), [g.split("/")[-1] for g in gyms], rotation=30)
    ax.set_ylabel("episode score (the gym's)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def eval_resets(
    gyms: Sequence[str],
    *,
    n_tasks: int,
    k: int,
    temperature: float,
    max_turns: int,
    max_new_tokens: int,
    tag: str,
    data: str = "",
    options: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[Reset], dict]:
    """The resets of an evaluation: ``k`` episodes of each of the first ``n_tasks`` tasks of
    each gym's test split of ``data`` ("" = bundled), each gym with its ``options``."""
    tasks = {g: data_tasks(g, "test", data)[:n_tasks] for g in gyms}
    resets = []
    for g, ts in tasks.items():
        resets += make_resets(
            g,
            ts,
            group_size=k,
            max_turns=max_turns,
            prefix=f"{tag}:",
            sampling={"temperature": temperature, "max_new_tokens": max_new_tokens},
            meta={"split": "test", "show_reward": False, "eval": tag},
            options=(options or {}).get(g),
        )
    return resets, tasks


async def play_test_split(
    bus: Any,
    gyms: Sequence[str],
    *,
    n_tasks: int,
    k: int,
    temperature: float,
    max_turns: int,
    max_new_tokens: int,
    timeout_s: float,
    tag: str,
    data: str = "",
    options: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict, dict]:
    """Play the evaluation of :func:`eval_resets` and collect its trajectories."""
    resets, tasks = eval_resets(
        gyms,
        n_tasks=n_tasks,
        k=k,
        temperature=temperature,
        max_turns=max_turns,
        max_new_tokens=max_new_tokens,
        tag=tag,
        data=data,
        options=options,
    )
    # the waiter's group and marker exist before the first reset: no finish can be missed
    got = await dispatch_and_wait(bus, resets, timeout=timeout_s, poll_s=0.25)
    return {e: v for e, v in got.items() if e.startswith(f"{tag}:")}, tasks


def run_eval(
    cfg: DeployConfig,
    config_path: str | None,
    overrides: Sequence[str],
    *,
    model: str,
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
    out = Path(out_dir or Path(cfg.run_dir) / "eval")
    out.mkdir(parents=True, exist_ok=True)
    tag = f"eval{int(time.time())}"
    for g in gyms:  # missing data fails here, before any worker process starts
        data_tasks(g, "test", cfg.data)
    launcher = None
    if not attach:
        ovs = [*overrides, *model_overrides(model, api_model), "workers.reward.replicas=0"]
        launcher = Launcher(cfg, config_path, ovs, **job_launcher_options()).start().start_background()
    try:
        url = launcher.url if launcher else redis_url(cfg)

        async def main() -> tuple[dict, dict]:
            bus = make_bus(cfg, url=url)
            try:
                return await play_test_split(
                    bus,
                    gyms,
                    n_tasks=n_tasks,
                    k=k,
                    temperature=temperature,
                    max_turns=max_turns,
                    max_new_tokens=cfg.policy.max_new_tokens,
                    timeout_s=timeout_s,
                    tag=tag,
                    data=cfg.data,
                    options={g: gym_options_for(cfg, g, evaluation=True) for g in gyms},
                )
            finally:
                await bus.close()

        trajs, tasks = anyio.run(main)
    finally:
        if launcher:
            launcher.stop()
    report = summarize(trajs, tasks, k)
    report.update(
        {
            "model": model,
            "k": k,
            "temperature": temperature,
            "max_turns": max_turns,
            "all_failed": all_failed_message([t for t, *_ in trajs.values()]),
        }
    )
    (out / "report.json").write_text(json.dumps(report, indent=2))
    plot_report(report, out / "report.png")
    log.info("eval.done", out=str(out), overall=round(report["overall"], 4))
    return report
