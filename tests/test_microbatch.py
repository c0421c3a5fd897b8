"""Micro-batches and rank shards: the same gradients as one batch (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.learner_groups import make_groups
from userrl.learner.losses import agg_normalizer
from userrl.learner.microbatch import plan_microbatches, shard_by_tokens, step_plan

torch = pytest.importorskip("torch")


def test_plans_cover_every_sequence_once_within_the_budget() -> None:
    lengths = [50, 7, 33, 120, 8, 8, 64, 1]
    for world in (1, 2, 3):
        shards = shard_by_tokens(lengths, world)
        assert sorted(i for s in shards for i in s) == list(range(len(lengths)))
        for budget in (1, 64, 130, 10_000):
            for s in shards:
                micro = plan_microbatches(s, lengths, budget)
                assert sorted(i for m in micro for i in m) == sorted(s)
                for m in micro:  # over budget only when one sequence alone is longer
                    assert len(m) * max(lengths[i] for i in m) <= budget or len(m) == 1
    loads = [sum(lengths[i] for i in s) for s in shard_by_tokens(lengths, 2)]
    assert abs(loads[0] - loads[1]) <= max(lengths)
    mine, most = step_plan(lengths, 3, 2, 64)
    assert most >= len(mine) and most >= 1
    assert step_plan([], 2, 1, 64) == ([], 1)


def test_normalizers() -> None:
    assert agg_normalizer([3, 0, 2], "token-mean") == 5
    assert agg_normalizer([3, 0, 2], "seq-mean-token-mean") == 2
    assert agg_normalizer([3, 0, 2], "seq-mean-token-sum") == 2
    with pytest.raises(ValueError, match="agg must be one of"):
        agg_normalizer([1], "sum")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from userrl.agents.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("mb")
    return build_tiny_model(root / "policy", seed=0), build_tiny_model(root / "ref", seed=1)


def grads(models: tuple[Path, Path], tmp: Path, budget: int, agg: str) -> tuple[dict, dict]:
    from userrl.learner.grpo_learner import GRPOLearner
    from userrl.learner.losses import LossConfig

    learner = GRPOLearner(
        models[0],
        tmp / f"o{budget}{agg}",
        lr=1e-3,
        device="cpu",
        ref_model_path=models[1],
        loss=LossConfig(kl_coef=0.1, agg=agg, max_staleness=1),
        max_tokens_per_microbatch=budget,
    )
    learner.version = 3  # turns of version 0 are stale (3 - 0 > 1) and masked out
    seqs, advs = learner.sequences(make_groups(4, versions=(0, 2, 3), seed=7))
    n_micro = len(step_plan([len(s) for s in seqs], 1, 0, budget)[0])
    assert n_micro == 1 if budget > 10_000 else n_micro > 3
    learner.optimizer.zero_grad(set_to_none=True)
    metrics = learner.accumulate(seqs, advs)
    return {n: p.grad.clone() for n, p in learner.model.named_parameters() if p.grad is not None}, metrics


@pytest.mark.train
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_microbatches_give_the_one_batch_gradients(models: tuple[Path, Path], tmp_path: Path, agg: str) -> None:
    one, m1 = grads(models, tmp_path, 1_000_000, agg)
    many, m2 = grads(models, tmp_path, 60, agg)  # several micro-batches, some of one sequence
    assert m1["rollout/stale_tokens"] > 0 and m1["rollout/trained_tokens"] > 0
    assert m2["rollout/trained_tokens"] == m1["rollout/trained_tokens"]
    assert m1["policy/kl"] > 0  # the reference is another model: the KL term has gradients
    assert one.keys() == many.keys() and len(one) > 5
    for name in one:
        torch.testing.assert_close(many[name], one[name], rtol=1e-4, atol=1e-7, msg=name)
    for key in ("loss/total", "loss/policy", "policy/kl", "policy/clip_frac", "policy/ratio_mean"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-5, abs=1e-7), key
