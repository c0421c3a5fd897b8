"""HFBackend on the tiny model: exact logprobs, batching, padding, EOS, weight swaps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("torch")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from userrl.agents.base import GenRequest, GenResult, Sampling  # noqa: E402
from userrl.agents.hf_backend import HFBackend  # noqa: E402
from userrl.agents.tiny import build_tiny_model  # noqa: E402
from userrl.errors import PolicyError  # noqa: E402

pytestmark = pytest.mark.train

GREEDY = Sampling(temperature=0.0, max_new_tokens=12)
T1 = Sampling(temperature=1.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=1)


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> HFBackend:
    return HFBackend(model_dir, seed=5)


def req(i: int, sampling: Sampling = GREEDY, **kw: Any) -> GenRequest:
    msgs = [
        {"role": "system", "content": "Guess the entity."},
        {"role": "user", "content": "Ask me questions. " * (1 + 3 * i)},
    ]  # uneven lengths
    return GenRequest(episode_id=f"ep{i}", env_id="userrl/Telepathy-v0", messages=msgs, sampling=sampling, **kw)


def gen(backend: HFBackend, requests: list[GenRequest]) -> list[GenResult]:
    return anyio.run(backend.generate, requests)


def teacher_forced(backend: HFBackend, r: GenResult, temperature: float) -> torch.Tensor:
    ids = torch.tensor([r.prompt_ids + r.token_ids])
    with torch.no_grad():
        logits = backend.model(ids).logits[0].float()
    p = len(r.prompt_ids)
    lp = torch.log_softmax(logits[p - 1 : p - 1 + len(r.token_ids)] / temperature, dim=-1)
    return lp.gather(-1, torch.tensor(r.token_ids)[:, None]).squeeze(-1)


@pytest.mark.parametrize(
    ("sampling", "temperature"), [(T1, 1.0), (GREEDY, 1.0), (Sampling(temperature=0.7, max_new_tokens=12), 0.7)]
)
def test_logprobs_match_teacher_forcing(backend: HFBackend, sampling: Sampling, temperature: float) -> None:
    results = gen(backend, [req(i, sampling) for i in range(4)])
    lengths = {len(r.prompt_ids) for r in results}
    assert len(lengths) == 4  # really left-padded
    for r in results:
        assert len(r.token_ids) == len(r.logprobs) > 0
        assert backend.pad_id not in r.prompt_ids
        expected = teacher_forced(backend, r, temperature)
        assert torch.allclose(torch.tensor(r.logprobs), expected, atol=1e-4), r


def test_prompt_is_the_unpadded_render(backend: HFBackend) -> None:
    assert backend.stop_ids == [backend.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    results = gen(backend, [req(i) for i in range(3)])
    for i, r in enumerate(results):
        assert r.prompt_ids == backend.prompt_ids(req(i))
        assert r.version == backend.version and r.finish_reason in ("stop", "length")


def test_batch_equals_single_for_greedy(backend: HFBackend) -> None:
    batch = gen(backend, [req(i) for i in range(5)])
    for i in range(5):
        (single,) = gen(backend, [req(i)])
        assert single.token_ids == batch[i].token_ids
        assert single.text == batch[i].text
        assert torch.allclose(torch.tensor(single.logprobs), torch.tensor(batch[i].logprobs), atol=1e-4)


def test_seeded_sampling_and_mixed_groups(backend: HFBackend) -> None:
    seeded = Sampling(temperature=1.0, max_new_tokens=12, seed=123)
    a = gen(backend, [req(0, seeded), req(1, GREEDY), req(2, seeded)])
    b = gen(backend, [req(0, seeded), req(2, seeded)])
    assert [a[0].token_ids, a[2].token_ids] == [b[0].token_ids, b[1].token_ids]
    assert a[1].token_ids == gen(backend, [req(1)])[0].token_ids


def test_stops_at_eos_and_strips_padding(model_dir: Path, backend: HFBackend) -> None:
    long = Sampling(temperature=0.0, max_new_tokens=24)
    free = gen(backend, [req(i, long) for i in range(3)])
    stop_tok = free[0].token_ids[3]
    first = free[0].token_ids.index(stop_tok)
    stopping = HFBackend(model_dir, stop_token_ids=[stop_tok])
    out = gen(stopping, [req(i, long) for i in range(3)])
    assert out[0].token_ids == free[0].token_ids[: first + 1]
    assert out[0].finish_reason == "stop"
    assert out[0].logprobs == pytest.approx(free[0].logprobs[: first + 1], abs=1e-4)
    assert out[0].text == stopping.tokenizer.decode(out[0].token_ids[:-1])
    for r, f in zip(out[1:], free[1:], strict=True):
        if stop_tok in f.token_ids:
            assert r.token_ids == f.token_ids[: f.token_ids.index(stop_tok) + 1]
        else:
            assert (r.token_ids, r.finish_reason) == (f.token_ids, "length")


def test_second_turn_extends_tokens(backend: HFBackend) -> None:
    (r1,) = gen(backend, [req(0, T1)])
    msgs = req(0).messages + [
        {"role": "assistant", "content": r1.text},
        {"role": "tool", "content": "No.\nReward: 0.0"},
    ]
    prev = r1.prompt_ids + r1.token_ids
    turn2 = GenRequest(episode_id="ep0", env_id="x", messages=msgs, prompt_ids=prev, n_seen=3, sampling=T1)
    (r2,) = gen(backend, [turn2])
    assert r2.prompt_ids[: len(prev)] == prev
    assert torch.allclose(torch.tensor(r2.logprobs), teacher_forced(backend, r2, 1.0), atol=1e-4)
    bad = GenRequest(episode_id="ep9", env_id="x", messages=msgs, prompt_ids=prev[:-3], n_seen=3)
    with pytest.raises(PolicyError, match="ep9"):
        gen(backend, [turn2, bad])


def test_load_weights(model_dir: Path, tmp_path: Path) -> None:
    b = HFBackend(model_dir)
    before = gen(b, [req(0), req(1)])
    gen_ = torch.Generator().manual_seed(0)
    state = {
        k: v + 0.05 * torch.randn(v.shape, generator=gen_)
        for k, v in b.model.state_dict().items()
        if k != "lm_head.weight"
    }
    save_file(state, str(tmp_path / "v1.safetensors"))
    seconds = anyio.run(b.load_weights, str(tmp_path / "v1.safetensors"), 1)
    assert b.version == 1 and seconds >= 0
    after = gen(b, [req(0), req(1)])
    assert [r.version for r in after] == [1, 1]
    assert [r.token_ids for r in after] != [r.token_ids for r in before]
    for r in after:
        assert torch.allclose(torch.tensor(r.logprobs), teacher_forced(b, r, 1.0), atol=1e-4)
    anyio.run(b.load_weights, str(model_dir), 2)  # an HF folder works too
    assert [r.token_ids for r in gen(b, [req(0), req(1)])] == [r.token_ids for r in before]
    save_file({"nope": torch.zeros(2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(PolicyError, match="do not fit"):
        anyio.run(b.load_weights, str(tmp_path / "bad.safetensors"), 3)
    assert b.version == 2


def test_event_loop_stays_responsive(backend: HFBackend) -> None:
    ticks = 0

    async def main() -> None:
        nonlocal ticks
        async with anyio.create_task_group() as tg:

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await anyio.sleep(0.001)
                    ticks += 1

            tg.start_soon(tick)
            await backend.generate([req(i, Sampling(temperature=1.0, max_new_tokens=48)) for i in range(8)])
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert ticks > 3


def test_context_overflow_is_a_policy_error(backend: HFBackend) -> None:
    huge = Sampling(temperature=0.0, max_new_tokens=backend.model.config.max_position_embeddings)
    with pytest.raises(PolicyError, match="ep0.*exceed the model's context"):
        gen(backend, [req(0, huge)])
