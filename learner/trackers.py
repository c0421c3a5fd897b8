"""Experiment trackers for GRPO metrics: TensorBoard, Weights & Biases, Trackio.

The names are TRL's ``report_to`` values, so one ``train.report_to`` list serves SFT (TRL does
the logging) and GRPO (these classes). Each tracker's package is imported only when asked for;
a missing one is a :class:`~userrl.errors.ConfigError` that names the extra to install.

Offline by default where it matters: W&B runs in ``offline`` mode unless ``WANDB_MODE`` says
otherwise or ``WANDB_API_KEY`` is set (``wandb sync`` uploads an offline run later); Trackio
is local-first (a SQLite file under its cache folder). Project names come from
``WANDB_PROJECT`` / ``TRACKIO_PROJECT`` (as in transformers), default ``userrl``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Protocol

from userrl.errors import ConfigError

TRACKERS = ("tensorboard", "wandb", "trackio")


class Tracker(Protocol):
    def log(self, step: int, scalars: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def _need(module: str, kind: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"train.report_to: {kind} needs the {kind} package (pip install 'userrl[{kind}]'): {exc}"
        ) from None


class TensorBoardTracker:
    """Scalars to ``<run_dir>/tensorboard`` (event files TensorBoard's reader parses)."""

    def __init__(self, run_dir: Path) -> None:
        _need("tensorboard", "tensorboard")  # torch's writer needs it; say so before torch does
        writer_cls = _need("torch.utils.tensorboard", "tensorboard").SummaryWriter
        self.log_dir = run_dir / "tensorboard"
        self.writer = writer_cls(log_dir=str(self.log_dir))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, global_step=step)
        self.writer.flush()  # one write per GRPO step: cheap, and a killed run keeps its curve

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, run_dir: Path, run_name: str, config: dict[str, Any]) -> None:
        wandb = _need("wandb", "wandb")
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "userrl"), name=run_name, dir=str(run_dir), config=config, mode=mode
        )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class TrackioTracker:
    def __init__(self, run_name: str, config: dict[str, Any]) -> None:
        self.trackio = _need("trackio", "trackio")
        self.run = self.trackio.init(project=os.environ.get("TRACKIO_PROJECT", "userrl"), name=run_name, config=config)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.trackio.log(scalars, step=step)

    def close(self) -> None:
        self.trackio.finish()


def open_tracker(kind: str, run_dir: Path, run_name: str, config: dict[str, Any]) -> Tracker:
    """The tracker named ``kind`` (one of :data:`TRACKERS`)."""
    if kind == "tensorboard":
        return TensorBoardTracker(run_dir)
    if kind == "wandb":
        return WandbTracker(run_dir, run_name, config)
    if kind == "trackio":
        return TrackioTracker(run_name, config)
    raise ConfigError(f"train.report_to: {kind!r} is not one of {list(TRACKERS)}")
