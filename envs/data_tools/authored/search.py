"""Authored SearchGym world (source of ``envs/data/search/{corpus,train,test}.jsonl``).

The document collection describes a small fictional world (countries, cities, people,
companies, inventions) generated from name syllables with a fixed seed, so no question can be
answered from a model's prior knowledge: the agent has to search. Questions are 1- to 3-hop
chains over the facts ("In which city was the founder of X born?"); each carries the search
queries the scripted expert uses and the documents that support the answer.
"""

from __future__ import annotations

import random
from typing import Any

SYL = (
    "ka ri to vel mar sen dro lin ast bel cor fen gal hin jor kel lum nor pra quin ros "
    "tal ur vin wes yor zan bra del fir gor hal ith mon"
).split()
PROFESSIONS = (
    "engineer",
    "chemist",
    "architect",
    "physician",
    "astronomer",
    "merchant",
    "botanist",
    "composer",
    "shipbuilder",
    "mathematician",
)
PRODUCTS = (
    "steam looms",
    "glass lenses",
    "bicycles",
    "typewriters",
    "sewing machines",
    "porcelain",
    "telescopes",
    "river barges",
    "pocket watches",
    "printing presses",
    "wind pumps",
    "radio sets",
    "canned fish",
    "paper lanterns",
    "copper wire",
    "rail carriages",
    "fountain pens",
    "tin toys",
    "wool blankets",
    "ice boxes",
    "pianos",
    "bells",
    "maps",
    "soap",
)
PURPOSES = (
    "measuring the depth of lakes",
    "sorting mail",
    "cooling bread ovens",
    "signalling ships at night",
    "weighing grain",
    "spinning silk",
    "drying fruit",
    "lighting mine shafts",
    "copying letters",
    "pumping water uphill",
    "keeping time at sea",
    "preserving milk",
    "tuning bells",
    "counting votes",
    "grinding lenses",
    "forecasting frost",
)
INVENTION_NOUNS = (
    "gauge",
    "sorter",
    "regulator",
    "lamp",
    "balance",
    "spindle",
    "kiln",
    "lantern",
    "press",
    "pump",
    "clock",
    "churn",
    "fork",
    "tally",
    "lathe",
    "barometer",
)
RIVERS_SUFFIX = "River"
CURRENCIES = ("crown", "mark", "florin", "thaler", "ducat", "real")
LANGUAGES = ("Velish", "Marric", "Ostran", "Belunian", "Corvic", "Talish")


class _Names:
    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set()

    def make(self, parts: int = 2) -> str:
        while True:
            name = "".join(self.rng.choice(SYL) for _ in range(parts)).capitalize()
            if name not in self.used and len(name) >= 5:
                self.used.add(name)
                return name


def _world(rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    names = _Names(rng)
    countries = [
        {"name": names.make(3), "currency": cur, "language": lang}
        for cur, lang in zip(CURRENCIES, LANGUAGES, strict=True)
    ]
    cities = []
    for i in range(18):
        c = countries[i % len(countries)]
        cities.append(
            {
                "name": names.make(2) + rng.choice(["", "burg", "port", "holm", "ford"]),
                "country": c["name"],
                "river": f"{names.make(2)} {RIVERS_SUFFIX}",
                "founded": rng.randint(900, 1600),
            }
        )
    for c in countries:
        c["capital"] = next(x["name"] for x in cities if x["country"] == c["name"])
    people = [
        {
            "name": f"{names.make(2)} {names.make(2)}",
            "born_in": rng.choice(cities)["name"],
            "born": rng.randint(1780, 1900),
            "profession": PROFESSIONS[i % len(PROFESSIONS)],
        }
        for i in range(36)
    ]
    companies = [
        {
            "name": f"{names.make(2)} {rng.choice(['Works', 'Company', 'Brothers', 'Guild'])}",
            "founder": people[i]["name"],
            "founded": people[i]["born"] + rng.randint(22, 45),
            "hq": rng.choice(cities)["name"],
            "product": PRODUCTS[i],
        }
        for i in range(len(PRODUCTS))
    ]
    inventions = [
        {
            "name": f"{names.make(2)} {INVENTION_NOUNS[i]}",
            "inventor": people[24 + i % 12]["name"],
            "year": people[24 + i % 12]["born"] + rng.randint(20, 50),
            "purpose": PURPOSES[i],
        }
        for i in range(len(INVENTION_NOUNS))
    ]
    return {
        "countries": countries,
        "cities": cities,
        "people": people,
        "companies": companies,
        "inventions": inventions,
    }


def _docs(w: dict[str, list[dict[str, Any]]]) -> list[dict[str, str]]:
    docs = []
    for c in w["countries"]:
        docs.append(
            (
                c["name"],
                f"{c['name']} is a country whose capital is {c['capital']}. Its "
                f"currency is the {c['name']} {c['currency']} and most people speak {c['language']}.",
            )
        )
    for c in w["cities"]:
        docs.append(
            (
                c["name"],
                f"{c['name']} is a city in {c['country']}, founded in {c['founded']}. "
                f"The {c['river']} flows through {c['name']}.",
            )
        )
    for p in w["people"]:
        made = [x["name"] for x in w["companies"] if x["founder"] == p["name"]]
        made += [f"the {x['name']}" for x in w["inventions"] if x["inventor"] == p["name"]]
        extra = f" {p['name'].split()[1]} is remembered for {' and '.join(made)}." if made else ""
        docs.append((p["name"], f"{p['name']} (born {p['born']} in {p['born_in']}) was a {p['profession']}.{extra}"))
    for x in w["companies"]:
        docs.append(
            (
                x["name"],
                f"{x['name']} is a maker of {x['product']}, founded in "
                f"{x['founded']} by {x['founder']}. Its headquarters are in {x['hq']}.",
            )
        )
    for x in w["inventions"]:
        docs.append(
            (x["name"], f"The {x['name']} is a device for {x['purpose']}, invented in {x['year']} by {x['inventor']}.")
        )
    return [{"id": f"doc-{i + 1:03d}", "title": t, "text": s} for i, (t, s) in enumerate(docs)]


def _questions(w: dict[str, list[dict[str, Any]]], rng: random.Random) -> list[dict[str, Any]]:
    city = {c["name"]: c for c in w["cities"]}
    person = {p["name"]: p for p in w["people"]}
    country = {c["name"]: c for c in w["countries"]}
    qs: list[dict[str, Any]] = []
    for x in w["companies"]:
        f = person[x["founder"]]
        qs.append(
            {
                "question": f"In which city was the founder of {x['name']} born?",
                "answer": f["born_in"],
                "queries": [f"{x['name']} founder", f"{f['name']} born"],
            }
        )
        qs.append(
            {
                "question": f"Which river flows through the city where the maker of "
                f"{x['product']} named {x['name']} has its headquarters?",
                "answer": city[x["hq"]]["river"],
                "queries": [f"{x['name']} headquarters", f"{x['hq']} river"],
            }
        )
        qs.append(
            {
                "question": f"Who founded the company best known for making {x['product']}?",
                "answer": x["founder"],
                "queries": [f"maker of {x['product']} founded"],
            }
        )
    for x in w["inventions"]:
        p = person[x["inventor"]]
        qs.append(
            {
                "question": f"In what year was the inventor of the {x['name']} born?",
                "answer": str(p["born"]),
                "queries": [f"{x['name']} invented", f"{p['name']} born"],
            }
        )
        c = country[city[p["born_in"]]["country"]]
        qs.append(
            {
                "question": f"What currency is used in the country where the inventor of the "
                f"device for {x['purpose']} was born?",
                "answer": f"{c['name']} {c['currency']}",
                "aliases": [c["currency"]],
                "queries": [
                    f"device for {x['purpose']}",
                    f"{p['name']} born",
                    f"{p['born_in']} city country",
                    f"{c['name']} currency",
                ],
            }
        )
    for c in w["countries"]:
        qs.append(
            {
                "question": f"What language do most people speak in the country whose capital is {c['capital']}?",
                "answer": c["language"],
                "queries": [f"{c['capital']} city country", f"{c['name']} language"],
            }
        )
    rng.shuffle(qs)
    return qs


def build(seed: int) -> tuple[list[dict[str, str]], dict[str, list[dict[str, Any]]]]:
    """The corpus and the questions per split: every fourth *answer* goes to test with all its
    questions, so no test answer is a training answer (a policy that memorized the training
    answers and tried them one by one would score on test without searching)."""
    rng = random.Random(seed)
    world = _world(rng)
    out: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    groups: dict[str, int] = {}
    for q in _questions(world, rng):
        key = (q.get("aliases") or [q["answer"]])[0]
        g = groups.setdefault(key, len(groups))
        split = "test" if g % 4 == 3 else "train"
        out[split].append({"id": f"search-{split}-{len(out[split]) + 1:03d}", "aliases": [], **q})
    return _docs(world), out
