"""PersuadeGym's scripted user: how arguments move the stance (pure functions of the task).

The rules are in :class:`userrl.envs.gyms.persuade.PersuadeUserSpec`'s docstring; the guards
against gaming them (words the agent was shown do not count, one point per argument, no lists
of talking points, no bare words, no echo of the user's own reasoning) are here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from userrl.envs.gyms._text import content_words, normalize, stems

Task = dict[str, Any]

#: UserRL's seven stances (its prompts and reward table say "Partly", not "Slightly")
STANCES = ("Strongly Agree", "Agree", "Partly Agree", "Neutral", "Partly Disagree", "Disagree", "Strongly Disagree")
#: other words an LLM persuadee uses for the middle stances
_ALIASES = {"slightly": "partly", "somewhat": "partly"}
LAST = len(STANCES) - 1
UNFOCUSED_REPLY = (
    "Make one clear point of your own at a time, in a sentence; bare words, lists "
    "of talking points or my own reasoning repeated back do not move me."
)
#: an argument that makes more new points than this at once is a list of talking points
MAX_POINTS = 2
#: copying this many consecutive words of the user's own reasoning is an echo
ECHO_WINDOW = 8
#: hostile words that make the scripted user dig in (one level back toward agreement)
BACKFIRE = ("stupid", "idiot", "dumb", "moron", "shut up", "ignorant", "brainwashed", "pathetic", "ridiculous")


SYSTEM_PROMPT = (
    "PersuadeGym is a persuasion game. The user holds a claim that you oppose; change "
    "their mind.\n"
    "Actions:\n"
    "- [action] argument (or [answer] argument) : one argument against the claim. The "
    "user replies and states their stance: Strongly Agree, Agree, Partly Agree, "
    "Neutral, Partly Disagree, Disagree or Strongly Disagree.\n"
    "- [finish] : stop.\n"
    "Find the weak points of their position and make one specific, new point per turn. "
    "The game ends when they strongly disagree."
)


def stance_index(label: str) -> int:
    """The index of a stance label (UserRL's; "Slightly" and "Somewhat" read as "Partly")."""
    clean = label.strip().strip(".!").lower()
    first, _, rest = clean.partition(" ")
    clean = f"{_ALIASES.get(first, first)} {rest}".strip()
    for i, s in enumerate(STANCES):
        if s.lower() == clean:
            return i
    raise ValueError(f"stance must be one of {', '.join(STANCES)}, got {label!r}")


def prefix_hit(text_stems: Sequence[str], phrase: str) -> bool:
    """``phrase`` occurs as a run of words each starting with the phrase's (stemmed) words,
    so ``cooperat`` matches ``cooperation`` and ``cooperative``."""
    pattern = _prefix_pattern(phrase)
    return pattern is not None and pattern.search(" ".join(text_stems)) is not None


@functools.lru_cache(maxsize=16384)
def _prefix_pattern(phrase: str) -> re.Pattern[str] | None:
    # a regex over the joined stems: the scripted user checks every keyword against the whole
    # dialogue the agent saw, so a Python loop per word was the exploit suite's hot spot
    p = stems(phrase)
    return re.compile(r"(?<!\S)" + r"\S*\s".join(re.escape(w) for w in p)) if p else None


#: an argument has this many content words at least (a word is not an argument) and at most
#: (more is a list of talking points, not a point)
MIN_ARGUMENT_WORDS, MAX_ARGUMENT_WORDS = 4, 40


def counter_hit(counter: dict[str, Any], text_stems: Sequence[str], shown: Sequence[str] = ()) -> bool:
    """A counter-argument is made when ``min_hits`` of its keyword groups are hit (default all).

    Keywords the agent was shown (``shown``: the rules, the claim, the user's messages) do not count: they are
    not a counter-argument, and echoing them must not make one. A group made only of such
    words is dropped.
    """
    groups = live_groups(counter, shown)
    return _hits(counter, text_stems, shown) >= min(int(counter.get("min_hits", len(groups))), len(groups))


def _hits(counter: dict[str, Any], text_stems: Sequence[str], shown: Sequence[str]) -> int:
    return sum(1 for g in live_groups(counter, shown) if any(prefix_hit(text_stems, k) for k in g))


def live_groups(counter: dict[str, Any], shown: Sequence[str]) -> list[list[str]]:
    """The counter's keyword groups without the words the agent was shown. When every group
    is shown, the words of the point it rebuts (or of its argument) that were not shown
    stand in, one group each; the keywords only if none is left."""
    groups = [[k for k in g if not prefix_hit(shown, k)] for g in counter["keywords"]]
    groups = [g for g in groups if g]
    if groups:
        return groups
    text = str(counter.get("point") or counter["argument"])
    words = [w for w in content_words(text) if not prefix_hit(shown, w)]
    return [[w] for w in words[:6]] or counter["keywords"]


def react(
    task: Task, argument: str, stance: int, used: list[int], history: Sequence[dict[str, str]] = ()
) -> dict[str, Any]:
    """The scripted user's reaction to one argument (see :class:`PersuadeUserSpec`);
    ``history``: the dialogue so far, whose user messages the agent has seen."""
    said = [str(m.get("content", "")) for m in history if m.get("role") == "user"]
    s, shown = stems(argument), stems("\n".join([SYSTEM_PROMPT, task["claim"], *said]))
    if any(prefix_hit(s, w) for w in BACKFIRE):
        new = max(0, stance - 1)
        return {
            "stance": STANCES[new],
            "new_points": [],
            "reply": f"There is no need to be rude. That only makes me more sure. My stance: {STANCES[new]}.",
        }
    hit = [i for i, c in enumerate(task["counters"]) if counter_hit(c, s, shown)]
    fresh = [i for i in hit if i not in used]
    n_words = len(content_words(argument))
    if not MIN_ARGUMENT_WORDS <= n_words <= MAX_ARGUMENT_WORDS or len(fresh) > MAX_POINTS or echoes(task, argument):
        return {
            "stance": STANCES[stance],
            "new_points": [],
            "reply": f"{UNFOCUSED_REPLY} My stance: {STANCES[stance]}.",
        }
    # one point per argument: the counter it makes best (most keyword groups hit) counts
    fresh = sorted(fresh, key=lambda i: -_hits(task["counters"][i], s, shown))[:1]
    new = min(LAST, stance + sum(int(task["counters"][i]["levels"]) for i in fresh))
    if fresh:
        reply = "Hmm, that is a fair point; I had not considered it."
    elif hit:
        reply = "You already made that point, and I have taken it into account."
    else:
        reply = "I am not convinced; my reasons for believing it still stand."
    return {"stance": STANCES[new], "new_points": fresh, "reply": f"{reply} My stance: {STANCES[new]}."}


def echoes(task: Task, argument: str) -> bool:
    """Whether the argument copies the user's own reasoning: :data:`ECHO_WINDOW` consecutive
    words of it, verbatim (case and punctuation aside)."""
    own, said = normalize(task["argument"]).split(), f" {normalize(argument)} "
    return any(f" {' '.join(own[i : i + ECHO_WINDOW])} " in said for i in range(len(own) - ECHO_WINDOW + 1))
