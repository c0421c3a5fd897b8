"""Subcommands for deploying and inspecting: up, scale, status, episodes, deploy render.

Results go to stdout, logs to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from userrl.config import DeployConfig, load_config
from userrl.deploy import episodes as ep
from userrl.deploy.launcher import LAUNCHED_ROLES, Launcher
from userrl.deploy.render import render
from userrl.deploy.status import collect_status, format_status
from userrl.errors import ConfigError, UserRLError
from userrl.logs import configure_logging
from userrl.runtime import make_bus

T = TypeVar("T")


def _config(args: argparse.Namespace) -> DeployConfig:
    cfg = load_config(getattr(args, "config", None), getattr(args, "set", None))
    configure_logging(cfg.log_level)
    return cfg


def _with_bus(cfg: DeployConfig, fn: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        bus = make_bus(cfg, client_name="userrl:cli")
        try:
            return await fn(bus)
        finally:
            await bus.close()

    return anyio.run(main)


# ---- up / scale ------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    args.config = args.config_file or args.config
    cfg = _config(args)
    launcher = Launcher(cfg, args.config, list(args.set), stop_timeout_s=args.stop_timeout, keep_data=args.keep_data)
    rc = launcher.run()
    if launcher.failure:
        print(f"userrl: error: {launcher.failure}", file=sys.stderr)
    return rc


def parse_scale(pairs: list[str], roles: list[str]) -> dict[str, int]:
    """``["env=3", "user=2"]`` -> ``{"env": 3, "user": 2}``; ConfigError naming what is wrong."""
    out: dict[str, int] = {}
    for pair in pairs:
        role, sep, raw = pair.partition("=")
        if not sep:
            raise ConfigError(f"scale: {pair!r}: expected ROLE=N, e.g. env=3")
        if role not in roles:
            raise ConfigError(f"scale: unknown role {role!r}; choose from {roles}")
        try:
            n = int(raw)
        except ValueError:
            raise ConfigError(f"scale: {pair!r}: N must be an integer") from None
        if n < 0:
            raise ConfigError(f"scale: {pair!r}: N must be >= 0")
        out[role] = n
    return out


def cmd_scale(args: argparse.Namespace) -> int:
    cfg = _config(args)
    wanted = parse_scale(args.pairs, list(LAUNCHED_ROLES))

    async def scale(bus: Any) -> dict[str, int | None]:
        if not await bus.control.supervised():
            raise UserRLError(
                f"no supervisor is running for run {cfg.run!r} (no heartbeat at {bus.keys.supervisor}); "
                "start the deploy with `userrl up CONFIG`, or scale a compose/k8s deploy with its own tools"
            )
        return await bus.control.set_wanted(wanted)

    old = _with_bus(cfg, scale)
    for role, n in wanted.items():
        print(f"{role}: {old[role] if old[role] is not None else '-'} -> {n}")
    return 0


# ---- status / episodes -----------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _config(args)

    async def show(bus: Any) -> None:
        while True:
            s = await collect_status(bus, sample_s=args.sample)
            if args.json:
                print(json.dumps(s), flush=True)
            else:
                if args.watch and sys.stdout.isatty():
                    print("\033[2J\033[H", end="")
                print(format_status(s) + ("\n" if args.watch else ""), flush=True)
            if not args.watch:
                return
            await anyio.sleep(args.interval)

    with _interruptible():
        _with_bus(cfg, show)
    return 0


def cmd_episodes(args: argparse.Namespace) -> int:
    cfg = _config(args)

    async def run(bus: Any) -> int:
        if args.action == "ls":
            rows = await ep.list_episodes(bus, args.limit or 20)
            print(json.dumps(rows) if args.json else ep.format_episodes(rows))
        elif args.action == "show":
            if not args.id:
                raise UserRLError("episodes show: give an episode id (see `userrl episodes ls`)")
            entries = await ep.read_episode(bus, args.id)
            print(json.dumps(entries) if args.json else ep.format_dialogue(args.id, entries))
            return 0 if entries else 1
        else:
            watch = ep.Watch(
                bus,
                lambda line: print(line, flush=True),
                episode_id=args.id,
                limit=args.limit,
                exit_when_done=args.exit_when_done,
                idle_timeout_s=args.idle_timeout,
            )
            await watch.run()
        return 0

    with _interruptible():
        return _with_bus(cfg, run)
    return 0


class _interruptible:
    """Ctrl-C ends a following command quietly."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, tp: type[BaseException] | None, *_: object) -> bool:
        return tp is KeyboardInterrupt


# ---- deploy render ---------------------------------------------------------------------------


def cmd_render(args: argparse.Namespace) -> int:
    if not args.config:
        raise ConfigError("deploy render: --config is required (replicas come from it)")
    files = render(_config(args), args.config, args.what, image=args.image, overrides=args.set)
    if args.out:
        for rel, text in files.items():
            path = Path(args.out) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(path)
    else:
        print("---\n".join(files.values()), end="")
    return 0


# ---- parser ----------------------------------------------------------------------------------


def register(sub: Any, add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add this module's subcommands to the ``userrl`` parser."""
    up = sub.add_parser("up", help="start and supervise every role's workers (blocks until Ctrl-C/SIGTERM)")
    up.add_argument("config_file", nargs="?", metavar="CONFIG", help="deploy YAML (same as --config)")
    up.add_argument(
        "--stop-timeout",
        type=float,
        default=20.0,
        help="seconds workers get to finish in-flight work at stop before SIGKILL",
    )
    up.add_argument(
        "--keep-data",
        action="store_true",
        help="start the embedded Redis on the run dir's data (its AOF) instead of moving it aside",
    )
    add_config_args(up)
    up.set_defaults(func=cmd_up)

    sc = sub.add_parser("scale", help="change a running deploy's worker counts, e.g. `scale env=3 user=2`")
    sc.add_argument("pairs", nargs="+", metavar="ROLE=N")
    add_config_args(sc)
    sc.set_defaults(func=cmd_scale)

    st = sub.add_parser("status", help="workers, lag, pending, dead letters and throughput per role")
    st.add_argument("--json", action="store_true", help="one JSON object per sample")
    st.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    st.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes with --watch")
    st.add_argument(
        "--sample",
        type=float,
        default=1.0,
        help="seconds between the two samples throughput is computed from (0: skip)",
    )
    add_config_args(st)
    st.set_defaults(func=cmd_status)

    ep = sub.add_parser("episodes", help="list, show or follow dialogues while they run")
    ep.add_argument("action", choices=["ls", "show", "watch"])
    ep.add_argument("id", nargs="?", help="episode id (show: required; watch: default the newest live)")
    ep.add_argument("--limit", type=int, default=None, help="ls: rows per state; watch: stop after N entries")
    ep.add_argument("--exit-when-done", action="store_true", help="watch: exit when the episode ends")
    ep.add_argument("--idle-timeout", type=float, default=None, help="watch: exit after N s without news")
    ep.add_argument("--json", action="store_true", help="ls/show: JSON instead of text")
    add_config_args(ep)
    ep.set_defaults(func=cmd_episodes)

    dp = sub.add_parser("deploy", help="generate docker compose / kubernetes manifests from a config")
    dsub = dp.add_subparsers(dest="deploy_command", required=True)
    r = dsub.add_parser("render", help="print (or write under --out) compose.yaml or k8s/*.yaml")
    r.add_argument("what", choices=["compose", "k8s", "all"])
    r.add_argument("--out", help="directory to write into (deploy/ refreshes the checked-in files)")
    r.add_argument("--image", default="userrl:latest", help="container image of the workers")
    add_config_args(r)
    r.set_defaults(func=cmd_render)
