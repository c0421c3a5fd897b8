"""A turn sampled by the tiny policy reaches the learner's training sequence unchanged: the
token ids, behaviour logprobs and policy version the backend returned are the ones the learner
assembles, through env, user and reward workers over a real bus."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("torch")

from userrl.agents.base import GenRequest, GenResult  # noqa: E402
from userrl.agents.hf_backend import HFBackend  # noqa: E402
from userrl.agents.tiny import build_tiny_model  # noqa: E402
from userrl.agents.worker import PolicyWorker  # noqa: E402
from userrl.bus.messages import ScoredGroup  # noqa: E402
from userrl.bus.records import ScoredTrajectory, TurnRecord  # noqa: E402
from userrl.bus.transport import Bus  # noqa: E402
from userrl.bus.worker import Worker, WorkerSettings  # noqa: E402
from userrl.envs.datasets import load_tasks  # noqa: E402
from userrl.envs.worker import EnvWorker  # noqa: E402
from userrl.learner.reward.worker import RewardWorker  # noqa: E402
from userrl.learner.sequences import assemble  # noqa: E402
from userrl.rollouts import make_resets, send_resets, wait_trajectories  # noqa: E402
from userrl.sim_users.worker import UserWorker  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

GYM = "userrl/Telepathy-v0"


class RecordingBackend(HFBackend):
    """The tiny model's backend, keeping every result it returned, per episode."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.results: dict[str, list[GenResult]] = defaultdict(list)

    async def generate_each(self, requests: list[GenRequest]) -> list[GenResult]:
        out = await super().generate_each(requests)
        for req, res in zip(requests, out, strict=True):
            self.results[req.episode_id].append(res)
        return out


def settings(name: str, **kw: Any) -> WorkerSettings:
    return WorkerSettings(name=name, heartbeat_interval_s=0.1, heartbeat_ttl_s=0.6, reclaim_interval_s=0.3, **kw)


async def run_until_done(workers: list[Worker], done: Any) -> Any:
    async with anyio.create_task_group() as tg:
        for w in workers:
            tg.start_soon(w.async_run)
        try:
            return await done()
        finally:
            for w in workers:
                w.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)  # a tiny HF model generates on a loaded CPU
async def test_sampled_turns_reach_the_learners_sequence_unchanged(bus: Bus, tmp_path: Path) -> None:
    backend = RecordingBackend(build_tiny_model(tmp_path / "tiny", seed=2), seed=0)
    resets = make_resets(
        GYM, load_tasks(GYM, "test")[:1], group_size=2, seed=1, max_turns=3, sampling={"max_new_tokens": 8}
    )
    workers: list[Worker] = [
        EnvWorker(bus, settings("env-0")),
        UserWorker(bus, settings("usr-0")),
        PolicyWorker(bus, settings("pol-0"), backend=backend),
    ]

    async def rolled_out() -> Any:
        await send_resets(bus, resets)
        return await wait_trajectories(bus, [r.episode_id for r in resets], timeout=240)

    trajs = await run_until_done(workers, rolled_out)
    assert all(t.status == "ok" for (t,) in trajs.values())

    stream, group = bus.keys.stream("learner"), bus.keys.group("learner")
    await bus.ensure_group(stream, group)
    await RewardWorker(bus, settings("reward-0", burst=True)).async_run()
    (delivery,) = await bus.read(stream, group, "learner-0", count=10)
    msg = delivery.msg
    assert isinstance(msg, ScoredGroup) and msg.status == "ok"

    assert len(msg.trajectories) == 2
    for item in msg.trajectories:
        assert isinstance(item, ScoredTrajectory) and item.turns
        assert all(isinstance(t, TurnRecord) for t in item.turns)
        seq = assemble(item.turns)
        sampled = backend.results[item.episode_id]
        for i, (turn, start, n) in enumerate(zip(item.turns, seq.turn_starts, seq.turn_lengths, strict=True)):
            # what the backend returned for this turn (a re-delivered request may have generated twice:
            # the env kept one of them, and it must be one the backend returned, bit for bit)
            matches = [r for r in sampled if r.prompt_ids == turn.prompt_ids and r.token_ids == turn.token_ids]
            assert matches and n == len(turn.token_ids) > 0
            assert seq.input_ids[start : start + n] == turn.token_ids
            assert seq.input_ids[:start] == turn.prompt_ids
            assert any(  # exact: no float was rounded on the way
                seq.behaviour_logprobs[start : start + n] == r.logprobs
                and seq.policy_version[start : start + n] == [r.version] * n
                for r in matches
            )
            assert seq.turn_index[start : start + n] == [i] * n
            assert turn.advantages is not None and len(turn.advantages) == n
