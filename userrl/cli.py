"""The ``userrl`` command. Logs go to stderr, results to stdout."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from userrl.config import DeployConfig, load_config
from userrl.errors import UserRLError
from userrl.logs import configure_logging

#: where each role's worker class lives (imported lazily: a policy worker pulls in torch)
WORKER_CLASSES = {
    "env": "userrl.envs.worker:EnvWorker",
    "policy": "userrl.agents.worker:PolicyWorker",
    "user": "userrl.sim_users.worker:UserWorker",
    "reward": "userrl.learner.reward_worker:RewardWorker",
}


#: modules that add subcommands: each has ``register(subparsers, add_config_args)``
EXTRA_COMMANDS = ["userrl.cli_deploy"]


def _config(args: argparse.Namespace) -> DeployConfig:
    return load_config(getattr(args, "config", None), getattr(args, "set", None))


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="deploy YAML (default: built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set workers.env.concurrency=512")


def load_class(spec: str) -> Any:
    mod, _, name = spec.partition(":")
    if not name:
        raise UserRLError(f"--class {spec!r}: expected module:Class")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as exc:
        raise UserRLError(f"cannot load worker class {spec!r}: {exc}") from exc


# ---- commands --------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    from userrl.bus.worker import WorkerSettings
    from userrl.runtime import make_bus

    cfg = _config(args)
    configure_logging(cfg.log_level)
    spec = args.cls or WORKER_CLASSES.get(args.role or "")
    if spec is None:
        raise UserRLError(f"unknown role {args.role!r}; choose one of {sorted(WORKER_CLASSES)} or pass --class module:Class")
    cls = load_class(spec)
    role = getattr(cls, "role", args.role)
    rc = cfg.workers.get(role)
    b = cfg.bus
    settings = WorkerSettings(name=args.name or "", burst=args.burst,
                              concurrency=args.concurrency or (rc.concurrency if rc else 64),
                              reclaim_interval_s=b.reclaim_interval_ms / 1000,
                              heartbeat_interval_s=b.heartbeat_interval_ms / 1000,
                              heartbeat_ttl_s=b.heartbeat_ttl_ms / 1000)
    bus = make_bus(cfg, client_name=f"userrl:{role}:{settings.name or 'worker'}")
    worker = cls.from_config(bus, settings, cfg) if hasattr(cls, "from_config") else cls(bus, settings)
    return int(worker.run())


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when Redis answers and a fresh heartbeat of the role (or worker) exists."""
    from userrl.runtime import make_bus

    cfg = _config(args)

    async def check() -> int:
        bus = make_bus(cfg)
        try:
            with anyio.fail_after(args.timeout):
                await bus.redis.ping()
                if args.worker:
                    ok = await bus.redis.exists(bus.keys.heartbeat(args.role, args.worker)) > 0
                else:
                    ok = False
                    async for _ in bus.redis.scan_iter(match=bus.keys.heartbeat_pattern(args.role), count=100):
                        ok = True
                        break
        except Exception as exc:
            print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        finally:
            await bus.redis.aclose()
        print("healthy" if ok else f"unhealthy: no live heartbeat for role {args.role}"
              + (f" worker {args.worker}" if args.worker else ""))
        return 0 if ok else 1

    return anyio.run(check)


def cmd_dead(args: argparse.Namespace) -> int:
    from userrl.runtime import make_bus

    cfg = _config(args)

    async def run() -> int:
        bus = make_bus(cfg)
        try:
            if args.action == "ls":
                for row in await bus.dead_letters(args.count):
                    print(json.dumps(row))
            else:
                n = await bus.replay_dead(args.ids or None)
                print(f"replayed {n} dead letter(s)")
        finally:
            await bus.redis.aclose()
        return 0

    return anyio.run(run)


def cmd_config(args: argparse.Namespace) -> int:
    from userrl.config import to_dict

    cfg = _config(args)
    print(json.dumps(to_dict(cfg), indent=2))
    return 0


def cmd_redis(args: argparse.Namespace) -> int:
    """Run the embedded server in the foreground and write its URL for workers started alone."""
    import signal
    from pathlib import Path

    from userrl.bus.embedded import EmbeddedRedis
    from userrl.runtime import URL_FILE

    cfg = _config(args)
    configure_logging(cfg.log_level)
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    url_file = Path(cfg.run_dir) / URL_FILE
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    with EmbeddedRedis(port=args.port or None) as server:
        url_file.write_text(server.url)
        print(server.url, flush=True)
        try:
            signal.sigwait({signal.SIGTERM, signal.SIGINT})
        finally:
            url_file.unlink(missing_ok=True)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """The main job: tiny model -> SFT -> GRPO over the bus -> evaluation table."""
    from userrl.learner.train import format_table, run_train

    cfg = _config(args)
    configure_logging(cfg.log_level)
    report = run_train(cfg, args.config, args.set)
    print(format_table(report["eval"]))
    c = report["check"]
    print(f"SFT beats base: {c['sft_beats_base']}; GRPO train score first fifth {c['grpo_first_fifth']:.3f} "
          f"-> last fifth {c['grpo_last_fifth']:.3f} over {c['steps']} steps; {report['seconds']['total']:.0f}s")
    print(f"report: {cfg.run_dir}/report.json, plots: {cfg.run_dir}/metrics.png {cfg.run_dir}/eval.png")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a model on the gyms' test splits through the workers."""
    from userrl.learner.eval_run import format_report, run_eval

    cfg = _config(args)
    configure_logging(cfg.log_level)
    report = run_eval(cfg, args.config, args.set, model=args.model, gyms=args.gyms or cfg.gyms, n_tasks=args.tasks,
                      k=args.k, temperature=args.temperature, max_turns=args.max_turns, api_model=args.api_model,
                      out_dir=args.out, attach=args.attach, timeout_s=args.timeout)
    print(format_report(report, args.k))
    print(f"report: {args.out or cfg.run_dir + '/eval'}/report.json and report.png")
    return 0


def cmd_rescore(args: argparse.Namespace) -> int:
    """Recompute scores/advantages of archived groups with the config's reward settings."""
    from userrl.learner.rescore import rescore_archive

    cfg = _config(args)
    src = args.archive or f"{cfg.run_dir}/learner/groups.msgpack"
    dst = args.out or src.replace(".msgpack", f".{cfg.reward.credit}-{cfg.reward.score}.msgpack")
    stats = rescore_archive(src, dst, cfg.reward)
    print(json.dumps({"archive": src, "out": dst, "credit": cfg.reward.credit, "score": cfg.reward.score,
                      "use_std": cfg.reward.use_std, **stats}))
    return 0


def cmd_dispatch(args: argparse.Namespace) -> int:
    """Start episodes on a running deploy (``userrl up``) and optionally wait for them."""
    from userrl.envs.datasets import load_tasks
    from userrl.rollouts import make_resets, send_resets, wait_trajectories
    from userrl.runtime import make_bus

    cfg = _config(args)
    configure_logging(cfg.log_level)
    resets = []
    for gym in args.gyms or cfg.gyms:
        resets += make_resets(gym, load_tasks(gym, args.split)[:args.tasks], group_size=args.group_size,
                              seed=cfg.seed, max_turns=args.max_turns, prefix=args.prefix,
                              sampling={"temperature": cfg.policy.temperature,
                                        "max_new_tokens": cfg.policy.max_new_tokens},
                              meta={"split": args.split})  # make_resets adds group_size

    async def run() -> int:
        bus = make_bus(cfg)
        try:
            await send_resets(bus, resets)
            print(f"dispatched {len(resets)} episodes: {resets[0].episode_id} ... {resets[-1].episode_id}")
            if args.wait:
                got = await wait_trajectories(bus, [r.episode_id for r in resets], timeout=args.timeout,
                                              resets=resets, stall_s=cfg.bus.stall_timeout_ms / 1000)
                done = [t[0] for t in got.values()]
                ok = [t for t in done if t.status == "ok"]
                mean = sum(float(t.meta.get("score", 0.0)) for t in ok) / max(len(ok), 1)
                print(f"finished {len(done)} ({len(ok)} ok), mean score {mean:.3f}")
        finally:
            await bus.redis.aclose()
        return 0

    return anyio.run(run)


def cmd_learn(args: argparse.Namespace) -> int:
    """The GRPO learner process against a running deploy (its workers serve the rollouts)."""
    from pathlib import Path

    from userrl.agents.worker import resolve_model_path
    from userrl.learner.metrics import MetricsLog, plot_metrics
    from userrl.learner.train import run_grpo

    cfg = _config(args)
    configure_logging(cfg.log_level)
    run_dir = Path(cfg.run_dir)
    learner, _rows = run_grpo(cfg, resolve_model_path(cfg), run_dir, tag="learn")  # checkpoints at the end
    final = learner.save_model(run_dir / "final-model")
    plot_metrics(MetricsLog(run_dir / "metrics.jsonl").read(), run_dir / "metrics.png")
    print(f"trained to version {learner.version}; model: {final}; metrics: {run_dir}/metrics.jsonl")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from userrl.envs.importer import import_userrl

    counts = import_userrl(args.src, args.out)
    for gym, splits in counts.items():
        print(f"{gym}: " + ", ".join(f"{k} {v}" for k, v in splits.items()))
    print(f"written under {args.out}; use them with load_tasks(env_id, split, path={args.out!r})")
    return 0


# ---- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="userrl", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run one worker process of a role")
    w.add_argument("role", nargs="?", help=f"one of {sorted(WORKER_CLASSES)}")
    w.add_argument("--class", dest="cls", help="custom worker class module:Class")
    w.add_argument("--name", help="stable consumer name (default: role-host-pid)")
    w.add_argument("--burst", action="store_true", help="exit when the input stream is drained")
    w.add_argument("--concurrency", type=int, default=0)
    _add_config_args(w)
    w.set_defaults(func=cmd_worker)

    c = sub.add_parser("check", help="health check of a role (exit 0 healthy, 1 no heartbeat, 2 no Redis)")
    c.add_argument("role")
    c.add_argument("--worker", help="check this worker's heartbeat only")
    c.add_argument("--timeout", type=float, default=5.0)
    _add_config_args(c)
    c.set_defaults(func=cmd_check)

    d = sub.add_parser("dead", help="list or replay dead letters")
    d.add_argument("action", choices=["ls", "replay"])
    d.add_argument("ids", nargs="*", help="dead-letter entry ids to replay (default: all)")
    d.add_argument("--count", type=int, default=100)
    _add_config_args(d)
    d.set_defaults(func=cmd_dead)

    cf = sub.add_parser("config", help="validate a deploy config and print it resolved")
    _add_config_args(cf)
    cf.set_defaults(func=cmd_config)

    r = sub.add_parser("redis", help="run the embedded Redis in the foreground for this run_dir")
    r.add_argument("--port", type=int, default=0)
    _add_config_args(r)
    r.set_defaults(func=cmd_redis)

    t = sub.add_parser("train", help="the main job: SFT cold start, GRPO over the bus, evaluation")
    _add_config_args(t)
    t.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a model on the test splits through the workers")
    ev.add_argument("--model", required=True,
                    help="a local model folder (hf), an OpenAI-compatible base URL (http...), or 'scripted'")
    ev.add_argument("--api-model", default="", help="model name at the endpoint, for an http(s) --model")
    ev.add_argument("--gyms", nargs="+", help="env ids (default: the config's gyms)")
    ev.add_argument("--tasks", type=int, default=10_000, help="test tasks per gym (default: all)")
    ev.add_argument("--k", type=int, default=1, help="samples per task: reports pass@1 and pass@k")
    ev.add_argument("--temperature", type=float, default=0.0)
    ev.add_argument("--max-turns", type=int, default=0,
                    help="turn cap (default 0: each gym's own; the paper's evaluation used 16)")
    ev.add_argument("--out", help="report folder (default: RUN_DIR/eval)")
    ev.add_argument("--attach", action="store_true", help="use the deploy's running workers instead of starting them")
    ev.add_argument("--timeout", type=float, default=3600.0)
    _add_config_args(ev)
    ev.set_defaults(func=cmd_eval)

    dp = sub.add_parser("dispatch", help="start episodes on a running deploy")
    dp.add_argument("--gyms", nargs="+", help="env ids (default: the config's gyms)")
    dp.add_argument("--split", default="train", choices=["train", "test"])
    dp.add_argument("--tasks", type=int, default=4, help="tasks per gym")
    dp.add_argument("--group-size", type=int, default=1)
    dp.add_argument("--max-turns", type=int, default=0, help="0 = each gym's own cap")
    dp.add_argument("--prefix", default="run:", help="episode id prefix")
    dp.add_argument("--wait", action="store_true", help="wait for every episode to finish")
    dp.add_argument("--timeout", type=float, default=600.0)
    _add_config_args(dp)
    dp.set_defaults(func=cmd_dispatch)

    le = sub.add_parser("learn", help="the GRPO learner process against a running deploy")
    _add_config_args(le)
    le.set_defaults(func=cmd_learn)

    rs = sub.add_parser("rescore", help="re-score archived episodes with other reward settings (--set reward.*)")
    rs.add_argument("archive", nargs="?", help="groups archive (default: RUN_DIR/learner/groups.msgpack)")
    rs.add_argument("--out", help="where to write the rescored archive")
    _add_config_args(rs)
    rs.set_defaults(func=cmd_rescore)

    da = sub.add_parser("data", help="datasets")
    dsub = da.add_subparsers(dest="data_command", required=True)
    imp = dsub.add_parser("import-userrl", help="convert the UserRL gym data files into our format")
    imp.add_argument("src", help="folder laid out like the UserRL data (FunctionGym/functions.json, ...)")
    imp.add_argument("--out", default="data/userrl", help="output folder (one subfolder per gym)")
    imp.set_defaults(func=cmd_data)

    for module in EXTRA_COMMANDS:
        importlib.import_module(module).register(sub, _add_config_args)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserRLError as exc:
        print(f"userrl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
