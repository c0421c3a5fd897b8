"""Published weight versions on the shared disk: atomic writes, and only the last K kept.

A policy worker loads ``vNNNNN.safetensors`` after the announcement; the file is written under a
temporary name and renamed, so a reader never sees half of it. Old versions are deleted (16 GB
each for an 8B model), but never the newest ``keep`` (>= 2): the previous version may still be
loading on a worker that has not seen the latest announcement yet.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

__all__ = ["prune_versions", "version_path", "write_version"]


def version_path(weights_dir: Path, version: int) -> Path:
    return weights_dir / f"v{version:05d}.safetensors"


def write_version(state: dict[str, Any], weights_dir: Path, version: int, tied: bool) -> Path:
    """One safetensors file per version (tied embeddings stored once), written atomically."""
    from safetensors.torch import save_file

    path = version_path(weights_dir, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().contiguous().cpu() for k, v in state.items() if not (tied and k == "lm_head.weight")}
    tmp = path.with_suffix(".tmp")
    save_file(flat, str(tmp))
    tmp.replace(path)
    return path


def prune_versions(weights_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` versions (files and their ``-adapter`` folders)."""
    if keep < 2:
        raise ValueError(f"keep must be >= 2 (a worker may be loading the previous version), got {keep}")
    versions = sorted(
        {int(p.name[1:6]) for p in weights_dir.glob("v[0-9][0-9][0-9][0-9][0-9]*") if p.name[1:6].isdigit()}
    )
    removed = []
    for v in versions[:-keep]:
        for p in (version_path(weights_dir, v), weights_dir / f"v{v:05d}-adapter"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
            elif p.exists():
                p.unlink(missing_ok=True)
                removed.append(p)
    if removed:
        log.debug("weights.pruned", removed=[p.name for p in removed], kept=keep)
    return removed
