"""Device and dtype resolution, and that SFT and the learner honour them (issues 12, 13)."""

from __future__ import annotations

import pytest

from userrl.config import load_config
from userrl.errors import ConfigError
from userrl.hardware import resolve_device, resolve_dtype

torch = pytest.importorskip("torch")


def test_auto_device_is_cuda_only_when_present() -> None:
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


def test_cuda_without_a_gpu_is_a_config_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")


def test_bad_device_and_dtype_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not a torch device"):
        resolve_device("tpu-ish")
    with pytest.raises(ConfigError, match="choose auto, bf16 or fp32"):
        resolve_dtype("fp8", "cpu")
    with pytest.raises(ConfigError, match="train.dtype"):
        load_config(None, ["train.dtype=fp16"])


def test_auto_dtype_is_fp32_on_cpu_and_explicit_choices_stand() -> None:
    assert resolve_dtype("auto", "cpu") == "fp32"
    assert resolve_dtype("bf16", "cpu") == "bf16"
    assert resolve_dtype("fp32", "cuda") == "fp32"


def test_defaults_resolve_to_the_hardware() -> None:
    cfg = load_config(None)
    assert (cfg.train.device, cfg.train.dtype, cfg.train.gradient_checkpointing) == ("auto", "auto", False)
    assert cfg.policy.device == "auto"


@pytest.mark.train
def test_learner_puts_model_and_optimizer_on_the_configured_device(tmp_path) -> None:
    from userrl.agents.tiny import build_tiny_model
    from userrl.learner.grpo_learner import GRPOLearner
    from userrl.learner.losses import LossConfig

    model = build_tiny_model(tmp_path / "tiny")
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        learner = GRPOLearner(model, tmp_path / f"out-{device}", lr=1e-3, loss=LossConfig(), device=device)
        assert {p.device.type for p in learner.model.parameters()} == {device}
        assert all(p.dtype == torch.float32 for p in learner.model.parameters())
        assert learner.dtype == ("bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "fp32")


@pytest.mark.train
@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))],
)
def test_train_device_holds_model_and_optimizer_state_after_a_step(tmp_path, device) -> None:
    from tests.learner_groups import make_groups
    from userrl.agents.tiny import build_tiny_model
    from userrl.learner.grpo_learner import GRPOLearner
    from userrl.learner.losses import LossConfig

    t = load_config(None, [f"train.device={device}", "train.max_tokens_per_microbatch=256"]).train
    learner = GRPOLearner(
        build_tiny_model(tmp_path / "tiny"),
        tmp_path / "out",
        lr=1e-3,
        loss=LossConfig(max_staleness=10),
        device=t.device,
        dtype=t.dtype,
        max_tokens_per_microbatch=t.max_tokens_per_microbatch,
    )
    learner.step(make_groups(2))
    assert {p.device.type for p in learner.model.parameters()} == {device}
    state = [v for s in learner.optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim()]
    assert state and {v.device.type for v in state} == {device}  # Adam moments next to the weights
