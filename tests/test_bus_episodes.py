"""Episodes of every gym over the bus with env, policy (scripted expert) and user (scripted)
workers in separate processes; an env worker killed mid-episode is replaced and every episode
ends exactly once with the same rewards as an in-process run."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import anyio
import pytest

from userrl.bus.messages import decode
from userrl.bus.transport import Bus
from userrl.envs.datasets import load_tasks
from userrl.envs.registry import list_envs
from userrl.learner.sft import expert_dialogue
from userrl.rollouts import make_resets, read_trajectories, send_resets, wait_trajectories

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]

CI = Path(__file__).resolve().parents[1] / "deploy" / "ci.yaml"
GYMS = [
    "userrl/Function-v0",
    "userrl/Telepathy-v0",
    "userrl/Turtle-v0",
    "userrl/Intention-v0",
    "userrl/Travel-v0",
    "userrl/Persuade-v0",
    "userrl/Search-v0",
    "userrl/Tau-v0",
]


async def reference_rewards(env_id: str, task: dict, seed: int) -> list[float]:
    """The same episode in process: gym + scripted expert + scripted user."""
    return (await expert_dialogue(env_id, task, seed=seed))["rewards"]


def start(role: str, name: str, run: str, env: dict[str, str], python: str, tmp: Path) -> subprocess.Popen[bytes]:
    log = open(tmp / f"{name}.log", "ab")  # noqa: SIM115
    p = subprocess.Popen(
        [
            python,
            "-m",
            "userrl",
            "worker",
            role,
            "--name",
            name,
            "--config",
            str(CI),
            "--set",
            f"run={run}",
            "--set",
            "log_level=info",
        ],
        env=env,
        stdout=log,
        stderr=log,
    )
    log.close()
    return p


def test_every_gym_runs_over_the_bus() -> None:
    assert set(GYMS) <= set(list_envs())


async def test_episodes_survive_env_worker_kill(bus: Bus, run_name, subprocess_env, python, tmp_path) -> None:
    resets = []
    for env_id in GYMS:
        resets += make_resets(env_id, load_tasks(env_id, "test")[:4], group_size=2, seed=3)
    procs = [
        start("policy", "pol-0", run_name, subprocess_env, python, tmp_path),
        start("user", "usr-0", run_name, subprocess_env, python, tmp_path),
        start("reward", "rew-0", run_name, subprocess_env, python, tmp_path),
    ]
    victim = start("env", "env-0", run_name, subprocess_env, python, tmp_path)
    procs.append(victim)
    try:
        await send_resets(bus, resets)
        # kill -9 the env worker once some episodes are done and others are mid-dialogue
        with anyio.fail_after(60):
            while len(await read_trajectories(bus)) < 5:
                await anyio.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        live_at_kill = await bus.redis.zcard(bus.keys.live)
        procs.append(start("env", "env-1", run_name, subprocess_env, python, tmp_path))
        got = await wait_trajectories(bus, [r.episode_id for r in resets], timeout=90)
        n_groups = len({r.group_id for r in resets})
        with anyio.fail_after(30):
            while await bus.redis.xlen(bus.keys.stream("learner")) < n_groups:
                await anyio.sleep(0.05)
        groups = [decode(f[b"p"]) for _, f in await bus.redis.xrange(bus.keys.stream("learner"))]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=20)
    assert live_at_kill > 0, "the kill should land while episodes are live"
    dup = {k: len(v) for k, v in got.items() if len(v) > 1}
    assert not dup, f"episodes finished twice: {dup}"
    for r in resets:
        (traj,) = got[r.episode_id]
        assert traj.status == "ok", traj.error
        want = await reference_rewards(r.env_id, r.task, r.seed)
        assert [t["reward"] for t in traj.turns] == pytest.approx(want), r.episode_id
        assert [t["seq"] for t in traj.turns] == list(range(len(want)))
    assert await bus.redis.zcard(bus.keys.live) == 0
    assert sorted(g.group_id for g in groups) == sorted({r.group_id for r in resets})
    assert all(g.status == "ok" and len(g.items) == 2 for g in groups)
    # every policy turn and env reply is readable in the episode stream
    rows = await bus.redis.xrange(bus.keys.episode(resets[0].episode_id))
    roles = [f[b"role"].decode() for _, f in rows]
    assert roles[:2] == ["system", "user"] and roles[-1] == "end" and "assistant" in roles


def test_dispatch_command_runs_episodes_on_a_running_deploy(run_name, subprocess_env, python, tmp_path) -> None:
    procs = [start(role, f"{role}-0", run_name, subprocess_env, python, tmp_path) for role in ("env", "policy", "user")]
    try:
        out = subprocess.run(
            [
                python,
                "-m",
                "userrl",
                "dispatch",
                "--config",
                str(CI),
                "--set",
                f"run={run_name}",
                "--gyms",
                "userrl/Function-v0",
                "userrl/Intention-v0",
                "--split",
                "test",
                "--tasks",
                "3",
                "--group-size",
                "2",
                "--wait",
                "--timeout",
                "60",
            ],
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=20)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "dispatched 12 episodes" in out.stdout and "finished 12 (12 ok)" in out.stdout
