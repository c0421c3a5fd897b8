"""``check_env``: everything a userrl gym must satisfy, as one call for the test suite.

1. Gymnasium's own ``check_env`` passes through the adapter, with no warnings.
2. Every state is msgpack-serializable and round-trips unchanged, and re-executing a step from
   its snapshot (as an env worker does after a crash) gives the same result.
3. A seed reproduces a rollout: same seed + task + actions -> same observations and rewards,
   through the async API and through the adapter.
4. The scripted expert reaches the maximum score (the gym's ``max_score``) and collects the
   most reward (``max_return``) on every task of the split, ending the episode by termination.
5. The exploit suite (:mod:`userrl.envs.exploits`): no adversarial scripted policy collects
   more reward than doing nothing (:func:`check_exploits`).

All of it runs with the in-process scripted user, so it needs no network and no model.
"""

from __future__ import annotations

import asyncio
import math
import warnings
from pathlib import Path
from typing import Any

import gymnasium
import msgpack
from gymnasium.utils.env_checker import check_env as gymnasium_check_env

from userrl.envs import exploits
from userrl.envs.base import Env, State, Task
from userrl.envs.datasets import load_tasks
from userrl.envs.episode import Policy, Transcript, Turn, play_episode
from userrl.envs.gymnasium_adapter import UserRLGymnasiumEnv
from userrl.envs.registry import get_env_class, list_envs
from userrl.envs.users import InProcessUser
from userrl.errors import DataError, UserRLError
from userrl.sim_users.base import SimUser

#: actions that exercise the error paths before the expert takes over (determinism check)
PROBES = ("hello there", "[search] anything", "[action] Is it bigger than a car?")


async def rollout(
    env: Env, task: Task, policy: Policy, *, seed: int = 0, user: SimUser | None = None, check_replay: bool = False
) -> Transcript:
    """Play one episode of ``task`` with ``policy(task, messages) -> action text``, the way
    the policy plays it (no ``Reward:`` line shown).

    With ``check_replay``, every step is executed twice from the same snapshot and the state
    must survive a msgpack round trip (the env worker's durability contract).
    """
    user = user if user is not None else InProcessUser()

    async def replay(state: State, turn: Turn) -> None:
        _assert_serializable(env.id, turn.result.state)
        again = await env.step(msgpack.unpackb(msgpack.packb(state), raw=False), turn.action, user)
        assert again == turn.result, f"{env.id}: re-executing a step from its snapshot differs"

    return await play_episode(
        env, task, policy, seed=seed, user=user, show_reward=False, after_turn=replay if check_replay else None
    )


def _assert_serializable(env_id: str, state: State) -> None:
    try:
        back = msgpack.unpackb(msgpack.packb(state), raw=False)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{env_id}: state is not msgpack-serializable: {exc}") from exc
    assert back == state, f"{env_id}: state changes in a msgpack round trip (tuples? int keys?)"


def expert_policy(cls: type[Env]) -> Policy:
    return cls.expert_action


def probing_policy(cls: type[Env]) -> Policy:
    """A few error-path actions, then the expert (the expert only counts its own turns)."""

    def policy(task: Task, messages: list[dict[str, str]]) -> str:
        own = [m for m in messages if m.get("role") == "assistant"]
        if len(own) < len(PROBES):
            return PROBES[len(own)]
        return cls.expert_action(task, [m for m in messages if m.get("role") != "assistant"] + own[len(PROBES) :])

    return policy


def check_gymnasium(env_id: str, split: str = "test", data_path: str | Path | None = None) -> None:
    """Gymnasium's ``check_env`` on the adapter; any warning it raises is a failure too."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gymnasium.make(env_id, split=split, data_path=data_path)
        try:
            gymnasium_check_env(env.unwrapped)
        except AssertionError as exc:
            raise AssertionError(f"{env_id}: gymnasium check_env failed: {exc}") from exc
        finally:
            env.close()
    msgs = [str(w.message) for w in caught]
    assert not msgs, f"{env_id}: gymnasium check_env warned: {msgs}"


def check_adapter_determinism(
    env_id: str, split: str = "test", data_path: str | Path | None = None, seed: int = 7
) -> None:
    """A seeded reset (no task id) and the same actions reproduce the episode."""
    runs = []
    for _ in range(2):
        env = UserRLGymnasiumEnv(env_id, split=split, data_path=data_path)
        try:
            obs, info = env.reset(seed=seed)
            task = env.state["task"] if env.state else {}
            trace: list[Any] = [obs, info["task_id"]]
            messages = [{"role": "user", "content": obs}]
            for _ in range(3):
                text = env.env.expert_action(task, messages)
                step = env.step(text)
                trace.append(step[:4])
                messages += [{"role": "assistant", "content": text}, {"role": "user", "content": step[0]}]
                if step[2] or step[3]:
                    break
        finally:
            env.close()
        runs.append(trace)
    assert runs[0] == runs[1], f"{env_id}: same seed and actions gave different episodes"


async def _check_tasks(cls: type[Env], tasks: list[Task]) -> None:
    env = cls()
    for i, task in enumerate(tasks):
        if i < 3:  # replay + determinism on a few tasks keeps the check fast
            runs = [await rollout(env, task, probing_policy(cls), seed=11, check_replay=True) for _ in range(2)]
            a, b = runs
            assert (a.observations, a.rewards) == (b.observations, b.rewards), (
                f"{cls.id}: task {task['id']}: same seed and actions gave different episodes"
            )
        tr = await rollout(env, task, expert_policy(cls), seed=i)
        best, most = float(cls.max_score(task)), float(cls.max_return(task))
        assert math.isclose(tr.score, best, abs_tol=1e-6) and math.isclose(tr.total_reward, most, abs_tol=1e-6), (
            f"{cls.id}: expert scored {tr.score} (max {best}) with rewards {tr.total_reward} "
            f"(max {most}) on task {task['id']}; transcript: {tr.messages[2:]}"
        )
        assert tr.terminated and not tr.truncated, (
            f"{cls.id}: expert episode on task {task['id']} did not terminate by itself"
        )


def check_tasks(env_id: str, tasks: list[Task]) -> None:
    """Checks 2-4 of the module docstring (without Gymnasium) on the given tasks."""
    asyncio.run(_check_tasks(get_env_class(env_id), tasks))


def check_env(
    env_id: str, split: str = "test", data_path: str | Path | None = None, sample: int | None = None
) -> dict[str, float]:
    """Run every check in the module docstring; AssertionError says what failed and where.

    ``sample`` limits checks 4 and 5 to that many tasks (a stable hash of their ids picks
    them). Returns the exploit suite's mean score per policy.
    """
    check_gymnasium(env_id, split, data_path)
    check_adapter_determinism(env_id, split, data_path)
    check_tasks(env_id, exploits.sample_tasks(load_tasks(env_id, split, data_path), sample))
    return check_exploits(env_id, split, data_path, sample=sample)


async def _expert_golds(cls: type[Env], tasks: list[Task]) -> dict[str, list[str]]:
    env = cls()
    return {str(t["id"]): exploits.answers_of((await rollout(env, t, expert_policy(cls))).messages) for t in tasks}


async def exploit_scores(env_id: str, tasks: list[Task], train: list[Task]) -> dict[str, list[float]]:
    """Each exploit policy's episode returns on ``tasks`` (vocabulary from ``train``): the
    reward a policy trained on the gym would collect by exploiting it."""
    cls = get_env_class(env_id)
    env = cls()
    golds = await _expert_golds(cls, tasks)
    train_golds = [g for gs in (await _expert_golds(cls, train)).values() for g in gs]
    out: dict[str, list[float]] = {}
    for name, policy in exploits.policies(train, train_golds, golds).items():
        out[name] = [(await rollout(env, t, policy, seed=i)).total_reward for i, t in enumerate(tasks)]
    return out


def check_exploits(
    env_id: str,
    split: str = "test",
    data_path: str | Path | None = None,
    sample: int | None = None,
    tolerance: float = exploits.TOLERANCE,
) -> dict[str, float]:
    """Fail if an exploit's mean return (sum of turn rewards) exceeds the best do-nothing
    baseline's by more than ``tolerance`` times the mean most reward a task offers (the gym's
    ``max_return``; see :data:`userrl.envs.exploits.TOLERANCE`).

    The vocabulary the dumps use comes from the same data's train split, or
    the bundled one where the data has none (imported SearchGym is test-only); 30 of them
    (a stable sample) are plenty for a vocabulary and a pool of distractor answers.
    """
    tasks = exploits.sample_tasks(load_tasks(env_id, split, data_path), sample)
    try:
        train = load_tasks(env_id, "train", data_path)
    except DataError:
        train = load_tasks(env_id, "train")
    scores = asyncio.run(exploit_scores(env_id, tasks, exploits.sample_tasks(train, 30)))
    means = {k: round(sum(v) / len(v), 4) if v else 0.0 for k, v in scores.items()}
    cls = get_env_class(env_id)
    best = [float(cls.max_return(t)) for t in tasks]
    floor = max(means[b] for b in exploits.BASELINES)
    margin = tolerance * sum(best) / max(1, len(best))
    bad = {k: m for k, m in means.items() if m > floor + margin}
    assert not bad, (
        f"{env_id}: exploit policies beat doing nothing ({floor} + {margin:.3f}): "
        f"{bad}; per task: { {k: scores[k] for k in bad} }"
    )
    return means


def run_cli(gym: str, split: str = "test", data_path: str | Path | None = None, sample: int | None = None) -> int:
    """``userrl check env ID|all``: every check of one gym (or all), a line per exploit
    policy on stdout; exit code 1 when a check fails."""
    failed = 0
    for env_id in list_envs() if gym == "all" else [get_env_class(gym).id]:
        try:
            means = check_env(env_id, split, data_path, sample=sample)
        except (AssertionError, UserRLError) as exc:  # a task that cannot reset fails too
            failed += 1
            print(f"FAIL {env_id}: {exc}")
            continue
        cells = " ".join(f"{k}={v:g}" for k, v in means.items())
        print(f"ok   {env_id}: experts at the maximum; exploits {cells}")
    return 1 if failed else 0
