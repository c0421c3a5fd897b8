"""policy.vllm engine options: validated at load and passed to the engine (issue 12).

vLLM cannot be installed here (GPU only): a fake ``vllm`` module records what the backend
factory hands to ``AsyncEngineArgs``.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from userrl.config import load_config
from userrl.errors import ConfigError


def test_engine_options_are_validated_with_the_field_named() -> None:
    cfg = load_config(
        None,
        [
            "policy.vllm.tensor_parallel_size=2",
            "policy.vllm.max_model_len=8192",
            "policy.vllm.engine_kwargs={enforce_eager: true}",
        ],
    )
    assert cfg.policy.vllm.engine_args() == {
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.85,
        "dtype": "auto",
        "enable_prefix_caching": True,
        "max_model_len": 8192,
        "enforce_eager": True,
    }
    for bad, match in [
        ("policy.vllm.tensor_parallel_size=0", "tensor_parallel_size must be >= 1"),
        ("policy.vllm.gpu_memory_utilization=1.5", "gpu_memory_utilization must be in"),
        ("policy.vllm.max_model_len=-1", "max_model_len must be >= 0"),
        ("policy.vllm.dtype=fp8", "policy.vllm.dtype"),
        ("policy.vllm.tensor_parallel=2", "unknown key"),
        ("policy.vllm.engine_kwargs={seed: 3}", "set elsewhere"),
        ("policy.vllm.engine_kwargs={dtype: half}", "set elsewhere"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_config(None, [bad])


class _Recorder:
    calls: list[dict[str, Any]] = []


def _fake_vllm() -> types.ModuleType:
    mod = types.ModuleType("vllm")
    mod.__version__ = "0.0-fake"  # type: ignore[attr-defined]

    class AsyncEngineArgs:
        def __init__(self, **kwargs: Any) -> None:
            _Recorder.calls.append(kwargs)
            self.kwargs = kwargs

    class Engine:
        def __init__(self, args: AsyncEngineArgs) -> None:
            self.model_config = types.SimpleNamespace(max_model_len=args.kwargs.get("max_model_len", 4096))

    class AsyncLLMEngine:
        @staticmethod
        def from_engine_args(args: AsyncEngineArgs) -> Engine:
            return Engine(args)

    mod.AsyncEngineArgs = AsyncEngineArgs  # type: ignore[attr-defined]
    mod.AsyncLLMEngine = AsyncLLMEngine  # type: ignore[attr-defined]
    return mod


@pytest.mark.train
def test_the_backend_factory_passes_the_options_to_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from userrl.agents.tiny import build_tiny_model
    from userrl.agents.worker import make_policy_backend

    model = build_tiny_model(tmp_path / "tiny")
    monkeypatch.setitem(sys.modules, "vllm", _fake_vllm())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _Recorder.calls.clear()
    cfg = load_config(
        None,
        [
            "policy.backend=vllm",
            f"policy.model={model}",
            "seed=7",
            "policy.vllm.tensor_parallel_size=4",
            "policy.vllm.gpu_memory_utilization=0.5",
            "policy.vllm.max_model_len=2048",
            "policy.vllm.dtype=bfloat16",
            "policy.vllm.enable_prefix_caching=false",
            "policy.vllm.engine_kwargs={max_num_seqs: 64, enforce_eager: true}",
        ],
    )
    backend = make_policy_backend(cfg)
    (kw,) = _Recorder.calls
    assert kw["model"] == str(model) and kw["seed"] == 7
    assert (kw["tensor_parallel_size"], kw["gpu_memory_utilization"], kw["max_model_len"], kw["dtype"]) == (
        4,
        0.5,
        2048,
        "bfloat16",
    )
    assert kw["enable_prefix_caching"] is False and kw["max_num_seqs"] == 64 and kw["enforce_eager"] is True
    assert kw["logprobs_mode"] == "processed_logprobs"
    assert backend.max_model_len == 2048  # type: ignore[attr-defined]
