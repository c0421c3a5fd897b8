"""TurtleGym's scripted judge and host: keyword rules that a policy cannot game.

Grading an explanation (``grade_story``), on stemmed words (see :mod:`._text`):

1. *What the player was shown does not count.* A keyword phrase that occurs in the title or
   surface is dropped from its group; a group left empty is given away by the surface and
   dropped from its key point. (Repeating the surface scores nothing.) A key point whose groups
   are all given is judged on the words of its statement that the surface lacks.
2. *A story, not a list.* An explanation needs at least :data:`MIN_WORDS` content words beyond
   the surface's, and at least half of them (:data:`MIN_PRECISION`) must belong to the hidden
   story (its full text, checklist statements and keywords); otherwise every point is judged 0.
   (A keyword dump, several stories in one answer, or a one-word answer scores nothing.)
3. A key point is judged 1 when the explanation hits at least ``full`` of its groups (default
   all), 0.5 at ``half`` (default half), else 0.
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
    """The key point's keyword groups without the phrases the surface shows (rule 1)."""
    out = []
    for group in kp["keywords"]:
        kept = [p for p in group if not has_phrase(shown, p)]
        if kept:
            out.append(kept)
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
    """Rule 2: enough new content words, and mostly the hidden story's."""
    shown = set(content_words(shown_text(task)))
    novel = [w for w in content_words(story) if w not in shown]
    if len(novel) < MIN_WORDS:
        return False
    vocab = story_vocabulary(task)
    return sum(1 for w in novel if w in vocab) >= MIN_PRECISION * len(novel)


def judge_point(groups: list[list[str]], story_stems: list[str], full: float, half: float) -> float:
    if not groups:
        return 0.0
    cov = sum(1 for g in groups if group_hit(story_stems, g)) / len(groups)
    return 1.0 if cov >= full - 1e-9 else 0.5 if cov >= half - 1e-9 else 0.0


def grade_story(task: Task, story: str) -> tuple[float, list[float]]:
    """Weighted key-point score of an explanation, and each point's 0 / 0.5 / 1 judgment."""
    points = task["key_points"]
    if not is_story(task, story):
        return 0.0, [0.0] * len(points)
    grading = task.get("grading") or {}
    full, half = float(grading.get("full", FULL)), float(grading.get("half", HALF))
    shown, s = stems(shown_text(task)), stems(story)
    judgments = [judge_point(hidden_groups(kp, shown), s, full, half) for kp in points]
    score = sum(float(kp["weight"]) * j for kp, j in zip(points, judgments, strict=True))
    return round(min(1.0, score), 4), judgments
