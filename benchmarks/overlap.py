"""Async overlap: K learner steps with rollouts waiting for each new version (max_staleness 0)
next to rollouts that go on with older weights while the learner trains (max_staleness 2).

Both arms run in this one invocation with the same model, seeds, tasks and settings, each on
its own deploy (embedded Redis, env/policy/user/reward workers as separate processes, the
learner and dispatcher in this process, exactly as ``userrl train``'s GRPO stage). For each
arm it prints the wall time of the K steps, the mean staleness of the trained turns, the
train return (mean sum of turn rewards) of the last third of the steps and where a step's time went (waiting for
rollouts vs the learner's update), then the speed-up ratio.

    python benchmarks/overlap.py [--steps 12] [--model DIR] [--config deploy/local.yaml] [--set k=v ...]

Without ``--model`` it builds the tiny model and gives it a short SFT (2 epochs) so the
rollouts score something; pass the ``sft-model`` of a main-job run to skip that.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def start_model(cfg, work: Path) -> str:  # type: ignore[no-untyped-def]
    import anyio

    from userrl.agents.worker import resolve_model_path
    from userrl.learner.sft import expert_demonstrations, run_sft

    base = resolve_model_path(cfg)
    t = cfg.train
    dialogues = anyio.run(lambda: expert_demonstrations(t.gyms, "train", max_turns=t.max_turns, data=cfg.data))
    return str(
        run_sft(
            base, work / "sft-model", dialogues, epochs=2, lr=t.sft_lr, seed=cfg.seed, device=t.device, dtype=t.dtype
        )
    )


def run_arm(config: str, overrides: list[str], staleness: int, steps: int, model: str, work: Path) -> dict:
    from userrl.config import load_config
    from userrl.deploy.launcher import Launcher
    from userrl.learner.main_job import run_grpo
    from userrl.learner.metrics import metric

    sets = [
        *overrides,
        f"train.max_staleness={staleness}",
        f"train.steps={steps}",
        f"run=overlap{staleness}",
        f"run_dir={work / f's{staleness}'}",
        "train.time_budget_s=100000",
        f"train.checkpoint_every={steps}",
    ]
    cfg = load_config(config, sets)
    launcher = Launcher(cfg, config, [*sets, f"policy.model={model}"]).start().start_background()
    try:
        t0 = time.monotonic()
        _, rows = run_grpo(cfg, model, Path(cfg.run_dir), url=launcher.url, tag=f"overlap{staleness}-")
        wall = time.monotonic() - t0
    finally:
        launcher.stop()
    third = rows[-max(len(rows) // 3, 1) :]
    return {
        "staleness": staleness,
        "wall": wall,
        "steps": len(rows),
        "staleness_mean": statistics.fmean(r.get("rollout/staleness_mean", 0.0) for r in rows),
        "return_end": statistics.fmean(metric(r, "rollout/return_mean") for r in third),
        "wait_s": statistics.fmean(r["perf/rollout_wait_s"] for r in rows),
        "step_s": statistics.fmean(r["perf/step_s"] for r in rows),
        "stale_tokens": sum(r.get("rollout/stale_tokens", 0) for r in rows),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="deploy/local.yaml")
    ap.add_argument("--steps", type=int, default=12, help="K learner steps per arm")
    ap.add_argument("--model", default="", help="start model (default: tiny + a 2-epoch SFT)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override k=v")
    args = ap.parse_args()
    from userrl.config import load_config
    from userrl.logs import configure_logging

    work = Path(tempfile.mkdtemp(prefix="userrl-overlap-"))
    cfg = load_config(args.config, [*args.overrides, f"run_dir={work / 'base'}"])
    configure_logging("warning")
    model = args.model or start_model(cfg, work)
    arms = [run_arm(args.config, args.overrides, s, args.steps, model, work) for s in (0, 2)]
    out = sys.stdout
    out.write(
        f"{'max_staleness':>13} | {'wall s':>7} | {'steps':>5} | {'staleness':>9} | {'stale tok':>9} | "
        f"{'return (last third)':>20} | {'rollout wait s/step':>19} | {'step s':>6}\n"
    )
    for a in arms:
        out.write(
            f"{a['staleness']:>13} | {a['wall']:>7.1f} | {a['steps']:>5} | {a['staleness_mean']:>9.2f} | "
            f"{a['stale_tokens']:>9} | {a['return_end']:>20.3f} | {a['wait_s']:>19.2f} | {a['step_s']:>6.2f}\n"
        )
    sync, async_ = arms
    out.write(
        f"speed-up (staleness 2 vs 0, same {args.steps} steps): {sync['wall'] / async_['wall']:.2f}x; "
        f"mean return {async_['return_end']:.3f} vs {sync['return_end']:.3f}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
