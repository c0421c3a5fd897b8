"""The UserRL paper's reward ablation on the main job: turn reward x trajectory score.

The paper trains once per combination of turn-level credit (Equalized, R2G, EM) and
trajectory-level score (Sum, R2G) and reports each one's held-out score. This script does the
same with the main job's setup (``deploy/local.yaml``: the tiny model after its SFT cold start,
GRPO on IntentionGym, B = 4, G = 4, 60 steps, the lr schedule), the same seed for every
combination:

* the base model, the SFT stage and their held-out evaluation run once (they do not depend on
  the reward), in ``OUT/shared``;
* each combination then runs the main job's GRPO stage from that SFT model, with its own deploy
  (embedded Redis, env / policy / user / reward workers with ``reward.credit`` and
  ``reward.score`` set), in ``OUT/<credit>-<score>``, and the main job's held-out evaluation.

It prints a table like the paper's: the held-out score per gym and overall, SFT+GRPO minus SFT,
and the GRPO train margin (last fifth of the steps minus the first fifth), with the wall time
of each combination; ``OUT/ablation.json`` keeps every number. Not run in CI (minutes per
combination). A run stopped half-way resumes: the SFT model, the base/SFT evaluation and each
finished combination's result found under ``OUT`` are reused (the same seed and config give the
same ones); delete ``OUT`` to start over.

    python benchmarks/ablation.py [--config deploy/local.yaml] [--out runs/ablation]
        [--combos equalized:sum r2g:r2g ...] [--seed 0] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from userrl.agents.worker import resolve_model_path
from userrl.config import DeployConfig, load_config
from userrl.learner.main_job import eval_stage, grpo_stage, learning_check, sft_stage

CREDITS = {"equalized": "Equalized", "r2g": "R2G", "em": "EM"}
SCORES = {"sum": "Sum", "r2g": "R2G"}
ALL = [f"{c}:{s}" for c in CREDITS for s in SCORES]


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    common = [*args.set, f"seed={args.seed}"]
    # train.resume here only makes sft_stage reuse OUT/shared/sft-model when it is there
    shared = load_config(args.config, [*common, f"run_dir={out / 'shared'}", "run=ablation", "train.resume=true"])
    t0 = time.monotonic()
    base = resolve_model_path(shared)
    sft = sft_stage(shared, base, Path(shared.run_dir))
    fixed = cached(out / "shared" / "evals.json", lambda: eval_stage(shared, {"base": base, "sft": sft}))
    result: dict[str, Any] = {
        "config": args.config,
        "seed": args.seed,
        "gyms": shared.train.gyms,
        "fixed": fixed,
        "fixed_s": round(time.monotonic() - t0, 1),
        "combos": {},
    }
    print(f"base and SFT: {result['fixed_s']:.0f}s (built once, shared by every combination)", flush=True)
    for combo in args.combos:
        credit, score = combo.split(":")
        overrides = [*common, f"reward.credit={credit}", f"reward.score={score}"]
        overrides += [f"run_dir={out / f'{credit}-{score}'}", f"run=ablation-{credit}-{score}"]
        cfg = load_config(args.config, overrides)

        def train(cfg: DeployConfig = cfg, overrides: list[str] = overrides) -> dict[str, Any]:
            (Path(cfg.run_dir) / "metrics.jsonl").unlink(missing_ok=True)  # a run stopped half-way starts over
            t1 = time.monotonic()
            final, rows = grpo_stage(cfg, args.config, overrides, sft, Path(cfg.run_dir))
            t2 = time.monotonic()
            trained = eval_stage(cfg, {"sft+grpo": final})["sft+grpo"]
            check = learning_check(rows, {**fixed, "sft+grpo": trained})
            return {
                "eval": trained,
                "check": check,
                "grpo_s": round(t2 - t1, 1),
                "eval_s": round(time.monotonic() - t2, 1),
            }

        r = result["combos"][combo] = cached(Path(cfg.run_dir) / "ablation.json", train)
        print(
            f"{combo}: held-out {r['eval']['overall']:.3f}, train margin {r['check']['train_margin']:+.3f}, "
            f"GRPO {r['grpo_s']:.0f}s, eval {r['eval_s']:.0f}s",
            flush=True,
        )
    result["total_s"] = round(time.monotonic() - t0, 1)
    (out / "ablation.json").write_text(json.dumps(result, indent=2))
    return result


def cached(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()``, kept in ``path``; read back from there when a run resumes."""
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))
    return value


def table(result: dict[str, Any]) -> str:
    gyms = result["gyms"]
    head = ["turn reward", "traj. score", *[g.split("/")[-1].removesuffix("-v0") for g in gyms], "overall"]
    head += ["- SFT", "train +", "steps", "GRPO s", "eval s"]
    widths = [max(11, len(h)) for h in head]
    lines = [" | ".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    sft = result["fixed"]["sft"]["overall"]
    for name in ("base", "sft"):
        ev = result["fixed"][name]
        cells = [name.upper() if name == "sft" else name, "-", *[f"{ev['gyms'][g]['score']:.3f}" for g in gyms]]
        cells += [f"{ev['overall']:.3f}", "", "", "", "", ""]
        lines.append(" | ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    for combo, r in result["combos"].items():
        credit, score = combo.split(":")
        ev, c = r["eval"], r["check"]
        cells = [CREDITS[credit], SCORES[score], *[f"{ev['gyms'][g]['score']:.3f}" for g in gyms]]
        cells += [f"{ev['overall']:.3f}", f"{ev['overall'] - sft:+.3f}", f"{c['train_margin']:+.3f}", str(c["steps"])]
        cells += [f"{r['grpo_s']:.0f}", f"{r['eval_s']:.0f}"]
        lines.append(" | ".join(f"{x:>{w}}" for x, w in zip(cells, widths, strict=True)))
    lines.append(
        f"held-out: mean episode score on the test tasks (SFT+GRPO); - SFT: minus the SFT model's; "
        f"train +: GRPO train score, last fifth of the steps minus the first; seed {result['seed']}; "
        f"total {result['total_s']:.0f}s (base + SFT + their eval {result['fixed_s']:.0f}s)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="deploy/local.yaml")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--combos", nargs="+", default=ALL, choices=ALL, metavar="CREDIT:SCORE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args()
    print(table(run(args)))


if __name__ == "__main__":
    main()
