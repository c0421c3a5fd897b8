"""The environment API.

A gym is a small class with a versioned id (``userrl/Telepathy-v0``), a task dataset, and two
coroutines::

    state, observation, info = await env.reset(task, seed)
    result = await env.step(state, action, user)   # -> StepResult

All episode state is one msgpack-serializable ``dict`` (only str/int/float/bool/None, lists and
dicts of them), so an env worker can snapshot it after each committed step and any other env
worker can continue the episode. ``step`` must not mutate its input state; it returns the new
state in the :class:`StepResult`. Randomness comes only from the seed stored in the state.
``terminated`` is the task's own end, ``truncated`` the turn cap (Gymnasium's meanings).

Subclasses implement ``on_reset`` and ``on_step``; :meth:`Env.step` handles what every gym shares:
invalid actions (format-error observation, reward 0), ``[finish]`` (ends with reward 0), the
turn cap, and bookkeeping (``state["turn"]``).

A gym class carries everything about it that other parts need: its simulated user and judge
(``user_spec``), its evaluation score (:meth:`Env.episode_score`, the sum of the turn rewards
unless the gym says otherwise) and the score's maximum (:meth:`Env.max_score`), and the most
reward an episode can collect (:meth:`Env.max_return`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from userrl.envs.actions import Action
from userrl.errors import ConfigError
from userrl.sim_users.base import SimUser, UserSpec

State = dict[str, Any]
Task = dict[str, Any]

#: the paper's turn cap: UserRL's rollout (``multi_turn.max_turns: 16``) and its evaluation
#: (``eval.py --max_turns 16``) give every gym 16 turns
PAPER_MAX_TURNS = 16


@dataclass(frozen=True, slots=True)
class StepResult:
    state: State
    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)


def _private_copy(state: State) -> State:
    """A deep copy of a plain-data state; a msgpack round trip is several times faster than
    ``copy.deepcopy`` on nested dicts/lists, and states must survive it anyway (snapshots)."""
    return msgpack.unpackb(msgpack.packb(state, use_bin_type=True), raw=False)


class Env(ABC):
    """Base class of every gym. See the module docstring for the contract."""

    id: ClassVar[str]
    #: the gym's user/judge rules for every backend (scripted, openai, hf)
    user_spec: ClassVar[UserSpec]
    #: default turn cap (truncation): UserRL's, for every gym (its rollout stops after 16
    #: generations and its evaluation builds every gym with ``max_steps=16``)
    default_max_turns: ClassVar[int] = PAPER_MAX_TURNS
    format_error_observation: ClassVar[str] = (
        "Invalid action. Use interact_with_env with choice 'action', 'answer' or 'search', "
        "or write [action] ..., [answer] ..., [search] ... or [finish]."
    )

    #: the gym's settings (``gym_options`` in a deploy config) and their defaults; a gym
    #: declares every option it reads here, and nothing else is accepted
    option_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, max_turns: int | None = None, **options: Any) -> None:
        self.max_turns = int(max_turns if max_turns is not None else self.default_max_turns)
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        self.options = {**self.option_defaults, **self.check_options(options)}

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` unchanged if every key is one of :attr:`option_defaults`; else
        :class:`~userrl.errors.ConfigError` naming the gym and the allowed keys."""
        unknown = sorted(set(options) - set(cls.option_defaults))
        if unknown:
            allowed = ", ".join(sorted(cls.option_defaults)) or "(none)"
            raise ConfigError(f"{cls.id}: unknown gym option(s) {unknown}; allowed: {allowed}")
        return options

    # -- to implement ---------------------------------------------------------------------
    @abstractmethod
    def system_prompt(self, task: Task) -> str:
        """The rules of the game as the policy sees them (system message)."""

    @abstractmethod
    async def on_reset(self, task: Task, seed: int) -> tuple[State, str, dict[str, Any]]:
        """Initial gym state (without bookkeeping), first observation, info."""

    @abstractmethod
    async def on_step(self, state: State, action: Action, user: SimUser) -> StepResult:
        """One valid, non-finish action. ``state`` is a private deep copy."""

    @classmethod
    @abstractmethod
    def expert_action(cls, task: Task, messages: list[dict[str, str]], max_turns: int = PAPER_MAX_TURNS) -> str:
        """Scripted expert: the next action text given the hidden task and the chat so far,
        for an episode of at most ``max_turns`` turns (it reaches :meth:`max_score` and
        collects :meth:`max_return_within` reward in them)."""

    # -- scores (override where the gym's rule differs) -------------------------------------
    @classmethod
    def episode_score(cls, rewards: Sequence[float], state: State) -> float:
        """The paper's evaluation score of an episode, from its turn rewards and its last
        state: the sum of the rewards by default."""
        return float(sum(rewards))

    @classmethod
    def max_score(cls, task: Task) -> float:
        """The best :meth:`episode_score` an episode of ``task`` can reach."""
        return 1.0

    @classmethod
    def max_return(cls, task: Task) -> float:
        """The most reward (sum of turn rewards) an episode of ``task`` can collect; the same
        as :meth:`max_score` where the score is the sum of the rewards."""
        return cls.max_score(task)

    @classmethod
    def final_pick_only(cls, task: Task) -> str | None:
        """Why ``task`` can only be judged on its final answer (its data lacks what the gym
        plays on: imported TravelGym tasks have no catalog and no preferences), or None for a
        task that plays in full. Such tasks are left out of training and evaluation unless
        asked for (:func:`userrl.envs.datasets.select_gyms`)."""
        return None

    @classmethod
    def max_return_within(cls, task: Task, max_turns: int) -> float:
        """The most reward an episode that reaches :meth:`max_score` can collect within
        ``max_turns`` turns: :meth:`max_return` unless the gym says the cap cuts it (TravelGym,
        where each preference asked for costs a turn)."""
        return cls.max_return(task)

    # -- shared ---------------------------------------------------------------------------
    async def reset(self, task: Task, seed: int) -> tuple[State, str, dict[str, Any]]:
        state, obs, info = await self.on_reset(task, seed)
        state = dict(state)
        state.update(turn=0, seed=int(seed), task=task, env_id=self.id, max_turns=self.max_turns)
        return state, obs, info

    async def step(self, state: State, action: Action, user: SimUser) -> StepResult:
        state = _private_copy(state)
        state["turn"] = int(state.get("turn", 0)) + 1
        if action.choice == "invalid":
            res = StepResult(
                state,
                self.format_error_observation,
                0.0,
                False,
                False,
                {"format_error": action.error or "invalid action"},
            )
        elif action.choice == "finish":
            res = StepResult(state, "Episode finished.", 0.0, True, False, {"finished": True})
        else:
            res = await self.on_step(state, action, user)
        if not res.terminated and res.state["turn"] >= self.max_turns:
            res = StepResult(res.state, res.observation, res.reward, False, True, res.info)
        return res
