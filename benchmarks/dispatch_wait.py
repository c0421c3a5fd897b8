"""`userrl dispatch --wait` of 9,600 episodes, ten times in a row: every run must exit 0 as soon as
its last episode finishes (issue 26: it used to hang past 1,000 finished episodes that the reward
workers trimmed before the waiter's group existed).

Starts a deploy the way ``userrl up`` does (the launcher: a private Redis, 2 replicas per role,
scripted policy and users from ``deploy/ci.yaml``), then:

1. sends 9,600 resets to a stream no worker reads, one awaited XADD each (the old way) and in
   pipelined batches (the new way), side by side, and prints both times and the ratio;
2. runs ``userrl dispatch --wait`` (Telepathy and Function, 40 tasks each, groups of 120) ``--runs``
   times, each with its own ``--prefix``, and prints per run: the exit code, the wall time, the
   episodes finished, and the seconds from the last episode's finish (its time in the finished
   index) to the command's result line and to its exit (the interpreter's teardown between).

    python benchmarks/dispatch_wait.py             # 10 runs of 9,600
    python benchmarks/dispatch_wait.py --runs 2 --tasks 10 --group-size 20   # quick
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from userrl.bus.client import make_client
from userrl.bus.keys import Keys
from userrl.bus.transport import Bus
from userrl.config import load_config
from userrl.deploy.launcher import Launcher
from userrl.envs.datasets import load_tasks
from userrl.logs import configure_logging
from userrl.rollouts import make_resets, send_resets

REPO = Path(__file__).resolve().parents[1]
CI = REPO / "deploy" / "ci.yaml"
GYMS = ("userrl/Telepathy-v0", "userrl/Function-v0")


def resets(args: argparse.Namespace, prefix: str) -> list:
    out = []
    for g in GYMS:
        out += make_resets(g, load_tasks(g, "train")[: args.tasks], group_size=args.group_size, prefix=prefix)
    return out


async def send_speed(url: str, args: argparse.Namespace) -> tuple[float, float, int]:
    """Seconds to send the resets one awaited XADD at a time, and in pipelined batches."""
    bus = Bus(make_client(url), Keys(f"sendbench{os.getpid()}"))
    rs = resets(args, "s:")
    stream = bus.keys.stream("env")
    try:
        t0 = time.perf_counter()
        for r in rs:
            await bus.send(stream, r, {"episode": r.episode_id, "env": r.env_id})
        one = time.perf_counter() - t0
        await bus.redis.delete(stream)
        t0 = time.perf_counter()
        await send_resets(bus, rs)
        batched = time.perf_counter() - t0
        await bus.redis.delete(stream)
    finally:
        await bus.redis.aclose()
    return one, batched, len(rs)


async def last_finish(url: str, run: str, ids: list[str]) -> tuple[int, float]:
    """How many of ``ids`` are in the finished index, and the latest finish time among them."""
    bus = Bus(make_client(url), Keys(run))
    try:
        scores = []
        for i in range(0, len(ids), 1000):
            scores += await bus.redis.zmscore(bus.keys.finished, ids[i : i + 1000])
    finally:
        await bus.redis.aclose()
    found = [s for s in scores if s is not None]
    return len(found), max(found, default=0.0)


def main(args: argparse.Namespace) -> int:
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="userrl-dispatch-wait-")
    ov = [f"run_dir={run_dir}", "run=dw", "log_level=warning"] + [
        f"workers.{r}.replicas={args.replicas}" for r in ("env", "policy", "user", "reward")
    ]
    cfg = load_config(CI, ov)
    launcher = Launcher(cfg, config_path=str(CI), overrides=ov).start()
    launcher.start_background()
    env = {**os.environ, "USERRL_REDIS_URL": launcher.url}
    rows = []
    try:
        one, batched, n = anyio.run(send_speed, launcher.url, args)
        print(f"sending {n} resets: one awaited XADD each {one:.2f} s, pipelined batches {batched:.2f} s")
        print(f"| send | seconds | ratio |\n|---|---|---|\n| one XADD each | {one:.2f} | 1.0 |")
        print(f"| batches of 500 | {batched:.2f} | {one / max(batched, 1e-9):.1f}x faster |\n")
        time.sleep(args.settle_s)  # the workers' groups exist before the first run
        for i in range(args.runs):
            prefix = f"w{os.getpid()}-{i}:"
            ids = [r.episode_id for r in resets(args, prefix)]
            cmd = [sys.executable, "-m", "userrl", "dispatch", "-c", str(CI), *sum((["--set", o] for o in ov), [])]
            cmd += ["--gyms", *GYMS, "--tasks", str(args.tasks), "--group-size", str(args.group_size)]
            cmd += ["--prefix", prefix, "--wait", "--timeout", str(args.timeout)]
            t0 = time.time()
            errf = tempfile.TemporaryFile("w+")  # a file, not a pipe: stdout is read to its end first
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=errf, text=True)
            lines, printed = [], 0.0
            assert proc.stdout is not None
            for line in proc.stdout:  # the result line's arrival: the wait is over
                lines.append(line.strip())
                if line.startswith("finished "):
                    printed = time.time()
            rc = proc.wait(timeout=args.timeout + 120)
            t1 = time.time()
            errf.seek(0)
            err = errf.read()
            errf.close()
            found, last = anyio.run(last_finish, launcher.url, "dw", ids)
            row = {
                "run": i + 1,
                "rc": rc,
                "s": round(t1 - t0, 1),
                "finished": found,
                "printed_after_last_s": round(printed - last, 2) if last and printed else None,
                "exit_after_last_s": round(t1 - last, 2) if last else None,
                "stdout": lines[-1:],
            }
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            if rc != 0:
                print(err[-2000:], file=sys.stderr)
    finally:
        launcher.stop()
    print(
        "\n| run | exit | seconds | episodes finished | last finish -> result printed (s) | last finish -> exit (s) |"
        "\n|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['run']} | {r['rc']} | {r['s']} | {r['finished']} / {len(ids)} | {r['printed_after_last_s']} "
            f"| {r['exit_after_last_s']} |"
        )
    ok = sum(r["rc"] == 0 and r["finished"] == len(ids) for r in rows)
    print(f"\n{ok} of {len(rows)} runs exited 0 with all {len(ids)} episodes finished")
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--tasks", type=int, default=40, help="tasks per gym (Telepathy and Function)")
    p.add_argument("--group-size", type=int, default=120)
    p.add_argument("--replicas", type=int, default=2, help="worker processes per role")
    p.add_argument("--timeout", type=float, default=600.0, help="dispatch --timeout")
    p.add_argument("--settle-s", type=float, default=5.0)
    p.add_argument("--run-dir", default="")
    a = p.parse_args()
    configure_logging("warning")
    sys.exit(main(a))
