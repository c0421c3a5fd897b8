"""The local-model user backend: batching of concurrent asks and re-asks on malformed output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

pytestmark = [pytest.mark.train, pytest.mark.anyio]

pytest.importorskip("torch")
pytest.importorskip("transformers")

from userrl.agents.tiny import build_tiny_model  # noqa: E402
from userrl.errors import UserEmptyError, UserError, UserMalformedError  # noqa: E402
from userrl.sim_users.base import UserQuery  # noqa: E402
from userrl.sim_users.hf_backend import HFUserBackend  # noqa: E402

CORPUS = [
    "You are the user. Is it an animal? Yes. No. Maybe. The answer is a cat.",
    'Grade the answer with a JSON score between 0 and 1. {"score": 1.0}',
] * 20


class Spec:
    """Accepts any reply as the user's words, or (``strict``) none at all."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict

    def scripted(self, query: UserQuery) -> dict[str, Any]:
        return {"text": "scripted"}

    def llm_messages(self, query: UserQuery) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": "You are the user. Answer yes or no."},
            {"role": "user", "content": str(query.payload["q"])},
        ]

    def parse_llm(self, query: UserQuery, text: str) -> dict[str, Any]:
        if self.strict:
            raise ValueError("reply must be JSON")
        return {"text": text}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny_user"),
        corpus=CORPUS,
        vocab_size=400,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        head_dim=16,
    )


def query(i: int) -> UserQuery:
    return UserQuery(env_id="test/Fake-v0", kind="respond", name="chat", payload={"q": f"Is it an animal? ({i})"})


async def ask_all(backend: HFUserBackend, n: int) -> list[dict[str, Any] | BaseException]:
    out: list[dict[str, Any] | BaseException] = [{}] * n

    async def one(i: int) -> None:
        try:
            out[i] = await backend.ask(query(i))
        except UserError as exc:
            out[i] = exc

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return out


def outcome(r: dict[str, Any] | BaseException) -> Any:
    """A reply's text, or the typed error of a reply that stayed empty (an untrained model may
    generate only special tokens, which decode to nothing)."""
    if isinstance(r, UserEmptyError):
        assert not r.transient and "empty reply after 1 attempts" in str(r)
        return UserEmptyError
    assert isinstance(r, dict) and isinstance(r["text"], str) and r["text"].strip(), r
    return r["text"]


async def test_concurrent_asks_are_batched(tiny_dir: Path) -> None:
    backend = HFUserBackend(  # share_ttl_s=0: the repeated prompt below is generated again, not shared
        str(tiny_dir),
        spec_lookup=lambda env_id: Spec(),
        max_new_tokens=6,
        batch_window_s=0.05,
        max_reasks=0,
        share_ttl_s=0,
    )
    replies = await ask_all(backend, 4)
    assert list(backend.batch_sizes) == [4]
    first = [outcome(r) for r in replies]
    try:  # greedy: the same prompt gives the same reply
        again: dict[str, Any] | BaseException = await backend.ask(query(0))
    except UserEmptyError as exc:
        again = exc
    assert outcome(again) == first[0]
    assert list(backend.batch_sizes) == [4, 1]


async def test_malformed_output_raises_after_reasks(tiny_dir: Path) -> None:
    backend = HFUserBackend(
        str(tiny_dir), spec_lookup=lambda env_id: Spec(strict=True), max_new_tokens=4, batch_window_s=0.05, max_reasks=2
    )
    results = await ask_all(backend, 2)
    for r in results:  # typed: malformed, or empty when the untrained model says nothing
        assert isinstance(r, (UserMalformedError, UserEmptyError)) and not r.transient
        assert "reply after 3 attempts" in str(r)
    assert list(backend.batch_sizes) == [2, 2, 2]  # the re-asks are batched too


async def test_max_batch_splits(tiny_dir: Path) -> None:
    backend = HFUserBackend(
        str(tiny_dir),
        spec_lookup=lambda env_id: Spec(),
        max_new_tokens=2,
        batch_window_s=0.05,
        max_batch=2,
        max_reasks=0,  # one generation per ask, whether or not the untrained model says anything
    )
    await ask_all(backend, 5)
    assert sorted(backend.batch_sizes) == [1, 2, 2]


async def test_missing_model_is_user_error(tmp_path: Path) -> None:
    backend = HFUserBackend(str(tmp_path / "nope"), spec_lookup=lambda env_id: Spec(), batch_window_s=0)
    with pytest.raises(UserError, match="hf user model failed"):
        await backend.ask(query(0))
