"""Typed failures on the bus: an :class:`ErrorRecord` is built from an error class of
:mod:`userrl.errors` and turns back into the same class (kind, retryable, message); the older
dict form still decodes; the env worker fails an episode with the error class a policy or user
reply carries, its retryable flag kept."""

from __future__ import annotations

from typing import Any

import anyio
import msgpack
import pytest

from userrl.bus.messages import (
    ErrorRecord,
    PolicyReply,
    PolicyRequest,
    Trajectory,
    UserReply,
    decode,
    encode,
)
from userrl.bus.transport import Bus, Effects
from userrl.bus.worker import WorkerSettings
from userrl.envs.datasets import load_tasks
from userrl.envs.episode import Episode
from userrl.envs.worker import EnvWorker
from userrl.errors import (
    ROLLOUT_ERRORS,
    BusError,
    EnvError,
    MessageError,
    PolicyError,
    RewardError,
    RolloutError,
    UserEmptyError,
    UserError,
    UserMalformedError,
    rollout_error,
)
from userrl.rollouts import make_resets, read_trajectories, send_resets


def test_every_rollout_error_class_has_its_kind() -> None:
    assert ROLLOUT_ERRORS == {
        "rollout": RolloutError,
        "policy": PolicyError,
        "user": UserError,
        "user_malformed": UserMalformedError,
        "user_empty": UserEmptyError,
        "env": EnvError,
        "reward": RewardError,
        "bus": BusError,
    }


@pytest.mark.parametrize("cls", list(ROLLOUT_ERRORS.values()), ids=lambda c: c.__name__)
@pytest.mark.parametrize("transient", [True, False])
def test_each_error_class_round_trips_through_the_record(cls: type[RolloutError], transient: bool) -> None:
    rec = ErrorRecord.of(cls("it broke", transient=transient))
    assert rec == ErrorRecord(kind=cls.kind, message="it broke", retryable=transient)
    wire = decode(encode(PolicyReply(episode_id="e", text="", error=rec)))
    assert isinstance(wire, PolicyReply) and wire.error == rec
    back = wire.error.exception()
    assert type(back) is cls and str(back) == "it broke" and back.transient is transient
    assert ErrorRecord.of(back) == rec


def test_context_prefixes_the_message() -> None:
    exc = ErrorRecord("user", "HTTP 500", retryable=True).exception("user failed")
    assert type(exc) is UserError and str(exc) == "user failed: HTTP 500" and exc.transient


def test_an_unknown_kind_keeps_its_name() -> None:
    """A newer peer's kind decodes as a plain RolloutError that still says which boundary."""
    exc = ErrorRecord("gpu", "ECC error").exception()
    assert type(exc) is RolloutError and exc.kind == "gpu" and not exc.transient
    assert ErrorRecord.of(exc) == ErrorRecord("gpu", "ECC error")
    assert RolloutError.kind == "rollout"  # the class is untouched
    assert type(rollout_error("policy", "x")) is PolicyError


def _raw(kind: str, data: dict[str, Any]) -> bytes:
    return msgpack.packb({"k": kind, "v": 1, "d": data}, use_bin_type=True)


def test_the_older_dict_form_still_decodes() -> None:
    old = decode(
        _raw(
            "policy_reply",
            {"episode_id": "e", "text": "", "error": {"kind": "policy", "message": "down", "transient": True}},
        )
    )
    assert isinstance(old, PolicyReply) and old.error == ErrorRecord("policy", "down", retryable=True)
    user = decode(
        _raw(
            "user_reply",
            {
                "episode_id": "e",
                "seq": 1,
                "hop": 1,
                "error": {"kind": "user", "message": "HTTP 400", "transient": False, "attempts": 3},
            },
        )
    )
    assert isinstance(user, UserReply) and user.error == ErrorRecord("user", "HTTP 400")
    traj = decode(
        _raw(
            "trajectory",
            {
                "episode_id": "e",
                "group_id": "g",
                "env_id": "x",
                "task_id": "t",
                "turns": [],
                "status": "failed",
                "error": {"kind": "bus", "message": "stalled", "transient": True},
            },
        )
    )
    assert isinstance(traj, Trajectory) and isinstance(traj.error.exception(), BusError)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        ("down", "expected an error record"),
        ({"kind": 5, "message": "x"}, "needs kind"),
        ({"kind": "policy", "message": "x", "retryable": "yes"}, "needs kind"),
        ({"message": "x"}, "needs kind"),
    ],
)
def test_a_malformed_record_is_a_message_error(error: Any, needle: str) -> None:
    with pytest.raises(MessageError, match=f"policy_reply.error: .*{needle}"):
        decode(_raw("policy_reply", {"episode_id": "e", "text": "", "error": error}))


def test_encoding_an_untyped_error_is_refused() -> None:
    bad = PolicyReply(episode_id="e", text="", error={"kind": "policy", "message": "x"})  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="error must be an ErrorRecord"):
        encode(bad)


def test_a_retired_field_from_an_older_sender_is_dropped() -> None:
    msg = decode(_raw("policy_request", {"episode_id": "e", "env_id": "x", "messages": [], "replica": "pol-1"}))
    assert isinstance(msg, PolicyRequest) and not hasattr(msg, "replica")
    with pytest.raises(MessageError, match=r"unknown fields \['other'\]"):
        decode(_raw("policy_request", {"episode_id": "e", "env_id": "x", "messages": [], "replica": "", "other": 1}))


# ---- the env worker --------------------------------------------------------------------------


class RecordingEnvWorker(EnvWorker):
    """Keeps the errors it fails episodes with."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.failures: list[RolloutError] = []

    def fail(self, eff: Effects, ep: Episode, error: RolloutError) -> Effects:
        self.failures.append(error)
        return super().fail(eff, ep, error)


async def _burst(worker: EnvWorker) -> None:
    with anyio.fail_after(30):
        await worker.async_run()


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("retryable", [True, False])
async def test_the_env_worker_fails_an_episode_with_the_replys_error_class(bus: Bus, retryable: bool) -> None:
    (reset,) = make_resets("userrl/Telepathy-v0", load_tasks("userrl/Telepathy-v0", "test")[:1], prefix="err:")
    await send_resets(bus, [reset])
    settings = WorkerSettings(name="env-0", burst=True)
    await _burst(EnvWorker(bus, settings))  # the reset: asks the policy for turn 0
    assert await bus.redis.xlen(bus.keys.stream("policy")) == 1
    reply = PolicyReply(
        episode_id=reset.episode_id,
        seq=0,
        text="",
        worker="pol-0",
        error=ErrorRecord.of(PolicyError("server down", transient=retryable)),
    )
    await bus.send(bus.keys.stream("env"), reply)
    worker = RecordingEnvWorker(bus, settings)
    await _burst(worker)
    (exc,) = worker.failures
    assert type(exc) is PolicyError and exc.transient is retryable and str(exc) == "policy failed: server down"
    (traj,) = (await read_trajectories(bus))[reset.episode_id]
    assert traj.status == "failed"
    assert traj.error == ErrorRecord("policy", "policy failed: server down", retryable=retryable)
