"""Jobs stop everything they started: SIGTERM on eval/train/dispatch, kill -9 of the launcher.

Each test runs the real CLI in a subprocess on deploy/ci.yaml with the embedded default, and
checks /proc afterwards: no worker, no redis-server, no ``redis.url`` left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as sync_redis

from tests.proc_utils import (
    CI,
    REPO,
    alive,
    cli_env,
    cmdline,
    descendants,
    start_cli,
    wait_gone,
    wait_until,
)
from userrl.bus.keys import Keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def heartbeats(run_dir: Path, run: str, roles: tuple[str, ...]) -> bool:
    url_file = run_dir / "redis.url"
    if not url_file.is_file():
        return False
    try:
        with sync_redis.Redis.from_url(url_file.read_text(), socket_timeout=2) as r:
            return all(r.exists(Keys(run).heartbeat(role, f"{role}-0")) for role in roles)
    except sync_redis.RedisError:
        return False


def stop_and_check(proc: subprocess.Popen[bytes], sig: int, run_dir: Path, log: Path, timeout: float = 60) -> int:
    """Send ``sig``, wait for the exit, assert that no descendant and no redis.url remain."""
    kids = descendants(proc.pid)
    assert any("redis-server" in cmdline(p) or "valkey" in cmdline(p) for p in kids), kids
    assert any(" worker " in cmdline(p) for p in kids), [cmdline(p) for p in kids]
    proc.send_signal(sig)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(
            f"no exit {timeout}s after {signal.Signals(sig).name}: {log.read_text()[-3000:]}"
        ) from None
    left = wait_gone(kids, timeout=5)
    assert not left, [cmdline(p) for p in left]
    assert not (run_dir / "redis.url").exists()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    return rc


def test_sigterm_on_eval_stops_its_workers_and_redis(tmp_path: Path) -> None:
    log = tmp_path / "eval.log"
    proc = start_cli(
        ["eval", "--model", "scripted", "-c", CI, "--k", "8", "--set", f"run_dir={tmp_path}", "--set", "run=sigeval"],
        log,
    )
    try:
        wait_until(lambda: heartbeats(tmp_path, "sigeval", ("env", "policy", "user")), 90, "eval's workers", poll=0.3)
        rc = stop_and_check(proc, signal.SIGTERM, tmp_path, log)
    finally:
        proc.kill()
        proc.wait()
    assert rc == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in log.read_text()


def test_sigint_on_eval_stops_too(tmp_path: Path) -> None:
    log = tmp_path / "eval.log"
    proc = start_cli(
        [
            "eval",
            "--model",
            "scripted",
            "-c",
            CI,
            "--k",
            "8",
            "--set",
            f"run_dir={tmp_path}",
            "--set",
            "run=sigint",
            "--set",
            "workers.user.replicas=0",
        ],
        log,
    )
    try:
        wait_until(lambda: heartbeats(tmp_path, "sigint", ("env", "policy")), 90, "eval's workers", poll=0.3)
        rc = stop_and_check(proc, signal.SIGINT, tmp_path, log)
    finally:
        proc.kill()
        proc.wait()
    assert rc == 128 + signal.SIGINT


@pytest.mark.train
@pytest.mark.timeout(300)
def test_sigterm_on_train_stops_its_workers_and_redis(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    log = tmp_path / "train.log"
    proc = start_cli(
        [
            "train",
            "-c",
            CI,
            "--set",
            f"run_dir={tmp_path}",
            "--set",
            "run=sigtrain",
            "--set",
            "train.sft_epochs=0",
            "--set",
            "train.steps=1000",
            "--set",
            "train.gyms=[userrl/Function-v0]",
        ],
        log,
    )
    try:
        wait_until(
            lambda: heartbeats(tmp_path, "sigtrain", ("env", "policy", "user", "reward")),
            200,
            "train's workers",
            poll=0.5,
        )
        rc = stop_and_check(proc, signal.SIGTERM, tmp_path, log, timeout=90)
    finally:
        proc.kill()
        proc.wait()
    assert rc == 128 + signal.SIGTERM


def test_kill9_of_the_launcher_takes_workers_and_redis_down(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    proc = start_cli(
        [
            "up",
            CI,
            "--set",
            f"run_dir={tmp_path}",
            "--set",
            "run=kill9",
            "--set",
            "workers.policy.replicas=0",
            "--set",
            "workers.reward.replicas=0",
        ],
        log,
    )
    try:
        wait_until(lambda: heartbeats(tmp_path, "kill9", ("env", "user")), 90, "up's workers", poll=0.3)
        kids = descendants(proc.pid)
        assert len(kids) >= 3, [cmdline(p) for p in kids]
        proc.kill()
        proc.wait()
        t0 = time.monotonic()
        left = wait_gone(kids, timeout=30)
        assert not left, [cmdline(p) for p in left]
        assert time.monotonic() - t0 < 30
    finally:
        for p in descendants(proc.pid) if alive(proc.pid) else ():
            os.kill(p, signal.SIGKILL)
        proc.kill()
        proc.wait()


def test_kill9_of_a_program_holding_an_embedded_redis_takes_it_down(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from userrl.bus.embedded import EmbeddedRedis\n"
        "s = EmbeddedRedis().start()\n"
        "print('PID', s.proc.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=cli_env())
    try:
        line = b""
        while not line.startswith(b"PID "):  # the library may log to stdout before it
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, "the program exited"
        pid = int(line.split()[1])
        assert alive(pid)
        proc.kill()
        assert not wait_gone({pid}, timeout=10)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]


def test_json_output_into_a_closed_pipe_is_not_a_traceback(redis_url: str, run_name: str) -> None:
    env = dict(cli_env(), USERRL_REDIS_URL=redis_url)
    cmd = (
        f"{sys.executable} -m userrl status --json --watch --interval 0.05 --sample 0 --set run={run_name} | head -n 1"
    )
    out = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], env=env, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert out.stdout.startswith("{") and out.stdout.count("\n") == 1
    assert "Traceback" not in out.stderr and "BrokenPipeError" not in out.stderr, out.stderr
    assert out.returncode == 141  # the shell's code for SIGPIPE: the reader left, nothing is wrong


def test_a_new_deploy_starts_empty_unless_it_keeps_the_data(tmp_path: Path) -> None:
    from userrl.config import load_config
    from userrl.deploy.launcher import Launcher

    cfg = load_config(
        CI,
        [f"run_dir={tmp_path}", "run=keep"] + [f"workers.{r}.replicas=0" for r in ("env", "policy", "user", "reward")],
    )

    def launch(keep: bool) -> bytes | None:
        la = Launcher(cfg, CI, env={}, keep_data=keep).start()
        try:
            r = sync_redis.Redis.from_url(la.url)
            try:
                got = r.get("userrl:keep:probe")
                r.set("userrl:keep:probe", b"%d" % (int(got or 0) + 1))
                return got
            finally:
                r.close()
        finally:
            la.stop()  # SIGTERM: the server writes its AOF out before it exits

    assert launch(keep=False) is None
    assert launch(keep=True) == b"1"
    assert launch(keep=False) is None
    assert (tmp_path / "redis.prev" / "appendonlydir").is_dir()
    assert not (tmp_path / "redis.url").exists()


WATCHED = """\
import os, signal, subprocess, sys, time
if sys.argv[1] == "parent":
    env = dict(os.environ, USERRL_PARENT_PID=str(os.getpid()))
    child = subprocess.Popen([sys.executable, __file__, "child"], env=env)  # no parent-death signal
    print(child.pid, flush=True)
    time.sleep(120)
else:
    from userrl.lifecycle import watch_parent
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a worker stuck at stop: the hard exit must come
    watch_parent(grace_s=0.5, poll_s=0.1)
    time.sleep(120)
"""


def test_a_worker_whose_parent_died_exits_on_its_own(tmp_path: Path) -> None:
    script = tmp_path / "watched.py"
    script.write_text(WATCHED)
    proc = subprocess.Popen([sys.executable, str(script), "parent"], stdout=subprocess.PIPE, env=cli_env())
    try:
        child = int(proc.stdout.readline())  # type: ignore[union-attr]
        time.sleep(1.0)
        assert alive(child)
        proc.kill()
        assert not wait_gone({child}, timeout=10)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
