"""TurtleGym's scripted judge and host: keyword rules that a policy cannot game.

Grading an explanation (``grade_story``), on stemmed words (see :mod:`._text`):

1. *What the player was shown does not count.* A keyword group (a word and the words that say
   it too) one of whose phrases occurs in the title or surface is given away by the surface and
   dropped from its key point. (Repeating the surface scores nothing.) A key point whose groups
   are all given is judged on the words of its statement that the surface lacks.
2. *A story, not a list.* An explanation needs at least :data:`MIN_WORDS` content words beyond
   the surface's, and at least half of them (:data:`MIN_PRECISION`) must belong to the hidden
   story (its full text, checklist statements and keywords); otherwise every point is judged 0.
   (A keyword dump, several stories in one answer, or a one-word answer scores nothing.)
3. A key point is judged 1 when the explanation hits at least ``full`` of its groups (default
   all), 0.5 at ``half`` (default half), else 0.
4. *The hidden story is the best explanation.* A checklist says things in its own words; where
   the hidden story itself covers less of a point's groups than ``full``, its coverage is the
   bar (and half of it for 0.5), never less than one group. So the story scores what it
   should, and an explanation is measured against it.
"""

from __future__ import annotations

from typing import Any

from userrl.envs.gyms._text import content_words, group_hit, has_phrase, stems

Task = dict[str, Any]
#: a key point's keyword coverage for full and half credit (a task may override: ``grading``)
FULL, HALF = 1.0, 0.5
MIN_WORDS = 3
MIN_PRECISION = 0.5


def shown_text(task: Task) -> str:
    return f"{task.get('title', '')} {task.get('surface', '')}"


def hidden_groups(kp: dict[str, Any], shown: list[str]) -> list[list[str]]:
    """The key point's keyword groups the surface does not give away (rule 1)."""
    out = [list(group) for group in kp["keywords"] if not any(has_phrase(shown, p) for p in group)]
    if out:
        return out
    shown_set = set(shown)
    return [[w] for w in content_words(kp["statement"]) if w not in shown_set]


def story_vocabulary(task: Task) -> set[str]:
    """Content-word stems of everything the host knows about the hidden story."""
    texts = [str(task.get("bottom", ""))]
    for kp in task["key_points"]:
        texts.append(str(kp["statement"]))
        texts += [p for g in kp["keywords"] for p in g]
    return {w for t in texts for w in content_words(t)}


def is_story(task: Task, story: str) -> bool:
    """Rule 2: enough new content words (:data:`MIN_WORDS`, or as many as the hidden story
    itself has beyond the surface: "Because A is a turkey."), and mostly the hidden story's."""
    shown = set(content_words(shown_text(task)))
    novel = [w for w in content_words(story) if w not in shown]
    needed = min(MIN_WORDS, max(1, sum(1 for w in content_words(str(task.get("bottom", ""))) if w not in shown)))
    if len(novel) < needed:
        return False
    vocab = story_vocabulary(task)
    return sum(1 for w in novel if w in vocab) >= MIN_PRECISION * len(novel)


def coverage(groups: list[list[str]], story_stems: list[str]) -> float:
    return sum(1 for g in groups if group_hit(story_stems, g)) / len(groups) if groups else 0.0


def judge_point(
    groups: list[list[str]], story_stems: list[str], full: float, half: float, ceiling: float = 1.0
) -> float:
    """1 at ``full`` coverage of the groups, 0.5 at ``half``; both thresholds are capped at
    ``ceiling`` (the hidden story's own coverage, when it has some: rule 4), never below one
    group."""
    if not groups:
        return 0.0
    least = 1 / len(groups)
    full, half = max(least, min(full, ceiling)), max(least, min(half, ceiling / 2))
    cov = coverage(groups, story_stems)
    return 1.0 if cov >= full - 1e-9 else 0.5 if cov >= half - 1e-9 else 0.0


def grade_story(task: Task, story: str) -> tuple[float, list[float]]:
    """Weighted key-point score of an explanation, and each point's 0 / 0.5 / 1 judgment."""
    points = task["key_points"]
    if not is_story(task, story):
        return 0.0, [0.0] * len(points)
    grading = task.get("grading") or {}
    full, half = float(grading.get("full", FULL)), float(grading.get("half", HALF))
    shown, s, bottom = stems(shown_text(task)), stems(story), stems(str(task.get("bottom", "")))
    judgments = []
    for kp in points:
        groups = hidden_groups(kp, shown)
        ceiling = coverage(groups, bottom) or 1.0
        judgments.append(judge_point(groups, s, full, half, ceiling))
    score = sum(float(kp["weight"]) * j for kp, j in zip(points, judgments, strict=True))
    return round(min(1.0, score), 4), judgments
