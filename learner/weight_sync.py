"""In-memory weight sync: the learner broadcasts updated tensors straight into the policy engines.

The disk path (``weights/vNNNNN.safetensors`` on a shared volume, :mod:`userrl.learner.weights`)
always runs and stays the fallback. With ``train.weight_sync: memory`` the learner also skips the
file for every vLLM policy worker: one **round per version** (:func:`announce_version`).

1. The learner finds the receivers: live policy workers whose heartbeat offers
   ``memory_sync_ranks`` (a vLLM engine: one rank per tensor-parallel worker), and gives each a
   first rank (the learner is rank 0).
2. It announces the version as always (the file's path) with the round's address, world size and
   ranks in the entry's ``sync`` field, and opens the group: gloo over a ``TCPStore`` on a free
   port when its weights are on a CPU, vLLM's ``PyNcclCommunicator`` over a
   ``StatelessProcessGroup`` when they are on a GPU (the engines' GPUs then take part directly).
3. Each listed policy worker sees the announcement at once (it watches the ``weights`` stream),
   lets its requests in flight finish, and calls ``userrl_receive_round`` in its engine's
   workers through ``collective_rpc`` (:mod:`userrl.agents.vllm_extension`), which join the group
   and stream what arrives into vLLM's in-place reload.
4. The learner broadcasts a header (names, dtypes, shapes, version) and each tensor, then closes
   the group. The group is separate from any training group and lives for one version only, so
   workers that come and go need no bookkeeping.

A round that fails (a receiver died or never joined within :data:`ROUND_TIMEOUT_S`) costs the
timeout and nothing else: every listed worker that did not get the tensors loads the file of the
same announcement instead, and unlisted workers (hf backends, workers started after the round
began) always load the file.
"""

from __future__ import annotations

import datetime
import json
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import anyio
import structlog
import torch

from userrl.bus.messages import WeightsAnnouncement
from userrl.bus.transport import Bus

log = structlog.get_logger(__name__)

__all__ = [
    "ROUND_TIMEOUT_S",
    "SyncRound",
    "WeightGroup",
    "announce_version",
    "memory_receivers",
    "receive_weights",
    "send_weights",
]

#: how long a round waits for its receivers to join and take every tensor
ROUND_TIMEOUT_S = 60.0

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


# ---- one round per version (the learner side) ----------------------------------------------------


@dataclass(frozen=True)
class SyncRound:
    """Where and how the receivers of one version meet the learner (rank 0)."""

    host: str
    port: int
    world: int
    ranks: dict[str, int]  #: policy worker name -> its first rank
    timeout_s: float = ROUND_TIMEOUT_S
    backend: str = "gloo"  #: nccl when the learner's weights are on a GPU (the engines' must be too)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> SyncRound:
        return cls(**json.loads(raw))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


async def memory_receivers(bus: Bus) -> dict[str, int]:
    """Live policy workers that take weights in memory -> how many ranks each needs."""
    names = await bus.routes.replicas()
    if not names:
        return {}
    beats = await bus.routes.heartbeats(names)
    out = {}
    for name, hb in zip(names, beats, strict=True):
        ranks = int(hb.get("memory_sync_ranks") or 0) if hb else 0
        if ranks > 0:
            out[name] = ranks
    return out


def _broadcast(rnd: SyncRound, state: Mapping[str, torch.Tensor], version: int) -> int:
    device = str(next(iter(state.values())).device) if rnd.backend == "nccl" else "cpu"
    group = WeightGroup(rnd.host, rnd.port, 0, rnd.world, backend=rnd.backend, device=device, timeout_s=rnd.timeout_s)
    return send_weights(group, state, version)


async def announce_version(
    bus: Bus,
    version: int,
    path: str,
    state: Mapping[str, torch.Tensor] | None = None,
    host: str = "127.0.0.1",
    timeout_s: float = ROUND_TIMEOUT_S,
) -> dict[str, Any]:
    """Announce ``version`` (its file at ``path``); with ``state``, also broadcast it to the live
    in-memory receivers (one round, see the module docstring). Returns what happened."""
    msg = WeightsAnnouncement(episode_id="weights", seq=version, version=version, path=str(path))
    readable: dict[str, Any] = {"version": version, "path": str(path)}
    receivers = await memory_receivers(bus) if state is not None else {}
    if state is None or not receivers:
        await bus.send(bus.keys.weights, msg, readable)
        return {"mode": "disk"}
    ranks, nxt = {}, 1
    for name, n in receivers.items():
        ranks[name], nxt = nxt, nxt + n
    on_gpu = next(iter(state.values())).is_cuda
    rnd = SyncRound(
        host=host, port=_free_port(), world=nxt, ranks=ranks, timeout_s=timeout_s, backend="nccl" if on_gpu else "gloo"
    )
    await bus.send(bus.keys.weights, msg, {**readable, "sync": rnd.to_json()})
    t0 = time.perf_counter()
    try:
        sent = await anyio.to_thread.run_sync(_broadcast, rnd, state, version)
    except Exception as exc:  # the receivers load the file of the same announcement instead
        log.warning("weights.memory_round_failed", version=version, receivers=sorted(ranks), error=repr(exc))
        return {"mode": "disk", "memory_error": repr(exc)}
    seconds = time.perf_counter() - t0
    log.info("weights.memory_round", version=version, receivers=sorted(ranks), bytes=sent, seconds=round(seconds, 4))
    return {"mode": "memory", "seconds": seconds, "bytes": sent, "receivers": len(ranks)}
