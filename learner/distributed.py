"""Where the learner's copies run: one process (:class:`SingleProcess`), or several under
``accelerate launch`` (:class:`Distributed`: DDP or FSDP2 from accelerate). Both offer the same
:class:`Replicas` interface (the collectives, gradient sync and clipping, gathering the state
dict, where optimizer state is saved), chosen once by :func:`make_replicas`, so the learner's
update has no branch on how many processes run it.

Only rank 0 talks to Redis: it reads the scored groups, acks them, checkpoints and publishes
weights. It drives the other ranks by broadcasting each learner call (``step``, ``save_weights``,
``save_model``, ``checkpoint``, ``stop``) with its arguments (``torch.distributed``'s object
broadcast); every rank then runs the same call on the same batch and trains on its own share of
the sequences (:mod:`userrl.learner.microbatch`). Calls that gather a sharded model (FSDP2 state
dicts) are collective, which is why saving is a broadcast command and not rank 0 alone.

A rank that dies mid-step leaves the others blocked in a collective; ``accelerate launch``
(torchrun's agent, no restarts) then stops every rank. Rank 0 acks scored groups only once a
checkpoint covers them, so the groups of the failed step stay pending and a restarted learner
(``train.resume``) trains on them again.

The forward pass goes through :class:`TokenLogprobs`, the module accelerate wraps, so DDP's and
FSDP's hooks see it, while the learner keeps computing logits only at trained positions.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog
import torch

from userrl.errors import ConfigError
from userrl.hardware import resolve_device
from userrl.learner.losses import token_logprobs
from userrl.learner.metrics import MetricsLog

if TYPE_CHECKING:
    from userrl.config import DeployConfig

log = structlog.get_logger(__name__)

__all__ = [
    "COMMANDS",
    "Distributed",
    "Replicas",
    "SingleProcess",
    "TokenLogprobs",
    "accelerate_command",
    "follow",
    "launched",
    "make_replicas",
    "run_learn_under_accelerate",
]

UNDER_ACCELERATE = "USERRL_UNDER_ACCELERATE"
"""Set in the processes ``accelerate launch`` starts for us: never relaunch from inside one."""

COMMANDS = ("step", "save_weights", "save_model", "checkpoint", "stop")


def accelerate_command(config_file: str, userrl_args: Sequence[str]) -> list[str]:
    """``accelerate launch --config_file FILE -m userrl ARGS`` with this interpreter."""
    if not Path(config_file).is_file():
        raise ConfigError(
            f"train.accelerate_config: {config_file} is not a file "
            "(write one with `accelerate config --config_file FILE`)"
        )
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config_file),
        "-m",
        "userrl",
        *userrl_args,
    ]


def relaunch_env() -> dict[str, str]:
    return {**os.environ, UNDER_ACCELERATE: "1"}


def run_learn_under_accelerate(
    cfg: DeployConfig, config_path: str | None, overrides: Sequence[str], start_model: str, run_dir: Path, url: str
) -> tuple[str, list[dict[str, Any]]]:
    """``userrl train``'s GRPO stage as ``accelerate launch ... userrl learn`` against the running
    deploy at ``url``; its final model and metrics come back through ``run_dir``."""
    args = [
        "learn",
        *(["--config", config_path] if config_path else []),
        *[x for ov in [*overrides, f"policy.model={start_model}"] for x in ("--set", ov)],
    ]
    cmd = accelerate_command(cfg.train.accelerate_config, args)
    log.info("learner.accelerate_launch", cmd=cmd)
    rc = subprocess.run(cmd, env={**relaunch_env(), "USERRL_REDIS_URL": url}, check=False).returncode
    if rc != 0:
        raise RuntimeError(f"the accelerate-launched learner failed with exit code {rc}: {' '.join(cmd)}")
    return str(run_dir / "final-model"), MetricsLog(run_dir / "metrics.jsonl").read()


def launched() -> bool:
    """Whether this process was started by ``accelerate launch`` with more than one process or
    with FSDP (the launcher sets these variables)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"


class TokenLogprobs(torch.nn.Module):
    """``token_logprobs`` as a module, so DDP/FSDP wrap the call the learner makes."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        # FSDP2's auto-wrap policy looks for the transformer block classes on the root
        self._no_split_modules = getattr(model, "_no_split_modules", None)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mask: torch.Tensor,
        temperature: float,
        entropy: str = "none",
    ) -> Any:
        return token_logprobs(self.model, input_ids, attention_mask, temperature, mask=mask, entropy=entropy)


class Replicas(Protocol):
    """The copies of the learner that run each call together, as the update sees them."""

    rank: int
    world: int
    is_main: bool
    """This copy talks to Redis, writes the published files and drives the others."""
    lockstep: bool
    """Several processes run every forward together: each must make the same calls (empty
    micro-batches included) so their collectives line up."""
    sharded: bool
    """Parameters and optimizer state are split over the copies (FSDP)."""

    def device(self, requested: str) -> str:
        """The torch device this copy trains on."""
        ...

    def prepare(self, net: torch.nn.Module, optimizer: Any) -> tuple[torch.nn.Module, Any]: ...

    def lead(self, cmd: str, args: tuple[Any, ...]) -> None:
        """The main copy tells the others to run learner call ``cmd`` with ``args`` (nothing
        on the others, or with one process)."""
        ...

    def receive(self) -> tuple[str, tuple[Any, ...]]:
        """The call the main copy led (the other copies, in :func:`follow`)."""
        ...

    def sum(self, values: list[float]) -> list[float]: ...

    def max(self, values: list[float]) -> list[float]: ...

    def sync(self, net: torch.nn.Module, enabled: bool) -> contextlib.AbstractContextManager[None]: ...

    def clip_grad_norm(self, net: torch.nn.Module, max_norm: float) -> float: ...

    def full_state_dict(self, net: TokenLogprobs) -> dict[str, Any]:
        """The whole model's state dict under the model's own names."""
        ...

    def save_optimizer(self, state: dict[str, Any], folder: Path) -> None: ...

    def optimizer_file(self, folder: Path) -> Path:
        """Where this copy's optimizer state is read back from in ``folder``."""
        ...

    def close(self) -> None: ...


class SingleProcess:
    """The learner in one process: every collective is the identity."""

    rank, world, is_main, lockstep, sharded = 0, 1, True, False, False

    def device(self, requested: str) -> str:
        return resolve_device(requested)

    def prepare(self, net: torch.nn.Module, optimizer: Any) -> tuple[torch.nn.Module, Any]:
        return net, optimizer

    def lead(self, cmd: str, args: tuple[Any, ...]) -> None:
        pass

    def receive(self) -> tuple[str, tuple[Any, ...]]:
        raise RuntimeError("a one-process learner has no main copy to follow")

    def sum(self, values: list[float]) -> list[float]:
        return values

    def max(self, values: list[float]) -> list[float]:
        return values

    def sync(self, net: torch.nn.Module, enabled: bool) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def clip_grad_norm(self, net: torch.nn.Module, max_norm: float) -> float:
        params = [p for p in net.parameters() if p.requires_grad]
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def full_state_dict(self, net: TokenLogprobs) -> dict[str, Any]:
        return net.model.state_dict()

    def save_optimizer(self, state: dict[str, Any], folder: Path) -> None:
        torch.save(state, folder / "optimizer.pt")

    def optimizer_file(self, folder: Path) -> Path:
        return folder / "optimizer.pt"

    def close(self) -> None:
        pass


def make_replicas(device: str) -> Replicas:
    """:class:`Distributed` under ``accelerate launch`` (:func:`launched`), else one process."""
    return Distributed(cpu=resolve_device(device) == "cpu") if launched() else SingleProcess()


class Distributed:
    """The process group accelerate set up, and the few collectives the learner needs."""

    lockstep = True

    def __init__(self, cpu: bool = False) -> None:
        from accelerate import Accelerator

        # Reads the launcher's environment: backend, device, FSDP plugin. Several CPU processes
        # need cpu=True (gloo): `accelerate launch --cpu` alone starts one process without MPI,
        # so CPU runs use the torchrun launcher (--multi_gpu) with train.device: cpu.
        self.acc = Accelerator(cpu=cpu)
        self.rank = self.acc.process_index
        self.world = self.acc.num_processes
        self.is_main = self.acc.is_main_process
        self.sharded = bool(getattr(self.acc, "is_fsdp2", False))
        log.info(
            "learner.distributed",
            rank=self.rank,
            world=self.world,
            device=str(self.acc.device),
            type=str(self.acc.distributed_type),
            fsdp2=self.sharded,
        )

    def device(self, requested: str) -> str:
        """The device the launcher assigned this rank (``requested`` chose CPU or not already)."""
        return str(self.acc.device)

    def prepare(self, net: torch.nn.Module, optimizer: Any) -> tuple[torch.nn.Module, Any]:
        return self.acc.prepare(net, optimizer)

    def close(self) -> None:
        """Tear the process group down before the interpreter exits: left to exit-time
        destructors, gloo's threads can abort the process ("terminate called without an active
        exception", SIGABRT) after a run that finished fine."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank gets here before any tears down: a rank still inside the last
            # collective when its peer destroys the group is what aborts
            torch.distributed.barrier()
            # gloo's worker threads drop each finished work after it completes, and dropping one
            # whose tensors Python created needs the GIL. Whoever destroys the group (here, or
            # DDP's reducer when the model is freed) joins those threads while holding the GIL:
            # a thread still waiting for it then deadlocks the rank at exit (seen under load).
            # Sleeping releases the GIL so they finish first.
            time.sleep(1.0)
            torch.distributed.destroy_process_group()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def lead(self, cmd: str, args: tuple[Any, ...]) -> None:
        if self.is_main:
            self.broadcast((cmd, args))

    def receive(self) -> tuple[str, tuple[Any, ...]]:
        cmd, args = self.broadcast(None)
        return cmd, tuple(args)

    def sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.acc.device)
        torch.distributed.all_reduce(t)
        return [float(v) for v in t.tolist()]

    def max(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.acc.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return [float(v) for v in t.tolist()]

    @contextlib.contextmanager
    def sync(self, net: torch.nn.Module, enabled: bool) -> Iterator[None]:
        """Gradient all-reduce on this backward only when ``enabled`` (the last micro-batch)."""
        if enabled:
            yield
        else:
            with self.acc.no_sync(net):
                yield

    def clip_grad_norm(self, net: torch.nn.Module, max_norm: float) -> float:
        params = [p for p in net.parameters() if p.requires_grad]
        return float(self.acc.clip_grad_norm_(params, max_norm))

    def full_state_dict(self, net: TokenLogprobs) -> dict[str, Any]:
        """The whole model's state dict (gathered under FSDP: collective), ``TokenLogprobs``'
        ``model.`` prefix removed."""
        state = self.acc.get_state_dict(net)
        return {k.removeprefix("model."): v for k, v in state.items()}

    def save_optimizer(self, state: dict[str, Any], folder: Path) -> None:
        """Sharded optimizer state: one file per rank; else rank 0's one file."""
        if self.sharded:
            torch.save(state, folder / f"optimizer.rank{self.rank}.pt")
        elif self.is_main:
            torch.save(state, folder / "optimizer.pt")

    def optimizer_file(self, folder: Path) -> Path:
        rank_file = folder / f"optimizer.rank{self.rank}.pt"
        return rank_file if rank_file.is_file() else folder / "optimizer.pt"


class Follower(Protocol):
    """The learner calls rank 0 leads (:data:`COMMANDS`): each runs on every rank."""

    replicas: Replicas

    def step(self, groups: list[dict[str, Any]]) -> dict[str, Any]: ...

    def save_weights(self) -> Path: ...

    def save_model(self, out: str | Path) -> Path: ...

    def checkpoint(self, extra: dict[str, Any] | None = None) -> Path: ...

    def stop(self) -> None: ...


def follow(learner: Follower) -> None:
    """Ranks > 0: run the learner calls rank 0 leads until it says ``stop``."""
    while True:
        cmd, args = learner.replicas.receive()
        calls = {
            "step": learner.step,
            "save_weights": learner.save_weights,
            "save_model": learner.save_model,
            "checkpoint": learner.checkpoint,
            "stop": learner.stop,
        }
        if cmd not in calls:
            raise RuntimeError(f"rank {learner.replicas.rank}: unknown learner command {cmd!r} from rank 0")
        calls[cmd](*args)
        if cmd == "stop":
            return
