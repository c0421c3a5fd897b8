"""Rewards -> advantages: docs/gyms.md's worked example cell by cell, hand-computed cases, properties."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from userrl.errors import RewardError
from userrl.learner.rewards import (
    RewardConfig,
    group_advantages,
    group_normalize,
    max_turn_reward,
    token_advantages,
    trajectory_score,
    turn_credits,
)

# --- docs/gyms.md worked example --------------------------------------------------------------

GROUP = [[0, 0, 1], [0, 0.5], [0, 0, 0, 0.2], [1]]
TWO_TOKENS = [[2] * len(r) for r in GROUP]
SUM_SCORES = [0.3333, 0.25, 0.05, 1.0]
R2G_SCORES = [0.64, 0.4, 0.1024, 1.0]
R2G_CREDITS = [[0.64, 0.8, 1], [0.4, 0.5], [0.1024, 0.128, 0.16, 0.2], [1]]
EM_CREDITS = [[0.5, 0.5, 1], [0.5, 0.8655], [0.5, 0.5, 0.5, 0.6906], [1]]

# (credit, score) -> (scores, per-turn advantages with std, without std), copied from the table.
TABLE = {
    ("equalized", "sum"): (
        SUM_SCORES,
        [[-0.1821] * 3, [-0.3843] * 2, [-0.8698] * 4, [1.4362]],
        [[-0.075] * 3, [-0.1583] * 2, [-0.3583] * 4, [0.5917]],
    ),
    ("equalized", "r2g"): (
        R2G_SCORES,
        [[0.2749] * 3, [-0.3571] * 2, [-1.1408] * 4, [1.2229]],
        [[0.1044] * 3, [-0.1356] * 2, [-0.4332] * 4, [0.4644]],
    ),
    ("r2g", "sum"): (
        SUM_SCORES,
        [[-0.1433, -0.1791, -0.2239], [-0.3416, -0.427], [-0.6034, -0.7543, -0.9428, -1.1786], [1.4362]],
        [[-0.059, -0.0738, -0.0922], [-0.1407, -0.1759], [-0.2486, -0.3107, -0.3884, -0.4855], [0.5917]],
    ),
    ("r2g", "r2g"): (
        R2G_SCORES,
        [[0.2163, 0.2704, 0.338], [-0.3174, -0.3968], [-0.7914, -0.9893, -1.2366, -1.5458], [1.2229]],
        [[0.0822, 0.1027, 0.1284], [-0.1205, -0.1507], [-0.3005, -0.3757, -0.4696, -0.587], [0.4644]],
    ),
    ("em", "sum"): (
        SUM_SCORES,
        [[-0.1366, -0.1366, -0.2732], [-0.2814, -0.4872], [-0.7941] * 3 + [-1.0968], [1.4362]],
        [[-0.0563, -0.0563, -0.1125], [-0.1159, -0.2007], [-0.3271] * 3 + [-0.4519], [0.5917]],
    ),
    ("em", "r2g"): (
        R2G_SCORES,
        [[0.2062, 0.2062, 0.4124], [-0.2615, -0.4527], [-1.0415] * 3 + [-1.4385], [1.2229]],
        [[0.0783, 0.0783, 0.1566], [-0.0993, -0.1719], [-0.3955] * 3 + [-0.5463], [0.4644]],
    ),
}
CELLS = [(c, s, std) for (c, s) in TABLE for std in (True, False)]


@pytest.mark.parametrize(("credit", "score", "use_std"), CELLS)
def test_worked_example_cell(credit: str, score: str, use_std: bool) -> None:
    expected_scores, with_std, without_std = TABLE[(credit, score)]
    scores, advantages = group_advantages(GROUP, TWO_TOKENS, credit=credit, score=score, gamma=0.8, use_std=use_std)
    assert [round(s, 4) for s in scores] == expected_scores
    expected = with_std if use_std else without_std
    for traj, (turns, want) in enumerate(zip(advantages, expected, strict=True)):
        for turn, (tokens, value) in enumerate(zip(turns, want, strict=True)):
            assert len(tokens) == 2
            assert [round(a, 4) for a in tokens] == [value, value], (traj, turn)


def test_worked_example_credits() -> None:
    for rewards, r2g, em in zip(GROUP, R2G_CREDITS, EM_CREDITS, strict=True):
        assert [round(c, 4) for c in turn_credits(rewards, "r2g", 0.8)] == r2g
        assert turn_credits(rewards, "em") == em
        assert turn_credits(rewards, "equalized") == [1.0] * len(rewards)


# --- hand-computed small cases ---------------------------------------------------------------


def _flat(turns: list[list[float]]) -> list[float]:
    """pytest.approx compares flat sequences only."""
    return [a for turn in turns for a in turn]


def test_sum_score_is_rounded_mean_and_zero_when_empty() -> None:
    assert trajectory_score([1, 0, 0], "sum") == 0.3333
    assert trajectory_score([], "sum") == 0.0
    assert trajectory_score([], "r2g") == 0.0


def test_r2g_score_and_credits_by_hand() -> None:
    # 0.5 + 0.5 * 1 = 1.0; credits: [0.5 + 0.5*1, 1]
    assert trajectory_score([0.5, 1.0], "r2g", gamma=0.5) == pytest.approx(1.0)
    assert turn_credits([0.5, 1.0], "r2g", gamma=0.5) == pytest.approx([1.0, 1.0])


def test_em_endpoints() -> None:
    assert turn_credits([0.0, 1.0], "em") == [0.5, 1.0]


def test_group_normalize_by_hand() -> None:
    # mean 2, unbiased std 1
    assert group_normalize([1.0, 2.0, 3.0], eps=0.0) == pytest.approx([-1.0, 0.0, 1.0])
    assert group_normalize([1.0, 2.0, 3.0], use_std=False) == pytest.approx([-1.0, 0.0, 1.0])
    # a group of one: mean 0, std 1 -> z is the score itself (the reference's behaviour)
    assert group_normalize([0.7], eps=0.0) == pytest.approx([0.7])
    assert group_normalize([]) == []
    # equal scores: eps keeps it finite
    assert group_normalize([0.5, 0.5]) == [0.0, 0.0]


def test_token_advantages_unequal_lengths_by_hand() -> None:
    # credits [1, 0.5], lengths [1, 2]: N_nonzero = 3, sum c = 1 + 0.5*2 = 2 -> scale = z * 3 / 2
    adv = token_advantages([1.0, 0.5], [1, 2], z=2.0)
    assert _flat(adv) == pytest.approx(_flat([[3.0], [1.5, 1.5]]))


def test_token_advantages_zero_credit_tokens_not_counted() -> None:
    # credits [1, 0]: only the first turn's 2 tokens count; scale = z * 2 / 2
    adv = token_advantages([1.0, 0.0], [2, 3], z=0.4)
    assert _flat(adv) == pytest.approx([0.4, 0.4, 0.0, 0.0, 0.0])


def test_token_advantages_extra_turns_and_extra_credits() -> None:
    # a final generation without a tool call has no credit -> zeros
    assert token_advantages([1.0], [2, 3], z=1.0) == [[1.0, 1.0], [0.0, 0.0, 0.0]]
    # credits past the last turn have no tokens
    assert token_advantages([1.0, 5.0], [2], z=1.0) == [[1.0, 1.0]]


def test_token_advantages_zero_credit_sum_gives_zeros() -> None:
    assert token_advantages([0.0, 0.0], [1, 1], z=3.0) == [[0.0], [0.0]]
    assert token_advantages([1.0, -1.0], [1, 1], z=3.0) == [[0.0], [0.0]]


def test_length_invariant_option_ignores_lengths() -> None:
    # per turn: T_nonzero = 2, sum c = 1.5 -> A_t = c_t * z * 2 / 1.5
    adv = token_advantages([1.0, 0.5], [1, 5], z=1.5, length_invariant=True)
    assert _flat(adv) == pytest.approx([2.0] + [1.0] * 5)


def test_clip_negative_credits_option() -> None:
    # A step penalty after a success: r2g credits [1 - 0.8, -1] = [0.2, -1], sum c = -0.8.
    # Scores (sum): 0 and 0.5 -> z = -0.25 for the penalized trajectory (no std).
    rewards = [[1.0, -1.0], [0.5]]
    lengths = [[1, 1], [1]]
    _, plain = group_advantages(rewards, lengths, credit="r2g", score="sum", use_std=False)
    # reference: A_t = c_t * z * 2 / -0.8 -> the rewarded turn gets a positive advantage
    # although its trajectory is below the group mean.
    assert _flat(plain[0]) == pytest.approx(_flat([[0.125], [-0.625]]))
    _, clipped = group_advantages(
        rewards, lengths, credit="r2g", score="sum", use_std=False, clip_negative_credits=True
    )
    # credits [0.2, 0]: N_nonzero = 1, sum c = 0.2 -> A_0 = z, A_1 = 0
    assert _flat(clipped[0]) == pytest.approx(_flat([[-0.25], [0.0]]))


def test_max_turn_reward() -> None:
    assert max_turn_reward([0.2, 0.9, 0.1]) == 0.9
    assert max_turn_reward([]) == 0.0


def test_group_errors_name_the_culprit() -> None:
    with pytest.raises(RewardError, match="trajectory 1 turn 0"):
        group_advantages([[1.0], [math.nan]], [[1], [1]])
    with pytest.raises(RewardError, match="2 reward lists but 1"):
        group_advantages([[1.0], [0.0]], [[1]])
    with pytest.raises(ValueError, match="credit method"):
        turn_credits([1.0], "bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="score method"):
        trajectory_score([1.0], "bogus")  # type: ignore[arg-type]


def test_reward_config_validation_and_asdict() -> None:
    config = RewardConfig(credit="em", score="r2g", use_std=False)
    scores, _ = group_advantages(GROUP, TWO_TOKENS, **dataclasses.asdict(config))
    assert [round(s, 4) for s in scores] == R2G_SCORES
    for field, value, message in [
        ("credit", "max", "credit must be one of"),
        ("score", "mean", "score must be one of"),
        ("gamma", 1.5, "gamma must be in"),
        ("em_k", 0.0, "em_k must be > 0"),
        ("eps", -1.0, "eps must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            RewardConfig(**{field: value})


# --- properties -------------------------------------------------------------------------------

unit_rewards = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6)
credit_method = st.sampled_from(["equalized", "r2g", "em"])


@settings(max_examples=150, deadline=None)
@given(rewards=unit_rewards, data=st.data(), credit=credit_method, z=st.floats(-3.0, 3.0))
def test_token_advantages_sum_to_z_times_nonzero_tokens(
    rewards: list[float], data: st.DataObject, credit: str, z: float
) -> None:
    lengths = data.draw(st.lists(st.integers(0, 5), min_size=len(rewards), max_size=len(rewards)))
    credits = turn_credits(rewards, credit)  # type: ignore[arg-type]
    adv = token_advantages(credits, lengths, z)
    n_nonzero = sum(n for c, n in zip(credits, lengths, strict=True) if c != 0)
    credit_total = sum(c * n for c, n in zip(credits, lengths, strict=True))
    expected = z * n_nonzero if credit_total != 0 else 0.0
    assert sum(a for turn in adv for a in turn) == pytest.approx(expected, abs=1e-9)
    assert [len(turn) for turn in adv] == lengths


@given(rewards=st.lists(st.floats(-5.0, 5.0), max_size=8))
def test_equalized_credits_all_one(rewards: list[float]) -> None:
    assert turn_credits(rewards, "equalized") == [1.0] * len(rewards)


@given(rewards=unit_rewards)
def test_em_credits_in_half_to_one(rewards: list[float]) -> None:
    assert all(0.5 <= c <= 1.0 for c in turn_credits(rewards, "em"))


@given(scores=st.lists(st.floats(-10.0, 10.0), min_size=2, max_size=16), use_std=st.booleans())
def test_group_normalize_has_mean_zero(scores: list[float], use_std: bool) -> None:
    z = group_normalize(scores, use_std=use_std)
    assert sum(z) / len(z) == pytest.approx(0.0, abs=1e-6)


@given(rewards=unit_rewards, gamma=st.floats(0.0, 1.0))
def test_r2g_first_credit_is_r2g_score(rewards: list[float], gamma: float) -> None:
    assert turn_credits(rewards, "r2g", gamma)[0] == pytest.approx(trajectory_score(rewards, "r2g", gamma))
