"""Which tasks a run reads (``data:``) and which gym settings it plays with (``gym_options``,
``eval_gym_options``): validated at config load, carried on the reset, applied by the env
worker (also to a step it re-executes), and training never dispatches a test task."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgpack
import pytest

from userrl.agents.scripted import ScriptedExpertBackend
from userrl.agents.worker import PolicyWorker
from userrl.bus.messages import Reset, decode, encode
from userrl.bus.transport import Bus
from userrl.bus.worker import Worker, WorkerSettings
from userrl.config import gym_options_for, load_config
from userrl.envs.datasets import DATA_DIR, check_data, data_tasks, load_tasks
from userrl.envs.worker import EnvWorker
from userrl.errors import ConfigError, DataError
from userrl.learner.dispatch import Dispatcher
from userrl.learner.evaluation.over_bus import eval_resets
from userrl.learner.main_job import grpo_tasks
from userrl.rollouts import make_resets, send_resets, wait_trajectories
from userrl.sim_users.worker import UserWorker

CI = Path(__file__).resolve().parents[1] / "deploy" / "ci.yaml"
TRAVEL, FUNCTION = "userrl/Travel-v0", "userrl/Function-v0"
OPTS = [
    "gym_options={userrl/Travel-v0: {elicit_reward: 0.8}}",
    "eval_gym_options={userrl/Travel-v0: {elicit_reward: 0.6}}",
]


# ---- config ------------------------------------------------------------------------------------


def test_gym_options_for_training_and_evaluation() -> None:
    cfg = load_config(CI, OPTS)
    assert gym_options_for(cfg, TRAVEL) == {"elicit_reward": 0.8}
    assert gym_options_for(cfg, TRAVEL, evaluation=True) == {"elicit_reward": 0.6}
    assert gym_options_for(cfg, FUNCTION, evaluation=True) == {}
    only_train = load_config(CI, OPTS[:1])
    assert gym_options_for(only_train, TRAVEL, evaluation=True) == {"elicit_reward": 0.8}
    assert load_config(CI).data == ""


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "gym_options={userrl/Nope-v0: {x: 1}}",
            r"gym_options\.userrl/Nope-v0: unknown gym; known: .*userrl/Travel-v0",
        ),
        (
            "gym_options={userrl/Travel-v0: {elicit: 0.8}}",
            r"gym_options\.userrl/Travel-v0: unknown gym option\(s\) \['elicit'\]; allowed: .*elicit_reward",
        ),
        (
            "eval_gym_options={userrl/Function-v0: {tolerance: 1}}",
            r"eval_gym_options\.userrl/Function-v0: unknown gym option\(s\) \['tolerance'\]; allowed: ",
        ),
        ("gym_options={userrl/Travel-v0: 0.8}", r"gym_options\.userrl/Travel-v0: expected a mapping"),
        (
            "eval_gym_options={userrl/Turtle-v0: {success_threshold: 2}}",
            r"eval_gym_options\.userrl/Turtle-v0: .*success_threshold",
        ),
        ("gym_options={userrl/Travel-v0: {elicit_reward: high}}", r"gym_options\.userrl/Travel-v0: .*high"),
    ],
)
def test_bad_gym_options_name_the_gym_and_the_allowed_keys(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(CI, [override])


# ---- data folders ------------------------------------------------------------------------------


def _data_dir(tmp_path: Path, gyms: tuple[str, ...] = ("function", "travel")) -> Path:
    for g in gyms:
        shutil.copytree(DATA_DIR / g, tmp_path / "data" / g)
    return tmp_path / "data"


def test_data_folder_replaces_the_bundled_tasks(tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    (data / "function" / "train.jsonl").write_text(
        (DATA_DIR / "function" / "train.jsonl").read_text().splitlines()[0] + "\n"
    )
    assert len(data_tasks(FUNCTION, "train", str(data))) == 1
    assert data_tasks(FUNCTION, "test", "") == load_tasks(FUNCTION, "test")
    assert check_data(str(data), [FUNCTION]) == {FUNCTION: {"test": len(load_tasks(FUNCTION, "test")), "train": 1}}
    (data / "function" / "train.jsonl").unlink()  # a gym may have no train split (Search)
    assert check_data(str(data), [FUNCTION])[FUNCTION] == {"test": len(load_tasks(FUNCTION, "test"))}


def test_missing_data_is_an_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"data: {tmp_path}/nowhere is not a folder; write one with"):
        data_tasks(FUNCTION, "test", str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=rf"data: {tmp_path}/empty holds no gym folders"):
        data_tasks(FUNCTION, "test", str(tmp_path / "empty"))
    data = _data_dir(tmp_path, ("travel",))
    with pytest.raises(DataError, match=rf"data: {data} has no function/ folder for {FUNCTION} \(it holds travel\)"):
        check_data(str(data), [TRAVEL, FUNCTION])
    (data / "travel" / "test.jsonl").unlink()
    with pytest.raises(DataError, match=rf"data: {data}/travel/test.jsonl not found: {TRAVEL} has no test split"):
        data_tasks(TRAVEL, "test", str(data))


def test_check_env_command_reads_the_data(tmp_path: Path, python: str, subprocess_env: dict[str, str]) -> None:
    data = _data_dir(tmp_path, ("function",))
    args = [python, "-m", "userrl", "check", "env", "--config", str(CI), "--set", "run=nobody", "--timeout", "2"]
    out = subprocess.run(
        [*args, "--data", "--set", f"data={data}"], env=subprocess_env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and f"data: {data} has no telepathy/ folder" in out.stderr
    ok = subprocess.run(
        [*args, "--data", "--set", "gyms=[userrl/Function-v0]", "--set", f"data={data}"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"data {data}: userrl/Function-v0 test " in ok.stdout and ok.returncode == 1  # no env worker runs
    probe = subprocess.run(
        [*args, "--set", f"data={data}"], env=subprocess_env, capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 1 and "data" not in probe.stdout  # a liveness probe does not read the data


# ---- the reset carries the options -------------------------------------------------------------


def test_reset_v1_without_options_still_decodes() -> None:
    new = Reset(episode_id="e", group_id="g", env_id=TRAVEL, task={"id": "t"}, options={"elicit_reward": 0.8})
    assert decode(encode(new)) == new
    raw = msgpack.unpackb(encode(new), raw=False)
    del raw["d"]["options"]
    raw["v"] = 1
    assert decode(msgpack.packb(raw, use_bin_type=True)).options == {}  # type: ignore[attr-defined]


@asynccontextmanager
async def running(*workers: Worker) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        for w in workers:
            tg.start_soon(w.async_run)
        try:
            yield
        finally:
            for w in workers:
                w.stop()


def _settings(name: str) -> WorkerSettings:
    return WorkerSettings(name=name, heartbeat_interval_s=0.1, heartbeat_ttl_s=0.6, reclaim_interval_s=0.3)


@pytest.mark.integration
@pytest.mark.anyio
async def test_env_worker_plays_with_the_reset_options(bus: Bus) -> None:
    """Travel steps that ask the user are re-executed from the snapshot once the reply is
    stored, so the elicitation reward shows that the re-executed step used the episode's gym."""
    task = load_tasks(TRAVEL, "test")[0]
    resets = [
        *make_resets(TRAVEL, [task], prefix="hi:", options={"elicit_reward": 0.5}),
        *make_resets(TRAVEL, [task], prefix="lo:", options={"elicit_reward": 0.1}),
        *make_resets(TRAVEL, [task], prefix="bad:", options={"elicit": 1}),
    ]
    env = EnvWorker(bus, _settings("env-0"), send_task_to_policy=True)
    workers = [
        env,
        PolicyWorker(bus, _settings("pol-0"), backend=ScriptedExpertBackend()),
        UserWorker(bus, _settings("usr-0")),
    ]
    async with running(*workers):
        await send_resets(bus, resets)
        got = await wait_trajectories(bus, [r.episode_id for r in resets], timeout=60)
    hi, lo, bad = (got[r.episode_id][0] for r in resets)
    assert hi.status == lo.status == "ok" and bad.status == "failed"
    assert "unknown gym option(s) ['elicit']" in bad.error.message  # type: ignore[union-attr]
    rh, rl = [t["reward"] for t in hi.turns], [t["reward"] for t in lo.turns]
    changed = [(a, b) for a, b in zip(rh, rl, strict=True) if a != b]
    assert changed and all(a == pytest.approx(5 * b) for a, b in changed)
    # the snapshot (which carried the options for re-executed steps) is released with the trajectory
    assert await bus.redis.hget(bus.keys.state(resets[0].episode_id), "episode") is None
    assert env.env(TRAVEL, 0, {"elicit_reward": 0.5}).options["elicit_reward"] == 0.5


# ---- training reads the train split only -------------------------------------------------------


async def _sent_resets(bus: Bus) -> list[Reset]:
    return [m for _, f in await bus.redis.xrange(bus.keys.stream("env")) if isinstance(m := decode(f[b"p"]), Reset)]


async def _dispatch_all(bus: Bus, tasks: dict[str, list[dict[str, Any]]], options: dict[str, Any]) -> list[Reset]:
    """Run the GRPO dispatcher until every task of every gym went out at least once."""
    d = Dispatcher(bus, tasks, group_size=2, max_in_flight=64, max_turns=4, sampling={}, options=options)
    need = {(g, t["id"]) for g, ts in tasks.items() for t in ts}
    seen: set[tuple[str, str]] = set()
    while not need <= seen:
        for r in await d.fill(version=0):
            seen.add((r.env_id, r.task["id"]))
            d.done(r.group_id)
    return await _sent_resets(bus)


@pytest.mark.integration
@pytest.mark.anyio
async def test_dispatcher_sends_the_data_train_split_with_train_options(bus: Bus, tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    cfg = load_config(CI, [*OPTS, f"data={data}", f"train.gyms=[{FUNCTION}, {TRAVEL}]"])
    tasks = grpo_tasks(cfg)
    sent = await _dispatch_all(bus, tasks, {g: gym_options_for(cfg, g) for g in cfg.train.gyms})
    for gym in cfg.train.gyms:
        train = {t["id"] for t in data_tasks(gym, "train", str(data))}
        test = {t["id"] for t in data_tasks(gym, "test", str(data))}
        assert {r.task["id"] for r in sent if r.env_id == gym} == train and not train & test
    assert {r.options.get("elicit_reward") for r in sent if r.env_id == TRAVEL} == {0.8}
    assert all(r.meta["split"] == "train" for r in sent)


def test_eval_resets_use_the_test_split_and_eval_options(tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    cfg = load_config(CI, OPTS)
    options = {g: gym_options_for(cfg, g, evaluation=True) for g in (FUNCTION, TRAVEL)}
    resets, tasks = eval_resets(
        [FUNCTION, TRAVEL],
        n_tasks=3,
        k=2,
        temperature=0.0,
        max_turns=0,
        max_new_tokens=8,
        tag="ev",
        data=str(data),
        options=options,
    )
    assert len(resets) == 12 and {r.task["id"] for r in resets} == {
        t["id"] for g in (FUNCTION, TRAVEL) for t in data_tasks(g, "test", str(data))[:3]
    }
    assert {r.options.get("elicit_reward") for r in resets if r.env_id == TRAVEL} == {0.6}
    assert all(r.options == {} for r in resets if r.env_id == FUNCTION)
    assert list(tasks) == [FUNCTION, TRAVEL]


@pytest.mark.integration
@pytest.mark.anyio
async def test_dispatch_command_reads_the_data_setting(
    bus: Bus, run_name: str, tmp_path: Path, python: str, subprocess_env: dict[str, str]
) -> None:
    data = _data_dir(tmp_path)
    args = [
        python,
        "-m",
        "userrl",
        "dispatch",
        "--config",
        str(CI),
        "--set",
        f"run={run_name}",
        "--set",
        f"data={data}",
        "--gyms",
        TRAVEL,
        "--tasks",
        "2",
        *[a for o in OPTS for a in ("--set", o)],
    ]
    for split in ("train", "test"):
        out = await anyio.to_thread.run_sync(
            lambda s=split: subprocess.run(
                [*args, "--split", s, "--prefix", f"{s}:"],
                env=subprocess_env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        )
        assert out.returncode == 0, out.stderr[-2000:]
    sent = await _sent_resets(bus)
    for split, elicit in (("train", 0.8), ("test", 0.6)):
        mine = [r for r in sent if r.episode_id.startswith(f"{split}:")]
        assert [r.task["id"] for r in mine] == [t["id"] for t in data_tasks(TRAVEL, split, str(data))[:2]]
        assert {r.options["elicit_reward"] for r in mine} == {elicit}


@pytest.mark.parametrize("command", [["eval", "--model", "scripted"], ["train"], ["dispatch"]])
def test_commands_refuse_missing_data_before_starting_anything(
    command: list[str], tmp_path: Path, python: str, subprocess_env: dict[str, str]
) -> None:
    out = subprocess.run(
        [
            python,
            "-m",
            "userrl",
            *command,
            "--config",
            str(CI),
            "--set",
            f"run_dir={tmp_path}",
            "--set",
            f"data={tmp_path}/nowhere",
        ],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and f"data: {tmp_path}/nowhere is not a folder" in out.stderr
    assert not (tmp_path / "redis.url").exists() and not (tmp_path / "sft-model").exists()


@pytest.mark.anyio
async def test_sft_demonstrations_and_in_process_eval_read_data_and_options(tmp_path: Path) -> None:
    from userrl.agents.base import Sampling
    from userrl.learner.evaluation.in_process import evaluate, play
    from userrl.learner.sft import expert_demonstrations

    data = _data_dir(tmp_path)
    first = (DATA_DIR / "function" / "train.jsonl").read_text().splitlines()[3]
    (data / "function" / "train.jsonl").write_text(first + "\n")
    demos = await expert_demonstrations([FUNCTION], "train", data=str(data))
    assert len(demos) == 1 and len(load_tasks(FUNCTION, "train")) > 1
    returns = {}
    for elicit in (0.5, 0.1):
        options = {TRAVEL: {"elicit_reward": elicit}}
        report = await evaluate(
            ScriptedExpertBackend(), [TRAVEL], n_tasks=2, max_turns=30, data=str(data), options=options
        )
        assert report["gyms"][TRAVEL]["score"] == 1.0  # the best options; elicitation rewards are no score
        played = await play(
            ScriptedExpertBackend(),
            [(TRAVEL, t) for t in data_tasks(TRAVEL, "test", str(data))[:2]],
            max_turns=30,
            sampling=Sampling(),
            options=options,
        )
        returns[elicit] = sum(sum(e.rewards) for e in played)
    assert returns[0.5] > returns[0.1] > 0
