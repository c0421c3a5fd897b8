"""What an imported TelepathyGym entity's category and description say about it.

The release gives an entity a category ("natural_phenomenon", "marine_animal", ...) and a
one-line description, not the attribute table the scripted user reads
(``_telepathy_rules.LEXICON``: person, animal, man-made, can fly, ...). :func:`attributes`
derives it: the category's kind settles what the entity is and is not (:data:`_KINDS`, so "Is
it an animal?" about a rainbow is "No"), and the description's words settle what it says
outright (:data:`_CUES`: "flies", "marine", "largest"). What neither says stays unknown
("Maybe").
"""

from __future__ import annotations

from userrl.envs.gyms._text import normalize

#: what the category of an imported entity says about the attributes the scripted user reads
#: (``_telepathy_rules.LEXICON``), first match wins; ``None`` leaves an attribute unknown
#: ("Maybe"). Every kind says what it is not, so "Is it an animal?" about a rainbow is "No".
_NOT_LIVING = {"person": False, "animal": False, "plant": False, "alive": False, "alive_today": False}
_KINDS: tuple[tuple[tuple[str, ...], dict[str, bool]], ...] = (
    (
        ("fictional", "cartoon", "superhero", "animated", "video_game_character", "fictional_robot"),
        {"fictional": True, "food": False, "place": False, "plant": False, "electronic": False},
    ),
    (
        ("mythical", "legendary", "vampire", "mythology", "mythical_god", "mythical_hero"),
        {"fictional": True, "food": False, "place": False, "plant": False, "man_made": False, "electronic": False},
    ),
    (
        (
            "person",
            "figure",
            "singer",
            "artist",
            "composer",
            "athlete",
            "scientist",
            "painter",
            "philosopher",
            "author",
            "celebrity",
            "entertainer",
            "leader",
            "mathematician",
            "humanitarian",
            "actor",
            "icon",
            "entrepreneur",
            "personality",
            "religious",
        ),
        {
            "person": True,
            "animal": False,
            "plant": False,
            "object": False,
            "food": False,
            "place": False,
            "man_made": False,
            "electronic": False,
            "fictional": False,
        },
    ),
    (
        ("dinosaur", "extinct", "prehistoric"),
        {
            "animal": True,
            "alive_today": False,
            "person": False,
            "plant": False,
            "man_made": False,
            "food": False,
            "place": False,
            "object": False,
            "electronic": False,
            "fictional": False,
            "historical": True,
        },
    ),
    (
        ("animal", "bird", "fish", "creature", "reptile", "marsupial", "dog_breed", "insect"),
        {
            "animal": True,
            "alive": True,
            "person": False,
            "plant": False,
            "man_made": False,
            "food": False,
            "place": False,
            "object": False,
            "electronic": False,
            "fictional": False,
        },
    ),
    (
        ("fruit", "vegetable"),
        {
            "food": True,
            "plant": True,
            "animal": False,
            "person": False,
            "place": False,
            "man_made": False,
            "electronic": False,
            "object": False,
            "fictional": False,
        },
    ),
    (
        ("food", "dessert", "dish", "beverage", "cuisine", "sweet"),
        {
            "food": True,
            "animal": False,
            "person": False,
            "place": False,
            "alive": False,
            "electronic": False,
            "object": False,
            "fictional": False,
        },
    ),
    (
        ("plant", "flower", "tree"),
        {
            "plant": True,
            "alive": True,
            "animal": False,
            "person": False,
            "man_made": False,
            "place": False,
            "object": False,
            "electronic": False,
            "fictional": False,
        },
    ),
    (
        (
            "city",
            "cities",
            "landmark",
            "monument",
            "museum",
            "building",
            "structure",
            "ancient_site",
            "ancient_city",
            "historical_site",
            "artistic_location",
            "ancient_structure",
            "ancient_wonder",
            "historical_structure",
        ),
        {"place": True, "man_made": True, **_NOT_LIVING, "food": False, "electronic": False, "fictional": False},
    ),
    (
        (
            "mountain",
            "park",
            "country",
            "location",
            "site",
            "waterfall",
            "forest",
            "island",
            "body_of_water",
            "natural_wonder",
            "geographical",
            "geographic",
            "natural_feature",
            "geological",
            "natural_water",
            "natural_park",
            "mysterious_place",
            "fictional_place",
            "place",
        ),
        {
            "place": True,
            "man_made": False,
            "person": False,
            "animal": False,
            "food": False,
            "object": False,
            "electronic": False,
        },
    ),
    (
        (
            "phenomenon",
            "weather",
            "season",
            "celestial",
            "astronomical",
            "planet",
            "galaxy",
            "element",
            "molecule",
            "chemical",
            "process",
            "gemstone",
            "mathematical",
        ),
        {**_NOT_LIVING, "man_made": False, "food": False, "electronic": False, "fictional": False, "object": False},
    ),
    (
        (
            "device",
            "technology",
            "computer",
            "gadget",
            "appliance",
            "console",
            "sci-fi_device",
            "space_artifact",
            "astronomy_technology",
        ),
        {"object": True, "man_made": True, **_NOT_LIVING, "food": False, "place": False, "fictional": False},
    ),
    (
        (
            "vehicle",
            "aircraft",
            "transport",
            "ship",
            "car_brand",
            "invention",
            "tool",
            "utensil",
            "toy",
            "instrument",
            "object",
            "ancient_device",
            "amusement_ride",
        ),
        {"object": True, "man_made": True, **_NOT_LIVING, "food": False, "place": False},
    ),
    (
        (
            "movie",
            "book",
            "novel",
            "song",
            "television",
            "play",
            "literature",
            "artwork",
            "video_game",
            "franchise",
            "ballet",
            "music",
            "game",
            "puzzle",
            "sport",
            "dance",
            "festival",
            "holiday",
            "event",
            "award",
            "language",
            "software",
            "social_media",
            "online_platform",
            "company",
            "brand",
            "performing",
            "performance",
            "activity",
            "period",
            "civilization",
            "symbol",
            "science",
            "astronomy",
            "geography",
            "motorsport",
        ),
        {**_NOT_LIVING, "food": False, "place": False, "object": False, "man_made": True},
    ),
)
#: what the entity's description says outright: attribute -> (words saying yes, words saying no)
_CUES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "can_fly": (
        frozenset("fly flies flying flight wings winged aircraft aerial airborne rotorcraft".split()),
        frozenset(),
    ),
    "in_water": (
        frozenset("marine ocean oceans sea seas aquatic underwater reef river lake swim swims freshwater".split()),
        frozenset(),
    ),
    "big": (
        frozenset("largest giant huge enormous tallest highest massive tons".split()),
        frozenset("insect small tiny handheld pocket".split()),
    ),
    "electronic": (
        frozenset("electronic digital battery wireless computer software internet wi fi smartphone".split()),
        frozenset(),
    ),
}
#: attributes a settled kind answers "no" to unless the description says otherwise
_NO_UNLESS_SAID = ("can_fly", "electronic")


def attributes(category: str, description: str = "") -> dict[str, bool]:
    """The attributes an entity's category settles (:data:`_KINDS`, the first kind whose
    words the category contains), then what its description says outright (:data:`_CUES`:
    "flies", "marine", "largest"); a settled, non-fictional kind that no cue says flies or is
    electronic is not (a hula hoop does not fly)."""
    c = category.lower().replace(" ", "_")
    attrs = next((dict(a) for words, a in _KINDS if any(w in c for w in words)), {})
    said = set(normalize(description).split())
    for attr, (yes, no) in _CUES.items():
        if said & yes:
            attrs[attr] = True
        elif said & no:
            attrs[attr] = False
        elif attrs and not attrs.get("fictional") and attr in _NO_UNLESS_SAID:
            attrs.setdefault(attr, False)
    return attrs
