"""``userrl users``: the simulated-user role of a run.

::

    userrl users eval --model M SPEC SPEC [...]   the test tasks under each simulator, side by side
    userrl users swap SPEC [--timeout S]          point the running user workers at another simulator
    userrl users swap --reset                     back to the deploy config's own
    userrl users show                             the target, and what each user worker answers with

A SPEC is ``scripted``, ``hf:PATH``, ``openai:MODEL@BASE_URL`` or ``user`` fields as
``key=value`` pairs, optionally ``LABEL=SPEC`` (:mod:`userrl.sim_users.simulators`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import anyio

from userrl.config import load_config
from userrl.console import enable_progress, print_json
from userrl.learner.evaluation.cross_sim import format_side_by_side, run_cross_sim
from userrl.logs import configure_logging
from userrl.runtime import make_bus
from userrl.sim_users.simulators import (
    clear_target,
    parse_simulator,
    read_target,
    targets_of,
    user_workers,
    wait_applied,
    write_target,
)


def cmd_users_eval(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    sims = targets_of(args.simulators)
    configure_logging(cfg.log_level, log_file=f"{cfg.run_dir}/logs/eval-users.log")
    enable_progress(headers=False)
    report = run_cross_sim(
        cfg,
        args.config,
        args.set,
        model=args.model,
        simulators=sims,
        gyms=args.gyms or cfg.gyms,
        n_tasks=args.tasks,
        k=args.k,
        temperature=args.temperature,
        max_turns=args.max_turns,
        api_model=args.api_model,
        out_dir=args.out,
        timeout_s=args.timeout,
        attach=args.attach,
    )
    print(format_side_by_side(report))
    print(f"report: {args.out or cfg.run_dir + '/eval-users'}/report.json and report.png")
    return 0


def cmd_users_swap(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    if bool(args.spec) == bool(args.reset):
        print("userrl: error: name one SPEC, or --reset", file=sys.stderr)
        return 2

    async def go() -> list[dict[str, Any]]:
        bus = make_bus(cfg)
        try:
            if args.reset:
                await clear_target(bus)
                target_id = ""
            else:
                target_id = (await write_target(bus, cfg, parse_simulator(args.spec)[1])).id
            return await wait_applied(bus, target_id, args.timeout) if args.timeout > 0 else []
        finally:
            await bus.close()

    workers = anyio.run(go)
    for hb in workers:
        print(f"{hb.get('worker')}: {hb.get('by')}")
    if not workers:
        print("target written; not waiting for the user workers (--timeout 0)")
    return 0


def cmd_users_show(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)

    async def go() -> dict[str, Any]:
        bus = make_bus(cfg)
        try:
            target = await read_target(bus)
            workers = await user_workers(bus)
        finally:
            await bus.close()
        return {
            "target": {"id": target.id, "fields": target.fields} if target else None,
            "workers": [
                {k: hb.get(k) for k in ("worker", "by", "target", "target_error", "seat", "replies", "human")}
                for hb in workers
            ],
        }

    out = anyio.run(go)
    if args.json:
        print_json(out)
        return 0
    t = out["target"]
    print(f"target: {t['id']} {t['fields']}" if t else "target: none (each worker's config)")
    for w in out["workers"]:
        err = f"  (could not switch: {w['target_error']})" if w.get("target_error") else ""
        print(f"{w['worker']}: {w['by']}{'  seat on' if w.get('seat') else ''}{err}")
    if not out["workers"]:
        print("no user worker is alive")
    return 0


def register(sub: Any, add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    u = sub.add_parser("users", help="the simulated users: cross-simulator evaluation, swaps")
    usub = u.add_subparsers(dest="users_command", required=True)

    ev = usub.add_parser("eval", help="evaluate a model on the same test tasks under two or more simulators")
    ev.add_argument("simulators", nargs="+", metavar="SPEC", help="scripted, hf:PATH, openai:MODEL@URL, LABEL=SPEC")
    ev.add_argument("--model", required=True, help="the policy: a local model folder, a base URL, or 'scripted'")
    ev.add_argument("--api-model", default="", help="model name at the endpoint, for an http(s) --model")
    ev.add_argument("--gyms", nargs="+", help="env ids (default: the config's gyms)")
    ev.add_argument("--tasks", type=int, default=10_000, help="test tasks per gym (default: all)")
    ev.add_argument("--k", type=int, default=1, help="samples per task")
    ev.add_argument("--temperature", type=float, default=0.0)
    ev.add_argument("--max-turns", type=int, default=0, help="turn cap (default 0: each gym's own)")
    ev.add_argument("--out", help="report folder (default: RUN_DIR/eval-users)")
    ev.add_argument("--attach", action="store_true", help="use the deploy's running workers")
    ev.add_argument("--timeout", type=float, default=3600.0, help="seconds per simulator's evaluation")
    add_config_args(ev)
    ev.set_defaults(func=cmd_users_eval)

    sw = usub.add_parser("swap", help="point the running user workers at another simulator, without a restart")
    sw.add_argument("spec", nargs="?", help="scripted, hf:PATH, openai:MODEL@URL or key=value user fields")
    sw.add_argument("--reset", action="store_true", help="back to each worker's deploy config")
    sw.add_argument("--timeout", type=float, default=60.0, help="wait this long for every worker (0: do not wait)")
    add_config_args(sw)
    sw.set_defaults(func=cmd_users_swap)

    sh = usub.add_parser("show", help="the run's user target and what each user worker answers with")
    sh.add_argument("--json", action="store_true")
    add_config_args(sh)
    sh.set_defaults(func=cmd_users_show)
