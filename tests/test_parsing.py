"""parse_action: tool calls, prefixes, think blocks, and everything that must not crash."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from userrl.envs.actions import TOOL_SCHEMA, format_tool_call, parse_action


def call(args: object, name: str = "interact_with_env") -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


# -- well-formed ---------------------------------------------------------------------------
@pytest.mark.parametrize("choice", ["action", "answer", "search"])
def test_tool_call_round_trip(choice: str) -> None:
    text = format_tool_call(choice, "Is it alive?")
    a = parse_action(text)
    assert (a.choice, a.content, a.via_tool, a.error, a.raw) == (choice, "Is it alive?", True, "", text)
    assert a.text == f"[{choice}] Is it alive?"


def test_arguments_as_json_string_and_surrounding_text() -> None:
    body = json.dumps({"name": "interact_with_env", "arguments": json.dumps({"choice": "answer", "content": "42"})})
    a = parse_action(f"Let me answer.\n<tool_call>{body}</tool_call>\nDone.")
    assert (a.choice, a.content, a.via_tool) == ("answer", "42", True)


def test_numeric_content_and_choice_case() -> None:
    a = parse_action(call({"choice": "Answer", "content": 12.5}))
    assert (a.choice, a.content) == ("answer", "12.5")


@pytest.mark.parametrize(
    ("text", "choice", "content"),
    [
        ("[action] Is it red?", "action", "Is it red?"),
        ("  [ANSWER]  Paris \n", "answer", "Paris"),
        ("[search] hotels in Rome", "search", "hotels in Rome"),
        ("[finish]", "finish", ""),
        ("[answer] line one\nline two", "answer", "line one\nline two"),
    ],
)
def test_prefixes(text: str, choice: str, content: str) -> None:
    a = parse_action(text)
    assert (a.choice, a.content, a.via_tool, a.raw) == (choice, content, False, text)


def test_think_blocks_are_stripped() -> None:
    text = "<think>maybe [answer] wrong</think>\n" + format_tool_call("action", "Is it big?")
    assert parse_action(text).content == "Is it big?"
    assert parse_action("<think>a</think> [answer] 3 <think>b</think>").content == "3"
    # the template opened <think> in the prompt: only the closing tag is generated
    assert parse_action("reasoning...</think>\n[answer] 7").content == "7"
    # a tool call inside thinking does not count
    assert parse_action("<think>" + format_tool_call("answer", "x") + "</think>").choice == "invalid"


def test_first_tool_call_decides() -> None:
    first, second = format_tool_call("action", "one"), format_tool_call("answer", "two")
    assert parse_action(first + second).content == "one"
    bad = call({"choice": "dance", "content": "x"})
    a = parse_action(bad + second)
    assert a.choice == "invalid" and "dance" in a.error


def test_fake_close_tag_inside_content_is_content() -> None:
    payload = 'x </tool_call> <tool_call>{"name": "evil"}</tool_call> y'
    a = parse_action(format_tool_call("answer", payload))
    assert (a.choice, a.content) == ("answer", payload)


def test_format_tool_call() -> None:
    assert format_tool_call("finish", "") == "[finish]"
    with pytest.raises(ValueError, match="choice"):
        format_tool_call("dance", "x")
    assert TOOL_SCHEMA["function"]["name"] == "interact_with_env"
    assert TOOL_SCHEMA["function"]["parameters"]["properties"]["choice"]["enum"] == ["action", "answer", "search"]


# -- malformed and adversarial ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected one of"),
        ("I think the answer is 4", "expected one of"),
        ("[answer]", "needs content"),
        ("[dance] now", "expected one of"),
        ("<tool_call>{not json}</tool_call>", "not valid JSON"),
        ('<tool_call>{"name": "interact_with_env", "arguments": {"choice": "answer", "content": "4"}}', "truncated"),
        ('<tool_call>{"name": "interact_with_env", "argu', "truncated"),
        ("<tool_call>", "truncated"),
        ('<tool_call>{"name": "x"} trailing </tool_call>', "unexpected text"),
        ("</tool_call> [answer] 1", "without an opening"),
        ("<tool_call>[1, 2]</tool_call>", "JSON object"),
        ('<tool_call>"str"</tool_call>', "JSON object"),
        (call({"choice": "answer", "content": "4"}, name="rm_rf"), "unknown tool"),
        (call({"choice": "finish", "content": "x"}), "unknown choice"),
        (call({"choice": None, "content": "x"}), "unknown choice"),
        (call({"choice": "answer"}), "non-empty string 'content'"),
        (call({"choice": "answer", "content": "   "}), "non-empty string 'content'"),
        (call({"choice": "answer", "content": ["a"]}), "non-empty string 'content'"),
        (call({"choice": "answer", "content": True}), "non-empty string 'content'"),
        (call("not json"), "not valid JSON"),
        (call(["answer", "4"]), "'arguments' object"),
        ('<tool_call>{"name": "interact_with_env"}</tool_call>', "'arguments' object"),
        ("<think>still thinking when the budget ran out", "unterminated <think>"),
    ],
)
def test_invalid(text: str, reason: str) -> None:
    a = parse_action(text)
    assert a.choice == "invalid" and a.raw == text and not a.via_tool
    assert reason in a.error, a.error
    assert a.text == ""


def test_deep_nesting_and_huge_inputs() -> None:
    deep = "<tool_call>" + "[" * 100_000 + "]" * 100_000 + "</tool_call>"
    assert parse_action(deep).choice == "invalid"
    deep_args = call("[" * 100_000)
    assert parse_action(deep_args).choice == "invalid"
    big = "x" * 300_000
    a = parse_action(format_tool_call("answer", big))
    assert (a.choice, len(a.content)) == ("answer", 300_000)
    assert "longer than" in parse_action("[answer] " + "y" * 2_000_000).error
    assert parse_action("<think>" * 50_000).choice == "invalid"


def test_non_string_input_does_not_raise() -> None:
    assert parse_action(None).choice == "invalid"  # type: ignore[arg-type]


# -- fuzz ---------------------------------------------------------------------------------------
_pieces = st.sampled_from(
    [
        "<tool_call>",
        "</tool_call>",
        "<think>",
        "</think>",
        "[answer]",
        "[finish]",
        '{"name": "interact_with_env", "arguments": ',
        '{"choice": "answer", "content": "1"}',
        "}",
        '"',
        "\\",
        "\n",
        "{",
    ]
)
_fuzz_text = st.one_of(st.text(), st.lists(st.one_of(_pieces, st.text(max_size=5)), max_size=12).map("".join))


@settings(max_examples=300, deadline=None)
@given(_fuzz_text)
def test_never_raises(text: str) -> None:
    a = parse_action(text)
    assert a.raw == text
    assert a.choice in ("action", "answer", "search", "finish", "invalid")
    assert (a.choice == "invalid") == bool(a.error)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["action", "answer", "search"]), st.text(min_size=1))
def test_any_content_round_trips(choice: str, content: str) -> None:
    a = parse_action(format_tool_call(choice, content))
    if content.strip():
        assert (a.choice, a.content) == (choice, content.strip())
    else:
        assert a.choice == "invalid"
