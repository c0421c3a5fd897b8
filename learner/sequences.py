"""One training sequence per trajectory, assembled token-in/token-out.

The policy worker returns the exact token ids it generated, their behaviour logprobs and its
policy version; env and user text is appended as tokens after them. So every turn's context
must *extend* the previous turn's context plus its generation, token for token. We check that
instead of re-tokenizing the transcript: re-tokenization silently shifts token boundaries, and
the recorded logprobs no longer belong to the tokens trained on (verl reports this alone breaks
PPO). The last turn's context plus its generation is the whole dialogue; each generated token
keeps its turn index, behaviour logprob and policy version, and everything else is masked out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from userrl.bus.records import TurnRecord
from userrl.errors import MessageError, RewardError

if TYPE_CHECKING:  # torch is the [train] extra; the pure assembly works without it
    import torch

__all__ = [
    "TrainingSequence",
    "assemble",
    "collate",
    "masked_as_truncated",
    "pad_rows",
    "per_token_advantages",
    "trained_positions",
]

Turn = TurnRecord | Mapping[str, Any]
"""A turn: a :class:`~userrl.bus.records.TurnRecord` (what a scored group carries), or its wire
map (``prompt_ids``, ``token_ids``, ``logprobs``, ``policy_version``, ``reward``, optionally
``finish_reason``: ``length`` when the generation hit the token cap)."""

#: what a turn given as a map must hold to be trained on
_TRAINING_KEYS = ("prompt_ids", "token_ids", "logprobs", "policy_version", "reward")


@dataclass
class TrainingSequence:
    """A trajectory laid out as one token sequence; per-token lists share ``input_ids``' length."""

    input_ids: list[int]
    """The final context followed by the last generation."""
    loss_mask: list[int]
    """1 on generated (policy) tokens, 0 on system/env/user tokens."""
    turn_index: list[int]
    """Which turn generated the token; −1 off the mask."""
    behaviour_logprobs: list[float]
    """Logprob the behaviour policy gave the token; 0 off the mask."""
    policy_version: list[int]
    """Version of the policy that generated the token; −1 off the mask."""
    turn_starts: list[int]
    """Position of each turn's first generated token."""
    turn_lengths: list[int]
    """Number of tokens each turn generated (what :func:`token_advantages` rescales over)."""
    turn_rewards: list[float]
    """The env's reward for each turn."""
    turn_versions: list[int]
    """Policy version per turn, for staleness checks without scanning tokens."""
    cut_token_cap: bool = False
    """A generation of this trajectory hit the token cap (finish_reason ``length``)."""
    cut_turn_cap: bool = False
    """The episode ended at the turn cap (set by the learner from the episode's ``end``)."""
    group: int = -1
    """Index of its GRPO group in the step (set by the learner)."""

    def __len__(self) -> int:
        return len(self.input_ids)


def _record(turn: Turn, index: int) -> TurnRecord:
    """The turn as a record; a map is read once, here (a missing or malformed field names the turn)."""
    if isinstance(turn, TurnRecord):
        return turn
    if isinstance(turn, Mapping):
        for name in _TRAINING_KEYS:
            if name not in turn:
                raise RewardError(f"turn {index}: missing field {name!r}")
    try:
        return TurnRecord.from_wire(dict(turn) if isinstance(turn, Mapping) else turn, f"turn {index}")
    except MessageError as exc:
        raise RewardError(str(exc)) from None


def _check_prefix(turns: Sequence[TurnRecord]) -> None:
    """Each context must start with the previous context + generation (token-in/token-out)."""
    for i in range(1, len(turns)):
        expected = turns[i - 1].prompt_ids + turns[i - 1].token_ids
        prompt = turns[i].prompt_ids
        if prompt[: len(expected)] != expected:
            mismatch = next(
                (p for p, (a, b) in enumerate(zip(prompt, expected, strict=False)) if a != b),
                min(len(prompt), len(expected)),
            )
            raise RewardError(
                f"turn {i}: prompt_ids do not extend turn {i - 1}'s prompt_ids + token_ids "
                f"(first difference at position {mismatch}); the transcript was re-tokenized or "
                "edited, so its recorded logprobs cannot be trained on"
            )


def assemble(turns: Sequence[Turn]) -> TrainingSequence:
    """Lay a trajectory's turns out as one sequence (raises :class:`RewardError` on bad turns)."""
    if not turns:
        raise RewardError("trajectory has no turns")
    records = [_record(t, i) for i, t in enumerate(turns)]
    _check_prefix(records)
    last = records[-1]
    input_ids = last.prompt_ids + last.token_ids
    n = len(input_ids)
    seq = TrainingSequence(input_ids, [0] * n, [-1] * n, [0.0] * n, [-1] * n, [], [], [], [])
    for i, turn in enumerate(records):
        generated, logprobs = turn.token_ids, turn.logprobs
        if len(logprobs) != len(generated):
            raise RewardError(f"turn {i}: {len(logprobs)} logprobs for {len(generated)} generated tokens")
        start = len(turn.prompt_ids)
        version = turn.policy_version
        for offset, logprob in enumerate(logprobs):
            pos = start + offset
            seq.loss_mask[pos] = 1
            seq.turn_index[pos] = i
            seq.behaviour_logprobs[pos] = float(logprob)
            seq.policy_version[pos] = version
        seq.turn_starts.append(start)
        seq.turn_lengths.append(len(generated))
        seq.turn_rewards.append(turn.reward)
        seq.turn_versions.append(version)
        seq.cut_token_cap |= turn.finish_reason == "length"
    return seq


def per_token_advantages(seq: TrainingSequence, turn_advantages: Sequence[Sequence[float]]) -> list[float]:
    """Place each turn's token advantages on its generated positions (0 elsewhere)."""
    if len(turn_advantages) != len(seq.turn_lengths):
        raise RewardError(f"{len(turn_advantages)} turns of advantages for a sequence of {len(seq.turn_lengths)} turns")
    advantages = [0.0] * len(seq)
    for i, (start, length, values) in enumerate(zip(seq.turn_starts, seq.turn_lengths, turn_advantages, strict=True)):
        if len(values) != length:
            raise RewardError(f"turn {i}: {len(values)} advantages for {length} generated tokens")
        advantages[start : start + length] = [float(v) for v in values]
    return advantages


def masked_as_truncated(seq: TrainingSequence, truncated: str) -> bool:
    """Whether the ``truncated`` setting (keep, mask, mask-turn-cap, mask-token-cap) takes
    ``seq`` out of the loss."""
    return (seq.cut_turn_cap and truncated in ("mask", "mask-turn-cap")) or (
        seq.cut_token_cap and truncated in ("mask", "mask-token-cap")
    )


def trained_positions(seq: TrainingSequence, version: int, max_staleness: int, truncated: str = "keep") -> list[int]:
    """1 on the tokens a learner at ``version`` trains: generated, at most ``max_staleness``
    versions old, in an episode the ``truncated`` setting keeps; 0 elsewhere."""
    if masked_as_truncated(seq, truncated):
        return [0] * len(seq)
    return [
        int(bool(m) and v >= 0 and version - v <= max_staleness)
        for m, v in zip(seq.loss_mask, seq.policy_version, strict=True)
    ]


def collate(
    sequences: Sequence[TrainingSequence],
    pad_id: int,
    advantages: Sequence[Sequence[float]] | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad sequences into a batch of tensors.

    Keys: ``input_ids`` (pad ``pad_id``), ``attention_mask``, ``loss_mask`` (float, for
    weighting), ``turn_index`` and ``policy_version`` (pad −1), ``behaviour_logprobs`` (pad 0),
    and ``advantages`` (pad 0) when per-token advantages are given.
    """
    import torch

    if not sequences:
        raise ValueError("collate needs at least one sequence")
    if advantages is not None and len(advantages) != len(sequences):
        raise ValueError(f"{len(advantages)} advantage rows for {len(sequences)} sequences")
    width = max(len(s) for s in sequences)

    def pad(rows: Sequence[Sequence[Any]], value: Any, dtype: torch.dtype) -> torch.Tensor:
        return pad_rows(rows, value, dtype, width)

    batch = {
        "input_ids": pad([s.input_ids for s in sequences], pad_id, torch.long),
        "attention_mask": pad([[1] * len(s) for s in sequences], 0, torch.long),
        "loss_mask": pad([s.loss_mask for s in sequences], 0, torch.float32),
        "turn_index": pad([s.turn_index for s in sequences], -1, torch.long),
        "behaviour_logprobs": pad([s.behaviour_logprobs for s in sequences], 0.0, torch.float32),
        "policy_version": pad([s.policy_version for s in sequences], -1, torch.long),
    }
    if advantages is not None:
        batch["advantages"] = pad(advantages, 0.0, torch.float32)
    return batch


def pad_rows(rows: Sequence[Sequence[Any]], value: Any, dtype: torch.dtype, width: int = 0) -> torch.Tensor:
    """Right-pad per-token rows with ``value`` to ``width`` (at least the longest row) as one tensor."""
    import torch

    width = max([width, *(len(r) for r in rows)])
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=dtype)
