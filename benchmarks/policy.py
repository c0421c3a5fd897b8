"""Policy generation throughput.

``--backend hf`` (default, CPU is fine): the hf backend's tokens/s with N concurrent episodes
handed over as one batch (``generate_each``, what the policy worker calls), versus the same N
requests one at a time, on the same freshly built tiny model in the same run. Design target:
batched >= 5x sequential at 32 episodes. The default run takes about 25 s on 2 CPU cores.

``--backend vllm`` (GPU + ``userrl[gpu]``): VLLMBackend next to raw vLLM (the backend's own
engine driven directly with the same token prompts and sampling params), i.e. the overhead of
the token-exact prompt building and result conversion.

    python benchmarks/policy.py [--backend hf|vllm] [--episodes 32] [--new-tokens 32]
                                [--repeats 3] [--size tiny|small] [--model DIR]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import structlog
from transformers.utils import logging as hf_logging

from userrl.agents.base import GenRequest, Sampling
from userrl.agents.tiny import build_tiny_model
from userrl.envs.actions import TOOL_SCHEMA
from userrl.errors import PolicyError

#: ``--size``: "tiny" is the CPU default policy; "small" is ~3M parameters with head_dim 64
#: (what the vllm path uses: GPU attention kernels want a common head size)
SIZES: dict[str, dict[str, int]] = {
    "tiny": {},
    "small": dict(
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
    ),
}
TOPICS = [
    "a red fruit",
    "a famous tower",
    "a desert animal",
    "a musical instrument",
    "a planet",
    "a kitchen tool",
    "a river",
    "a board game",
]


def requests(n: int, new_tokens: int) -> list[GenRequest]:
    sampling = Sampling(temperature=1.0, max_new_tokens=new_tokens)
    return [
        GenRequest(
            episode_id=f"bench-{i}",
            env_id="userrl/Telepathy-v0",
            sampling=sampling,
            messages=[
                {"role": "system", "content": "You play a guessing game. Ask yes/no questions."},
                {
                    "role": "user",
                    "content": f"I am thinking of {TOPICS[i % len(TOPICS)]}. Round {i}. Ask your first question.",
                },
            ],
        )
        for i in range(n)
    ]


async def timed(coro_fn: Any, *args: Any) -> tuple[float, Any]:
    """Seconds taken by ``await coro_fn(*args)``, and its result."""
    t0 = time.perf_counter()
    out = await coro_fn(*args)
    return time.perf_counter() - t0, out


async def bench_hf(model: Path, n: int, new_tokens: int, repeats: int) -> None:
    """Two prompt styles: the env worker's (tool schema in the system turn), and a short one."""
    for label, tools in (("tool prompt", (TOOL_SCHEMA,)), ("short prompt", None)):
        await bench_hf_once(model, n, new_tokens, repeats, label, tools)


async def bench_hf_once(model: Path, n: int, new_tokens: int, repeats: int, label: str, tools: Any) -> None:
    from userrl.agents.hf_backend import HFBackend

    backend = HFBackend(model, max_batch=n, seed=0, tools=tools)
    reqs = requests(n, new_tokens)
    await backend.generate(reqs)  # warm-up at the measured shapes
    await backend.generate(reqs[:1])
    print(f"-- {label}: {len(backend.prompt_ids(reqs[0]))} prompt tokens, median of {repeats} runs")

    async def one_by_one() -> list[Any]:
        return [(await backend.generate_each([r]))[0] for r in reqs]

    rates: dict[str, list[float]] = {"hf batched": [], "hf one-at-a-time": []}
    for _ in range(repeats):  # interleaved, so load changes hit both alike
        for name, fn in (("hf batched", lambda: backend.generate_each(reqs)), ("hf one-at-a-time", one_by_one)):
            seconds, out = await timed(fn)
            rates[name].append(sum(len(r.token_ids) for r in out) / seconds)
    for name, r in rates.items():
        print(f"{name:>18}: {n} episodes x {new_tokens} new tokens: {statistics.median(r):,.0f} tok/s")
    ratio = statistics.median(rates["hf batched"]) / statistics.median(rates["hf one-at-a-time"])
    print(f"{'ratio':>18}: batched/one-at-a-time = {ratio:.2f}x (target >= 5x)")


async def bench_vllm(model: Path, n: int, new_tokens: int, repeats: int) -> None:
    from vllm.inputs import TokensPrompt

    from userrl.agents.vllm_backend import VLLMBackend

    backend = VLLMBackend(model, seed=0)
    reqs = requests(n, new_tokens)
    prompts = [backend.prompt_ids(r) for r in reqs]
    params = backend.sampling_params(reqs[0].sampling)
    await backend.generate(reqs[:2])  # warm-up

    async def raw() -> list[Any]:
        outs: list[Any] = [None] * n

        async def one(i: int) -> None:
            async for o in backend.engine.generate(
                TokensPrompt(prompt_token_ids=prompts[i]), params, request_id=uuid.uuid4().hex
            ):
                outs[i] = o

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        return outs

    rates: dict[str, list[float]] = {"raw vLLM": [], "VLLMBackend": []}
    for _ in range(repeats):
        seconds, raw_out = await timed(raw)
        rates["raw vLLM"].append(sum(len(o.outputs[0].token_ids) for o in raw_out) / seconds)
        seconds, ours = await timed(backend.generate, reqs)
        rates["VLLMBackend"].append(sum(len(r.token_ids) for r in ours) / seconds)
    for name, r in rates.items():
        print(f"{name:>18}: {n} episodes x {new_tokens} new tokens: {statistics.median(r):,.0f} tok/s")
    ratio = statistics.median(rates["VLLMBackend"]) / statistics.median(rates["raw vLLM"])
    print(f"{'ratio':>18}: VLLMBackend/raw = {ratio:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--backend",
        choices=["hf", "vllm"],
        default="hf",
        help="hf: batched vs one-at-a-time (CPU ok); vllm: VLLMBackend vs raw vLLM (GPU)",
    )
    ap.add_argument("--episodes", type=int, default=32, help="concurrent episodes (default: 32)")
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens generated per episode (default: 32)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per arm; the median is shown (default: 3)")
    ap.add_argument(
        "--size",
        choices=sorted(SIZES),
        default=None,
        help="size of the model built for the run (default: tiny; small for vllm)",
    )
    ap.add_argument("--model", type=Path, help="an HF model folder (default: build one)")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    hf_logging.disable_progress_bar()
    if args.backend == "vllm":
        try:
            import torch
            import vllm  # noqa: F401

            if not torch.cuda.is_available():
                raise ImportError("no CUDA GPU")
        except ImportError as exc:
            sys.exit(f"--backend vllm needs a GPU machine with 'userrl[gpu]' installed ({exc})")
    with tempfile.TemporaryDirectory() as tmp:
        size = args.size or ("small" if args.backend == "vllm" else "tiny")
        model = args.model or build_tiny_model(Path(tmp) / "tiny", seed=0, **SIZES[size])
        print(f"model: {model}  episodes: {args.episodes}  new tokens: {args.new_tokens}")
        fn = bench_hf if args.backend == "hf" else bench_vllm
        try:
            anyio.run(fn, model, args.episodes, args.new_tokens, args.repeats)
        except PolicyError as exc:
            sys.exit(f"policy backend failed: {exc}")


if __name__ == "__main__":
    main()
