"""Synthetic scored groups for learner tests: multi-turn trajectories of varied lengths, token-exact."""

from __future__ import annotations

import random
from typing import Any


def make_groups(
    n_groups: int,
    group_size: int = 3,
    seed: int = 0,
    versions: tuple[int, ...] = (0,),
    vocab: tuple[int, int] = (5, 300),
) -> list[dict[str, Any]]:
    """Groups of trajectories with 1-3 turns; each turn's prompt extends the previous context.
    Policy versions are drawn from ``versions`` per turn (for staleness masking)."""
    rng = random.Random(seed)

    def toks(n: int) -> list[int]:
        return [rng.randrange(*vocab) for _ in range(n)]

    groups = []
    for g in range(n_groups):
        items = []
        for i in range(group_size):
            context, turns = toks(rng.randint(3, 40)), []
            for _ in range(rng.randint(1, 3)):
                gen = toks(rng.randint(1, 12))
                turns.append(
                    {
                        "prompt_ids": list(context),
                        "token_ids": gen,
                        "logprobs": [-rng.uniform(0.5, 6.0) for _ in gen],
                        "policy_version": rng.choice(versions),
                        "reward": rng.random(),
                        "advantages": [rng.uniform(-1.5, 1.5)] * len(gen),
                    }
                )
                context = context + gen + toks(rng.randint(1, 15))
            items.append(
                {
                    "episode_id": f"g{g}e{i}",
                    "task_id": f"t{g}",
                    "score": 0.0,
                    "return": sum(t["reward"] for t in turns),
                    "n_turns": len(turns),
                    "turns": turns,
                }
            )
        groups.append({"items": items, "env_id": "userrl/Function-v0", "group_id": f"g{g}"})
    return groups


def random_qwen3(vocab_size: int) -> Any:
    """A one-layer Qwen3 with random weights (seed 0), in eval mode: small enough for exact
    reference computations. Needs torch and transformers (callers importorskip them first)."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        head_dim=16,
    )
    return transformers.Qwen3ForCausalLM(config).eval()
