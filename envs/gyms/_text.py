"""Small text-matching helpers shared by the scripted users and judges.

Scripted users must be deterministic and cheap, so matching is word-level: text is
lower-cased, accents and punctuation are dropped, and every word is reduced by a crude suffix
stemmer (``giraffes`` -> ``giraffe``, ``flying`` -> ``fly``). Keywords and phrases go through
the same pipeline, so the stemmer only needs to be consistent, not linguistically right.

A *keyword group* is a list of alternative phrases (synonyms); a group is hit when any of its
phrases occurs in the text as a contiguous run of stemmed words.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence

STOPWORDS: frozenset[str] = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    out over own same she should so some such than that the their theirs them then there these
    they this those through to too under until up very was we were what when where which while
    who whom why will with would you your yours yourself yes maybe please tell know thing
    something anything someone kind sort type""".split()
)

_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalize(text: str) -> str:
    """Lower-case ASCII words separated by single spaces."""
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    text = text.lower().replace("'s ", " ").replace("n't", " not")
    return _NON_WORD.sub(" ", text).strip()


def stem(word: str) -> str:
    """Crude suffix stripping: plural, then -ing/-ed, then a final -e (``waving`` = ``wave``).

    The steps run in a fixed order so that a word and its inflections land on one stem.
    """
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses")):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        word = _undouble(word[:-3])
    elif len(word) > 4 and word.endswith("ed"):
        word = _undouble(word[:-2])
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


def _undouble(word: str) -> str:
    """``stopp`` -> ``stop`` (the doubled consonant of ``stopped``/``running``)."""
    if len(word) > 3 and word[-1] == word[-2] and word[-1] in "bdgmnprt":
        return word[:-1]
    return word


def stems(text: str) -> list[str]:
    """Stemmed words of ``text`` in order."""
    return list(_stems(text))


@functools.lru_cache(maxsize=65536)
def _stems(text: str) -> tuple[str, ...]:
    # scripted users stem the same lexicon phrases for every question: cache them
    return tuple(stem(w) for w in normalize(text).split())


def content_words(text: str, min_len: int = 3) -> list[str]:
    """Stemmed non-stopwords of ``text`` (order kept, duplicates dropped)."""
    seen: dict[str, None] = {}
    for w in normalize(text).split():
        if w not in STOPWORDS and len(w) >= min_len:
            seen.setdefault(stem(w), None)
    return list(seen)


def has_phrase(text_stems: Sequence[str], phrase: str) -> bool:
    """Whether ``phrase`` occurs in the stemmed text as a contiguous run of words."""
    p = stems(phrase)
    # a substring test on the space-joined stems: judges check every keyword against the
    # whole dialogue the agent saw, and a Python loop over word windows was their hot spot
    return bool(p) and f" {' '.join(p)} " in f" {' '.join(text_stems)} "


def group_hit(text_stems: Sequence[str], group: Iterable[str]) -> bool:
    """A keyword group is hit when any of its alternative phrases occurs."""
    return any(has_phrase(text_stems, phrase) for phrase in group)


def groups_hit(text: str, groups: Sequence[Sequence[str]]) -> int:
    """How many keyword groups ``text`` hits."""
    s = stems(text)
    return sum(1 for g in groups if group_hit(s, g))


def parse_groups(spec: str) -> list[list[str]]:
    """``"blind|sight;cane"`` -> ``[["blind", "sight"], ["cane"]]`` (authoring shorthand)."""
    return [[alt.strip() for alt in grp.split("|") if alt.strip()] for grp in spec.split(";") if grp.strip()]
