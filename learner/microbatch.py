"""How one GRPO step's sequences are split over ranks and micro-batches.

A step may hold any number of groups (gpu.yaml: 128 groups x 8 episodes x up to 16 turns); one
forward/backward over all of them does not fit in memory. The sequences are dealt to ranks by
token count, then packed into micro-batches whose *padded* size (rows x longest row) stays under
a token budget; gradients accumulate over micro-batches, and the loss of each is divided by the
normalizer of the whole step (:func:`userrl.learner.losses.agg_normalizer`), so the sum is exactly
the one-batch loss. Every rank computes every rank's plan from the same broadcast batch, so the
number of micro-batches (which collective-based engines need equal on all ranks) is known
without a collective.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["plan_microbatches", "shard_by_tokens", "step_plan"]


def shard_by_tokens(lengths: Sequence[int], world: int) -> list[list[int]]:
    """Indices of the sequences each of ``world`` ranks trains on, balanced by token count
    (longest first, each to the least loaded rank; ties to the lowest rank: deterministic)."""
    if world < 1:
        raise ValueError(f"world must be >= 1, got {world}")
    shards: list[list[int]] = [[] for _ in range(world)]
    load = [0] * world
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        r = min(range(world), key=lambda j: (load[j], j))
        shards[r].append(i)
        load[r] += lengths[i]
    return shards


def plan_microbatches(indices: Sequence[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Pack ``indices`` (into ``lengths``) into micro-batches of padded size rows x longest <=
    ``budget``; a sequence longer than the budget goes alone. Similar lengths share a
    micro-batch (sorted longest first), which keeps padding small."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    out: list[list[int]] = []
    cur: list[int] = []
    width = 0
    for i in sorted(indices, key=lambda k: (-lengths[k], k)):
        w = max(width, lengths[i])
        if cur and w * (len(cur) + 1) > budget:
            out.append(cur)
            cur, w = [], lengths[i]
        cur.append(i)
        width = w
    if cur:
        out.append(cur)
    return out


def step_plan(lengths: Sequence[int], world: int, rank: int, budget: int) -> tuple[list[list[int]], int]:
    """This rank's micro-batches and the most any rank has (ranks with fewer pad with empty
    micro-batches so that all run the same number of forward/backward passes)."""
    plans = [plan_microbatches(s, lengths, budget) for s in shard_by_tokens(lengths, world)]
    return plans[rank], max(max(len(p) for p in plans), 1)
