"""The GRPO objective on token sequences: logprobs, clipped surrogate, KL, aggregation, staleness.

Per generated token t with advantage A_t (``rewards.py``), behaviour logprob μ_t recorded by the
policy worker and current logprob π_t:

    ratio_t = exp(π_t − μ_t)
    L_t     = −min(ratio_t·A_t, clip(ratio_t, 1 − ε_low, 1 + ε_high)·A_t) + β·KL_t
    KL_t    = exp(ref_t − π_t) − (ref_t − π_t) − 1        (k3 estimator, ≥ 0)

The ratio is taken against the *behaviour* logprobs (decoupled PPO): the rollouts are produced
asynchronously by possibly older policy versions, so there is no "old policy" forward pass to
recompute; recomputing one would also hide any mismatch between the sampler and the trainer.
Staleness is bounded separately by :func:`drop_stale`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "AGGREGATIONS",
    "LossConfig",
    "agg_normalizer",
    "clipped_surrogate",
    "drop_stale",
    "grpo_loss",
    "kl_k3",
    "masked_mean",
    "token_logprobs",
]

Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
AGGREGATIONS: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is set; 0 (not NaN) where the mask is empty."""
    mask = mask.to(x.dtype)
    total = (x * mask).sum() if dim is None else (x * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=torch.finfo(x.dtype).tiny)


def _has_plain_lm_head(model: torch.nn.Module) -> bool:
    """Whether logits are just ``lm_head(hidden)``: no softcapping or scaling we would skip."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "base_model") or model.base_model is model:
        return False
    if getattr(model, "get_output_embeddings", lambda: None)() is None:
        return False
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    extras = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
    return all(getattr(text, name, None) in (None, 1.0) for name in extras)


def _gather_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / T)[target] as logit − logsumexp, in float32, without a full copy."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """log π(input_ids[t] | input_ids[<t]) for every position t, shape (B, L); position 0 is 0.

    Aligned with ``input_ids`` (not shifted) so the loss mask of the sequence applies as is.
    ``temperature`` must match the sampler's, since the behaviour logprobs are of the tempered
    distribution. With ``mask``, only masked positions go through the LM head (others are 0):
    in a dialogue most tokens are prompt, env and user text, and the (tokens × vocab) logits
    are the learner's largest activation. Models whose head is more than a linear layer
    (softcapping, logit scales) always take the full path.
    """
    if mask is None or not _has_plain_lm_head(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
        picked = _gather_logprobs(logits, input_ids[:, 1:], temperature)
        out = torch.nn.functional.pad(picked, (1, 0), value=0.0)
        return out if mask is None else out * (mask != 0)
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    where = mask[:, 1:] != 0  # the hidden state at t-1 predicts the token at t
    logits = model.get_output_embeddings()(hidden[:, :-1][where])
    picked = _gather_logprobs(logits, input_ids[:, 1:][where], temperature)
    shifted = torch.zeros(where.shape, dtype=picked.dtype, device=picked.device)
    return torch.nn.functional.pad(shifted.masked_scatter(where, picked), (1, 0), value=0.0)


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO loss and where clipping removed the gradient.

    A token is clipped when the ratio left the trust region in the direction its advantage
    pushes it (above 1 + ε_high with A > 0, below 1 − ε_low with A < 0).
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    loss = -torch.minimum(unclipped, clipped)
    clip_mask = ((ratio > 1.0 + clip_high) & (adv > 0)) | ((ratio < 1.0 - clip_low) & (adv < 0))
    return loss, clip_mask


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(π‖π_ref) per token: unbiased and never negative."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1.0


def _aggregate(per_token: torch.Tensor, mask: torch.Tensor, agg: str, normalizer: float | None = None) -> torch.Tensor:
    """Reduce (B, L) losses to a scalar; sequences with no trained token do not count.

    With ``normalizer`` (:func:`agg_normalizer` of the whole step) the result is this part's
    share of the step's loss, so micro-batches and ranks sum to exactly the one-batch loss."""
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {AGGREGATIONS}, got {agg!r}")
    if normalizer is None:
        if agg == "token-mean":
            return masked_mean(per_token, mask)
        has_tokens = (mask.sum(-1) > 0).to(per_token.dtype)
        if agg == "seq-mean-token-mean":
            return masked_mean(masked_mean(per_token, mask, dim=-1), has_tokens)
        return masked_mean((per_token * mask).sum(-1), has_tokens)
    if agg == "token-mean":
        total = (per_token * mask).sum()
    elif agg == "seq-mean-token-mean":
        total = masked_mean(per_token, mask, dim=-1).sum()  # an empty row's mean is 0
    else:
        total = (per_token * mask).sum()
    return total / max(normalizer, 1.0)


def agg_normalizer(trained_tokens: Sequence[int], agg: str) -> float:
    """What ``agg`` divides by over a whole step, from each sequence's number of trained tokens:
    their total (token-mean) or the number of sequences with at least one (the seq-mean ones)."""
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {AGGREGATIONS}, got {agg!r}")
    if agg == "token-mean":
        return float(sum(trained_tokens))
    return float(sum(1 for n in trained_tokens if n > 0))


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    agg: Aggregation = "token-mean",
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The scalar GRPO loss over a (B, L) batch and its metrics.

    With ``normalizer`` (see :func:`agg_normalizer`) the loss and ``loss/policy`` are this
    micro-batch's share of the whole step's (they sum over micro-batches); the other metrics
    stay means over this micro-batch's tokens.

    ``adv`` is per token (B, L) or per sequence (B,). ``token-mean`` (the paper's choice) gives
    every trained token the same weight, so long dialogues are not down-weighted.
    Metrics: ``loss/policy`` (surrogate only), ``policy/clip_frac``, ``policy/kl`` (0 without a
    reference), ``policy/ratio_mean``.
    """
    if adv.dim() == 1:
        adv = adv.unsqueeze(-1)
    mask = mask.to(logp.dtype)
    surrogate, clip_mask = clipped_surrogate(logp, old_logp, adv, clip_low, clip_high)
    per_token = surrogate
    kl = torch.zeros_like(logp)
    if ref_logp is not None:
        kl = kl_k3(logp, ref_logp)
        if kl_coef != 0.0:
            per_token = per_token + kl_coef * kl
    loss = _aggregate(per_token, mask, agg, normalizer)
    with torch.no_grad():
        metrics = {
            "loss/policy": float(_aggregate(surrogate, mask, agg, normalizer)),
            "policy/clip_frac": float(masked_mean(clip_mask.to(logp.dtype), mask)),
            "policy/kl": float(masked_mean(kl, mask)),
            "policy/ratio_mean": float(masked_mean(torch.exp(logp - old_logp), mask)),
        }
    return loss, metrics


def drop_stale(
    turn_versions: torch.Tensor | Sequence[int], current_version: int, max_staleness: int
) -> tuple[torch.Tensor, int]:
    """Keep mask for work generated at most ``max_staleness`` versions ago, and the drop count.

    Works on per-turn versions or on a per-token ``policy_version`` tensor: entries of −1
    (not generated) are never kept nor counted, so ``loss_mask * keep`` masks stale turns.
    """
    if max_staleness < 0:
        raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
    versions = torch.as_tensor(turn_versions, dtype=torch.long)
    generated = versions >= 0
    fresh = (current_version - versions) <= max_staleness
    keep = generated & fresh
    return keep, int((generated & ~fresh).sum())


@dataclass
class LossConfig:
    """The GRPO objective's knobs (defaults: the paper's clip 0.2, no KL, token-mean)."""

    clip_low: float = 0.2
    """ε_low: the ratio may fall to 1 − ε_low before a negative-advantage token stops pushing."""

    clip_high: float = 0.2
    """ε_high: the ratio may rise to 1 + ε_high (DAPO's clip-higher raises it, e.g. 0.28)."""

    kl_coef: float = 0.0
    """β for the k3 KL to a reference model; > 0 needs a reference model in the learner."""

    agg: Aggregation = "token-mean"
    """How per-token losses become one number: one of ``AGGREGATIONS``."""

    max_staleness: int = 1
    """Turns generated more than this many policy versions ago are dropped (and counted)."""

    temperature: float = 1.0
    """Sampling temperature of the policy workers; logprobs are recomputed at the same one."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.clip_low < 1.0:
            raise ValueError(f"clip_low must be in [0, 1), got {self.clip_low!r}")
        if not self.clip_high >= 0.0:
            raise ValueError(f"clip_high must be >= 0, got {self.clip_high!r}")
        if not self.kl_coef >= 0.0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef!r}")
        if self.agg not in AGGREGATIONS:
            raise ValueError(f"agg must be one of {AGGREGATIONS}, got {self.agg!r}")
        if self.max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {self.max_staleness!r}")
        if not self.temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
