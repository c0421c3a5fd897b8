"""One process's whole GRPO stack for tests: env, policy (the teacher-forced expert on a tiny
model), user (from the deploy config) and reward workers, a dispatcher and a learner. Import it
after ``pytest.importorskip("torch")``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.expert_policy import TeacherForcedExpert
from userrl.agents.worker import PolicyWorker
from userrl.bus.transport import Bus
from userrl.bus.worker import WorkerSettings
from userrl.config import DeployConfig
from userrl.envs.datasets import load_tasks
from userrl.envs.worker import EnvWorker
from userrl.learner.dispatch import Dispatcher
from userrl.learner.grpo_learner import GRPOLearner
from userrl.learner.losses import LossConfig
from userrl.learner.reward.worker import RewardWorker
from userrl.sim_users.worker import UserWorker

FAST = dict(reclaim_interval_s=0.2, heartbeat_interval_s=0.1, heartbeat_ttl_s=1.0)


def grpo_stack(
    bus: Bus, model: Path, cfg: DeployConfig, gym: str, learner_dir: Path, group_timeout_s: float
) -> tuple[list[Any], Dispatcher, GRPOLearner]:
    """The four workers (not started), a dispatcher of ``gym``'s train tasks (groups of 2, 4
    turns, 2 groups a step) and a learner on ``model``."""

    def s(name: str) -> WorkerSettings:
        return WorkerSettings(name=name, **FAST)  # type: ignore[arg-type]

    workers = [
        EnvWorker(bus, s("env-0"), send_task_to_policy=True),
        PolicyWorker(bus, s("policy-0"), backend=TeacherForcedExpert(model)),
        UserWorker.from_config(bus, s("user-0"), cfg),
        RewardWorker(bus, s("reward-0"), group_timeout_s=group_timeout_s),
    ]
    dispatcher = Dispatcher(
        bus,
        {gym: load_tasks(gym, "train")},
        group_size=2,
        max_in_flight=4,
        max_turns=4,
        sampling={"temperature": 1.0, "max_new_tokens": 48},
        groups_per_step=2,
        max_staleness=1,
    )
    learner = GRPOLearner(model, learner_dir, lr=1e-3, loss=LossConfig(max_staleness=100), device="cpu")
    return workers, dispatcher, learner
