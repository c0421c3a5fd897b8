"""The ``vllm`` policy backend: vLLM's async engine (V1 ``AsyncLLM``), GPU only.

Every request of a batch is submitted at once as a token prompt; vLLM batches them
continuously. Prompts are built token-exactly by :mod:`userrl.agents.chat`, exactly as in the
``hf`` backend, and the engine never sees text.

Logprobs: the engine runs with ``logprobs_mode="processed_logprobs"`` and ``logprobs=0`` (the
sampled token only), i.e. ``log_softmax(logits / T)`` after vLLM's processors. With ``top_p =
1`` this is the ``hf`` backend's convention (full vocabulary at temperature ``T``); with
``top_p < 1`` vLLM renormalises over the nucleus, which the learner does not; keep ``top_p = 1``
for training.

Weights: :meth:`VLLMBackend.load_weights` calls ``userrl_load_weights`` on every engine worker
through ``collective_rpc`` (:class:`WorkerExtension`, installed with the engine's
``worker_extension_cls``), which streams the safetensors file(s) into the model's own
``load_weights``; the prefix cache is reset afterwards. Generation and swaps share one lock,
so a batch never mixes versions. The in-memory path (the learner broadcasting tensors over NCCL,
:mod:`userrl.learner.weight_sync`) has its worker side here (``userrl_join_weight_sync``,
``userrl_receive_weights``); it is not wired into the announcements yet (docs/scaling.md).

This module imports vLLM lazily and cannot be tested on CPU; ``benchmarks/policy.py --backend
vllm`` exercises it on a GPU machine.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import structlog

from userrl.agents.base import GenRequest, GenResult, Sampling
from userrl.agents.chat import end_of_turn_id, request_prompt_ids
from userrl.envs.actions import TOOL_SCHEMA
from userrl.errors import PolicyError

log = structlog.get_logger(__name__)

__all__ = ["VLLMBackend", "WorkerExtension"]

_INSTALL_HINT = "the vllm backend needs a GPU machine with the [gpu] extra: pip install 'userrl[gpu]'"


def _safetensors_items(path: str) -> Iterator[tuple[str, Any]]:
    from safetensors.torch import safe_open

    p = Path(path)
    files = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"no safetensors weights at {path}")
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                yield name, fh.get_tensor(name)


class WorkerExtension:
    """Mixed into each vLLM worker (``worker_extension_cls``); called via ``collective_rpc``."""

    model_runner: Any
    device: Any
    _userrl_sync: Any

    def userrl_load_weights(self, path: str) -> int:
        n = 0

        def counted() -> Iterator[tuple[str, Any]]:
            nonlocal n
            for item in _safetensors_items(path):
                n += 1
                yield item

        self.model_runner.model.load_weights(weights=counted())
        return n

    # In-memory sync (userrl.learner.weight_sync): this worker joins the learner's group as rank
    # ``rank_offset`` + its tensor-parallel rank, then receives whole tensors into load_weights.
    def userrl_join_weight_sync(self, host: str, port: int, world: int, rank_offset: int) -> int:
        from vllm.distributed.parallel_state import get_tensor_model_parallel_rank

        from userrl.learner.weight_sync import WeightGroup

        rank = rank_offset + get_tensor_model_parallel_rank()
        self._userrl_sync = WeightGroup(host, port, rank, world, backend="nccl", device=str(self.device))
        return rank

    def userrl_receive_weights(self) -> int:
        from userrl.learner.weight_sync import receive_weights

        version, tensors = receive_weights(self._userrl_sync)
        self.model_runner.model.load_weights(weights=tensors)
        return version


class VLLMBackend:
    """vLLM async-engine backend; ``engine_kwargs`` (``policy.vllm``: tensor_parallel_size,
    max_model_len, engine_kwargs, ...) go to ``AsyncEngineArgs``."""

    trainable = True

    def __init__(
        self,
        model_path: str | Path,
        seed: int = 0,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        enable_prefix_caching: bool = True,
        tools: Sequence[dict[str, Any]] | None = (TOOL_SCHEMA,),
        stop_token_ids: Sequence[int] | None = None,
        **engine_kwargs: Any,
    ) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise PolicyError(f"vllm is not installed; {_INSTALL_HINT}") from exc
        import torch

        if not torch.cuda.is_available():
            raise PolicyError(f"no CUDA GPU is visible; {_INSTALL_HINT}")
        from transformers import AutoTokenizer

        self._vllm = vllm
        self.model_path = str(model_path)
        self.tools = list(tools) if tools else None
        self.version = 0
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.stop_ids = list(stop_token_ids) if stop_token_ids else [end_of_turn_id(self.tokenizer)]
        args = vllm.AsyncEngineArgs(
            model=self.model_path,
            seed=seed,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=enable_prefix_caching,
            logprobs_mode="processed_logprobs",
            worker_extension_cls=f"{__name__}.WorkerExtension",
            **engine_kwargs,
        )
        try:
            self.engine = vllm.AsyncLLMEngine.from_engine_args(args)  # V1: an alias of AsyncLLM
        except Exception as exc:
            raise PolicyError(
                f"vllm could not start an engine for {self.model_path}: {type(exc).__name__}: {exc}"
            ) from exc
        model_config = getattr(self.engine, "model_config", None)
        self.max_model_len: int | None = getattr(model_config, "max_model_len", None)
        self._lock: anyio.Lock | None = None
        log.info("vllm_backend_ready", model=self.model_path, vllm=vllm.__version__)

    def _get_lock(self) -> anyio.Lock:
        if self._lock is None:  # created inside the running event loop
            self._lock = anyio.Lock()
        return self._lock

    # -- PolicyBackend ----------------------------------------------------------------------
    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Generate for all requests; any failure fails the whole call."""
        results = await self.generate_each(requests)
        for r in results:
            if r.error:
                raise PolicyError(r.error, transient=r.error_transient)
        return results

    async def generate_each(self, requests: list[GenRequest]) -> list[GenResult]:
        """One result per request; a bad or failed request gets a failed result."""

        def build() -> list[list[int] | PolicyError]:
            out: list[list[int] | PolicyError] = []
            for r in requests:
                try:
                    out.append(self._checked_prompt(r))
                except PolicyError as exc:
                    out.append(exc)
            return out

        prompts = await anyio.to_thread.run_sync(build)
        results: list[GenResult | None] = [None] * len(requests)

        async def one(i: int, prompt: list[int]) -> None:
            try:
                results[i] = await self._generate_one(prompt, requests[i].sampling)
            except PolicyError as exc:
                results[i] = GenResult.failed(exc, self.version)

        async with self._get_lock(), anyio.create_task_group() as tg:
            for i, p in enumerate(prompts):
                if isinstance(p, PolicyError):
                    results[i] = GenResult.failed(p, self.version)
                else:
                    tg.start_soon(one, i, p)
        return [r for r in results if r is not None]

    async def load_weights(self, path: str, version: int) -> float:
        t0 = time.perf_counter()
        async with self._get_lock():
            counts = await self.engine.collective_rpc("userrl_load_weights", args=(str(path),))
            await self.engine.reset_prefix_cache()
            self.version = int(version)
        seconds = time.perf_counter() - t0
        log.info("vllm_weights_loaded", path=str(path), version=version, tensors=counts, seconds=round(seconds, 4))
        return seconds

    # -- helpers ----------------------------------------------------------------------------
    def prompt_ids(self, req: GenRequest) -> list[int]:
        """The full prompt of ``req``: rendered on the first turn, else extended token-exactly."""
        return request_prompt_ids(self.tokenizer, req, self.tools)

    def _checked_prompt(self, req: GenRequest) -> list[int]:
        ids = self.prompt_ids(req)
        limit = self.max_model_len
        if limit and len(ids) + req.sampling.max_new_tokens > limit:
            raise PolicyError(
                f"episode {req.episode_id}: {len(ids)} prompt tokens + "
                f"max_new_tokens {req.sampling.max_new_tokens} exceed the "
                f"model's context of {limit}"
            )
        return ids

    def sampling_params(self, sampling: Sampling) -> Any:
        """vLLM ``SamplingParams`` for one request (token ids and sampled logprobs only)."""
        return self._vllm.SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            logprobs=0,
            stop_token_ids=self.stop_ids,
            detokenize=False,
            skip_special_tokens=False,
        )

    async def _generate_one(self, prompt: list[int], sampling: Sampling) -> GenResult:
        from vllm.inputs import TokensPrompt

        final = None
        try:
            async for out in self.engine.generate(
                TokensPrompt(prompt_token_ids=prompt), self.sampling_params(sampling), request_id=uuid.uuid4().hex
            ):
                final = out
        except ValueError as exc:  # vLLM refuses the request itself (too long, bad params)
            raise PolicyError(f"vllm refused the request: {exc}") from exc
        except Exception as exc:
            raise PolicyError(f"vllm generation failed: {type(exc).__name__}: {exc}", transient=True) from exc
        if final is None or not final.outputs:
            raise PolicyError("vllm returned no output", transient=True)
        c = final.outputs[0]
        ids = list(c.token_ids)
        lps = [float(c.logprobs[k][t].logprob) for k, t in enumerate(ids)] if c.logprobs else []
        body = ids[:-1] if ids and ids[-1] in self.stop_ids else ids
        text = self.tokenizer.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        finish = "stop" if c.finish_reason == "stop" else "length"
        return GenResult(
            text=text, prompt_ids=prompt, token_ids=ids, logprobs=lps, version=self.version, finish_reason=finish
        )
