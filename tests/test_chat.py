"""Token-exact conversation extension (render once, then only append)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("torch")

from transformers import AutoTokenizer  # noqa: E402

from userrl.agents.chat import end_of_turn_id, extend_ids, render_prefix_ids, render_text  # noqa: E402
from userrl.agents.tiny import CHAT_TEMPLATE, build_tiny_model  # noqa: E402
from userrl.envs.actions import TOOL_SCHEMA, format_tool_call  # noqa: E402
from userrl.errors import PolicyError  # noqa: E402

pytestmark = pytest.mark.train

# Qwen3-style: past assistant turns lose their <think> block once the conversation moves on
REWRITING_TEMPLATE = CHAT_TEMPLATE.replace(
    "{%- generation -%}{{- (message['content'] or '') + '<|im_end|>' -}}{%- endgeneration -%}",
    "{%- set c = message['content'] or '' -%}"
    "{%- if not loop.last -%}{%- set c = c.split('</think>')[-1] -%}{%- endif -%}"
    "{{- c + '<|im_end|>' -}}",
)
assert REWRITING_TEMPLATE != CHAT_TEMPLATE


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("tiny")))


def first_turn() -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Guess the entity."},
        {"role": "user", "content": "I am thinking of something."},
    ]


def generated(tok: Any, text: str, closed: bool = True) -> list[int]:
    ids = tok.encode(text, add_special_tokens=False)
    return ids + [end_of_turn_id(tok)] if closed else ids


@pytest.mark.parametrize("tools", [None, [TOOL_SCHEMA]])
def test_append_matches_full_render(tok: Any, tools: Any) -> None:
    msgs = first_turn()
    ids = render_prefix_ids(tok, msgs, True, tools)
    assert tok.decode(ids, skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    for turn in range(3):
        reply = "<think>hmm</think>" + format_tool_call("action", f"Is it #{turn}?")
        ids = ids + generated(tok, reply)
        msgs = msgs + [{"role": "assistant", "content": reply}, {"role": "tool", "content": f"No.\nReward: 0.{turn}"}]
        if turn == 1:
            msgs.append({"role": "user", "content": "Keep going."})
        n_seen = len(msgs) - (2 if turn == 1 else 1)
        new = extend_ids(tok, ids, msgs, n_seen, tools)
        assert new[: len(ids)] == ids  # never re-tokenized
        full = render_text(tok, msgs, True, tools)
        assert tok.decode(new, skip_special_tokens=False) == full
        assert new == render_prefix_ids(tok, msgs, True, tools)  # same tokens as one render here
        ids = new


def test_truncated_generation_is_closed(tok: Any) -> None:
    msgs = first_turn()
    ids = render_prefix_ids(tok, msgs)
    cut = "[action] Is it a fruit or a veg"
    gen = generated(tok, cut, closed=False)
    msgs = msgs + [{"role": "assistant", "content": cut}, {"role": "user", "content": "Pardon?"}]
    new = extend_ids(tok, ids + gen, msgs, 3)
    eot = end_of_turn_id(tok)
    assert new[: len(ids) + len(gen) + 1] == ids + gen + [eot]
    assert tok.decode(new, skip_special_tokens=False) == render_text(tok, msgs, True)


def test_rewriting_template_is_detected(tok: Any) -> None:
    tok2 = AutoTokenizer.from_pretrained(tok.name_or_path)
    tok2.chat_template = REWRITING_TEMPLATE
    msgs = first_turn()
    ids = render_prefix_ids(tok2, msgs)
    reply = "<think>secret plan</think>[action] Is it alive?"
    ids += generated(tok2, reply)
    msgs += [{"role": "assistant", "content": reply}, {"role": "user", "content": "Yes."}]
    with pytest.raises(PolicyError, match="rewrites earlier turns"):
        extend_ids(tok2, ids, msgs, 3)
    # the same conversation without thinking is fine under that template
    plain = "[action] Is it alive?"
    ok_ids = render_prefix_ids(tok2, first_turn()) + generated(tok2, plain)
    ok_msgs = first_turn() + [{"role": "assistant", "content": plain}, {"role": "user", "content": "Yes."}]
    extend_ids(tok2, ok_ids, ok_msgs, 3)


def test_altered_history_and_bad_n_seen(tok: Any) -> None:
    msgs = first_turn()
    ids = render_prefix_ids(tok, msgs) + generated(tok, "[answer] a cat")
    edited = msgs + [{"role": "assistant", "content": "[answer] a dog"}, {"role": "user", "content": "No."}]
    with pytest.raises(PolicyError, match="do not match messages"):
        extend_ids(tok, ids, edited, 3)
    good = msgs + [{"role": "assistant", "content": "[answer] a cat"}, {"role": "user", "content": "No."}]
    with pytest.raises(PolicyError, match="n_seen"):
        extend_ids(tok, ids, good, 0)
    with pytest.raises(PolicyError, match="n_seen"):
        extend_ids(tok, ids, good, 9)
    with pytest.raises(PolicyError, match="do not match"):
        extend_ids(tok, ids, good, 2)  # claims the assistant turn was not seen
    with pytest.raises(PolicyError, match="chat template failed"):
        render_prefix_ids(tok, [{"role": "robot", "content": "beep"}])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_generation_extends(tok: Any, data: st.DataObject) -> None:
    """Whatever ids the policy samples (specials, cut UTF-8, no end of turn), the append holds."""
    gen_ids = data.draw(st.lists(st.integers(0, len(tok) - 1), min_size=1, max_size=24))
    msgs = first_turn()
    prompt = render_prefix_ids(tok, msgs)
    stop = end_of_turn_id(tok)
    body = gen_ids[:-1] if gen_ids[-1] == stop else gen_ids  # as the backends build GenResult.text
    text = tok.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    msgs = msgs + [{"role": "assistant", "content": text}, {"role": "user", "content": "Go on."}]
    new = extend_ids(tok, prompt + gen_ids, msgs, 3)
    assert new[: len(prompt) + len(gen_ids)] == prompt + gen_ids


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.text(max_size=40) | st.sampled_from(["<|im_start|>", "<|im_end|>", "<tool_call>", "\n", " "]), max_size=12
    )
)
def test_encoding_between_special_tokens_equals_the_plain_encoding(tok: Any, parts: list[str]) -> None:
    """Prompts are encoded piece by piece between special tokens, pieces cached (agents/chat.py):
    the ids must be exactly the tokenizer's own, for any text and the real first prompts."""
    from userrl.agents.chat import _encode

    text = "".join(parts)
    assert _encode(tok, text) == tok.encode(text, add_special_tokens=False)
    prompt = render_text(tok, first_turn(), True, [TOOL_SCHEMA])
    assert _encode(tok, prompt) == tok.encode(prompt, add_special_tokens=False)
