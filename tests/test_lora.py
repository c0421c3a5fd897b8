"""LoRA through peft: the learner trains adapters, publishes merged weights that reproduce the
adapted model in the hf backend, keeps the last K versions, resumes; SFT with adapters (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.learner_groups import make_groups
from userrl.config import LoraSection

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

pytestmark = pytest.mark.train

LORA = LoraSection(r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from userrl.agents.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("lora") / "m", seed=0)


def learner(model_dir: Path, out: Path, **kw):  # noqa: ANN201
    from userrl.learner.grpo_learner import GRPOLearner
    from userrl.learner.losses import LossConfig

    return GRPOLearner(model_dir, out, lr=5e-2, loss=LossConfig(max_staleness=100), device="cpu", lora=LORA, **kw)


def test_adapters_train_and_merged_weights_reproduce_the_adapted_model(model_dir: Path, tmp_path: Path) -> None:
    import anyio
    from safetensors.torch import load_file

    from userrl.agents.hf_backend import HFBackend

    lrn = learner(model_dir, tmp_path, keep_weights=2)
    base = {k: v.clone() for k, v in lrn.model.get_base_model().state_dict().items() if "lora_" not in k}
    trainable = {n for n, p in lrn.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    losses = [lrn.step(make_groups(2, seed=s))["loss/total"] for s in range(4)]
    assert len(set(losses)) == 4
    after = lrn.model.get_base_model().state_dict()
    assert all(torch.equal(after[k], v) for k, v in base.items())  # the base stays frozen
    lora_b = [p for n, p in lrn.model.named_parameters() if "lora_B" in n]
    assert any(float(p.detach().abs().max()) > 0 for p in lora_b)  # B starts at 0: the adapters moved

    path = lrn.save_weights()
    published = load_file(str(path))
    assert not any("lora_" in k or "base_layer" in k for k in published)
    assert "model.layers.0.self_attn.q_proj.weight" in published
    assert (path.parent / f"v{lrn.version:05d}-adapter" / "adapter_config.json").is_file()

    backend = HFBackend(model_dir, tools=None)
    anyio.run(backend.load_weights, str(path), lrn.version)
    ids = torch.tensor([[5, 9, 40, 77, 12, 200, 31]])
    lrn.model.eval()
    with torch.no_grad():
        want = lrn.model(input_ids=ids).logits
        got = backend.model(input_ids=ids).logits
    assert not torch.allclose(want, HFBackend(model_dir, tools=None).model(input_ids=ids).logits, atol=1e-4)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

    for _ in range(3):  # keep_weights=2: only the newest two versions (and adapters) stay
        lrn.step(make_groups(1, seed=9))
        lrn.save_weights()
    names = sorted(p.name for p in (tmp_path / "weights").iterdir())
    assert names == ["v00006-adapter", "v00006.safetensors", "v00007-adapter", "v00007.safetensors"]


def test_lora_checkpoint_resumes_adapters_and_optimizer(model_dir: Path, tmp_path: Path) -> None:
    from userrl.learner.grpo_learner import GRPOLearner
    from userrl.learner.losses import LossConfig

    lrn = learner(model_dir, tmp_path)
    lrn.step(make_groups(2, seed=1))
    lrn.checkpoint({"step": 1})
    again, state = GRPOLearner.resume(tmp_path, lr=5e-2, loss=LossConfig(max_staleness=100), device="cpu", lora=LORA)
    assert again.version == 1 and state["base_model"] == str(model_dir)
    mine = dict(lrn.model.named_parameters())
    for n, p in again.model.named_parameters():
        assert torch.equal(p, mine[n]), n
    assert again.optimizer.state_dict()["state"]


def test_sft_with_adapters_saves_a_merged_model(model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from userrl.learner.sft import run_sft

    dialogues = [
        {
            "messages": [
                {"role": "system", "content": "Play the game."},
                {"role": "user", "content": f"Task {i}: find the rule."},
                {"role": "assistant", "content": f"[action] probe {i}"},
            ]
        }
        for i in range(6)
    ]
    out = run_sft(model_dir, tmp_path / "sft", dialogues, epochs=2, lr=5e-2, batch_size=3, device="cpu", lora=LORA)
    merged = AutoModelForCausalLM.from_pretrained(out)
    before = AutoModelForCausalLM.from_pretrained(model_dir)
    assert not any("lora" in k for k in merged.state_dict())
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[q], before.state_dict()[q])  # the adapters were merged in
    e = "model.embed_tokens.weight"
    assert torch.equal(merged.state_dict()[e], before.state_dict()[e])  # untargeted layers untouched
