"""The learner under ``accelerate launch --num_processes 2 --cpu`` (gloo): the same weights as
one process on the same groups, and a lost rank fails the step with nothing acked (issue 12)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.learner_groups import make_groups

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

pytestmark = [pytest.mark.train, pytest.mark.slow]

# accelerate's --cpu starts one process unless MPI is installed; torchrun (--multi_gpu) starts
# two, and the learner's device: cpu makes them a gloo group (MULTI_CPU)
LAUNCH = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` in a session of its own, so a timeout takes the ranks down with the
    launcher (a rank left behind would outlive the test)."""
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def launch_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WORLD_SIZE", "RANK"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1",
            "MASTER_PORT": str(free_port()),
            **extra,
        }
    )
    return env


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from userrl.agents.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("dist")
    return build_tiny_model(root / "policy", seed=0), build_tiny_model(root / "ref", seed=1)


@pytest.mark.timeout(180)
def test_two_processes_train_the_same_weights_as_one(models: tuple[Path, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from userrl.learner.distributed import follow  # noqa: F401 (the helper's import path works)
    from userrl.learner.grpo_learner import GRPOLearner
    from userrl.learner.losses import LossConfig

    batches = [make_groups(3, seed=s, versions=(0, 1, 2)) for s in range(3)]  # some turns go stale
    groups_file = tmp_path / "groups.json"
    groups_file.write_text(json.dumps(batches))
    env = launch_env(REF_MODEL=str(models[1]), MICRO_TOKENS="400")
    out = launch(
        [
            *LAUNCH,
            "--main_process_port",
            env["MASTER_PORT"],
            str(REPO / "tests" / "dist_learner.py"),
            "fixed",
            str(models[0]),
            str(tmp_path / "two"),
            "3",
            str(groups_file),
        ],
        env=env,
        timeout=170,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    ranks = sorted(json.loads(p.read_text())["rank"] for p in (tmp_path / "two").glob("rank-*.json"))
    worlds = {json.loads(p.read_text())["world"] for p in (tmp_path / "two").glob("rank-*.json")}
    assert ranks == [0, 1] and worlds == {2}, "two ranks of one process group"
    two = load_file(str(tmp_path / "two" / "weights" / "v00003.safetensors"))

    one = GRPOLearner(
        models[0],
        tmp_path / "one",
        lr=1e-3,
        loss=LossConfig(max_staleness=1, kl_coef=0.05),
        ref_model_path=models[1],
        device="cpu",
        max_tokens_per_microbatch=100_000,
    )
    for batch in batches:
        one.step(batch)
    ref = {k: v for k, v in one.model.state_dict().items() if k in two}
    assert ref.keys() == two.keys()
    start = load_file(str(next((models[0]).glob("*.safetensors"))))
    moved = [k for k in two if k in start and not torch.allclose(two[k], start[k])]
    assert len(moved) > 5  # the steps did train
    for k, v in ref.items():
        torch.testing.assert_close(two[k], v, rtol=1e-4, atol=2e-6, msg=k)


@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.parametrize("kill_step", [2, 0], ids=["rank-1-killed-in-step-2", "no-kill"])
def test_a_killed_rank_fails_the_step_and_acks_nothing(
    models: tuple[Path, Path], tmp_path: Path, redis_url: str, run_name: str, kill_step: int
) -> None:
    import anyio

    from userrl.bus.client import make_client
    from userrl.bus.keys import Keys
    from userrl.bus.messages import ScoredGroup
    from userrl.bus.transport import Bus, BusSettings

    keys = Keys(run_name)

    async def seed() -> None:
        bus = Bus(make_client(redis_url), keys, BusSettings())
        await bus.ensure_group(keys.stream("learner"), keys.group("learner"))
        for g in make_groups(4, seed=3):
            await bus.send(
                keys.stream("learner"),
                ScoredGroup(episode_id=g["group_id"], group_id=g["group_id"], env_id=g["env_id"], items=g["items"]),
            )
        await bus.redis.aclose()

    async def pending() -> tuple[int, int]:
        client = make_client(redis_url)
        try:
            info = await client.xpending(keys.stream("learner"), keys.group("learner"))
            return int(info["pending"]), int(await client.xlen(keys.stream("learner")))
        finally:
            await client.aclose()

    anyio.run(seed)
    env = launch_env(USERRL_REDIS_URL=redis_url, USERRL_RUN=run_name)
    out = launch(
        [
            *LAUNCH,
            "--main_process_port",
            env["MASTER_PORT"],
            str(REPO / "tests" / "dist_learner.py"),
            "redis",
            str(models[0]),
            str(tmp_path / "run"),
            "4" if kill_step else "2",
            str(kill_step),
        ],
        env=env,
        timeout=170,
    )
    if not kill_step:  # the real loop under accelerate: 2 steps, a checkpoint at the end acks both groups
        assert out.returncode == 0, out.stderr[-3000:]
        assert anyio.run(pending)[0] == 0  # acked (and the consumed entries trimmed)
        assert (tmp_path / "run" / "checkpoint" / "state.json").is_file()
        assert sorted(p.name for p in (tmp_path / "run" / "weights").iterdir()) == [
            "v00001.safetensors",
            "v00002.safetensors",
        ]
        return
    assert out.returncode != 0, "the launch must fail when a rank dies"
    # step 1 trained and published; step 2 lost rank 1: both groups read, neither acked
    assert anyio.run(pending) == (2, 4), out.stderr[-3000:]
    assert (tmp_path / "run" / "weights" / "v00001.safetensors").is_file()
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_learn_with_an_accelerate_config_relaunches_under_accelerate(tmp_path: Path, monkeypatch) -> None:
    import userrl.cli as cli
    from userrl.errors import ConfigError
    from userrl.learner.distributed import accelerate_command

    acc = tmp_path / "acc.yaml"
    acc.write_text("distributed_type: MULTI_GPU\nnum_processes: 2\n")
    seen: dict = {}

    def fake_run(cmd: list[str], env: dict, check: bool) -> object:
        seen.update(cmd=cmd, env=env)
        return type("Done", (), {"returncode": 0})()

    monkeypatch.delenv("USERRL_UNDER_ACCELERATE", raising=False)
    monkeypatch.setattr("subprocess.run", fake_run)
    monkeypatch.setattr(cli, "configure_logging", lambda *a, **k: None)
    assert (
        cli.main(["learn", "--config", "deploy/ci.yaml", "--accelerate-config", str(acc), "--set", "train.steps=2"])
        == 0
    )
    cmd = seen["cmd"]
    assert cmd[1:5] == ["-m", "accelerate.commands.launch", "--config_file", str(acc)]
    assert cmd[5:9] == ["-m", "userrl", "learn", "--config"]
    assert "train.steps=2" in cmd and f"train.accelerate_config={acc}" in cmd
    assert seen["env"]["USERRL_UNDER_ACCELERATE"] == "1"  # the launched ranks do not relaunch
    with pytest.raises(ConfigError, match="not a file"):
        accelerate_command(str(tmp_path / "missing.yaml"), ["learn"])
