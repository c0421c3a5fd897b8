"""The bus's turn records (userrl.bus.records): they read and write exactly the msgpack maps the
bus has always carried, reject malformed maps naming the field, and carry a turn from the
policy's sample to the learner's sequence without changing it."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from userrl.bus import messages as m
from userrl.bus.records import (
    SCORED_TURN_KEYS,
    EpisodeSnapshot,
    Generation,
    Sampling,
    ScoredTrajectory,
    TurnRecord,
)
from userrl.errors import EnvError, MessageError, RewardError
from userrl.learner.sequences import assemble

#: the keys of a trajectory's turn as the env worker has always written them
TURN_KEYS = [
    "seq",
    "reward",
    "action",
    "text",
    "prompt_ids",
    "token_ids",
    "logprobs",
    "policy_version",
    "finish_reason",
    "observation",
    "format_error",
    "worker",
    "terminated",
    "truncated",
    "info_score",
    "users",
]

ids = st.lists(st.integers(min_value=0, max_value=2**31 - 1), max_size=20)
floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
text = st.text(max_size=30)
users = st.lists(st.fixed_dictionaries({"hop": st.integers(1, 5), "kind": text, "by": text}), max_size=3)

turns = st.builds(
    TurnRecord,
    reward=floats,
    seq=st.integers(0, 100),
    action=text,
    text=text,
    prompt_ids=ids,
    token_ids=ids,
    logprobs=st.lists(floats, max_size=20),
    policy_version=st.integers(0, 10**6),
    finish_reason=st.sampled_from(["stop", "length"]),
    observation=text,
    format_error=st.booleans(),
    worker=text,
    terminated=st.booleans(),
    truncated=st.booleans(),
    info_score=st.none() | floats,
    users=users,
)


def wire_turn(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "seq": 0,
        "reward": 0.5,
        "action": "yes",
        "text": "[answer] yes",
        "prompt_ids": [1, 2, 3],
        "token_ids": [4, 5],
        "logprobs": [-0.25, -1.5],
        "policy_version": 3,
        "finish_reason": "stop",
        "observation": "Correct.",
        "format_error": False,
        "worker": "policy-0",
        "terminated": True,
        "truncated": False,
        "info_score": 1.0,
        "users": [{"hop": 1, "kind": "judge", "name": "answer", "by": "scripted"}],
    }
    return {**base, **kw}


@settings(deadline=None)  # a loaded CI machine: no per-example time limit
@given(turns)
def test_turn_round_trips_through_msgpack(turn: TurnRecord) -> None:
    raw = msgpack.packb(turn.to_wire(), use_bin_type=True)
    assert TurnRecord.from_wire(msgpack.unpackb(raw, raw=False)) == turn


@settings(deadline=None)
@given(st.lists(turns, min_size=1, max_size=4), floats, floats)
def test_scored_trajectory_round_trips_with_the_learners_keys(ts: list[TurnRecord], score: float, ret: float) -> None:
    scored = [dataclasses.replace(t, advantages=[0.5] * len(t.token_ids)) for t in ts]
    item = ScoredTrajectory("e1", "t1", score, ret, len(ts), scored, {"end": "terminated", "score": 0.25})
    wire = msgpack.unpackb(msgpack.packb(item.to_wire(), use_bin_type=True), raw=False)
    assert list(wire) == ["episode_id", "task_id", "score", "return", "n_turns", "turns", "meta"]
    assert all(list(t) == list(SCORED_TURN_KEYS) for t in wire["turns"])
    back = ScoredTrajectory.from_wire(wire)
    assert (back.score, back.return_, back.meta) == (score, ret, item.meta)
    got = [(t.prompt_ids, t.token_ids, t.logprobs, t.policy_version, t.reward, t.advantages) for t in back.turns or ()]
    assert got == [(t.prompt_ids, t.token_ids, t.logprobs, t.policy_version, t.reward, t.advantages) for t in scored]


@settings(deadline=None)
@given(
    st.builds(
        Sampling,
        temperature=st.floats(0, 2),
        top_p=st.floats(0.01, 1),
        max_new_tokens=st.integers(1, 4096),
        seed=st.none() | st.integers(0, 2**62),
    )
)
def test_sampling_round_trips(s: Sampling) -> None:
    assert Sampling.from_wire(msgpack.unpackb(msgpack.packb(s.to_wire()), raw=False)) == s


def test_turn_wire_is_the_env_workers_map() -> None:
    wire = wire_turn()
    turn = TurnRecord.from_wire(wire)
    assert list(turn.to_wire()) == TURN_KEYS and turn.to_wire() == wire
    no_score = {k: v for k, v in wire.items() if k != "info_score"}
    assert TurnRecord.from_wire(no_score).to_wire() == no_score  # absent stays absent
    assert turn.scored_wire().keys() == set(SCORED_TURN_KEYS)


def test_unknown_keys_are_kept() -> None:
    wire = wire_turn(newer_field={"x": 1})
    turn = TurnRecord.from_wire(wire)
    assert turn.extra == {"newer_field": {"x": 1}} and turn.to_wire() == wire


def test_records_read_as_maps_of_their_wire_keys() -> None:
    turn = TurnRecord.from_wire(wire_turn())
    assert turn["token_ids"] == [4, 5] and turn.get("advantages") is None and "advantages" not in turn
    assert dict(turn) == wire_turn()
    item = ScoredTrajectory("e1", return_=2.5)
    assert item["return"] == 2.5 and item.get("turns") is None
    with pytest.raises(KeyError):
        turn["nope"]


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        ({k: v for k, v in wire_turn().items() if k != "reward"}, r"turn: missing field 'reward'"),
        (wire_turn(reward="1"), r"turn\.reward: expected a number, got str"),
        (wire_turn(token_ids=[1, "2"]), r"turn\.token_ids: expected a list of ints"),
        (wire_turn(logprobs=None), r"turn\.logprobs: expected a list of numbers, got NoneType"),
        (wire_turn(policy_version=True), r"turn\.policy_version: expected an int, got bool"),
        (wire_turn(terminated=1), r"turn\.terminated: expected a bool"),
        ([1, 2], r"turn: expected a TurnRecord map, got list"),
    ],
)
def test_malformed_turns_name_the_field(wire: Any, match: str) -> None:
    with pytest.raises(MessageError, match=match):
        TurnRecord.from_wire(wire)


def test_malformed_records_in_messages_are_message_errors() -> None:
    good = m.Trajectory(episode_id="e", group_id="g", env_id="x", task_id="t", turns=[wire_turn()])
    assert isinstance(good.turns[0], TurnRecord)
    raw = msgpack.unpackb(m.encode(good), raw=False)
    assert raw["d"]["turns"] == [wire_turn()]  # the codec writes the same map
    raw["d"]["turns"][0]["logprobs"] = "x"
    with pytest.raises(MessageError, match=r"trajectory\.turns\[0\]\.logprobs"):
        m.decode(msgpack.packb(raw, use_bin_type=True))
    bad_item = {"episode_id": "e", "turns": [{"reward": 1.0, "token_ids": "x"}]}
    with pytest.raises(MessageError, match=r"scored_group\.items\[0\]\.turns\[0\]\.token_ids"):
        m.ScoredGroup(episode_id="g", group_id="g", env_id="x", items=[bad_item])
    with pytest.raises(MessageError, match=r"sampling: top_p must be in"):
        Sampling.from_wire({"top_p": 0})
    with pytest.raises(MessageError, match=r"sampling: unknown settings \['temp'\]"):
        Sampling.from_wire({"temp": 1.0})


def test_dropped_groups_keep_their_summaries_as_maps() -> None:
    summary = {"episode_id": "e", "status": "failed", "error": None, "return": 0.0, "meta": {}, "users": []}
    g = m.ScoredGroup(episode_id="g", group_id="g", env_id="x", items=[summary], status="dropped")
    assert m.decode(m.encode(g)).items == [summary] and g.trajectories == []


def test_episode_snapshot_round_trips_and_keeps_the_pending_calls() -> None:
    ep = EpisodeSnapshot(
        episode_id="e",
        group_id="g",
        env_id="userrl/Telepathy-v0",
        task_id="t",
        env_state={"turn": 1},
        messages=[{"role": "user", "content": "hi"}],
        seq=1,
        prompt_ids=[1, 2, 3, 4, 5],
        n_seen=2,
        turns=[TurnRecord.from_wire(wire_turn())],
        pending=Generation(text="[ask] is it red?", prompt_ids=[1, 2], token_ids=[9], logprobs=[-0.5], version=2),
        calls={"1": {"kind": "respond", "name": "yes_no"}},
    )
    wire = msgpack.unpackb(ep.pack(), raw=False)
    assert wire["turns"] == [wire_turn()]
    assert wire["pending"]["users"] == {"1": {"kind": "respond", "name": "yes_no"}}
    assert EpisodeSnapshot.unpack(ep.pack()) == ep
    with pytest.raises(EnvError, match="corrupt episode snapshot"):
        EpisodeSnapshot.unpack(msgpack.packb({**wire, "pending": {"text": 3}}))


def test_records_pickle_for_the_learners_ranks() -> None:
    item = ScoredTrajectory("e", turns=[TurnRecord.from_wire(wire_turn(advantages=[0.1, 0.2]))])
    assert pickle.loads(pickle.dumps(item)) == item


def test_sequences_read_records_and_maps_alike() -> None:
    first = wire_turn(prompt_ids=[1, 2], token_ids=[3], logprobs=[-0.5])
    second = wire_turn(prompt_ids=[1, 2, 3, 7], token_ids=[8, 9], logprobs=[-1.0, -2.0], finish_reason="length")
    from_maps = assemble([first, second])
    from_records = assemble([TurnRecord.from_wire(first), TurnRecord.from_wire(second)])
    assert from_maps == from_records and from_records.cut_token_cap
    with pytest.raises(RewardError, match=r"turn 1\.token_ids: expected a list of ints"):
        assemble([first, {**second, "token_ids": ["8"]}])
