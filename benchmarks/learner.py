"""GRPO loss + backward: userrl's learner next to TRL's ``GRPOTrainer._compute_loss``.

DESIGN.md §8 asks for a GRPO step no slower than TRL's GRPO loss on the same model and batch.
Both sides get the same randomly initialised Qwen3-architecture model (built from a config,
no downloads), the same single-turn batch (equal-length prompts, right-padded completions),
the same engine logprobs and per-sequence advantages. TRL is reached through a real, minimal
``GRPOTrainer`` (offline tokenizer, dummy reward) with ``loss_type="bnpo"``, which is the
token-mean loss; the Equalized credit of a single-turn trajectory makes every token's advantage
the group z-score, so both losses must agree. Two pairs, each measured side by side:

* **default**: userrl's default objective (``train.*`` defaults: π_old recomputed by the learner,
  which at staleness 0 is its own detached logprobs, token-level TIS at 2, entropy and the
  mismatch metrics computed) vs TRL with its vLLM importance-sampling correction in the same
  mode (``token_truncate``, cap 2; TRL computes the ratio outside ``_compute_loss``, so its
  extra old-logprob forward is not timed here, while ours needs none) and its entropy.
* **engine**: π_old = the engine's logprobs, no weight (``old_logprobs: engine``,
  ``is_correction: none``) vs TRL's plain loss against the same ``old_per_token_logps``.

    python benchmarks/learner.py [--vocab 8192 --hidden 256 --layers 2 --batch 8 ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402

from userrl.learner.losses import LossConfig, token_logprobs  # noqa: E402
from userrl.learner.offpolicy import corrected_loss, importance_weights  # noqa: E402
from userrl.learner.rewards import group_advantages  # noqa: E402
from userrl.learner.sequences import assemble, collate, per_token_advantages  # noqa: E402


def build_model(args: argparse.Namespace) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    config = transformers.Qwen3Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=2 * args.hidden,
        head_dim=args.hidden // 4,
    )
    return transformers.Qwen3ForCausalLM(config).train()


def build_trl_trainer(model: transformers.PreTrainedModel, batch: int) -> object:
    """A real GRPOTrainer around ``model`` with an offline word-level tokenizer."""
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from trl import GRPOConfig, GRPOTrainer

    vocab = {f"t{i}": i for i in range(model.config.vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="t1"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="t0", eos_token="t2")
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=batch,
        num_generations=batch,
        max_completion_length=64,
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        loss_type="bnpo",
        beta=0.0,
        epsilon=0.2,
        bf16=False,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=lambda completions, **_: [0.0] * len(completions),
        args=config,
        train_dataset=Dataset.from_dict({"prompt": ["t3 t4"] * batch}),
        processing_class=hf_tokenizer,
    )
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.training_step otherwise
    return trainer


def build_batch(args: argparse.Namespace, device: torch.device) -> tuple[dict, dict]:
    """The same single-turn group twice: our collated sequences and TRL's inputs dict."""
    gen = torch.Generator().manual_seed(1)
    seqs, rewards = [], []
    for i in range(args.batch):
        prompt = torch.randint(3, args.vocab, (args.prompt_len,), generator=gen).tolist()
        n = args.completion_len - (i * args.completion_len) // (2 * args.batch)  # ragged
        completion = torch.randint(3, args.vocab, (n,), generator=gen).tolist()
        logprobs = (-torch.rand(n, generator=gen) - 8.5).tolist()
        reward = float(i % 3) / 2
        seqs.append(
            assemble(
                [
                    {
                        "prompt_ids": prompt,
                        "token_ids": completion,
                        "logprobs": logprobs,
                        "policy_version": 0,
                        "reward": reward,
                    }
                ]
            )
        )
        rewards.append([reward])
    _, adv = group_advantages(rewards, [s.turn_lengths for s in seqs], credit="equalized")
    ours = collate(seqs, pad_id=0, advantages=[per_token_advantages(s, a) for s, a in zip(seqs, adv, strict=True)])
    ours = {k: v.to(device) for k, v in ours.items()}
    p = args.prompt_len
    trl_inputs = {
        "prompt_ids": ours["input_ids"][:, :p],
        "prompt_mask": ours["attention_mask"][:, :p],
        "completion_ids": ours["input_ids"][:, p:],
        "completion_mask": ours["loss_mask"][:, p:].long(),
        "old_per_token_logps": ours["behaviour_logprobs"][:, p:],
        "advantages": torch.tensor([a[0][0] for a in adv], device=device),
    }
    return ours, trl_inputs


def once(step: Callable[[], torch.Tensor], model: torch.nn.Module) -> tuple[float, float]:
    """Seconds of one loss + backward, and the loss value."""
    model.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = step()
    loss.backward()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, loss.detach().item()


def timed_pair(
    ours: Callable[[], torch.Tensor], theirs: Callable[[], torch.Tensor], repeats: int, model: torch.nn.Module
) -> tuple[float, float, float, float]:
    """Median seconds of each side and their losses; the two sides alternate run by run (after
    two warm-up runs each), so a machine whose load changes slows both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    losses = [0.0, 0.0]
    for k in range(repeats + 2):
        for side, step in enumerate((ours, theirs)):
            t, losses[side] = once(step, model)
            if k >= 2:
                times[side].append(t)
    return statistics.median(times[0]), statistics.median(times[1]), losses[0], losses[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--completion-len", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    model = build_model(args).to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRL's deprecation chatter is not under test here
        trainer = build_trl_trainer(model, args.batch)
    model = trainer.model  # patched with TRL's fused LM head; plain forwards are unchanged
    ours, trl_inputs = build_batch(args, device)

    default, engine = LossConfig(), LossConfig(old_logprobs="engine", is_correction="none")
    mask = ours["loss_mask"]

    def userrl_step(cfg: LossConfig) -> Callable[[], torch.Tensor]:
        """What the learner's micro-batch runs: logprobs and entropy of the trained positions,
        then :func:`corrected_loss` (staleness 0: every token is of the current version)."""

        def step() -> torch.Tensor:
            logp, entropy = token_logprobs(model, ours["input_ids"], ours["attention_mask"], mask=mask, entropy="value")
            loss, _, _ = corrected_loss(
                logp,
                entropy,
                ours["behaviour_logprobs"],
                ours["advantages"],
                mask,
                cfg,
                learner_old=logp.detach(),
                known=mask > 0,
            )
            return loss

        return step

    with torch.no_grad():  # TRL's old logprobs (its generation step computes them when IS is on)
        learner_old = token_logprobs(model, ours["input_ids"], ours["attention_mask"], mask=mask)
    p = args.prompt_len
    weights, _ = importance_weights(learner_old, ours["behaviour_logprobs"], mask, "token-truncate", 2.0)
    trl_default = {**trl_inputs, "old_per_token_logps": learner_old[:, p:], "importance_sampling_ratio": weights[:, p:]}

    def trl_step(inputs: dict, vllm_is: bool) -> Callable[[], torch.Tensor]:
        def step() -> torch.Tensor:
            trainer.use_vllm = trainer.vllm_importance_sampling_correction = vllm_is
            return trainer._compute_loss(model, inputs)

        return step

    trainer.vllm_importance_sampling_mode = "token_truncate"
    trainer.vllm_importance_sampling_clip_max = 2.0
    rows = []
    for name, ours_step, theirs_step in (
        ("default", userrl_step(default), trl_step(trl_default, True)),
        ("engine", userrl_step(engine), trl_step(trl_inputs, False)),
    ):
        t_ours, t_trl, loss_ours, loss_trl = timed_pair(ours_step, theirs_step, args.repeats, model)
        rows.append((name, t_ours, t_trl, loss_ours, loss_trl))
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    tokens = int(mask.sum())
    print(
        f"device {device_name}; model vocab={args.vocab} hidden={args.hidden} "
        f"layers={args.layers}; batch {args.batch} x ({args.prompt_len} prompt + "
        f"<= {args.completion_len} completion), {tokens} trained tokens; median of {args.repeats}"
    )
    print(
        f"{'loss':>8} | {'userrl ms':>9} | {'trl ms':>8} | {'ratio':>6} | {'userrl loss':>12} | {'trl loss':>12} | agree"
    )
    for name, t_ours, t_trl, loss_ours, loss_trl in rows:
        agree = abs(loss_ours - loss_trl) < 1e-4
        print(
            f"{name:>8} | {t_ours * 1e3:9.2f} | {t_trl * 1e3:8.2f} | {t_ours / t_trl:6.2f} | "
            f"{loss_ours:+12.6f} | {loss_trl:+12.6f} | {agree}"
        )
    print("ratio = userrl time / TRL time (target <= 1.0 for the default loss)")


if __name__ == "__main__":
    main()
