"""τ-bench's databases (retail, airline), shipped compressed, and one episode's view of them.

``envs/data/tau/tau_bench_{retail,airline}.json.xz`` hold τ-bench's mock databases (MIT, see
``TAU_BENCH_LICENSE.txt`` next to them) as ``{"tables": {table: {key: record}}, "wiki": text}``
(the wiki is the domain's agent policy). Each file is parsed once per process into a template
that is never written.

An episode never copies the template: :class:`EpisodeDB` reads through to it and copies a
record only when a tool first changes it (copy-on-write). Opening an episode's database so
costs the replay of its few write calls, not a parse or deep copy of megabytes of JSON (the
airline file is 3 MB of JSON). :meth:`EpisodeDB.fingerprint` hashes the records that differ
from the template: τ-bench compares hashes of the whole database, and the records both sides
left unchanged contribute the same to both, so two databases are equal iff these fingerprints
are. Records are compared as canonical JSON, which, like τ-bench's hash, tells ``5`` from
``5.0`` and list order apart but not dict key order.
"""

from __future__ import annotations

import copy
import hashlib
import json
import lzma
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from userrl.errors import DataError

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "tau"
#: database name (a task's ``db``) -> its tables, as in τ-bench's ``data/`` folder
TABLES: dict[str, tuple[str, ...]] = {
    "tau-bench-retail": ("users", "orders", "products"),
    "tau-bench-airline": ("users", "reservations", "flights"),
}

_templates: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()


def shipped_path(db: str) -> Path:
    return DATA_DIR / f"{db.replace('-', '_')}.json.xz"


def _canonical(record: Any) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def load(db: str) -> dict[str, Any]:
    """The process-wide template of ``db``: ``{"tables": ..., "wiki": ...}`` (never write it)."""
    if db not in TABLES:
        raise DataError(f"unknown τ-bench database {db!r}; known: {sorted(TABLES)}")
    with _lock:
        if db not in _templates:
            path = shipped_path(db)
            try:
                with lzma.open(path, "rt", encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, lzma.LZMAError, json.JSONDecodeError) as exc:
                raise DataError(f"{path}: cannot load the {db} database ({exc})") from exc
            tables = data.get("tables") if isinstance(data, dict) else None
            if not isinstance(tables, dict) or set(tables) != set(TABLES[db]):
                raise DataError(f"{path}: expected the tables {list(TABLES[db])}")
            _templates[db] = data
        return _templates[db]


def pack(src: Path, db: str, out: Path) -> None:
    """Write the shipped file of ``db`` from τ-bench's ``data/`` folder ``src`` (one JSON file
    per table, plus ``wiki.md``). How the files in ``envs/data/tau`` were made."""
    tables = {t: json.loads((src / f"{t}.json").read_text(encoding="utf-8")) for t in TABLES[db]}
    wiki = (src / "wiki.md").read_text(encoding="utf-8")
    text = json.dumps({"tables": tables, "wiki": wiki}, ensure_ascii=False, separators=(",", ":"))
    out.write_bytes(lzma.compress(text.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))


class EpisodeDB:
    """One episode's copy of a τ-bench database (copy-on-write over the shared template).

    Tools read with :meth:`get` / :meth:`items` and must call :meth:`edit` before changing a
    record (it returns the episode's own copy), or :meth:`add` for a new one.
    """

    def __init__(self, db: str) -> None:
        self.name = db
        self._base: dict[str, dict[str, Any]] = load(db)["tables"]
        self._changed: dict[str, dict[str, Any]] = {t: {} for t in self._base}

    def get(self, table: str, key: str) -> Any:
        """The record, or None; read-only (it may be the shared template's)."""
        changed = self._changed[table]
        return changed[key] if key in changed else self._base[table].get(key)

    def items(self, table: str) -> Iterator[tuple[str, Any]]:
        """Every record in τ-bench's order (the template's, then records added since)."""
        changed, base = self._changed[table], self._base[table]
        for key, record in base.items():
            yield key, changed.get(key, record)
        for key, record in changed.items():
            if key not in base:
                yield key, record

    def edit(self, table: str, key: str) -> Any:
        """The episode's own, writable copy of an existing record."""
        changed = self._changed[table]
        if key not in changed:
            changed[key] = copy.deepcopy(self._base[table][key])
        return changed[key]

    def add(self, table: str, key: str, record: Any) -> None:
        self._changed[table][key] = record

    def fingerprint(self) -> str:
        """A hash of every record that differs from the template (see the module docstring)."""
        h = hashlib.sha256()
        for table in sorted(self._changed):
            base = self._base[table]
            for key in sorted(self._changed[table]):
                text = _canonical(self._changed[table][key])
                if key not in base or text != _canonical(base[key]):
                    h.update(json.dumps([table, key, text]).encode())
        return h.hexdigest()
