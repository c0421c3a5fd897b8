"""LoRA adapters through ``peft`` (the [lora] extra): the learner and SFT train adapters only.

Policy workers get *merged* weights (base + B·A·alpha/r per adapted layer) under the base
model's own tensor names, so the hf and vllm backends load them like any full update; the
adapter itself is saved next to them for vLLM's LoRA serving. Merging is computed out of place
(``get_delta_weight``): merging into the live model and unmerging would drift the base weights
a little at every published version.

The learner picks its :class:`Weights` once (:func:`trained_weights`): :class:`FullWeights`
trains every parameter, :class:`LoraWeights` trains adapters; both load, export and save the
same way, so the learner has no LoRA branch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from userrl.errors import ConfigError

if TYPE_CHECKING:
    from userrl.config import LoraSection

__all__ = [
    "FullWeights",
    "LoraWeights",
    "Weights",
    "apply_lora",
    "lora_config",
    "merged_state_dict",
    "save_adapter",
    "trained_weights",
]

_HINT = "train.lora needs peft: pip install 'userrl[lora]'"


def lora_config(lora: LoraSection) -> Any:
    """peft ``LoraConfig`` from ``train.lora``."""
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


def apply_lora(model: Any, lora: LoraSection) -> Any:
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


class Weights(Protocol):
    """What the learner trains of the model, and how it is loaded, exported and saved."""

    lora: bool
    """Only adapters train (logged)."""

    def load_from(self, model_path: str, base_model_path: str) -> str:
        """The folder the Hugging Face model is loaded from."""
        ...

    def wrap(self, model: Any, model_path: str) -> Any:
        """The trained model around the loaded one (adapters added, a checkpoint's restored)."""
        ...

    def inner(self, model: Any) -> Any:
        """The Hugging Face model inside ``model`` (what the forward pass and ``save_pretrained`` use)."""
        ...

    def state_dict(self, model: Any, full: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The policy's weights under the base model's names; ``full`` gathers the trained model's."""
        ...

    def save(self, model: Any, out: Path) -> None:
        """Save what the weights file alone does not hold next to it (the adapter), if anything."""
        ...


class FullWeights:
    """Full fine-tuning: every parameter trains; the model is what gets published."""

    lora = False

    def load_from(self, model_path: str, base_model_path: str) -> str:
        return model_path

    def wrap(self, model: Any, model_path: str) -> Any:
        return model

    def inner(self, model: Any) -> Any:
        return model

    def state_dict(self, model: Any, full: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        return full()

    def save(self, model: Any, out: Path) -> None:
        pass


class LoraWeights:
    """Adapters on the base model train; the published weights are merged, the adapter saved beside them."""

    lora = True

    def __init__(self, lora: LoraSection) -> None:
        self.cfg = lora

    def load_from(self, model_path: str, base_model_path: str) -> str:
        return base_model_path  # a LoRA checkpoint's base model: its adapter is loaded on top

    def wrap(self, model: Any, model_path: str) -> Any:
        model = apply_lora(model, self.cfg)
        if Path(model_path, "adapter").is_dir():  # a LoRA checkpoint: its adapter weights
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(model, load_file(str(Path(model_path, "adapter", "adapter_model.safetensors"))))
        return model

    def inner(self, model: Any) -> Any:
        return model.get_base_model()

    def state_dict(self, model: Any, full: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        return merged_state_dict(model)

    def save(self, model: Any, out: Path) -> None:
        save_adapter(model, out)


def trained_weights(lora: LoraSection | None, sharded: bool) -> Weights:
    """:class:`LoraWeights` when ``lora`` (``train.lora``, or None) has r > 0, else
    :class:`FullWeights`. ``sharded``: the learner runs under FSDP, which
    LoRA does not support."""
    if lora is None or lora.r <= 0:
        return FullWeights()
    if sharded:
        raise ConfigError(
            "train.lora with FSDP is not supported (merged weights are built from unsharded "
            "adapters): use a DDP accelerate config or one device"
        )
    return LoraWeights(lora)
