"""The GRPO objective against references written from the papers' equations (issue 23).

Each reference below is plain Python over lists, written from the formula it names (PPO/GRPO,
DAPO's token-mean, Dr. GRPO, GSPO, Schulman's KL estimators, TIS/MIS), never calling the
implementation; both are compared on random batches with ragged lengths, holes in the masks and
a row with nothing to train, for values and for gradients.
"""

from __future__ import annotations

import math
import random

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.learner_groups import random_qwen3  # noqa: E402
from userrl.learner.losses import grpo_loss, kl_estimate, token_logprobs  # noqa: E402
from userrl.learner.offpolicy import importance_weights, mismatch_metrics, mismatch_sums  # noqa: E402

pytestmark = pytest.mark.train

EPS_LOW, EPS_HIGH = 0.2, 0.28
NORM_LEN = 16
SEEDS = range(6)
AGGS = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "dr-grpo"]


# --- random batches ---------------------------------------------------------------------------


def random_batch(seed: int, seq_adv: bool = False) -> dict[str, list[list[float]]]:
    """Ragged rows (right-padded with mask 0), random holes in the masks, one empty row."""
    rng = random.Random(seed)
    b, width = 6, 13
    lengths = [rng.randint(1, width) for _ in range(b - 1)] + [width]
    rng.shuffle(lengths)
    out: dict[str, list[list[float]]] = {k: [] for k in ("mask", "logp", "old", "mu", "ref", "adv", "ent")}
    for i, n in enumerate(lengths):
        mask = [float(t < n and rng.random() < 0.75) for t in range(width)]
        if i == 0:
            mask = [0.0] * width  # nothing to train in this row
        logp = [-rng.uniform(0.05, 4.0) for _ in range(width)]
        old = [lp + rng.gauss(0, 0.25) for lp in logp]
        a = rng.gauss(0, 1)
        out["mask"].append(mask)
        out["logp"].append(logp)
        out["old"].append(old)
        out["mu"].append([o + rng.gauss(0, 0.3) for o in old])
        out["ref"].append([lp + rng.gauss(0, 0.5) for lp in logp])
        out["adv"].append([a if seq_adv else rng.gauss(0, 1) for _ in range(width)])
        out["ent"].append([rng.uniform(0, 3) for _ in range(width)])
    return out


def tensors(batch: dict[str, list[list[float]]]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in batch.items()}


# --- references from the equations ------------------------------------------------------------


def ppo_token(r: float, a: float) -> float:
    """PPO's clipped surrogate, negated: −min(r·A, clip(r, 1 − ε_low, 1 + ε_high)·A)."""
    return -min(r * a, min(max(r, 1 - EPS_LOW), 1 + EPS_HIGH) * a)


def clipped(r: float, a: float) -> bool:
    """The min takes the clipped branch (no gradient): r left the trust region the way A pushes."""
    return (r > 1 + EPS_HIGH and a > 0) or (r < 1 - EPS_LOW and a < 0)


def agg_weights(mask: list[list[float]], agg: str) -> list[list[float]]:
    """∂ loss / ∂ per-token loss of each aggregation. token-mean (DAPO): 1/Σ|o_i|; the original
    GRPO seq-mean-token-mean: 1/(G·|o_i|); seq-mean-token-sum: 1/G; Dr. GRPO: 1/(G·L_max) with G
    every row; G counts rows with a trained token (not for Dr. GRPO, whose divisor is constant)."""
    counts = [sum(row) for row in mask]
    g = sum(1 for c in counts if c > 0)
    total = sum(counts)
    out = []
    for row, c in zip(mask, counts, strict=True):
        if agg == "token-mean":
            w = 1 / total
        elif agg == "seq-mean-token-mean":
            w = 1 / (g * c) if c else 0.0
        elif agg == "seq-mean-token-sum":
            w = 1 / g
        else:
            w = 1 / (len(mask) * NORM_LEN)
        out.append([w * m for m in row])
    return out


def weighted_sum(values: list[list[float]], weights: list[list[float]]) -> float:
    return sum(v * w for vr, wr in zip(values, weights, strict=True) for v, w in zip(vr, wr, strict=True))


def is_weights(old: list[list[float]], mu: list[list[float]], mask: list[list[float]], mode: str, cap: float):
    """TIS / MIS: ρ = π_old/μ per token, or Π_t ρ_t over a sequence's trained tokens; truncated
    min(ρ, C), or masked (0 above C). Also which units went above C."""
    if mode == "none":
        return [[1.0] * len(r) for r in old], []
    level, how = mode.split("-")
    weights, over = [], []
    for o_row, m_row, mask_row in zip(old, mu, mask, strict=True):
        rho = [math.exp(o - m) for o, m in zip(o_row, m_row, strict=True)]
        if level == "sequence":
            seq = math.prod(r for r, k in zip(rho, mask_row, strict=True) if k)
            rho = [seq] * len(rho)
        if level == "token":
            over.extend(r > cap for r, k in zip(rho, mask_row, strict=True) if k)
        elif any(mask_row):
            over.append(rho[0] > cap)
        weights.append([min(r, cap) if how == "truncate" else (r if r <= cap else 0.0) for r in rho])
    return weights, over


def kl_ref(logp: float, ref: float, estimator: str) -> float:
    """Schulman (2020), r = π_ref/π: k1 = −log r, k2 = ½(log r)², k3 = (r − 1) − log r."""
    log_r = ref - logp
    return {"k1": -log_r, "k2": 0.5 * log_r**2, "k3": math.exp(log_r) - 1 - log_r}[estimator]


# --- the comparisons ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("agg", AGGS)
def test_token_ratio_loss_and_gradient_match_the_reference(seed: int, agg: str) -> None:
    b = random_batch(seed)
    t = tensors(b)
    logp = t["logp"].clone().requires_grad_(True)
    loss, metrics = grpo_loss(
        logp, t["old"], t["adv"], t["mask"], agg=agg, clip_low=EPS_LOW, clip_high=EPS_HIGH, norm_len=NORM_LEN
    )
    loss.backward()
    weights = agg_weights(b["mask"], agg)
    per_token, grad = [], []
    for lp_row, o_row, a_row in zip(b["logp"], b["old"], b["adv"], strict=True):
        rs = [math.exp(lp - o) for lp, o in zip(lp_row, o_row, strict=True)]
        per_token.append([ppo_token(r, a) for r, a in zip(rs, a_row, strict=True)])
        grad.append([0.0 if clipped(r, a) else -a * r for r, a in zip(rs, a_row, strict=True)])
    assert loss.item() == pytest.approx(weighted_sum(per_token, weights), rel=1e-9, abs=1e-12)
    assert metrics["loss/policy"] == pytest.approx(loss.item(), rel=1e-9, abs=1e-12)
    want = [[g * w for g, w in zip(gr, wr, strict=True)] for gr, wr in zip(grad, weights, strict=True)]
    torch.testing.assert_close(logp.grad, torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=1e-12)
    trained = [
        (r, a)
        for lr, orow, ar, mr in zip(b["logp"], b["old"], b["adv"], b["mask"], strict=True)
        for r, a, m in zip([math.exp(x - y) for x, y in zip(lr, orow, strict=True)], ar, mr, strict=True)
        if m
    ]
    assert metrics["policy/clip_frac"] == pytest.approx(sum(clipped(r, a) for r, a in trained) / len(trained))
    assert metrics["policy/ratio_mean"] == pytest.approx(sum(r for r, _ in trained) / len(trained))


@pytest.mark.parametrize("seed", SEEDS)
def test_gspo_with_sequence_advantages_is_the_papers_sequence_objective(seed: int) -> None:
    """GSPO (Zheng et al. 2025): s_i = (π(y_i)/π_old(y_i))^{1/|y_i|}, J = mean_i min(s_i A_i,
    clip(s_i) A_i), ∇J = mean_i s_i A_i (1/|y_i|) Σ_t ∇log π_t where unclipped."""
    b = random_batch(seed, seq_adv=True)
    t = tensors(b)
    logp = t["logp"].clone().requires_grad_(True)
    loss, metrics = grpo_loss(
        logp,
        t["old"],
        t["adv"],
        t["mask"],
        agg="seq-mean-token-mean",
        clip_low=EPS_LOW,
        clip_high=EPS_HIGH,
        ratio_level="sequence",
    )
    loss.backward()
    rows = [i for i, m in enumerate(b["mask"]) if any(m)]
    want_loss, want_grad = 0.0, [[0.0] * len(r) for r in b["logp"]]
    ratios = []
    for i in rows:
        m, n, a = b["mask"][i], sum(b["mask"][i]), b["adv"][i][0]
        s = math.exp(sum(k * (lp - o) for k, lp, o in zip(m, b["logp"][i], b["old"][i], strict=True)) / n)
        ratios.append((s, n))
        want_loss += ppo_token(s, a) / len(rows)
        if not clipped(s, a):
            want_grad[i] = [-(s * a / n) * k / len(rows) for k in m]
    assert loss.item() == pytest.approx(want_loss, rel=1e-9, abs=1e-12)
    torch.testing.assert_close(logp.grad, torch.tensor(want_grad, dtype=torch.float64), rtol=1e-9, atol=1e-12)
    # the logged ratio is the token-weighted mean of the sequence ratios
    assert metrics["policy/ratio_mean"] == pytest.approx(sum(s * n for s, n in ratios) / sum(n for _, n in ratios))


@pytest.mark.parametrize("seed", SEEDS)
def test_gspo_token_with_token_advantages(seed: int) -> None:
    """GSPO-token: s_{i,t} = sg[s_i]·π_t/sg[π_t]: value s_i, ∂s_{i,t}/∂log π_t = s_i."""
    b = random_batch(seed)
    t = tensors(b)
    logp = t["logp"].clone().requires_grad_(True)
    loss, _ = grpo_loss(
        logp, t["old"], t["adv"], t["mask"], clip_low=EPS_LOW, clip_high=EPS_HIGH, ratio_level="sequence"
    )
    loss.backward()
    weights = agg_weights(b["mask"], "token-mean")
    per_token, grad = [], []
    for m, lp_row, o_row, a_row in zip(b["mask"], b["logp"], b["old"], b["adv"], strict=True):
        n = sum(m)
        s = math.exp(sum(k * (x - y) for k, x, y in zip(m, lp_row, o_row, strict=True)) / n) if n else 1.0
        per_token.append([ppo_token(s, a) for a in a_row])
        grad.append([0.0 if clipped(s, a) else -a * s for a in a_row])
    assert loss.item() == pytest.approx(weighted_sum(per_token, weights), rel=1e-9, abs=1e-12)
    want = [[g * w for g, w in zip(gr, wr, strict=True)] for gr, wr in zip(grad, weights, strict=True)]
    torch.testing.assert_close(logp.grad, torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", ["token-truncate", "token-mask", "sequence-truncate", "sequence-mask"])
@pytest.mark.parametrize("cap", [1.0, 2.0, 5.0])
def test_importance_weights_and_the_corrected_loss(seed: int, mode: str, cap: float) -> None:
    """L = agg(−w_t·min(r_t A_t, clip(r_t) A_t)), r = π/π_old, w from π_old/μ (TIS / MIS)."""
    b = random_batch(seed)
    t = tensors(b)
    w, over = importance_weights(t["old"], t["mu"], t["mask"], mode, cap)
    want_w, want_over = is_weights(b["old"], b["mu"], b["mask"], mode, cap)
    m = t["mask"].bool()
    torch.testing.assert_close(w[m], torch.tensor(want_w, dtype=torch.float64)[m], rtol=1e-9, atol=1e-12)
    assert not w.requires_grad
    got_over = over[m].tolist() if mode.startswith("token") else over[m.any(-1)].flatten().tolist()
    assert got_over == want_over
    logp = t["logp"].clone().requires_grad_(True)
    loss, _ = grpo_loss(logp, t["old"], t["adv"], t["mask"], clip_low=EPS_LOW, clip_high=EPS_HIGH, weights=w)
    loss.backward()
    weights = agg_weights(b["mask"], "token-mean")
    per_token, grad = [], []
    for lp_row, o_row, a_row, w_row in zip(b["logp"], b["old"], b["adv"], want_w, strict=True):
        rs = [math.exp(x - y) for x, y in zip(lp_row, o_row, strict=True)]
        per_token.append([wt * ppo_token(r, a) for r, a, wt in zip(rs, a_row, w_row, strict=True)])
        grad.append([0.0 if clipped(r, a) else -wt * a * r for r, a, wt in zip(rs, a_row, w_row, strict=True)])
    assert loss.item() == pytest.approx(weighted_sum(per_token, weights), rel=1e-9, abs=1e-12)
    want = [[g * x for g, x in zip(gr, wr, strict=True)] for gr, wr in zip(grad, weights, strict=True)]
    torch.testing.assert_close(logp.grad, torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=1e-12)


def test_sequence_weights_do_not_overflow() -> None:
    old = torch.full((2, 400), -0.1)
    mu = torch.full((2, 400), -5.0)  # log ratio 4.9 per token: e^1960 over a sequence
    mask = torch.ones(2, 400)
    for how, value in (("truncate", 3.0), ("mask", 0.0)):
        w, over = importance_weights(old, mu, mask, f"sequence-{how}", 3.0)
        assert torch.isfinite(w).all() and (w == value).all() and over.all()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("agg", AGGS)
def test_kl_in_the_loss_and_the_entropy_bonus(seed: int, estimator: str, agg: str) -> None:
    """L = agg(PPO_t + β·k(π_t, π_ref,t) − c_H·H_t); policy/kl and policy/entropy are token means."""
    b = random_batch(seed)
    t = tensors(b)
    beta, c_h = 0.3, 0.05
    loss, metrics = grpo_loss(
        t["logp"],
        t["old"],
        t["adv"],
        t["mask"],
        ref_logp=t["ref"],
        kl_coef=beta,
        agg=agg,
        clip_low=EPS_LOW,
        clip_high=EPS_HIGH,
        kl_estimator=estimator,
        entropy=t["ent"],
        entropy_coef=c_h,
        norm_len=NORM_LEN,
    )
    per_token, kls, ents = [], [], []
    for rows in zip(b["logp"], b["old"], b["adv"], b["ref"], b["ent"], b["mask"], strict=True):
        per_token.append([])
        for lp, o, a, ref, h, m in zip(*rows, strict=True):
            k = kl_ref(lp, ref, estimator)
            per_token[-1].append(ppo_token(math.exp(lp - o), a) + beta * k - c_h * h)
            if m:
                kls.append(k)
                ents.append(h)
    assert loss.item() == pytest.approx(weighted_sum(per_token, agg_weights(b["mask"], agg)), rel=1e-9, abs=1e-12)
    assert metrics["policy/kl"] == pytest.approx(sum(kls) / len(kls), rel=1e-9)
    assert metrics["policy/entropy"] == pytest.approx(sum(ents) / len(ents), rel=1e-9)


def test_kl_estimators_estimate_the_kl_on_samples_from_the_policy() -> None:
    """Schulman's claims: on tokens drawn from π, E[k1] = E[k3] = KL(π‖π_ref); k3 >= 0 always."""
    gen = torch.Generator().manual_seed(0)
    pi = torch.softmax(torch.randn(9, generator=gen, dtype=torch.float64), 0)
    ref = torch.softmax(torch.randn(9, generator=gen, dtype=torch.float64), 0)
    exact = float((pi * (pi.log() - ref.log())).sum())
    x = torch.multinomial(pi, 400_000, replacement=True, generator=gen)
    logp, ref_logp = pi.log()[x], ref.log()[x]
    for est in ("k1", "k3"):
        values = kl_estimate(logp, ref_logp, est)
        stderr = float(values.std()) / math.sqrt(len(values))
        assert abs(float(values.mean()) - exact) < 4 * stderr + 1e-9, est
    assert (kl_estimate(logp, ref_logp, "k3") >= 0).all()
    with pytest.raises(ValueError, match="kl estimator"):
        kl_estimate(logp, ref_logp, "k4")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", ["token-truncate", "sequence-mask"])
def test_mismatch_metrics(seed: int, mode: str) -> None:
    """KL(μ‖π_old) from tokens drawn from μ: k1 = mean(log μ − log π_old), k3 = mean(ρ − 1 − log ρ)
    with ρ = π_old/μ; ratio min/mean/max; the share of tokens (or sequences) above the cap."""
    b = random_batch(seed)
    t = tensors(b)
    rng = random.Random(seed)
    known = torch.tensor([[rng.random() < 0.8 for _ in row] for row in b["mask"]])
    _, over = importance_weights(t["old"], t["mu"], t["mask"], mode, 1.3)
    sums, maxes = mismatch_sums(t["old"], t["mu"], known, over, t["mask"])
    got = mismatch_metrics(sums, maxes)
    pairs = [
        (o, m)
        for orow, mrow, krow, mask in zip(b["old"], b["mu"], known.tolist(), b["mask"], strict=True)
        for o, m, k, x in zip(orow, mrow, krow, mask, strict=True)
        if k and x
    ]
    rhos = [math.exp(o - m) for o, m in pairs]
    _, want_over = is_weights(b["old"], b["mu"], b["mask"], mode, 1.3)
    assert got["offpolicy/tokens"] == len(pairs)
    assert got["offpolicy/kl_k1"] == pytest.approx(sum(m - o for o, m in pairs) / len(pairs), rel=1e-9)
    assert got["offpolicy/kl"] == pytest.approx(sum(r - 1 - math.log(r) for r in rhos) / len(rhos), rel=1e-9)
    assert got["offpolicy/ratio_mean"] == pytest.approx(sum(rhos) / len(rhos), rel=1e-9)
    assert got["offpolicy/ratio_min"] == pytest.approx(min(rhos)) and got["offpolicy/ratio_max"] == pytest.approx(
        max(rhos)
    )
    assert got["offpolicy/capped_frac"] == pytest.approx(sum(want_over) / len(want_over))


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    return random_qwen3(vocab_size=50)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("masked_head", [True, False])
def test_entropy_of_the_tempered_distribution(
    tiny_model: torch.nn.Module, temperature: float, masked_head: bool
) -> None:
    """H_t = −Σ_v p_v log p_v with p = softmax(logits_{t−1} / T), at the trained positions."""
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 50, (3, 11), generator=gen)
    att = torch.ones_like(ids)
    att[1, 7:] = 0
    mask = (torch.rand(3, 11, generator=gen) < 0.6).float() * att
    mask[:, 0] = 0
    with torch.no_grad():
        logits = tiny_model(input_ids=ids, attention_mask=att).logits.double()
        lp, ent = token_logprobs(tiny_model, ids, att, temperature, mask=mask if masked_head else None, entropy="value")
    for b in range(3):
        for t in range(1, 11):
            if not mask[b, t]:
                continue
            z = [float(v) / temperature for v in logits[b, t - 1]]
            top = max(z)
            norm = math.log(sum(math.exp(v - top) for v in z)) + top
            h = -sum(math.exp(v - norm) * (v - norm) for v in z)
            assert ent[b, t].item() == pytest.approx(h, rel=1e-4, abs=1e-5)
            assert lp[b, t].item() == pytest.approx(z[int(ids[b, t])] - norm, rel=1e-4, abs=1e-5)
    assert not ent.requires_grad
