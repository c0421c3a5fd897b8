"""Off-policy correction: the learner's own old logprobs, truncated importance weights, mismatch.

The engine that samples (vLLM, or the hf backend) and the learner compute a token's probability
with different kernels, precisions and batch shapes, so even at staleness 0 the logprob μ the
policy worker recorded is not the learner's π_old for the same weights. Two corrections, as the
anchors ship them:

* **Recompute** (verl's ``old_log_prob``, AReaL's proximal policy): π_old is the learner's own
  forward pass with the weights of the version that sampled the token. The learner keeps its
  trainable weights of the last ``max_staleness`` versions (:class:`WeightSnapshots`; LoRA: the
  adapters only); tokens of the current version reuse the gradient pass's own logprobs, so a
  synchronous run pays nothing. A token whose version is no longer kept (after a resume) falls
  back to μ and is counted.
* **Importance weight** w = π_old/μ (:func:`importance_weights`): per token (TIS, Yao et al.
  2025) or per sequence (the product over its trained tokens), truncated at C or masked (w = 0)
  above it (MIS), as TRL's ``vllm_importance_sampling_mode`` and verl's rollout correction.

Every step logs the mismatch between μ and the learner's π_old on the tokens where the latter is
known (:func:`mismatch_sums`): KL(μ‖π_old) (k1 and k3 estimates from the sampled tokens), the
ratio π_old/μ's min / mean / max, and the fraction of tokens (or sequences) above the cap.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch

from userrl.learner.losses import LossConfig, grpo_loss

__all__ = ["WeightSnapshots", "corrected_loss", "importance_weights", "mismatch_metrics", "mismatch_sums"]


def corrected_loss(
    logp: torch.Tensor,
    entropy: torch.Tensor | None,
    behaviour: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    cfg: LossConfig,
    *,
    learner_old: torch.Tensor,
    known: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float], tuple[dict[str, float], dict[str, float]]]:
    """One micro-batch of the learner's objective under ``cfg``: π_old is ``learner_old`` where
    ``known`` (the learner's logprob at the sampling version; else the engine's ``behaviour``)
    with ``old_logprobs: recompute``, else ``behaviour``; the importance weights of
    ``is_correction``; then :func:`~userrl.learner.losses.grpo_loss`. Returns the loss, its
    metrics and the :func:`mismatch_sums` of the micro-batch."""
    old_logp = torch.where(known, learner_old, behaviour) if cfg.old_logprobs == "recompute" else behaviour
    weights, over = importance_weights(old_logp, behaviour, mask, cfg.is_correction, cfg.is_cap)
    loss, metrics = grpo_loss(
        logp,
        old_logp,
        adv,
        mask,
        ref_logp=ref_logp,
        kl_coef=cfg.kl_coef if cfg.kl_in == "loss" else 0.0,
        agg=cfg.agg,
        clip_low=cfg.clip_low,
        clip_high=cfg.clip_high,
        normalizer=normalizer,
        kl_estimator=cfg.kl_estimator,
        ratio_level=cfg.ratio_level,
        weights=weights if cfg.is_correction != "none" else None,
        entropy=entropy,
        entropy_coef=cfg.entropy_coef,
        norm_len=cfg.norm_len,
    )
    return loss, metrics, mismatch_sums(learner_old, behaviour, known, over, mask)


def importance_weights(
    old_logp: torch.Tensor, behaviour_logp: torch.Tensor, mask: torch.Tensor, mode: str, cap: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached weights (B, L) and where the ratio exceeded ``cap`` ((B, L) per token, (B, 1) per
    sequence). ``mode``: ``none``, ``token-truncate``, ``token-mask``, ``sequence-truncate`` or
    ``sequence-mask``. Positions off ``mask`` do not enter a sequence's product (their weight is
    irrelevant: the loss masks them)."""
    with torch.no_grad():
        if mode == "none":
            return torch.ones_like(old_logp), torch.zeros_like(old_logp, dtype=torch.bool)
        level, _, how = mode.partition("-")
        if level not in ("token", "sequence") or how not in ("truncate", "mask"):
            raise ValueError(f"unknown importance-weight mode {mode!r}")
        log_w = (old_logp - behaviour_logp) * mask.to(old_logp.dtype)
        if level == "sequence":
            log_w = log_w.sum(-1, keepdim=True)
        over = log_w > math.log(cap)
        if how == "truncate":
            w = torch.exp(log_w.clamp(max=math.log(cap)))
        else:
            w = torch.exp(log_w.clamp(max=math.log(cap))).masked_fill(over, 0.0)
        return w.expand_as(old_logp).contiguous(), over


def mismatch_sums(
    old_logp: torch.Tensor, behaviour_logp: torch.Tensor, known: torch.Tensor, over: torch.Tensor, mask: torch.Tensor
) -> tuple[dict[str, float], dict[str, float]]:
    """This micro-batch's sums (token-weighted) and maxima of the mismatch metrics; the caller
    adds the sums over micro-batches and ranks, takes the max of the maxima, then divides."""
    with torch.no_grad():
        known = known & (mask != 0)
        n = float(known.sum())
        log_r = (old_logp - behaviour_logp)[known]  # log π_old/μ on tokens sampled from μ
        ratio = torch.exp(log_r)
        per_seq = over.shape[-1] == 1
        trained_rows = (mask != 0).any(-1, keepdim=True)
        capped = (over & trained_rows).sum() if per_seq else (over & (mask != 0)).sum()
        units = trained_rows.sum() if per_seq else (mask != 0).sum()
        sums = {
            "n": n,
            "kl_k1": float((-log_r).sum()),  # E_μ[log μ − log π_old] = KL(μ‖π_old)
            "kl_k3": float((ratio - 1.0 - log_r).sum()),  # E_μ[r − 1 − log r], r = π_old/μ
            "ratio": float(ratio.sum()),
            "capped": float(capped),
            "units": float(units),
        }
        maxes = {
            "ratio_max": float(ratio.max()) if n else -math.inf,
            "neg_ratio_min": float(-ratio.min()) if n else -math.inf,
        }
    return sums, maxes


def mismatch_metrics(sums: dict[str, float], maxes: dict[str, float]) -> dict[str, float]:
    """The step's ``offpolicy/*`` metrics from summed :func:`mismatch_sums`."""
    n = max(sums["n"], 1.0)
    return {
        "offpolicy/kl": sums["kl_k3"] / n,
        "offpolicy/kl_k1": sums["kl_k1"] / n,
        "offpolicy/ratio_mean": sums["ratio"] / n if sums["n"] else 1.0,
        "offpolicy/ratio_min": -maxes["neg_ratio_min"] if sums["n"] else 1.0,
        "offpolicy/ratio_max": maxes["ratio_max"] if sums["n"] else 1.0,
        "offpolicy/capped_frac": sums["capped"] / max(sums["units"], 1.0),
        "offpolicy/tokens": int(sums["n"]),
    }


class WeightSnapshots:
    """Copies of the trainable weights by version, for recomputing old logprobs.

    Only parameters that train are copied (LoRA: the adapters); on CUDA plain tensors are kept
    in host memory. :meth:`swapped` loads a version into the model for a no-grad pass and puts
    the current weights back from their own snapshot, so no third copy is ever made.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter]) -> None:
        self.params = list(params)
        self.by_version: dict[int, list[torch.Tensor]] = {}

    def __contains__(self, version: int) -> bool:
        return version in self.by_version

    def save(self, version: int) -> None:
        if version in self.by_version:
            return
        with torch.no_grad():
            self.by_version[version] = [_offload(p) for p in self.params]

    def prune(self, oldest: int) -> None:
        """Forget versions older than ``oldest``."""
        for v in [v for v in self.by_version if v < oldest]:
            del self.by_version[v]

    @contextlib.contextmanager
    def swapped(self, version: int, current: int) -> Iterator[None]:
        """The model holds ``version``'s weights inside the block, ``current``'s (which must be
        saved) after it, also when the block raises."""
        if current not in self.by_version:
            raise KeyError(f"version {current} must be saved before another is swapped in")
        try:
            self._load(version)
            yield
        finally:
            self._load(current)

    def _load(self, version: int) -> None:
        with torch.no_grad():
            for p, saved in zip(self.params, self.by_version[version], strict=True):
                p.copy_(saved)


def _offload(p: torch.Tensor) -> torch.Tensor:
    if p.device.type == "cuda" and type(p.data) is torch.Tensor:  # sharded (DTensor) ones stay put
        return p.detach().to("cpu", copy=True)
    return p.detach().clone()
