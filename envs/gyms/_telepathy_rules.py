"""The scripted TelepathyGym user: yes/no answers and guess judging from task data.

Matching rules (all on stemmed words, see :mod:`userrl.envs.gyms._text`):

1. A question naming the entity (title or a synonym) is answered ``Yes``.
2. A comparison's object is dropped ("bigger than a person" -> "bigger"). Then conditions are
   read off the question, each word used at most once, in this order:
   - *tags*: a task tag phrase (or its category) in the question ("savanna", "long neck") is
     true;
   - *attribute phrases* (``LEXICON``): "alive", "made by humans", "fly", "bigger", ... map to
     a boolean attribute of the task (some phrases invert it: "small" is not "big"); an
     attribute the task does not have is unknown;
   - *closed vocabulary* (colours, continents, countries, animal classes, professions,
     materials, domains): a term from ``VOCAB`` that is not among the task's tags is false.
3. Any false condition -> ``No``; else any true -> ``Yes``; else any unknown -> ``Maybe``;
   nothing recognized -> ``No`` if the question has content words, else ``Maybe``.
   Negations ("isn't it ...") are not interpreted.

Guesses are correct when the guess, with filler like "I think it is" ignored, contains the
title or a synonym as whole words, does not hedge between several candidates (split on ``,``
``;`` ``/`` and `` or ``), and says nothing else: every content word of the guess must belong
to the entity's names or its category (so ``cat dog giraffe`` is wrong even for the giraffe).
"""

from __future__ import annotations

import re
from typing import Any

from userrl.envs.gyms._text import content_words, has_phrase, normalize, stems

#: (attribute, phrases, inverted): phrases are checked in this order
LEXICON: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    (
        "alive_today",
        ("still alive", "alive today", "living today", "currently alive", "still living", "alive now"),
        False,
    ),
    (
        "man_made",
        (
            "man made",
            "manmade",
            "human made",
            "made by human",
            "made by people",
            "made by person",
            "artificial",
            "manufactured",
            "invented",
            "invention",
            "built by",
            "handmade",
            "created by human",
        ),
        False,
    ),
    (
        "fictional",
        (
            "fictional",
            "fiction",
            "imaginary",
            "made up",
            "myth",
            "mythical",
            "mythological",
            "legend",
            "legendary",
            "fantasy",
            "cartoon",
        ),
        False,
    ),
    ("fictional", ("real", "exist", "existed", "really exist"), True),
    (
        "person",
        (
            "a person",
            "a real person",
            "human being",
            "a human",
            "a man",
            "a woman",
            "someone",
            "somebody",
            "an individual",
            "he",
            "she",
            "him",
            "her",
        ),
        False,
    ),
    ("animal", ("animal", "creature", "beast", "wildlife"), False),
    ("plant", ("plant", "vegetation", "botanical"), False),
    ("in_water", ("water", "sea", "ocean", "swim", "aquatic", "underwater", "river", "lake", "marine"), False),
    ("can_fly", ("fly", "flying", "wing", "airborne"), False),
    ("alive", ("alive", "living", "live", "organism", "breathe"), False),
    ("place", ("place", "location", "somewhere", "visit", "destination", "travel to"), False),
    ("food", ("food", "eat", "edible", "eaten", "dish", "meal", "drink", "taste", "cook"), False),
    ("electronic", ("electronic", "electricity", "electric", "battery", "digital", "plug in", "charge"), False),
    ("big", ("bigger", "larger", "big", "large", "huge", "giant", "enormous", "heavy"), False),
    ("big", ("small", "smaller", "tiny", "little", "fit in", "pocket", "hold in", "handheld"), True),
    (
        "historical",
        ("historical", "history", "ancient", "old", "century", "centuries", "past", "medieval", "died", "dead"),
        False,
    ),
    ("historical", ("modern", "recent", "new", "contemporary", "today", "nowadays", "current"), True),
    ("object", ("object", "item", "tool", "device", "gadget", "product"), False),
    ("famous", ("famous", "well known", "popular", "celebrity"), False),
)

#: closed vocabulary: mentioned but not tagged -> the condition is false
VOCAB: tuple[str, ...] = tuple(
    """red orange yellow green blue purple pink brown black white gray grey gold silver
    africa europe asia america north america south america australia antarctica oceania
    usa united states england britain france germany italy china japan india egypt greece
    russia spain mexico brazil canada peru
    mammal bird fish insect reptile amphibian tree flower fruit vegetable dessert
    scientist inventor artist painter writer author poet musician composer singer actor king
    queen emperor president explorer athlete leader philosopher
    metal wood plastic glass stone paper
    sport music art science vehicle instrument weather planet star game toy furniture
    clothing building city country mountain river island desert jungle forest""".split()
)
VOCAB = tuple(sorted(set(VOCAB) | {"north america", "south america", "united states"}, key=len, reverse=True))

#: words a plain guess may use besides the entity's names ("my final answer is ...")
_GUESS_WORDS = frozenset(stems("think guess believe answer final say sure certain"))
BOOL_ATTRS: tuple[str, ...] = tuple(dict.fromkeys(a for a, _, _ in LEXICON))
_SPLIT = re.compile(r",|;|/|\bor\b", re.IGNORECASE)
_FILLER = re.compile(
    r"^(?:(?:i think|i guess|i believe|my guess is|my answer is|the answer is|the entity is|"
    r"you are thinking of|you re thinking of|it is|it s|is it|it must be|maybe|perhaps)\s+)+"
)


def names(task: dict[str, Any]) -> list[str]:
    """The title and its synonyms (what counts as naming the entity)."""
    out = [str(task.get("title", ""))] + [str(s) for s in task.get("synonyms", [])]
    return [n for n in out if normalize(n)]


def _tag_phrases(task: dict[str, Any]) -> list[str]:
    category = str(task.get("category", "")).replace("_", " ")
    return [str(t) for t in task.get("tags", [])] + [category] + category.split()


def _take(q: list[str], free: list[bool], phrase: str) -> bool:
    """Find ``phrase`` among the not-yet-used words of ``q`` and mark its words used.

    Using each word once keeps "man-made" from also counting as "man" (a person).
    """
    p = stems(phrase)
    n = len(p)
    for i in range(len(q) - n + 1):
        if n and q[i : i + n] == p and all(free[i : i + n]):
            free[i : i + n] = [False] * n
            return True
    return False


def answer_question(task: dict[str, Any], question: str) -> str:
    """``Yes`` / ``No`` / ``Maybe`` by the rules in the module docstring."""
    q = stems(question)
    if any(has_phrase(q, n) for n in names(task)):
        return "Yes"
    if "than" in q:  # "bigger than a person": the comparison's object is not a condition
        q = q[: q.index("than")]
    free = [True] * len(q)
    conds: list[bool | None] = [True for t in _tag_phrases(task) if _take(q, free, t)]
    attrs = task.get("attributes", {})
    used: set[str] = set()
    for attr, phrases, inverted in LEXICON:
        if attr in used or not any(_take(q, free, p) for p in phrases):
            continue
        used.add(attr)
        value = attrs.get(attr)
        conds.append(None if value is None else bool(value) != inverted)
    conds.extend(False for term in VOCAB if _take(q, free, term))
    if any(c is False for c in conds):
        return "No"
    if any(c is True for c in conds):
        return "Yes"
    if conds:
        return "Maybe"
    return "No" if content_words(question) else "Maybe"


def judge_guess(task: dict[str, Any], guess: str) -> bool:
    """Whether ``guess`` names the entity (see the module docstring)."""
    whole = normalize(guess)
    if any(whole == normalize(n) for n in names(task)):
        return True
    parts = [_FILLER.sub("", normalize(p)) for p in _SPLIT.split(guess)]
    parts = [p for p in parts if p]
    if len(parts) != 1:
        return False
    g = stems(parts[0])
    if not any(has_phrase(g, n) for n in names(task)):
        return False
    allowed = {w for n in names(task) for w in stems(n)}
    allowed |= set(stems(str(task.get("category", "")).replace("_", " "))) | _GUESS_WORDS
    return all(w in allowed for w in content_words(parts[0]))


def kind_phrase(task: dict[str, Any]) -> str:
    """``a famous person`` / ``an animal``: the task's category as a question phrase."""
    kind = str(task.get("category", "thing")).replace("_", " ").strip() or "thing"
    article = "an" if kind[0] in "aeiou" else "a"
    return f"{article} {kind}"
