"""``userrl sft-user``: build the user model and measure it; and the main job's user-model stage.

::

    userrl sft-user --config deploy/llm-user.yaml      # {run_dir}/user-model + agreement.json
    userrl sft-user --config deploy/llm-user.yaml --skip-build --url http://127.0.0.1:8011/v1

The model is measured on the held-out (test split) queries in this process with the hf user
backend (free text: no structured output, so a reply parses only if the model learned the
format), and, with ``--url``, through the openai backend against a served copy with the gyms'
reply schemas as structured output (:func:`userrl.learner.user_sft.measure`).

With ``user.sft.serve`` on, ``userrl train`` builds the user model when its folder has none and
serves it with vLLM at ``user.base_url`` under the name ``user.model`` for the whole job
(:func:`user_model_stage`), so one command trains against an LLM user on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog

from userrl.config import DeployConfig, load_config
from userrl.console import enable_progress, stage
from userrl.errors import ConfigError
from userrl.hardware import resolve_device
from userrl.learner.user_sft import (
    REPORT,
    build_user_model,
    format_measure,
    heldout_examples,
    measure,
    user_model_dir,
    with_gyms,
)
from userrl.logs import configure_logging
from userrl.openai_compat import OpenAIConfig
from userrl.serve import ServeOptions, VLLMServer, check_port, entry_module, server_argv, server_env
from userrl.sim_users.hf_backend import HFUserBackend
from userrl.sim_users.openai_backend import OpenAIUserBackend

__all__ = ["measure_model", "register", "serve_user_model", "user_model_stage"]

log = structlog.get_logger(__name__)


def measure_model(cfg: DeployConfig, path: Path, url: str = "", served: str = "") -> dict[str, Any]:
    """The held-out measurement of the model in ``path`` (hf, free text), and of ``url`` (openai,
    structured output) when given; written to ``path/agreement.json``."""
    heldout = heldout_examples(cfg)
    u = cfg.user
    out: dict[str, Any] = {"heldout_queries": len(heldout)}
    hf = HFUserBackend(str(path), device=resolve_device(cfg.train.device), max_new_tokens=u.max_tokens, max_reasks=0)
    out["hf"] = anyio.run(lambda: measure(hf, heldout, concurrency=16))
    if url:
        oc = OpenAIConfig(
            base_url=url, model=served or u.model, api_key_env=u.api_key_env, max_tokens=u.max_tokens, concurrency=32
        )

        async def served_measure() -> dict[str, Any]:
            async with OpenAIUserBackend(oc, max_reasks=0, structured_output="always") as b:
                return await measure(b, heldout, concurrency=32)

        out["served"] = anyio.run(served_measure)
    (path / REPORT).write_text(json.dumps(out, indent=2))
    return out


def cmd_sft_user(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    if args.gyms:
        cfg = with_gyms(cfg, args.gyms)
    configure_logging(cfg.log_level, log_file=f"{cfg.run_dir}/logs/sft-user.log")
    enable_progress()
    path = Path(args.out) if args.out else user_model_dir(cfg)
    if args.skip_build:
        if not (path / "config.json").is_file():
            raise ConfigError(f"--skip-build: {path} holds no model (no config.json); build it first")
    else:
        t0 = time.monotonic()
        with stage("user-model SFT"):
            info = build_user_model(cfg, path)
        print(
            f"user model: {info['examples']} examples ({info['too_long']} too long, left out; "
            f"{info['sft_rows']} SFT rows with user.sft.verdict_repeats) -> {path} "
            f"in {time.monotonic() - t0:.0f}s"
        )
    if args.no_measure:
        return 0
    with stage("held-out measurement"):
        report = measure_model(cfg, path, args.url, args.served_model)
    print(format_measure(report["hf"], "in process (hf backend, free text, first try):"))
    if "served" in report:
        print(format_measure(report["served"], f"served at {args.url} (structured output, first try):"))
    print(f"report: {path / REPORT}")
    return 0


# ---- the main job's stage ----------------------------------------------------------------------


def serve_user_model(cfg: DeployConfig, path: Path) -> VLLMServer:
    """A vLLM server (not started) for the model in ``path`` at ``user.base_url``'s host and port,
    named ``user.model``."""
    url = httpx.URL(cfg.user.base_url)
    host, port = url.host or "127.0.0.1", url.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"user.sft.serve: user.base_url {cfg.user.base_url!r} must be on this machine (127.0.0.1)")
    check_port(host, port)
    opts = ServeOptions(model=str(path), host=host, port=port, served_model_name=cfg.user.model, kv_cache="512M")
    cpu = resolve_device("auto") == "cpu"
    argv = server_argv(opts, str(path), cfg.user.model, cpu=cpu, module=entry_module())
    base = cfg.user.base_url.rstrip("/")
    log_path = Path(cfg.run_dir) / f"serve-user-{port}.log"
    return VLLMServer(argv, base_url=base, model_name=cfg.user.model, log_path=log_path, env=server_env(True))


@contextlib.contextmanager
def user_model_stage(cfg: DeployConfig) -> Iterator[None]:
    """With ``user.sft.serve``: the user model built (if missing) and served for the block."""
    if not cfg.user.sft.serve:
        yield
        return
    path = user_model_dir(cfg)
    if not (path / "config.json").is_file():
        with stage("user-model SFT"):
            build_user_model(cfg, path)
    with stage("user-model server"), serve_user_model(cfg, path) as srv:
        waited = srv.wait_ready(900)
        log.info("user_model.served", path=str(path), url=cfg.user.base_url, ready_s=round(waited, 1))
        yield


def register(sub: Any, add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    s = sub.add_parser(
        "sft-user",
        help="build the user model (SFT of a tiny model on the scripted users) and measure it on held-out tasks",
        description="Fine-tune a tiny model on the scripted users' replies and verdicts (train split), save it to "
        "{run_dir}/user-model, and measure how often its replies parse and agree with the scripted user's on the "
        "test split.",
    )
    s.add_argument("--gyms", nargs="+", default=None, help="gyms to learn (default: user.sft.gyms, else train.gyms)")
    s.add_argument("--out", default="", help="model folder (default: user.sft.out, else {run_dir}/user-model)")
    s.add_argument("--skip-build", action="store_true", help="measure the model already in the folder")
    s.add_argument("--no-measure", action="store_true", help="build only")
    s.add_argument("--url", default="", help="also measure a served copy here (OpenAI API, structured output)")
    s.add_argument("--served-model", default="", help="its model name (default: user.model)")
    add_config_args(s)
    s.set_defaults(func=cmd_sft_user)
