"""Run the GRPO learner on every rank of an ``accelerate launch`` (the distributed tests).

``python tests/dist_learner.py fixed MODEL OUT STEPS GROUPS_JSON``: rank 0 steps through the
fixed batches of GROUPS_JSON (a list of lists of groups) and publishes the final weights.
``... redis MODEL OUT STEPS KILL_STEP``: the real learner loop on the Redis of
``USERRL_REDIS_URL`` (run ``USERRL_RUN``); rank 1 dies (``os._exit``) in step KILL_STEP.
"""

from __future__ import annotations

import json
import os
import sys

import anyio

from userrl.learner.distributed import follow
from userrl.learner.grpo_learner import GRPOLearner
from userrl.learner.losses import LossConfig


def fixed(model: str, out: str, steps: int, groups_json: str) -> None:
    batches = json.loads(open(groups_json).read())
    learner = GRPOLearner(
        model,
        out,
        lr=1e-3,
        loss=LossConfig(max_staleness=1, kl_coef=0.05),
        ref_model_path=os.environ.get("REF_MODEL") or None,
        device="cpu",
        max_tokens_per_microbatch=int(os.environ.get("MICRO_TOKENS", "400")),
    )
    rank, world = learner.replicas.rank, learner.replicas.world
    os.makedirs(out, exist_ok=True)
    with open(f"{out}/rank-{rank}.json", "w") as f:  # the test checks each rank really joined
        json.dump({"rank": rank, "world": world}, f)
    if not learner.is_main:
        follow(learner)
        return
    for batch in batches[:steps]:
        learner.step(batch)
    learner.save_weights()
    learner.stop()


def redis_loop(model: str, out: str, steps: int, kill_step: int) -> None:
    from userrl.bus.client import make_client
    from userrl.bus.keys import Keys
    from userrl.bus.transport import Bus, BusSettings
    from userrl.learner.dispatch import Dispatcher
    from userrl.learner.loop import learn
    from userrl.learner.metrics import MetricsLog

    learner = GRPOLearner(model, out, lr=1e-3, loss=LossConfig(max_staleness=100), device="cpu")
    if not learner.is_main:
        real, n = learner.step, [0]

        def dying(groups: list) -> dict:
            n[0] += 1
            if n[0] == kill_step:
                os._exit(3)  # a rank lost mid-step (OOM kill, node failure)
            return real(groups)

        learner.step = dying  # type: ignore[method-assign]
        follow(learner)
        return

    async def main() -> None:
        bus = Bus(
            make_client(os.environ["USERRL_REDIS_URL"], block_ms=100),
            Keys(os.environ["USERRL_RUN"]),
            BusSettings(read_count=16, block_ms=100, min_idle_ms=60_000, max_deliveries=3),
        )
        dispatcher = Dispatcher(bus, {}, group_size=2, max_in_flight=0, max_turns=2, sampling={})
        await learn(
            bus,
            learner,
            dispatcher,
            steps=steps,
            groups_per_step=1,
            metrics=MetricsLog(f"{out}/m.jsonl"),
            time_budget_s=600,
            checkpoint_every=100,
            group_timeout_s=30,
        )

    try:
        anyio.run(main)
    finally:
        learner.stop()


if __name__ == "__main__":
    mode, model, out, steps, arg = sys.argv[1:6]
    if mode == "fixed":
        fixed(model, out, int(steps), arg)
    else:
        redis_loop(model, out, int(steps), int(arg))
