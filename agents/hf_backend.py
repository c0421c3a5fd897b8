"""The ``hf`` policy backend: transformers ``generate`` on CPU or GPU, a whole batch at once.

All requests of one :meth:`HFBackend.generate` call that share a :class:`Sampling` go into one
left-padded ``model.generate`` (split into chunks of ``max_batch``). Generation runs in a
worker thread so the event loop keeps serving the bus; a lock serialises generation and
weight swaps, so a batch never mixes two policy versions.

Logprobs: each returned logprob is ``log_softmax(raw_logits / T)[token]`` — the model's raw
logits at the request's temperature ``T`` over the *full* vocabulary, before top-p
truncation (``T = 1`` for greedy, ``temperature == 0``). That is what the learner recomputes
from its own forward pass (``logits / T``, no truncation); with ``top_p < 1`` the sampling
distribution is the truncated one, so keep ``top_p = 1`` for on-policy training. HF's
default ``top_k = 50`` is disabled for the same reason.

Errors: :meth:`HFBackend.generate` fails the whole call when one request cannot be prompted;
:meth:`HFBackend.generate_each` (what the policy worker uses) fails only that request and
generates the rest.

Seeds: a request with ``Sampling.seed`` set is reproducible on its own; requests without a seed
draw theirs from the backend's ``seed``, so a backend replays the same sequence of batches
identically. Requests with different seeds cannot share a batch; leave ``seed`` unset to batch.
"""

from __future__ import annotations

import random
import threading
import time
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

__all__ = ["HFBackend"]


class HFBackend:
    """Transformers generation backend (see the module docstring).

    ``tools`` are the tool schemas rendered into the system turn (default: UserRL's
    ``interact_with_env``); ``stop_token_ids`` default to the end-of-turn token.
    """

    trainable = True

    def __init__(
        self,
        model_path: str | Path,
        device: str = "cpu",
        dtype: Any = "float32",
        max_batch: int = 64,
        seed: int = 0,
        tools: Sequence[dict[str, Any]] | None = (TOOL_SCHEMA,),
        stop_token_ids: Sequence[int] | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._torch = torch
        self.model_path = str(model_path)
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.max_batch = max_batch
        self.tools = list(tools) if tools else None
        self.version = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype)
        except OSError as exc:
            raise PolicyError(f"cannot load policy model from {self.model_path}: {exc}") from exc
        self.model.to(self.device).eval()
        self.stop_ids = list(stop_token_ids) if stop_token_ids else [end_of_turn_id(self.tokenizer)]
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.stop_ids[0])
        log.info(
            "hf_backend_ready",
            model=self.model_path,
            device=str(self.device),
            dtype=str(self.dtype),
            max_batch=max_batch,
        )

    # -- PolicyBackend ----------------------------------------------------------------------
    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Generate for all requests; a bad request fails the whole call (before generating)."""
        if not requests:
            return []
        return await anyio.to_thread.run_sync(self._generate_sync, requests, False)

    async def generate_each(self, requests: list[GenRequest]) -> list[GenResult]:
        """Like :meth:`generate`, but a bad request (prefix mismatch, context overflow) gets a
        failed result and the others are generated."""
        if not requests:
            return []
        return await anyio.to_thread.run_sync(self._generate_sync, requests, True)

    async def load_weights(self, path: str, version: int) -> float:
        return await anyio.to_thread.run_sync(self._load_weights_sync, path, version)

    # -- prompts ----------------------------------------------------------------------------
    def prompt_ids(self, req: GenRequest) -> list[int]:
        """The full prompt of ``req``: rendered on the first turn, else extended token-exactly."""
        return request_prompt_ids(self.tokenizer, req, self.tools)

    def _checked_prompt(self, req: GenRequest) -> list[int]:
        ids = self.prompt_ids(req)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and len(ids) + req.sampling.max_new_tokens > limit:
            raise PolicyError(
                f"episode {req.episode_id}: {len(ids)} prompt tokens + "
                f"max_new_tokens {req.sampling.max_new_tokens} exceed the "
                f"model's context of {limit}"
            )
        return ids

    # -- generation -------------------------------------------------------------------------
    def _generate_sync(self, requests: list[GenRequest], isolate: bool) -> list[GenResult]:
        results: list[GenResult | None] = [None] * len(requests)
        with self._lock:  # the tokenizer is not safe for concurrent use either
            t0 = time.perf_counter()
            prompts: list[list[int] | None] = []
            for i, req in enumerate(requests):  # fail before generating
                try:
                    prompts.append(self._checked_prompt(req))
                except PolicyError as exc:
                    if not isolate:
                        raise
                    prompts.append(None)
                    results[i] = GenResult.failed(exc, self.version)
            groups: dict[Sampling, list[int]] = {}
            for i, req in enumerate(requests):
                if prompts[i] is not None:
                    groups.setdefault(req.sampling, []).append(i)
            for sampling, idx in groups.items():
                for k in range(0, len(idx), self.max_batch):
                    chunk = idx[k : k + self.max_batch]
                    try:
                        out = self._run([prompts[i] or [] for i in chunk], sampling)
                    except Exception as exc:
                        if not isolate:
                            raise
                        log.error("hf_generate_failed", requests=len(chunk), error=repr(exc))
                        err = PolicyError(f"generation failed: {type(exc).__name__}: {exc}")
                        out = [GenResult.failed(err, self.version) for _ in chunk]
                    for i, res in zip(chunk, out, strict=True):
                        results[i] = res
            n_tokens = sum(len(r.token_ids) for r in results if r is not None)
            log.debug(
                "hf_generate",
                requests=len(requests),
                groups=len(groups),
                failed=sum(1 for r in results if r is not None and r.error),
                tokens=n_tokens,
                seconds=round(time.perf_counter() - t0, 4),
            )
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _run(self, prompts: list[list[int]], sampling: Sampling) -> list[GenResult]:
        torch = self._torch
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):  # left padding: the last prompt token is aligned
            input_ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attention[row, width - len(p) :] = 1
        seed = sampling.seed if sampling.seed is not None else self._rng.getrandbits(63)
        with torch.inference_mode(), torch.random.fork_rng(devices=self._rng_devices()):
            torch.manual_seed(seed)
            out = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                generation_config=self._generation_config(sampling),
            )
        temperature = sampling.temperature if sampling.temperature > 0 else 1.0
        new = out.sequences[:, width:]
        steps = torch.stack(out.logits, dim=1).float()  # (batch, steps, vocab), raw logits
        logprobs = torch.log_softmax(steps / temperature, dim=-1)
        chosen = logprobs.gather(-1, new[:, : steps.shape[1]].unsqueeze(-1)).squeeze(-1)
        return [self._result(p, new[row].tolist(), chosen[row].tolist()) for row, p in enumerate(prompts)]

    def _result(self, prompt: list[int], ids: list[int], lps: list[float]) -> GenResult:
        stop = next((k for k, t in enumerate(ids) if t in self.stop_ids), None)
        finish = "stop" if stop is not None else "length"
        if stop is not None:  # keep the stop token (the policy chose to end), drop the padding
            ids, lps = ids[: stop + 1], lps[: stop + 1]
        body = ids[:-1] if finish == "stop" else ids
        text = self.tokenizer.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return GenResult(
            text=text, prompt_ids=list(prompt), token_ids=ids, logprobs=lps, version=self.version, finish_reason=finish
        )

    def _generation_config(self, sampling: Sampling) -> Any:
        from transformers import GenerationConfig

        kw: dict[str, Any] = dict(
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id,
            bos_token_id=None,
            return_dict_in_generate=True,
            output_logits=True,
        )
        if sampling.temperature > 0:
            kw.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        else:
            kw.update(do_sample=False)
        return GenerationConfig(**kw)

    def _rng_devices(self) -> list[Any]:
        return [self.device] if self.device.type == "cuda" else []

    # -- weights ----------------------------------------------------------------------------
    def _load_weights_sync(self, path: str, version: int) -> float:
        from safetensors.torch import load_file

        t0 = time.perf_counter()
        p = Path(path)
        files = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
        if not files or not all(f.is_file() for f in files):
            raise PolicyError(f"no safetensors weights at {path}")
        state: dict[str, Any] = {}
        for f in files:
            state.update(load_file(str(f)))
        expected = set(self.model.state_dict())
        tied = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        missing, unexpected = expected - set(state) - tied, set(state) - expected
        if missing or unexpected:
            raise PolicyError(
                f"weights at {path} do not fit the model: missing "
                f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        with self._lock:
            try:
                self.model.load_state_dict(state, strict=False)
            except RuntimeError as exc:  # shape mismatch
                raise PolicyError(f"weights at {path} do not fit the model: {exc}") from exc
            self.version = int(version)
        seconds = time.perf_counter() - t0
        log.info("hf_weights_loaded", path=str(path), version=version, seconds=round(seconds, 4))
        return seconds
