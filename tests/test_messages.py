"""Codec round-trips for every message kind, and clear errors for bad payloads."""

from __future__ import annotations

import msgpack
import pytest

from userrl.bus import messages as m
from userrl.errors import MessageError

SAMPLES: list[m.Message] = [
    m.Reset(
        episode_id="e1",
        group_id="g1",
        env_id="userrl/Function-v0",
        task={"id": "t1", "rule": "a+b"},
        seed=7,
        max_turns=5,
        sampling={"temperature": 1.0},
        meta={"split": "train"},
    ),
    m.PolicyRequest(
        episode_id="e1",
        seq=3,
        env_id="userrl/Function-v0",
        messages=[{"role": "user", "content": "hi"}],
        prompt_ids=[1, 2, 3],
        n_seen=1,
    ),
    m.PolicyRequest(episode_id="e1", seq=0, env_id="x", messages=[], prompt_ids=None, task={"id": "t"}),
    m.PolicyReply(
        episode_id="e1",
        seq=3,
        text="[answer] 4",
        prompt_ids=[1, 2],
        token_ids=[5, 6],
        logprobs=[-0.5, -1.25],
        version=2,
        worker="p-0",
    ),
    m.PolicyReply(episode_id="e1", seq=3, text="", error=m.ErrorRecord("policy", "down", retryable=True)),
    m.UserRequest(episode_id="e1", seq=3, hop=1, query={"env_id": "x", "kind": "respond", "name": "yes_no"}),
    m.UserReply(episode_id="e1", seq=3, hop=1, reply={"text": "Yes"}, worker="u-0"),
    m.UserReply(
        episode_id="e1",
        seq=3,
        hop=2,
        reply={"answer": "No"},
        worker="u-0",
        by="openai:tiny-user@step3",
        stats={"ms": 12.5, "attempts": 2, "malformed": 1, "empty": 0, "leaks": 0, "redacted": False},
    ),
    m.HumanReply(episode_id="e1", seq=3, hop=1, text="Maybe", holder="h0ld3r", who="alice"),
    m.Trajectory(
        episode_id="e1",
        group_id="g1",
        env_id="x",
        task_id="t1",
        turns=[{"reward": 1.0, "token_ids": [1], "logprobs": [-0.1]}],
        meta={"a": 1},
    ),
    m.ScoreGroup(episode_id="g1", group_id="g1", force=True, reason="deadline"),
    m.ScoredGroup(episode_id="g1", group_id="g1", env_id="x", items=[{"episode_id": "e1", "score": 1.0}]),
    m.WeightsAnnouncement(episode_id="weights", seq=4, version=4, path="/tmp/w.safetensors", sha256="ab"),
    m.Probe(episode_id="p", body={"x": [1, 2, {"y": b"bytes"}]}),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda x: x.KIND)
def test_round_trip(msg: m.Message) -> None:
    assert m.decode(m.encode(msg)) == msg


def test_every_kind_is_sampled() -> None:
    assert {s.KIND for s in SAMPLES} == set(m.kinds())


def test_messages_are_frozen() -> None:
    with pytest.raises(AttributeError):
        SAMPLES[0].seq = 9  # type: ignore[misc]


def _raw(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"\xc1\xff garbage", "undecodable"),
        (_raw([1, 2]), "not a userrl message"),
        (_raw({"k": "nope", "v": 1, "d": {}}), "unknown message kind"),
        (_raw({"k": "probe", "v": 99, "d": {"episode_id": "e"}}), "schema version"),
        (_raw({"k": "probe", "v": 1, "d": {}}), "missing field 'episode_id'"),
        (_raw({"k": "probe", "v": 1, "d": {"episode_id": 5}}), "probe.episode_id"),
        (_raw({"k": "probe", "v": 1, "d": {"episode_id": "e", "evil": 1}}), "unknown fields"),
        (
            _raw({"k": "policy_reply", "v": 1, "d": {"episode_id": "e", "text": "x", "token_ids": ["a"]}}),
            "policy_reply.token_ids",
        ),
        (_raw({"k": "probe", "v": 1, "d": {"episode_id": "e", "seq": True}}), "probe.seq"),
    ],
)
def test_bad_payloads_are_refused_clearly(raw: bytes, needle: str) -> None:
    with pytest.raises(MessageError, match=needle):
        m.decode(raw)


def test_size_cap_on_encode_and_decode() -> None:
    big = m.Probe(episode_id="e", body={"x": "a" * 5000})
    with pytest.raises(MessageError, match="over the cap"):
        m.encode(big, max_bytes=1000)
    raw = m.encode(big)
    with pytest.raises(MessageError, match="over the cap"):
        m.decode(raw, max_bytes=1000)


def test_unencodable_value_is_a_message_error() -> None:
    with pytest.raises(MessageError, match="cannot encode"):
        m.encode(m.Probe(episode_id="e", body={"x": object()}))


def test_a_user_reply_of_version_1_still_decodes() -> None:
    """Senders older than the simulator stamp (UserReply v1: no ``by``/``stats``) decode, with
    the stamp empty."""
    raw = msgpack.packb(
        {"k": "user_reply", "v": 1, "d": {"episode_id": "e1", "seq": 2, "hop": 1, "reply": {"answer": "Yes"}}},
        use_bin_type=True,
    )
    msg = m.decode(raw)
    assert isinstance(msg, m.UserReply) and msg.reply == {"answer": "Yes"}
    assert (msg.by, msg.stats, msg.error) == ("", {}, None)
