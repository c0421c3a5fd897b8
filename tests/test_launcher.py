"""The local launcher: starts every role, restarts workers killed mid-episode, follows
`userrl scale`, and stops without leaving a process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest
import redis

from userrl.bus.keys import Keys
from userrl.bus.transport import Bus
from userrl.cli import main
from userrl.config import load_config
from userrl.deploy.launcher import Launcher
from userrl.envs.datasets import load_tasks
from userrl.rollouts import make_resets, read_trajectories, send_resets, wait_trajectories

pytestmark = [pytest.mark.integration]

CI = str(Path(__file__).resolve().parents[1] / "deploy" / "ci.yaml")
GYMS = ["userrl/Function-v0", "userrl/Telepathy-v0", "userrl/Turtle-v0", "userrl/Intention-v0"]


def reward_available() -> bool:
    try:
        from userrl.learner.reward.worker import RewardWorker  # noqa: F401
    except (ImportError, AttributeError):
        return False
    return True


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def resets_for(tasks_per_gym: int, group_size: int, prefix: str, skip: int = 0) -> list:
    out = []
    for env_id in GYMS:
        out += make_resets(
            env_id,
            load_tasks(env_id, "test")[skip : skip + tasks_per_gym],
            group_size=group_size,
            seed=5,
            prefix=prefix,
        )
    return out


async def wait_for(pred, timeout: float, what: str, poll: float = 0.05):
    with anyio.fail_after(timeout):
        while not (got := await pred()):
            await anyio.sleep(poll)
    return got


def test_crash_looping_role_backs_off_exponentially(tmp_path, redis_url, run_name) -> None:
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
    la = Launcher(cfg, CI, python="/bin/false", backoff_base_s=0.02, backoff_cap_s=0.16, give_up_after=0)
    la.start()
    try:
        # the delay each restart was scheduled with, bounded by the clock around the pass that
        # scheduled it (the pass reads the clock once): exact whatever the machine's load
        bounds = []
        deadline = time.monotonic() + 60  # ends at the 7th restart: well under a second when idle
        while la.restarts["env"] < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
            before = la.restarts["env"]
            t0 = time.monotonic()
            la.supervise_once()
            t1 = time.monotonic()
            if la.restarts["env"] > before:
                (c,) = la._children.values()
                bounds.append((c.start_at - t1, c.start_at - t0))
        assert la.restarts["env"] >= 7
        for (lo, hi), want in zip(bounds[:5], [0.02, 0.04, 0.08, 0.16, 0.16], strict=True):
            assert lo - 1e-9 <= want <= hi + 1e-9, bounds
        sup = json.loads(la._link.supervisor())
        assert sup["restarts"]["env"] >= 7 and sup["replicas"]["env"] == 1
    finally:
        la.stop()
    with redis.Redis.from_url(redis_url) as r:
        assert not r.exists(la.keys.supervisor)


@pytest.mark.slow
def test_embedded_redis_is_started_shared_with_workers_and_stopped(tmp_path, subprocess_env, run_name) -> None:
    env = {k: v for k, v in subprocess_env.items() if k != "USERRL_REDIS_URL"}
    cfg = load_config(
        CI,
        [
            f"run={run_name}",
            f"run_dir={tmp_path}",
            "workers.env.replicas=1",
            "workers.policy.replicas=0",
            "workers.user.replicas=0",
            "workers.reward.replicas=0",
        ],
    )
    overrides = [f"run={run_name}", f"run_dir={tmp_path}"]
    la = Launcher(cfg, CI, overrides, env=env).start().start_background()
    try:
        url = (tmp_path / "redis.url").read_text()
        assert url == la.url
        with redis.Redis.from_url(url) as r:
            deadline = time.monotonic() + 30
            while not r.exists(la.keys.heartbeat("env", "env-0")):
                assert time.monotonic() < deadline, (tmp_path / "logs" / "env-0.log").read_text()
                time.sleep(0.05)
    finally:
        la.stop()
    assert not (tmp_path / "redis.url").exists()
    with pytest.raises(redis.ConnectionError), redis.Redis.from_url(url, socket_connect_timeout=1) as r:
        r.ping()


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.timeout(300)
async def test_launcher_restarts_killed_workers_and_scales(
    bus: Bus, redis_url, run_name, subprocess_env, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr("userrl.cli_deploy.configure_logging", lambda *a, **k: None)
    n_reward = 1 if reward_available() else 0
    overrides = [
        f"run={run_name}",
        f"redis={redis_url}",
        f"run_dir={tmp_path}",
        "log_level=info",
        "workers.env.replicas=2",
        "workers.user.replicas=2",
        "workers.policy.replicas=1",
        f"workers.reward.replicas={n_reward}",
    ]
    cfg = load_config(CI, overrides)
    # a group nobody reads keeps every trajectory on the reward stream (trimming respects it)
    await bus.ensure_group(bus.keys.stream("reward"), "audit")
    la = Launcher(cfg, CI, overrides, env=subprocess_env, backoff_base_s=0.2, stop_timeout_s=15)
    la.start().start_background()
    all_pids: set[int] = set()
    try:
        names = ["env-0", "env-1", "user-0", "user-1", "policy-0"] + ["reward-0"] * n_reward

        async def all_up() -> bool:
            return all([await bus.redis.exists(bus.keys.heartbeat(n.rsplit("-", 1)[0], n)) for n in names])

        await wait_for(all_up, 60, "workers up")
        all_pids |= set(la.pids().values())

        # -- 60 episodes; kill -9 one worker of each role while they run ------------------------
        wave1 = resets_for(5, 2, "a:")
        wave2 = resets_for(5, 1, "b:")
        assert len(wave1) + len(wave2) == 60
        await send_resets(bus, wave1)

        async def some_done() -> bool:
            return len(await read_trajectories(bus)) >= 3

        await wait_for(some_done, 60, "first trajectories")
        victims = {n: la.pids()[n] for n in ("env-0", "user-0", "policy-0", *(["reward-0"] * n_reward))}
        for pid in victims.values():
            os.kill(pid, signal.SIGKILL)
        live_at_kill = await bus.redis.zcard(bus.keys.live)
        await send_resets(bus, wave2)

        async def restarted() -> bool:
            pids = la.pids()
            return all(la.restarts[n.split("-")[0]] >= 1 and n in pids and pids[n] != pid for n, pid in victims.items())

        await wait_for(restarted, 30, "restarts")
        all_pids |= set(la.pids().values())
        got = await wait_trajectories(bus, [r.episode_id for r in wave1 + wave2], timeout=120)
        assert live_at_kill > 0, "the kills should land while episodes are live"
        for n in victims:
            assert la.restarts[n.split("-")[0]] == 1, la.restarts
        dup = {k: len(v) for k, v in got.items() if len(v) > 1}
        assert not dup, f"episodes finished twice: {dup}"
        assert len(got) == 60 and all(v[0].status == "ok" for v in got.values())

        # -- scale env to 3: a third worker starts and takes work -------------------------------
        assert (
            await anyio.to_thread.run_sync(
                main, ["scale", "env=3", "--config", CI, *sum((["--set", o] for o in overrides), [])]
            )
            == 0
        )

        async def third_up() -> bool:
            return bool(await bus.redis.exists(bus.keys.heartbeat("env", "env-2")))

        await wait_for(third_up, 30, "env-2 up")
        all_pids |= set(la.pids().values())
        wave3 = resets_for(5, 2, "c:", skip=5)
        await send_resets(bus, wave3)
        got = await wait_trajectories(bus, [r.episode_id for r in wave3], timeout=120)
        assert all(len(got[r.episode_id]) == 1 for r in wave3)

        async def third_handled() -> bool:
            raw = await bus.redis.get(bus.keys.heartbeat("env", "env-2"))
            return raw is not None and json.loads(raw)["handled"] > 0

        await wait_for(third_handled, 10, "env-2 handled messages")

        # -- scale back down: the highest index stops cleanly -----------------------------------
        await bus.redis.hset(bus.keys.replicas, "env", 2)

        async def third_gone() -> bool:
            return "env-2" not in la.pids() and not await bus.redis.exists(bus.keys.heartbeat("env", "env-2"))

        await wait_for(third_gone, 30, "env-2 stopped")
        assert la.restarts["env"] == 1  # a scale-down is not a crash
    finally:
        all_pids |= set(la.pids().values())
        await anyio.to_thread.run_sync(la.stop)
    assert all_pids and all(gone(p) for p in all_pids), "a worker outlived the launcher"
    assert la.pids() == {}
    assert not await bus.redis.exists(bus.keys.supervisor)


@pytest.mark.slow
def test_up_command_runs_until_sigterm(tmp_path, redis_url, run_name, subprocess_env, python) -> None:
    sets = [
        f"run={run_name}",
        f"redis={redis_url}",
        f"run_dir={tmp_path}",
        "workers.env.replicas=1",
        "workers.policy.replicas=0",
        "workers.user.replicas=0",
        "workers.reward.replicas=0",
    ]
    argv = [python, "-m", "userrl", "up", CI, *sum((["--set", s] for s in sets), [])]
    with open(tmp_path / "up.log", "wb") as log:
        proc = subprocess.Popen(argv, env=subprocess_env, stdout=log, stderr=log)
    try:
        with redis.Redis.from_url(redis_url) as r:
            deadline = time.monotonic() + 30
            while not r.exists(Keys(run_name).heartbeat("env", "env-0")):
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "up.log").read_text()
                time.sleep(0.05)
            sup = json.loads(r.get(Keys(run_name).supervisor))
            assert sup["pid"] == proc.pid and sup["roles"]["env"][0]["name"] == "env-0"
            worker_pid = sup["roles"]["env"][0]["pid"]
            for _ in range(5):  # a burst of signals (Ctrl-C mashed) must not deadlock the handler
                proc.send_signal(signal.SIGTERM)
                time.sleep(0.05)
            assert proc.wait(timeout=30) == 0
            assert not r.exists(Keys(run_name).supervisor)
            assert not r.exists(Keys(run_name).heartbeat("env", "env-0"))
        assert gone(worker_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
