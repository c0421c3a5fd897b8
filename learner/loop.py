"""The GRPO learner: scored groups in, a policy update, new weights out.

Reads top to bottom like the algorithm (cleanrl style)::

    receive B scored groups -> drop stale turns -> per-token advantages -> GRPO loss
    -> optimizer step -> save weights (safetensors) -> announce the version -> log

Behaviour logprobs come from the policy workers (decoupled PPO: the importance ratio is taken
against what was actually sampled); the learner never re-tokenizes a transcript.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import structlog

from userrl.errors import RewardError
from userrl.hardware import resolve_device, resolve_dtype
from userrl.learner.grpo import LossConfig, drop_stale, grpo_loss, token_logprobs
from userrl.learner.sequences import assemble, collate, per_token_advantages

log = structlog.get_logger(__name__)


class GRPOLearner:
    """Holds the model and optimizer; one :meth:`step` per batch of scored groups."""

    def __init__(self, model_path: str | Path, out_dir: str | Path, *, lr: float, loss: LossConfig,
                 seed: int = 0, device: str = "auto", dtype: str = "auto", gradient_checkpointing: bool = False,
                 ref_model_path: str | Path | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(seed)
        self.torch = torch
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(device)
        # Master weights and optimizer state stay fp32; bf16 is autocast for forward/backward.
        self.dtype = resolve_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(self.device)
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
            self.model.config.use_cache = False
        log.info("learner.ready", device=self.device, dtype=self.dtype, gradient_checkpointing=gradient_checkpointing)
        device = self.device
        self.loss_cfg = loss
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
        self.ref = None
        if loss.kl_coef > 0:
            self.ref = AutoModelForCausalLM.from_pretrained(ref_model_path or model_path).to(device).eval()
        self.version = 0
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    # -- one update ---------------------------------------------------------------------------
    def step(self, groups: list[dict[str, Any]]) -> dict[str, Any]:
        torch = self.torch
        # receive: every trainable trajectory of the batch as one token sequence
        seqs, advs = [], []
        for g in groups:
            for item in g["items"]:
                turns = [t for t in item["turns"] if t["token_ids"]]
                if not turns:
                    continue
                try:
                    seq = assemble(turns)
                    advs.append(per_token_advantages(seq, [t["advantages"] for t in turns]))
                except RewardError as exc:
                    log.warning("learner.bad_trajectory", episode_id=item.get("episode_id"), error=str(exc))
                    continue
                seqs.append(seq)
        if not seqs:
            return {"learner/skipped": 1}
        batch = {k: v.to(self.device) for k, v in collate(seqs, self.pad_id, advs).items()}
        # drop stale: turns generated more than max_staleness versions ago do not train
        keep, n_stale = drop_stale(batch["policy_version"], self.version, self.loss_cfg.max_staleness)
        mask = batch["loss_mask"] * keep.to(batch["loss_mask"].dtype)
        # loss: clipped importance ratio against the behaviour logprobs, token-mean
        self.model.train()
        with self._autocast():
            logp = token_logprobs(self.model, batch["input_ids"], batch["attention_mask"],
                                  self.loss_cfg.temperature, mask=mask).float()
            ref_logp = None
            if self.ref is not None:
                with torch.no_grad():
                    ref_logp = token_logprobs(self.ref, batch["input_ids"], batch["attention_mask"],
                                              self.loss_cfg.temperature, mask=mask).float()
        loss, metrics = grpo_loss(logp, batch["behaviour_logprobs"], batch["advantages"], mask, ref_logp=ref_logp,
                                  kl_coef=self.loss_cfg.kl_coef, agg=self.loss_cfg.agg,
                                  clip_low=self.loss_cfg.clip_low, clip_high=self.loss_cfg.clip_high)
        # step
        self.optimizer.zero_grad(set_to_none=True)
        if mask.sum() > 0:
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0))
            self.optimizer.step()
        else:
            grad_norm = 0.0
        self.version += 1
        generated = batch["policy_version"] >= 0
        lag = (self.version - 1 - batch["policy_version"][generated]).float()
        metrics.update({"loss/total": float(loss.detach()), "policy/grad_norm": grad_norm,
                        "rollout/stale_tokens": n_stale, "rollout/trained_tokens": int(mask.sum()),
                        "rollout/staleness_mean": float(lag.mean()) if lag.numel() else 0.0,
                        "policy/version": self.version})
        return metrics

    def _autocast(self) -> Any:
        import contextlib

        if self.dtype != "bf16":
            return contextlib.nullcontext()
        return self.torch.autocast(self.torch.device(self.device).type, dtype=self.torch.bfloat16)

    # -- publish ------------------------------------------------------------------------------
    def save_weights(self) -> Path:
        """Weights of the current version as one safetensors file (tied embeddings stored once)."""
        from safetensors.torch import save_file

        path = self.out / "weights" / f"v{self.version:05d}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        tied = bool(getattr(self.model.config, "tie_word_embeddings", False))
        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()
                 if not (tied and k == "lm_head.weight")}
        tmp = path.with_suffix(".tmp")
        save_file(state, str(tmp))
        tmp.replace(path)  # readers never see a half-written file
        return path

    def save_model(self, out: str | Path) -> Path:
        """A full Hugging Face folder (model + tokenizer), for evaluation and later runs."""
        out = Path(out)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        return out

    # -- checkpoint and resume ----------------------------------------------------------------
    def checkpoint(self, extra: dict[str, Any] | None = None) -> Path:
        ck = self.out / "checkpoint"
        self.save_model(ck)
        self.torch.save(self.optimizer.state_dict(), ck / "optimizer.pt")
        (ck / "state.json").write_text(json.dumps({"version": self.version, "time": time.time(), **(extra or {})}))
        return ck

    @classmethod
    def resume(cls, out_dir: str | Path, **kw: Any) -> tuple[GRPOLearner, dict[str, Any]]:
        ck = Path(out_dir) / "checkpoint"
        state = json.loads((ck / "state.json").read_text())
        learner = cls(ck, out_dir, **kw)
        learner.optimizer.load_state_dict(learner.torch.load(ck / "optimizer.pt"))
        learner.version = int(state["version"])
        return learner, state
