"""Code that runs inside vLLM's worker processes: weight updates for the ``vllm`` policy backend.

vLLM mixes :class:`WorkerExtension` into each of its workers (the engine's
``worker_extension_cls``); :class:`userrl.agents.vllm_backend.VLLMBackend` calls its methods
through ``collective_rpc``. This module is imported by vLLM's workers, never by the policy
worker itself (it pulls in torch).

Weights go in through vLLM's own in-place reload (``model_runner.reload_weights``, vLLM's
layerwise reload): each layer is rebuilt from the checkpoint-format tensors (Hugging Face names
and shapes, what the learner publishes) and processed again as at start-up. That matters on
CPUs, where vLLM repacks every linear layer's weight for its GEMM kernels after loading and
leaves the parameter empty, so a plain ``model.load_weights`` has nowhere to write; it works
the same on GPUs. One gap is closed here: a layer that only *shares* a reloaded parameter (the
tied ``lm_head`` of Qwen3's small models shares ``embed_tokens.weight``) is not processed again
by the reload, and on CPUs it would keep computing logits from its packed copy of the old
embedding. :func:`reprocess_tied_layers` runs its quantization method's
``process_weights_after_loading`` again, as vLLM does at start-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from userrl.learner.weight_sync import WeightGroup, receive_weights

__all__ = ["WorkerExtension", "reprocess_tied_layers", "safetensors_items"]


def safetensors_items(path: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of a safetensors file, or of every ``*.safetensors`` in a folder."""
    from safetensors.torch import safe_open

    p = Path(path)
    files = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"no safetensors weights at {path}")
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                yield name, fh.get_tensor(name)


def reprocess_tied_layers(model: torch.nn.Module) -> list[str]:
    """Process again every layer whose parameter belongs to an earlier layer too (tied weights);
    returns their names."""
    seen: set[int] = set()
    redone: list[str] = []
    for name, module in model.named_modules():
        params = list(module.parameters(recurse=False))
        method = getattr(module, "quant_method", None)
        if method is not None and any(id(p) in seen for p in params):
            method.process_weights_after_loading(module)
            redone.append(name)
        seen.update(id(p) for p in params)
    return redone


class WorkerExtension:
    """Mixed into each vLLM worker (``worker_extension_cls``); called via ``collective_rpc``."""

    model_runner: Any
    device: Any

    def _userrl_reload(self, weights: Iterable[tuple[str, torch.Tensor]]) -> int:
        n = 0

        def counted() -> Iterator[tuple[str, torch.Tensor]]:
            nonlocal n
            for item in weights:
                n += 1
                yield item

        self.model_runner.reload_weights(weights_iterator=counted(), is_checkpoint_format=True)
        reprocess_tied_layers(self.model_runner.get_model())
        return n

    def userrl_load_weights(self, path: str) -> int:
        """Load a published safetensors file (or folder); returns the number of tensors."""
        return self._userrl_reload(safetensors_items(path))

    # In-memory sync (userrl.learner.weight_sync): one round per version. This worker joins the
    # learner's group as rank ``rank`` + its tensor-parallel rank, receives whole tensors into the
    # reload, and leaves the group; the version is the learner's header.
    def userrl_receive_round(
        self, host: str, port: int, world: int, rank: int, timeout_s: float, backend: str = "gloo"
    ) -> tuple[int, int]:
        from vllm.distributed.parallel_state import get_tensor_model_parallel_rank

        group = WeightGroup(
            host,
            port,
            rank + get_tensor_model_parallel_rank(),
            world,
            backend=backend,
            device=str(self.device) if backend == "nccl" else "cpu",  # gloo moves CPU tensors
            timeout_s=timeout_s,
        )
        version, tensors = receive_weights(group)
        return version, self._userrl_reload(tensors)
