"""GRPO loss pieces: hand-computed surrogate/KL/aggregation, logprob alignment, one real step."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.learner_groups import random_qwen3  # noqa: E402
from userrl.learner.losses import (  # noqa: E402
    LossConfig,
    _has_plain_lm_head,
    clipped_surrogate,
    drop_stale,
    grpo_loss,
    kl_k3,
    masked_mean,
    token_logprobs,
)
from userrl.learner.rewards import group_advantages  # noqa: E402
from userrl.learner.sequences import assemble, collate, per_token_advantages  # noqa: E402

pytestmark = pytest.mark.train


def _logratio(ratios: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp, old_logp) with the given ratios; old_logp fixed at log 0.5."""
    old = torch.full((len(ratios),), math.log(0.5))
    return old + torch.log(torch.tensor(ratios)), old


def test_clipped_surrogate_both_sides_both_signs() -> None:
    ratios = [1.5, 1.5, 0.5, 0.5, 1.1]
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, 2.0])
    logp, old = _logratio(ratios)
    loss, clipped = clipped_surrogate(logp, old, adv)
    # -min(r*A, clip(r, 0.8, 1.2)*A):
    # r=1.5 A=+1 -> -min(1.5, 1.2) = -1.2 (clipped);  r=1.5 A=-1 -> -min(-1.5, -1.2) = 1.5
    # r=0.5 A=+1 -> -min(0.5, 0.8) = -0.5;            r=0.5 A=-1 -> -min(-0.5, -0.8) = 0.8 (clipped)
    # r=1.1 A=+2 -> -2.2 (inside the trust region)
    assert loss.tolist() == pytest.approx([-1.2, 1.5, -0.5, 0.8, -2.2])
    assert clipped.tolist() == [True, False, False, True, False]


def test_clipped_surrogate_asymmetric_and_gradient_zero_when_clipped() -> None:
    logp, old = _logratio([1.25, 0.85, 1.35])
    logp.requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 1.0])
    loss, clipped = clipped_surrogate(logp, old, adv, clip_low=0.1, clip_high=0.3)
    # r=1.25 < 1.3 -> -1.25; r=0.85 < 0.9 with A<0 -> -min(-0.85, -0.9) = 0.9; r=1.35 -> -1.3
    assert loss.tolist() == pytest.approx([-1.25, 0.9, -1.3])
    assert clipped.tolist() == [False, True, True]
    loss.sum().backward()
    # d(-r*A)/d logp = -r*A on the unclipped token, 0 where clipped
    assert logp.grad.tolist() == pytest.approx([-1.25, 0.0, 0.0])


def test_kl_k3_by_hand() -> None:
    logp = torch.tensor([math.log(0.25), math.log(0.5)])
    ref = torch.tensor([math.log(0.5), math.log(0.5)])
    # log(ref/p) = ln 2 -> 2 - ln 2 - 1; equal -> 0
    assert kl_k3(logp, ref).tolist() == pytest.approx([1 - math.log(2), 0.0])


def test_masked_mean() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(1.5)
    assert masked_mean(x, mask, dim=-1).tolist() == pytest.approx([1.5, 0.0])


def test_aggregations_by_hand() -> None:
    # ratio 1 everywhere -> per-token loss = -A
    adv = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0], [7.0, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    logp = torch.zeros(3, 3)
    expected = {
        "token-mean": -(1 + 2 + 3 + 4) / 4,
        "seq-mean-token-mean": (-2 + -4) / 2,  # the empty third sequence does not count
        "seq-mean-token-sum": (-6 + -4) / 2,
    }
    for agg, value in expected.items():
        loss, metrics = grpo_loss(logp, logp, adv, mask, agg=agg)
        assert loss.item() == pytest.approx(value), agg
        assert metrics["loss/policy"] == pytest.approx(value)
        assert metrics["policy/ratio_mean"] == pytest.approx(1.0)
        assert metrics["policy/clip_frac"] == 0.0
        assert metrics["policy/kl"] == 0.0
    with pytest.raises(ValueError, match="agg must be one of"):
        grpo_loss(logp, logp, adv, mask, agg="sum")  # type: ignore[arg-type]


def test_grpo_loss_metrics_and_kl_term() -> None:
    logp, old = _logratio([1.5, 0.5])
    adv = torch.tensor([[1.0, -1.0]])
    logp, old = logp.unsqueeze(0), old.unsqueeze(0)
    ref = logp + math.log(2)  # KL per token = 1 - ln 2
    mask = torch.ones(1, 2)
    loss, metrics = grpo_loss(logp, old, adv, mask, ref_logp=ref, kl_coef=0.5)
    policy = (-1.2 + 0.8) / 2
    assert metrics["loss/policy"] == pytest.approx(policy)
    assert metrics["policy/clip_frac"] == pytest.approx(1.0)
    assert metrics["policy/kl"] == pytest.approx(1 - math.log(2))
    assert metrics["policy/ratio_mean"] == pytest.approx(1.0)
    assert loss.item() == pytest.approx(policy + 0.5 * (1 - math.log(2)))
    # per-sequence advantages broadcast over tokens
    seq_loss, _ = grpo_loss(logp, old, torch.tensor([1.0]), mask)
    assert seq_loss.item() == pytest.approx((-1.2 - 0.5) / 2)


def test_drop_stale_counts() -> None:
    keep, dropped = drop_stale([5, 4, 3, -1, 6], current_version=5, max_staleness=1)
    assert keep.tolist() == [True, True, False, False, True]
    assert dropped == 1
    tokens = torch.tensor([[-1, 2, 2, -1, 5], [0, 0, -1, -1, -1]])
    keep, dropped = drop_stale(tokens, current_version=5, max_staleness=2)
    assert keep.tolist() == [[False] * 4 + [True], [False] * 5]
    assert dropped == 4
    with pytest.raises(ValueError, match="max_staleness"):
        drop_stale([1], 1, -1)


def test_loss_config_validation() -> None:
    assert LossConfig().agg == "token-mean"
    for field, value in [
        ("clip_low", 1.0),
        ("clip_high", -0.1),
        ("kl_coef", -1.0),
        ("agg", "mean"),
        ("max_staleness", -1),
        ("temperature", 0.0),
    ]:
        with pytest.raises(ValueError, match=field):
            LossConfig(**{field: value})


# --- on a tiny randomly initialised Qwen3 ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    return random_qwen3(vocab_size=64)


def _batch() -> dict[str, torch.Tensor]:
    """Two dialogues of different lengths, right-padded, with hand-set advantages."""
    turns_a = [
        {"prompt_ids": [1, 2, 3], "token_ids": [10, 11], "logprobs": [-4.0, -4.1], "policy_version": 0, "reward": 0.0},
        {
            "prompt_ids": [1, 2, 3, 10, 11, 4],
            "token_ids": [12, 13, 14],
            "logprobs": [-4.2, -4.0, -4.3],
            "policy_version": 0,
            "reward": 1.0,
        },
    ]
    turns_b = [
        {"prompt_ids": [1, 5], "token_ids": [20, 21, 22], "logprobs": [-4.1] * 3, "policy_version": 0, "reward": 0.0}
    ]
    seqs = [assemble(turns_a), assemble(turns_b)]
    _, adv = group_advantages([s.turn_rewards for s in seqs], [s.turn_lengths for s in seqs])
    rows = [per_token_advantages(s, a) for s, a in zip(seqs, adv, strict=True)]
    return collate(seqs, pad_id=0, advantages=rows)


def test_token_logprobs_equal_manual_gather(tiny_model: torch.nn.Module) -> None:
    batch = _batch()
    with torch.no_grad():
        got = token_logprobs(tiny_model, batch["input_ids"], batch["attention_mask"])
        logits = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    ids = batch["input_ids"]
    for b in range(ids.shape[0]):
        assert got[b, 0].item() == 0.0
        for t in range(1, ids.shape[1]):
            assert got[b, t].item() == pytest.approx(logprobs[b, t - 1, ids[b, t]].item(), abs=1e-5)
    # right padding leaves the real tokens' logprobs unchanged
    n = int(batch["attention_mask"][1].sum())
    with torch.no_grad():
        alone = token_logprobs(tiny_model, ids[1:2, :n], batch["attention_mask"][1:2, :n])
    assert torch.allclose(alone[0], got[1, :n], atol=1e-5)


def test_token_logprobs_masked_head_matches_full(tiny_model: torch.nn.Module) -> None:
    batch = _batch()
    mask = batch["loss_mask"]
    assert _has_plain_lm_head(tiny_model)  # so the masked path below is really taken
    full = token_logprobs(tiny_model, batch["input_ids"], batch["attention_mask"])
    masked = token_logprobs(tiny_model, batch["input_ids"], batch["attention_mask"], mask=mask)
    assert torch.allclose(masked, full * mask, atol=1e-5)
    assert masked[mask == 0].abs().sum() == 0
    # gradients flow through the masked path
    masked.sum().backward()
    assert tiny_model.lm_head.weight.grad is not None
    tiny_model.zero_grad(set_to_none=True)


def test_token_logprobs_temperature(tiny_model: torch.nn.Module) -> None:
    batch = _batch()
    with torch.no_grad():
        logits = tiny_model(input_ids=batch["input_ids"]).logits
        got = token_logprobs(
            tiny_model, batch["input_ids"], batch["attention_mask"], temperature=0.5, mask=batch["loss_mask"]
        )
    want = torch.log_softmax(logits[0, 2] / 0.5, dim=-1)[batch["input_ids"][0, 3]]
    assert got[0, 3].item() == pytest.approx(want.item(), abs=1e-5)


def test_one_optimizer_step_lowers_the_loss(tiny_model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(tiny_model.config).train()
    model.load_state_dict(tiny_model.state_dict())
    batch = _batch()
    mask = batch["loss_mask"]
    assert batch["advantages"].abs().sum() > 0
    with torch.no_grad():  # behaviour = current policy, so the first step starts at ratio 1
        behaviour = token_logprobs(model, batch["input_ids"], batch["attention_mask"])
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_now() -> tuple[torch.Tensor, dict[str, float]]:
        logp = token_logprobs(model, batch["input_ids"], batch["attention_mask"], mask=mask)
        return grpo_loss(logp, behaviour, batch["advantages"], mask)

    loss, metrics = loss_now()
    assert metrics["policy/ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(p0, p) for p0, p in zip(before, model.parameters(), strict=True))
    with torch.no_grad():
        after, _ = loss_now()
    assert after.item() < loss.item()
