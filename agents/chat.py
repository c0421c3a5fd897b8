"""Token-in/token-out conversation helpers.

An episode's token sequence is built once and only ever appended to: the first turn renders
the chat template; every later turn keeps the previous ids exactly (prompt + the tokens the
policy generated, never re-tokenized) and appends the new messages as tokens.

:func:`extend_ids` checks the one property that makes this sound: the chat template's
rendering of the *whole* conversation must start with the text of the previous ids. It fails
with :class:`~userrl.errors.PolicyError` when

* the template rewrites earlier turns (Qwen3's template strips ``<think>`` from past assistant
  turns, for example; use a template that keeps history verbatim), or
* the assistant message stored in ``messages`` is not the text the policy generated
  (store ``GenResult.text`` unchanged), or ``n_seen`` does not match ``prev_ids``.

Truncated generations: when a generation hit ``max_new_tokens`` it has no end-of-turn token.
The template closes every assistant turn with ``<|im_end|>``, so :func:`extend_ids` appends
the end-of-turn token itself before the new messages. That token is context, not policy output
(the policy never sampled it), so it belongs to the appended, loss-masked part.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Sequence
from typing import Any

from userrl.errors import PolicyError

__all__ = ["end_of_turn_id", "extend_ids", "render_prefix_ids", "render_text"]

_CONTEXT_CHARS = 60  # characters shown either side of a mismatch


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that closes an assistant turn: ``<|im_end|>`` if known, else EOS."""
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
        return tid
    if tokenizer.eos_token_id is None:
        raise PolicyError("tokenizer has neither <|im_end|> nor an eos token to close a turn")
    return int(tokenizer.eos_token_id)


def render_text(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    add_generation_prompt: bool,
    tools: Sequence[dict[str, Any]] | None = None,
) -> str:
    """The chat template's text for ``messages``."""
    try:
        text = tokenizer.apply_chat_template(
            list(messages),
            tools=list(tools) if tools else None,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
    except Exception as exc:
        raise PolicyError(f"chat template failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(text, str):
        raise PolicyError(f"chat template returned {type(text).__name__}, expected text")
    return text


class _PieceEncoder:
    """``tokenizer.encode(text)``, piece by piece between special tokens, with the pieces cached.

    A fast tokenizer splits special tokens out of the text before anything else, so the pieces
    between them are encoded independently and the result is the same; every first prompt of
    an episode repeats the system turn and the tool schemas (most of its tokens), which are then
    encoded once. Used only where a probe agrees with the plain encoding (special tokens that
    strip no whitespace); otherwise the plain encoding."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        special = {t.content: int(i) for i, t in added.items() if getattr(t, "special", False)}
        plain = all(not (t.lstrip or t.rstrip or t.single_word) for t in added.values() if t.content in special)
        self.special = special
        self.split = re.compile("(" + "|".join(re.escape(t) for t in sorted(special, key=len, reverse=True)) + ")")
        self.piece = functools.lru_cache(maxsize=4096)(self._piece)
        probe = "".join(f"x {t}\n y" for t in special) + " z"
        self.ok = bool(special) and plain and self(probe) == self.whole(probe)

    def whole(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _piece(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    def __call__(self, text: str) -> list[int]:
        ids: list[int] = []
        for part in self.split.split(text):
            if part in self.special:
                ids.append(self.special[part])
            elif part:
                ids.extend(self.piece(part))
        return ids


_ENCODERS: weakref.WeakKeyDictionary[Any, _PieceEncoder] = weakref.WeakKeyDictionary()


def _encode(tokenizer: Any, text: str) -> list[int]:
    enc = _ENCODERS.get(tokenizer)
    if enc is None:
        enc = _ENCODERS[tokenizer] = _PieceEncoder(tokenizer)
    return enc(text) if enc.ok else enc.whole(text)


def render_prefix_ids(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    add_generation_prompt: bool = True,
    tools: Sequence[dict[str, Any]] | None = None,
) -> list[int]:
    """Token ids of the first prompt of an episode (the template rendered once, then encoded)."""
    return _encode(tokenizer, render_text(tokenizer, messages, add_generation_prompt, tools))


def _mismatch(what: str, expected: str, got: str) -> PolicyError:
    i = next((k for k, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), min(len(expected), len(got)))
    lo = max(0, i - _CONTEXT_CHARS)
    return PolicyError(
        f"{what} at character {i}: previous tokens read "
        f"{expected[lo : i + _CONTEXT_CHARS]!r}, the template renders {got[lo : i + _CONTEXT_CHARS]!r}"
    )


def extend_ids(
    tokenizer: Any,
    prev_ids: Sequence[int],
    messages: Sequence[dict[str, Any]],
    n_seen: int,
    tools: Sequence[dict[str, Any]] | None = None,
    add_generation_prompt: bool = True,
) -> list[int]:
    """``prev_ids`` plus ``messages[n_seen:]`` as tokens (and the next generation prompt).

    ``prev_ids`` is the previous prompt plus the generated ids; ``messages[:n_seen]`` are the
    messages already in it (the last one normally the assistant turn that was generated).
    Raises :class:`PolicyError` if the rendering of ``messages`` does not extend ``prev_ids``.
    """
    if not 0 < n_seen <= len(messages):
        raise PolicyError(f"n_seen must be in 1..{len(messages)}, got {n_seen}")
    ids = list(prev_ids)
    if not ids:
        raise PolicyError("prev_ids is empty; render the first turn with render_prefix_ids")
    eot = end_of_turn_id(tokenizer)
    if messages[n_seen - 1].get("role") == "assistant" and ids[-1] != eot:
        ids.append(eot)  # truncated generation: close the turn (context, not policy output)
    prev_text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    seen_text = render_text(tokenizer, messages[:n_seen], False, tools)
    if not seen_text.startswith(prev_text):
        raise _mismatch("previous token ids do not match messages[:n_seen]", prev_text, seen_text)
    full_text = render_text(tokenizer, messages, add_generation_prompt, tools)
    if not full_text.startswith(seen_text):
        raise _mismatch("the chat template rewrites earlier turns when new messages are added", seen_text, full_text)
    return ids + _encode(tokenizer, full_text[len(prev_text) :])


def request_prompt_ids(tokenizer: Any, req: Any, tools: Sequence[dict[str, Any]] | None) -> list[int]:
    """The full prompt of a :class:`~userrl.agents.base.GenRequest`: rendered on the first turn,
    else extended token-exactly from its ``prompt_ids``; errors name the episode."""
    try:
        if req.prompt_ids is None:
            return render_prefix_ids(tokenizer, req.messages, True, tools)
        return extend_ids(tokenizer, req.prompt_ids, req.messages, req.n_seen, tools)
    except PolicyError as exc:
        raise PolicyError(f"episode {req.episode_id}: {exc}") from exc
