"""What a person sees: one-line config errors, a quiet library, closed pipes, unreachable Redis,
stage headers, and the train log file. Entry points run in subprocesses, as a user runs them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from userrl import console
from userrl.lifecycle import redact_url

REPO = Path(__file__).resolve().parent.parent


def run_py(
    code: str, *args: str, stdout: int | None = subprocess.PIPE, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    # buffered stdout, as for a user (PYTHONUNBUFFERED would hide a late BrokenPipeError)
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERRL_") and k != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )


def userrl(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return run_py("import sys; from userrl.cli import main; sys.exit(main(sys.argv[1:]))", *args, stdout=stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- quiet as a library ------------------------------------------------------------------------


def test_library_use_prints_nothing_below_warning() -> None:
    """gymnasium.make, a reset and a step, and load_tasks: no output at all (they log at debug
    and info); a warning from userrl still reaches stderr through Python's logging."""
    out = run_py("""
        import gymnasium
        import structlog
        import userrl.envs.gymnasium_adapter  # registers the gyms with gymnasium
        from userrl.envs.datasets import load_tasks

        env = gymnasium.make("userrl/Telepathy-v0")
        env.reset(seed=0)
        env.step("[action] Is it an animal?")
        env.close()
        assert load_tasks("userrl/Telepathy-v0", "train")
        structlog.get_logger("userrl.test").info("library.info_event")
        structlog.get_logger("userrl.test").warning("library.warning_event")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        line for line in out.stderr.strip().splitlines() if "library.warning_event" in line
    ]
    assert "library.warning_event" in out.stderr


def test_application_logging_config_shows_library_debug() -> None:
    out = run_py("""
        import logging
        logging.basicConfig(level=logging.DEBUG, format="%(name)s %(message)s")
        import structlog
        import userrl.envs.registry
        structlog.get_logger("userrl.test").debug("library.debug_event", k=1)
    """)
    assert out.returncode == 0, out.stderr
    assert "userrl.test" in out.stderr and "library.debug_event" in out.stderr


def test_structlog_configured_first_is_kept() -> None:
    out = run_py("""
        import structlog
        structlog.configure(processors=[structlog.processors.JSONRenderer()])
        import userrl
        structlog.get_logger("x").info("mine")
    """)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"event": "mine"}


# ---- config errors, closed pipes, Redis ----------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["gyms=[userrl/Nope-v0]"], "gyms: unknown gym id(s) ['userrl/Nope-v0']; known ids: ['userrl/"),
        (["user.backend=openai"], "user.base_url and user.model are required"),
    ],
)
def test_config_errors_are_one_line(overrides: list[str], needle: str) -> None:
    out = userrl("config", *[a for o in overrides for a in ("--set", o)])
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and needle in out.stderr
    assert out.stderr.startswith("userrl: error: ")


def test_yaml_error_is_file_line_message(tmp_path: Path) -> None:
    bad = tmp_path / "deploy.yaml"
    bad.write_text("run: x\ngyms: [userrl/Function-v0\nseed: 1\n")
    out = userrl("config", "--config", str(bad))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"userrl: error: {bad}:3: not valid YAML: ")
    assert "Traceback" not in out.stderr and "yaml." not in out.stderr


SHORT_PRINT = """
import sys
from userrl import cli
cli.cmd_config = lambda args: print("short, still in the buffer at exit")
sys.exit(cli.main(["config"]))
"""


@pytest.mark.parametrize("code", ["config", SHORT_PRINT])
def test_output_survives_a_closed_pipe(code: str) -> None:
    """The reader is gone before the command writes (like `| head` after its lines): `config`
    flushes its JSON at once; a command whose short output stays buffered meets the closed pipe
    only at the end."""
    r, w = os.pipe()
    os.close(r)
    try:
        out = userrl(code, stdout=w) if code == "config" else run_py(code, stdout=w)
    finally:
        os.close(w)
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
    assert out.stderr == "" and out.returncode == 141


@pytest.mark.parametrize("command", [["dispatch", "--tasks", "1"], ["learn"], ["train"]])
def test_unreachable_redis_is_one_line(command: list[str], tmp_path: Path) -> None:
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    out = userrl(*command, "--set", f"redis={url}", "--set", f"run_dir={tmp_path}")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("userrl: error: redis: cannot reach redis://:***@127.0.0.1:")
    assert "secret" not in out.stderr
    assert not (tmp_path / "tiny-model").exists()  # failed before doing any work


# ---- console helpers -----------------------------------------------------------------------------


def test_stage_prints_header_and_wall_time(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TQDM_DISABLE", "")  # restored after the test (enable_progress sets it)
    console.enable_progress(True)
    try:
        times: dict[str, float] = {}
        with console.stage("SFT", times):
            pass
    finally:
        console.enable_progress(False)
    out = capsys.readouterr()
    assert "== SFT ==" in out.out and "-- SFT: 0.0s" in out.out and times == {"SFT": 0.0}
    assert out.err == ""  # not a terminal: no bar frames


def test_stage_is_silent_as_a_library(capsys: pytest.CaptureFixture[str]) -> None:
    with console.stage("GRPO"):
        bar = console.progress(3, "GRPO")
        bar.update(2)
        bar.close()
    assert capsys.readouterr().out == "" and bar.n == 2


def test_episode_bar_counts() -> None:
    bar = console.EpisodeBar(4)
    bar.update_to(3, 1)
    bar.update_to(2, 1)  # counts never go back
    assert (bar.done, bar.failed, bar.bar.n) == (3, 1, 3)


def test_log_file_gets_info_stderr_only_warnings(tmp_path: Path) -> None:
    out = run_py(f"""
        import structlog
        from userrl.logs import configure_logging
        configure_logging("info", json=True, log_file={str(tmp_path / "logs" / "train.log")!r})
        log = structlog.get_logger("userrl.learner.main_job")
        log.debug("not.shown")
        log.info("train.base_model", path="x")
        log.warning("learner.time_budget_reached", step=3)
    """)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "logs" / "train.log").read_text().splitlines()]
    assert [r["event"] for r in rows] == ["train.base_model", "learner.time_budget_reached"]
    assert rows[0]["level"] == "info" and rows[0]["path"] == "x"
    [line] = out.stderr.strip().splitlines()
    assert json.loads(line)["event"] == "learner.time_budget_reached"
    assert out.stdout == ""


def test_redact_url() -> None:
    assert redact_url("redis://u:pw@h:6379/0") == "redis://u:***@h:6379/0"
    assert redact_url("redis://h:6379") == "redis://h:6379"


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_log_format_chooses_the_stderr_renderer(fmt: str) -> None:
    """stderr is a pipe here: `auto` would give JSON; --log-format overrides it."""
    out = run_py(f"""
        import sys
        import structlog
        from userrl import cli, logs
        args = cli.build_parser().parse_args(["config", "--log-format", "{fmt}"])
        logs.log_format = args.log_format
        logs.configure_logging("info")
        structlog.get_logger("userrl.test").info("hello", k=1)
    """)
    assert out.returncode == 0, out.stderr
    line = out.stderr.strip()
    if fmt == "json":
        assert json.loads(line)["event"] == "hello"
    else:
        assert "[info     ] hello" in line and "k=1" in line and not line.startswith("{")
