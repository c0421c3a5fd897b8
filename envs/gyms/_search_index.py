"""SearchGym's local full-text index over the bundled document collection.

The collection is ``envs/data/search/corpus.jsonl`` (one ``{"id", "title", "text"}`` per line,
authored by ``envs/data_tools/generate.py``). It is indexed once per process and never written after
that, so sharing it between episodes is safe: an index is a pure function of the corpus.

Two engines rank the same way in spirit (BM25 over title and text):

- ``fts5``: SQLite's FTS5 through the stdlib ``sqlite3`` (used when this Python's SQLite has
  FTS5, which is checked at first use);
- ``bm25``: a small pure-Python BM25 (k1 = 1.2, b = 0.75), the fallback.

Queries are reduced to their lower-case words (FTS5 syntax in the query is never
interpreted) and OR-ed; ties break on the document's position in the corpus, so results are
deterministic. Stopwords are dropped from queries only.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

from userrl.envs.gyms._text import STOPWORDS
from userrl.errors import DataError

log = structlog.get_logger(__name__)

CORPUS = Path(__file__).resolve().parents[1] / "data" / "search" / "corpus.jsonl"
Engine = Literal["fts5", "bm25"]
_WORD = re.compile(r"[a-z0-9]+")
K1, B = 1.2, 0.75


@dataclass(frozen=True, slots=True)
class Doc:
    id: str
    title: str
    text: str


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def query_terms(query: str) -> list[str]:
    """Distinct non-stopword words of a query, in order."""
    return list(dict.fromkeys(w for w in words(query) if w not in STOPWORDS))


def load_corpus(path: Path = CORPUS) -> list[Doc]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"{path}: search corpus not found ({exc})") from exc
    docs = []
    for n, line in enumerate(lines, 1):
        try:
            d = json.loads(line)
            docs.append(Doc(str(d["id"]), str(d["title"]), str(d["text"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{n}: malformed corpus line ({exc})") from exc
    if len({d.id for d in docs}) != len(docs):
        raise DataError(f"{path}: duplicate document ids")
    return docs


def fts5_available() -> bool:
    try:
        sqlite3.connect(":memory:").execute("CREATE VIRTUAL TABLE t USING fts5(x)")
    except sqlite3.OperationalError:
        return False
    return True


class SearchIndex:
    """A read-only index; :meth:`search` returns the best ``k`` documents for a query."""

    def __init__(self, docs: list[Doc], engine: Engine | None = None) -> None:
        self.docs = docs
        self.engine: Engine = engine or ("fts5" if fts5_available() else "bm25")
        self._lock = threading.Lock()  # one sqlite connection, possibly used from threads
        if self.engine == "fts5":
            self._db = sqlite3.connect(":memory:", check_same_thread=False)
            self._db.execute("CREATE VIRTUAL TABLE docs USING fts5(title, text)")
            self._db.executemany(
                "INSERT INTO docs(rowid, title, text) VALUES (?, ?, ?)",
                [(i, d.title, d.text) for i, d in enumerate(docs)],
            )
        else:
            self._tf = [Counter(words(f"{d.title} {d.text}")) for d in docs]
            self._len = [sum(c.values()) for c in self._tf]
            self._avg = sum(self._len) / max(1, len(docs))
            df = Counter(w for c in self._tf for w in c)
            n = len(docs)
            self._idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in df.items()}

    def search(self, query: str, k: int = 5) -> list[Doc]:
        terms = query_terms(query) or list(dict.fromkeys(words(query)))
        if not terms:
            return []
        if self.engine == "fts5":
            match = " OR ".join(f'"{t}"' for t in terms)
            with self._lock:
                rows = self._db.execute(
                    "SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY bm25(docs), rowid LIMIT ?", (match, k)
                ).fetchall()
            return [self.docs[r[0]] for r in rows]
        scores = []
        for i, tf in enumerate(self._tf):
            s = sum(
                self._idf[t] * tf[t] * (K1 + 1) / (tf[t] + K1 * (1 - B + B * self._len[i] / self._avg))
                for t in terms
                if tf.get(t)
            )
            if s > 0:
                scores.append((-round(s, 9), i))
        return [self.docs[i] for _, i in sorted(scores)[:k]]


_indexes: dict[tuple[str, str | None], SearchIndex] = {}
_build_lock = threading.Lock()


def get_index(path: Path = CORPUS, engine: Engine | None = None) -> SearchIndex:
    """The process-wide index of ``path`` (built on first use, read-only afterwards)."""
    key = (str(path), engine)
    with _build_lock:
        if key not in _indexes:
            _indexes[key] = SearchIndex(load_corpus(path), engine)
            log.debug("search_index_built", path=str(path), engine=_indexes[key].engine, n=len(_indexes[key].docs))
        return _indexes[key]


def snippet(doc: Doc, limit: int = 300) -> str:
    text = doc.text if len(doc.text) <= limit else doc.text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"[{doc.id}] {doc.title}: {text}"
