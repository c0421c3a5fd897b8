"""``check_env``: everything a userrl gym must satisfy, as one call for the test suite.

1. Gymnasium's own ``check_env`` passes through the adapter, with no warnings.
2. Every state is msgpack-serializable and round-trips unchanged, and re-executing a step from
   its snapshot (as an env worker does after a crash) gives the same result.
3. A seed reproduces a rollout: same seed + task + actions -> same observations and rewards,
   through the async API and through the adapter.
4. The scripted expert reaches the maximum score (the gym's ``max_score``) and collects the
   most reward an episode at that score can collect in the turn cap (``max_return_within``;
   ``max_return`` unless the cap cuts it) on every task of the split, ending the episode by
   termination. Everything plays at the gym's turn cap, 16 by default (the paper's).
5. The exploit suite (:mod:`userrl.envs.exploits`): no adversarial scripted policy collects
   more reward than doing nothing (:func:`check_exploits`), except the tricks a gym's reward
   pays by design (:data:`userrl.envs.exploits.REPORTED`), which are reported. On data whose
   tasks can only be judged on the final pick (imported TravelGym: ``final_pick_only``) the
   suite is reported too: a prior over the training answers is all any policy can use there.

All of it runs with the in-process scripted user, so it needs no network and no model.
"""

from __future__ import annotations

import asyncio
import math
import warnings
from dataclasses import dataclass, field
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


def expert_policy(env: Env) -> Policy:
    """The gym's scripted expert, planning for ``env``'s turn cap."""

    def policy(task: Task, messages: list[dict[str, str]]) -> str:
        return env.expert_action(task, messages, env.max_turns)

    return policy


def probing_policy(cls: type[Env]) -> Policy:
    """A few error-path actions, then the expert (the expert only counts its own turns)."""

    def policy(task: Task, messages: list[dict[str, str]]) -> str:
        own = [m for m in messages if m.get("role") == "assistant"]
        if len(own) < len(PROBES):
            return PROBES[len(own)]
        return cls.expert_action(task, [m for m in messages if m.get("role") != "assistant"] + own[len(PROBES) :])

    return policy


@dataclass
class GymReport:
    """What ``check_env`` found on one gym: the expert's return against the most a task
    offers, the exploit suite's mean returns, and what was only reported (with why)."""

    env_id: str
    max_turns: int
    tasks: int = 0
    expert_return: float = 0.0  #: mean over the tasks
    max_return: float = 0.0  #: mean ``max_return`` (what a task offers without a turn cap)
    exploits: dict[str, float] = field(default_factory=dict)
    reported: dict[str, str] = field(default_factory=dict)  #: trick (or "suite") -> why not held

    def line(self) -> str:
        """The ``test-gym`` line of a passing gym."""
        share = self.expert_return / self.max_return if self.max_return else 1.0
        head = f"ok   {self.env_id} ({self.max_turns} turns): experts at the maximum score"
        if share < 1 - 1e-9:
            head += (
                f"; their return {self.expert_return:g} of {self.max_return:g} per episode ({share:.1%}): "
                f"{self.max_turns} turns leave no room for the rest"
            )
        cells = " ".join(f"{k}={v:g}" for k, v in self.exploits.items())
        out = [f"{head}; exploits {cells}"]
        for k, why in self.reported.items():
            out.append(
                f"     {why}: the exploits are reported, not held to the tolerance (a prior over the training "
                "answers is all any policy can use here); train and eval leave this data out unless asked"
                if k == "suite"
                else f"     reported, not held to the tolerance: {k}: {why}"
            )
        return "\n".join(out)


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


async def _check_tasks(cls: type[Env], tasks: list[Task], max_turns: int | None = None) -> tuple[float, float]:
    env = cls(max_turns=max_turns)
    got = offered = 0.0
    for i, task in enumerate(tasks):
        if i < 3:  # replay + determinism on a few tasks keeps the check fast
            runs = [await rollout(env, task, probing_policy(cls), seed=11, check_replay=True) for _ in range(2)]
            a, b = runs
            assert (a.observations, a.rewards) == (b.observations, b.rewards), (
                f"{cls.id}: task {task['id']}: same seed and actions gave different episodes"
            )
        tr = await rollout(env, task, expert_policy(env), seed=i)
        best, most = float(cls.max_score(task)), float(cls.max_return_within(task, env.max_turns))
        assert math.isclose(tr.score, best, abs_tol=1e-6) and math.isclose(tr.total_reward, most, abs_tol=1e-6), (
            f"{cls.id}: expert scored {tr.score} (max {best}) with rewards {tr.total_reward} "
            f"(max {most} in {env.max_turns} turns) on task {task['id']}; transcript: {tr.messages[2:]}"
        )
        assert tr.terminated and not tr.truncated, (
            f"{cls.id}: expert episode on task {task['id']} did not terminate by itself in {env.max_turns} turns"
        )
        got, offered = got + tr.total_reward, offered + float(cls.max_return(task))
    return got, offered


def check_tasks(env_id: str, tasks: list[Task], max_turns: int | None = None) -> tuple[float, float]:
    """Checks 2-4 of the module docstring (without Gymnasium) on the given tasks, at the
    gym's turn cap or ``max_turns``; returns the expert's total return and the tasks' total
    ``max_return``."""
    return asyncio.run(_check_tasks(get_env_class(env_id), tasks, max_turns))


def check_env(
    env_id: str,
    split: str = "test",
    data_path: str | Path | None = None,
    sample: int | None = None,
    max_turns: int | None = None,
) -> GymReport:
    """Run every check in the module docstring; AssertionError says what failed and where.

    ``sample`` limits checks 4 and 5 to that many tasks (a stable hash of their ids picks
    them); ``max_turns`` overrides the gym's turn cap (16, the paper's).
    """
    check_gymnasium(env_id, split, data_path)
    check_adapter_determinism(env_id, split, data_path)
    tasks = exploits.sample_tasks(load_tasks(env_id, split, data_path), sample)
    got, offered = check_tasks(env_id, tasks, max_turns)
    report = GymReport(env_id, get_env_class(env_id)(max_turns=max_turns).max_turns, len(tasks))
    report.expert_return = round(got / max(1, len(tasks)), 4)
    report.max_return = round(offered / max(1, len(tasks)), 4)
    report.exploits = check_exploits(
        env_id, split, data_path, sample=sample, max_turns=max_turns, reported=report.reported
    )
    return report


async def _expert_golds(env: Env, tasks: list[Task]) -> dict[str, list[str]]:
    return {str(t["id"]): exploits.answers_of((await rollout(env, t, expert_policy(env))).messages) for t in tasks}


async def exploit_scores(
    env_id: str, tasks: list[Task], train: list[Task], max_turns: int | None = None
) -> dict[str, list[float]]:
    """Each exploit policy's episode returns on ``tasks`` (vocabulary from ``train``): the
    reward a policy trained on the gym would collect by exploiting it."""
    env = get_env_class(env_id)(max_turns=max_turns)
    golds = await _expert_golds(env, tasks)
    train_golds = [g for gs in (await _expert_golds(env, train)).values() for g in gs]
    out: dict[str, list[float]] = {}
    every = exploits.policies(train, train_golds, golds)
    for name, policy in every.items():
        out[name] = [(await rollout(env, t, policy, seed=i)).total_reward for i, t in enumerate(tasks)]
    longer = get_env_class(env_id)(max_turns=exploits.FLOOR_TURNS * env.max_turns)
    for floor in sorted(set(exploits.FLOORS.values())):
        key = f"{floor}@{longer.max_turns}"
        out[key] = [(await rollout(longer, t, every[floor], seed=i)).total_reward for i, t in enumerate(tasks)]
    return out


def final_pick_only(env_id: str, tasks: list[Task]) -> str | None:
    """The gym's reason when every one of ``tasks`` can be judged on its final pick only."""
    cls = get_env_class(env_id)
    why = {cls.final_pick_only(t) for t in tasks}
    return next(iter(why)) if len(why) == 1 and None not in why else None


def check_exploits(
    env_id: str,
    split: str = "test",
    data_path: str | Path | None = None,
    sample: int | None = None,
    tolerance: float = exploits.TOLERANCE,
    abs_tolerance: float = exploits.ABS_TOLERANCE,
    max_turns: int | None = None,
    reported: dict[str, str] | None = None,
) -> dict[str, float]:
    """Fail if an exploit's mean return (sum of turn rewards) exceeds the best do-nothing
    baseline's by more than ``tolerance`` times the mean most reward a task offers (the gym's
    ``max_return``; see :data:`userrl.envs.exploits.TOLERANCE`) or by more than
    ``abs_tolerance``. Tricks the gym's reward pays by design
    (:data:`userrl.envs.exploits.REPORTED`) and every trick on final-pick-only data are
    returned but not held to it; ``reported`` (when given) gets their names and reasons.

    The vocabulary the dumps use comes from the same data's train split, or
    the bundled one where the data has none (imported SearchGym is test-only); 30 of them
    (a stable sample) are plenty for a vocabulary and a pool of distractor answers.
    """
    tasks = exploits.sample_tasks(load_tasks(env_id, split, data_path), sample)
    try:
        train = load_tasks(env_id, "train", data_path)
    except DataError:
        train = load_tasks(env_id, "train")
    scores = asyncio.run(exploit_scores(env_id, tasks, exploits.sample_tasks(train, 30), max_turns))
    means = {k: round(sum(v) / len(v), 4) if v else 0.0 for k, v in scores.items()}
    cls = get_env_class(env_id)
    best = [float(cls.max_return(t)) for t in tasks]
    floor = max(means[b] for b in exploits.BASELINES)
    margin = min(tolerance * sum(best) / max(1, len(best)), abs_tolerance)
    notes = dict(exploits.REPORTED.get(cls.id, {}))
    if (why := final_pick_only(env_id, tasks)) is not None:
        notes = {"suite": why}
    if reported is not None:
        reported.update(notes)
    # "sweep_single@32": the floor of the packed sweeps (exploits.FLOORS), not a trick itself
    held = {} if "suite" in notes else {k: m for k, m in means.items() if k not in notes and "@" not in k}
    cap = get_env_class(env_id)(max_turns=max_turns).max_turns
    floors = {k: means[f"{f}@{exploits.FLOOR_TURNS * cap}"] for k, f in exploits.FLOORS.items()}
    bad = {k: m for k, m in held.items() if m > floors.get(k, floor) + margin}
    assert not bad, (
        f"{env_id}: exploit policies beat doing nothing ({floor} + {margin:.3f}; packed sweeps: the same "
        f"topics asked one per question, {floors}): {bad}; per task: { {k: scores[k] for k in bad} }"
    )
    return means


def run_cli(
    gym: str,
    split: str = "test",
    data_path: str | Path | None = None,
    sample: int | None = None,
    max_turns: int | None = None,
) -> int:
    """``userrl test-gym ID|all``: every check of one gym (or all), lines per gym on stdout
    (the expert's return where the cap cuts it, each exploit's mean return, what is only
    reported and why); exit code 1 when a check fails."""
    failed = 0
    for env_id in list_envs() if gym == "all" else [get_env_class(gym).id]:
        try:
            report = check_env(env_id, split, data_path, sample=sample, max_turns=max_turns)
        except (AssertionError, UserRLError) as exc:  # a task that cannot reset fails too
            failed += 1
            print(f"FAIL {env_id}: {exc}")
            continue
        print(report.line())
    return 1 if failed else 0
