"""A tiny, locally built Qwen3-architecture policy for the CPU default and the tests.

Nothing is downloaded: :func:`build_tiny_model` trains a byte-level BPE tokenizer on local
text (the bundled gym data when installed, else a small built-in corpus), wraps it as a
``PreTrainedTokenizerFast`` with a ChatML chat template, builds a randomly initialised
``Qwen3ForCausalLM`` from a fixed seed and saves both with ``save_pretrained``. The output
folder loads offline with ``AutoTokenizer.from_pretrained`` / ``AutoModelForCausalLM``.

The chat template renders every message as its own ChatML block, so appending messages never
changes what was rendered before (the property :mod:`userrl.agents.chat` checks). ``tool``
messages are shown Qwen-style as a ``user`` turn holding ``<tool_response>``; with ``tools=``
the schemas go into the system turn, and the model calls them in ``<tool_call>`` JSON.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import structlog

from userrl.envs.actions import TOOL_SCHEMA

log = structlog.get_logger(__name__)

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "TEXT_TOKENS", "build_tiny_model", "default_corpus"]

#: control tokens: skipped by ``decode(skip_special_tokens=True)``
SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
#: single tokens that are part of the text the agent writes (kept when decoding)
TEXT_TOKENS: tuple[str, ...] = ("<think>", "</think>", "<tool_call>", "</tool_call>")

_TOOLS_PREAMBLE = "# Tools\\n\\nYou may call the function below. Its signature is inside <tools></tools>:\\n<tools>"
_TOOLS_USAGE = (
    "\\n</tools>\\n\\nTo call it, return a JSON object with the function name and arguments "
    "inside <tool_call></tool_call> tags:\\n<tool_call>\\n"
    '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call>'
)

CHAT_TEMPLATE = (
    "{%- set sys_first = messages and messages[0]['role'] == 'system' -%}"
    "{%- if tools -%}"
    "{{- '<|im_start|>system\\n' -}}"
    "{%- if sys_first -%}{{- messages[0]['content'] + '\\n\\n' -}}{%- endif -%}"
    "{{- '" + _TOOLS_PREAMBLE + "' -}}"
    "{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- '" + _TOOLS_USAGE + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- set role = message['role'] -%}"
    "{%- if role not in ['system', 'user', 'assistant', 'tool'] -%}"
    "{{- raise_exception('unknown chat role: ' + role) -}}"
    "{%- endif -%}"
    "{%- if role == 'tool' -%}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + (message['content'] or '')"
    " + '\\n</tool_response><|im_end|>\\n' -}}"
    "{%- elif role == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}{{- (message['content'] or '') + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- elif not (tools and loop.first and role == 'system') -%}"
    "{{- '<|im_start|>' + role + '\\n' + (message['content'] or '') + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_BUILTIN_CORPUS = """\
system user assistant tool You are a helpful agent talking with a user inside a game.
Ask the user questions, search for facts, and give your final answer when you are sure.
<tool_call> {"name": "interact_with_env", "arguments": {"choice": "action", "content": "Is it an animal?"}} </tool_call>
<tool_call> {"name": "interact_with_env", "arguments": {"choice": "answer", "content": "42"}} </tool_call>
<tool_call> {"name": "interact_with_env", "arguments": {"choice": "search", "content": "test"}} </tool_call>
[action] Is it bigger than a car? [answer] The Eiffel Tower [search] hotels in Paris [finish]
<think> The user said no, so it is not alive. I should ask about its size next. </think>
<tool_response> Yes. Reward: 0.0 </tool_response> <tool_response> No. Reward: 1.0 </tool_response>
Invalid action. Use interact_with_env with choice action, answer or search.
The user thinks of an entity: a person, an object, a place, an animal, a food or a famous event.
A man walks into a bar and asks for a glass of water. The bartender pulls out a gun. Why?
Find the hidden rule f(a, b, c, d) = a * b + c - d and compute it for the test case 3 4 5 6.
The customer wants to cancel order #W1234567 and get a refund to the original payment method.
I need a flight from New York to London next Friday, a hotel near the museum, and a dinner.
Please find the cheapest option. I prefer a window seat. Budget under 500 dollars. Thanks!
What year was the university founded? Who wrote the novel? Which river flows through the city?
I strongly agree. I agree. I somewhat agree. I am neutral. I somewhat disagree. I disagree.
0 1 2 3 4 5 6 7 8 9 10 100 1000 0.5 0.25 3.14 yes no maybe true false null
"""

_MAX_CORPUS_CHARS = 2_000_000  # keeps tokenizer training well under a second


def _data_dir() -> Path | None:
    spec = importlib.util.find_spec("userrl.envs")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        if (Path(loc) / "data").is_dir():
            return Path(loc) / "data"
    return None


def _builtin_corpus() -> list[str]:
    import json

    # the tool prompt is in every system turn: seen often enough, BPE learns its words whole
    tool_text = [
        json.dumps(TOOL_SCHEMA),
        _TOOLS_PREAMBLE.replace("\\n", "\n"),
        _TOOLS_USAGE.replace("\\n", "\n").replace('\\"', '"'),
    ]
    return _BUILTIN_CORPUS.splitlines() * 2 + tool_text * 4


def default_corpus() -> Iterator[str]:
    """The built-in text, then the bundled gym data (``*.json``/``*.jsonl``), capped in size."""
    yield from _builtin_corpus()
    data = _data_dir()
    if data is None:
        return
    budget = _MAX_CORPUS_CHARS
    for path in sorted(p for p in data.rglob("*") if p.suffix in (".json", ".jsonl")):
        text = path.read_text(encoding="utf-8", errors="replace")[:budget]
        budget -= len(text)
        yield from text.splitlines()
        if budget <= 0:
            return


def _train_tokenizer(corpus: Iterable[str], vocab_size: int) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TEXT_TOKENS])
    return tok


def build_tiny_model(out_dir: str | Path, corpus: Iterable[str] | None = None, seed: int = 0, **size: Any) -> Path:
    """Build and save the tiny tokenizer + Qwen3 model in ``out_dir``; return the folder.

    ``size`` overrides ``Qwen3Config`` fields (``hidden_size``, ``num_hidden_layers``, ...);
    ``vocab_size`` sets the tokenizer's target vocabulary (the model's is the tokenizer's
    actual length). The same corpus and seed give byte-identical files.
    """
    import torch
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = _train_tokenizer(corpus if corpus is not None else default_corpus(), int(size.pop("vocab_size", 3000)))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
        chat_template=CHAT_TEMPLATE,
    )
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    fields: dict[str, Any] = dict(
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    )
    fields.update(size)
    config = Qwen3Config(vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=eos, pad_token_id=pad, **fields)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log.info("tiny_model_built", path=str(out), vocab=len(tokenizer), params=sum(p.numel() for p in model.parameters()))
    return out
