"""The main job over several seeds: per-stage wall time and the two learning margins.

Runs ``userrl train`` (the README's main job, a fresh run directory per seed, each in its own
process with its own embedded Redis) and reads each run's ``report.json``:

* stage times: building the base model, SFT, GRPO, evaluation, total;
* GRPO train margin: mean rollout score of the last fifth of the steps minus the first fifth
  (claim: >= 0.15);
* held-out margin: SFT+GRPO minus SFT on the test tasks (claim: >= 0.1);
* whether the run fit the 10-minute budget.

Not run in CI (a seed takes minutes). The README reports its table.

    python benchmarks/main_job.py [--seeds 0 1 2] [--isa avx2] [--config deploy/local.yaml] [--set k=v ...]

``--isa avx2`` caps the instruction set that PyTorch's kernels, MKL and oneDNN use at AVX2 (their
own environment switches), so a machine with AVX-512 times the job as a CPU like CI's would:
no AVX-512, no native bf16. The main job trains in fp32 on CPUs either way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN_MARGIN = 0.15
HELDOUT_MARGIN = 0.10
BUDGET_S = 600.0


# Each library's own switch for the widest instruction set it may use.
ISA_ENV = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def run_seed(config: str, seed: int, out: Path, overrides: list[str], isa: str = "") -> dict:
    run_dir = out / f"seed{seed}"
    cmd = [
        sys.executable,
        "-m",
        "userrl",
        "train",
        "--config",
        config,
        "--set",
        f"seed={seed}",
        "--set",
        f"run_dir={run_dir}",
        "--set",
        f"run=mainjob{seed}",
    ]
    for ov in overrides:
        cmd += ["--set", ov]
    t0 = time.monotonic()
    env = {**os.environ, **ISA_ENV.get(isa, {})}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False, env=env)
    wall = time.monotonic() - t0
    report_file = run_dir / "report.json"
    if proc.returncode != 0 or not report_file.is_file():
        return {"seed": seed, "ok": False, "wall": wall, "error": f"exit {proc.returncode}: {proc.stdout[-300:]}"}
    report = json.loads(report_file.read_text())
    check, secs = report["check"], report["seconds"]
    return {
        "seed": seed,
        "ok": True,
        "wall": wall,
        "seconds": secs,
        "train_margin": check["grpo_last_fifth"] - check["grpo_first_fifth"],
        "heldout_margin": report["eval"]["sft+grpo"]["overall"] - report["eval"]["sft"]["overall"],
        "steps": check["steps"],
        "sft": report["eval"]["sft"]["overall"],
        "grpo": report["eval"]["sft+grpo"]["overall"],
    }


def table(rows: list[dict]) -> str:
    head = (
        f"{'seed':>4} | {'model':>6} | {'sft':>6} | {'grpo':>6} | {'eval':>6} | {'total':>6} | {'steps':>5} | "
        f"{'train +':>7} | {'held-out +':>10} | claims"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if not r["ok"]:
            lines.append(f"{r['seed']:>4} | failed after {r['wall']:.0f}s: {r['error']}")
            continue
        s = r["seconds"]
        held = claims_hold(r)
        lines.append(
            f"{r['seed']:>4} | {s.get('model', 0):>6.0f} | {s['sft']:>6.0f} | {s['grpo']:>6.0f} | "
            f"{s.get('eval', 0):>6.0f} | {s['total']:>6.0f} | {r['steps']:>5} | {r['train_margin']:>+7.3f} | "
            f"{r['heldout_margin']:>+10.3f} | {'yes' if held else 'no'}"
        )
    return "\n".join(lines)


def claims_hold(r: dict) -> bool:
    return (
        r["ok"]
        and r["train_margin"] >= TRAIN_MARGIN
        and r["heldout_margin"] >= HELDOUT_MARGIN
        and r["seconds"]["total"] <= BUDGET_S
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="deploy/local.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="", help="where the runs go (default: a temp dir)")
    ap.add_argument(
        "--isa",
        choices=["native", *ISA_ENV],
        default="native",
        help="cap the CPU instruction set of the runs (avx2: as a CPU without AVX-512)",
    )
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override k=v")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="userrl-mainjob-"))
    rows = []
    for seed in args.seeds:
        rows.append(run_seed(args.config, seed, out, args.overrides, args.isa))
        sys.stdout.write(table(rows[-1:]).splitlines()[-1] + "\n")
        sys.stdout.flush()
    sys.stdout.write(
        "\nseconds per stage after the install; train + = GRPO train return last fifth - first fifth "
        f"(claim >= {TRAIN_MARGIN}); held-out + = SFT+GRPO - SFT (claim >= {HELDOUT_MARGIN}); "
        f"budget {BUDGET_S:.0f}s; instruction set: {args.isa}\n"
    )
    sys.stdout.write(table(rows) + "\n")
    held = sum(claims_hold(r) for r in rows)
    sys.stdout.write(f"\nall claims held on {held} of {len(rows)} seeds (runs in {out})\n")
    return 0 if held * 3 >= 2 * len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
