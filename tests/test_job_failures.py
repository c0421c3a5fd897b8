"""A failure reaches the person who started the job: one line on the console, exit != 0, fast.

Reproduces: a policy model path that does not exist (eval, up), a crash-looping worker (the
launcher), every episode failing (eval, dispatch --wait, and their reason in `episodes show`).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis as sync_redis

from tests.proc_utils import CI, REPO, cli_env, descendants, start_cli, wait_gone, wait_until
from userrl.bus.keys import Keys
from userrl.config import load_config
from userrl.deploy.launcher import Launcher
from userrl.deploy.watch import last_error_line

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEAD_USER = [
    "--set",
    "user.backend=openai",
    "--set",
    "user.base_url=http://127.0.0.1:9/v1",
    "--set",
    "user.model=x",
    "--set",
    "user.max_retries=0",
    "--set",
    "user.retries=0",
]


#: "Stops at once" in these tests means before any timeout the command would otherwise wait out
#: (an eval's 3,600 s, a group's 600 s, the launcher's 60 s start grace): interpreter start-up and
#: imports take seconds on a quiet machine and several times that on a loaded 2-core one.
AT_ONCE_S = 100


def run_cli(args: list[str], timeout: float = 110) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "userrl", *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    return out, time.monotonic() - t0


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("userrl: error:")]


def test_eval_with_a_missing_policy_model_stops_at_once(tmp_path: Path) -> None:
    out, took = run_cli(
        [
            "eval",
            "--model",
            str(tmp_path / "no-such-model"),
            "-c",
            CI,
            "--gyms",
            "userrl/Function-v0",
            "--tasks",
            "2",
            "--set",
            f"run_dir={tmp_path}",
        ]
    )
    assert out.returncode != 0
    assert took < AT_ONCE_S, f"took {took:.1f}s"
    (line,) = error_lines(out.stderr)
    assert "worker policy-0 failed at start" in line and "no-such-model" in line
    assert f"[log: {tmp_path}/logs/policy-0.log]" in line
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "redis.url").exists()


def test_up_with_a_missing_policy_model_exits_with_the_reason(tmp_path: Path) -> None:
    out, took = run_cli(
        [
            "up",
            CI,
            "--set",
            f"run_dir={tmp_path}",
            "--set",
            "policy.backend=hf",
            "--set",
            f"policy.model={tmp_path / 'no-such-model'}",
        ]
    )
    assert out.returncode == 1
    assert took < AT_ONCE_S, f"took {took:.1f}s"
    (line,) = error_lines(out.stderr)
    assert "worker policy-0 failed at start" in line and "policy-0.log" in line


def test_eval_where_every_episode_fails_names_the_reason(tmp_path: Path) -> None:
    out, took = run_cli(
        [
            "eval",
            "--model",
            "scripted",
            "-c",
            CI,
            "--gyms",
            "userrl/Telepathy-v0",
            "--tasks",
            "3",
            "--set",
            f"run_dir={tmp_path}",
            *DEAD_USER,
        ]
    )
    assert out.returncode == 1, out.stderr
    assert took < AT_ONCE_S
    (line,) = error_lines(out.stderr)
    assert line.startswith("userrl: error: all 3 episodes failed; most common reason (3x): user: ")
    assert "ConnectError" in line
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    (reason,) = report["gyms"]["userrl/Telepathy-v0"]["failures"]
    assert "ConnectError" in reason
    assert "ConnectError" in out.stdout  # the printed report lists why episodes failed


def test_eval_stops_early_once_enough_episodes_failed(tmp_path: Path) -> None:
    out, took = run_cli(
        [
            "eval",
            "--model",
            "scripted",
            "-c",
            CI,
            "--gyms",
            "userrl/Telepathy-v0",
            "--k",
            "8",
            "--set",
            f"run_dir={tmp_path}",
            *DEAD_USER,
        ],
        timeout=110,
    )
    assert out.returncode == 1, out.stderr
    (line,) = error_lines(out.stderr)
    assert "episodes" in line and "failed" in line and "ConnectError" in line
    # the launcher's verdict once enough had failed ("so far"), or eval's own when every episode
    # had already failed before the launcher looked (they fail fast here): which one depends on
    # the load; either way the command ended instead of waiting out its timeout
    assert took < AT_ONCE_S and re.search(r"all \d+ episodes (so far )?failed", line), line


def test_dispatch_wait_where_every_episode_fails_and_episodes_show_says_why(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    up = start_cli(["up", CI, "--set", f"run_dir={tmp_path}", "--set", "workers.policy.replicas=1", *DEAD_USER], log)
    common = ["-c", CI, "--set", f"run_dir={tmp_path}"]
    try:
        wait_until(
            lambda: (tmp_path / "logs" / "env-0.log").exists() and (tmp_path / "redis.url").exists(), 60, "the deploy"
        )
        out, took = run_cli(["dispatch", "--wait", "--gyms", "userrl/Telepathy-v0", "--tasks", "2", *common])
        assert out.returncode == 1, out.stderr
        assert took < AT_ONCE_S
        (line,) = error_lines(out.stderr)
        assert "all 2 episodes failed" in line and "ConnectError" in line
        ls, _ = run_cli(["episodes", "ls", "--json", *common])
        rows = json.loads(ls.stdout)
        assert len(rows) == 2 and all("ConnectError" in (r["end"] or "") for r in rows)
        show, _ = run_cli(["episodes", "show", rows[0]["episode"], *common])
        assert "ConnectError" in show.stdout.splitlines()[0]
    finally:
        kids = descendants(up.pid)
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
        assert not wait_gone(kids, 10)


CRASHER = """\
#!{python}
# A worker that gets going (its heartbeat appears) and dies a moment later, every time.
import json, os, sys, time
import redis
name = sys.argv[sys.argv.index("--name") + 1]
role = name.split("-")[0]
r = redis.Redis.from_url(os.environ["USERRL_REDIS_URL"])
r.set("{prefix}hb:" + role + ":" + name, json.dumps({{"pid": os.getpid()}}), px=5000)
time.sleep(1.2)
print("Traceback (most recent call last):", file=sys.stderr)
print("RuntimeError: the handler blew up on message 7", file=sys.stderr)
sys.exit(1)
"""


def test_a_crash_looping_worker_stops_the_launcher(tmp_path: Path, redis_url: str, run_name: str) -> None:
    script = tmp_path / "crasher"
    script.write_text(CRASHER.format(python=sys.executable, prefix=Keys(run_name).prefix))
    script.chmod(0o755)
    cfg = load_config(
        CI,
        [
            f"run={run_name}",
            f"redis={redis_url}",
            f"run_dir={tmp_path}",
            "workers.env.replicas=1",
            "workers.policy.replicas=0",
            "workers.user.replicas=0",
            "workers.reward.replicas=0",
        ],
    )
    lines: list[str] = []
    la = Launcher(cfg, CI, python=str(script), backoff_base_s=0.05, backoff_cap_s=0.2, on_failure=lines.append)
    t0 = time.monotonic()
    la.start()
    try:
        while not la.failure and time.monotonic() - t0 < 30:
            la.supervise_once()
            time.sleep(0.1)
    finally:
        la.stop()
    assert la.failure and lines == [la.failure]
    assert la.failure.startswith("worker env-0 crash-looped (3 exits in a row) (exit 1): ")
    assert "RuntimeError: the handler blew up on message 7" in la.failure
    assert f"[log: {tmp_path}/logs/env-0.log]" in la.failure
    assert la.restarts["env"] == 3
    with sync_redis.Redis.from_url(redis_url) as r:
        assert json.loads(r.get(la.keys.failure))["line"] == la.failure
        r.delete(la.keys.failure)


def test_workers_killed_by_a_signal_are_restarted_not_given_up(tmp_path: Path, redis_url: str, run_name: str) -> None:
    script = tmp_path / "killed"
    script.write_text("#!/bin/sh\nkill -9 $$\n")
    script.chmod(0o755)
    cfg = load_config(
        CI,
        [
            f"run={run_name}",
            f"redis={redis_url}",
            f"run_dir={tmp_path}",
            "workers.env.replicas=1",
            "workers.policy.replicas=0",
            "workers.user.replicas=0",
            "workers.reward.replicas=0",
        ],
    )
    la = Launcher(cfg, CI, python=str(script), backoff_base_s=0.01, backoff_cap_s=0.02)
    la.start()
    try:
        deadline = time.monotonic() + 20
        while la.restarts["env"] < 5 and time.monotonic() < deadline:
            la.supervise_once()
            time.sleep(0.05)
    finally:
        la.stop()
    assert la.restarts["env"] >= 5 and la.failure is None


@pytest.mark.parametrize(
    "text, want",
    [
        (
            '{"event": "worker.started", "level": "info"}\n{"event": "policy.load_failed", "level": "error", '
            '"error": "OSError: no such model directory"}\n{"event": "worker.stopped", "level": "info"}\n',
            "policy.load_failed: OSError: no such model directory",
        ),
        (
            "Traceback (most recent call last):\n  File \"x.py\", line 1\nImportError: No module named 'torch'\n",
            "ImportError: No module named 'torch'",
        ),
        ("userrl: error: user.base_url and user.model are required\n", "user.base_url and user.model are required"),
        ("just a line\n", "just a line"),
        ("", ""),
    ],
)
def test_last_error_line(tmp_path: Path, text: str, want: str) -> None:
    log = tmp_path / "w.log"
    log.write_text(textwrap.dedent(text))
    assert last_error_line(log) == want


def seconds_after_launch(stderr: str, ended: float) -> float:
    """Seconds from the job's `launcher.started` log line to ``ended`` (unix time)."""
    from datetime import datetime

    for ln in stderr.splitlines():
        if ln.startswith("{") and '"launcher.started"' in ln:
            at = datetime.fromisoformat(json.loads(ln)["timestamp"].replace("Z", "+00:00")).timestamp()
            return ended - at
    raise AssertionError("no launcher.started line:\n" + stderr[-2000:])


def test_train_with_a_missing_policy_model_fails_in_one_line(tmp_path: Path) -> None:
    out, took = run_cli(
        [
            "train",
            "-c",
            CI,
            "--set",
            f"run_dir={tmp_path}",
            "--set",
            "train.sft_epochs=0",
            "--set",
            f"policy.model={tmp_path / 'no-such-model'}",
        ]
    )
    assert out.returncode != 0 and took < AT_ONCE_S
    (line,) = error_lines(out.stderr)
    assert "policy.model" in line and "no-such-model" in line
    assert "Traceback" not in out.stderr


@pytest.mark.train
@pytest.mark.timeout(180)
def test_train_where_every_episode_fails_stops_with_the_reason(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out, _ = run_cli(
        [
            "train",
            "-c",
            CI,
            "--set",
            f"run_dir={tmp_path}",
            "--set",
            "train.sft_epochs=0",
            "--set",
            "train.gyms=[userrl/Telepathy-v0]",
            "--set",
            "log_level=info",
            *DEAD_USER,
        ],
        timeout=170,
    )
    ended = time.time()
    assert out.returncode == 1
    info_log = (tmp_path / "logs" / "train.log").read_text()  # train's info lines go to its log file
    assert seconds_after_launch(info_log, ended) < AT_ONCE_S  # not a group's 600 s wait
    (line,) = error_lines(out.stderr)
    assert "episodes so far failed; most common reason" in line and "ConnectError" in line
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "redis.url").exists()


@pytest.mark.parametrize("command", [["up", CI], ["dispatch", "-c", CI]])
def test_an_unreachable_redis_is_one_line_without_the_password(tmp_path: Path, command: list[str]) -> None:
    out, took = run_cli(
        [*command, "--set", "redis=redis://:hunter2-secret@127.0.0.1:9/0", "--set", f"run_dir={tmp_path}"]
    )
    assert out.returncode == 2 and took < AT_ONCE_S
    (line,) = error_lines(out.stderr)
    assert "cannot reach redis" in line.lower() and "127.0.0.1:9" in line
    assert "hunter2-secret" not in out.stderr + out.stdout
    assert "Traceback" not in out.stderr
