"""Reading the files of the UserRL release: JSON with the shape each converter expects, and the
verl parquet prompts. Every problem is a :class:`~userrl.errors.DataError` naming the file and
the entry, so a bad source is reported as such before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from userrl.errors import DataError


def load_json(path: Path, expected: type) -> Any:
    """The JSON document at ``path``, which must be of type ``expected`` (list or dict)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from exc
    if not isinstance(data, expected):
        raise DataError(f"{path}: expected a JSON {expected.__name__}, got {type(data).__name__}")
    return data


def require_keys(path: Path, where: str, rec: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """``rec`` itself when it is an object holding every one of ``keys``; else a DataError
    naming ``where`` in ``path``."""
    if not isinstance(rec, dict) or any(k not in rec for k in keys):
        raise DataError(f"{path}: {where}: expected an object with keys {', '.join(keys)}")
    return rec


def read_parquet(path: Path) -> list[dict[str, Any]]:
    """Rows of a parquet file as dicts (needs pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(
            f"{path}: reading UserRL's parquet files needs pyarrow (pip install pyarrow, or the 'dev'/'train' extra)"
        ) from exc
    try:
        return list(pq.read_table(path).to_pylist())
    except Exception as exc:  # pyarrow raises its own error types
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc


def check_parquet_folder(folder: Path) -> None:
    """A parquet folder of the release holds nothing but ``train.parquet`` and ``test.parquet``."""
    for p in sorted(folder.iterdir()):
        if p.name not in ("train.parquet", "test.parquet"):
            raise DataError(
                f"{p}: unknown file; {folder.name}/ is expected to hold only train.parquet and test.parquet"
            )
