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
from collections.abc import Callable, Iterable, Sequence

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


#: what introduces examples of one topic ("a format, such as MP4, AVI or MKV")
_EXAMPLES = re.compile(r"\b(?:such as|for example|for instance|e\.g\.|including)\b", re.IGNORECASE)
#: what adds a topic ("the budget and the date") and what offers an alternative or a value
#: of one ("inside or outside", "new, used or refurbished")
_AND = re.compile(r"[;&]|\b(?:and|plus|as well as)\b", re.IGNORECASE)
_OR = re.compile(r",|\bor\b", re.IGNORECASE)
#: a question sentence: what a question asks is in the sentences ending with "?"
_QUESTION = re.compile(r"[^.!?]*\?")
_DETERMINERS = frozenset("the a an your my any some this that these those their our its".split())
#: the longest part after a join that still counts as a bare topic ("the date", "a paid one")
BARE_WORDS = 3


def bare_parts(text: str, shown: Sequence[str] = ()) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """A question's topics, as stems: the end of its first part (the words after the frame:
    "could you tell me about *the budget*"), and the bare topics it adds after it, before any
    examples ("such as"): parts of at most :data:`BARE_WORDS` words (determiners aside) with a
    content word not in ``shown``; those added with "and" (a list of topics: "... the budget
    and *the date*?") and those offered with "or" or a comma (alternatives or values of one
    topic: "... inside or *outside*?"). A longer part is a clause of its own, not a bare
    topic. Returns (first part's last words, added, offered)."""
    seen = set(shown)
    head: list[str] = []
    added: list[list[str]] = []
    offered: list[list[str]] = []
    asked = [q for q in _QUESTION.findall(text) if q.strip()] or [text]
    for i, chunk in enumerate(_AND.split(" ".join(_EXAMPLES.split(q)[0] for q in asked))):
        for j, part in enumerate(_OR.split(chunk)):
            words = [w for w in normalize(part).split() if w not in _DETERMINERS]
            if not (i or j):
                head = stems(" ".join(words[-BARE_WORDS:]))
            elif 1 <= len(words) <= BARE_WORDS and any(w not in seen for w in content_words(part)):
                (offered if j else added).append(stems(part))
    return head, added, offered


def is_sweep(
    text: str,
    theirs: Callable[[list[str]], bool],
    own: Sequence[str],
    common: Sequence[Sequence[str]],
    shown: Sequence[str] = (),
) -> bool:
    """Whether a question sweeps topics instead of asking one: it lists topics with "and" and
    the first or an added one is none of the user's (``theirs(stems)`` is false); or a topic it
    names first, or offers
    as an alternative, beside other topics, is one of the ``common`` topics (keyword groups
    such as budget|cost|price) none of whose phrases the user's own words (``own``: stems of
    their details) use. Alternatives that name no common topic ("wired or wireless") are
    values of one topic."""
    head, added, offered = bare_parts(text, shown)
    if added and any(not theirs(part) for part in [*added, *([head] if head else [])]):  # each theirs
        return True
    foreign = [part for part in ([head] if added or offered else []) + offered]
    return any(group_hit(part, g) and not group_hit(own, g) for part in foreign for g in common)


_ASKING = frozenset(
    """what which how when where who whom whose why do does did is are was were would could can
    will should shall may might any have has""".split()
)
_REQUESTS = ("tell me", "tell us", "please tell", "let me know", "let us know", "please let", "please share")


def is_question(text: str) -> bool:
    """Whether ``text`` asks something: it has a question mark, or it starts with a question
    word ("what", "do", "could") or a request ("tell me", "let me know"). A bag of keywords
    does neither."""
    words = normalize(text).split()
    return "?" in text or bool(words) and (words[0] in _ASKING or " ".join(words[:2]) in _REQUESTS)


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
