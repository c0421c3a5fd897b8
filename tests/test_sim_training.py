"""Issue 22: GRPO steps log the simulator's health, and the user role swaps mid-training.

The learner trains the tiny model for a few steps over the bus (in process: env, policy, user
and reward workers, the GRPO loop), with an LLM user served over HTTP (a local OpenAI-compatible
server answering like the scripted user, so its verdicts are well-formed). After step 2 the
run's user target points the user role at the scripted user, while the learner keeps training:
the steps' health metrics in ``metrics.jsonl`` say which simulator answered.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

torch = pytest.importorskip("torch")

from tests.grpo_stack import grpo_stack  # noqa: E402
from tests.openai_server import FakeOpenAIServer  # noqa: E402
from tests.test_user_worker import ScriptedLLM  # noqa: E402
from userrl.agents.tiny import build_tiny_model  # noqa: E402
from userrl.bus.transport import Bus  # noqa: E402
from userrl.config import load_config  # noqa: E402
from userrl.learner.loop import learn  # noqa: E402
from userrl.learner.metrics import MetricsLog  # noqa: E402
from userrl.sim_users.simulators import wait_applied, write_target  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]

CI = Path(__file__).resolve().parents[1] / "deploy" / "ci.yaml"
GYM = "userrl/Telepathy-v0"
LLM = "openai:user-a@1"


@pytest.mark.timeout(300)
async def test_grpo_logs_simulator_health_and_trains_through_a_user_swap(
    bus: Bus, run_name: str, tmp_path: Path
) -> None:
    model = build_tiny_model(tmp_path / "policy", seed=0)
    metrics_path = tmp_path / "metrics.jsonl"
    with FakeOpenAIServer(ScriptedLLM([GYM]), model="user-a") as srv:
        cfg = load_config(
            CI,
            [
                f"run={run_name}",
                f"run_dir={tmp_path}",
                "user.backend=openai",
                f"user.base_url={srv.base_url}",
                "user.model=user-a",
                "user.model_version=1",
                "user.api_key_env=",
            ],
        )
        workers, dispatcher, learner = grpo_stack(bus, model, cfg, GYM, tmp_path / "learner", group_timeout_s=120)
        metrics = MetricsLog(metrics_path)

        async def swap_after_step_2() -> None:
            while len(metrics.read()) < 2:
                await anyio.sleep(0.05)
            target = await write_target(bus, cfg, {"backend": "scripted"})
            await wait_applied(bus, target.id, 30)

        async with anyio.create_task_group() as tg:
            for w in workers:
                tg.start_soon(w.async_run)
            tg.start_soon(swap_after_step_2)
            rows = await learn(
                bus,
                learner,
                dispatcher,
                steps=6,
                groups_per_step=2,
                metrics=metrics,
                time_budget_s=600,
                group_timeout_s=120,
            )
            for w in workers:
                w.stop()
    assert learner.version == 6 and [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    logged = metrics.read()
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5, 6]
    for r in logged:
        assert r["rollout/trained_tokens"] > 0, "GRPO trains on every step"
        assert r["sim/episodes"] >= 4 and r["sim/user_calls"] > 0
        assert r["sim/format_error_rate"] == 0.0 and r["sim/leak_hits"] == 0, "well-formed verdicts"
        assert (
            r["sim/early_hangups"] == 0
            and sum(v for k, v in r.items() if k.startswith("sim/ended/")) == r["sim/episodes"]
        )
        assert r["sim/user_latency_ms"] > 0 and r["sim/user_latency_ms_p95"] > 0
        assert isinstance(r["sim/user"], str)
    first, last = logged[0], logged[-1]
    assert first[f"sim/by/{LLM}"] == first["sim/user_calls"] and "sim/by/scripted" not in first
    assert last.get("sim/by/scripted", 0) > 0, "after the swap the scripted user answers"
    assert last.get(f"sim/by/{LLM}", 0) < last["sim/user_calls"]
    assert srv.chat_requests, "the LLM user was asked over HTTP before the swap"
