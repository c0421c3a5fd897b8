"""Token-in/token-out sequence assembly: prefix rule, masks and positions, collation."""

from __future__ import annotations

import pytest

from userrl.errors import RewardError
from userrl.learner.rewards import group_advantages
from userrl.learner.sequences import assemble, collate, per_token_advantages

# system+task = [1, 2, 3]; gen0 = [10, 11]; env reply = [4]; gen1 = [12, 13, 14]
TURNS = [
    {"prompt_ids": [1, 2, 3], "token_ids": [10, 11], "logprobs": [-0.1, -0.2], "policy_version": 3, "reward": 0.0},
    {
        "prompt_ids": [1, 2, 3, 10, 11, 4],
        "token_ids": [12, 13, 14],
        "logprobs": [-0.3, -0.4, -0.5],
        "policy_version": 4,
        "reward": 1.0,
    },
]


def test_masks_and_positions() -> None:
    seq = assemble(TURNS)
    assert seq.input_ids == [1, 2, 3, 10, 11, 4, 12, 13, 14]
    assert seq.loss_mask == [0, 0, 0, 1, 1, 0, 1, 1, 1]
    assert seq.turn_index == [-1, -1, -1, 0, 0, -1, 1, 1, 1]
    assert seq.behaviour_logprobs == [0, 0, 0, -0.1, -0.2, 0, -0.3, -0.4, -0.5]
    assert seq.policy_version == [-1, -1, -1, 3, 3, -1, 4, 4, 4]
    assert seq.turn_starts == [3, 6]
    assert seq.turn_lengths == [2, 3]
    assert seq.turn_rewards == [0.0, 1.0]
    assert seq.turn_versions == [3, 4]


def test_generated_tokens_sit_at_their_positions() -> None:
    seq = assemble(TURNS)
    for i, turn in enumerate(TURNS):
        positions = [p for p, t in enumerate(seq.turn_index) if t == i]
        assert [seq.input_ids[p] for p in positions] == turn["token_ids"]


def test_prefix_violation_names_the_turn() -> None:
    retokenized = [TURNS[0], {**TURNS[1], "prompt_ids": [1, 2, 3, 10, 99, 4]}]
    with pytest.raises(RewardError, match=r"turn 1: .*turn 0.*position 4"):
        assemble(retokenized)
    truncated = [TURNS[0], {**TURNS[1], "prompt_ids": [1, 2, 3, 10]}]
    with pytest.raises(RewardError, match="turn 1"):
        assemble(truncated)


def test_bad_turns_raise_reward_error() -> None:
    with pytest.raises(RewardError, match="no turns"):
        assemble([])
    with pytest.raises(RewardError, match="turn 0: 1 logprobs for 2"):
        assemble([{**TURNS[0], "logprobs": [-0.1]}])
    with pytest.raises(RewardError, match="turn 0: missing field 'reward'"):
        assemble([{k: v for k, v in TURNS[0].items() if k != "reward"}])


def test_single_turn_and_empty_generation() -> None:
    seq = assemble([{**TURNS[0], "token_ids": [], "logprobs": []}])
    assert seq.input_ids == [1, 2, 3]
    assert seq.loss_mask == [0, 0, 0]
    assert seq.turn_lengths == [0]


def test_per_token_advantages_from_group_advantages() -> None:
    seq = assemble(TURNS)
    other = assemble(TURNS[:1])
    _, adv = group_advantages(
        [seq.turn_rewards, other.turn_rewards],
        [seq.turn_lengths, other.turn_lengths],
        use_std=False,
    )
    # scores (sum = mean) 0.5 and 0 -> z = +0.25 / -0.25; equalized credits -> A = z per token
    assert per_token_advantages(seq, adv[0]) == [0, 0, 0, 0.25, 0.25, 0, 0.25, 0.25, 0.25]
    assert per_token_advantages(other, adv[1]) == [0, 0, 0, -0.25, -0.25]
    placed = per_token_advantages(seq, [[0.1, 0.2], [0.3, 0.4, 0.5]])
    assert placed == [0, 0, 0, 0.1, 0.2, 0, 0.3, 0.4, 0.5]
    with pytest.raises(RewardError, match="turn 1: 2 advantages for 3"):
        per_token_advantages(seq, [[0.1, 0.2], [0.3, 0.4]])
    with pytest.raises(RewardError, match="1 turns of advantages"):
        per_token_advantages(seq, [[0.1, 0.2]])


@pytest.mark.train
def test_collate_right_pads() -> None:
    torch = pytest.importorskip("torch")
    long_seq = assemble(TURNS)
    short_seq = assemble(TURNS[:1])
    adv = [
        per_token_advantages(long_seq, [[1, 1], [2, 2, 2]]),
        per_token_advantages(short_seq, [[3, 3]]),
    ]
    batch = collate([long_seq, short_seq], pad_id=0, advantages=adv)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 10, 11, 4, 12, 13, 14], [1, 2, 3, 10, 11, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 9, [1] * 5 + [0] * 4]
    assert batch["loss_mask"].tolist() == [[0, 0, 0, 1, 1, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0, 0, 0]]
    assert batch["turn_index"][1].tolist() == [-1, -1, -1, 0, 0, -1, -1, -1, -1]
    assert batch["policy_version"][1].tolist() == [-1, -1, -1, 3, 3, -1, -1, -1, -1]
    assert batch["advantages"][1].tolist() == [0, 0, 0, 3, 3, 0, 0, 0, 0]
    assert batch["loss_mask"].dtype == torch.float32
    assert batch["input_ids"].dtype == torch.long
    with pytest.raises(ValueError, match="at least one"):
        collate([], pad_id=0)
