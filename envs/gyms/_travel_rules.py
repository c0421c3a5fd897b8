"""TravelGym's scripted user, catalog search and answer scoring (pure functions of the task)."""

from __future__ import annotations

import json
import random
import re
from typing import Any

from userrl.envs.gyms._common import dialogue_text, parse_json_object
from userrl.envs.gyms._text import content_words, group_hit, is_question, is_sweep, parse_groups, stems
from userrl.sim_users.base import UserQuery, reply_object

Task = dict[str, Any]
#: consecutive off-topic turns after which the user volunteers a preference on the next one
#: (UserRL's ``elicitation_interval``: 3, so the 4th off-topic turn volunteers)
OFF_TOPIC_LIMIT = 3
ANSWER_SCORES = {"best": 1.0, "acceptable": 0.8, "wrong": 0.0}
#: a message with more content words than this is a keyword list, not a question
MAX_MESSAGE_WORDS = 15
#: a message touching more preferences than this at once is a keyword list
MAX_TOPICS = 2
UNFOCUSED_REPLY = "That is a lot at once. Please ask me about one thing at a time."
#: common travel topics, each a group of synonyms: an alternative a message offers ("wifi or a
#: pool?") that names one of them must be one of the traveller's preferences
TOPICS = parse_groups(
    "stop|layover|nonstop|direct|connection;bag|baggage|luggage|suitcase;seat|legroom|cabin;"
    "wifi|internet|email;depart|departure|arrive|arrival|morning|evening;airline|carrier|loyalty|miles;"
    "breakfast;parking;pool;gym|fitness|exercise|workout;pet|dog|cat|animal;"
    "location|neighborhood|neighbourhood|district|central;star|quality|comfort|rating;"
    "balcony|terrace|patio|outdoor|view;kitchen|cook;washer|laundry|washing;bedroom|bed|sleep;"
    "children|child|kid|toddler;insurance|coverage|damage;mileage|distance|kilometer;"
    "fuel|hybrid|electric|petrol;transmission|gear|manual|automatic;suv|minivan|van;"
    "cuisine|vegetarian|vegan|meat|dietary|diet;noise|quiet|ambience|atmosphere|music;price|budget|cost|cheap"
)
ASPECT_WORDS: dict[str, list[str]] = {
    "flight": ["flight", "fly", "plane", "airline"],
    "hotel": ["hotel"],
    "apartment": ["apartment", "flat", "rental home"],
    "rental_car": ["rental car", "car", "rental", "vehicle"],
    "restaurant": ["restaurant", "dinner", "dining", "eat"],
}
#: option-id letter of each aspect (UserRL's ids use the same letters)
PREFIX_ASPECT = {"F": "flight", "H": "hotel", "A": "apartment", "C": "rental_car", "R": "restaurant"}
_ID = re.compile(r"\b([A-Z]\d+)\b")


def revealed_by(task: Task, message: str, among: list[int]) -> list[int]:
    """Preferences (indices) whose keywords the message uses, among ``among``."""
    s = stems(message)
    prefs = task.get("preferences", [])
    return [i for i in among if group_hit(s, prefs[i]["keywords"])]


def is_focused(task: Task, message: str) -> bool:
    """A question, not a keyword list or a sweep: it asks (:func:`is_question`), has at most
    :data:`MAX_MESSAGE_WORDS` content words, is about at most :data:`MAX_TOPICS` of the task's
    preferences (revealed or not), and every bare topic it adds ("... wifi *or a pool*?",
    :func:`bare_topics`) is about one of the traveller's preferences."""
    prefs = task.get("preferences", [])
    every = list(range(len(prefs)))
    if not is_question(message) or len(content_words(message)) > MAX_MESSAGE_WORDS:
        return False
    touched = len(revealed_by(task, message, every))
    if touched > MAX_TOPICS:
        return False
    own = stems(" ".join(f"{p['statement']} {' '.join(p['keywords'])}" for p in prefs))
    common = TOPICS + catalog_topics(task)
    return not is_sweep(message, lambda part: any(group_hit(part, p["keywords"]) for p in prefs), own, common)


def catalog_topics(task: Task) -> list[list[str]]:
    """The catalog's features as topics: each feature's name with every value it takes
    ("cabin": economy, premium economy, business)."""
    groups: dict[str, set[str]] = {}
    for aspect in task["aspects"]:
        for option in task["catalog"][aspect].get("options", []):
            for name, value in option.get("features", {}).items():
                groups.setdefault(str(name), {str(name)}).add(re.sub(r"\(.*?\)", "", str(value)).strip())
    return [sorted(v for v in g if content_words(v)) for _, g in sorted(groups.items())]


def talk(task: Task, message: str, revealed: list[int], off_topic: int, seed: int = 0) -> dict[str, Any]:
    """The scripted user's reply to an ``[action]`` message.

    0. A keyword list (see :func:`is_focused`) reveals nothing; it counts as off-topic.
    1. Otherwise one preference whose keywords the message uses is revealed (its implicit
       statement): the first such, as UserRL's user reveals at most one per utterance.
    2. Otherwise, if it asks about preferences already revealed, the user repeats them.
    3. Otherwise the turn is off-topic; after :data:`OFF_TOPIC_LIMIT` off-topic turns in a row
       (on the 4th, as UserRL's ``elicitation_interval``) the user volunteers an unrevealed
       preference chosen at random (``seed``: the episode's seed and turn), which earns nothing.
    """
    prefs = task.get("preferences", [])
    hidden = [i for i in range(len(prefs)) if i not in revealed]
    if not is_focused(task, message):
        out = off_topic_reply(task, hidden, off_topic, seed)
        return out if out["volunteered"] else {**out, "reply": UNFOCUSED_REPLY}
    new = revealed_by(task, message, hidden)[:1]
    if new:
        return {"reveal": new, "volunteered": False, "reply": " ".join(prefs[i]["statement"] for i in new)}
    again = revealed_by(task, message, list(revealed))
    if again:
        return {
            "reveal": [],
            "volunteered": False,
            "reply": "As I said, " + " ".join(prefs[i]["statement"] for i in again),
        }
    return off_topic_reply(task, hidden, off_topic, seed)


def off_topic_reply(task: Task, hidden: list[int], off_topic: int, seed: int = 0) -> dict[str, Any]:
    """After ``off_topic`` off-topic turns in a row: a preference volunteered at random once
    there were :data:`OFF_TOPIC_LIMIT` (UserRL: ``nonpreference_times >= elicitation_interval``
    before this turn counts), else a nudge."""
    if hidden and off_topic >= OFF_TOPIC_LIMIT:
        pick = hidden[random.Random(f"volunteer:{seed}").randrange(len(hidden))]
        pref = task["preferences"][pick]
        return {
            "reveal": [pick],
            "volunteered": True,
            "reply": f"By the way, about the {pref['aspect'].replace('_', ' ')}: {pref['statement']}",
        }
    return {
        "reveal": [],
        "volunteered": False,
        "reply": "I'm not sure what you mean. I do have some wishes for this trip, so feel free to ask me about them.",
    }


class TravelUserSpec:
    """The traveller with hidden preferences per aspect.

    Query ``talk`` (payload ``message``, ``revealed``: preference indices already known,
    ``off_topic``: consecutive turns without a revealed preference, ``seed``: the randomness
    of a volunteered preference) -> ``{"reveal": [indices],
    "volunteered": bool, "reply": str}``; scripted rules in :func:`talk`. The LLM user
    decides which preference a message asks about (at most one: a reply revealing more is
    malformed and re-asked); volunteering stays rule-based.
    """

    def scripted(self, query: UserQuery) -> dict[str, Any]:
        if query.name != "talk":
            raise ValueError(f"TravelGym has no query {query.name!r}")
        p = query.payload
        return talk(
            query.task, str(p["message"]), [int(i) for i in p["revealed"]], int(p["off_topic"]), int(p.get("seed", 0))
        )

    def llm_messages(self, query: UserQuery) -> list[dict[str, str]]:
        t, p = query.task, query.payload
        hidden = [
            {"index": i, "aspect": x["aspect"], "preference": x["statement"]}
            for i, x in enumerate(t.get("preferences", []))
            if i not in p["revealed"]
        ]
        system = (
            f'You are a traveller who asked a travel agent: "{t["request"]}"\n'
            f"You have hidden preferences not yet discussed: {json.dumps(hidden, ensure_ascii=False)}\n"
            "Reveal a preference only when the agent's message actually asks about that topic, "
            "and at most one preference per message; a list of keywords or topics is not a "
            "question and reveals nothing, and neither does your own request repeated back. "
            "Say it implicitly in your own words (e.g. 'I'm bringing a big suitcase' rather "
            "than 'I need a checked bag'). Never list options or ids. If the message asks about "
            "none of them, answer vaguely. Reply with JSON only: "
            '{"reveal": [indices of the preferences you revealed], "reply": "your message"}.'
        )
        user = f"Dialogue so far:\n{dialogue_text(query)}\n\nAgent: {p['message']}"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def parse_llm(self, query: UserQuery, text: str) -> dict[str, Any]:
        obj = parse_json_object(text, {"reveal": list, "reply": str})
        p = query.payload
        n = len(query.task.get("preferences", []))
        hidden = [i for i in range(n) if i not in p["revealed"]]
        if not all(isinstance(i, int) and not isinstance(i, bool) and i in hidden for i in obj["reveal"]):
            raise ValueError(f"'reveal' must list indices from {hidden}")
        if len(set(obj["reveal"])) > 1:
            raise ValueError("'reveal' may name at most one preference per message")
        if obj["reveal"]:
            return {"reveal": sorted(set(obj["reveal"])), "volunteered": False, "reply": obj["reply"]}
        fallback = off_topic_reply(query.task, hidden, int(p["off_topic"]), int(p.get("seed", 0)))
        if fallback["volunteered"]:
            return fallback
        return {"reveal": [], "volunteered": False, "reply": obj["reply"]}

    def hidden_facts(self, query: UserQuery, reply: dict[str, Any]) -> list[str]:
        """The leak guard's facts: the statements of the preferences neither revealed before
        nor by this reply (one preference per utterance may be revealed)."""
        prefs = query.task.get("preferences") or []
        allowed = {int(i) for i in reply.get("reveal") or [] if isinstance(i, int)}
        allowed |= {int(i) for i in query.payload.get("revealed") or []}
        return [str(p.get("statement") or "") for i, p in enumerate(prefs) if i not in allowed]

    def reply_schema(self, query: UserQuery) -> dict[str, Any]:
        """The JSON reply, for structured output: ``reveal`` names at most one hidden preference."""
        n = len(query.task.get("preferences", []))
        hidden = [i for i in range(n) if i not in query.payload["revealed"]]
        index = {"type": "integer", "enum": hidden} if hidden else {"type": "integer"}
        return reply_object(
            reveal={"type": "array", "items": index, "maxItems": min(1, len(hidden))}, reply={"type": "string"}
        )


def find_aspect(task: Task, query: str) -> str | None:
    s = stems(query)
    for aspect in task["aspects"]:
        if group_hit(s, ASPECT_WORDS.get(aspect, [aspect.replace("_", " ")])):
            return aspect
    return None


def format_option(option: dict[str, Any]) -> str:
    feats = " | ".join(f"{k}: {v}" for k, v in option.get("features", {}).items())
    return f"{option['id']} | {feats} | price: ${option['price']}"


def search_catalog(task: Task, query: str) -> str:
    aspect = find_aspect(task, query)
    if aspect is None:
        names = ", ".join(a.replace("_", " ") for a in task["aspects"])
        return f"Please name the travel aspect to search for; this trip needs: {names}."
    options = task["catalog"][aspect].get("options", [])
    if not options:
        return f"No {aspect.replace('_', ' ')} options are available in this task's catalog."
    lines = [format_option(o) for o in sorted(options, key=lambda o: int(o["id"][1:]))]
    return f"{aspect.replace('_', ' ').capitalize()} options:\n" + "\n".join(lines)


def option_label(task: Task, option_id: str) -> tuple[str, str] | None:
    """``(aspect, best|acceptable|wrong)`` of an option id, or None if it is not offered.

    Tasks without a catalog (imported ones) offer every id with the aspect's letter.
    """
    for aspect in task["aspects"]:
        cat = task["catalog"][aspect]
        ids = {o["id"] for o in cat.get("options", [])} | set(cat["best"]) | set(cat.get("acceptable", []))
        if not cat.get("options") and PREFIX_ASPECT.get(option_id[:1]) == aspect:
            ids.add(option_id)
        if option_id in ids:
            label = (
                "best"
                if option_id in cat["best"]
                else "acceptable"
                if option_id in cat.get("acceptable", [])
                else "wrong"
            )
            return aspect, label
    return None


#: words an answer may use besides the option id ("I recommend H12 for the hotel")
_ANSWER_WORDS = frozenset(
    stems(
        "recommend recommendation choose choice pick option book go take select suggest answer "
        "final best think believe flight hotel apartment rental car restaurant"
    )
)


def is_plain_answer(content: str) -> bool:
    """The id and filler only: an answer padded with other words is not one recommendation."""
    return all(w in _ANSWER_WORDS or _ID.fullmatch(w.upper()) for w in content_words(content, min_len=1))


def answer_ids(content: str) -> list[str]:
    return list(dict.fromkeys(m.upper() for m in _ID.findall(content.upper())))
