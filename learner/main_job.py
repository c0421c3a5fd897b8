"""The main job (``userrl train``): tiny model -> SFT cold start -> GRPO over the bus -> eval.

Every role runs as its own process under the local launcher (the embedded Redis by default);
the learner and the dispatcher run in this process. At the end, base / SFT / SFT+GRPO are
evaluated on held-out test tasks; the table goes to stdout, the plots and a JSON report to the
run directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import structlog

from userrl.agents.hf_backend import HFBackend
from userrl.agents.worker import resolve_model_path
from userrl.config import DeployConfig, gym_options_for, to_dict
from userrl.console import progress, stage
from userrl.deploy.launcher import Launcher
from userrl.envs.actions import TOOL_SCHEMA
from userrl.envs.datasets import data_tasks
from userrl.hardware import resolve_device
from userrl.learner.dispatch import Dispatcher
from userrl.learner.evaluation.in_process import evaluate
from userrl.learner.metrics import MetricsLog, metric, plot_metrics
from userrl.learner.sft import expert_demonstrations, load_dialogues, run_sft
from userrl.lifecycle import job_launcher_options
from userrl.runtime import learner_settings, make_bus

log = structlog.get_logger(__name__)


def sft_stage(cfg: DeployConfig, base: str, run_dir: Path) -> str:
    t = cfg.train
    out = run_dir / "sft-model"
    if t.sft_epochs == 0:
        return base
    if t.resume and (out / "config.json").is_file():
        return str(out)
    dialogues = (
        load_dialogues(t.sft_data)
        if t.sft_data
        else anyio.run(lambda: expert_demonstrations(t.gyms, "train", max_turns=t.max_turns, data=cfg.data))
    )
    run_sft(
        base,
        out,
        dialogues,
        epochs=t.sft_epochs,
        lr=t.sft_lr,
        seed=cfg.seed,
        tools=cfg.policy.tools,
        device=t.device,
        dtype=t.dtype,
        gradient_checkpointing=t.gradient_checkpointing,
        lora=t.lora if t.lora.r else None,
        report_to=t.report_to,
    )
    return str(out)


def grpo_tasks(cfg: DeployConfig) -> dict[str, list[dict[str, Any]]]:
    """What GRPO trains on: the train split of each of ``train.gyms`` in the config's ``data``
    (never a test task)."""
    return {g: data_tasks(g, "train", cfg.data) for g in cfg.train.gyms}


def run_grpo(
    cfg: DeployConfig,
    start_model: str,
    run_dir: Path,
    url: str | None = None,
    tag: str = "train",
    final_dir: Path | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """The learner process: GRPO against the deploy on ``url`` (its workers serve the rollouts).
    Resumes from ``run_dir/learner/checkpoint`` when ``train.resume`` is set and one exists.
    Under ``accelerate launch`` only rank 0 talks to Redis; the other ranks follow it
    (:mod:`userrl.learner.distributed`) and return no rows. ``final_dir``: save the final model
    there (every rank takes part)."""
    from userrl.learner.grpo_learner import GRPOLearner
    from userrl.learner.loop import learn

    t = cfg.train
    tasks = grpo_tasks(cfg)  # first: missing data fails before a model is loaded
    settings = learner_settings(cfg)
    first_step = 1
    if t.resume and (run_dir / "learner" / "checkpoint" / "state.json").is_file():
        learner, state = GRPOLearner.resume(run_dir / "learner", settings)
        first_step = int(state.get("step", 0)) + 1
        log.info("train.resumed", version=learner.version, step=first_step)
    else:
        learner = GRPOLearner(start_model, run_dir / "learner", settings)
    sampling = {"temperature": cfg.policy.temperature, "max_new_tokens": cfg.policy.max_new_tokens}
    metrics = MetricsLog(run_dir / "metrics.jsonl", t.report_to, run_name=cfg.run, config=to_dict(cfg))

    async def main() -> list[dict[str, Any]]:
        bus = make_bus(cfg, url=url)
        try:
            dispatcher = Dispatcher(
                bus,
                tasks,
                t.group_size,
                t.groups_per_step * (t.max_staleness + 1),
                t.max_turns,
                sampling,
                seed=cfg.seed,
                run_tag=f"{tag}{first_step}-",
                groups_per_step=t.groups_per_step,
                max_staleness=t.max_staleness,
                options={g: gym_options_for(cfg, g) for g in t.gyms},
            )
            return await learn(
                bus,
                learner,
                dispatcher,
                steps=t.steps,
                groups_per_step=t.groups_per_step,
                first_step=first_step,
                metrics=metrics,
                time_budget_s=t.time_budget_s,
                checkpoint_every=t.checkpoint_every,
                group_timeout_s=cfg.reward.group_timeout_s,
                weight_sync=t.weight_sync,
                weight_sync_host=t.weight_sync_host,
                max_refills=t.dynamic_sampling_max_refills if t.dynamic_sampling else 0,
            )
        finally:
            await bus.close()

    if not learner.is_main:
        from userrl.learner.distributed import follow

        follow(learner)
        return learner, []
    try:
        rows = anyio.run(main)
        if final_dir is not None:
            learner.save_model(final_dir)
    finally:
        learner.stop()  # releases the other ranks (a crash here fails them through accelerate)
        metrics.close()
    return learner, rows


def grpo_stage(
    cfg: DeployConfig, config_path: str | None, overrides: Sequence[str], start_model: str, run_dir: Path
) -> tuple[str, list[dict[str, Any]]]:
    """Start every worker role under the launcher (policy workers on ``start_model``), then GRPO."""
    launcher = (
        Launcher(cfg, config_path, [*overrides, f"policy.model={start_model}"], **job_launcher_options())
        .start()
        .start_background()
    )
    try:
        if cfg.train.accelerate_config:  # the learner as its own `accelerate launch` process group
            from userrl.learner.distributed import run_learn_under_accelerate

            return run_learn_under_accelerate(cfg, config_path, overrides, start_model, run_dir, launcher.url)
        _learner, rows = run_grpo(cfg, start_model, run_dir, url=launcher.url, final_dir=run_dir / "final-model")
    finally:
        launcher.stop()
    return str(run_dir / "final-model"), rows


def eval_stage(cfg: DeployConfig, models: dict[str, str]) -> dict[str, Any]:
    t = cfg.train
    out = {}
    bar = progress(len(models), "evaluation", unit="model")
    for name, path in models.items():
        backend = HFBackend(
            path, device=resolve_device(t.device), seed=cfg.seed, tools=(TOOL_SCHEMA,) if cfg.policy.tools else None
        )
        out[name] = anyio.run(
            lambda b=backend: evaluate(
                b,
                t.gyms,
                n_tasks=t.eval_tasks,
                max_turns=t.max_turns,
                temperature=t.eval_temperature,
                samples=t.eval_samples,
                max_new_tokens=cfg.policy.max_new_tokens,
                seed=cfg.seed,
                data=cfg.data,
                options={g: gym_options_for(cfg, g, evaluation=True) for g in t.gyms},
            )
        )
        bar.update(1)
    bar.close()
    return out


#: the main job's learning claims (issue 13): GRPO's train score rises by this much from the first
#: fifth of the steps to the last, and SFT+GRPO beats SFT on held-out tasks by this much
TRAIN_MARGIN = 0.15
HELDOUT_MARGIN = 0.10


def learning_check(rows: list[dict[str, Any]], evals: dict[str, Any]) -> dict[str, Any]:
    """The main job's claims, each with its numbers and whether it held in this run."""
    scores = [v for r in rows if (v := metric(r, "rollout/return_mean")) is not None]  # mean returns
    k = max(len(scores) // 5, 1)
    first, last = sum(scores[:k]) / k, sum(scores[-k:]) / k
    heldout = evals["sft+grpo"]["overall"] - evals["sft"]["overall"]
    return {
        "sft_beats_base": evals["sft"]["overall"] > evals["base"]["overall"],
        "grpo_first_fifth": round(first, 4),
        "grpo_last_fifth": round(last, 4),
        "grpo_improves": last > first,
        "steps": len(scores),
        "train_margin": round(last - first, 4),
        "train_margin_holds": last - first >= TRAIN_MARGIN,
        "heldout_margin": round(heldout, 4),
        "heldout_margin_holds": heldout >= HELDOUT_MARGIN,
    }


def offpolicy_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The run's sampler/learner mismatch, entropy and dropped work, over all GRPO steps."""
    steps = [r for r in rows if "offpolicy/kl" in r]
    if not steps:
        return {}

    def mean(key: str) -> float:
        return sum(float(r.get(key, 0.0)) for r in steps) / len(steps)

    def total(key: str) -> int:
        return int(sum(r.get(key, 0) for r in steps))

    return {
        "mismatch_kl_mean": mean("offpolicy/kl"),
        "mismatch_kl_max": max(float(r["offpolicy/kl"]) for r in steps),
        "ratio_min": min(float(r.get("offpolicy/ratio_min", 1.0)) for r in steps),
        "ratio_max": max(float(r.get("offpolicy/ratio_max", 1.0)) for r in steps),
        "capped_frac_mean": mean("offpolicy/capped_frac"),
        "entropy_first": float(steps[0].get("policy/entropy", 0.0)),
        "entropy_last": float(steps[-1].get("policy/entropy", 0.0)),
        "stale_tokens": total("rollout/stale_tokens"),
        "missing_tokens": total("offpolicy/missing_tokens"),
        "zero_variance_dropped": total("rollout/zero_variance_dropped"),
        "zero_variance_kept": total("rollout/zero_variance_kept"),
        "truncated_turn_cap": total("rollout/truncated_turn_cap"),
        "truncated_token_cap": total("rollout/truncated_token_cap"),
        "truncated_masked": total("rollout/truncated_masked"),
    }


def format_offpolicy(summary: dict[str, float]) -> str:
    """One line: the engine/learner mismatch and what the step's filters dropped."""
    if not summary:
        return "off-policy: no GRPO step"
    s = summary
    return (
        f"off-policy: engine vs learner KL {s['mismatch_kl_mean']:.2e} per token (max step {s['mismatch_kl_max']:.2e}), "
        f"ratio {s['ratio_min']:.3f}..{s['ratio_max']:.3f}, {100 * s['capped_frac_mean']:.2f}% above the cap; "
        f"entropy {s['entropy_first']:.3f} -> {s['entropy_last']:.3f}; stale tokens {s['stale_tokens']}; "
        f"zero-variance groups dropped {s['zero_variance_dropped']}, kept {s['zero_variance_kept']}; "
        f"truncated episodes: turn cap {s['truncated_turn_cap']}, token cap {s['truncated_token_cap']}, "
        f"masked {s['truncated_masked']}"
    )


def format_claims(report: dict[str, Any]) -> str:
    """The claims of the run, each saying whether it held, and the stage times."""
    c, s = report["check"], report["seconds"]
    yes = {True: "held", False: "did NOT hold"}
    return "\n".join(
        [
            f"GRPO train return: first fifth {c['grpo_first_fifth']:.3f} -> last fifth {c['grpo_last_fifth']:.3f} over "
            f"{c['steps']} steps (+{c['train_margin']:.3f}; claim >= +{TRAIN_MARGIN}: {yes[c['train_margin_holds']]})",
            f"held-out SFT+GRPO - SFT: {c['heldout_margin']:+.3f} (claim >= +{HELDOUT_MARGIN}: "
            f"{yes[c['heldout_margin_holds']]}); SFT beats base: {c['sft_beats_base']}",
            format_offpolicy(report.get("offpolicy", {})),
            f"stages: model {s['model']:.0f}s, SFT {s['sft']:.0f}s, GRPO {s['grpo']:.0f}s, eval {s['eval']:.0f}s; "
            f"total {s['total']:.0f}s",
        ]
    )


def format_table(evals: dict[str, Any]) -> str:
    gyms = list(next(iter(evals.values()))["gyms"])
    head = ["model", *[g.split("/")[-1] for g in gyms], "overall"]
    lines = [" | ".join(f"{h:>14}" for h in head)]
    for name, ev in evals.items():
        cells = [name] + [f"{ev['gyms'][g]['score']:.3f}" for g in gyms] + [f"{ev['overall']:.3f}"]
        lines.append(" | ".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)


def plot_evals(evals: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gyms = list(next(iter(evals.values()))["gyms"])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / len(evals)
    for i, (name, ev) in enumerate(evals.items()):
        xs = [j + i * width for j in range(len(gyms))]
        ax.bar(xs, [ev["gyms"][g]["score"] for g in gyms], width, label=name)
    ax.set_xticks([j + width * (len(evals) - 1) / 2 for j in range(len(gyms))], [g.split("/")[-1] for g in gyms])
    ax.set_ylabel("test episode score (the gym's score)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def run_train(cfg: DeployConfig, config_path: str | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    t0 = time.monotonic()
    # missing data fails here, not after minutes of SFT: GRPO's train split, the final eval's test split
    grpo_tasks(cfg)
    for g in cfg.train.gyms:
        data_tasks(g, "test", cfg.data)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.train.resume:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    base = resolve_model_path(cfg)
    log.info("train.base_model", path=base)
    t_model = time.monotonic()
    with stage("SFT"):
        sft = sft_stage(cfg, base, run_dir)
    t_sft = time.monotonic()
    with stage("GRPO"):
        final, rows = grpo_stage(cfg, config_path, overrides, sft, run_dir)
    t_grpo = time.monotonic()
    with stage("evaluation"):
        evals = eval_stage(cfg, {"base": base, "sft": sft, "sft+grpo": final})
    t_eval = time.monotonic()
    check = learning_check(rows, evals)
    plot_metrics(rows, run_dir / "metrics.png")
    plot_evals(evals, run_dir / "eval.png")
    seconds = {
        "model": t_model - t0,
        "sft": t_sft - t_model,
        "grpo": t_grpo - t_sft,
        "eval": t_eval - t_grpo,
        "total": time.monotonic() - t0,
    }
    report = {
        "eval": evals,
        "check": check,
        "offpolicy": offpolicy_summary(rows),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "models": {"base": base, "sft": sft, "final": final},
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report
