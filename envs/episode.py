"""Playing an episode: one turn, the same everywhere; and the env worker's episode records.

:func:`play_turn` is the one place a policy's output becomes a gym step: the output is parsed
(:func:`~userrl.envs.actions.parse_action`), the gym steps, and the policy's next message is
the gym's feedback (with ``Reward: r`` in training), as a ``tool`` message when the action was
a tool call. The env worker, in-process evaluation (:mod:`userrl.learner.evaluation.in_process`), the SFT
demonstrations and the gym checks (:mod:`userrl.envs.check`) all play turns with it;
:func:`play_episode` plays a whole episode with a policy function in this process.

Over the bus, an episode's whole progress lives in one msgpack blob in the
``state:{episode}`` hash, written in the same atomic commit as the messages a step sends. A
step that needs the simulated user runs against a :class:`ReplayUser`: replies already stored
for ``(episode, seq, hop)`` are returned in order; the first missing one raises
:class:`NeedReply`, the worker commits the request, and when the reply arrives the step is
re-executed from the same snapshot with one more stored reply. Gyms are deterministic given
(state, action, replies), so re-executing is exact; nothing is ever asked twice and nothing
waits on a reply sent to a dead worker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from userrl.bus.records import EpisodeSnapshot
from userrl.envs.actions import Action, parse_action
from userrl.envs.base import Env, State, StepResult, Task
from userrl.envs.users import InProcessUser
from userrl.sim_users.base import SimUser, UserQuery

#: a policy played in this process: ``policy(task, messages) -> output text``
Policy = Callable[[Task, list[dict[str, str]]], str]


def feedback_text(observation: str, reward: float, show_reward: bool = True) -> str:
    """What the policy sees after a step: the gym's feedback and, in training, ``Reward: r``."""
    return observation + (f"\nReward: {reward:g}" if show_reward else "")


@dataclass(frozen=True, slots=True)
class Turn:
    """One played turn: the policy's output, its parsed action, the gym's step, and the
    message the policy sees next (``feedback``)."""

    text: str
    action: Action
    result: StepResult
    feedback: dict[str, str]

    @property
    def messages(self) -> list[dict[str, str]]:
        """The turn as chat messages: the policy's output, then the feedback."""
        return [{"role": "assistant", "content": self.text}, self.feedback]

    @property
    def done(self) -> bool:
        return self.result.terminated or self.result.truncated


async def play_turn(env: Env, state: State, text: str, user: SimUser, *, show_reward: bool) -> Turn:
    """Parse ``text``, step ``env`` from ``state`` with it, and build the policy's feedback.

    Exceptions of the step propagate (a :class:`ReplayUser`'s :class:`NeedReply` among them).
    """
    action = parse_action(text)
    result = await env.step(state, action, user)
    feedback = {
        "role": "tool" if action.via_tool else "user",
        "content": feedback_text(result.observation, result.reward, show_reward),
    }
    return Turn(text, action, result, feedback)


async def reset_episode(env: Env, task: Task, seed: int) -> tuple[State, list[dict[str, str]]]:
    """Reset ``env`` on ``task``: the first state and the first messages the policy sees (the
    gym's rules as the system message, then its first observation)."""
    state, observation, _info = await env.reset(task, seed)
    return state, [{"role": "system", "content": env.system_prompt(task)}, {"role": "user", "content": observation}]


@dataclass
class Transcript:
    """One episode played in this process: the chat as the policy saw it, and per turn the
    reward, the observation and the state after it (``states[0]`` is the reset state)."""

    env: Env
    messages: list[dict[str, str]]
    rewards: list[float] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    states: list[State] = field(default_factory=list)
    format_errors: int = 0
    terminated: bool = False
    truncated: bool = False

    def add(self, turn: Turn) -> None:
        self.messages += turn.messages
        self.rewards.append(turn.result.reward)
        self.observations.append(turn.result.observation)
        self.states.append(turn.result.state)
        self.format_errors += turn.action.choice == "invalid"
        self.terminated, self.truncated = turn.result.terminated, turn.result.truncated

    @property
    def score(self) -> float:
        """The gym's evaluation score of the episode (:meth:`Env.episode_score`)."""
        return self.env.episode_score(self.rewards, self.states[-1])

    @property
    def total_reward(self) -> float:
        """The episode's return: the sum of its turn rewards (what training maximizes)."""
        return round(sum(self.rewards), 4)


async def play_episode(
    env: Env,
    task: Task,
    policy: Policy,
    *,
    seed: int = 0,
    user: SimUser | None = None,
    show_reward: bool = True,
    after_turn: Callable[[State, Turn], Awaitable[None]] | None = None,
) -> Transcript:
    """Play ``task`` to its end with ``policy`` and a user in this process (the gym's scripted
    user unless ``user`` is given). ``after_turn(state_before, turn)`` runs after each turn
    (the gym checks re-execute the step there)."""
    user = user if user is not None else InProcessUser()
    state, messages = await reset_episode(env, task, seed)
    tr = Transcript(env, messages, states=[state])
    while True:
        turn = await play_turn(env, state, policy(task, tr.messages), user, show_reward=show_reward)
        if after_turn is not None:
            await after_turn(state, turn)
        tr.add(turn)
        state = turn.result.state
        if turn.done:
            return tr


class NeedReply(Exception):  # noqa: N818 - control flow, not an error
    """Raised by :class:`ReplayUser` when a step asks for a reply that is not stored yet."""

    def __init__(self, hop: int, query: UserQuery) -> None:
        super().__init__(f"reply for hop {hop} not stored yet")
        self.hop = hop
        self.query = query


class ReplayUser:
    """Answers from stored replies, in order; raises NeedReply at the first missing hop."""

    def __init__(self, replies: dict[int, dict[str, Any]], history: list[dict[str, Any]] | None = None) -> None:
        self.replies = replies
        self.history = history or []
        self.hop = 0

    async def ask(self, query: UserQuery) -> dict[str, Any]:
        self.hop += 1
        if not query.history and self.history:
            query = UserQuery(
                env_id=query.env_id,
                kind=query.kind,
                name=query.name,
                payload=query.payload,
                task=query.task,
                history=self.history,
            )
        reply = self.replies.get(self.hop)
        if reply is None:
            raise NeedReply(self.hop, query)
        return reply


#: the env worker's episode record (the snapshot in ``state:{episode}``), owned by the bus
Episode = EpisodeSnapshot
