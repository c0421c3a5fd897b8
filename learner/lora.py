"""LoRA adapters through ``peft`` (the [lora] extra): the learner and SFT train adapters only.

Policy workers get *merged* weights (base + B·A·alpha/r per adapted layer) under the base
model's own tensor names, so the hf and vllm backends load them like any full update; the
adapter itself is saved next to them for vLLM's LoRA serving. Merging is computed out of place
(``get_delta_weight``): merging into the live model and unmerging would drift the base weights
a little at every published version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from userrl.errors import ConfigError

__all__ = ["apply_lora", "lora_config", "merged_state_dict", "save_adapter"]

_HINT = "train.lora needs peft: pip install 'userrl[lora]'"


def lora_config(lora: Any) -> Any:
    """peft ``LoraConfig`` from a :class:`~userrl.config.LoraSection`-like object."""
    try:
        from peft import LoraConfig
    except ImportError as exc:
        raise ConfigError(_HINT) from exc
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        target_modules=list(lora.target_modules),
        lora_dropout=lora.dropout,
        task_type="CAUSAL_LM",
    )


def apply_lora(model: Any, lora: Any) -> Any:
    """``model`` with adapters on ``lora.target_modules``; only adapter weights require grad."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(lora))
    except ValueError as exc:  # e.g. target modules not found in the model
        raise ConfigError(f"train.lora: {exc}") from exc


def merged_state_dict(peft_model: Any) -> dict[str, Any]:
    """The base model's state dict with every adapter merged in, under the base model's names."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    out: dict[str, Any] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            weight = module.base_layer.weight.detach()
            for adapter in module.active_adapters:
                weight = weight + module.get_delta_weight(adapter).detach().to(weight.dtype)
            out[f"{name}.weight"] = weight
            if getattr(module.base_layer, "bias", None) is not None:
                out[f"{name}.bias"] = module.base_layer.bias.detach()
    for key, value in base.state_dict().items():
        if "lora_" in key or ".base_layer." in key:
            continue
        out.setdefault(key, value.detach())
    return out


def save_adapter(peft_model: Any, out: str | Path) -> Path:
    """The adapter alone (``adapter_config.json`` + ``adapter_model.safetensors``), for vLLM LoRA."""
    out = Path(out)
    peft_model.save_pretrained(out)
    return out
