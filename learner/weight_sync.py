"""In-memory weight sync: the learner broadcasts updated tensors straight to the policy engines.

The disk path (``weights/vNNNNN.safetensors`` on a shared volume, :mod:`userrl.learner.weights`)
always works and stays the fallback. This path skips the file: the learner (rank 0) and every
vLLM worker process (ranks 1..N, one per tensor-parallel shard of each engine) join a process
group of their own, separate from any training group, as TRL's ``vllm-serve``/``VLLMClient`` and
verl do; the learner then broadcasts a small header (names, dtypes, shapes) and each tensor, and
the receivers stream them into the model's own ``load_weights`` (which shards them for tensor
parallelism). On GPUs the group is vLLM's ``PyNcclCommunicator`` over a
``StatelessProcessGroup`` (NVLink/InfiniBand bandwidth); on CPUs (and in the tests) it is a
gloo group over a ``TCPStore``.

The vLLM side is :meth:`userrl.agents.vllm_backend.WorkerExtension.userrl_join_weight_sync` and
``userrl_receive_weights`` (called through ``collective_rpc``). Wiring it into the announcement
protocol (announce ``mem://vN``, each policy worker enters ``receive`` between batches, the
learner falls back to the file when a receiver does not join in time) is designed in
docs/scaling.md and not enabled yet: the GPU path cannot be tested in this repository's CI.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator, Mapping
from typing import Any

import torch

__all__ = ["WeightGroup", "receive_weights", "send_weights"]

_DTYPES = {
    str(d): d for d in (torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.int32, torch.uint8, torch.bool)
}


class WeightGroup:
    """Rank ``rank`` of a ``world``-process group rooted at the learner (rank 0)."""

    def __init__(
        self,
        host: str,
        port: int,
        rank: int,
        world: int,
        backend: str = "gloo",
        device: str = "cpu",
        timeout_s: float = 300.0,
    ) -> None:
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"backend must be gloo or nccl, got {backend!r}")
        self.rank, self.world, self.backend, self.device = rank, world, backend, device
        timeout = datetime.timedelta(seconds=timeout_s)
        if backend == "gloo":
            store = torch.distributed.TCPStore(host, port, world, is_master=rank == 0, timeout=timeout)
            self._pg = torch.distributed.ProcessGroupGloo(store, rank, world, timeout)
        else:  # pragma: no cover - needs GPUs and vLLM
            from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
            from vllm.distributed.utils import StatelessProcessGroup

            group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world)
            self._nccl = PyNcclCommunicator(group, device=torch.device(device))

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """In place: rank 0's ``tensor`` on every rank."""
        if self.backend == "gloo":
            opts = torch.distributed.BroadcastOptions()
            opts.rootRank = 0
            self._pg.broadcast([tensor], opts).wait()
        else:  # pragma: no cover
            self._nccl.broadcast(tensor, src=0, stream=torch.cuda.current_stream())
        return tensor


def _send_bytes(group: WeightGroup, data: bytes) -> None:
    group.broadcast(torch.tensor([len(data)], dtype=torch.int64, device=group.device))
    group.broadcast(torch.frombuffer(bytearray(data), dtype=torch.uint8).to(group.device))


def _receive_bytes(group: WeightGroup) -> bytes:
    n = group.broadcast(torch.zeros(1, dtype=torch.int64, device=group.device))
    buf = group.broadcast(torch.empty(int(n.item()), dtype=torch.uint8, device=group.device))
    return bytes(buf.cpu().numpy())


def send_weights(group: WeightGroup, state: Mapping[str, torch.Tensor], version: int) -> int:
    """Broadcast ``state`` (name -> tensor) as version ``version``; returns the bytes sent."""
    header = {"version": version, "tensors": [[name, str(t.dtype), list(t.shape)] for name, t in state.items()]}
    _send_bytes(group, json.dumps(header).encode())
    sent = 0
    for t in state.values():
        group.broadcast(t.detach().to(group.device).contiguous())
        sent += t.numel() * t.element_size()
    return sent


def receive_weights(group: WeightGroup) -> tuple[int, Iterator[tuple[str, torch.Tensor]]]:
    """The version rank 0 sends, and its tensors one by one (consume the iterator fully: every
    tensor is a collective). Feed the iterator to a model's ``load_weights``."""
    header = json.loads(_receive_bytes(group).decode())

    def tensors() -> Iterator[tuple[str, Any]]:
        for name, dtype, shape in header["tensors"]:
            if dtype not in _DTYPES:
                raise ValueError(f"weight sync: unsupported dtype {dtype} for {name}")
            yield name, group.broadcast(torch.empty(shape, dtype=_DTYPES[dtype], device=group.device))

    return int(header["version"]), tensors()
