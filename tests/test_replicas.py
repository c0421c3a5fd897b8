"""The learner's two choices made once at construction: how many processes run it
(:class:`Replicas`) and what it trains (:class:`Weights`); and ranks > 0 following rank 0
through the learner's public calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from userrl.config import LoraSection
from userrl.errors import ConfigError

torch = pytest.importorskip("torch")

from userrl.learner.distributed import SingleProcess, follow, make_replicas  # noqa: E402
from userrl.learner.lora import FullWeights, LoraWeights, trained_weights  # noqa: E402


def test_one_process_unless_launched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    one = make_replicas("cpu")
    assert isinstance(one, SingleProcess)
    assert (one.rank, one.world, one.is_main, one.lockstep, one.sharded) == (0, 1, True, False, False)
    assert one.device("cpu") == "cpu"
    assert one.sum([1.5, 2.0]) == [1.5, 2.0] and one.max([3.0]) == [3.0]
    one.lead("step", ([],))  # nobody to lead: nothing happens
    with pytest.raises(RuntimeError, match="no main copy"):
        one.receive()


def test_one_process_clips_and_saves_like_plain_torch(tmp_path: Path) -> None:
    from userrl.learner.distributed import TokenLogprobs

    inner = torch.nn.Linear(3, 2)
    net = TokenLogprobs(inner)
    for p in inner.parameters():
        p.grad = torch.full_like(p, 10.0)
    norm = SingleProcess().clip_grad_norm(net, 1.0)
    assert norm == pytest.approx(10.0 * (3 * 2 + 2) ** 0.5)
    assert float(torch.cat([p.grad.flatten() for p in inner.parameters()]).norm()) == pytest.approx(1.0, rel=1e-5)
    assert list(SingleProcess().full_state_dict(net)) == ["weight", "bias"]  # the model's own names
    SingleProcess().save_optimizer({"state": {}}, tmp_path)
    assert SingleProcess().optimizer_file(tmp_path) == tmp_path / "optimizer.pt"
    assert torch.load(tmp_path / "optimizer.pt") == {"state": {}}


def test_weights_are_lora_only_with_a_rank_and_never_under_fsdp() -> None:
    assert isinstance(trained_weights(None, sharded=False), FullWeights)
    assert isinstance(trained_weights(LoraSection(r=0), sharded=True), FullWeights)
    assert isinstance(trained_weights(LoraSection(r=4), sharded=False), LoraWeights)
    with pytest.raises(ConfigError, match="train.lora with FSDP is not supported"):
        trained_weights(LoraSection(r=4), sharded=True)
    full = FullWeights()
    assert full.load_from("ckpt", "base") == "ckpt"
    assert full.state_dict(object(), lambda: {"w": 1}) == {"w": 1}
    assert LoraWeights(LoraSection(r=4)).load_from("ckpt", "base") == "base"


class Led:
    """Replicas of a rank > 0: hands out what rank 0 led, in order."""

    rank = 1

    def __init__(self, calls: list[tuple[str, tuple[Any, ...]]]) -> None:
        self.calls = calls

    def receive(self) -> tuple[str, tuple[Any, ...]]:
        return self.calls.pop(0)


class Learner:
    def __init__(self, calls: list[tuple[str, tuple[Any, ...]]]) -> None:
        self.replicas = Led(calls)
        self.ran: list[tuple[str, tuple[Any, ...]]] = []

    def step(self, groups: list[dict[str, Any]]) -> dict[str, Any]:
        self.ran.append(("step", (groups,)))
        return {}

    def save_weights(self) -> Path:
        self.ran.append(("save_weights", ()))
        return Path("w")

    def save_model(self, out: str | Path) -> Path:
        self.ran.append(("save_model", (out,)))
        return Path(out)

    def checkpoint(self, extra: dict[str, Any] | None = None) -> Path:
        self.ran.append(("checkpoint", (extra,)))
        return Path("ck")

    def stop(self) -> None:
        self.ran.append(("stop", ()))


def test_ranks_follow_rank_0_through_the_public_calls_until_stop() -> None:
    led = [
        ("step", ([{"items": []}],)),
        ("save_weights", ()),
        ("checkpoint", ({"step": 1},)),
        ("save_model", ("out",)),
        ("stop", ()),
        ("step", ([],)),  # never reached: stop ends the loop
    ]
    learner = Learner(list(led))
    follow(learner)
    assert learner.ran == led[:5]


def test_an_unknown_command_fails_the_rank_naming_it() -> None:
    learner = Learner([("_step", ([],))])
    with pytest.raises(RuntimeError, match="rank 1: unknown learner command '_step'"):
        follow(learner)
    assert learner.ran == []
