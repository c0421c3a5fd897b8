"""TauGym's simulated customer (scripted rules and LLM persona) and the outputs check."""

from __future__ import annotations

import json
import re
from typing import Any

from userrl.envs.gyms._common import dialogue_text, parse_json_object
from userrl.envs.gyms._text import has_phrase, stems
from userrl.sim_users.base import UserQuery, reply_object

Task = dict[str, Any]
CLOSING = ("anything else", "anything more", "something else i can")
CONFIRM = (
    "proceed",
    "confirm",
    "shall i",
    "should i",
    "go ahead",
    "would you like me to",
    "do you want me to",
    "is that correct",
    "is that ok",
    "is that okay",
)
IDENTITY = ("name", "zip", "zip code", "postcode", "email", "e mail", "verify", "identify", "identity", "authenticate")
_NUM = re.compile(r"-?\d+(?:\.\d+)?")
#: ids a proposal names: orders (#W2378156), items and products (10 digits), reservations (FQ8APE)
_IDS = re.compile(r"#W\d+|\b\d{10}\b|\b(?=[A-Z0-9]{6}\b)(?=[A-Z0-9]*\d)[A-Z0-9]*[A-Z][A-Z0-9]*\b")
#: what a change is called, by the verb of its tool (exchange_delivered_order_items: exchange)
_VERBS = {
    "cancel": "cancel",
    "return": "return",
    "refund": "return",
    "exchange": "exchange",
    "swap": "exchange",
    "modify": "modify",
    "change": "modify",
    "update": "modify",
    "upgrade": "modify",
    "book": "book",
}


def _any(text_stems: list[str], phrases: tuple[str, ...]) -> bool:
    return any(has_phrase(text_stems, p) for p in phrases)


def requests_of(task: Task) -> list[str]:
    """What the customer asks for, in order: our shop's ``requests``, or for a τ-bench task
    its instruction as one request, told in the first person."""
    if task.get("requests"):
        return [str(r) for r in task["requests"]]
    return [first_person(str(task.get("instruction", "")))]


_SWAPS = (
    (r"\byou are\b", "I am"),
    (r"\byou were\b", "I was"),
    (r"\byourself\b", "myself"),
    (r"\byours\b", "mine"),
    (r"\byour\b", "my"),
    (r"\byou\b", "I"),
)


def first_person(instruction: str) -> str:
    """τ-bench's instructions address the customer ("Your name is ..., you want to ..."); the
    scripted customer says them as their own ("My name is ..., I want to ...")."""
    text = instruction.strip()
    for pattern, repl in _SWAPS:
        text = re.sub(
            pattern, lambda m, r=repl: r if m.group(0)[0].islower() else r[0].upper() + r[1:], text, flags=re.IGNORECASE
        )
    return text


def identity_reply(task: Task, message: str) -> str:
    if "customer" not in task:  # τ-bench: the identity is in the instruction
        return requests_of(task)[0]
    c = task.get("customer", {})
    if task.get("identify_by") == "email" or has_phrase(stems(message), "email"):
        return f"Sure, my email is {c.get('email', 'not something I remember')}."
    return f"My name is {c.get('first_name', '')} {c.get('last_name', '')} and my zip code is {c.get('zip', '')}."


def customer_reply(
    task: Task, message: str, stated: int, goal_met: bool = False, asked_again: int = 0
) -> dict[str, Any]:
    """The scripted customer, rules in order:

    1. Closing question ("anything else?"): when the goal is met (``goal_met``: the database
       as the goal leaves it and every required output said), thanks, done. When it is not and
       every request was stated, the customer asks again the first time (``asked_again``
       counts it) and hangs up the next (done, scored as it stands); requests not yet stated
       come first (rule 4).
    2. A request for confirmation ("shall I proceed?"): yes when the change is one the
       customer wants (:func:`wanted`), else no.
    3. A question about identity (name, zip, email, verify): the identity details (for a
       τ-bench task, which has no ``customer``: its instruction, which holds them).
    4. Otherwise: the next request not yet stated, or, when all were, a reminder (which
       counts as asking again; a τ-bench task has one request: its instruction in the first
       person).
    """
    s = stems(message)
    requests = requests_of(task)
    closing = _any(s, CLOSING)
    if closing and goal_met:
        return {"reply": "No, that's all. Thank you for your help!", "stated": stated, "done": True}
    if closing and stated >= len(requests):
        if asked_again:
            return {
                "reply": "You still have not done what I asked, so I will end this chat here. Goodbye.",
                "stated": stated,
                "done": True,
                "asked_again": asked_again,
            }
        return {
            "reply": f"Yes: what I asked for is not done yet. {requests[-1]}",
            "stated": stated,
            "done": False,
            "asked_again": asked_again + 1,
        }
    if _any(s, CONFIRM):
        if not wanted(task, message):
            return {"reply": "No, that is not what I asked for.", "stated": stated, "done": False}
        return {"reply": "Yes, please go ahead.", "stated": stated, "done": False}
    if _any(s, IDENTITY):
        return {"reply": identity_reply(task, message), "stated": stated, "done": False}
    if stated < len(requests):
        return {"reply": requests[stated], "stated": stated + 1, "done": False}
    return {
        "reply": "That's everything I asked for. Could you please take care of it?",
        "stated": stated,
        "done": False,
        "asked_again": asked_again + 1,
    }


def wanted(task: Task, message: str) -> bool:
    """Whether a proposed change is one the customer wants: every id it names is in their goal
    (the instruction or the gold calls' arguments) and every kind of change it names (cancel,
    return, exchange, modify, book) is one the gold calls make. A proposal naming neither is
    taken on trust."""
    goal = json.dumps([a.get("arguments") for a in task.get("actions", [])]) + " " + str(task.get("instruction", ""))
    if any(i not in goal for i in _IDS.findall(message)):
        return False
    kinds = {_VERBS[w] for w in re.findall(r"[a-z]+", message.lower()) if w in _VERBS}
    made = {_VERBS[w] for a in task.get("actions", []) for w in str(a.get("name", "")).split("_") if w in _VERBS}
    return kinds <= made if made else not kinds


def outputs_said(task: Task, message: str) -> list[int]:
    """Indices of the task's required outputs that ``message`` states. τ-bench's tasks use
    τ-bench's rule (the output, lowercased, is a substring of the message lowercased with its
    commas removed); our shop's compare numbers as numbers, other outputs as substrings."""
    if task.get("db", "userrl-retail") != "userrl-retail":
        said = message.lower().replace(",", "")
        return [i for i, o in enumerate(task.get("outputs", [])) if str(o).lower() in said]
    numbers = {round(float(n), 2) for n in _NUM.findall(message.replace(",", ""))}
    out = []
    for i, o in enumerate(task.get("outputs", [])):
        text = str(o)
        try:
            hit = round(float(text.replace(",", "")), 2) in numbers
        except ValueError:
            hit = text.lower() in message.lower()
        if hit:
            out.append(i)
    return out


class TauUserSpec:
    """The customer with a goal.

    Query ``reply`` (payload ``message``: what the agent said, ``stated``: how many of the
    task's requests the customer has stated, ``goal_met``: whether the agent has done what
    the customer wants so far, ``asked_again``: how often the customer had to ask again) ->
    ``{"reply": str, "stated": int, "done": bool, "asked_again": int}``; scripted rules in
    :func:`customer_reply`. ``done`` ends the conversation.
    """

    def scripted(self, query: UserQuery) -> dict[str, Any]:
        if query.name != "reply":
            raise ValueError(f"TauGym has no query {query.name!r}")
        p = query.payload
        return customer_reply(
            query.task,
            str(p["message"]),
            int(p["stated"]),
            bool(p.get("goal_met", False)),
            int(p.get("asked_again", 0)),
        )

    def llm_messages(self, query: UserQuery) -> list[dict[str, str]]:
        t = query.task
        identity = {k: v for k, v in t.get("customer", {}).items()}
        business = "an airline" if t.get("db") == "tau-bench-airline" else "an online shop"
        system = (
            f"You are a customer contacting {business}'s support agent. Your situation: "
            f"{t.get('instruction', '')}\nYour details (give them only when asked): "
            f"{json.dumps(identity, ensure_ascii=False) if identity else 'as in your situation'}"
            "\nWhat you want, in order: "
            f"{json.dumps(requests_of(t), ensure_ascii=False)}\n"
            "Reveal your requests one at a time, as a real customer would; confirm an action "
            "only if it matches what you want. Do not make up information you were not given. "
            "When everything you wanted is done and the agent asks if you need anything else, "
            "end the conversation; if it is not done, ask again, and end it only if you already "
            "asked again and it still is not. "
            + (
                "So far the agent HAS done what you want. "
                if query.payload.get("goal_met")
                else "So far the agent has NOT done what you want. "
            )
            + f"You asked again {int(query.payload.get('asked_again', 0))} time(s). "
            'Reply with JSON only: {"reply": "...", "done": false} '
            "(done true only when you end the conversation)."
        )
        user = f"Dialogue so far:\n{dialogue_text(query)}\n\nAgent: {query.payload['message']}"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def parse_llm(self, query: UserQuery, text: str) -> dict[str, Any]:
        obj = parse_json_object(text, {"reply": str, "done": bool})
        return {"reply": obj["reply"], "done": obj["done"], "stated": int(query.payload["stated"])}

    def reply_schema(self, query: UserQuery) -> dict[str, Any]:
        """The JSON reply, for structured output (``parse_llm`` reads it)."""
        return reply_object(reply={"type": "string"}, done={"type": "boolean"})
