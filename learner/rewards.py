"""Turn rewards -> turn credits, trajectory scores and per-token GRPO advantages.

Pure Python (no torch), so the reward worker can score groups without the ``train`` extra.
The maths follows the UserRL reference (``compute_turn_credits`` and
``compute_grpo_multiturn_advantage``); ``docs/gyms.md`` §Rewards is the spec and its worked example
is reproduced cell by cell in ``tests/test_rewards.py``.

For one trajectory with turn rewards r_0 … r_{T-1} and discount γ (0.8 by default):

Trajectory score S (:func:`trajectory_score`)
    ``sum``: round(mean_t r_t, 4), 0 without turns (the reference's name; it is a mean).
    ``r2g``: Σ_t γ^t r_t.

Turn credits c_t (:func:`turn_credits`)
    ``equalized``: c_t = 1.
    ``r2g``: c_t = Σ_{k≥t} γ^{k−t} r_k.
    ``em``: c_t = round(0.5 + 0.5·(1 − e^{−k·r_t}) / (1 − e^{−k}), 4), k = 2
    (maps r ∈ [0, 1] onto [0.5, 1]).

Group normalization (:func:`group_normalize`)
    z = (S − mean) / (std + ε) with the unbiased (n−1) std, or z = S − mean without std;
    a group of one uses mean 0 and std 1, so its z is S itself, not 0.

Token advantages (:func:`token_advantages`)
    Each generated token of turn t starts at c_t, then the trajectory is rescaled so that its
    token advantages sum to z × N_nonzero (tokens with non-zero credit):
    A = c_t · z · N_nonzero / Σ_tokens c. If Σ_tokens c = 0, every advantage is 0.

Quirks of the reference, kept as defaults so results match the paper; fixes are opt-in
through :class:`RewardConfig`:

* Negative turn rewards (step penalties) make R2G credits, and so Σc, negative or zero: a
  zero Σc silences the whole trajectory and a small one of mixed sign explodes it.
  ``clip_negative_credits=True`` clips credits at 0 before rescaling.
* The normalizer counts tokens, so long turns weigh more and a turn's advantage depends on the
  lengths of the *other* turns. ``length_invariant=True`` normalizes per turn instead:
  A_t = c_t · z · T_nonzero / Σ_t c_t.
* ``sum`` is a mean rounded to 4 decimals, so scores closer than 5e-5 tie.
* The paper's tool logs the *max* turn reward as the episode reward (:func:`max_turn_reward`);
  evaluation sums the turn rewards. Neither is the training score above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from userrl.errors import RewardError

__all__ = [
    "CREDIT_METHODS",
    "SCORE_METHODS",
    "RewardConfig",
    "group_advantages",
    "group_normalize",
    "max_turn_reward",
    "token_advantages",
    "trajectory_score",
    "turn_credits",
]

CreditMethod = Literal["equalized", "r2g", "em"]
ScoreMethod = Literal["sum", "r2g"]
CREDIT_METHODS: tuple[str, ...] = ("equalized", "r2g", "em")
SCORE_METHODS: tuple[str, ...] = ("sum", "r2g")


def _discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    """Reward-to-go for every turn, accumulated backwards (one pass, no O(T²) sums)."""
    returns = [0.0] * len(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def trajectory_score(rewards: Sequence[float], method: ScoreMethod = "sum", gamma: float = 0.8) -> float:
    """One number per trajectory, the quantity GRPO compares across the group."""
    if method == "sum":
        # The reference calls this "Sum" but averages, then rounds; kept for parity.
        return round(sum(rewards) / len(rewards), 4) if rewards else 0.0
    if method == "r2g":
        return _discounted_returns(rewards, gamma)[0] if rewards else 0.0
    raise ValueError(f"score method must be one of {SCORE_METHODS}, got {method!r}")


def turn_credits(
    rewards: Sequence[float], method: CreditMethod = "equalized", gamma: float = 0.8, k: float = 2.0
) -> list[float]:
    """How much of the trajectory's advantage each turn receives, before rescaling."""
    if method == "equalized":
        return [1.0] * len(rewards)
    if method == "r2g":
        return _discounted_returns(rewards, gamma)
    if method == "em":
        scale = 1.0 - math.exp(-k)
        return [round(0.5 + 0.5 * (1.0 - math.exp(-k * r)) / scale, 4) for r in rewards]
    raise ValueError(f"credit method must be one of {CREDIT_METHODS}, got {method!r}")


def max_turn_reward(rewards: Sequence[float]) -> float:
    """The episode reward the paper's tool logs (the best turn), 0 without turns; logging only."""
    return max(rewards, default=0.0)


def group_normalize(scores: Sequence[float], use_std: bool = True, eps: float = 1e-6) -> list[float]:
    """z-scores within one GRPO group (unbiased std; a group of one has mean 0, std 1)."""
    n = len(scores)
    if n == 0:
        return []
    if n == 1:
        mean, std = 0.0, 1.0
    else:
        mean = sum(scores) / n
        std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
    if use_std:
        return [(s - mean) / (std + eps) for s in scores]
    return [s - mean for s in scores]


def token_advantages(
    credits: Sequence[float],
    turn_lengths: Sequence[int],
    z: float,
    length_invariant: bool = False,
) -> list[list[float]]:
    """Per-turn, per-token advantages of one trajectory (one list per entry of ``turn_lengths``).

    Turns past the last credit (e.g. a final generation with no tool call) get 0; credits past
    the last turn have no tokens and are ignored.
    """
    n_scored = min(len(credits), len(turn_lengths))
    scored = list(zip(credits[:n_scored], turn_lengths[:n_scored], strict=True))
    if length_invariant:
        # Each turn counts once, whatever its length.
        n_nonzero = sum(1 for c, _ in scored if c != 0)
        credit_total = sum(c for c, _ in scored)
    else:
        n_nonzero = sum(n for c, n in scored if c != 0)
        credit_total = sum(c * n for c, n in scored)
    if credit_total == 0:
        advantages = [[0.0] * n for _, n in scored]
    else:
        # c / Σc first: with subnormal credits, z·N/Σc alone overflows to inf
        advantages = [[(c / credit_total) * z * n_nonzero] * n for c, n in scored]
    advantages += [[0.0] * n for n in turn_lengths[n_scored:]]
    return advantages


def _check_group(rewards: Sequence[Sequence[float]], lengths: Sequence[Sequence[int]]) -> None:
    """Reject malformed groups as a scoring failure that names the culprit."""
    if len(rewards) != len(lengths):
        raise RewardError(f"group has {len(rewards)} reward lists but {len(lengths)} length lists")
    for i, (traj_rewards, traj_lengths) in enumerate(zip(rewards, lengths, strict=True)):
        for t, r in enumerate(traj_rewards):
            if not math.isfinite(r):
                raise RewardError(f"trajectory {i} turn {t}: reward {r!r} is not finite")
        for t, n in enumerate(traj_lengths):
            if n < 0:
                raise RewardError(f"trajectory {i} turn {t}: negative token length {n}")


def group_advantages(
    group_turn_rewards: Sequence[Sequence[float]],
    group_turn_lengths: Sequence[Sequence[int]],
    credit: CreditMethod = "equalized",
    score: ScoreMethod = "sum",
    gamma: float = 0.8,
    use_std: bool = True,
    em_k: float = 2.0,
    eps: float = 1e-6,
    length_invariant: bool = False,
    clip_negative_credits: bool = False,
) -> tuple[list[float], list[list[list[float]]]]:
    """Score a whole GRPO group: returns (scores S, advantages[trajectory][turn][token]).

    The keyword names match :class:`RewardConfig`'s fields, so
    ``group_advantages(r, n, **dataclasses.asdict(config))`` applies a config.
    """
    _check_group(group_turn_rewards, group_turn_lengths)
    scores = [trajectory_score(r, score, gamma) for r in group_turn_rewards]
    zs = group_normalize(scores, use_std=use_std, eps=eps)
    advantages = []
    for rewards, lengths, z in zip(group_turn_rewards, group_turn_lengths, zs, strict=True):
        credits = turn_credits(rewards, credit, gamma, em_k)
        if clip_negative_credits:
            credits = [max(c, 0.0) for c in credits]
        advantages.append(token_advantages(credits, lengths, z, length_invariant))
    return scores, advantages


@dataclass
class RewardConfig:
    """How finished trajectories become advantages (``docs/gyms.md`` §Rewards).

    Defaults reproduce the paper's shipped training script (Equalized + Sum, std-normalized).
    """

    credit: CreditMethod = "equalized"
    """Turn credit: ``equalized`` (all 1), ``r2g`` (discounted reward-to-go) or ``em``
    (exponential mapping of the turn reward onto [0.5, 1])."""

    score: ScoreMethod = "sum"
    """Trajectory score: ``sum`` (the reference's rounded *mean* of turn rewards) or ``r2g``
    (discounted return from the first turn)."""

    gamma: float = 0.8
    """Discount for the ``r2g`` credit and score, in [0, 1]."""

    em_k: float = 2.0
    """Steepness k of the ``em`` credit; must be > 0 (k = 0 divides by zero)."""

    use_std: bool = True
    """Divide by the group's unbiased std; off gives Dr. GRPO-style mean-centred scores."""

    eps: float = 1e-6
    """Added to the std so a group of equal scores yields zeros instead of NaN."""

    length_invariant: bool = False
    """Normalize by turns instead of tokens, so a turn's advantage does not depend on how long
    the other turns are (off = the reference)."""

    clip_negative_credits: bool = False
    """Clip turn credits at 0 before rescaling, so step penalties cannot flip or blow up the
    advantages through a negative or near-zero Σc (off = the reference)."""

    def __post_init__(self) -> None:
        if self.credit not in CREDIT_METHODS:
            raise ValueError(f"credit must be one of {CREDIT_METHODS}, got {self.credit!r}")
        if self.score not in SCORE_METHODS:
            raise ValueError(f"score must be one of {SCORE_METHODS}, got {self.score!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")
        if not self.em_k > 0.0:
            raise ValueError(f"em_k must be > 0, got {self.em_k!r}")
        if not self.eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {self.eps!r}")
