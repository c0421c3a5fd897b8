"""Simulated user/judge played by a local transformers model.

Concurrent ``ask`` calls are batched: the first caller waits ``batch_window_s`` for others,
then runs one greedy ``generate`` over all pending prompts (left-padded, chat template applied)
in a worker thread while new arrivals queue for the next batch; identical prompts are generated
once (:class:`~userrl.sim_users.shared.SharedGenerations`: decoding is greedy). Parsing and
re-asks are the shared :func:`~userrl.sim_users.llm_user.ask_llm_user`. torch/transformers are imported on first
use, so this module imports without the ``[train]`` extra.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import structlog

from userrl.errors import ConfigError, UserError
from userrl.sim_users.base import UserQuery
from userrl.sim_users.llm_user import SpecLookup, ask_llm_user, default_spec_lookup
from userrl.sim_users.shared import SharedGenerations, prompt_key

__all__ = ["HFUserBackend"]

log = structlog.get_logger(__name__)

_THINK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)


@dataclass(slots=True)
class _Pending:
    messages: list[dict[str, str]]
    done: anyio.Event = field(default_factory=anyio.Event)
    text: str | None = None
    error: BaseException | None = None


class HFUserBackend:
    """``UserBackend`` over a local causal LM (greedy, batched).

    Args:
        model_path: a local directory (or a hub id the operator named) with model + tokenizer.
        spec_lookup: ``env_id -> UserSpec``; defaults to the env registry.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``"auto"`` picks cuda when present.
        max_new_tokens: generation cap per reply.
        batch_window_s: how long the first request of a batch waits for others.
        max_batch: most prompts in one ``generate``.
        max_reasks: extra attempts after a reply the gym's ``parse_llm`` rejects.
        share_ttl_s: identical prompts within this many seconds are generated once (0: never).
    """

    def __init__(
        self,
        model_path: str,
        spec_lookup: SpecLookup | None = None,
        *,
        device: str = "cpu",
        max_new_tokens: int = 256,
        batch_window_s: float = 0.02,
        max_batch: int = 16,
        max_reasks: int = 2,
        share_ttl_s: float = 30.0,
    ) -> None:
        bounds = (
            ("max_new_tokens", max_new_tokens, 1),
            ("max_batch", max_batch, 1),
            ("batch_window_s", batch_window_s, 0),
            ("max_reasks", max_reasks, 0),
        )
        for name, value, low in bounds:
            if value < low:
                raise ConfigError(f"{name} must be >= {low}, got {value!r}")
        self.model_path = model_path
        self.spec_lookup = spec_lookup or default_spec_lookup
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.batch_window_s = batch_window_s
        self.max_batch = max_batch
        self.max_reasks = max_reasks
        #: sizes of the most recent batches (observability and tests)
        self.batch_sizes: deque[int] = deque(maxlen=1024)
        self._pending: list[_Pending] = []
        self.shared = SharedGenerations(share_ttl_s) if share_ttl_s > 0 else None
        self._lock = anyio.Lock()
        self._model: Any = None
        self._tokenizer: Any = None

    async def ask(self, query: UserQuery) -> dict[str, Any]:
        return await ask_llm_user(query, self.spec_lookup, self._generate, max_reasks=self.max_reasks)

    async def _generate(self, messages: list[dict[str, str]]) -> str:
        if self.shared is None:
            return await self._batched(messages)
        return await self.shared.generate(prompt_key(self.max_new_tokens, messages), lambda: self._batched(messages))

    async def _batched(self, messages: list[dict[str, str]]) -> str:
        item = _Pending(messages)
        self._pending.append(item)
        try:
            while not item.done.is_set():
                async with self._lock:  # whoever holds the lock runs the next batch
                    if not item.done.is_set():
                        await self._run_batch(item)
        finally:
            if item in self._pending:  # cancelled while queued
                self._pending.remove(item)
        if item.error is not None:
            raise UserError(f"hf user model failed: {type(item.error).__name__}: {item.error}") from item.error
        assert item.text is not None
        return item.text

    async def _run_batch(self, leader: _Pending) -> None:
        await anyio.sleep(self.batch_window_s)
        others = [p for p in self._pending if p is not leader][: self.max_batch - 1]
        batch = [leader, *others]
        for p in batch:
            self._pending.remove(p)
        self.batch_sizes.append(len(batch))
        try:
            texts = await anyio.to_thread.run_sync(self._generate_sync, [p.messages for p in batch])
        except Exception as exc:
            for p in batch:
                p.error = exc
        else:
            for p, text in zip(batch, texts, strict=True):
                p.text = text
        finally:
            for p in batch:
                p.done.set()

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        tok = AutoTokenizer.from_pretrained(self.model_path)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(self.model_path)
        self._model = model.to(device).eval()
        self._tokenizer = tok
        log.info("hf_user.loaded", model_path=self.model_path, device=device)

    def _generate_sync(self, batch: list[list[dict[str, str]]]) -> list[str]:
        """Runs in a worker thread; only one at a time (the batch lock)."""
        import torch
        from transformers import GenerationConfig

        if self._model is None:
            self._load()
        tok, model = self._tokenizer, self._model
        prompts = [
            tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True, enable_thinking=False) for m in batch
        ]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        # A fresh config: greedy without inheriting the checkpoint's sampling defaults.
        gen = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=(model.generation_config.eos_token_id or tok.eos_token_id),
        )
        with torch.no_grad():
            out = model.generate(**enc, generation_config=gen)
        new = out[:, enc["input_ids"].shape[1] :]
        return [_THINK.sub("", t).strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
