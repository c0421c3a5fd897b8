"""The learner's no-gradient passes before a step's gradient pass.

* :func:`recompute_old_logprobs`: each trained token's logprob under the learner's weights of the
  version that sampled it (``old_logprobs: recompute``), one pass per older kept version, with
  that version's weights swapped in (:class:`~userrl.learner.offpolicy.WeightSnapshots`).
* :func:`kl_in_reward`: ``kl_in: reward``: the reference model's logprobs, each turn's reward
  minus β × its tokens' KL(behaviour‖reference) estimate, and the group's advantages recomputed
  from the penalised rewards with the run's reward settings (:mod:`userrl.learner.rewards`).

Under ``accelerate launch`` every rank makes the same forward calls of the wrapped model, in the
same order (empty micro-batches included), so FSDP's collectives line up.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from userrl.learner.losses import kl_estimate, token_logprobs
from userrl.learner.microbatch import step_plan
from userrl.learner.rewards import RewardConfig, group_advantages
from userrl.learner.sequences import TrainingSequence, collate, pad_rows, per_token_advantages

__all__ = ["kl_in_reward", "recompute_old_logprobs"]

Plan = list[tuple[list[int], bool]]
"""This rank's micro-batches: (sequence indexes, empty), the same count on every rank."""


def recompute_old_logprobs(
    learner: Any, seqs: list[TrainingSequence], keep: list[list[int]], plan: Plan
) -> tuple[list[list[float | None]], int, int]:
    """Per sequence and token, the learner's logprob under the weights of the token's version
    when that version is older than the current one and kept (else None: the gradient pass
    supplies the current version's, the engine's stands in for a version no longer kept); and
    how many tokens were recomputed and how many lacked their version."""
    cfg = learner.loss_cfg
    old: list[list[float | None]] = [[None] * len(s) for s in seqs]
    if cfg.old_logprobs != "recompute":
        return old, 0, 0
    if cfg.max_staleness > 0:
        learner.snapshots.save(learner.version)  # also what the older versions are swapped back to
    mine = {i for idx, empty in plan if not empty for i in idx}
    wanted: dict[int, int] = {}  # version -> this rank's tokens of it
    for i, (s, k) in enumerate(zip(seqs, keep, strict=True)):
        for v, m in zip(s.policy_version, k, strict=True):
            if m and v != learner.version:
                wanted[v] = wanted.get(v, 0) + (i in mine)
    missing = sum(n for v, n in wanted.items() if v not in learner.snapshots)
    recomputed = 0
    for v in sorted(v for v in wanted if v in learner.snapshots):  # the same list on every rank
        with learner.snapshots.swapped(v, learner.version):
            for idx, empty in plan:
                rows = [
                    [int(m and pv == v) for m, pv in zip(keep[i], seqs[i].policy_version, strict=True)] for i in idx
                ]
                if not learner.replicas.lockstep and (empty or not any(any(r) for r in rows)):
                    continue  # one process: nothing to line up with
                lp, vmask = _logprobs(learner, learner.net, [seqs[i] for i in idx], rows, empty)
                for row, i in enumerate(idx):
                    if empty:
                        break
                    for t in torch.nonzero(vmask[row]).flatten().tolist():
                        old[i][t] = float(lp[row, t])
                        recomputed += 1
    return old, recomputed, missing


def kl_in_reward(learner: Any, seqs: list[TrainingSequence]) -> tuple[list[list[float]], dict[str, float]]:
    """Advantages of ``seqs`` recomputed from turn rewards penalised by β × each turn's summed
    KL estimate between the behaviour logprobs and the reference model's; and the metrics
    ``policy/kl`` (mean per token, of the behaviour policy) and ``reward/kl_penalty`` (mean per trajectory). Every rank
    scores all sequences (the reference is not sharded): a group's advantages need all of it."""
    cfg = learner.loss_cfg
    masks = [list(s.loss_mask) for s in seqs]
    penalties: list[list[float]] = []
    kl_sum = tokens = 0.0
    micro, _ = step_plan([len(s) for s in seqs], 1, 0, learner.max_tokens)
    per_seq: dict[int, torch.Tensor] = {}
    for idx in micro:
        ref, _ = _logprobs(learner, learner.ref, [seqs[i] for i in idx], [masks[i] for i in idx], False)
        for row, i in enumerate(idx):
            per_seq[i] = ref[row, : len(seqs[i])].cpu()
    for i, s in enumerate(seqs):
        mask = torch.tensor(s.loss_mask, dtype=torch.bool)
        kl = kl_estimate(torch.tensor(s.behaviour_logprobs), per_seq[i], cfg.kl_estimator) * mask
        kl_sum += float(kl.sum())
        tokens += float(mask.sum())
        penalties.append(
            [cfg.kl_coef * float(kl[a : a + n].sum()) for a, n in zip(s.turn_starts, s.turn_lengths, strict=True)]
        )
    reward_cfg = learner.reward_cfg or RewardConfig()
    kw = {f.name: getattr(reward_cfg, f.name) for f in dataclasses.fields(RewardConfig)}
    advs: list[list[float]] = [[] for _ in seqs]
    for g in sorted({s.group for s in seqs}):
        members = [i for i, s in enumerate(seqs) if s.group == g]
        rewards = [[r - p for r, p in zip(seqs[i].turn_rewards, penalties[i], strict=True)] for i in members]
        _, adv = group_advantages(rewards, [seqs[i].turn_lengths for i in members], **kw)
        for i, a in zip(members, adv, strict=True):
            advs[i] = per_token_advantages(seqs[i], a)
    return advs, {
        "policy/kl": kl_sum / max(tokens, 1.0),
        "reward/kl_penalty": sum(map(sum, penalties)) / max(len(seqs), 1),
    }


def _logprobs(
    learner: Any, model: Any, seqs: list[TrainingSequence], rows: list[list[int]], empty: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """No-grad logprobs of ``model`` at the positions ``rows`` marks (an ``empty`` micro-batch
    still runs, on its first sequence with nothing marked), on the CPU, and that mask."""
    batch = collate(seqs, learner.pad_id)
    width = batch["input_ids"].shape[1]
    mask = pad_rows(rows, 0, torch.float32, width) * (0.0 if empty else 1.0)
    with torch.no_grad(), learner.autocast():
        ids, att = batch["input_ids"].to(learner.device), batch["attention_mask"].to(learner.device)
        t = learner.loss_cfg.temperature
        if model is learner.net:
            lp = model(ids, att, mask.to(learner.device), t, "none")
        else:
            lp = token_logprobs(model, ids, att, t, mask=mask.to(learner.device))
    return lp.float().cpu(), mask != 0
