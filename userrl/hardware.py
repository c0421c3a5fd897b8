"""Device and dtype from what the hardware does fast.

``auto`` device: CUDA when torch sees one, else CPU. ``auto`` dtype: bf16 on a CUDA device that
supports it, fp32 everywhere else. On a CPU, bf16 only pays with native bf16 matrix units
(AVX512-BF16 / AMX) and large matrices; without them every bf16 op is emulated and TRL's default
``bf16=True`` made one SFT epoch of the main job 4x slower (84 s vs 20 s, issue 13). So a CPU
gets bf16 only when asked (``train.dtype: bf16``), and :func:`cpu_has_native_bf16` says whether
that is a good idea on this machine.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from userrl.errors import ConfigError

DType = Literal["auto", "bf16", "fp32"]


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else is checked and returned."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"device {name!r} is not a torch device ({exc})") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} asked for, but torch sees no CUDA device "
            "(install a CUDA build of torch, or set device: cpu / auto)"
        )
    return name


def resolve_dtype(name: str, device: str) -> Literal["bf16", "fp32"]:
    """``auto`` -> bf16 on CUDA with bf16 support, fp32 otherwise (see the module docstring)."""
    if name in ("bf16", "fp32"):
        return name  # type: ignore[return-value]
    if name != "auto":
        raise ConfigError(f"dtype {name!r}: choose auto, bf16 or fp32")
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16), from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
