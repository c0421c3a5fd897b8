"""A small English lexicon for the scripted story judges: word families a lexical matcher
should treat as one ("chasing" confirms "pursuing"; a murder confirms a death).

TurtleGym's scripted host answers yes/no questions and grades explanations by matching words;
stories say the same thing in other words than their checklist ("The killer was chasing me"
for "the killer pursues the protagonist"). :func:`expansions` gives, for a word, the words that
confirm it: its own family, and the families that imply it (a killing, a suicide or a drowning
implies a death, not the other way round). Families are written as plain words; matching
stems them (:mod:`._text`).
"""

from __future__ import annotations

import functools

from userrl.envs.gyms._text import stem

FAMILIES: dict[str, str] = {
    "die": "die died dies dying dead death deaths deceased lifeless",
    "kill": "kill killed kills killing killer murder murdered murders murderer slay slain homicide",
    "suicide": "suicide",
    "drown": "drown drowned drowning",
    "poison": "poison poisoned poisoning poisonous toxic",
    "shoot": "shoot shot shooting gun pistol rifle bullet",
    "stab": "stab stabbed knife blade",
    "chase": "chase chased chasing pursue pursued pursuing pursuit follow followed following",
    "hide": "hide hid hidden hiding",
    "see": "see saw seen seeing witness witnessed notice noticed spot spotted",
    "sound": "sound noise noisy loud heard hear hearing",
    "fear": "fear feared afraid scared frightened terrified panic panicked",
    "body": "body corpse remains",
    "blind": "blind blindness sight",
    "ghost": "ghost spirit phantom haunted",
    "dream": "dream dreamed dreaming nightmare",
    "sleep": "sleep slept asleep sleeping",
    "steal": "steal stole stolen theft thief rob robbed robbery burglar",
    "lie": "lie lied lying liar deceive deceived deception trick tricked",
    "accident": "accident accidental accidentally",
    "mother": "mother mom mum",
    "father": "father dad",
    "spouse": "spouse husband wife married marriage",
    "child": "child children kid kids son daughter baby",
    "lover": "lover girlfriend boyfriend affair",
    "police": "police policeman officer cop detective",
    "doctor": "doctor hospital nurse surgeon",
    "sick": "sick ill illness disease",
    "phone": "phone call called calling",
    "fire": "fire burn burned burning burnt flame",
    "fall": "fall fell falling jump jumped",
    "car": "car drive drove driving driver vehicle",
    "sea": "sea ocean water",
    "money": "money cash rich wealthy poor",
    "grave": "grave cemetery funeral buried bury tomb",
    "jail": "jail prison prisoner",
    "twin": "twin twins",
    "home": "home house apartment",
    "neighbor": "neighbor neighbour",
    "eat": "eat ate eaten eating meal food",
    "cut": "cut cutting",
    "revenge": "revenge avenge vengeance",
    "pregnant": "pregnant pregnancy",
}
#: family -> families it confirms ("the killer" answers "did someone die?")
IMPLIES: dict[str, tuple[str, ...]] = {
    "kill": ("die",),
    "suicide": ("die",),
    "drown": ("die",),
    "grave": ("die",),
    "body": ("die",),
    "shoot": ("kill",),
    "stab": ("kill",),
}


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, list[str]]:
    family_of: dict[str, str] = {}
    for name, words in FAMILIES.items():
        for w in words.split():
            family_of.setdefault(stem(w), name)
    confirmed_by: dict[str, list[str]] = {name: [name] for name in FAMILIES}
    for name, implied in IMPLIES.items():
        for target in implied:
            confirmed_by[target].append(name)
    return {s: [w for fam in confirmed_by[name] for w in FAMILIES[fam].split()] for s, name in family_of.items()}


def expansions(word: str) -> list[str]:
    """The words that confirm ``word``: its family and the families implying it (none when
    the word is in no family)."""
    return list(_index().get(stem(word), []))
