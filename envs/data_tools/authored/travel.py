"""Authored TravelGym aspects and preferences (source of ``envs/data/travel/*.jsonl``).

Per aspect: the option-id prefix, the features an option has (each with its possible
values) and a pool of hidden preferences ``(feature, accepted values, what the user says,
keywords, the expert's question)``. The user's statement is deliberately implicit ("I'm
bringing a big suitcase") so the agent has to interpret it. ``build`` samples tasks with a
fixed seed: a variant (preferences per aspect), aspects, preferences whose keywords do not
collide, and a catalog of 8 options per aspect with exactly one best option (the cheapest
that satisfies every preference), two acceptable ones (satisfying, dearer) and five wrong
ones (each violating a preference; some are cheaper than the best, as traps).
"""

from __future__ import annotations

import random
from typing import Any

from userrl.envs.gyms._text import group_hit, stems

Pref = tuple[str, list[str], str, list[str], str]
ASPECTS: dict[str, dict[str, Any]] = {
    "flight": {
        "prefix": "F",
        "price": (90, 600),
        "features": {
            "airline": ["SkyJet", "AeroNova", "BlueWing", "Polar Air"],
            "stops": ["nonstop", "1 stop", "2 stops"],
            "departs": [
                "early morning (06:40)",
                "mid-morning (09:15)",
                "afternoon (14:30)",
                "evening (19:05)",
                "overnight (23:50)",
            ],
            "checked bag": ["included", "not included"],
            "wifi": ["yes", "no"],
            "cabin": ["economy", "premium economy"],
        },
        "prefs": [
            (
                "stops",
                ["nonstop"],
                "Long layovers wear me out; I'd rather board once and get off at my destination.",
                ["stop", "layover", "direct", "connection", "nonstop"],
                "Do you mind stops or layovers on the flight?",
            ),
            (
                "departs",
                ["mid-morning (09:15)", "afternoon (14:30)"],
                "I'm not a morning person, but I want to land well before dinner.",
                ["time", "depart", "departure", "schedule"],
                "What departure time suits you?",
            ),
            (
                "checked bag",
                ["included"],
                "I'm bringing a big suitcase that won't fit in the cabin.",
                ["bag", "luggage", "suitcase", "baggage"],
                "Will you be bringing luggage?",
            ),
            (
                "wifi",
                ["yes"],
                "I have to keep answering work emails while I'm in the air.",
                ["wifi", "wi fi", "internet", "email"],
                "Do you need internet access during the flight?",
            ),
            (
                "airline",
                ["BlueWing", "Polar Air"],
                "I collect miles with the Northern Alliance, which BlueWing and Polar Air belong to.",
                ["airline", "miles", "loyalty", "carrier"],
                "Do you have an airline preference?",
            ),
            (
                "cabin",
                ["premium economy"],
                "My knees need more legroom than a standard seat gives.",
                ["cabin", "class", "legroom"],
                "Which cabin class would you like?",
            ),
        ],
    },
    "hotel": {
        "prefix": "H",
        "price": (60, 420),
        "features": {
            "stars": ["2 stars", "3 stars", "4 stars", "5 stars"],
            "parking": ["free", "paid", "none"],
            "breakfast": ["included", "not included"],
            "area": ["city centre", "old town", "airport", "suburbs"],
            "gym": ["yes", "no"],
            "pets": ["allowed", "not allowed"],
        },
        "prefs": [
            (
                "parking",
                ["free"],
                "I'm driving there in my own car and I don't want to pay just to leave it somewhere.",
                ["parking", "park"],
                "Will you need parking at the hotel?",
            ),
            (
                "breakfast",
                ["included"],
                "I can't start my day without eating something before I head out.",
                ["breakfast"],
                "Would you like breakfast included?",
            ),
            (
                "area",
                ["city centre", "old town"],
                "I want to be able to walk to the sights in the evening.",
                ["location", "area", "neighborhood", "neighbourhood"],
                "Which area would you like to stay in?",
            ),
            (
                "stars",
                ["4 stars", "5 stars"],
                "I want somewhere comfortable, not a budget place.",
                ["star", "comfort", "quality"],
                "What quality level do you expect from the hotel?",
            ),
            (
                "pets",
                ["allowed"],
                "My dog is coming along with me.",
                ["pet", "dog", "animal"],
                "Are you travelling with a pet?",
            ),
            (
                "gym",
                ["yes"],
                "I never skip my morning workout, even on holiday.",
                ["gym", "fitness", "workout", "exercise"],
                "Do you need a gym at the hotel?",
            ),
        ],
    },
    "apartment": {
        "prefix": "A",
        "price": (70, 380),
        "features": {
            "bedrooms": ["1 bedroom", "2 bedrooms", "3 bedrooms"],
            "kitchen": ["full kitchen", "kitchenette"],
            "washer": ["yes", "no"],
            "balcony": ["yes", "no"],
            "check-in": ["self check-in", "reception 9:00-18:00"],
        },
        "prefs": [
            (
                "bedrooms",
                ["2 bedrooms", "3 bedrooms"],
                "The kids really need a room of their own.",
                ["bedroom", "room", "sleep"],
                "How many bedrooms do you need?",
            ),
            (
                "kitchen",
                ["full kitchen"],
                "We'd like to cook our own dinners most nights.",
                ["kitchen", "cook"],
                "Do you plan to cook in the apartment?",
            ),
            (
                "washer",
                ["yes"],
                "We're packing light, so we will have to do laundry.",
                ["laundry", "washer", "washing"],
                "Will you need a washing machine?",
            ),
            (
                "balcony",
                ["yes"],
                "I love having my coffee in the fresh air.",
                ["balcony", "outdoor", "terrace"],
                "Would you like a balcony?",
            ),
            (
                "check-in",
                ["self check-in"],
                "Our train gets in close to midnight.",
                ["check in", "arrive", "arrival", "key"],
                "When will you arrive to check in?",
            ),
        ],
    },
    "rental_car": {
        "prefix": "C",
        "price": (25, 160),
        "features": {
            "type": ["compact", "sedan", "SUV", "minivan"],
            "transmission": ["automatic", "manual"],
            "mileage": ["unlimited", "200 km/day"],
            "fuel": ["petrol", "diesel", "hybrid", "electric"],
            "insurance": ["included", "extra"],
        },
        "prefs": [
            (
                "transmission",
                ["automatic"],
                "I never learned to drive with a clutch.",
                ["transmission", "automatic", "manual", "gear"],
                "Do you prefer an automatic or a manual?",
            ),
            (
                "mileage",
                ["unlimited"],
                "We plan long road trips almost every day.",
                ["mileage", "distance", "how far", "kilometer"],
                "How much distance do you expect to drive?",
            ),
            (
                "fuel",
                ["hybrid", "electric"],
                "I try hard to keep my carbon footprint low.",
                ["fuel", "electric", "hybrid", "petrol", "environment"],
                "Do you have a fuel preference?",
            ),
            (
                "insurance",
                ["included"],
                "I don't want surprise charges if something gets scratched.",
                ["insurance", "coverage", "damage"],
                "Would you like insurance included?",
            ),
            (
                "type",
                ["SUV", "minivan"],
                "There will be five of us plus all our bags.",
                ["size", "type of car", "vehicle", "big"],
                "What size of vehicle do you need?",
            ),
        ],
    },
    "restaurant": {
        "prefix": "R",
        "price": (15, 120),
        "features": {
            "cuisine": ["Italian", "Japanese", "Mexican", "Indian", "French"],
            "vegetarian dishes": ["many", "few"],
            "seating": ["indoor only", "indoor and patio"],
            "children": ["kids' menu", "adults only"],
            "noise": ["quiet", "lively"],
        },
        "prefs": [
            (
                "vegetarian dishes",
                ["many"],
                "I don't eat meat at all.",
                ["vegetarian", "diet", "meat", "dietary"],
                "Do you have any dietary restrictions?",
            ),
            (
                "cuisine",
                ["Japanese", "Indian"],
                "I'm craving something from Asia.",
                ["cuisine", "kind of food", "type of food"],
                "What kind of cuisine do you like?",
            ),
            (
                "seating",
                ["indoor and patio"],
                "It would be lovely to eat outside if the weather is nice.",
                ["outside", "patio", "seating", "weather"],
                "Do you prefer to sit inside or outside?",
            ),
            (
                "children",
                ["kids' menu"],
                "My two toddlers are coming along.",
                ["kid", "child", "children", "toddler"],
                "Will children be joining you?",
            ),
            (
                "noise",
                ["quiet"],
                "I want to be able to talk without shouting.",
                ["quiet", "noise", "atmosphere", "ambience"],
                "What atmosphere do you prefer?",
            ),
        ],
    },
}
PHRASES = {
    "flight": "a one-way flight from {origin} to {city} on {start}",
    "hotel": "a hotel in {city} from {start} to {end}",
    "apartment": "an apartment in {city} from {start} to {end}",
    "rental_car": "a rental car in {city} for the whole stay",
    "restaurant": "a dinner reservation in {city} on {start}",
}
CITIES = [
    "Lisbon",
    "Austin",
    "Kyoto",
    "Vienna",
    "Montreal",
    "Seville",
    "Boston",
    "Prague",
    "Melbourne",
    "Denver",
    "Edinburgh",
    "Oslo",
]
ORIGINS = ["New York", "Chicago", "London", "Toronto", "Berlin", "Madrid"]
MONTHS = ["March", "April", "May", "June", "September", "October", "November"]
VARIANTS = ["22", "33", "44", "233", "333", "334", "444", "2222", "23", "32"]
BUDGET = (
    "Also my budget is limited so as long as my preferences are satisfied, I would also "
    "like to choose the cheapest option for each."
)


def _collide(prefs: list[dict[str, Any]]) -> bool:
    """Whether some preference's question (or keyword) reveals another one too."""
    for i, p in enumerate(prefs):
        for text in [p["question"], *p["keywords"]]:
            s = stems(text)
            if any(group_hit(s, q["keywords"]) for j, q in enumerate(prefs) if j != i):
                return True
    return False


def _options(rng: random.Random, aspect: str, prefs: list[dict[str, Any]]) -> dict[str, Any]:
    spec = ASPECTS[aspect]
    lo, hi = spec["price"]
    ok = {p["feature"]: p["accepts"] for p in prefs}

    def make(violate: str | None) -> dict[str, str]:
        f = {}
        for name, values in spec["features"].items():
            good = ok.get(name, values)
            pool = [v for v in values if v not in good] if name == violate else good
            f[name] = rng.choice(pool)
        return f

    best_price = rng.randint(lo + 20, (lo + hi) // 2)
    rows = [("best", make(None), best_price)]
    rows += [("acceptable", make(None), best_price + rng.randint(15, 90)) for _ in range(2)]
    feats = list(ok)
    for k in range(5):
        price = best_price - rng.randint(5, 20) if k < 2 else best_price + rng.randint(-10, 120)
        rows.append(("wrong", make(feats[k % len(feats)]), max(lo, price)))
    numbers = rng.sample(range(1, 30), len(rows))
    options = [
        {"id": f"{spec['prefix']}{n}", "price": price, "features": f}
        for n, (_, f, price) in zip(numbers, rows, strict=True)
    ]
    labels = {o["id"]: lab for o, (lab, _, _) in zip(options, rows, strict=True)}
    rng.shuffle(options)
    return {
        "options": options,
        "best": [i for i, v in labels.items() if v == "best"],
        "acceptable": [i for i, v in labels.items() if v == "acceptable"],
    }


def _task(rng: random.Random) -> dict[str, Any]:
    variant = rng.choice(VARIANTS)
    while True:
        aspects = rng.sample(list(ASPECTS), len(variant))
        if not {"hotel", "apartment"} <= set(aspects):
            break
    aspects.sort(key=list(ASPECTS).index)
    while True:
        prefs = []
        for aspect, n in zip(aspects, variant, strict=True):
            for feat, accepts, say, kws, q in rng.sample(ASPECTS[aspect]["prefs"], int(n)):
                prefs.append(
                    {
                        "aspect": aspect,
                        "feature": feat,
                        "accepts": accepts,
                        "statement": say,
                        "keywords": kws,
                        "question": q,
                    }
                )
        if not _collide(prefs):
            break
    city, month = rng.choice(CITIES), rng.choice(MONTHS)
    day = rng.randint(1, 20)
    fill = {
        "city": city,
        "origin": rng.choice(ORIGINS),
        "start": f"{month} {day}",
        "end": f"{month} {day + rng.randint(3, 8)}",
    }
    parts = [PHRASES[a].format(**fill) for a in aspects]
    request = f"I am planning a trip to {city}. I need {', '.join(parts[:-1])}"
    request += f" and {parts[-1]}." if len(parts) > 1 else f"{parts[0]}."
    catalog = {a: _options(rng, a, [p for p in prefs if p["aspect"] == a]) for a in aspects}
    return {
        "variant": variant,
        "request": f"{request}\n{BUDGET}",
        "aspects": aspects,
        "preferences": prefs,
        "catalog": catalog,
    }


def build(seed: int, n_train: int = 45, n_test: int = 15) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    return {
        split: [{"id": f"travel-{split}-{i + 1:03d}", **_task(rng)} for i in range(n)]
        for split, n in (("train", n_train), ("test", n_test))
    }
