"""Play episodes in this process with a policy backend: the final evaluation of ``userrl train``.

The same gyms, scripted users and chat/token format as the bus; one batched ``generate`` per
turn across all live episodes. (``userrl eval`` runs the same protocol through the workers.)
Scores follow the paper: an episode's episode score is its gym's ``episode_score`` (the sum of
its turn rewards; TravelGym: the mean answer score over the aspects); a gym's ``episode_score`` in
the report is the mean over its test episodes (also under ``score``, its deprecated name, for one
release).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

from userrl.agents.base import GenRequest, PolicyBackend, Sampling
from userrl.envs.datasets import data_tasks
from userrl.envs.episode import Transcript, play_turn, reset_episode
from userrl.envs.registry import make
from userrl.envs.users import InProcessUser

log = structlog.get_logger(__name__)


@dataclass
class LocalEpisode(Transcript):
    """A :class:`Transcript` with the token-in/token-out state its policy requests carry."""

    task: dict[str, Any] = field(default_factory=dict)
    prompt_ids: list[int] | None = None
    n_seen: int = 0

    @property
    def env_id(self) -> str:
        return self.env.id

    @property
    def state(self) -> dict[str, Any]:
        return self.states[-1]

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


async def play(
    backend: PolicyBackend,
    episodes: list[tuple[str, dict[str, Any]]],
    *,
    max_turns: int,
    sampling: Sampling,
    seed: int = 0,
    show_reward: bool = False,
    options: dict[str, dict[str, Any]] | None = None,
) -> list[LocalEpisode]:
    """Run every (env_id, task) episode to its end; return them with their turn rewards.
    ``options``: gym options by env id (a gym not listed plays with its defaults)."""
    user = InProcessUser()
    eps: list[LocalEpisode] = []
    envs = {}
    for env_id, task in episodes:
        if env_id not in envs:
            envs[env_id] = make(env_id, max_turns=max_turns, **(options or {}).get(env_id, {}))
        state, messages = await reset_episode(envs[env_id], task, seed)
        eps.append(LocalEpisode(envs[env_id], messages, states=[state], task=task))
    while live := [e for e in eps if not e.done]:
        reqs = [
            GenRequest(
                episode_id=str(i),
                env_id=e.env_id,
                messages=list(e.messages),
                prompt_ids=e.prompt_ids,
                n_seen=e.n_seen,
                sampling=sampling,
                task=e.task,
            )
            for i, e in enumerate(live)
        ]
        results = await backend.generate(reqs)
        for e, r in zip(live, results, strict=True):
            e.add(await play_turn(e.env, e.state, r.text, user, show_reward=show_reward))
            e.prompt_ids = (list(r.prompt_ids) + list(r.token_ids)) if r.token_ids else None
            e.n_seen = len(e.messages) - 1 if r.token_ids else 0
    return eps


async def evaluate(
    backend: PolicyBackend,
    gyms: list[str],
    *,
    split: str = "test",
    n_tasks: int = 15,
    max_turns: int = 6,
    temperature: float = 0.0,
    max_new_tokens: int = 48,
    show_reward: bool = False,
    samples: int = 1,
    seed: int = 0,
    data: str = "",
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Per-gym mean episode score (the gym's ``episode_score``) and format-error rate on ``split`` of
    ``data`` (a deploy config's data folder; "" = bundled), gyms built with ``options``;
    with ``samples`` > 1 each task is played that many times (sampling) and all are averaged."""
    episodes = [(g, t) for g in gyms for t in data_tasks(g, split, data)[:n_tasks] for _ in range(samples)]
    played = await play(
        backend,
        episodes,
        max_turns=max_turns,
        show_reward=show_reward,
        options=options,
        sampling=Sampling(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed),
    )
    report: dict[str, Any] = {"gyms": {}}
    for g in gyms:
        mine = [e for e in played if e.env_id == g]
        turns = sum(len(e.rewards) for e in mine)
        episode_score = sum(e.score for e in mine) / max(len(mine), 1)
        report["gyms"][g] = {
            "episode_score": episode_score,
            "score": episode_score,  # deprecated name of ``episode_score`` (one release)
            "episodes": len(mine),
            "format_error_rate": sum(e.format_errors for e in mine) / max(turns, 1),
        }
    n = sum(v["episodes"] for v in report["gyms"].values())
    report["overall"] = sum(v["episode_score"] * v["episodes"] for v in report["gyms"].values()) / max(n, 1)
    return report
