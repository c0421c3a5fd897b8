"""The GRPO objective on token sequences: logprobs, clipped surrogate, KL, entropy, aggregation.

Per generated token t with advantage A_t (``rewards.py``), engine logprob μ_t recorded by the
policy worker, old logprob π_old,t and current logprob π_t:

    ratio_t = exp(π_t − π_old,t)            (GSPO: the sequence's mean log-ratio, see below)
    L_t     = −w_t·min(ratio_t·A_t, clip(ratio_t, 1 − ε_low, 1 + ε_high)·A_t) + β·KL_t − c_H·H_t

``π_old`` is either μ itself (``old_logprobs: engine``, decoupled PPO against what was sampled)
or the learner's own logprob under the weights of the version that sampled the token
(``recompute``); ``w_t`` is then the truncated importance weight π_old/μ that corrects the
sampler/trainer mismatch (:mod:`userrl.learner.offpolicy`). KL_t estimates KL(π‖π_ref) with
Schulman's k1, k2 or k3 (:func:`kl_estimate`); H_t is the entropy of π at t.

GSPO (``ratio_level="sequence"``) replaces ratio_t by GSPO-token's
s_{i,t} = sg[s_i]·π_t/sg[π_t] with s_i = exp(mean_t (π_t − π_old,t)) over the sequence's trained
tokens: its value is the sequence ratio, its gradient s_i·∇log π_t, so with the advantages
constant along a sequence it is exactly GSPO's sequence-level objective.

Aggregations (:data:`AGGREGATIONS`): ``token-mean`` Σ L / Σ tokens; ``seq-mean-token-mean`` the
mean over sequences of each one's token mean; ``seq-mean-token-sum`` the mean over sequences of
each one's token sum; ``dr-grpo`` Dr. GRPO's constant normalisation Σ L / (sequences × ``norm_len``),
no division by any sequence's length. Staleness is bounded separately by :func:`drop_stale`.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "LossConfig",
    "agg_normalizer",
    "clipped_surrogate",
    "drop_stale",
    "grpo_loss",
    "kl_estimate",
    "kl_k3",
    "masked_mean",
    "policy_log_ratio",
    "token_logprobs",
]

Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "dr-grpo"]
AGGREGATIONS: tuple[str, ...] = typing.get_args(Aggregation)
KLEstimator = Literal["k1", "k2", "k3"]
KL_ESTIMATORS: tuple[str, ...] = typing.get_args(KLEstimator)
RatioLevel = Literal["token", "sequence"]
RATIO_LEVELS: tuple[str, ...] = typing.get_args(RatioLevel)


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


def _gather_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float, entropy: str = "none"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(logits / T)[target] as logit − logsumexp, in float32, without a full copy;
    and the entropy of softmax(logits / T) when ``entropy`` is ``value`` (no gradient: logging
    only) or ``grad`` (an entropy bonus trains on it)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    if entropy == "none":
        return picked, None
    with torch.set_grad_enabled(entropy == "grad" and torch.is_grad_enabled()):
        # H = lse − Σ p·logit: one softmax over the (trained tokens × vocab) logits already there
        ent = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return picked, ent


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    entropy: str = "none",
) -> typing.Any:
    """log π(input_ids[t] | input_ids[<t]) for every position t, shape (B, L); position 0 is 0.

    Aligned with ``input_ids`` (not shifted) so the loss mask of the sequence applies as is.
    ``temperature`` must match the sampler's, since the behaviour logprobs are of the tempered
    distribution. With ``mask``, only masked positions go through the LM head (others are 0):
    in a dialogue most tokens are prompt, env and user text, and the (tokens × vocab) logits
    are the learner's largest activation. Models whose head is more than a linear layer
    (softcapping, logit scales) always take the full path.

    ``entropy`` ``value`` or ``grad`` also returns the per-position entropy of the tempered
    distribution, (logprobs, entropy), computed from the same logits (without or with its
    gradient); ``none`` returns the logprobs alone.
    """
    if entropy not in ("none", "value", "grad"):
        raise ValueError(f"entropy must be none, value or grad, got {entropy!r}")
    if mask is None or not _has_plain_lm_head(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
        picked, ent = _gather_logprobs(logits, input_ids[:, 1:], temperature, entropy)
        out = torch.nn.functional.pad(picked, (1, 0), value=0.0)
        keep = 1.0 if mask is None else (mask != 0)
        if ent is None:
            return out * keep
        return out * keep, torch.nn.functional.pad(ent, (1, 0), value=0.0) * keep
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    where = mask[:, 1:] != 0  # the hidden state at t-1 predicts the token at t
    logits = model.get_output_embeddings()(hidden[:, :-1][where])
    picked, ent = _gather_logprobs(logits, input_ids[:, 1:][where], temperature, entropy)

    def place(values: torch.Tensor) -> torch.Tensor:
        shifted = torch.zeros(where.shape, dtype=values.dtype, device=values.device)
        return torch.nn.functional.pad(shifted.masked_scatter(where, values), (1, 0), value=0.0)

    return place(picked) if ent is None else (place(picked), place(ent))


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


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) on tokens drawn from π (Schulman, "Approximating KL
    divergence", 2020), with r = π_ref/π: k1 = −log r (unbiased, can be negative), k2 = ½(log r)²
    (biased, low variance), k3 = (r − 1) − log r (unbiased, never negative)."""
    if estimator == "k3":
        return kl_k3(logp, ref_logp)
    log_ratio = ref_logp - logp
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    raise ValueError(f"kl estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


def policy_log_ratio(
    logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor, level: str = "token"
) -> torch.Tensor:
    """log of the ratio the PPO clip acts on, (B, L): per token, or GSPO-token's
    sg[log s_i] + log π_t − sg[log π_t] with log s_i the mean log-ratio of sequence i's masked
    tokens (a sequence without one gets 0)."""
    diff = logp - old_logp
    if level == "token":
        return diff
    if level != "sequence":
        raise ValueError(f"ratio level must be one of {RATIO_LEVELS}, got {level!r}")
    m = mask.to(diff.dtype)
    seq = (diff * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1.0)
    return seq.detach() + logp - logp.detach()


def _aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    agg: str,
    normalizer: float | None = None,
    norm_len: int = 0,
) -> torch.Tensor:
    """Reduce (B, L) losses to a scalar; sequences with no trained token do not count (except
    in ``dr-grpo``, whose divisor is the constant rows × ``norm_len``).

    With ``normalizer`` (:func:`agg_normalizer` of the whole step) the result is this part's
    share of the step's loss, so micro-batches and ranks sum to exactly the one-batch loss."""
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {AGGREGATIONS}, got {agg!r}")
    if normalizer is None:
        if agg == "token-mean":
            return masked_mean(per_token, mask)
        if agg == "dr-grpo":
            return (per_token * mask).sum() / (per_token.shape[0] * _positive_len(norm_len))
        has_tokens = (mask.sum(-1) > 0).to(per_token.dtype)
        if agg == "seq-mean-token-mean":
            return masked_mean(masked_mean(per_token, mask, dim=-1), has_tokens)
        return masked_mean((per_token * mask).sum(-1), has_tokens)
    if agg == "seq-mean-token-mean":
        total = masked_mean(per_token, mask, dim=-1).sum()  # an empty row's mean is 0
    else:
        total = (per_token * mask).sum()
    return total / max(normalizer, 1.0)


def _positive_len(norm_len: int) -> int:
    if norm_len <= 0:
        raise ValueError(f"agg dr-grpo needs norm_len > 0 (the most tokens a sequence may train), got {norm_len}")
    return norm_len


def agg_normalizer(trained_tokens: Sequence[int], agg: str, norm_len: int = 0) -> float:
    """What ``agg`` divides by over a whole step, from each sequence's number of trained tokens:
    their total (token-mean), the number of sequences with at least one (the seq-mean ones), or
    the number of sequences times ``norm_len`` (dr-grpo: a constant of the step's size)."""
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {AGGREGATIONS}, got {agg!r}")
    if agg == "token-mean":
        return float(sum(trained_tokens))
    if agg == "dr-grpo":
        return float(len(trained_tokens) * _positive_len(norm_len))
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
    *,
    kl_estimator: KLEstimator = "k3",
    ratio_level: RatioLevel = "token",
    weights: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    norm_len: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The scalar GRPO loss over a (B, L) batch and its metrics.

    With ``normalizer`` (see :func:`agg_normalizer`) the loss and ``loss/policy`` are this
    micro-batch's share of the whole step's (they sum over micro-batches); the other metrics
    stay means over this micro-batch's tokens.

    ``adv`` is per token (B, L) or per sequence (B,). ``token-mean`` (the paper's choice) gives
    every trained token the same weight, so long dialogues are not down-weighted. ``weights``
    (B, L), detached, multiply the surrogate (the off-policy importance weights); ``entropy``
    (B, L) is logged as ``policy/entropy`` and, with ``entropy_coef``, subtracted from the
    loss under the same aggregation (verl's choice). Metrics: ``loss/policy`` (surrogate only),
    ``policy/clip_frac``, ``policy/kl`` (0 without a reference), ``policy/ratio_mean``,
    ``policy/entropy`` (0 without ``entropy``).
    """
    if adv.dim() == 1:
        adv = adv.unsqueeze(-1)
    mask = mask.to(logp.dtype)
    if ratio_level == "token":
        log_ratio = logp - old_logp
        surrogate, clip_mask = clipped_surrogate(logp, old_logp, adv, clip_low, clip_high)
    else:
        log_ratio = policy_log_ratio(logp, old_logp, mask, ratio_level)
        surrogate, clip_mask = clipped_surrogate(log_ratio, torch.zeros_like(log_ratio), adv, clip_low, clip_high)
    if weights is not None:
        surrogate = surrogate * weights
    per_token = surrogate
    kl = torch.zeros_like(logp)
    if ref_logp is not None:
        kl = kl_estimate(logp, ref_logp, kl_estimator)
        if kl_coef != 0.0:
            per_token = per_token + kl_coef * kl
    if entropy is not None and entropy_coef != 0.0:
        per_token = per_token - entropy_coef * entropy
    loss = _aggregate(per_token, mask, agg, normalizer, norm_len)
    with torch.no_grad():
        metrics = {
            "loss/policy": float(_aggregate(surrogate, mask, agg, normalizer, norm_len)),
            "policy/clip_frac": float(masked_mean(clip_mask.to(logp.dtype), mask)),
            "policy/kl": float(masked_mean(kl, mask)),
            "policy/ratio_mean": float(masked_mean(torch.exp(log_ratio), mask)),
            "policy/entropy": float(masked_mean(entropy, mask)) if entropy is not None else 0.0,
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


OldLogprobs = Literal["recompute", "engine"]
OLD_LOGPROBS: tuple[str, ...] = typing.get_args(OldLogprobs)
ISCorrection = Literal["none", "token-truncate", "token-mask", "sequence-truncate", "sequence-mask"]
IS_CORRECTIONS: tuple[str, ...] = typing.get_args(ISCorrection)
KLIn = Literal["loss", "reward"]
KL_IN: tuple[str, ...] = typing.get_args(KLIn)
Truncated = Literal["keep", "mask", "mask-turn-cap", "mask-token-cap"]
TRUNCATED: tuple[str, ...] = typing.get_args(Truncated)


@dataclass
class LossConfig:
    """The GRPO objective's knobs (defaults: the paper's clip 0.2, no KL, token-mean; the
    off-policy correction of an asynchronous run: old logprobs recomputed, token-level TIS at 2).
    ``train.*`` of the deploy config documents each one for users."""

    clip_low: float = 0.2
    """ε_low: the ratio may fall to 1 − ε_low before a negative-advantage token stops pushing."""

    clip_high: float = 0.2
    """ε_high: the ratio may rise to 1 + ε_high (DAPO's clip-higher raises it, e.g. 0.28)."""

    kl_coef: float = 0.0
    """β for the KL to a reference model; > 0 needs a reference model in the learner."""

    agg: Aggregation = "token-mean"
    """How per-token losses become one number: one of ``AGGREGATIONS``."""

    max_staleness: int = 1
    """Turns generated more than this many policy versions ago are dropped (and counted)."""

    temperature: float = 1.0
    """Sampling temperature of the policy workers; logprobs are recomputed at the same one."""

    kl_estimator: KLEstimator = "k3"
    """Estimator of KL(π‖π_ref) per token: k1, k2 or k3 (:func:`kl_estimate`)."""

    kl_in: KLIn = "loss"
    """Where β·KL goes: the ``loss`` (per token, as GRPO) or the ``reward`` (each turn's reward
    loses β × its tokens' KL of the behaviour policy to the reference, then advantages are
    recomputed from the penalised rewards)."""

    ratio_level: RatioLevel = "token"
    """PPO ratio per ``token``, or GSPO's per ``sequence`` (GSPO-token, see the module docs)."""

    entropy_coef: float = 0.0
    """Entropy bonus c_H (the loss subtracts c_H·H, aggregated like the policy loss); the entropy
    is logged every step either way."""

    old_logprobs: OldLogprobs = "recompute"
    """π_old of the PPO ratio: ``recompute`` = the learner's own logprobs under the weights of the
    version that sampled each token (kept in memory for the last ``max_staleness`` versions;
    free for tokens of the current version), ``engine`` = the logprobs the policy workers recorded."""

    is_correction: ISCorrection = "token-truncate"
    """Importance weight π_old/μ between the learner's and the engine's probabilities of the
    sampled token: per token or per sequence (the product over its trained tokens), truncated at
    ``is_cap`` or masked (weight 0) above it; ``none`` = no weight. Needs ``old_logprobs: recompute``."""

    is_cap: float = 2.0
    """C of the importance weight (>= 1)."""

    truncated: Truncated = "keep"
    """Episodes cut by the turn cap or by the token cap (a generation that hit max_new_tokens):
    ``keep`` trains on them, ``mask`` removes both from the loss, ``mask-turn-cap`` /
    ``mask-token-cap`` only one kind."""

    norm_len: int = 0
    """Dr. GRPO's constant: the most tokens one sequence may train (needed by agg ``dr-grpo``)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.clip_low < 1.0:
            raise ValueError(f"clip_low must be in [0, 1), got {self.clip_low!r}")
        if not self.clip_high >= 0.0:
            raise ValueError(f"clip_high must be >= 0, got {self.clip_high!r}")
        if not self.kl_coef >= 0.0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef!r}")
        if self.max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {self.max_staleness!r}")
        if not self.temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        for name, allowed in (
            ("agg", AGGREGATIONS),
            ("kl_estimator", KL_ESTIMATORS),
            ("kl_in", KL_IN),
            ("ratio_level", RATIO_LEVELS),
            ("old_logprobs", OLD_LOGPROBS),
            ("is_correction", IS_CORRECTIONS),
            ("truncated", TRUNCATED),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.entropy_coef >= 0.0:
            raise ValueError(f"entropy_coef must be >= 0, got {self.entropy_coef!r}")
        if not self.is_cap >= 1.0:
            raise ValueError(f"is_cap must be >= 1 (a cap below 1 down-weights on-policy tokens), got {self.is_cap!r}")
        if self.is_correction != "none" and self.old_logprobs != "recompute":
            raise ValueError(
                f"is_correction {self.is_correction!r} needs old_logprobs 'recompute': with the engine's "
                "logprobs as π_old the weight π_old/μ is 1 (set is_correction 'none')"
            )
        if self.agg == "dr-grpo" and self.norm_len <= 0:
            raise ValueError(f"agg 'dr-grpo' needs norm_len > 0, got {self.norm_len!r}")
