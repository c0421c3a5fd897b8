"""Gymnasium view of the userrl gyms: a synchronous ``gymnasium.Env`` over the async API.

``import userrl.envs`` registers every userrl gym with Gymnasium under its own id, by an
entry-point string naming this module's :class:`UserRLGymnasiumEnv` (so neither this module nor
any gym is imported until the first ``gymnasium.make``)::

    import gymnasium, userrl.envs
    env = gymnasium.make("userrl/Telepathy-v0", split="test")   # scripted user by default
    obs, info = env.reset(seed=0, options={"task_id": "tel-test-001"})
    obs, reward, terminated, truncated, info = env.step("[action] Is it alive?")

or, without the import, ``gymnasium.make("userrl.envs:userrl/Telepathy-v0")``.

Observations and actions are text. An action string is parsed by ``parse_action`` (the plain
``[choice] content`` parser by default; pass another, e.g. a tool-call parser, to the
constructor). The async gym runs on a private event loop owned by the env, so do not use this
adapter from inside a running event loop: use :class:`userrl.envs.base.Env` there.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import gymnasium
from gymnasium import spaces

from userrl.envs.actions import Action, parse_prefixed
from userrl.envs.base import State
from userrl.envs.datasets import load_tasks
from userrl.envs.registry import get_env_class
from userrl.envs.users import InProcessUser
from userrl.sim_users.base import SimUser

T = TypeVar("T")
MAX_TEXT = 65_536
#: what ``sample()`` draws from; any character is accepted (see :class:`AnyText`)
_SAMPLE_CHARSET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 []?.,"


class AnyText(spaces.Text):
    """A Text space that contains every string up to ``max_length`` (dialogue is free text).

    Gymnasium's Text requires a closed charset; user replies and imported data contain any
    Unicode, so membership only checks the type and length. Sampling still uses the charset.
    """

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length


class UserRLGymnasiumEnv(gymnasium.Env[str, str]):
    """One userrl gym as a ``gymnasium.Env`` (see the module docstring).

    ``reset(seed=..., options={"task_id": ...})`` picks the named task, or a task drawn from
    the env's ``np_random`` when no id is given; ``options={"task": {...}}`` plays an ad-hoc
    task. The gym's own seed is drawn from ``np_random`` too, so a seeded reset reproduces
    the episode.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        env_id: str,
        user: SimUser | None = None,
        split: str = "test",
        data_path: str | Path | None = None,
        max_turns: int | None = None,
        parse_action: Callable[[str], Action] = parse_prefixed,
        render_mode: str | None = None,
        **env_options: Any,
    ) -> None:
        self.env_id = env_id
        self.env = get_env_class(env_id)(max_turns=max_turns, **env_options)
        self.user: SimUser = user if user is not None else InProcessUser()
        self.tasks = load_tasks(env_id, split, data_path)
        self._by_id = {t["id"]: t for t in self.tasks}
        self.parse_action = parse_action
        self.render_mode = render_mode
        self.observation_space = AnyText(MAX_TEXT, min_length=0, charset=_SAMPLE_CHARSET)
        self.action_space = AnyText(256, min_length=0, charset=_SAMPLE_CHARSET)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state: State | None = None
        self._done = False

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if "task" in options:
            task = copy.deepcopy(dict(options["task"]))
        elif "task_id" in options:
            if options["task_id"] not in self._by_id:
                raise KeyError(f"no task {options['task_id']!r} in {self.env_id}'s dataset")
            task = copy.deepcopy(self._by_id[options["task_id"]])
        else:
            task = copy.deepcopy(self.tasks[int(self.np_random.integers(len(self.tasks)))])
        env_seed = int(self.np_random.integers(2**31 - 1))
        self._state, obs, info = self._run(self.env.reset(task, env_seed))
        self._done = False
        return obs, {**info, "system_prompt": self.env.system_prompt(task)}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("the episode has ended; call reset()")
        parsed = self.parse_action(action)
        res = self._run(self.env.step(self._state, parsed, self.user))
        self._state = res.state
        self._done = res.terminated or res.truncated
        return (res.observation, float(res.reward), bool(res.terminated), bool(res.truncated), copy.deepcopy(res.info))

    @property
    def state(self) -> State | None:
        """The gym's current msgpack-serializable state (a snapshot, for inspection)."""
        return copy.deepcopy(self._state)

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.close()
        super().close()

    def __del__(self) -> None:
        # Close the private loop so it does not warn about being left open at exit.
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            loop.close()
