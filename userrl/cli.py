"""The ``userrl`` command. Logs go to stderr, results to stdout."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from userrl import cli_deploy, cli_ui, cli_user_sft, cli_users, logs, serve
from userrl.agents.worker import PolicyWorker, resolve_model_path
from userrl.bus.client import RedisConnectionError
from userrl.bus.embedded import EmbeddedRedis
from userrl.bus.worker import Worker
from userrl.cli_user_sft import user_model_stage
from userrl.config import DeployConfig, gym_options_for, load_config, to_dict
from userrl.console import check_redis, enable_progress, print_json, quiet_broken_pipe
from userrl.deploy.watch import all_failed_message, wait_watching
from userrl.envs.check import run_cli
from userrl.envs.datasets import check_data, data_tasks, select_gyms
from userrl.envs.worker import EnvWorker
from userrl.errors import UserRLError
from userrl.learner.evaluation.over_bus import format_report, run_eval
from userrl.learner.main_job import (
    format_claims,
    format_offpolicy,
    format_table,
    offpolicy_summary,
    run_grpo,
    run_train,
)
from userrl.learner.metrics import MetricsLog, plot_metrics
from userrl.learner.rescore import rescore_archive
from userrl.learner.reward.worker import RewardWorker
from userrl.lifecycle import exit_code, job_failure, job_signals, watch_parent
from userrl.logs import configure_logging
from userrl.rollouts import already_dispatched, dispatch_and_wait, dispatch_resets, make_resets
from userrl.runtime import cpu_thread_defaults, make_bus, make_worker, worker_settings, write_url_file
from userrl.sim_users.worker import UserWorker

#: each role's worker class (``--class module:Class`` names any other)
WORKER_CLASSES: dict[str, type[Worker]] = {
    "env": EnvWorker,
    "policy": PolicyWorker,
    "user": UserWorker,
    "reward": RewardWorker,
}


#: modules that add subcommands: each has ``register(subparsers, add_config_args)``
EXTRA_COMMANDS = [
    cli_deploy,  # up, down, status, logs, episodes, ...: the deploy
    cli_ui,  # userrl ui: the live web view (it loads starlette only when it serves)
    serve,  # userrl serve: a model behind vLLM's OpenAI-compatible API
    cli_users,  # userrl users eval|swap|show: the simulated-user role
    cli_user_sft,  # userrl sft-user: the user model (a tiny LLM user)
]


def _config(args: argparse.Namespace) -> DeployConfig:
    return load_config(getattr(args, "config", None), getattr(args, "set", None))


def _played(cfg: DeployConfig, gyms: list[str]) -> list[str]:
    """``gyms`` without those whose tasks in the config's data are judged on the final pick
    only (unless include_final_pick_only), each left out with a line saying why."""
    kept, left = select_gyms(gyms, cfg.data, cfg.include_final_pick_only)
    for gym, why in left.items():
        print(f"userrl: {gym} left out: {why} (include_final_pick_only: true keeps it)", file=sys.stderr)
    return kept


def _train_gyms(args: argparse.Namespace, cfg: DeployConfig) -> DeployConfig:
    """The config with ``train.gyms`` as :func:`_played` leaves it, as an override every
    process of the job reads."""
    kept = _played(cfg, cfg.train.gyms)
    if kept == cfg.train.gyms:
        return cfg
    args.set.append(f"train.gyms={json.dumps(kept)}")
    return _config(args)


def _preflight(cfg: DeployConfig) -> None:
    """A redis:// URL that does not answer fails the command at start, in one line (an
    embedded server is started by the command itself)."""
    if cfg.redis != "embedded":
        check_redis(cfg.redis, cluster=cfg.redis_cluster)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="deploy YAML (default: built-in defaults)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set workers.env.concurrency=512",
    )
    p.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default="auto",
        help="stderr log format (auto: console on a terminal, JSON lines otherwise)",
    )


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
    cfg = _config(args)
    configure_logging(cfg.log_level)
    watch_parent()  # started by a launcher: do not outlive it
    cls = load_class(args.cls) if args.cls else WORKER_CLASSES.get(args.role or "")
    if cls is None:
        raise UserRLError(
            f"unknown role {args.role!r}; choose one of {sorted(WORKER_CLASSES)} or pass --class module:Class"
        )
    role = getattr(cls, "role", args.role)
    settings = worker_settings(cfg, role, name=args.name or "", burst=args.burst, concurrency=args.concurrency or 0)
    return int(make_worker(cfg, cls, settings, role).run())


def cmd_test_gym(args: argparse.Namespace) -> int:
    """``userrl test-gym ID|all``: a gym's offline checks on the config's task data (env checks,
    experts at the maximum, the exploit suite); exit 1 on a failure."""
    data = getattr(_config(args), "data", None) or None  # the deploy's task data, if set
    return run_cli(args.gym, split=args.split, data_path=data, sample=args.sample, max_turns=args.max_turns)


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when Redis answers and a fresh heartbeat of the role (or worker) exists; with
    ``--data``, the config's task data (``data``) must also load for every gym (else exit 2)."""
    if args.role == "env" and args.gym:  # the old spelling of `test-gym ID`, kept for one release
        print(f"userrl: `check env {args.gym}` is deprecated; use `userrl test-gym {args.gym}`", file=sys.stderr)
        return cmd_test_gym(args)
    if args.gym:
        raise UserRLError(f"check {args.role}: unexpected argument {args.gym!r} (to test a gym: userrl test-gym ID)")
    cfg = _config(args)
    if args.data:  # opt-in: liveness probes of env pods run this command without the data
        counts = check_data(cfg.data, cfg.gyms)  # a DataError names the path; main exits 2
        print(
            f"data {cfg.data or '(bundled)'}: "
            + "; ".join(f"{g} " + ", ".join(f"{s} {n}" for s, n in c.items()) for g, c in counts.items())
        )

    async def check() -> int:
        bus = make_bus(cfg)
        try:
            with anyio.fail_after(args.timeout):
                await bus.ping()
                if args.worker:
                    ok = await bus.control.is_alive(args.role, args.worker)
                else:
                    ok = await bus.control.any_alive(args.role)
        except Exception as exc:
            print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        finally:
            await bus.close()
        print(
            "healthy"
            if ok
            else f"unhealthy: no live heartbeat for role {args.role}"
            + (f" worker {args.worker}" if args.worker else "")
        )
        return 0 if ok else 1

    return anyio.run(check)


def cmd_dead(args: argparse.Namespace) -> int:
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
            await bus.close()
        return 0

    return anyio.run(run)


def cmd_config(args: argparse.Namespace) -> int:
    cfg = _config(args)
    print_json(to_dict(cfg), indent=2)
    return 0


def cmd_redis(args: argparse.Namespace) -> int:
    """Run the embedded server in the foreground and write its URL for workers started alone."""
    import signal
    from pathlib import Path

    cfg = _config(args)
    configure_logging(cfg.log_level)
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    with EmbeddedRedis(port=args.port or None) as server:
        url_file = write_url_file(cfg.run_dir, server.url)
        # the password stays in the 0600 file: terminals and CI logs are read by others
        print(f"{server.safe_url} (with its password in {url_file})", flush=True)
        try:
            signal.sigwait({signal.SIGTERM, signal.SIGINT})
        finally:
            url_file.unlink(missing_ok=True)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """The main job: tiny model -> SFT -> GRPO over the bus -> evaluation table."""
    _accelerate_overrides(args)
    cfg = _config(args)
    cfg = _train_gyms(args, cfg)
    _preflight(cfg)
    # info logs go to the run's log file: stderr keeps the progress bars and warnings only
    configure_logging(cfg.log_level, log_file=f"{cfg.run_dir}/logs/train.log")
    enable_progress()
    _check_model_dir(cfg.policy.model, "policy.model")
    with user_model_stage(cfg):  # user.sft.serve: the user model, built if missing and served for the job
        report = run_train(cfg, args.config, args.set)
    print(format_table(report["eval"]))
    print(format_claims(report))
    print(f"report: {cfg.run_dir}/report.json, plots: {cfg.run_dir}/metrics.png {cfg.run_dir}/eval.png")
    return 0


def _check_model_dir(model: str, field: str) -> None:
    """A local model path that is no model folder fails here in one line, not as a traceback
    from transformers in the middle of a job (hub names look like ``org/name``)."""
    from pathlib import Path

    if (model.startswith(("/", ".", "~")) or model.count("/") >= 2) and not (
        Path(model).expanduser() / "config.json"
    ).is_file():
        raise UserRLError(f"{field}: {model!r} is not a model folder (no config.json in it)")


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a model on the gyms' test splits through the workers."""
    cfg = _config(args)
    if not args.attach:
        _preflight(cfg)
    configure_logging(cfg.log_level, log_file=f"{cfg.run_dir}/logs/eval.log")  # stderr: bar + warnings
    enable_progress(headers=False)
    report = run_eval(
        cfg,
        args.config,
        args.set,
        model=args.model,
        gyms=_played(cfg, args.gyms or cfg.gyms),
        n_tasks=args.tasks,
        k=args.k,
        temperature=args.temperature,
        max_turns=args.max_turns,
        api_model=args.api_model,
        out_dir=args.out,
        attach=args.attach,
        timeout_s=args.timeout,
    )
    print(format_report(report, args.k))
    print(f"report: {args.out or cfg.run_dir + '/eval'}/report.json and report.png")
    if report.get("all_failed"):
        print(f"userrl: error: {report['all_failed']}", file=sys.stderr)
        return 1
    return 0


def cmd_rescore(args: argparse.Namespace) -> int:
    """Recompute scores/advantages of archived groups with the config's reward settings."""
    cfg = _config(args)
    src = args.archive or f"{cfg.run_dir}/learner/groups.msgpack"
    dst = args.out or src.replace(".msgpack", f".{cfg.reward.credit}-{cfg.reward.score}.msgpack")
    stats = rescore_archive(src, dst, cfg.reward)
    print(
        json.dumps(
            {
                "archive": src,
                "out": dst,
                "credit": cfg.reward.credit,
                "score": cfg.reward.score,
                "use_std": cfg.reward.use_std,
                **stats,
            }
        )
    )
    return 0


def cmd_dispatch(args: argparse.Namespace) -> int:
    """Start episodes on a running deploy (``userrl up``) and optionally wait for them: tasks from
    the config's ``data``; the test split plays with ``eval_gym_options``, train with ``gym_options``."""
    cfg = _config(args)
    _preflight(cfg)
    configure_logging(cfg.log_level)
    enable_progress(headers=False)
    resets = []
    for gym in args.gyms or cfg.gyms:
        resets += make_resets(
            gym,
            data_tasks(gym, args.split, cfg.data)[: args.tasks],
            group_size=args.group_size,
            seed=cfg.seed,
            max_turns=args.max_turns,
            prefix=args.prefix,
            sampling={"temperature": cfg.policy.temperature, "max_new_tokens": cfg.policy.max_new_tokens},
            meta={"split": args.split},  # make_resets adds group_size
            options=gym_options_for(cfg, gym, evaluation=args.split == "test"),
        )
    if not resets:
        raise UserRLError("nothing to dispatch: no tasks in the chosen gyms and split")

    def announce() -> None:
        print(f"dispatched {len(resets)} episodes: {resets[0].episode_id} ... {resets[-1].episode_id}", flush=True)

    async def run() -> int:
        bus = make_bus(cfg)
        try:
            if dup := await already_dispatched(bus, resets):
                raise UserRLError(
                    f"{len(dup)} of the {len(resets)} episode ids run now or ran in the last "
                    f"{bus.settings.idempotency_window_ms // 60_000} min (e.g. {dup[0]}); the env workers would "
                    "ignore their resets: choose another --prefix"
                )
            if not args.wait:
                if rounds := await dispatch_resets(bus, resets):
                    print(f"the server lost its data during the send: sent all {len(resets)} again ({rounds}x)")
                announce()
                return 0
            got = await wait_watching(
                bus,
                lambda: dispatch_and_wait(  # a deploy that gives up ends the wait
                    bus, resets, timeout=args.timeout, stall_s=cfg.bus.stall_timeout_ms / 1000, on_sent=announce
                ),
            )
            done = [t[0] for t in got.values()]
            ok = [t for t in done if t.status == "ok"]
            mean = sum(float(t.meta.get("score", 0.0)) for t in ok) / max(len(ok), 1)
            reconciled = sum("reconciled" in t.meta for t in done)
            print(
                f"finished {len(done)} ({len(ok)} ok), mean episode score {mean:.3f}"
                + (f"; {reconciled} reported failed by the reconciler" if reconciled else "")
            )
            if (verdict := all_failed_message(done)) is not None:
                print(f"userrl: error: {verdict}", file=sys.stderr)
                return 1
        finally:
            await bus.close()
        return 0

    return anyio.run(run)


def _add_accelerate_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--accelerate-config",
        default="",
        metavar="FILE",
        help="run the learner under `accelerate launch --config_file FILE` (DDP, FSDP2); "
        "same as --set train.accelerate_config=FILE",
    )


def _accelerate_overrides(args: argparse.Namespace) -> None:
    if getattr(args, "accelerate_config", ""):
        args.set.append(f"train.accelerate_config={args.accelerate_config}")


def cmd_learn(args: argparse.Namespace) -> int:
    """The GRPO learner process against a running deploy (its workers serve the rollouts)."""
    import subprocess
    from pathlib import Path

    _accelerate_overrides(args)
    cfg = _config(args)
    cfg = _train_gyms(args, cfg)
    _preflight(cfg)
    configure_logging(cfg.log_level)
    enable_progress(headers=False)  # the GRPO bar, on a terminal
    if cfg.train.accelerate_config and not os.environ.get("USERRL_UNDER_ACCELERATE"):
        from userrl.learner.distributed import accelerate_command, relaunch_env

        argv = [
            "learn",
            *(["--config", args.config] if args.config else []),
            *[x for ov in args.set for x in ("--set", ov)],
        ]
        return subprocess.run(
            accelerate_command(cfg.train.accelerate_config, argv), env=relaunch_env(), check=False
        ).returncode
    run_dir = Path(cfg.run_dir)
    learner, rows = run_grpo(
        cfg,
        resolve_model_path(cfg),
        run_dir,
        tag="learn",  # checkpoints at the end
        final_dir=run_dir / "final-model",
    )
    if not learner.is_main:
        return 0
    final = run_dir / "final-model"
    plot_metrics(MetricsLog(run_dir / "metrics.jsonl").read(), run_dir / "metrics.png")
    print(format_offpolicy(offpolicy_summary(rows)))
    print(f"trained to version {learner.version}; model: {final}; metrics: {run_dir}/metrics.jsonl")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    # lazily: the importer is a build-time tool, kept out of every run-time process
    from userrl.envs.data_tools.importer.pipeline import import_notes, import_userrl

    counts = import_userrl(args.src, args.out)
    notes = import_notes(args.out, counts)
    for gym, splits in counts.items():
        print(
            f"{gym}: " + ", ".join(f"{k} {v}" for k, v in splits.items()) + (f" ({notes[gym]})" if gym in notes else "")
        )
    print(f"written under {args.out}; use them with --set data={args.out} (or data: {args.out} in a deploy config)")
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
    # `check env ID` was `test-gym ID` until this release: still accepted, with a deprecation line
    c.add_argument("gym", nargs="?", help=argparse.SUPPRESS)
    _add_test_gym_args(c, hidden=True)
    c.add_argument("--timeout", type=float, default=5.0)
    c.add_argument(
        "--data",
        action="store_true",
        help="also load the config's task data (data:) of every gym in gyms: (exit 2 if it fails)",
    )
    _add_config_args(c)
    c.set_defaults(func=cmd_check)

    tg = sub.add_parser(
        "test-gym",
        help="test a gym offline on the config's task data: env checks, experts at the maximum "
        "and the exploit suite (exit 1 on failure)",
    )
    tg.add_argument("gym", help="a gym id, or 'all'")
    _add_test_gym_args(tg)
    _add_config_args(tg)
    tg.set_defaults(func=cmd_test_gym)

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
    _add_accelerate_arg(t)
    t.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a model on the test splits through the workers")
    ev.add_argument(
        "--model",
        required=True,
        help="a local model folder (hf), an OpenAI-compatible base URL (http...), or 'scripted'",
    )
    ev.add_argument("--api-model", default="", help="model name at the endpoint, for an http(s) --model")
    ev.add_argument("--gyms", nargs="+", help="env ids (default: the config's gyms)")
    ev.add_argument("--tasks", type=int, default=10_000, help="test tasks per gym (default: all)")
    ev.add_argument("--k", type=int, default=1, help="samples per task: reports pass@1 and pass@k")
    ev.add_argument("--temperature", type=float, default=0.0)
    ev.add_argument(
        "--max-turns", type=int, default=0, help="turn cap (default 0: each gym's own; the paper's evaluation used 16)"
    )
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
    _add_accelerate_arg(le)
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
        module.register(sub, _add_config_args)
    return p


def _add_test_gym_args(p: argparse.ArgumentParser, hidden: bool = False) -> None:
    def h(text: str) -> str:
        return argparse.SUPPRESS if hidden else text

    p.add_argument("--split", default="test", help=h("the split to play (default test)"))
    p.add_argument("--sample", type=int, default=None, help=h("play at most this many tasks (a stable sample)"))
    p.add_argument("--max-turns", type=int, default=None, help=h("turn cap (default: 16, the paper's)"))


def main(argv: Sequence[str] | None = None) -> int:
    cpu_thread_defaults()  # before anything imports torch; the workers started here inherit it
    args = build_parser().parse_args(argv)
    logs.log_format = getattr(args, "log_format", "auto")
    with job_signals() as got:  # SIGTERM unwinds like Ctrl-C: workers, Redis and redis.url go
        try:
            rc = int(args.func(args) or 0)
            sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
            return rc
        except BaseException as exc:
            rc = _exit_code_for(exc, got)
            if rc is None:
                raise
            return rc


def _exit_code_for(exc: BaseException, signals: list[int]) -> int | None:
    """One line on stderr and the exit code for what ended a command (None: a bug, re-raise)."""

    if (why := job_failure()) is not None:  # a job launcher gave up and interrupted us
        print(f"userrl: error: {why}", file=sys.stderr)
        return 1
    if isinstance(exc, UserRLError):
        print(f"userrl: error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, BrokenPipeError):  # `userrl ... --json | head`: the reader left, nothing is wrong
        return quiet_broken_pipe()
    if isinstance(exc, TimeoutError):  # e.g. dispatch --wait past --timeout: a line, not a traceback
        print(f"userrl: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if isinstance(exc, RedisConnectionError):  # down, refused TLS, wrong password; the URL stays out
        print(f"userrl: error: cannot reach Redis: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, KeyboardInterrupt):
        print(f"userrl: stopped by {signal.Signals(exit_code(signals) - 128).name}", file=sys.stderr)
        return exit_code(signals)
    return None


if __name__ == "__main__":
    sys.exit(main())
