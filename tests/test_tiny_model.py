"""The locally built tiny Qwen3 policy: offline reload, chat template, determinism."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from userrl.agents.tiny import SPECIAL_TOKENS, TEXT_TOKENS, build_tiny_model  # noqa: E402
from userrl.envs.actions import TOOL_SCHEMA, format_tool_call  # noqa: E402

pytestmark = pytest.mark.train

CORPUS = ["The user asks a question and the assistant answers it politely."] * 20 + [
    "Is it an animal? Yes. Is it bigger than a cat? No. The answer is a mouse."
] * 20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), corpus=CORPUS, seed=3)


def test_reloads_offline(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.config.vocab_size == len(tok)
    assert (tiny / "model.safetensors").is_file()
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for t in SPECIAL_TOKENS + TEXT_TOKENS:  # every marker is one token
        assert len(tok.encode(t, add_special_tokens=False)) == 1, t
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, len(tok))


def test_chat_template(tiny: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny)
    msgs = [
        {"role": "system", "content": "Play."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": format_tool_call("action", "Is it red?")},
        {"role": "tool", "content": "No.\nReward: 0.0"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nPlay.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        f"<|im_start|>assistant\n{msgs[2]['content']}<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nNo.\nReward: 0.0\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    no_prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    assert text == no_prompt + "<|im_start|>assistant\n"
    with_tools = tok.apply_chat_template(msgs, tools=[TOOL_SCHEMA], tokenize=False)
    assert with_tools.startswith("<|im_start|>system\nPlay.\n\n# Tools")
    assert '"name": "interact_with_env"' in with_tools
    assert with_tools.count("<|im_start|>system") == 1
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert "<tool_call>" in tok.decode(ids, skip_special_tokens=True)  # a text token, kept


def test_deterministic(tiny: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again", corpus=CORPUS, seed=3)
    other = build_tiny_model(tmp_path / "other", corpus=CORPUS, seed=4)
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        assert (tiny / name).read_bytes() == (again / name).read_bytes(), name
    assert (tiny / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()


def test_default_corpus_and_size(tmp_path: Path) -> None:
    path = build_tiny_model(
        tmp_path,
        hidden_size=32,
        num_hidden_layers=1,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=1000,
    )
    model = AutoModelForCausalLM.from_pretrained(path)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (32, 1)
    assert len(AutoTokenizer.from_pretrained(path)) <= 1000 + len(TEXT_TOKENS)
